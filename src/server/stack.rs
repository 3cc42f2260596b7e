//! THE tower stack: every layer of the request path, assembled in one place.
//!
//! Outermost first, for every route:
//! 1. `SetSensitiveRequestHeaders` — marks `authorization` and `x-api-key` so no log or debug
//!    output prints them.
//! 2. `RequestIdLayer` — inserts [`RequestId`] and [`RequestStart`]; echoes `x-request-id` on
//!    every response, errors included.
//! 3. `CorsLayer` — only when `server.cors_allowed_origins` lists origins (off by default).
//! 4. `AuthLayer` — every route but the allow-list `routes::UNAUTHENTICATED` needs a key.
//!    Client keys resolve through the in-process key cache into `Arc<RequestContext>`
//!    (tenant, key id); `/admin/*` needs the admin key and gets `AdminCaller` instead.
//!
//! Proxy routes (`/v1/chat/completions`, `/v1/embeddings`), then:
//! 5. `ParseBodyLayer` — reads the body once within `server.max_body_bytes` (413 otherwise),
//!    parses it once, inserts [`ParsedBody`] (400 `invalid_body` on bad JSON).
//! 5a. `PrefetchLayer` (chat) — when the tenant reads the exact cache, starts the `GET` of the
//!    request's exact key and drives it beside the layers below, so admission and the lookup
//!    share one Redis round trip; inserts `Prefetched`, which `CacheLayer` uses only when the
//!    shield left the body unchanged. Dropped when the inner layers answer first.
//! 6. `AdmitLayer` — opens the request's [`Ledger`] (its accounting, finished exactly once
//!    whatever happens next) and applies the tenant's model allow-list (403), `rpm`/`tpm`
//!    limits and budget (429), reserving tokens and money; adds `x-ratelimit-*` headers.
//!    Reads `RequestContext`, `ParsedBody`, `RequestId`, `RequestStart`; inserts `Ledger`.
//!    With trace export on (`[telemetry] otlp_endpoint`), also opens the request's span
//!    (parented by an incoming `traceparent`) inside the `Ledger`, which ends it. A body over
//!    16 KB has its prompt counted off the lane ([`crate::offload`]), as step 7 scans it. On
//!    Redis, a busy caller's requests are admitted from the lane's lease of its limits
//!    ([`crate::policy::lease`]) without a round trip.
//! 7. `GuardLayer` (chat) — the tenant's shield: redacts PII in the parsed body (before the
//!    cache and the provider see it), blocks with 400 `content_blocked`, records findings on
//!    the `Ledger`; inserts `ResponseGuard` when answers are checked too.
//! 8. `CacheLayer` (chat) — the tenant's exact and semantic cache, keyed on the redacted
//!    request: a hit is answered here (JSON, or replayed as SSE) and finishes the `Ledger`
//!    at cost 0 with what it saved; a miss inserts `Fill`, which the proxy uses to store the
//!    complete, successful answer. With trace export on, the lookup is a `cache lookup` span.
//! 9. handler → [`Proxy::handle`] — routes, retries, falls back, streams; reads
//!    `RequestContext`, `ParsedBody`, `RequestId`, `RequestStart` and takes the `Ledger`,
//!    which it finishes with the usage when the answer (or stream) ends.
//!
//! Other routes (`/v1/models`, `/v1/usage`, `/v1/audit*`, `/admin/*`, health, metrics,
//! `/openapi.json`, the Swagger UI at `/docs` (`/docs/` and its assets) and the dashboard at
//! `/`; the last three are public and listed in `routes::UNAUTHENTICATED`), then:
//! 5. `api_timeout` — `server.api_timeout`, 504 `timeout` when exceeded. (Proxy routes carry
//!    the request deadline into the upstream call and the stream body instead.)
//!
//! Unknown paths answer 404 and wrong methods 405, both in OpenAI's error shape.
//!
//! [`RequestId`]: crate::context::RequestId
//! [`RequestStart`]: crate::context::RequestStart
//! [`ParsedBody`]: crate::context::ParsedBody
//! [`Proxy::handle`]: crate::proxy::Proxy::handle
//! [`Ledger`]: crate::metering::Ledger

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderName, HeaderValue, Method};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use super::routes;
use crate::api::{self, health::HealthState};
use crate::cache::layer::CacheLayer;
use crate::cache::prefetch::PrefetchLayer;
use crate::error::{ErrorCode, GatewayError};
use crate::middleware::admit::AdmitLayer;
use crate::middleware::auth::AuthLayer;
use crate::middleware::guard::GuardLayer;
use crate::middleware::parse::{BodyKind, ParseBodyLayer};
use crate::middleware::request_id::RequestIdLayer;
use crate::middleware::timeout::api_timeout;
use crate::providers::Endpoint;
use crate::state::AppState;

/// Builds the whole application.
pub fn app(state: &AppState) -> Router {
    let server = &state.config.server;
    let limit = server.max_body_bytes.get();

    let proxy_routes = Router::new()
        .route(
            routes::CHAT_COMPLETIONS,
            post(api::proxy::chat_completions)
                .layer(
                    CacheLayer::new(Arc::clone(&state.cache))
                        .traced(state.meter.tracer().is_some()),
                )
                .layer(GuardLayer::new(Arc::clone(&state.config.guardrails)))
                .layer(AdmitLayer::new(Arc::clone(&state.meter), Endpoint::Chat))
                .layer(PrefetchLayer::new(Arc::clone(&state.cache)))
                .layer(
                    ParseBodyLayer::new(BodyKind::Chat, limit).metered(Arc::clone(&state.meter)),
                ),
        )
        .route(
            routes::EMBEDDINGS,
            post(api::proxy::embeddings)
                .layer(AdmitLayer::new(
                    Arc::clone(&state.meter),
                    Endpoint::Embeddings,
                ))
                .layer(
                    ParseBodyLayer::new(BodyKind::Embeddings, limit)
                        .metered(Arc::clone(&state.meter)),
                ),
        )
        .with_state(Arc::clone(&state.proxy));

    let health = HealthState {
        proxy: Arc::clone(&state.proxy),
        tenancy: Arc::clone(&state.tenancy),
        policy: Arc::clone(state.meter.policy()),
        cache: Arc::clone(&state.cache),
        started: state.started,
    };
    let timeout = server.api_timeout;
    let api_routes = Router::new()
        .route(routes::MODELS, get(api::models::list))
        .with_state(Arc::clone(&state.proxy))
        .merge(
            Router::new()
                .route("/v1/usage", get(api::usage::report))
                .route("/v1/audit", get(api::audit::list))
                .route("/v1/audit/{request_id}", get(api::audit::one))
                .with_state(Arc::clone(state.tenancy.store())),
        )
        .merge(
            Router::new()
                .route("/health", get(api::health::detail))
                .route("/health/live", get(api::health::live))
                .route("/health/ready", get(api::health::ready))
                .with_state(health),
        )
        .merge(
            Router::new()
                .route("/metrics", get(api::metrics::render))
                .route("/metrics/prometheus", get(api::metrics::render))
                .with_state(state.metrics.clone()),
        )
        .merge(admin_routes(state))
        .route(api::openapi::OPENAPI_PATH, get(api::openapi::json))
        .merge(api::openapi::swagger_ui())
        .route("/", get(api::dashboard::page))
        .layer(axum::middleware::from_fn(move |req, next| {
            api_timeout(timeout, req, next)
        }));

    let cors = cors(&server.cors_allowed_origins);
    Router::new()
        .merge(proxy_routes)
        .merge(api_routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    HeaderName::from_static("x-api-key"),
                ]))
                .layer(RequestIdLayer)
                .option_layer(cors)
                .layer(AuthLayer::new(
                    Arc::clone(&state.tenancy),
                    state.admin.clone(),
                )),
        )
}

fn admin_routes(state: &AppState) -> Router {
    use api::admin;
    Router::new()
        .route(
            "/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route(
            "/admin/tenants/{id}",
            get(admin::get_tenant)
                .patch(admin::patch_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/admin/tenants/{id}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .with_state(Arc::clone(state.tenancy.store()))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
            ]),
    )
}

async fn not_found() -> Response {
    GatewayError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    GatewayError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
    .into_response()
}
