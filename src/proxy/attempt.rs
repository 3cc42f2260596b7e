//! One upstream attempt: send, wait for the head within the provider's timeout, and classify
//! the result for retries, fallbacks and the circuit breaker.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::breaker::Health;
use crate::providers::UpstreamTarget;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("could not connect to the provider")]
    Connect,
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider is rate limiting (429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider failed with status {status}")]
    Status { status: StatusCode },
    #[error("the provider's response body broke off")]
    Body,
    #[error("the provider's answer was malformed: {0}")]
    Protocol(String),
    #[error("the provider's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the provider's circuit breaker is open")]
    CircuitOpen,
}

impl AttemptError {
    /// Bounded label for `upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::RateLimited { .. } => "status_429",
            Self::Status { .. } => "status_5xx",
            Self::Body | Self::TooLarge(_) => "body",
            Self::Protocol(_) => "protocol",
            Self::CircuitOpen => "circuit_open",
        }
    }

    /// What the failure says about the provider's health.
    pub fn health(&self) -> Health {
        match self {
            Self::RateLimited { .. } | Self::CircuitOpen => Health::Neutral,
            _ => Health::Failed,
        }
    }

    /// The upstream's status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::RateLimited { .. } => Some(429),
            Self::Status { status } => Some(status.as_u16()),
            _ => None,
        }
    }

    /// Whether trying the same provider again can help.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            Self::CircuitOpen | Self::TooLarge(_) | Self::Protocol(_)
        )
    }
}

/// The pooled upstream HTTP client: HTTP/1.1 keep-alive, HTTP/2 where TLS negotiates it,
/// rustls with the platform's trust store, `TCP_NODELAY` on every connection.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the upstream client.
pub fn client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = HttpsConnectorBuilder::new()
        .with_platform_verifier()
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

/// Sends `body` to `target`, waiting at most `head_timeout` for the response head. With a
/// `span` (trace export on), the request carries a `traceparent` naming it.
pub async fn send(
    client: &UpstreamClient,
    target: &UpstreamTarget,
    body: Bytes,
    head_timeout: Duration,
    span: Option<&crate::otel::UpstreamSpan>,
) -> Result<http::Response<Incoming>, AttemptError> {
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = target.uri.clone();
    *req.headers_mut() = target.headers.clone();
    if let Some(span) = span {
        span.inject(req.headers_mut());
    }
    match tokio::time::timeout(head_timeout, client.request(req)).await {
        Err(_) => Err(AttemptError::Timeout),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, uri = %target.uri, "upstream request failed");
            Err(AttemptError::Connect)
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Reads a whole (non-streaming) body: at most `max` bytes, each frame within `idle`, all
/// before `deadline`.
pub async fn read_body(
    resp: http::Response<Incoming>,
    max: usize,
    idle: Duration,
    deadline: Instant,
) -> Result<Bytes, AttemptError> {
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(AttemptError::TooLarge(max));
    }
    let mut body = resp.into_body();
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        let chunk = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Some(Err(_))) => return Err(AttemptError::Body),
            Ok(None) => break,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        // Most bodies arrive in one frame: keep it without copying.
        match (&mut first, &mut buf) {
            (None, None) => first = Some(chunk),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity(f.len() + chunk.len());
                b.extend_from_slice(f);
                b.extend_from_slice(&chunk);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&chunk),
        }
        let len = buf
            .as_ref()
            .map_or_else(|| first.as_ref().map_or(0, Bytes::len), BytesMut::len);
        if len > max {
            return Err(AttemptError::TooLarge(max));
        }
    }
    Ok(buf.map_or_else(|| first.unwrap_or_default(), BytesMut::freeze))
}

/// `retry-after` in seconds (the HTTP-date form is rare from LLM providers and ignored).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Exponential backoff with full jitter: `base · 2^attempt`, capped, times a random factor.
pub fn backoff(attempt: u32) -> Duration {
    const BASE: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(2);
    let exp = BASE.saturating_mul(1u32 << attempt.min(10)).min(CAP);
    exp.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(50));
        assert!(backoff(3) >= Duration::from_millis(200));
        assert!(backoff(30) <= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
