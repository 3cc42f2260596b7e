//! Raw → typed: parse durations, URLs and addresses, resolve secrets and check references.
//! A setting is either honoured or refused, never accepted and ignored.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::store::{Budget, Limits};

use super::raw::{self, ProviderKind, RawConfig, StoreBackend, Strategy};
use super::{
    AuditConfig, BootstrapKey, BreakerConfig, CacheConfig, Config, DemoConfig, EnvSource,
    JudgeConfig, ModelConfig, ProviderConfig, RouteConfig, Secret, ServerConfig, StoreConfig,
    TelemetryConfig, TenantConfig,
};

/// `(key path, reason)` of the first problem found.
type Problem = (String, String);

fn problem(key: impl Into<String>, reason: impl Into<String>) -> Problem {
    (key.into(), reason.into())
}

fn duration(key: &str, text: &str) -> Result<Duration, Problem> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        problem(
            key,
            format!("`{text}` is not a duration like \"30s\" or \"1h\" ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(problem(key, "must be longer than zero"));
    }
    Ok(d)
}

fn non_zero(key: &str, n: u64) -> Result<NonZeroUsize, Problem> {
    usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| problem(key, "must be a positive number"))
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, Problem> {
    text.parse().map_err(|_| {
        problem(
            key,
            format!("`{text}` is not an address like \"127.0.0.1:8000\""),
        )
    })
}

pub(super) fn validate(raw: &RawConfig, env: &dyn EnvSource) -> Result<Config, Problem> {
    let server = server(&raw.server)?;
    let store = match raw.store.backend {
        StoreBackend::Embedded => StoreConfig::Embedded {
            path: raw.store.path.clone().into(),
        },
        StoreBackend::Redis => redis_store(&raw.store)?,
    };
    let providers = providers(&raw.providers, env)?;
    let models = models(&raw.models, &providers)?;
    let guardrails = crate::shield::rules::Guardrails::new(&raw.shield)
        .map_err(|e| problem("shield", e.to_string()))?;
    let tenants = tenants(&raw.tenants, &models, &guardrails, env)?;
    let audit = audit(&raw.audit)?;
    let judge = judge(&raw.judge, &models)?;
    let cache = cache(&raw.cache, &models)?;
    let pricing = std::sync::Arc::new(pricing(&raw.pricing)?);
    let telemetry = telemetry(&raw.telemetry)?;
    let demo = DemoConfig {
        mock_provider: match raw.demo.mock_provider.trim() {
            "" => None,
            addr => Some(socket_addr("demo.mock_provider", addr)?),
        },
    };
    Ok(Config {
        server,
        store,
        providers,
        models,
        tenants,
        audit,
        pricing,
        cache,
        judge,
        shield: raw.shield.clone(),
        guardrails: std::sync::Arc::new(guardrails),
        telemetry,
        demo,
    })
}

fn redis_store(raw: &raw::RawStore) -> Result<StoreConfig, Problem> {
    let timeout = duration("store.timeout", &raw.timeout)?;
    let check = |key: &str, u: &str| -> Result<String, Problem> {
        let url = Url::parse(u).map_err(|e| problem(key, format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(problem(key, "must be a redis:// or rediss:// URL"));
        }
        Ok(u.to_owned())
    };
    match (&raw.redis_url, raw.cluster_urls.is_empty()) {
        (Some(url), true) => Ok(StoreConfig::Redis {
            urls: vec![check("store.redis_url", url)?],
            cluster: false,
            timeout,
        }),
        (None, false) => Ok(StoreConfig::Redis {
            urls: raw
                .cluster_urls
                .iter()
                .map(|u| check("store.cluster_urls", u))
                .collect::<Result<_, _>>()?,
            cluster: true,
            timeout,
        }),
        (Some(_), false) => Err(problem(
            "store.cluster_urls",
            "set either redis_url (standalone) or cluster_urls, not both",
        )),
        (None, true) => Err(problem(
            "store.redis_url",
            "backend = \"redis\" needs redis_url or cluster_urls",
        )),
    }
}

/// `[telemetry]`: the OTLP/HTTP base URL (spans go to `<endpoint>/v1/traces`) and the service
/// name. An empty endpoint turns export off.
fn telemetry(raw: &raw::RawTelemetry) -> Result<TelemetryConfig, Problem> {
    const KEY: &str = "telemetry.otlp_endpoint";
    const HINT: &str =
        "expected the collector's OTLP/HTTP base URL, e.g. \"http://otel-collector:4318\"";
    let service_name = raw.service_name.trim();
    if service_name.is_empty() {
        return Err(problem("telemetry.service_name", "must not be empty"));
    }
    let otlp_endpoint = match raw.otlp_endpoint.trim() {
        "" => None,
        text => {
            let url =
                base_url(KEY, text).map_err(|(key, reason)| (key, format!("{reason}; {HINT}")))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(problem(
                    KEY,
                    "must not carry credentials; pass collector headers in OTEL_EXPORTER_OTLP_HEADERS",
                ));
            }
            if url.path().ends_with("/v1/traces") {
                return Err(problem(
                    KEY,
                    format!("`{text}` names the traces path; give the base URL (Sentinel appends /v1/traces)"),
                ));
            }
            Some(url)
        }
    };
    Ok(TelemetryConfig {
        otlp_endpoint,
        service_name: service_name.to_owned(),
    })
}

fn tenants(
    raw: &[raw::RawTenant],
    models: &[ModelConfig],
    guardrails: &crate::shield::rules::Guardrails,
    env: &dyn EnvSource,
) -> Result<Vec<TenantConfig>, Problem> {
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            let key = |field: &str| format!("tenants[{i}].{field}");
            if !crate::tenancy::valid_tenant_id(&t.id) || !seen.insert(t.id.as_str()) {
                return Err(problem(key("id"), format!("`{}` is used twice or is not 1-64 characters of A-Z a-z 0-9 _ - (not starting with _)", t.id)));
            }
            if let Some(ttl) = t.cache.as_ref().and_then(|c| c.ttl.as_deref()) {
                duration(&key("cache.ttl"), ttl)?;
            }
            if let Some(unknown) = t.models.iter().find(|m| !models.iter().any(|c| &c.name == *m)) {
                return Err(problem(key("models"), format!("no model named `{unknown}`")));
            }
            let keys = t
                .keys
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    let env_key = format!("tenants[{i}].keys[{j}].key_env");
                    let secret = env
                        .get(&k.key_env)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| problem(&env_key, format!("environment variable {} is not set", k.key_env)))?;
                    crate::tenancy::key::PresentedKey::parse(&secret).map_err(|e| {
                        problem(&env_key, format!("the key in {} is not a Sentinel key ({e}); mint one with `sentinel keys create`", k.key_env))
                    })?;
                    let limits = limits_of(&format!("tenants[{i}].keys[{j}].limits"), k.limits.as_ref())?;
                    Ok::<_, Problem>(BootstrapKey { name: k.name.clone(), key_env: k.key_env.clone(), secret: Secret::new(secret), limits })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let limits = limits_of(&key("limits"), t.limits.as_ref())?;
            let budget = match &t.budget {
                None => None,
                Some(b) => {
                    if !(b.limit_usd.is_finite() && b.limit_usd >= 0.0) {
                        return Err(problem(key("budget.limit_usd"), "must be a non-negative number of USD"));
                    }
                    Some(Budget { limit_usd: b.limit_usd, period: b.period, mode: b.mode })
                }
            };
            if let Some(j) = &t.judge {
                check_rate(&key("judge.sample_rate"), j.sample_rate)?;
                check_score(&key("judge.min_score"), j.min_score)?;
            }
            if let Some(over) = &t.shield {
                guardrails.check(over).map_err(|e| problem(key("shield"), e.to_string()))?;
            }
            Ok(TenantConfig { id: t.id.clone(), name: t.name.clone(), models: t.models.clone(), limits, budget, shield: t.shield.clone(), judge: t.judge.clone(), cache: t.cache.clone(), keys })
        })
        .collect()
}

fn cache(raw: &raw::RawCache, models: &[ModelConfig]) -> Result<CacheConfig, Problem> {
    let s = &raw.semantic;
    if !(s.threshold > 0.0 && s.threshold <= 1.0) {
        return Err(problem("cache.semantic.threshold", "must be in (0, 1]"));
    }
    if let Some(model) = s.embedder.strip_prefix("remote:") {
        if !models.iter().any(|m| m.name == model) {
            return Err(problem(
                "cache.semantic.embedder",
                format!("no model named `{model}`"),
            ));
        }
    } else if s.embedder != "minilm" {
        return Err(problem(
            "cache.semantic.embedder",
            "must be \"minilm\" or \"remote:<model>\"",
        ));
    }
    if raw.exact.max_entries == 0 || s.max_entries == 0 {
        return Err(problem("cache.exact.max_entries", "must be at least 1"));
    }
    #[expect(clippy::cast_possible_truncation, reason = "a similarity in (0, 1]")]
    let threshold = s.threshold as f32;
    Ok(CacheConfig {
        exact_enabled: raw.exact.enabled,
        exact_ttl: duration("cache.exact.ttl", &raw.exact.ttl)?,
        exact_max_entries: raw.exact.max_entries,
        semantic_enabled: s.enabled,
        semantic_ttl: duration("cache.semantic.ttl", &s.ttl)?,
        semantic_threshold: threshold,
        semantic_embedder: s.embedder.clone(),
        semantic_model_dir: s.model_dir.clone().into(),
        semantic_max_entries: s.max_entries,
    })
}

fn check_rate(key: &str, rate: Option<f64>) -> Result<(), Problem> {
    match rate {
        Some(r) if !(0.0..=1.0).contains(&r) => Err(problem(key, "must be between 0 and 1")),
        _ => Ok(()),
    }
}

fn check_score(key: &str, score: Option<f64>) -> Result<(), Problem> {
    match score {
        Some(s) if !(0.0..=10.0).contains(&s) => Err(problem(key, "must be between 0 and 10")),
        _ => Ok(()),
    }
}

/// The built-in rubric, used when `judge.rubric` is the default path and that file is absent
/// (e.g. a binary run outside the repository).
const BUILTIN_RUBRIC: &str = include_str!("../../config/judge_rubric.md");

fn judge(raw: &raw::RawJudge, models: &[ModelConfig]) -> Result<Option<JudgeConfig>, Problem> {
    if !raw.enabled {
        return Ok(None);
    }
    let model = raw
        .model
        .clone()
        .ok_or_else(|| problem("judge.model", "required when the judge is enabled"))?;
    if !models.iter().any(|m| m.name == model) {
        return Err(problem("judge.model", format!("no model named `{model}`")));
    }
    check_rate("judge.sample_rate", Some(raw.sample_rate))?;
    check_score("judge.min_score", raw.min_score)?;
    let rubric = match std::fs::read_to_string(&raw.rubric) {
        Ok(text) => text,
        Err(_) if raw.rubric == raw::DEFAULT_RUBRIC_PATH => BUILTIN_RUBRIC.to_owned(),
        Err(e) => {
            return Err(problem(
                "judge.rubric",
                format!("cannot read `{}`: {e}", raw.rubric),
            ))
        }
    };
    if !rubric.contains("{{answer}}") {
        return Err(problem(
            "judge.rubric",
            "the template has no {{answer}} placeholder",
        ));
    }
    Ok(Some(JudgeConfig {
        model,
        sample_rate: raw.sample_rate,
        rubric,
        min_score: raw.min_score,
    }))
}

fn positive(key: &str, n: Option<u32>) -> Result<Option<std::num::NonZeroU32>, Problem> {
    match n {
        None => Ok(None),
        Some(n) => std::num::NonZeroU32::new(n)
            .map(Some)
            .ok_or_else(|| problem(key, "must be at least 1 (leave it out for no limit)")),
    }
}

fn audit(raw: &raw::RawAudit) -> Result<AuditConfig, Problem> {
    if raw.queue_capacity == 0 {
        return Err(problem("audit.queue_capacity", "must be at least 1"));
    }
    Ok(AuditConfig {
        store_bodies: raw.store_bodies,
        retention: duration("audit.retention", &raw.retention)?,
        spill_path: raw.spill_path.clone().into(),
        queue_capacity: raw.queue_capacity,
    })
}

fn pricing(
    raw: &std::collections::BTreeMap<String, raw::RawPrice>,
) -> Result<crate::tokens::pricing::PricingTable, Problem> {
    let table = crate::tokens::pricing::PricingTable::builtin().map_err(|e| {
        problem(
            "pricing",
            format!("the built-in price list is invalid: {e}"),
        )
    })?;
    let overrides: Vec<(String, crate::tokens::pricing::PriceEntry)> = raw
        .iter()
        .map(|(model, p)| {
            (
                model.clone(),
                crate::tokens::pricing::PriceEntry {
                    input: p.input,
                    output: p.output,
                    cached_input: p.cached_input,
                    cache_write: p.cache_write,
                    reasoning: p.reasoning,
                    source: p.source.clone(),
                },
            )
        })
        .collect();
    table
        .with_overrides(overrides.iter().map(|(m, p)| (m.as_str(), p)))
        .map_err(|e| problem("pricing", e.to_string()))
}

fn server(raw: &raw::RawServer) -> Result<ServerConfig, Problem> {
    Ok(ServerConfig {
        listen: socket_addr("server.listen", &raw.listen)?,
        max_body_bytes: non_zero("server.max_body_bytes", raw.max_body_bytes)?,
        request_timeout: duration("server.request_timeout", &raw.request_timeout)?,
        shutdown_grace: duration("server.shutdown_grace", &raw.shutdown_grace)?,
        header_read_timeout: duration("server.header_read_timeout", &raw.header_read_timeout)?,
        api_timeout: duration("server.api_timeout", &raw.api_timeout)?,
        max_response_bytes: non_zero("server.max_response_bytes", raw.max_response_bytes)?,
        cors_allowed_origins: raw.cors_allowed_origins.clone(),
        workers: workers(raw.workers)?,
    })
}

/// Most serving lanes a config may ask for; beyond the core count they only add switching.
const MAX_WORKERS: u64 = 1024;

fn workers(raw: Option<u64>) -> Result<usize, Problem> {
    match raw {
        None | Some(0) => Ok(std::thread::available_parallelism().map_or(1, usize::from)),
        Some(n) if n > MAX_WORKERS => Err(problem(
            "server.workers",
            format!("{n} is more than {MAX_WORKERS}"),
        )),
        Some(n) => usize::try_from(n).map_err(|_| problem("server.workers", "too large")),
    }
}

fn providers(
    raw: &[raw::RawProvider],
    env: &dyn EnvSource,
) -> Result<Vec<Arc<ProviderConfig>>, Problem> {
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, p)| {
            let key = |field: &str| format!("providers[{i}].{field}");
            if p.name.trim().is_empty() || !seen.insert(p.name.as_str()) {
                return Err(problem(
                    key("name"),
                    format!("`{}` is empty or used twice", p.name),
                ));
            }
            let base_url = base_url(&key("base_url"), &p.base_url)?;
            let api_key = match &p.api_key_env {
                Some(var) => Some(Secret::new(
                    env.get(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                        problem(
                            key("api_key_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?,
                )),
                None => None,
            };
            if api_key.is_none()
                && matches!(
                    p.kind,
                    ProviderKind::Openai | ProviderKind::Azure | ProviderKind::Anthropic
                )
            {
                return Err(problem(
                    key("api_key_env"),
                    "required for this provider kind (name the variable holding the key)",
                ));
            }
            if p.kind == ProviderKind::Azure && p.api_version.as_deref().is_none_or(str::is_empty) {
                return Err(problem(
                    key("api_version"),
                    "required for kind = \"azure\" (e.g. \"2024-10-21\")",
                ));
            }
            if p.kind != ProviderKind::Azure && p.api_version.is_some() {
                return Err(problem(
                    key("api_version"),
                    "only applies to kind = \"azure\"",
                ));
            }
            let b = &p.circuit_breaker;
            if b.consecutive_failures == 0 {
                return Err(problem(
                    key("circuit_breaker.consecutive_failures"),
                    "must be at least 1",
                ));
            }
            if !(b.error_ratio > 0.0 && b.error_ratio <= 1.0) {
                return Err(problem(
                    key("circuit_breaker.error_ratio"),
                    "must be in (0, 1]",
                ));
            }
            Ok(Arc::new(ProviderConfig {
                name: p.name.clone(),
                kind: p.kind,
                base_url,
                api_key,
                timeout: duration(&key("timeout"), &p.timeout)?,
                stream_idle_timeout: duration(&key("stream_idle_timeout"), &p.stream_idle_timeout)?,
                max_retries: p.max_retries,
                api_version: p.api_version.clone(),
                circuit_breaker: BreakerConfig {
                    consecutive_failures: b.consecutive_failures,
                    error_ratio: b.error_ratio,
                    min_requests: b.min_requests.max(1),
                    window: duration(&key("circuit_breaker.window"), &b.window)?,
                    cooldown: duration(&key("circuit_breaker.cooldown"), &b.cooldown)?,
                },
            }))
        })
        .collect()
}

fn base_url(key: &str, text: &str) -> Result<Url, Problem> {
    let url = Url::parse(text.trim())
        .map_err(|e| problem(key, format!("`{text}` is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() || url.host().is_none() {
        return Err(problem(
            key,
            format!("`{text}` must be an http(s) URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(key, "must not carry a query or fragment"));
    }
    // Normalise so joining paths is a plain string append.
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn models(
    raw: &[raw::RawModel],
    providers: &[Arc<ProviderConfig>],
) -> Result<Vec<ModelConfig>, Problem> {
    let index: HashMap<&str, usize> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, m)| {
            let key = |field: &str| format!("models[{i}].{field}");
            if m.name.trim().is_empty() || !seen.insert(m.name.as_str()) {
                return Err(problem(
                    key("name"),
                    format!("`{}` is empty or used twice", m.name),
                ));
            }
            if m.routes.is_empty() {
                return Err(problem(key("routes"), "needs at least one route"));
            }
            let routes =
                m.routes
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let rkey = |field: &str| format!("models[{i}].routes[{j}].{field}");
                        let provider = *index.get(r.provider.as_str()).ok_or_else(|| {
                            problem(
                                rkey("provider"),
                                format!("no provider named `{}`", r.provider),
                            )
                        })?;
                        if r.model.trim().is_empty() {
                            return Err(problem(rkey("model"), "must not be empty"));
                        }
                        let weight =
                            match (m.strategy, r.weight) {
                                (Strategy::Weighted, Some(0) | None) => return Err(problem(
                                    rkey("weight"),
                                    "strategy \"weighted\" needs a positive weight on every route",
                                )),
                                (Strategy::Weighted, Some(w)) => w,
                                (_, Some(_)) => {
                                    return Err(problem(
                                        rkey("weight"),
                                        "only applies to strategy = \"weighted\"",
                                    ))
                                }
                                (_, None) => 1,
                            };
                        Ok(RouteConfig {
                            provider,
                            provider_name: r.provider.clone(),
                            model: r.model.clone(),
                            weight,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            let slo_p95 = match (&m.slo_p95, m.strategy) {
                (Some(text), Strategy::Latency) => Some(duration(&key("slo_p95"), text)?),
                (Some(_), _) => {
                    return Err(problem(
                        key("slo_p95"),
                        "only applies to strategy = \"latency\"",
                    ))
                }
                (None, _) => None,
            };
            Ok(ModelConfig {
                name: m.name.clone(),
                strategy: m.strategy,
                routes,
                slo_p95,
                context_window: m.context_window,
            })
        })
        .collect()
}

/// Typed limits of a tenant or key at `at` (`rpm` and `tpm` must be positive).
fn limits_of(at: &str, raw: Option<&crate::config::raw::RawLimits>) -> Result<Limits, Problem> {
    Ok(match raw {
        None => Limits::default(),
        Some(l) => Limits {
            rpm: positive(&format!("{at}.rpm"), l.rpm)?,
            tpm: positive(&format!("{at}.tpm"), l.tpm)?,
            mode: l.mode,
        },
    })
}
