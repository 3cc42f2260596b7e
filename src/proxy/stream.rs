//! The streaming response body.
//!
//! Frames go from the upstream to the client as they arrive: through the Anthropic translator
//! when the provider needs one, then the [`SseObserver`]. The body enforces the idle timeout
//! between chunks and the request deadline, turns an upstream failure mid-stream into an
//! OpenAI error event (the status line is long gone), and records the outcome exactly once:
//! at the end, on failure, or when the client drops the body (499).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::record::{Completion, Ending, CLIENT_CLOSED};
use crate::error::{error_body, ErrorCode};
use crate::openai::sse::SseObserver;
use crate::providers::anthropic::StreamTranslator;

/// After a client disconnect, the upstream is read on for at most this long...
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(30);
/// ...and at most this many bytes, to learn the usage (no stream may end unbilled).
pub const DRAIN_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The body of a proxied SSE response.
pub struct ProxyStream {
    /// `None` once handed to the drain after a client disconnect.
    upstream: Option<Incoming>,
    tasks: crate::tasks::Tasks,
    translator: Option<StreamTranslator>,
    observer: SseObserver,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    completion: Option<Completion>,
}

impl ProxyStream {
    /// Streams `upstream` to the client.
    pub fn new(
        upstream: Incoming,
        translator: Option<StreamTranslator>,
        strip_usage: bool,
        idle: Duration,
        deadline: tokio::time::Instant,
        completion: Completion,
        tasks: crate::tasks::Tasks,
    ) -> Self {
        Self {
            upstream: Some(upstream),
            tasks,
            translator,
            observer: SseObserver::new(strip_usage),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            completion: Some(completion),
        }
    }

    /// Also assembles the streamed text (for the judge).
    #[must_use]
    pub fn collecting_text(mut self, collect: bool) -> Self {
        if collect {
            self.observer.collect_text();
        }
        self
    }

    fn finish(&mut self, status: u16) {
        if let Some(completion) = self.completion.take() {
            let assembled = self.observer.take_text();
            let complete = status == 200 && self.observer.is_done() && !self.observer.saw_error();
            let usage = self
                .translator
                .as_ref()
                .and_then(StreamTranslator::usage)
                .or(self.observer.usage());
            let completion_estimate = usage.is_none().then(|| self.observer.content_chunks());
            let cacheable = match (&assembled, complete, completion.fill.is_some()) {
                (Some(a), true, true) if !a.tool_calls => Some(crate::cache::entry::from_stream(
                    a.id.as_deref().unwrap_or("chatcmpl-cached"),
                    a.model.as_deref().unwrap_or(&completion.upstream_model),
                    &a.text,
                    a.finish_reason.as_deref(),
                    usage,
                )),
                _ => None,
            };
            // For the trace only; a translated (Anthropic) stream names the client's model.
            let response_model = completion
                .upstream_span
                .as_ref()
                .filter(|_| self.translator.is_none())
                .and(assembled.as_ref())
                .and_then(|a| a.model.clone());
            let answer_text = assembled.map(|a| a.text);
            completion.finish(
                status,
                Ending {
                    usage,
                    first_token: self.observer.first_token_at(),
                    completion_estimate,
                    error: (status != 200).then(|| {
                        if status == CLIENT_CLOSED {
                            "client_disconnected".to_owned()
                        } else {
                            "stream failed".to_owned()
                        }
                    }),
                    response_body: None,
                    answer_text,
                    cacheable,
                    response_model: response_model.as_deref(),
                },
            );
        }
    }

    /// Ends the stream with an error event; `pending` is output still owed to the client.
    fn fail(
        &mut self,
        code: ErrorCode,
        message: &str,
        pending: &[u8],
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        let (status, kind, code_str) = code.parts();
        self.finish(status.as_u16());
        let event = error_body(kind, Some(code_str), message, None);
        let mut out = BytesMut::with_capacity(pending.len() + event.len() + 8);
        out.extend_from_slice(pending);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&event);
        out.extend_from_slice(b"\n\n");
        Poll::Ready(Some(Ok(out.freeze())))
    }

    fn end(&mut self) -> Poll<Option<Result<Bytes, Infallible>>> {
        let mut tail = BytesMut::new();
        if let Some(t) = self.translator.as_mut() {
            match t.finish() {
                Ok(rest) => tail.extend_from_slice(&self.observer.observe(rest)),
                Err(err) => {
                    let owed = self.observer.finish();
                    if self.observer.saw_error() {
                        // The provider's own error event already went to the client.
                        self.finish(502);
                        return if owed.is_empty() {
                            Poll::Ready(None)
                        } else {
                            Poll::Ready(Some(Ok(owed)))
                        };
                    }
                    return self.fail(
                        ErrorCode::UpstreamError,
                        &format!("the provider's stream broke off: {err}"),
                        &owed,
                    );
                }
            }
        }
        tail.extend_from_slice(&self.observer.finish());
        if !self.observer.is_done() && !self.observer.saw_error() {
            return self.fail(
                ErrorCode::UpstreamError,
                "the provider's stream ended before it was complete",
                &tail,
            );
        }
        let status = if self.observer.saw_error() { 502 } else { 200 };
        self.finish(status);
        if tail.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(tail.freeze())))
        }
    }
}

impl Body for ProxyStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_bytes(cx)
            .map(|next| next.map(|bytes| bytes.map(Frame::data)))
    }
}

impl ProxyStream {
    fn poll_bytes(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Infallible>>> {
        let this = self;
        if this.completion.is_none() {
            return Poll::Ready(None);
        }
        let Some(upstream) = this.upstream.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            // A malformed event behind good ones in the same read: the good ones went out on
            // the last poll; the error goes out now, without waiting for more upstream bytes.
            if let Some(Err(err)) = this
                .translator
                .as_mut()
                .filter(|t| t.failed())
                .map(StreamTranslator::finish)
            {
                let owed = this.observer.finish();
                return this.fail(
                    ErrorCode::UpstreamError,
                    &format!("the provider sent a malformed stream: {err}"),
                    &owed,
                );
            }
            match Pin::new(&mut *upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(frame) = frame.into_data() else {
                        continue;
                    };
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                    let frame = match this.translator.as_mut() {
                        None => frame,
                        Some(t) => match t.push(&frame) {
                            Ok(out) => out,
                            Err(err) => {
                                let owed = this.observer.finish();
                                return this.fail(
                                    ErrorCode::UpstreamError,
                                    &format!("the provider sent a malformed stream: {err}"),
                                    &owed,
                                );
                            }
                        },
                    };
                    let out = this.observer.observe(frame);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    let owed = this.observer.finish();
                    return this.fail(
                        ErrorCode::UpstreamError,
                        "the provider's stream broke off",
                        &owed,
                    );
                }
                Poll::Ready(None) => return this.end(),
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        let owed = this.observer.finish();
                        return this.fail(
                            ErrorCode::UpstreamTimeout,
                            "the request took longer than server.request_timeout",
                            &owed,
                        );
                    }
                    if this.idle_timer.as_mut().poll(cx).is_ready() {
                        let owed = this.observer.finish();
                        return this.fail(
                            ErrorCode::UpstreamTimeout,
                            "the provider stopped sending (stream_idle_timeout)",
                            &owed,
                        );
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for ProxyStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The upstream is read on in the
        // background (bounded) so the usage it reports at the end is billed.
        let (Some(completion), Some(upstream)) = (self.completion.take(), self.upstream.take())
        else {
            return;
        };
        let translator = self.translator.take();
        let observer = std::mem::replace(&mut self.observer, SseObserver::new(true));
        self.tasks.spawn(
            "stream-drain",
            drain(upstream, translator, observer, completion),
        );
    }
}

/// Reads what is left of an abandoned stream (bounded by [`DRAIN_MAX_TIME`] and
/// [`DRAIN_MAX_BYTES`]), then records it as a client disconnect with the usage it found.
async fn drain(
    mut upstream: Incoming,
    mut translator: Option<StreamTranslator>,
    mut observer: SseObserver,
    completion: Completion,
) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    let reading = async {
        while let Some(Ok(frame)) = upstream.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            read += data.len();
            let data = match translator.as_mut() {
                None => data,
                Some(t) => match t.push(&data) {
                    Ok(out) => out,
                    Err(_) => break,
                },
            };
            let _ = observer.observe(data);
            if read > DRAIN_MAX_BYTES || observer.is_done() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, reading).await;
    if let Some(t) = translator.as_mut() {
        if let Ok(rest) = t.finish() {
            let _ = observer.observe(rest);
        }
    }
    let _ = observer.finish();
    let usage = translator
        .as_ref()
        .and_then(StreamTranslator::usage)
        .or(observer.usage());
    let completion_estimate = usage.is_none().then(|| observer.content_chunks());
    completion.finish(
        CLIENT_CLOSED,
        Ending {
            usage,
            first_token: observer.first_token_at(),
            completion_estimate,
            error: Some("client_disconnected".to_owned()),
            response_body: None,
            answer_text: None,
            cacheable: None,
            response_model: None,
        },
    );
}
