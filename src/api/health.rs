//! Health probes: `/health` (detail), `/health/live` (the process serves), `/health/ready`
//! (the store and at least one upstream are usable).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Serialize;

use crate::policy::Policy;
use crate::proxy::breaker::CircuitState;
use crate::proxy::Proxy;
use crate::tenancy::Tenancy;

/// What `/health` needs.
#[derive(Clone, Debug)]
pub struct HealthState {
    pub proxy: Arc<Proxy>,
    pub tenancy: Arc<Tenancy>,
    pub policy: Arc<Policy>,
    pub cache: Arc<crate::cache::Cache>,
    pub started: Instant,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_s: u64,
    checks: Checks,
}

#[derive(Serialize)]
struct Checks {
    store: &'static str,
    upstreams: BTreeMap<String, &'static str>,
    /// `ok`, `off` (not configured) or `disabled` (configured, but its model is missing).
    semantic_cache: &'static str,
}

fn health(state: &HealthState) -> Health {
    let upstreams: BTreeMap<String, &'static str> = state
        .proxy
        .providers()
        .iter()
        .map(|p| (p.name.to_string(), p.breaker.state().as_str()))
        .collect();
    let any_usable = state
        .proxy
        .providers()
        .iter()
        .any(|p| p.breaker.state() != CircuitState::Open);
    let all_closed = state
        .proxy
        .providers()
        .iter()
        .all(|p| p.breaker.state() == CircuitState::Closed);
    let store_ok = state.tenancy.store_ok() && !state.policy.degraded();
    let status = match (any_usable, all_closed && store_ok) {
        (false, _) => "down",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: state.started.elapsed().as_secs(),
        checks: Checks {
            store: if store_ok { "ok" } else { "down" },
            upstreams,
            semantic_cache: state.cache.semantic_status(),
        },
    }
}

/// `GET /health`: overall status with per-check detail; 200 unless down.
pub async fn detail(State(state): State<HealthState>) -> Response {
    let h = health(&state);
    let code = if h.status == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(h)).into_response()
}

/// `GET /health/live`.
pub async fn live() -> &'static str {
    "ok"
}

/// `GET /health/ready`: 200 when the store and at least one upstream are usable.
pub async fn ready(State(state): State<HealthState>) -> Response {
    let h = health(&state);
    if h.status == "down" || h.checks.store != "ok" {
        (StatusCode::SERVICE_UNAVAILABLE, Json(h)).into_response()
    } else {
        (StatusCode::OK, Json(h)).into_response()
    }
}
