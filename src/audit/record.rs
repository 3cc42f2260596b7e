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
        serde_json::to_string(&Canonical::of(self)).unwrap_or_default()
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

/// A record as its hash covers it: every field but `hash` and `judge`, keys in byte order at
/// every level, so the text is the one a JSON object with sorted keys prints. Written out
/// rather than built as a `serde_json::Value`, which cost a map and a string per field on
/// every request. A field added to [`AuditRecord`] must be added here too; the
/// `canonical_text_is_the_sorted_json_object` test fails until it is, as long as its record
/// generator fills the new field (a field left out when empty is invisible while empty).
#[derive(Serialize)]
struct Canonical<'a> {
    cache: &'a str,
    cached_tokens: u64,
    chain: &'a str,
    completion_tokens: u64,
    cost_saved_usd: f64,
    cost_unknown: bool,
    cost_usd: f64,
    endpoint: &'a str,
    error: Option<&'a str>,
    key_id: &'a str,
    latency_ms: f64,
    model: &'a str,
    overhead_ms: f64,
    prev_hash: &'a str,
    prompt_tokens: u64,
    provider: &'a str,
    reasoning_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<&'a str>,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<&'a str>,
    seq: u64,
    shield: Vec<CanonicalFinding<'a>>,
    status: u16,
    stream: bool,
    tags: &'a BTreeMap<String, String>,
    tenant: &'a str,
    timestamp: &'a str,
    tokens_estimated: bool,
    ts_ms: u64,
    ttft_ms: Option<f64>,
    violations: Vec<CanonicalViolation<'a>>,
}

#[derive(Serialize)]
struct CanonicalFinding<'a> {
    action: ShieldAction,
    rule: &'a str,
}

#[derive(Serialize)]
struct CanonicalViolation<'a> {
    mode: &'a str,
    policy: &'a str,
}

impl<'a> Canonical<'a> {
    fn of(r: &'a AuditRecord) -> Self {
        Self {
            cache: &r.cache,
            cached_tokens: r.cached_tokens,
            chain: &r.chain,
            completion_tokens: r.completion_tokens,
            cost_saved_usd: r.cost_saved_usd,
            cost_unknown: r.cost_unknown,
            cost_usd: r.cost_usd,
            endpoint: &r.endpoint,
            error: r.error.as_deref(),
            key_id: &r.key_id,
            latency_ms: r.latency_ms,
            model: &r.model,
            overhead_ms: r.overhead_ms,
            prev_hash: &r.prev_hash,
            prompt_tokens: r.prompt_tokens,
            provider: &r.provider,
            reasoning_tokens: r.reasoning_tokens,
            request_body: r.request_body.as_deref(),
            request_id: &r.request_id,
            response_body: r.response_body.as_deref(),
            seq: r.seq,
            shield: r
                .shield
                .iter()
                .map(|f| CanonicalFinding {
                    action: f.action,
                    rule: &f.rule,
                })
                .collect(),
            status: r.status,
            stream: r.stream,
            tags: &r.tags,
            tenant: &r.tenant,
            timestamp: &r.timestamp,
            tokens_estimated: r.tokens_estimated,
            ts_ms: r.ts_ms,
            ttft_ms: r.ttft_ms,
            violations: r
                .violations
                .iter()
                .map(|v| CanonicalViolation {
                    mode: &v.mode,
                    policy: &v.policy,
                })
                .collect(),
        }
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
    use proptest::prelude::*;

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

    /// What the canonical text was first defined as: the record as a JSON value, sorted by
    /// `serde_json`'s map, without `hash` and `judge`. Stored chains were sealed with it.
    fn canonical_by_value(r: &AuditRecord) -> String {
        let mut value = serde_json::to_value(r).unwrap();
        let map = value.as_object_mut().unwrap();
        map.remove("hash");
        map.remove("judge");
        value.to_string()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z_]{1,12}",
            any::<String>(),
            Just("quote \" back \\ nl \n tab \t nul \u{0} é 日本 🦀".to_owned()),
        ]
    }

    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(5.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e-9),
            Just(123_456_789.125),
            any::<f64>(),
        ]
    }

    prop_compose! {
        fn record()(
            strings in proptest::collection::vec(text(), 12),
            numbers in proptest::collection::vec(number(), 5),
            counts in proptest::collection::vec(any::<u64>(), 6),
            flags in proptest::collection::vec(any::<bool>(), 3),
            status in any::<u16>(),
            error in proptest::option::of(text()),
            request_body in proptest::option::of(text()),
            response_body in proptest::option::of(text()),
            shield in proptest::collection::vec(
                (text(), prop_oneof![Just(ShieldAction::Redact), Just(ShieldAction::Block), Just(ShieldAction::Log)]),
                0..3,
            ),
            violations in proptest::collection::vec((text(), text()), 0..3),
            tags in proptest::collection::btree_map(text(), text(), 0..4),
            judged in any::<bool>(),
        ) -> AuditRecord {
            let mut r = sample(&strings[0], &strings[1], 1_764_000_000_000);
            r.ts_ms = counts[0];
            r.timestamp.clone_from(&strings[2]);
            r.key_id.clone_from(&strings[3]);
            r.endpoint.clone_from(&strings[4]);
            r.model.clone_from(&strings[5]);
            r.provider.clone_from(&strings[6]);
            r.cache.clone_from(&strings[7]);
            r.chain.clone_from(&strings[8]);
            r.prev_hash.clone_from(&strings[9]);
            r.hash.clone_from(&strings[10]);
            r.status = status;
            r.stream = flags[0];
            r.tokens_estimated = flags[1];
            r.cost_unknown = flags[2];
            r.latency_ms = numbers[0];
            r.ttft_ms = (!numbers[1].is_nan()).then_some(numbers[1]);
            r.cost_usd = numbers[2];
            r.cost_saved_usd = numbers[3];
            r.overhead_ms = numbers[4];
            r.prompt_tokens = counts[1];
            r.cached_tokens = counts[2];
            r.completion_tokens = counts[3];
            r.reasoning_tokens = counts[4];
            r.seq = counts[5];
            r.error = error;
            r.request_body = request_body;
            r.response_body = response_body;
            r.shield = shield.into_iter().map(|(rule, action)| ShieldFinding { rule, action }).collect();
            r.violations = violations.into_iter().map(|(policy, mode)| Violation { policy, mode }).collect();
            r.tags = tags;
            r.judge = judged.then(|| JudgeResult {
                score: 7.0,
                verdict: strings[11].clone(),
                model: "j".into(),
                low: true,
            });
            r
        }
    }

    proptest! {
        #[test]
        fn canonical_text_is_the_sorted_json_object(r in record()) {
            prop_assert_eq!(r.canonical(), canonical_by_value(&r));
        }
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
