//! The audit record (SPEC section 2) and its seal: a SHA-256 hash chain per tenant and writer.
//!
//! A record is sealed by the one audit writer of a replica, in the order it writes: `seq`
//! counts up from 1 within a chain, `prev_hash` is the previous record's `hash` (64 zeros for
//! the first), and `hash = SHA-256(prev_hash || "\n" || canonical JSON of the record)`, where
//! the canonical JSON is the record with sorted keys, no whitespace, and without `hash` and
//! `judge`. `judge` is left out on purpose: the judge scores an answer after its record is
//! sealed, so its result is kept beside the record and merged when it is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::raw::ShieldAction;

/// `prev_hash` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One request, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub request_id: String,
    /// RFC 3339, UTC, millisecond precision.
    pub timestamp: String,
    /// Unix milliseconds of `timestamp`, for range queries.
    pub ts_ms: u64,
    pub tenant: String,
    pub key_id: String,
    pub endpoint: String,
    pub model: String,
    pub provider: String,
    pub status: u16,
    pub stream: bool,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub tokens_estimated: bool,
    pub cost_usd: f64,
    pub cost_unknown: bool,
    pub cost_saved_usd: f64,
    /// `miss`, `exact`, `semantic` or `bypass`.
    pub cache: String,
    pub overhead_ms: f64,
    /// Set after sealing (see the module docs); `null` until the judge has scored.
    #[serde(default)]
    pub judge: Option<JudgeResult>,
    #[serde(default)]
    pub shield: Vec<ShieldFinding>,
    #[serde(default)]
    pub violations: Vec<Violation>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub error: Option<String>,
    /// Request and response bodies, only when `audit.store_bodies` asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// The chain this record belongs to (one per tenant and writer).
    #[serde(default)]
    pub chain: String,
    /// Position in the chain, from 1.
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
}

/// The judge's verdict on an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeResult {
    pub score: f64,
    pub verdict: String,
    pub model: String,
    /// Below the tenant's `judge.min_score`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low: bool,
}

/// A guardrail finding: the rule and what was done, never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShieldFinding {
    pub rule: String,
    pub action: ShieldAction,
}

/// A policy that would have refused the request but runs in `dry_run` mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `budget`, `rpm`, `tpm` or `model`.
    pub policy: String,
    /// Always `dry_run` today: enforced policies refuse instead of recording.
    pub mode: String,
}

impl AuditRecord {
    /// The canonical text the hash covers (see the module docs).
    pub fn canonical(&self) -> String {
        // Serialising plain data cannot fail; an empty text would fail verification.
        let Ok(mut value) = serde_json::to_value(self) else {
            return String::new();
        };
        if let Some(map) = value.as_object_mut() {
            map.remove("hash");
            map.remove("judge");
        }
        value.to_string()
    }

    /// The hash this record must carry given its `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(self.canonical().as_bytes());
        crate::store::hex(&h.finalize())
    }

    /// Whether the answer came from the cache.
    pub fn is_cache_hit(&self) -> bool {
        matches!(self.cache.as_str(), "exact" | "semantic")
    }

    /// Seals the record as number `seq` of `chain`, after `prev_hash`.
    pub fn seal(&mut self, chain: &str, seq: u64, prev_hash: &str) {
        chain.clone_into(&mut self.chain);
        self.seq = seq;
        prev_hash.clone_into(&mut self.prev_hash);
        self.judge = None;
        self.hash = self.expected_hash();
    }
}

/// RFC 3339 with milliseconds, UTC, of Unix milliseconds.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DD` (UTC) of Unix milliseconds: the rollup day.
pub fn day_of(unix_ms: u64) -> String {
    rfc3339_ms(unix_ms)[..10].to_owned()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian; H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> String {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_day(day: &str) -> Option<i64> {
    let mut it = day.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if day.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Refuse dates that do not exist (2026-02-30): they would not round-trip.
    (civil_from_days(days) == day).then_some(days)
}

/// Every day from `start` to `end` inclusive (`YYYY-MM-DD`), at most 3,660 of them.
pub fn days_between(start: &str, end: &str) -> Vec<String> {
    match (parse_day(start), parse_day(end)) {
        (Some(a), Some(b)) if a <= b => (a..=b.min(a + 3_659)).map(civil_from_days).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) fn sample(tenant: &str, request_id: &str, ts_ms: u64) -> AuditRecord {
    AuditRecord {
        request_id: request_id.into(),
        timestamp: rfc3339_ms(ts_ms),
        ts_ms,
        tenant: tenant.into(),
        key_id: "key_1".into(),
        endpoint: "/v1/chat/completions".into(),
        model: "demo".into(),
        provider: "mock".into(),
        status: 200,
        stream: false,
        latency_ms: 1.5,
        ttft_ms: None,
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: 5,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: 0.000_001_5,
        cost_unknown: false,
        cost_saved_usd: 0.0,
        cache: "miss".into(),
        overhead_ms: 0.2,
        judge: None,
        shield: Vec::new(),
        violations: Vec::new(),
        tags: BTreeMap::new(),
        error: None,
        request_body: None,
        response_body: None,
        chain: String::new(),
        seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_is_deterministic_and_covers_every_field_but_judge() {
        let mut a = sample("t", "r1", 1_764_000_000_000);
        a.seal("w1", 1, GENESIS);
        let mut b = sample("t", "r1", 1_764_000_000_000);
        b.seal("w1", 1, GENESIS);
        assert_eq!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);

        let mut edited = a.clone();
        edited.cost_usd = 0.5;
        assert_ne!(edited.expected_hash(), a.hash);
        let mut judged = a.clone();
        judged.judge = Some(JudgeResult {
            score: 7.0,
            verdict: "fine".into(),
            model: "j".into(),
            low: false,
        });
        assert_eq!(judged.expected_hash(), a.hash);

        // Survives a round trip through its stored JSON.
        let text = serde_json::to_string(&a).unwrap();
        let back: AuditRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.expected_hash(), a.hash);
    }

    #[test]
    fn calendar_days_round_trip() {
        for z in [-1000, 0, 59, 365, 11_016, 20_000, 20_420, 60_000] {
            assert_eq!(parse_day(&civil_from_days(z)), Some(z));
        }
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(
            days_between("2026-02-27", "2026-03-01"),
            ["2026-02-27", "2026-02-28", "2026-03-01"]
        );
        assert!(days_between("2026-03-01", "2026-02-27").is_empty());
    }

    #[test]
    fn days_and_timestamps_are_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(day_of(1_764_201_600_000), "2025-11-27");
    }
}
