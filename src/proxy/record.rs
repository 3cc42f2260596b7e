//! The end of a proxied request: the one place its outcome is recorded.
//!
//! Both paths end here: a non-streaming answer when its body is read, a stream when it ends,
//! breaks, or its client goes away (status 499). Metrics are emitted here; cost, usage rollups
//! and the audit record hang off the same [`Completion::finish`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};

use crate::cache::entry::CachedAnswer;
use crate::cache::Fill;
use crate::metering::{Finish, Ledger, Priced};
use crate::openai::usage::{TokenCounts, Usage};
use crate::providers::Endpoint;
use crate::telemetry::names;

// Handles resolved once: a registry lookup per request would hash every label again.
static INFLIGHT: LazyLock<Gauge> = LazyLock::new(|| metrics::gauge!(names::INFLIGHT));
static OVERHEAD_CHAT: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!(names::OVERHEAD, "route" => Endpoint::Chat.path()));
static OVERHEAD_EMBEDDINGS: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!(names::OVERHEAD, "route" => Endpoint::Embeddings.path()));

fn overhead_histogram(endpoint: Endpoint) -> &'static Histogram {
    match endpoint {
        Endpoint::Chat => &OVERHEAD_CHAT,
        Endpoint::Embeddings => &OVERHEAD_EMBEDDINGS,
    }
}

/// Metric handles of one route (model × provider), resolved once, and per tenant on first use.
#[derive(Debug)]
pub struct RouteMetrics {
    model: String,
    provider: String,
    pub upstream_duration: Histogram,
    ttft: Histogram,
    tenants: RwLock<HashMap<Arc<str>, Arc<TenantMetrics>>>,
}

/// A route's handles labelled with one tenant.
#[derive(Debug)]
struct TenantMetrics {
    ok_requests: Counter,
    duration: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
}

impl RouteMetrics {
    /// Handles for `model` served by `provider`.
    pub fn new(model: &str, provider: &str) -> Self {
        let (m, p) = (model.to_owned(), provider.to_owned());
        Self {
            upstream_duration: metrics::histogram!(names::UPSTREAM_DURATION, "provider" => p.clone(), "model" => m.clone()),
            ttft: metrics::histogram!(names::TIME_TO_FIRST_TOKEN, "model" => m.clone()),
            model: m,
            provider: p,
            tenants: RwLock::new(HashMap::new()),
        }
    }

    fn tenant(&self, tenant: &Arc<str>) -> Arc<TenantMetrics> {
        if let Some(hit) = self
            .tenants
            .read()
            .ok()
            .and_then(|t| t.get(tenant).cloned())
        {
            return hit;
        }
        let (t, m) = (tenant.to_string(), self.model.clone());
        let handles = Arc::new(TenantMetrics {
            ok_requests: metrics::counter!(names::REQUESTS_TOTAL,
                "tenant" => t.clone(), "model" => m.clone(), "provider" => self.provider.clone(), "status" => "200", "cache" => "miss"),
            duration: metrics::histogram!(names::REQUEST_DURATION, "tenant" => t.clone(), "model" => m.clone(), "cache" => "miss"),
            prompt_tokens: metrics::counter!(names::TOKENS_TOTAL, "tenant" => t.clone(), "model" => m.clone(), "kind" => "prompt"),
            completion_tokens: metrics::counter!(names::TOKENS_TOTAL, "tenant" => t, "model" => m, "kind" => "completion"),
        });
        if let Ok(mut map) = self.tenants.write() {
            map.insert(Arc::clone(tenant), Arc::clone(&handles));
        }
        handles
    }
}

/// Counts a proxied request in `sentinel_inflight_requests` until dropped.
#[derive(Debug)]
pub struct InflightGuard(());

impl InflightGuard {
    /// Counts one more request in flight.
    pub fn new() -> Self {
        INFLIGHT.increment(1.0);
        Self(())
    }
}

impl Default for InflightGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        INFLIGHT.decrement(1.0);
    }
}

/// Status recorded for a stream whose client went away.
pub const CLIENT_CLOSED: u16 = 499;

/// A proxied request whose outcome is still to be recorded.
#[derive(Debug)]
pub struct Completion {
    pub started: Instant,
    pub endpoint: Endpoint,
    pub model: Arc<str>,
    pub provider: Arc<str>,
    /// The provider's id of the model that served the request (what is billed).
    pub upstream_model: Arc<str>,
    pub tenant: Arc<str>,
    pub metrics: Arc<RouteMetrics>,
    /// Time spent in the gateway until the response head, upstream time excluded.
    pub overhead: Duration,
    pub inflight: InflightGuard,
    /// The request's accounting; `None` only where no tenant is metered (tests).
    pub ledger: Option<Ledger>,
    /// Where a successful answer is cached, when the cache missed.
    pub fill: Option<Fill>,
    /// The upstream call's span (trace export on), ended with the answer.
    pub upstream_span: Option<crate::otel::UpstreamSpan>,
}

/// How a proxied request ended, beyond its status.
#[derive(Debug, Default)]
pub struct Ending<'a> {
    pub usage: Option<&'a Usage>,
    /// The instant the first streamed token went by.
    pub first_token: Option<Instant>,
    /// Completion tokens counted by the gateway, for an upstream that reported no usage.
    pub completion_estimate: Option<u64>,
    pub error: Option<String>,
    pub response_body: Option<bytes::Bytes>,
    /// The answer's text, for the judge.
    pub answer_text: Option<String>,
    /// The complete `chat.completion` to cache, when the answer may be cached.
    pub cacheable: Option<bytes::Bytes>,
    /// The model the answer names, when known (for the trace; else the upstream model id).
    pub response_model: Option<&'a str>,
}

impl Completion {
    /// Whether a stream's text is wanted (sampled for the judge, or assembled to be cached).
    pub fn wants_answer(&self) -> bool {
        self.fill.is_some() || self.ledger.as_ref().is_some_and(Ledger::wants_answer)
    }

    /// Whether the judge sampled the answer (a complete answer is cached as its bytes).
    pub fn judge_wants_answer(&self) -> bool {
        self.ledger.as_ref().is_some_and(Ledger::wants_answer)
    }

    /// Completion tokens of a non-streaming answer's text, for an upstream without usage.
    pub fn estimate_completion(&self, body: &[u8]) -> Option<u64> {
        let ledger = self.ledger.as_ref()?;
        let answer: crate::openai::chat::ChatCompletion = serde_json::from_slice(body).ok()?;
        let text: String = answer
            .choices
            .iter()
            .filter_map(|c| c.message.content.as_deref())
            .collect();
        Some(ledger.count_text(&self.upstream_model, &text))
    }

    /// Records the outcome; returns what it cost (when metered).
    pub fn finish(mut self, status: u16, ending: Ending<'_>) -> Option<Priced> {
        if let Some(span) = self.upstream_span.take() {
            let model = ending.response_model.unwrap_or(&self.upstream_model);
            if let Some(request) = self.ledger.as_ref().and_then(Ledger::span) {
                request.answered_by(span.kind(), model);
            }
            let tokens = ending
                .usage
                .map(TokenCounts::from)
                .map(|c| (c.prompt, c.completion));
            // The client's status: >= 500 here means the answer broke off (499 is the client
            // leaving, not the upstream failing).
            span.answered(model, tokens, status >= 500);
        }
        let priced = self.ledger.take().map(|ledger| {
            ledger.finish(Finish {
                status,
                provider: &self.provider,
                upstream_model: Some(&self.upstream_model),
                usage: ending.usage,
                completion_estimate: ending.completion_estimate,
                first_token: ending.first_token,
                overhead: self.overhead,
                error: ending.error,
                saved_nano: 0,
                response_body: ending.response_body,
                answer_text: ending.answer_text,
                cache_hit: false,
            })
        });
        if let (200, Some(body), Some(fill)) = (status, ending.cacheable, self.fill.take()) {
            fill.store(CachedAnswer {
                cost_nano: priced.map_or(0, |p| p.cost_nano),
                body,
            });
        }
        let first_token = ending.first_token;
        let m = self.metrics.tenant(&self.tenant);
        if status == 200 {
            m.ok_requests.increment(1);
        } else {
            metrics::counter!(names::REQUESTS_TOTAL,
                "tenant" => self.tenant.to_string(), "model" => self.model.to_string(), "provider" => self.provider.to_string(),
                "status" => status_label(status), "cache" => "miss")
            .increment(1);
        }
        m.duration.record(self.started.elapsed().as_secs_f64());
        overhead_histogram(self.endpoint).record(self.overhead.as_secs_f64());
        if let Some(at) = first_token {
            self.metrics
                .ttft
                .record(at.saturating_duration_since(self.started).as_secs_f64());
        }
        let counts = priced.map_or_else(
            || ending.usage.map(TokenCounts::from).unwrap_or_default(),
            |p| p.counts,
        );
        m.prompt_tokens.increment(counts.prompt);
        m.completion_tokens.increment(counts.completion);
        priced
    }
}

/// Records a request answered from the cache.
pub fn record_cache_hit(tenant: &str, model: &str, kind: &'static str, started: Instant) {
    metrics::counter!(names::REQUESTS_TOTAL,
        "tenant" => tenant.to_owned(), "model" => model.to_owned(), "provider" => "cache",
        "status" => "200", "cache" => kind)
    .increment(1);
    metrics::histogram!(names::REQUEST_DURATION, "tenant" => tenant.to_owned(), "model" => model.to_owned(), "cache" => kind)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(names::OVERHEAD, "route" => Endpoint::Chat.path())
        .record(started.elapsed().as_secs_f64());
}

/// Records a request that ended before reaching a provider (bad body, unknown model, ...).
pub fn record_rejected(
    endpoint: Endpoint,
    tenant: &str,
    model: &str,
    status: u16,
    started: Instant,
) {
    metrics::counter!(names::REQUESTS_TOTAL,
        "tenant" => tenant.to_owned(), "model" => model.to_owned(), "provider" => "none",
        "status" => status_label(status), "cache" => "miss")
    .increment(1);
    metrics::histogram!(names::OVERHEAD, "route" => endpoint.path())
        .record(started.elapsed().as_secs_f64());
}

/// Static label strings for the statuses the gateway produces; others are grouped by class.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        201..=299 => "2xx",
        402 | 405..=407 | 409..=412 | 414..=421 | 423..=428 | 430..=498 => "4xx",
        _ => "5xx",
    }
}
