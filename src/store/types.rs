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
}

/// Requests and tokens per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<NonZeroU32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<NonZeroU32>,
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
