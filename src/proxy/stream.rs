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

use super::record::{Completion, CLIENT_CLOSED};
use crate::error::{error_body, ErrorCode};
use crate::openai::sse::SseObserver;
use crate::providers::anthropic::StreamTranslator;

/// The body of a proxied SSE response.
pub struct ProxyStream {
    upstream: Incoming,
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
    ) -> Self {
        Self {
            upstream,
            translator,
            observer: SseObserver::new(strip_usage),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            completion: Some(completion),
        }
    }

    fn finish(&mut self, status: u16) {
        if let Some(completion) = self.completion.take() {
            let usage = self
                .translator
                .as_ref()
                .and_then(StreamTranslator::usage)
                .or(self.observer.usage());
            completion.finish(status, usage, self.observer.first_token_at());
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
        loop {
            match Pin::new(&mut this.upstream).poll_frame(cx) {
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
        // Dropped before the end: the client went away.
        self.finish(CLIENT_CLOSED);
    }
}
