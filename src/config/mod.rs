//! Configuration: `config/sentinel.toml` plus `SENTINEL_<SECTION>__<KEY>` overrides, turned
//! into a typed [`Config`] once at start-up.
//!
//! `raw.rs` is the file's shape (serde, unknown keys rejected), `env.rs` the overlay,
//! `validate.rs` the step from raw strings to durations, URLs, enums and resolved secrets.

pub mod env;
pub mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use url::Url;

pub use env::{EnvSource, MapEnv, ProcessEnv};
pub use raw::{ProviderKind, Strategy};

/// Why a configuration was refused. Every message names the file and the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
}

/// A secret that never prints: `Debug`, `Display` and `Serialize` show `*****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("*****")
    }
}

/// The typed, validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub providers: Vec<Arc<ProviderConfig>>,
    pub models: Vec<ModelConfig>,
    pub tenants: Vec<TenantConfig>,
    pub audit: AuditConfig,
    /// The built-in price list with the `[pricing]` overrides applied.
    #[serde(skip)]
    pub pricing: Arc<crate::tokens::pricing::PricingTable>,
    /// `[cache.*]`.
    pub cache: CacheConfig,
    /// `[judge]`, when enabled.
    pub judge: Option<JudgeConfig>,
    /// `[shield]` as written (tenant overrides merge onto it).
    pub shield: raw::RawShield,
    /// The compiled guardrails (detectors and the global policy), built once.
    #[serde(skip)]
    pub guardrails: Arc<crate::shield::rules::Guardrails>,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    pub demo: DemoConfig,
}

/// `[telemetry]`: OpenTelemetry trace export, off unless an endpoint is set.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP base URL, without a trailing slash; `None`: no export.
    pub otlp_endpoint: Option<Url>,
    /// `service.name` on every exported span.
    pub service_name: String,
}

impl TelemetryConfig {
    /// Where spans are sent: `<otlp_endpoint>/v1/traces`, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        self.otlp_endpoint
            .as_ref()
            .map(|base| format!("{}/v1/traces", base.as_str().trim_end_matches('/')))
    }
}

/// `[cache.exact]` and `[cache.semantic]`. `enabled` is the default for tenants, which may
/// switch either cache on or off for themselves.
#[derive(Debug, Clone, Serialize)]
pub struct CacheConfig {
    pub exact_enabled: bool,
    #[serde(serialize_with = "humane")]
    pub exact_ttl: Duration,
    pub exact_max_entries: u64,
    pub semantic_enabled: bool,
    #[serde(serialize_with = "humane")]
    pub semantic_ttl: Duration,
    pub semantic_threshold: f32,
    /// `minilm` (in process) or `remote:<model>` (a configured embeddings model).
    pub semantic_embedder: String,
    pub semantic_model_dir: PathBuf,
    pub semantic_max_entries: usize,
}

/// `[judge]`.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeConfig {
    /// A configured model name: judge calls are routed like any other.
    pub model: String,
    pub sample_rate: f64,
    /// The rubric template's text (`{{system}}`, `{{question}}`, `{{answer}}`).
    #[serde(skip)]
    pub rubric: String,
    pub min_score: Option<f64>,
}

/// `[audit]`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditConfig {
    pub store_bodies: raw::StoreBodies,
    #[serde(serialize_with = "humane")]
    pub retention: Duration,
    /// Where records wait while the store is unreachable.
    pub spill_path: PathBuf,
    pub queue_capacity: usize,
}

/// A tenant declared in the config (bootstrap): created or updated at start-up.
#[derive(Debug, Clone, Serialize)]
pub struct TenantConfig {
    pub id: String,
    pub name: Option<String>,
    pub models: Vec<String>,
    pub limits: crate::store::Limits,
    pub budget: Option<crate::store::Budget>,
    pub shield: Option<raw::RawShield>,
    pub judge: Option<raw::RawTenantJudge>,
    pub cache: Option<raw::RawTenantCache>,
    pub keys: Vec<BootstrapKey>,
}

/// A key whose secret comes from an environment variable.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapKey {
    pub name: String,
    pub key_env: String,
    pub secret: Secret,
    /// The key's own limits, on top of the tenant's.
    pub limits: crate::store::Limits,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: NonZeroUsize,
    #[serde(serialize_with = "humane")]
    pub request_timeout: Duration,
    #[serde(serialize_with = "humane")]
    pub shutdown_grace: Duration,
    #[serde(serialize_with = "humane")]
    pub header_read_timeout: Duration,
    #[serde(serialize_with = "humane")]
    pub api_timeout: Duration,
    pub max_response_bytes: NonZeroUsize,
    pub cors_allowed_origins: Vec<String>,
    /// Serving lanes, each a thread with its own runtime and connections ([`crate::lanes`]).
    pub workers: usize,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum StoreConfig {
    /// One local file, for a single node.
    Embedded { path: PathBuf },
    /// Redis, shared by replicas: one URL (standalone) or the seed nodes of a Cluster.
    Redis {
        #[serde(serialize_with = "masked_urls")]
        urls: Vec<String>,
        cluster: bool,
        #[serde(serialize_with = "humane")]
        timeout: Duration,
    },
}

/// Redis URLs may carry a password: show them without it.
fn masked_urls<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(urls.len()))?;
    for u in urls {
        let shown = match Url::parse(u) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("*****"));
                url.to_string()
            }
            _ => u.clone(),
        };
        seq.serialize_element(&shown)?;
    }
    seq.end()
}

/// One upstream provider.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Includes the version path (`https://api.openai.com/v1`), without a trailing slash.
    pub base_url: Url,
    pub api_key: Option<Secret>,
    /// Until the upstream's response headers.
    #[serde(serialize_with = "humane")]
    pub timeout: Duration,
    /// Between two body chunks.
    #[serde(serialize_with = "humane")]
    pub stream_idle_timeout: Duration,
    pub max_retries: u32,
    pub api_version: Option<String>,
    pub circuit_breaker: BreakerConfig,
}

/// When a provider's circuit opens and how long it stays open.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    pub error_ratio: f64,
    pub min_requests: u32,
    #[serde(serialize_with = "humane")]
    pub window: Duration,
    #[serde(serialize_with = "humane")]
    pub cooldown: Duration,
}

/// A model clients can ask for, and where it is served.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub strategy: Strategy,
    pub routes: Vec<RouteConfig>,
    #[serde(serialize_with = "humane_opt")]
    pub slo_p95: Option<Duration>,
    pub context_window: Option<u32>,
}

/// One way to serve a model: a provider and its model id there.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Index into [`Config::providers`].
    #[serde(skip)]
    pub provider: usize,
    #[serde(rename = "provider")]
    pub provider_name: String,
    pub model: String,
    pub weight: u32,
}

/// `[demo]`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoConfig {
    pub mock_provider: Option<SocketAddr>,
}

impl Config {
    /// Reads `path`, applies the environment overrides and validates the result.
    pub fn load(path: &Path, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, env)
    }

    /// Parses configuration text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        env::apply_overrides(&mut table, env)?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let (key, reason) = describe_serde_error(&e);
                ConfigError::Invalid {
                    path: path.to_owned(),
                    key,
                    reason,
                }
            })?;
        validate::validate(&raw, env).map_err(|(key, reason)| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason,
        })
    }

    /// The provider a route points at.
    pub fn provider(&self, route: &RouteConfig) -> &Arc<ProviderConfig> {
        &self.providers[route.provider]
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_display_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

fn describe_serde_error(e: &serde_path_to_error::Error<toml::de::Error>) -> (String, String) {
    let path = e.path().to_string();
    let reason = e.inner().to_string().trim().to_owned();
    // serde reports an unknown key at its parent; name the key itself.
    if let Some(rest) = reason.strip_prefix("unknown field `") {
        if let Some((field, _)) = rest.split_once('`') {
            let key = if path == "." || path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            return (
                key,
                format!(
                    "unknown key (expected one of{})",
                    rest.split_once("expected")
                        .map_or("", |(_, x)| x)
                        .trim_start_matches(" one of")
                ),
            );
        }
    }
    (
        if path == "." {
            "(root)".to_owned()
        } else {
            path
        },
        reason,
    )
}

fn humane<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[expect(
    clippy::ref_option,
    reason = "serde's serialize_with passes a reference to the field"
)]
fn humane_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => humane(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
