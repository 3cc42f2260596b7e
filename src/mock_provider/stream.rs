//! SSE answers: all events of an answer are serialised up front into one buffer, then sent
//! frame by frame, pausing for `chunk_interval` and for a held [`StreamGate`].
//!
//! [`StreamGate`]: super::StreamGate

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::control::MockControl;

/// The events of one SSE answer, built into a single allocation.
#[derive(Debug, Default)]
pub struct SseBuilder {
    buf: BytesMut,
    ends: Vec<usize>,
    hold_from: Option<usize>,
}

impl SseBuilder {
    pub fn new() -> Self {
        Self {
            buf: BytesMut::with_capacity(2048),
            ends: Vec::with_capacity(16),
            hold_from: None,
        }
    }

    /// Appends `event: <name>` (if any) and `data: <json>`.
    pub fn event<T: Serialize>(
        &mut self,
        name: Option<&str>,
        data: &T,
    ) -> Result<(), serde_json::Error> {
        if let Some(name) = name {
            self.buf.put_slice(b"event: ");
            self.buf.put_slice(name.as_bytes());
            self.buf.put_u8(b'\n');
        }
        self.buf.put_slice(b"data: ");
        serde_json::to_writer((&mut self.buf).writer(), data)?;
        self.buf.put_slice(b"\n\n");
        self.ends.push(self.buf.len());
        Ok(())
    }

    /// Appends an event verbatim (`data: [DONE]\n\n`, or deliberate garbage).
    pub fn raw(&mut self, event: &[u8]) {
        self.buf.put_slice(event);
        self.ends.push(self.buf.len());
    }

    /// Marks the event just added as the first content: later events wait for the gate.
    pub fn first_content_sent(&mut self) {
        self.hold_from.get_or_insert(self.ends.len());
    }

    /// Splits the buffer into one frame per event (no copies).
    fn into_frames(mut self) -> (Vec<Bytes>, usize) {
        let mut frames = Vec::with_capacity(self.ends.len());
        let mut start = 0;
        for end in self.ends {
            frames.push(self.buf.split_to(end - start).freeze());
            start = end;
        }
        let hold_from = self.hold_from.unwrap_or(frames.len());
        (frames, hold_from)
    }
}

struct Sending {
    frames: std::vec::IntoIter<Bytes>,
    sent: usize,
    hold_from: usize,
    interval: Duration,
    control: Arc<MockControl>,
    shutdown: CancellationToken,
}

/// The response body that plays `events` out.
pub fn body(
    events: SseBuilder,
    interval: Duration,
    control: Arc<MockControl>,
    shutdown: CancellationToken,
) -> UnsyncBoxBody<Bytes, Infallible> {
    let (frames, hold_from) = events.into_frames();
    let state = Sending {
        frames: frames.into_iter(),
        sent: 0,
        hold_from,
        interval,
        control,
        shutdown,
    };
    let frames = futures_util::stream::unfold(state, |mut st| async move {
        let frame = st.frames.next()?;
        // Intervals are not cut short by shutdown: a graceful drain lets streams finish.
        if st.sent > 0 && !st.interval.is_zero() {
            tokio::time::sleep(st.interval).await;
        }
        if st.sent >= st.hold_from {
            st.control.pass_gate(&st.shutdown).await;
        }
        st.sent += 1;
        Some((Ok::<_, Infallible>(Frame::data(frame)), st))
    });
    StreamBody::new(frames).boxed_unsync()
}
