//! The configuration file as written: serde structs, unknown keys rejected.
//!
//! Durations and URLs stay strings here; `validate.rs` turns this into the typed [`Config`].
//!
//! [`Config`]: super::Config

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub store: RawStore,
    pub providers: Vec<RawProvider>,
    pub models: Vec<RawModel>,
    pub cache: RawCache,
    pub judge: RawJudge,
    pub shield: RawShield,
    pub audit: RawAudit,
    pub telemetry: RawTelemetry,
    pub pricing: BTreeMap<String, RawPrice>,
    pub tenants: Vec<RawTenant>,
    pub demo: RawDemo,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub max_body_bytes: u64,
    pub request_timeout: String,
    pub shutdown_grace: String,
    /// Time allowed for a client to send its request head (slow-loris guard).
    pub header_read_timeout: String,
    /// Timeout of routes that do not proxy (admin, usage, audit, health).
    pub api_timeout: String,
    /// Largest non-streaming upstream answer the gateway buffers.
    pub max_response_bytes: u64,
    /// CORS is off unless origins are listed here (`["*"]` allows any).
    pub cors_allowed_origins: Vec<String>,
    /// Serving lanes (threads); unset or 0: one per available core.
    pub workers: Option<u64>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout: "600s".into(),
            shutdown_grace: "30s".into(),
            header_read_timeout: "10s".into(),
            api_timeout: "30s".into(),
            max_response_bytes: 64 * 1024 * 1024,
            cors_allowed_origins: Vec::new(),
            workers: None,
        }
    }
}

/// Which store backs shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Embedded,
    Redis,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub backend: StoreBackend,
    pub path: String,
    pub redis_url: Option<String>,
    pub cluster_urls: Vec<String>,
    pub timeout: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            path: "data/sentinel.db".into(),
            redis_url: None,
            cluster_urls: Vec::new(),
            timeout: "250ms".into(),
        }
    }
}

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Azure,
    Anthropic,
    OpenaiCompatible,
}

/// `[[providers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout: String,
    #[serde(default = "default_provider_timeout")]
    pub stream_idle_timeout: String,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Azure only: the `api-version` query parameter.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub circuit_breaker: RawBreaker,
}

fn default_provider_timeout() -> String {
    "60s".into()
}

const fn default_max_retries() -> u32 {
    2
}

/// `circuit_breaker` of a provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this share of the requests in `window` failed...
    pub error_ratio: f64,
    /// ...and at least this many requests were seen in it.
    pub min_requests: u32,
    pub window: String,
    /// How long it stays open before one probe is let through.
    pub cooldown: String,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            error_ratio: 0.5,
            min_requests: 20,
            window: "30s".into(),
            cooldown: "15s".into(),
        }
    }
}

/// How a model picks among its routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Ordered,
    Weighted,
    Latency,
}

/// `[[models]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub slo_p95: Option<String>,
    /// Context window, used as the reservation bound when a request sets no `max_tokens`.
    #[serde(default)]
    pub context_window: Option<u32>,
}

/// One route of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub exact: RawExactCache,
    pub semantic: RawSemanticCache,
}

/// `[cache.exact]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExactCache {
    pub enabled: bool,
    pub ttl: String,
    pub max_entries: u64,
}

impl Default for RawExactCache {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: "1h".into(),
            max_entries: 100_000,
        }
    }
}

/// `[cache.semantic]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSemanticCache {
    pub enabled: bool,
    pub threshold: f64,
    pub ttl: String,
    pub embedder: String,
    pub model_dir: String,
    /// Most entries kept per partition (a tenant's context).
    pub max_entries: usize,
}

impl Default for RawSemanticCache {
    fn default() -> Self {
        Self {
            enabled: false,
            // Chosen on tests/data/semantic_eval.json (see BENCHMARKS.md).
            threshold: 0.80,
            ttl: "1h".into(),
            embedder: "minilm".into(),
            model_dir: "models/all-minilm-l6-v2".into(),
            max_entries: 10_000,
        }
    }
}

/// Where the shipped rubric lives; when that file is absent the copy built into the binary is
/// used.
pub const DEFAULT_RUBRIC_PATH: &str = "config/judge_rubric.md";

/// `[judge]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJudge {
    pub enabled: bool,
    pub model: Option<String>,
    pub sample_rate: f64,
    pub rubric: String,
    pub min_score: Option<f64>,
}

impl Default for RawJudge {
    fn default() -> Self {
        Self {
            enabled: false,
            model: None,
            sample_rate: 0.05,
            rubric: DEFAULT_RUBRIC_PATH.into(),
            min_score: None,
        }
    }
}

/// What a guardrail does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShieldAction {
    Redact,
    Block,
    Log,
}

/// One guardrail rule's setting.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub action: ShieldAction,
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// `[shield]` (also the per-tenant override, stored on the tenant record).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShield {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pii: Option<RawRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injection: Option<RawRule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_terms: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub responses: bool,
}

/// Which bodies the audit log keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBodies {
    #[default]
    None,
    Redacted,
    Full,
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub store_bodies: StoreBodies,
    pub retention: String,
    pub spill_path: String,
    pub queue_capacity: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            store_bodies: StoreBodies::None,
            retention: "30d".into(),
            spill_path: "data/audit-spill.log".into(),
            // About 1.5 KB a record: a full backlog stays near 25 MB.
            queue_capacity: 16_384,
        }
    }
}

/// `[telemetry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// The collector's OTLP/HTTP base URL (spans go to `<endpoint>/v1/traces`); empty: no
    /// trace export.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "sentinel".into(),
        }
    }
}

/// A `[pricing."model"]` entry, USD per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    #[serde(default)]
    pub reasoning: Option<f64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// `[[tenants]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub budget: Option<RawBudget>,
    #[serde(default)]
    pub keys: Vec<RawBootstrapKey>,
    #[serde(default)]
    pub cache: Option<RawTenantCache>,
    #[serde(default)]
    pub judge: Option<RawTenantJudge>,
    #[serde(default)]
    pub shield: Option<RawShield>,
}

/// Rate limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default)]
    pub rpm: Option<u32>,
    #[serde(default)]
    pub tpm: Option<u32>,
    /// `dry_run` records violations instead of refusing.
    #[serde(default)]
    pub mode: PolicyMode,
}

/// Budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetPeriod {
    Day,
    Month,
}

/// Whether a policy blocks or only records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    DryRun,
}

/// A spending limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    #[serde(default)]
    pub mode: PolicyMode,
}

/// A key declared in the config whose secret is in an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootstrapKey {
    pub name: String,
    pub key_env: String,
    /// The key's own `rpm`/`tpm` (`mode` as for a tenant).
    #[serde(default)]
    pub limits: Option<RawLimits>,
}

/// Per-tenant cache switches (also stored on the tenant record).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantCache {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<bool>,
    /// Overrides both TTLs, e.g. `"10m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Per-tenant judge settings (also stored on the tenant record).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantJudge {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
}

/// `[demo]`: conveniences for trying Sentinel without provider keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDemo {
    /// When set (e.g. `"127.0.0.1:9100"`), `serve` also runs the bundled mock provider there.
    pub mock_provider: String,
}
