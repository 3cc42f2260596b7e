//! Records the stores keep.

use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use crate::config::raw::{BudgetPeriod, PolicyMode};

/// A tenant: a team or customer with its own keys, limits and budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Allowed client-facing models; empty allows every model.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Guardrail overrides on top of the global `[shield]` (see `shield::rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shield: Option<crate::config::raw::RawShield>,
    /// Cache switches and TTL overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::config::raw::RawTenantCache>,
    /// Judge sampling and alert threshold overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::config::raw::RawTenantJudge>,
}

impl Tenant {
    /// A tenant with no name, model allow-list, limits, budget or overrides.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: None,
            models: Vec::new(),
            limits: Limits::default(),
            budget: None,
            shield: None,
            cache: None,
            judge: None,
        }
    }
}

/// Requests and tokens per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<NonZeroU32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<NonZeroU32>,
    /// `dry_run` records violations instead of refusing.
    #[serde(default, skip_serializing_if = "is_enforce")]
    pub mode: PolicyMode,
}

impl Limits {
    /// Whether neither `rpm` nor `tpm` is set.
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_enforce(mode: &PolicyMode) -> bool {
    *mode == PolicyMode::Enforce
}

/// A spending limit per period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    #[serde(default)]
    pub mode: PolicyMode,
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public id, shown in listings and audit records (`key_...`).
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The first characters of the secret, to recognise it (`sk-sntl-AbCd`).
    pub prefix: String,
    /// SHA-256 of the whole secret, hex.
    pub hash: String,
    pub created_at: i64,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// The key's own `rpm`/`tpm`, checked in addition to its tenant's.
    #[serde(default, skip_serializing_if = "Limits::is_unlimited")]
    pub limits: Limits,
}

/// One window of a combined admission ([`super::CounterStore::admit`]): take `amount` from
/// `scope` if it fits under `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTake {
    pub scope: String,
    pub limit: u64,
    pub amount: u64,
}

/// The budget reservation of a combined admission ([`super::CounterStore::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetReserve {
    pub tenant: String,
    pub period: String,
    pub amount: i64,
    pub limit: i64,
    pub enforce: bool,
}

/// Answer of a sliding-window take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDecision {
    pub allowed: bool,
    /// Weighted count after this take (or before it, when refused):
    /// `floor(previous * (W - x) / W) + current`, x the offset of `now` into the window W.
    pub count: u64,
    /// When refused: milliseconds to wait. If the current window alone cannot take `amount`,
    /// until the next window starts; otherwise until the previous window's weight has decayed
    /// enough (`prev * (W - x) / W <= limit - amount - current`, x the offset into the
    /// window). An `amount` above `limit` gives the window length. 0 when allowed.
    pub retry_after_ms: u64,
}

/// Answer of a budget reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetDecision {
    pub allowed: bool,
    /// Spent nano-USD of the period before this reservation.
    pub spent: i64,
    /// Reserved (in flight) nano-USD before this reservation.
    pub reserved: i64,
}

// === accounting ===

/// What one finished request leaves in the store, written in one idempotent step: the sealed
/// audit record, its usage rollup, and the settlement of the reservations it made in the
/// store. Written at most once per `(tenant, request_id)`: a replay (after a store outage)
/// changes nothing the first write already did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub record: crate::audit::record::AuditRecord,
    /// The record's cost in nano-USD (exact; `record.cost_usd` is for display).
    pub cost_nano: i64,
    /// What a cache hit saved, nano-USD.
    pub saved_nano: i64,
    /// Reservations made in the store, released (and replaced by the real figures) here.
    #[serde(default)]
    pub settle: Settlement,
}

/// Store-side reservations of a request, settled when its outcome is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// `(period, reserved nano-USD)`: released, and the outcome's cost recorded as spent.
    #[serde(default)]
    pub budget: Option<(String, i64)>,
    /// Token-window corrections: the real count minus the reservation.
    #[serde(default)]
    pub windows: Vec<WindowSettle>,
    /// Held until the outcome is written, then dropped: a lease's budget reservation is given
    /// back only once each request it admitted has its cost recorded. A spilled outcome's is
    /// held by its writer until the spill is replayed ([`Held::leave_to_store`] at exit).
    #[serde(skip)]
    pub keep: Option<KeepAlive>,
}

/// What a settlement keeps alive.
pub trait Held: Send + Sync {
    /// The process is ending before the outcome is written: leave the reservation to the
    /// store (which releases it by itself later) instead of giving it back now.
    fn leave_to_store(&self);
}

/// A value a [`Settlement`] keeps alive; carries no data of its own (equal to any other).
#[derive(Clone)]
pub struct KeepAlive(pub std::sync::Arc<dyn Held>);

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeepAlive")
    }
}

impl PartialEq for KeepAlive {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeepAlive {}

/// One correction of a token window (see [`super::CounterStore::window_adjust`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSettle {
    pub scope: String,
    pub window_ms: u64,
    pub delta: i64,
    pub taken_at_ms: u64,
}

/// Filters of `GET /v1/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub model: Option<String>,
    pub status: Option<u16>,
    pub cache: Option<String>,
    pub tag: Option<(String, String)>,
    pub limit: usize,
    /// Opaque position from a previous page: only records older than it.
    pub cursor: Option<String>,
}

impl AuditQuery {
    /// Whether `record` passes every filter but the cursor.
    pub fn matches(&self, r: &crate::audit::record::AuditRecord) -> bool {
        self.start_ms.is_none_or(|s| r.ts_ms >= s)
            && self.end_ms.is_none_or(|e| r.ts_ms <= e)
            && self.model.as_ref().is_none_or(|m| &r.model == m)
            && self.status.is_none_or(|s| r.status == s)
            && self.cache.as_ref().is_none_or(|c| &r.cache == c)
            && self
                .tag
                .as_ref()
                .is_none_or(|(k, v)| r.tags.get(k).is_some_and(|x| x == v))
    }
}

/// A page of audit records, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub records: Vec<crate::audit::record::AuditRecord>,
    /// Where the next page starts; `None` when there is nothing older.
    pub next_cursor: Option<String>,
}

/// The granularity of usage rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGrain {
    /// Per day and model.
    Model,
    /// Per day and key.
    Key,
}

/// One rollup cell: a tenant's usage on one day, of one model or through one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: String,
    pub model: String,
    pub key_id: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_nano: i64,
    pub cache_hits: u64,
    pub saved_nano: i64,
}

/// The last record written to a chain, as the store remembers it (to detect a deleted tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
}

/// An admission lease to take ([`crate::store::CounterStore::lease_take`]): every window and
/// the budget at once, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseTake {
    pub tenant: String,
    /// Unique per lease; with the budget, it names the lease in the store's register.
    pub id: String,
    /// The windows to take from, each `amount` against `limit` (the lease's own bound).
    pub takes: Vec<WindowTake>,
    /// Always enforced.
    pub budget: Option<BudgetReserve>,
    pub now_ms: u64,
    /// How long after the lease is taken the store releases its budget part itself, if it
    /// was never given back (by the store's clock).
    pub reap_after: std::time::Duration,
}

/// A granted lease: each window's count with it, and the budget's spent and reserved as they
/// were before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    pub counts: Vec<u64>,
    pub budget: Option<(i64, i64)>,
}

/// One part of a lease to give back ([`crate::store::CounterStore::lease_end`]), applied at
/// most once however often it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseEnd {
    pub tenant: String,
    pub id: String,
    pub part: LeasePart,
}

/// The two parts of a lease, given back at different times.
#[derive(Debug, Clone, PartialEq)]
pub enum LeasePart {
    /// When the lease ends: each window's scope and the amount the lease did not use, in
    /// the bucket of `at_ms` (when the lease was taken).
    Windows {
        unused: Vec<(String, u64)>,
        at_ms: u64,
    },
    /// When the lease has ended and its last request has settled: the whole budget
    /// reservation of `period`.
    Budget { period: String, amount: i64 },
}
