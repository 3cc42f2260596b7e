//! Authentication: on for every route except the short allow-list in `server::routes`.
//!
//! Client routes take `Authorization: Bearer sk-sntl-...` or `x-api-key`, resolved through the
//! key cache into an `Arc<RequestContext>` request extension. `/admin/*` takes only the admin
//! key (`SENTINEL_ADMIN_KEY`), compared in constant time; tenant keys get 403 there.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, Request};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use crate::error::{ErrorCode, GatewayError};
use crate::server::routes;
use crate::tenancy::key::{self, PresentedKey};
use crate::tenancy::{AuthError, Tenancy};

/// Marker extension on admin requests that passed the admin check.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

/// The admin key, kept only as its SHA-256.
#[derive(Clone)]
pub struct AdminKey([u8; 32]);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(*****)")
    }
}

impl AdminKey {
    /// Hashes the configured admin secret.
    pub fn new(secret: &str) -> Self {
        Self(key::hash(secret))
    }

    /// Constant-time comparison of hashes (no early exit on the first differing byte).
    pub fn matches(&self, presented: &str) -> bool {
        self.matches_hash(&key::hash(presented))
    }

    /// Same, for a secret already hashed.
    pub fn matches_hash(&self, hash: &[u8; 32]) -> bool {
        hash.ct_eq(&self.0).into()
    }
}

/// Adds [`Auth`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tenancy: Arc<Tenancy>,
    admin: Option<AdminKey>,
}

impl AuthLayer {
    /// Authenticates against `tenancy`; `admin` enables the admin API.
    pub fn new(tenancy: Arc<Tenancy>, admin: Option<AdminKey>) -> Self {
        Self { tenancy, admin }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tenancy: Arc::clone(&self.tenancy),
            admin: self.admin.clone(),
        }
    }
}

/// Refuses unauthenticated requests; inserts the caller's context.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    tenancy: Arc<Tenancy>,
    admin: Option<AdminKey>,
}

/// The secret a request presents, from either header.
pub fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl<S> Service<Request<Body>> for Auth<S>
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        if routes::UNAUTHENTICATED.contains(&path) {
            return Box::pin(inner.call(req));
        }
        if path == "/admin" || path.starts_with("/admin/") {
            let verdict = match (&self.admin, presented_secret(req.headers())) {
                (None, _) => Err(GatewayError::new(
                    ErrorCode::AdminRequired,
                    "the admin API is off: set SENTINEL_ADMIN_KEY",
                )),
                (_, None) => Err(AuthError::Missing.to_gateway()),
                (Some(admin), Some(secret)) if admin.matches(secret) => Ok(()),
                (Some(_), Some(_)) => Err(GatewayError::new(
                    ErrorCode::AdminRequired,
                    "this route needs the admin key",
                )),
            };
            return match verdict {
                Ok(()) => {
                    req.extensions_mut().insert(AdminCaller);
                    Box::pin(inner.call(req))
                }
                Err(err) => Box::pin(async move { Ok(err.into_response()) }),
            };
        }
        // The presented secret is hashed once: the same digest is the admin comparison and the
        // key-cache lookup.
        let is_admin = |hash: &[u8; 32]| self.admin.as_ref().is_some_and(|a| a.matches_hash(hash));
        let caller = match presented_secret(req.headers()) {
            None => Err(AuthError::Missing),
            Some(secret) => match PresentedKey::parse(secret) {
                Ok(key) if is_admin(key.hash()) => Ok(None),
                Ok(key) => Ok(Some(key)),
                Err(_) if is_admin(&key::hash(secret)) => Ok(None),
                Err(_) => Err(AuthError::Invalid),
            },
        };
        let tenancy = Arc::clone(&self.tenancy);
        Box::pin(async move {
            let key = match caller {
                Err(err) => return Ok(err.to_gateway().into_response()),
                // The admin may read usage and audit of any tenant (`?tenant=`).
                Ok(None) => {
                    req.extensions_mut().insert(AdminCaller);
                    return inner.call(req).await;
                }
                Ok(Some(key)) => key,
            };
            match tenancy.authenticate(&key).await {
                Ok(context) => {
                    req.extensions_mut().insert(context);
                    inner.call(req).await
                }
                Err(err) => Ok(err.to_gateway().into_response()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Bearer  sk-sntl-abc ".parse().unwrap(),
        );
        assert_eq!(presented_secret(&h), Some("sk-sntl-abc"));
        h.insert(header::AUTHORIZATION, "bearer sk-sntl-x".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("sk-sntl-x"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_secret(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-sntl-y".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("sk-sntl-y"));
    }

    #[test]
    fn admin_key_matches_only_itself() {
        let admin = AdminKey::new("admin-secret");
        assert!(admin.matches("admin-secret"));
        assert!(!admin.matches("admin-secreT"));
        assert!(!format!("{admin:?}").contains("admin-secret"));
    }
}
