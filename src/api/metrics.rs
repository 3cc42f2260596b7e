//! `GET /metrics` and `/metrics/prometheus`: Prometheus text exposition.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};
use metrics_exporter_prometheus::PrometheusHandle;

/// Renders every metric family.
pub async fn render(State(handle): State<Option<PrometheusHandle>>) -> Response {
    let body = handle.map(|h| h.render()).unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
