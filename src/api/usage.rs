//! `GET /v1/usage`: a tenant's usage and cost, answered from the daily rollups only (never by
//! scanning audit records), so it stays fast however many requests a tenant made.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::{scope_tenant, Caller};
use super::time::{parse_bound, Bound};
use crate::audit::record::{day_of, now_ms, parse_day};
use crate::error::{ErrorCode, GatewayError};
use crate::store::{Store, UsageGrain, UsageRow};
use crate::tokens::pricing::usd_f64;

/// Query of `/v1/usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub group_by: Option<GroupBy>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// How the breakdown is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Model,
    Day,
    Key,
}

/// Totals of a group (or of everything).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub cache_hits: u64,
    pub cost_saved_usd: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_nano: i64,
    cache_hits: u64,
    saved_nano: i64,
}

impl Sum {
    fn add(&mut self, r: &UsageRow) {
        self.requests += r.requests;
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cost_nano = self.cost_nano.saturating_add(r.cost_nano);
        self.cache_hits += r.cache_hits;
        self.saved_nano = self.saved_nano.saturating_add(r.saved_nano);
    }

    fn totals(self) -> Totals {
        Totals {
            requests: self.requests,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cost_usd: usd_f64(self.cost_nano),
            cache_hits: self.cache_hits,
            cost_saved_usd: usd_f64(self.saved_nano),
        }
    }
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct UsageReport {
    pub tenant: String,
    pub start: String,
    pub end: String,
    pub group_by: Option<&'static str>,
    pub totals: Totals,
    pub breakdown: Vec<serde_json::Value>,
}

/// `GET /v1/usage`.
pub async fn report(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    q: Result<Query<UsageQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return super::caller::bad_query(&e).into_response(),
    };
    match build(store.as_ref(), &caller, q).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn build(
    store: &dyn Store,
    caller: &Caller,
    q: UsageQuery,
) -> Result<UsageReport, GatewayError> {
    let tenant = scope_tenant(caller, q.tenant.as_deref())?;
    let today = day_of(now_ms());
    let month_start = format!("{}-01", &today[..7]);
    let start_day = match q.start.as_deref() {
        None => month_start,
        Some(s) => day_of(parse_bound(s, Bound::Start, "start")?),
    };
    let end_day = match q.end.as_deref() {
        None => today,
        Some(s) => day_of(parse_bound(s, Bound::End, "end")?),
    };
    let (Some(a), Some(b)) = (parse_day(&start_day), parse_day(&end_day)) else {
        return Err(GatewayError::new(ErrorCode::InvalidBody, "bad date range"));
    };
    if a > b {
        return Err(
            GatewayError::new(ErrorCode::InvalidBody, "`start` is after `end`").with_param("start"),
        );
    }
    if b - a > 3_660 {
        return Err(GatewayError::new(
            ErrorCode::InvalidBody,
            "the range may span at most ten years",
        )
        .with_param("start"));
    }
    compute(store, &tenant, &start_day, &end_day, q.group_by)
        .await
        .map_err(|e| {
            GatewayError::new(ErrorCode::Unavailable, format!("usage is unavailable: {e}"))
                .with_retry_after(std::time::Duration::from_secs(1))
        })
}

/// The report of `tenant` for the days `start_day..=end_day`, from the rollups.
pub async fn compute(
    store: &dyn Store,
    tenant: &str,
    start_day: &str,
    end_day: &str,
    group_by: Option<GroupBy>,
) -> Result<UsageReport, crate::store::StoreError> {
    let grain = if group_by == Some(GroupBy::Key) {
        UsageGrain::Key
    } else {
        UsageGrain::Model
    };
    let rows = store.usage_rows(tenant, start_day, end_day, grain).await?;
    let mut total = Sum::default();
    let mut groups: BTreeMap<String, Sum> = BTreeMap::new();
    for r in &rows {
        total.add(r);
        if let Some(g) = group_by {
            let k = match g {
                GroupBy::Model => r.model.clone(),
                GroupBy::Day => r.day.clone(),
                GroupBy::Key => r.key_id.clone(),
            };
            groups.entry(k).or_default().add(r);
        }
    }
    let field = group_by.map(|g| match g {
        GroupBy::Model => "model",
        GroupBy::Day => "day",
        GroupBy::Key => "key_id",
    });
    let breakdown = groups
        .into_iter()
        .map(|(k, sum)| {
            let mut v = serde_json::to_value(sum.totals()).unwrap_or_default();
            if let (Some(map), Some(field)) = (v.as_object_mut(), field) {
                map.insert(field.to_owned(), serde_json::Value::String(k));
            }
            v
        })
        .collect();
    Ok(UsageReport {
        tenant: tenant.to_owned(),
        start: format!("{start_day}T00:00:00Z"),
        end: format!("{end_day}T23:59:59Z"),
        group_by: group_by.map(|g| match g {
            GroupBy::Model => "model",
            GroupBy::Day => "day",
            GroupBy::Key => "key",
        }),
        totals: total.totals(),
        breakdown,
    })
}
