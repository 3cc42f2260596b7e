//! Logs and metrics set-up, and every metric name in one place. Trace export is in
//! [`crate::otel`].
//!
//! Logs are structured `tracing` events on stderr, JSON when `SENTINEL_LOG_FORMAT=json`.
//! Metrics go to a Prometheus recorder rendered at `/metrics`. Label values are always
//! configured names or bounded enums, never free user input.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, EnvSource};

/// Metric names (SPEC section 4), prefixed `sentinel_`.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "sentinel_requests_total";
    pub const REQUEST_DURATION: &str = "sentinel_request_duration_seconds";
    pub const OVERHEAD: &str = "sentinel_overhead_seconds";
    pub const UPSTREAM_DURATION: &str = "sentinel_upstream_duration_seconds";
    pub const TIME_TO_FIRST_TOKEN: &str = "sentinel_time_to_first_token_seconds";
    pub const UPSTREAM_ERRORS: &str = "sentinel_upstream_errors_total";
    pub const INFLIGHT: &str = "sentinel_inflight_requests";
    pub const CIRCUIT_STATE: &str = "sentinel_circuit_state";
    pub const TOKENS_TOTAL: &str = "sentinel_tokens_total";
    pub const STORE_ERRORS: &str = "sentinel_store_errors_total";
    pub const COST_USD: &str = "sentinel_cost_usd_total";
    pub const UNPRICED_REQUESTS: &str = "sentinel_unpriced_requests_total";
    pub const RATE_LIMITED: &str = "sentinel_rate_limited_total";
    pub const BUDGET_REJECTIONS: &str = "sentinel_budget_rejections_total";
    pub const POLICY_VIOLATIONS: &str = "sentinel_policy_violations_total";
    pub const AUDIT_QUEUE_DEPTH: &str = "sentinel_audit_queue_depth";
    pub const AUDIT_WRITE_FAILURES: &str = "sentinel_audit_write_failures_total";
    pub const AUDIT_SPILLED: &str = "sentinel_audit_spilled_total";
    pub const SHIELD_FINDINGS: &str = "sentinel_shield_findings_total";
    pub const CACHE_LOOKUPS: &str = "sentinel_cache_lookups_total";
    pub const CACHE_SAVED: &str = "sentinel_cache_saved_usd_total";
    pub const JUDGE_SCORE: &str = "sentinel_judge_score";
    pub const JUDGE_FAILURES: &str = "sentinel_judge_failures_total";
    pub const JUDGE_DROPPED: &str = "sentinel_judge_dropped_total";
    pub const CACHE_FILLS_DROPPED: &str = "sentinel_cache_fills_dropped_total";
    pub const JUDGE_LOW_SCORES: &str = "sentinel_judge_low_scores_total";
    pub const TRACE_SPANS_DROPPED: &str = "sentinel_trace_spans_dropped_total";
    pub const TRACE_EXPORT_FAILURES: &str = "sentinel_trace_export_failures_total";
}

/// Upstream error kinds, the bounded values of `upstream_errors_total{kind}`.
pub const UPSTREAM_ERROR_KINDS: [&str; 7] = [
    "connect",
    "timeout",
    "status_429",
    "status_5xx",
    "body",
    "protocol",
    "circuit_open",
];

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `SENTINEL_LOG_FORMAT=json` selects JSON.
    pub fn from_env(env: &dyn EnvSource) -> Self {
        match env.get("SENTINEL_LOG_FORMAT").as_deref().map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Text,
        }
    }
}

/// Installs the global tracing subscriber (stderr). The filter comes from `SENTINEL_LOG` or
/// `RUST_LOG`, default `info`.
pub fn init_tracing(format: LogFormat, env: &dyn EnvSource) {
    let filter = env
        .get("SENTINEL_LOG")
        .or_else(|| env.get("RUST_LOG"))
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // A subscriber already set (tests, embedding) is fine: keep it.
    drop(result);
}

/// Latency buckets in seconds: fine below 10 ms (gateway overhead), coarse up to minutes.
/// Judge score buckets: the 0-10 scale.
const SCORE_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the global Prometheus recorder and registers every family at zero.
pub fn install_metrics(config: &Config) -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .set_buckets_for_metric(Matcher::Full(names::JUDGE_SCORE.into()), SCORE_BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    describe();
    register_at_zero(config);
    Ok(handle)
}

#[expect(
    clippy::too_many_lines,
    reason = "one description per metric family, in one list"
)]
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        names::REQUESTS_TOTAL,
        "Requests answered, by tenant, model, provider, status and cache result."
    );
    describe_histogram!(
        names::REQUEST_DURATION,
        Unit::Seconds,
        "Whole request latency, streams until their end."
    );
    describe_histogram!(
        names::OVERHEAD,
        Unit::Seconds,
        "Time spent in Sentinel itself, upstream time excluded."
    );
    describe_histogram!(
        names::UPSTREAM_DURATION,
        Unit::Seconds,
        "Upstream attempt latency until the response head."
    );
    describe_histogram!(
        names::TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time from request to the first streamed token."
    );
    describe_counter!(
        names::UPSTREAM_ERRORS,
        "Failed upstream attempts, by provider and kind."
    );
    describe_gauge!(
        names::INFLIGHT,
        "Proxied requests in progress, streams included."
    );
    describe_gauge!(
        names::CIRCUIT_STATE,
        "Circuit breaker per provider: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        names::TOKENS_TOTAL,
        "Tokens metered, by tenant, model and kind."
    );
    describe_counter!(
        names::STORE_ERRORS,
        "Failed store operations, by operation."
    );
    // USD needs fractions and the exporter's counters are integers: a gauge that only grows.
    describe_gauge!(
        names::COST_USD,
        "Money spent upstream, USD, by tenant and model (monotonic)."
    );
    describe_counter!(
        names::UNPRICED_REQUESTS,
        "Requests served by a model with no price (costed at 0)."
    );
    describe_counter!(
        names::RATE_LIMITED,
        "Requests refused by a rate limit, by tenant and limit (rpm, tpm)."
    );
    describe_counter!(
        names::BUDGET_REJECTIONS,
        "Requests refused because the tenant's budget is spent."
    );
    describe_counter!(
        names::POLICY_VIOLATIONS,
        "Policy violations recorded, by tenant, policy and mode (dry_run)."
    );
    describe_gauge!(
        names::AUDIT_QUEUE_DEPTH,
        "Audit records waiting for the writer."
    );
    describe_counter!(
        names::AUDIT_WRITE_FAILURES,
        "Audit batches the store refused (they were spilled)."
    );
    describe_counter!(
        names::CACHE_LOOKUPS,
        "Cache lookups, by kind (exact, semantic) and result (hit, miss)."
    );
    describe_gauge!(
        names::CACHE_SAVED,
        "Money cache hits saved, USD, by tenant (monotonic)."
    );
    describe_histogram!(
        names::JUDGE_SCORE,
        "Judge scores (0-10) of sampled answers, by judge model."
    );
    describe_counter!(
        names::JUDGE_FAILURES,
        "Sampled answers the judge could not score."
    );
    describe_counter!(
        names::JUDGE_DROPPED,
        "Sampled answers dropped because the judge queue was full."
    );
    describe_counter!(
        names::CACHE_FILLS_DROPPED,
        "Fresh answers not cached because the cache fill queue was full."
    );
    describe_counter!(
        names::JUDGE_LOW_SCORES,
        "Judged answers below the tenant's judge.min_score."
    );
    describe_counter!(
        names::SHIELD_FINDINGS,
        "Guardrail findings, by rule and action (counted once per rule per request)."
    );
    describe_counter!(
        names::AUDIT_SPILLED,
        "Audit records written to the local spill file."
    );
    describe_counter!(
        names::TRACE_SPANS_DROPPED,
        "Finished spans dropped because the trace export queue was full."
    );
    describe_counter!(
        names::TRACE_EXPORT_FAILURES,
        "OTLP trace export requests that failed (their spans are lost)."
    );
}

fn register_at_zero(config: &Config) {
    metrics::gauge!(names::INFLIGHT).set(0.0);
    metrics::gauge!(names::AUDIT_QUEUE_DEPTH).set(0.0);
    metrics::counter!(names::AUDIT_WRITE_FAILURES).increment(0);
    metrics::counter!(names::AUDIT_SPILLED).increment(0);
    metrics::counter!(names::JUDGE_FAILURES).increment(0);
    for kind in ["exact", "semantic"] {
        for result in ["hit", "miss"] {
            metrics::counter!(names::CACHE_LOOKUPS, "kind" => kind, "result" => result)
                .increment(0);
        }
    }
    metrics::counter!(names::JUDGE_DROPPED).increment(0);
    metrics::counter!(names::CACHE_FILLS_DROPPED).increment(0);
    metrics::counter!(names::JUDGE_LOW_SCORES).increment(0);
    metrics::counter!(names::TRACE_SPANS_DROPPED).increment(0);
    metrics::counter!(names::TRACE_EXPORT_FAILURES).increment(0);
    for op in [
        "key_lookup",
        "change_seq",
        "limits",
        "budget",
        "audit_write",
    ] {
        metrics::counter!(names::STORE_ERRORS, "op" => op).increment(0);
    }
    for model in &config.models {
        metrics::counter!(names::UNPRICED_REQUESTS, "model" => model.name.clone()).increment(0);
    }
    for tenant in &config.tenants {
        let t = tenant.id.clone();
        metrics::counter!(names::BUDGET_REJECTIONS, "tenant" => t.clone()).increment(0);
        metrics::gauge!(names::CACHE_SAVED, "tenant" => t.clone()).increment(0.0);
        for limit in ["rpm", "tpm"] {
            metrics::counter!(names::RATE_LIMITED, "tenant" => t.clone(), "limit" => limit)
                .increment(0);
        }
        for model in &config.models {
            metrics::gauge!(names::COST_USD, "tenant" => t.clone(), "model" => model.name.clone())
                .increment(0.0);
        }
    }
    for provider in &config.providers {
        metrics::gauge!(names::CIRCUIT_STATE, "provider" => provider.name.clone()).set(0.0);
        for kind in UPSTREAM_ERROR_KINDS {
            metrics::counter!(names::UPSTREAM_ERRORS, "provider" => provider.name.clone(), "kind" => kind).increment(0);
        }
    }
}
