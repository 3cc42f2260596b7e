//! `POST /v1/chat/completions` and `POST /v1/embeddings`: hand the parsed request to the proxy.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use crate::context::{ParsedBody, RequestId, RequestStart};
use crate::error::{ErrorCode, GatewayError};
use crate::metering::LedgerSlot;
use crate::middleware::guard::ResponseGuard;
use crate::providers::Endpoint;
use crate::proxy::{Proxy, RequestMeta};
use crate::tenancy::RequestContext;

/// Chat completions, JSON or SSE.
pub async fn chat_completions(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    forward(&proxy, Endpoint::Chat, req).await
}

/// Embeddings.
pub async fn embeddings(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    forward(&proxy, Endpoint::Embeddings, req).await
}

async fn forward(proxy: &Proxy, endpoint: Endpoint, mut req: Request) -> Response {
    let ext = req.extensions_mut();
    let (Some(body), Some(id)) = (ext.remove::<ParsedBody>(), ext.remove::<RequestId>()) else {
        // The stack guarantees both; a miss is a wiring bug, not the client's fault.
        return GatewayError::new(ErrorCode::Internal, "request context missing").into_response();
    };
    let started = ext.get::<RequestStart>().map_or_else(Instant::now, |s| s.0);
    let Some(caller) = ext.get::<Arc<RequestContext>>().cloned() else {
        // Only the admin key gets this far without a tenant: it manages, it does not call models.
        return GatewayError::new(
            ErrorCode::AdminRequired,
            "model calls need a tenant key, not the admin key",
        )
        .into_response();
    };
    let ledger = ext.remove::<LedgerSlot>().and_then(|slot| slot.take());
    let response_guard = ext.remove::<ResponseGuard>();
    let fill = ext.remove::<crate::cache::Fill>();
    proxy
        .handle(
            RequestMeta {
                id,
                caller,
                started,
                endpoint,
                response_guard,
                fill,
            },
            body,
            ledger,
        )
        .await
}
