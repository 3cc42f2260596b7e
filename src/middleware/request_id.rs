//! Request id and start time: the outermost layer.
//!
//! Inserts [`RequestId`] and [`RequestStart`] into the request and echoes `x-request-id` on
//! every response, errors included. A hand-written future: this runs on every request and
//! needs no boxing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::context::{RequestId, RequestStart};

/// The request id header, in and out.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds [`RequestIdService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// Tags each request with an id and a start time.
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(RequestId::from_client)
            .unwrap_or_else(RequestId::generate);
        let header = HeaderValue::from_str(id.as_str()).ok();
        req.extensions_mut().insert(id);
        req.extensions_mut().insert(RequestStart(start));
        RequestIdFuture {
            inner: self.inner.call(req),
            header,
        }
    }
}

pin_project_lite::pin_project! {
    /// Sets `x-request-id` on the response.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        header: Option<HeaderValue>,
    }
}

impl<F, RB, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(value) = this.header.take() {
            resp.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        Poll::Ready(Ok(resp))
    }
}
