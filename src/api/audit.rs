//! `GET /v1/audit` (a tenant's records, newest first, filtered, paginated by an opaque
//! cursor) and `GET /v1/audit/{request_id}` (one record; 404 unless it is the caller's).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::caller::{bad_query, scope_tenant, Caller};
use super::time::{parse_bound, Bound};
use crate::audit::record::AuditRecord;
use crate::error::{ErrorCode, GatewayError};
use crate::store::{AuditQuery, Store, StoreError};

/// Records per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;

/// Query of `/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub cache: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Query of `/v1/audit/{request_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneParams {
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A page.
#[derive(Debug, Serialize)]
pub struct AuditList {
    pub data: Vec<AuditRecord>,
    pub next_cursor: Option<String>,
}

fn unavailable(e: &StoreError) -> GatewayError {
    GatewayError::new(
        ErrorCode::Unavailable,
        format!("the audit log is unavailable: {e}"),
    )
    .with_retry_after(std::time::Duration::from_secs(1))
}

const CURSOR_PREFIX: &str = "c1:";

fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{raw}"))
}

fn decode_cursor(text: &str) -> Result<String, GatewayError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(CURSOR_PREFIX).map(str::to_owned))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        .ok_or_else(|| {
            GatewayError::new(
                ErrorCode::InvalidBody,
                "`cursor` is not one this API gave out",
            )
            .with_param("cursor")
        })
}

/// `GET /v1/audit`.
pub async fn list(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e).into_response(),
    };
    match page(store.as_ref(), &caller, q).await {
        Ok(p) => Json(p).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn page(
    store: &dyn Store,
    caller: &Caller,
    q: AuditParams,
) -> Result<AuditList, GatewayError> {
    let tenant = scope_tenant(caller, q.tenant.as_deref())?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(
            GatewayError::new(ErrorCode::InvalidBody, "`limit` must be 1..=1000")
                .with_param("limit"),
        );
    }
    let tag = match q.tag.as_deref() {
        None => None,
        Some(t) => Some(
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    GatewayError::new(ErrorCode::InvalidBody, "`tag` must be k=v").with_param("tag")
                })?,
        ),
    };
    if let Some(c) = q.cache.as_deref() {
        if !matches!(c, "miss" | "exact" | "semantic" | "bypass") {
            return Err(GatewayError::new(
                ErrorCode::InvalidBody,
                "`cache` must be miss, exact, semantic or bypass",
            )
            .with_param("cache"));
        }
    }
    let query = AuditQuery {
        start_ms: q
            .start
            .as_deref()
            .map(|s| parse_bound(s, Bound::Start, "start"))
            .transpose()?,
        end_ms: q
            .end
            .as_deref()
            .map(|s| parse_bound(s, Bound::End, "end"))
            .transpose()?,
        model: q.model,
        status: q.status,
        cache: q.cache,
        tag,
        limit,
        cursor: q.cursor.as_deref().map(decode_cursor).transpose()?,
    };
    let page = store
        .audit_page(&tenant, &query)
        .await
        .map_err(|e| match e {
            StoreError::Corrupt(m) if m == "bad cursor" => {
                GatewayError::new(ErrorCode::InvalidBody, "`cursor` is not valid")
                    .with_param("cursor")
            }
            e => unavailable(&e),
        })?;
    Ok(AuditList {
        data: page.records,
        next_cursor: page.next_cursor.as_deref().map(encode_cursor),
    })
}

/// `GET /v1/audit/{request_id}`.
pub async fn one(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    Path(request_id): Path<String>,
    q: Result<Query<OneParams>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&e).into_response(),
    };
    let tenant = match scope_tenant(&caller, q.tenant.as_deref()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match store.audit_get(&tenant, &request_id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => GatewayError::new(
            ErrorCode::NotFound,
            format!("no audit record `{request_id}` for this tenant"),
        )
        .into_response(),
        Err(e) => unavailable(&e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        for raw in ["1764000000000-3", "42"] {
            assert_eq!(decode_cursor(&encode_cursor(raw)).unwrap(), raw);
        }
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("c1:1; DROP")).is_err());
    }
}
