//! One upstream attempt: send, wait for the head within the provider's timeout, and classify
//! the result for retries, fallbacks and the circuit breaker.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;

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

    /// Whether trying the same provider again can help.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            Self::CircuitOpen | Self::TooLarge(_) | Self::Protocol(_)
        )
    }
}

/// Sends `body` to `target`, waiting at most `head_timeout` for the response head.
pub async fn send(
    client: &reqwest::Client,
    target: &UpstreamTarget,
    extra_headers: Option<&http::HeaderMap>,
    body: Bytes,
    head_timeout: Duration,
) -> Result<reqwest::Response, AttemptError> {
    let mut req = client
        .post(target.url.clone())
        .headers(target.headers.clone())
        .body(body);
    if let Some(extra) = extra_headers {
        req = req.headers(extra.clone());
    }
    match tokio::time::timeout(head_timeout, req.send()).await {
        Err(_) => Err(AttemptError::Timeout),
        Ok(Err(err)) if err.is_timeout() => Err(AttemptError::Timeout),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, url = %target.url, "upstream request failed");
            Err(AttemptError::Connect)
        }
        Ok(Ok(resp)) => Ok(resp),
    }
}

/// Reads a whole (non-streaming) body: at most `max` bytes, each chunk within `idle`, all
/// before `deadline`.
pub async fn read_body(
    mut resp: reqwest::Response,
    max: usize,
    idle: Duration,
    deadline: Instant,
) -> Result<Bytes, AttemptError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(AttemptError::TooLarge(max));
    }
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    loop {
        let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
        let chunk = match tokio::time::timeout(wait, resp.chunk()).await {
            Err(_) => return Err(AttemptError::Timeout),
            Ok(Err(_)) => return Err(AttemptError::Body),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        // Most bodies arrive in one chunk: keep it without copying.
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
