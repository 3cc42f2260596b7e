//! Deadline for routes that do not proxy (health, metrics, models, later admin/usage/audit).
//! Proxy routes carry their own deadline (`server.request_timeout`) through to the upstream
//! call and the stream, which a response-future timeout could not bound.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, GatewayError};

/// Answers 504 `timeout` when the handler takes longer than `limit`.
pub async fn api_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => GatewayError::new(
            ErrorCode::RequestTimeout,
            format!("the request took longer than {}s", limit.as_secs_f64()),
        )
        .into_response(),
    }
}
