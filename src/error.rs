//! Every error a client can see, in one table.
//!
//! Domain errors (`ConfigError`, `UpstreamError`, `BodyError`, ...) live next to their domain
//! and name an [`ErrorCode`]. This file maps each code to `(status, type, code)` in one `match`
//! written straight from SPEC's error table, and renders OpenAI's error shape, so the official
//! SDKs raise the right exception. The code is also the metric label; the message never is.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// What went wrong, as clients and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidApiKey,
    AdminRequired,
    ModelNotAllowed,
    ModelNotFound,
    InvalidBody,
    BodyTooLarge,
    RateLimitExceeded,
    BudgetExceeded,
    ContentBlocked,
    AuthUnavailable,
    UpstreamTimeout,
    UpstreamError,
    NotFound,
    Conflict,
    MethodNotAllowed,
    RequestTimeout,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// `(HTTP status, OpenAI error type, OpenAI error code)`: SPEC section 2's table.
    pub const fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use ErrorCode as C;
        match self {
            C::InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
            ),
            C::AdminRequired => (StatusCode::FORBIDDEN, "permission_error", "admin_required"),
            C::ModelNotAllowed => (
                StatusCode::FORBIDDEN,
                "permission_error",
                "model_not_allowed",
            ),
            C::ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            C::InvalidBody => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_body",
            ),
            C::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "body_too_large",
            ),
            C::RateLimitExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            C::BudgetExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "budget_exceeded",
            ),
            C::ContentBlocked => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "content_blocked",
            ),
            C::AuthUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "auth_unavailable",
            ),
            C::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "api_error", "upstream_timeout"),
            C::UpstreamError => (StatusCode::BAD_GATEWAY, "api_error", "upstream_error"),
            C::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            C::Conflict => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
            C::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            C::RequestTimeout => (StatusCode::GATEWAY_TIMEOUT, "api_error", "timeout"),
            C::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "api_error", "unavailable"),
            C::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal_error",
            ),
        }
    }

    /// The HTTP status of this code.
    pub const fn status(self) -> StatusCode {
        self.parts().0
    }

    /// The OpenAI `code` string, also used as a bounded metric label.
    pub const fn as_str(self) -> &'static str {
        self.parts().2
    }
}

/// An error on its way to the client: a code, a human message without secrets, and hints.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GatewayError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<&'static str>,
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Names the offending request parameter.
    #[must_use]
    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// Adds a `retry-after` hint (rounded up to whole seconds on the wire).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        error_body(
            self.code.parts().1,
            Some(self.code.as_str()),
            &self.message,
            self.param,
        )
    }
}

/// Renders `{"error": {"message", "type", "code", "param"}}`.
pub fn error_body(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        code: Option<&'a str>,
        param: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let outer = Outer {
        error: Inner {
            message,
            kind,
            code,
            param,
        },
    };
    // Serialising borrowed strings into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&outer).unwrap_or_default())
}

/// Anything with a code and a message can become a client-facing error.
pub trait HasErrorCode: std::fmt::Display {
    /// The table row for this error.
    fn code(&self) -> ErrorCode;
}

impl<E: HasErrorCode> From<&E> for GatewayError {
    fn from(err: &E) -> Self {
        GatewayError::new(err.code(), err.to_string())
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut resp = (self.code.status(), self.body()).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        // The edge (request log, audit) reads the error from here; it is logged once, there.
        resp.extensions_mut().insert(Arc::new(self));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape_with_retry_after() {
        let err = GatewayError::new(ErrorCode::RateLimitExceeded, "slow down")
            .with_retry_after(Duration::from_millis(1500));
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert!(resp.extensions().get::<Arc<GatewayError>>().is_some());
    }

    #[test]
    fn body_has_every_field() {
        let err = GatewayError::new(ErrorCode::InvalidBody, "bad \"json\"").with_param("messages");
        let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_body");
        assert_eq!(v["error"]["param"], "messages");
        assert_eq!(v["error"]["message"], "bad \"json\"");
    }
}
