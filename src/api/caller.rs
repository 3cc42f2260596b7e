//! Who is reading `/v1/usage` and `/v1/audit`: a tenant key (its own tenant only) or the
//! admin key (any tenant, named by `?tenant=`).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::{ErrorCode, GatewayError};
use crate::middleware::auth::AdminCaller;
use crate::tenancy::RequestContext;

/// The authenticated reader.
#[derive(Debug, Clone)]
pub enum Caller {
    Tenant(Arc<RequestContext>),
    Admin,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<Arc<RequestContext>>() {
            return Ok(Self::Tenant(Arc::clone(ctx)));
        }
        if parts.extensions.get::<AdminCaller>().is_some() {
            return Ok(Self::Admin);
        }
        Err(GatewayError::new(
            ErrorCode::InvalidApiKey,
            "missing API key",
        ))
    }
}

/// The tenant a request reads: the caller's own, or for the admin the one it names.
pub fn scope_tenant(caller: &Caller, asked: Option<&str>) -> Result<String, GatewayError> {
    match (caller, asked) {
        (Caller::Tenant(ctx), None) => Ok(ctx.tenant.id.clone()),
        (Caller::Tenant(ctx), Some(t)) if t == ctx.tenant.id => Ok(t.to_owned()),
        (Caller::Tenant(_), Some(_)) => Err(GatewayError::new(
            ErrorCode::AdminRequired,
            "a tenant key reads only its own tenant; `tenant` needs the admin key",
        )
        .with_param("tenant")),
        (Caller::Admin, Some(t)) => Ok(t.to_owned()),
        (Caller::Admin, None) => Err(GatewayError::new(
            ErrorCode::InvalidBody,
            "the admin key must name a tenant: `?tenant=ID`",
        )
        .with_param("tenant")),
    }
}

/// A query string that does not parse, as an OpenAI-shaped 400.
pub fn bad_query(e: &axum::extract::rejection::QueryRejection) -> GatewayError {
    GatewayError::new(
        ErrorCode::InvalidBody,
        format!("bad query string: {}", e.body_text()),
    )
}
