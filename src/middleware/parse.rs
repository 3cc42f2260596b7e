//! Reads the request body once (bounded) and parses it once into the typed request.
//!
//! A declared `content-length` over the limit is refused before reading; a chunked body is cut
//! off by [`http_body_util::Limited`] as soon as it passes the limit, so nothing past the limit
//! is buffered. Inserts [`ParsedBody`] for the layers after it and the proxy.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::{Layer, Service};

use std::sync::Arc;
use std::time::Instant;

use crate::context::{ApiRequest, ParsedBody, RequestId, RequestStart};
use crate::error::{ErrorCode, GatewayError};
use crate::metering::Meter;
use crate::openai::chat::ChatRequest;
use crate::openai::embeddings::EmbeddingsRequest;
use crate::providers::Endpoint;
use crate::tenancy::RequestContext;

/// Which typed request a route expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Chat,
    Embeddings,
}

/// Adds [`ParseBody`].
#[derive(Debug, Clone)]
pub struct ParseBodyLayer {
    kind: BodyKind,
    limit: usize,
    meter: Option<Arc<Meter>>,
}

impl ParseBodyLayer {
    /// Parses bodies of `kind`, refusing more than `limit` bytes.
    pub fn new(kind: BodyKind, limit: usize) -> Self {
        Self {
            kind,
            limit,
            meter: None,
        }
    }

    /// Also leaves an audit record for a tenant's refused body (every request after auth has
    /// one).
    #[must_use]
    pub fn metered(mut self, meter: Arc<Meter>) -> Self {
        self.meter = Some(meter);
        self
    }
}

impl<S> Layer<S> for ParseBodyLayer {
    type Service = ParseBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ParseBody {
            inner,
            kind: self.kind,
            limit: self.limit,
            meter: self.meter.clone(),
        }
    }
}

/// Reads and parses the body, or answers 400/413.
#[derive(Debug, Clone)]
pub struct ParseBody<S> {
    inner: S,
    kind: BodyKind,
    limit: usize,
    meter: Option<Arc<Meter>>,
}

impl<S> Service<Request<Body>> for ParseBody<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (kind, limit, meter) = (self.kind, self.limit, self.meter.clone());
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let parsed = match read_and_parse(&parts.headers, body, kind, limit).await {
                Ok(parsed) => parsed,
                Err(err) => {
                    let ext = &parts.extensions;
                    if let (Some(meter), Some(caller), Some(id)) = (
                        meter,
                        ext.get::<Arc<RequestContext>>(),
                        ext.get::<RequestId>(),
                    ) {
                        let endpoint = match kind {
                            BodyKind::Chat => Endpoint::Chat,
                            BodyKind::Embeddings => Endpoint::Embeddings,
                        };
                        let started = ext.get::<RequestStart>().map_or_else(Instant::now, |s| s.0);
                        meter.refuse(id.clone(), caller, endpoint, started, "unknown", &err);
                    }
                    return Ok(err.into_response());
                }
            };
            parts.extensions.insert(parsed);
            inner.call(Request::from_parts(parts, Body::empty())).await
        })
    }
}

async fn read_and_parse(
    headers: &http::HeaderMap,
    body: Body,
    kind: BodyKind,
    limit: usize,
) -> Result<ParsedBody, GatewayError> {
    let raw = read_limited(headers, body, limit).await?;
    let api = parse(kind, &raw)?;
    Ok(ParsedBody {
        raw,
        api,
        rewritten: false,
    })
}

/// Reads at most `limit` bytes of `body`.
pub async fn read_limited(
    headers: &http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(GatewayError::new(
            ErrorCode::InvalidBody,
            "the request body could not be read",
        )),
    }
}

/// Parses a body of `kind` and checks what serde cannot.
pub fn parse(kind: BodyKind, raw: &[u8]) -> Result<ApiRequest, GatewayError> {
    let invalid = |e: serde_json::Error| {
        GatewayError::new(ErrorCode::InvalidBody, format!("invalid request body: {e}"))
    };
    match kind {
        BodyKind::Chat => {
            let chat: ChatRequest = serde_json::from_slice(raw).map_err(invalid)?;
            if chat.model.trim().is_empty() {
                return Err(
                    GatewayError::new(ErrorCode::InvalidBody, "`model` must not be empty")
                        .with_param("model"),
                );
            }
            if chat.messages.is_empty() {
                return Err(GatewayError::new(
                    ErrorCode::InvalidBody,
                    "`messages` must contain at least one message",
                )
                .with_param("messages"));
            }
            Ok(ApiRequest::Chat(Box::new(chat)))
        }
        BodyKind::Embeddings => {
            let emb: EmbeddingsRequest = serde_json::from_slice(raw).map_err(invalid)?;
            if emb.model.trim().is_empty() {
                return Err(
                    GatewayError::new(ErrorCode::InvalidBody, "`model` must not be empty")
                        .with_param("model"),
                );
            }
            if !(emb.input.is_string() || emb.input.is_array()) {
                return Err(GatewayError::new(
                    ErrorCode::InvalidBody,
                    "`input` must be a string or an array",
                )
                .with_param("input"));
            }
            Ok(ApiRequest::Embeddings(Box::new(emb)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_and_incomplete_bodies() {
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"model":"m"}"#,
            br#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
            br#"{"model":"m","messages":[]}"#,
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        ] {
            let err = parse(BodyKind::Chat, body).unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::InvalidBody,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse(
            BodyKind::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#
        )
        .is_ok());
        assert_eq!(
            parse(BodyKind::Embeddings, br#"{"model":"m","input":3}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidBody
        );
    }

    #[tokio::test]
    async fn limit_applies_with_and_without_content_length() {
        let mut headers = http::HeaderMap::new();
        let err = read_limited(&headers, Body::from(vec![b'x'; 11]), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
        headers.insert(
            header::CONTENT_LENGTH,
            http::HeaderValue::from_static("1000"),
        );
        let err = read_limited(&headers, Body::from("small"), 10)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BodyTooLarge);
        let ok = read_limited(&http::HeaderMap::new(), Body::from("0123456789"), 10)
            .await
            .unwrap();
        assert_eq!(ok.len(), 10);
    }
}
