//! Admin API (SPEC section 3): tenants and their keys. Reached only with the admin key (the
//! auth layer checks it). JSON in and out; errors in OpenAI's shape.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::config::raw::{BudgetPeriod, PolicyMode, RawShield, RawTenantCache, RawTenantJudge};
use crate::error::{ErrorCode, GatewayError};
use crate::store::{Budget, KeyRecord, Limits, Store, StoreError, Tenant};
use crate::tenancy::{self, unix_now};

/// What the admin handlers need.
pub type AdminState = Arc<dyn Store>;

/// A tenant as the API takes it: every field optional for PATCH.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// `null` removes the limits.
    #[serde(default, deserialize_with = "present")]
    pub limits: Option<Option<LimitsInput>>,
    /// `null` removes the budget.
    #[serde(default, deserialize_with = "present")]
    pub budget: Option<Option<BudgetInput>>,
    /// Guardrail overrides (same shape as `[shield]`); `null` removes them.
    #[serde(default, deserialize_with = "present")]
    pub shield: Option<Option<RawShield>>,
    /// Cache switches (`exact`, `semantic`, `ttl`); `null` removes them.
    #[serde(default, deserialize_with = "present")]
    pub cache: Option<Option<RawTenantCache>>,
    /// Judge overrides (`sample_rate`, `min_score`); `null` removes them.
    #[serde(default, deserialize_with = "present")]
    pub judge: Option<Option<RawTenantJudge>>,
}

/// A field that is present: `Some(value)`, where `null` is `Some(None)` (absent stays `None`
/// through `default`), so PATCH can tell "remove" from "leave alone".
#[expect(
    clippy::option_option,
    reason = "absent, null and a value are three different PATCH intents"
)]
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `limits` of a tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    #[serde(default)]
    pub rpm: Option<NonZeroU32>,
    #[serde(default)]
    pub tpm: Option<NonZeroU32>,
    #[serde(default)]
    pub mode: PolicyMode,
}

impl LimitsInput {
    fn into_limits(self) -> Limits {
        Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            mode: self.mode,
        }
    }
}

/// `budget` of a tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetInput {
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    #[serde(default)]
    pub mode: PolicyMode,
}

/// Body of `POST /admin/tenants/{id}/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub expires_in: Option<String>,
    /// The key's own limits, checked on top of the tenant's.
    #[serde(default)]
    pub limits: Option<LimitsInput>,
}

/// A key as listed (never the secret).
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prefix: String,
    pub name: String,
    pub tenant: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

fn rfc3339(unix: i64) -> String {
    let secs = u64::try_from(unix).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

impl KeyView {
    fn of(record: &KeyRecord, secret: Option<String>) -> Self {
        Self {
            id: record.id.clone(),
            key: secret,
            prefix: record.prefix.clone(),
            name: record.name.clone(),
            tenant: record.tenant.clone(),
            created_at: rfc3339(record.created_at),
            expires_at: record.expires_at.map(rfc3339),
            revoked_at: record.revoked_at.map(rfc3339),
            limits: (!record.limits.is_unlimited()).then_some(record.limits),
        }
    }
}

fn store_error(err: &StoreError) -> GatewayError {
    GatewayError::new(ErrorCode::Unavailable, format!("{err}"))
        .with_retry_after(Duration::from_secs(1))
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidBody, message)
}

fn apply(tenant: &mut Tenant, input: TenantInput) -> Result<(), GatewayError> {
    if let Some(budget) = input.budget {
        tenant.budget = match budget {
            None => None,
            Some(b) if b.limit_usd.is_finite() && b.limit_usd >= 0.0 => Some(Budget {
                limit_usd: b.limit_usd,
                period: b.period,
                mode: b.mode,
            }),
            Some(_) => {
                return Err(
                    invalid("budget.limit_usd must be a non-negative number of USD")
                        .with_param("budget"),
                )
            }
        };
    }
    if let Some(shield) = input.shield {
        if let Some(over) = &shield {
            let policy = crate::shield::rules::policy_of(over);
            crate::shield::Shield::new()
                .compile(&policy)
                .map_err(|e| invalid(format!("shield: {e}")).with_param("shield"))?;
        }
        tenant.shield = shield;
    }
    if let Some(cache) = input.cache {
        if let Some(ttl) = cache.as_ref().and_then(|c| c.ttl.as_deref()) {
            if humantime::parse_duration(ttl).map_or(true, |d| d.is_zero()) {
                return Err(
                    invalid("cache.ttl must be a duration like \"10m\"").with_param("cache")
                );
            }
        }
        tenant.cache = cache;
    }
    if let Some(judge) = input.judge {
        if let Some(j) = &judge {
            if j.sample_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                return Err(
                    invalid("judge.sample_rate must be between 0 and 1").with_param("judge")
                );
            }
            if j.min_score.is_some_and(|s| !(0.0..=10.0).contains(&s)) {
                return Err(invalid("judge.min_score must be between 0 and 10").with_param("judge"));
            }
        }
        tenant.judge = judge;
    }
    if let Some(limits) = input.limits {
        tenant.limits = limits.map_or_else(Limits::default, LimitsInput::into_limits);
    }
    if let Some(name) = input.name {
        tenant.name = name;
    }
    if let Some(models) = input.models {
        tenant.models = models;
    }
    Ok(())
}

/// Largest admin request body (tenant and key objects are tiny).
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// An admin request body, read through the same bounded reader as the proxy (OpenAI-shaped
/// 413 past the limit, never buffered beyond it).
#[derive(Debug)]
pub struct AdminBody(axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for AdminBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        crate::middleware::parse::read_limited(&parts.headers, body, MAX_ADMIN_BODY)
            .await
            .map(Self)
            .map_err(IntoResponse::into_response)
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("invalid request body: {e}")))
}

/// `POST /admin/tenants`.
pub async fn create_tenant(State(store): State<AdminState>, body: AdminBody) -> Response {
    let result: Result<Response, GatewayError> = async {
        let input: TenantInput = parse_json(&body.0)?;
        let id = input
            .id
            .clone()
            .ok_or_else(|| invalid("`id` is required").with_param("id"))?;
        if !tenancy::valid_tenant_id(&id) {
            return Err(invalid(
                "`id` must be 1-64 characters of A-Z a-z 0-9 _ - and not start with _",
            )
            .with_param("id"));
        }
        if store
            .get_tenant(&id)
            .await
            .map_err(|e| store_error(&e))?
            .is_some()
        {
            return Err(GatewayError::new(
                ErrorCode::Conflict,
                format!("tenant `{id}` already exists"),
            ));
        }
        let mut tenant = Tenant::new(id);
        apply(&mut tenant, input)?;
        store
            .put_tenant(&tenant)
            .await
            .map_err(|e| store_error(&e))?;
        Ok((StatusCode::CREATED, Json(tenant)).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /admin/tenants`.
pub async fn list_tenants(State(store): State<AdminState>) -> Response {
    match store.list_tenants().await {
        Ok(tenants) => Json(serde_json::json!({"object": "list", "data": tenants})).into_response(),
        Err(e) => store_error(&e).into_response(),
    }
}

async fn existing(store: &AdminState, id: &str) -> Result<Tenant, GatewayError> {
    store
        .get_tenant(id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(|| GatewayError::new(ErrorCode::NotFound, format!("no tenant `{id}`")))
}

/// `GET /admin/tenants/{id}`.
pub async fn get_tenant(State(store): State<AdminState>, Path(id): Path<String>) -> Response {
    match existing(&store, &id).await {
        Ok(t) => Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `PATCH /admin/tenants/{id}`: changes only the fields it names.
pub async fn patch_tenant(
    State(store): State<AdminState>,
    Path(id): Path<String>,
    body: AdminBody,
) -> Response {
    let result: Result<Response, GatewayError> = async {
        let input: TenantInput = parse_json(&body.0)?;
        if input.id.as_deref().is_some_and(|new| new != id) {
            return Err(invalid("`id` cannot be changed").with_param("id"));
        }
        let mut tenant = existing(&store, &id).await?;
        apply(&mut tenant, input)?;
        store
            .put_tenant(&tenant)
            .await
            .map_err(|e| store_error(&e))?;
        Ok(Json(tenant).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /admin/tenants/{id}`: removes the tenant and revokes its keys.
pub async fn delete_tenant(State(store): State<AdminState>, Path(id): Path<String>) -> Response {
    match store.delete_tenant(&id).await {
        Ok(true) => Json(serde_json::json!({"id": id, "deleted": true})).into_response(),
        Ok(false) => {
            GatewayError::new(ErrorCode::NotFound, format!("no tenant `{id}`")).into_response()
        }
        Err(e) => store_error(&e).into_response(),
    }
}

/// `POST /admin/tenants/{id}/keys`: the only answer that ever carries the secret.
pub async fn create_key(
    State(store): State<AdminState>,
    Path(id): Path<String>,
    body: AdminBody,
) -> Response {
    let result: Result<Response, GatewayError> = async {
        let input: KeyInput = if body.0.is_empty() {
            KeyInput::default()
        } else {
            parse_json(&body.0)?
        };
        existing(&store, &id).await?;
        let expires_in = match input.expires_in.as_deref() {
            None => None,
            Some(text) => Some(
                humantime::parse_duration(text)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        invalid(format!(
                            "`expires_in` must be a duration like \"30d\", not `{text}`"
                        ))
                        .with_param("expires_in")
                    })?,
            ),
        };
        let name = input.name.unwrap_or_else(|| "default".to_owned());
        let limits = input
            .limits
            .map_or_else(Limits::default, LimitsInput::into_limits);
        let (secret, record) = tenancy::create_key(store.as_ref(), &id, &name, expires_in, limits)
            .await
            .map_err(|e| store_error(&e))?;
        Ok((
            StatusCode::CREATED,
            Json(KeyView::of(&record, Some(secret.expose().to_owned()))),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /admin/tenants/{id}/keys`.
pub async fn list_keys(State(store): State<AdminState>, Path(id): Path<String>) -> Response {
    let result: Result<Response, GatewayError> = async {
        existing(&store, &id).await?;
        let keys = store.list_keys(&id).await.map_err(|e| store_error(&e))?;
        let views: Vec<KeyView> = keys.iter().map(|k| KeyView::of(k, None)).collect();
        Ok(Json(serde_json::json!({"object": "list", "data": views})).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /admin/keys/{key_id}`: revokes; every replica refuses it within a second.
pub async fn revoke_key(State(store): State<AdminState>, Path(key_id): Path<String>) -> Response {
    match store.revoke_key(&key_id, unix_now()).await {
        Ok(Some(record)) => Json(KeyView::of(&record, None)).into_response(),
        Ok(None) => {
            GatewayError::new(ErrorCode::NotFound, format!("no key `{key_id}`")).into_response()
        }
        Err(e) => store_error(&e).into_response(),
    }
}
