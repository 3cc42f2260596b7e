//! The leaf of the proxy path: choose a route, call the provider with retries and fallbacks,
//! and answer in OpenAI's shape.
//!
//! Retries (exponential backoff with jitter, honouring `retry-after`) cover connect errors,
//! timeouts, 429 and 5xx, bounded by the provider's `max_retries` and the request deadline.
//! When a route is exhausted the plan's next route is the fallback. A stream is never retried
//! once its head has been returned, because the client may already have tokens. Client errors
//! (4xx other than 429) are the provider's verdict on the request: passed through, no retry.

pub(crate) mod attempt;
pub mod breaker;
pub mod provider;
pub mod record;
pub mod route;
mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;

use self::attempt::AttemptError;
use self::breaker::Health;
use self::provider::ProviderRuntime;
use self::record::{Completion, Ending, InflightGuard, RouteMetrics};
use self::route::{LatencyTracker, ModelRoutes, Route};
use self::stream::ProxyStream;
use crate::config::{Config, ProviderKind};
use crate::context::{ApiRequest, ParsedBody, RequestId};
use crate::error::{error_body, ErrorCode, GatewayError};
use crate::metering::{Finish, Ledger};
use crate::openai::usage::Usage;
use crate::providers::{self, anthropic, Endpoint, TargetError};
use crate::telemetry::names;
use crate::tenancy::RequestContext;
use crate::tokens::pricing::format_usd;

/// `x-sentinel-provider`: the provider that answered.
pub static X_SENTINEL_PROVIDER: HeaderName = HeaderName::from_static("x-sentinel-provider");
/// `x-sentinel-overhead-ms`: time in the gateway, upstream time excluded.
pub static X_SENTINEL_OVERHEAD_MS: HeaderName = HeaderName::from_static("x-sentinel-overhead-ms");
/// `x-sentinel-cost-usd`: what a non-streaming answer cost, exact decimal USD.
pub static X_SENTINEL_COST_USD: HeaderName = HeaderName::from_static("x-sentinel-cost-usd");
/// `x-sentinel-cache`: how the cache answered.
pub static X_SENTINEL_CACHE: HeaderName = HeaderName::from_static("x-sentinel-cache");

/// Routes, providers and the pooled upstream client.
#[derive(Debug)]
pub struct Proxy {
    models: HashMap<Arc<str>, ModelRoutes>,
    providers: Vec<Arc<ProviderRuntime>>,
    client: crate::lanes::PerLane<attempt::UpstreamClient>,
    request_timeout: Duration,
    max_response_bytes: usize,
    /// Owns the drains of streams whose clients went away.
    tasks: crate::tasks::Tasks,
}

/// Why the proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyInitError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
}

/// Who is asking, and since when.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub id: RequestId,
    pub caller: Arc<RequestContext>,
    pub started: Instant,
    pub endpoint: Endpoint,
    /// Guardrails for the answer, when the tenant's policy checks responses.
    pub response_guard: Option<crate::middleware::guard::ResponseGuard>,
    /// Where to cache the answer, when the cache missed.
    pub fill: Option<crate::cache::Fill>,
}

/// Minimal view of a non-streaming answer: just its usage.
#[derive(Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Minimal view of an answer: the model it names (OpenAI and Anthropic alike).
#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

impl Proxy {
    /// Builds the runtime routes and the upstream client from `config`.
    pub fn new(config: &Config, tasks: crate::tasks::Tasks) -> Result<Self, ProxyInitError> {
        let providers: Vec<Arc<ProviderRuntime>> = config
            .providers
            .iter()
            .map(|p| Arc::new(ProviderRuntime::new(Arc::clone(p))))
            .collect();
        let mut models = HashMap::new();
        for m in &config.models {
            let mut routes = Vec::with_capacity(m.routes.len());
            for r in &m.routes {
                let provider = Arc::clone(&providers[r.provider]);
                let chat = providers::target(&provider.config, &r.model, Endpoint::Chat)?
                    .ok_or_else(|| {
                        ProxyInitError::Client(format!(
                            "provider {} has no chat endpoint",
                            provider.name
                        ))
                    })?;
                let embeddings =
                    providers::target(&provider.config, &r.model, Endpoint::Embeddings)?;
                routes.push(Route {
                    provider,
                    model: Arc::from(r.model.as_str()),
                    weight: r.weight,
                    chat,
                    embeddings,
                    latency: LatencyTracker::default(),
                    metrics: Arc::new(RouteMetrics::new(&m.name, &r.provider_name)),
                });
            }
            let routes = ModelRoutes::new(m, routes);
            models.insert(Arc::clone(&routes.name), routes);
        }
        // Each lane pools its own upstream connections, so their tasks run on its thread.
        let client = crate::lanes::PerLane::filled(config.server.workers, attempt::client);
        Ok(Self {
            models,
            providers,
            client,
            request_timeout: config.server.request_timeout,
            max_response_bytes: config.server.max_response_bytes.get(),
            tasks,
        })
    }

    /// Client-facing model names, sorted.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(AsRef::as_ref).collect();
        names.sort_unstable();
        names
    }

    /// The providers, for health reporting.
    pub fn providers(&self) -> &[Arc<ProviderRuntime>] {
        &self.providers
    }

    /// Proxies one parsed request and answers. `ledger` is the request's accounting (opened
    /// by the admission layer); every path below finishes it.
    pub async fn handle(
        &self,
        meta: RequestMeta,
        body: ParsedBody,
        ledger: Option<Ledger>,
    ) -> Response {
        let refuse = |err: GatewayError, model: &str, ledger: Option<Ledger>| {
            record::record_rejected(
                meta.endpoint,
                &meta.caller.tenant.id,
                model,
                err.code.status().as_u16(),
                meta.started,
            );
            if let Some(ledger) = ledger {
                ledger.finish(Finish::refused(&err, meta.started.elapsed()));
            }
            err.into_response()
        };
        let Some(model) = self.models.get(body.api.model()) else {
            let err = GatewayError::new(
                ErrorCode::ModelNotFound,
                format!("the model `{}` does not exist", body.api.model()),
            )
            .with_param("model");
            return refuse(err, "unknown", ledger);
        };
        if !meta.caller.allows_model(&model.name) {
            let err = GatewayError::new(
                ErrorCode::ModelNotAllowed,
                format!("this key may not use the model `{}`", model.name),
            )
            .with_param("model");
            return refuse(err, &model.name, ledger);
        }
        let inflight = InflightGuard::new();
        let deadline = meta.started + self.request_timeout;
        let mut call = Call {
            proxy: self,
            meta,
            model,
            body,
            upstream_time: Duration::ZERO,
            inflight: Some(inflight),
            ledger,
            upstream_span: None,
            attempts: 0,
        };
        match call.run(deadline).await {
            Ok(resp) => resp,
            Err(err) => {
                record::record_rejected(
                    call.meta.endpoint,
                    &call.meta.caller.tenant.id,
                    &model.name,
                    err.code.status().as_u16(),
                    call.meta.started,
                );
                let overhead = call.overhead();
                if let Some(ledger) = call.ledger.take() {
                    ledger.finish(Finish::refused(&err, overhead));
                }
                let mut resp = err.into_response();
                // The upstream time of the failed attempts is excluded here too.
                set_overhead(resp.headers_mut(), overhead);
                resp
            }
        }
    }
}

/// One request's walk through its plan.
struct Call<'a> {
    proxy: &'a Proxy,
    meta: RequestMeta,
    model: &'a ModelRoutes,
    body: ParsedBody,
    /// Time spent waiting on providers (attempts and backoff), excluded from the overhead.
    upstream_time: Duration,
    inflight: Option<InflightGuard>,
    ledger: Option<Ledger>,
    /// The current attempt's span (trace export on); the answer takes it.
    upstream_span: Option<crate::otel::UpstreamSpan>,
    /// Upstream attempts made so far (retries and fallbacks).
    attempts: u32,
}

impl Call<'_> {
    async fn run(&mut self, deadline: Instant) -> Result<Response, GatewayError> {
        let client_wants_usage = match &self.body.api {
            ApiRequest::Chat(c) => c.client_wants_stream_usage(),
            ApiRequest::Embeddings(_) => false,
        };
        let mut last: Option<AttemptError> = None;
        for idx in self.model.plan() {
            let route = &self.model.routes[idx];
            let Some(target) = (match self.meta.endpoint {
                Endpoint::Chat => Some(&route.chat),
                Endpoint::Embeddings => route.embeddings.as_ref(),
            }) else {
                last.get_or_insert(AttemptError::Protocol("no embeddings endpoint".into()));
                continue;
            };
            let upstream_body = self.upstream_body(route, client_wants_usage)?;
            let provider = &route.provider;
            for attempt in 0..=provider.config.max_retries {
                let now = Instant::now();
                if now >= deadline {
                    return Err(timeout_error());
                }
                let Some(permit) = provider.breaker.try_acquire(now) else {
                    count_error(provider, &AttemptError::CircuitOpen);
                    last = Some(AttemptError::CircuitOpen);
                    break;
                };
                let head_timeout = provider.config.timeout.min(deadline - now);
                let in_flight = route.latency.start();
                self.start_attempt(route, target);
                let result = attempt::send(
                    self.proxy.client.get(),
                    target,
                    upstream_body.clone(),
                    head_timeout,
                    self.upstream_span.as_ref(),
                )
                .await;
                let head_at = Instant::now();
                self.upstream_time += head_at - now;
                route
                    .metrics
                    .upstream_duration
                    .record((head_at - now).as_secs_f64());
                let outcome = match result {
                    Ok(resp) => self.answer(route, resp, client_wants_usage, deadline).await,
                    Err(err) => Err(err),
                };
                drop(in_flight);
                match outcome {
                    Ok((resp, health)) => {
                        route.latency.observe(head_at - now, head_at);
                        permit.record(health);
                        // The answer took the span; end it here should a path not have.
                        if let Some(span) = self.upstream_span.take() {
                            span.end();
                        }
                        return Ok(resp);
                    }
                    Err(err) => {
                        if let Some(span) = self.upstream_span.take() {
                            span.failed(err.kind(), err.status());
                        }
                        permit.record(err.health());
                        count_error(provider, &err);
                        tracing::debug!(request_id = %self.meta.id, provider = %provider.name, attempt, error = %err, "upstream attempt failed");
                        let wait = match &err {
                            AttemptError::RateLimited {
                                retry_after: Some(after),
                            } => *after,
                            _ => attempt::backoff(attempt),
                        };
                        let retry = err.retryable() && attempt < provider.config.max_retries;
                        last = Some(err);
                        if !retry {
                            break;
                        }
                        if Instant::now() + wait >= deadline {
                            break;
                        }
                        tokio::time::sleep(wait).await;
                        self.upstream_time += wait;
                    }
                }
            }
        }
        Err(match last {
            Some(AttemptError::Timeout) => timeout_error(),
            Some(err) => GatewayError::new(
                ErrorCode::UpstreamError,
                format!(
                    "every provider for `{}` failed; last: {err}",
                    self.model.name
                ),
            ),
            None => GatewayError::new(
                ErrorCode::UpstreamError,
                format!("no provider could serve `{}`", self.model.name),
            ),
        })
    }

    /// Counts an attempt and, with trace export on, opens its `CLIENT` span.
    fn start_attempt(&mut self, route: &Route, target: &providers::UpstreamTarget) {
        self.upstream_span = self.ledger.as_ref().and_then(Ledger::span).map(|span| {
            span.upstream(&crate::otel::UpstreamInfo {
                endpoint: self.meta.endpoint,
                kind: route.provider.config.kind,
                provider: &route.provider.name,
                model: &route.model,
                uri: &target.uri,
                resends: self.attempts,
            })
        });
        self.attempts += 1;
    }

    fn upstream_body(
        &mut self,
        route: &Route,
        client_wants_usage: bool,
    ) -> Result<Bytes, GatewayError> {
        let kind = route.provider.config.kind;
        let rewritten = self.body.rewritten;
        match &mut self.body.api {
            ApiRequest::Chat(chat) => providers::chat_body(
                kind,
                chat,
                &self.body.raw,
                rewritten,
                &route.model,
                client_wants_usage,
            ),
            ApiRequest::Embeddings(emb) => {
                providers::embeddings_body(kind, emb, &self.body.raw, rewritten, &route.model)
            }
        }
    }

    fn is_stream(&self) -> bool {
        matches!(&self.body.api, ApiRequest::Chat(c) if c.is_stream())
    }

    /// Turns an upstream response head into the client's answer, or a retryable failure.
    async fn answer(
        &mut self,
        route: &Route,
        resp: http::Response<hyper::body::Incoming>,
        client_wants_usage: bool,
        deadline: Instant,
    ) -> Result<(Response, Health), AttemptError> {
        let status = resp.status();
        let kind = route.provider.config.kind;
        if let Some(span) = &self.upstream_span {
            span.head(status.as_u16());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(AttemptError::RateLimited {
                retry_after: attempt::retry_after(resp.headers()),
            });
        }
        if status.is_server_error() {
            return Err(AttemptError::Status { status });
        }
        let idle = route.provider.config.stream_idle_timeout;
        let max = self.proxy.max_response_bytes;
        if !status.is_success() {
            // The provider refused the request itself: its verdict goes back to the client.
            let t0 = Instant::now();
            let body = attempt::read_body(resp, max, idle, deadline).await?;
            self.upstream_time += t0.elapsed();
            let body = if kind == ProviderKind::Anthropic {
                let (err_type, message) = anthropic::error_type_and_message(status.as_u16(), &body);
                error_body(err_type, None, &message, None)
            } else {
                body
            };
            let completion = self.completion(route);
            completion.finish(
                status.as_u16(),
                Ending {
                    error: Some(format!("provider answered {}", status.as_u16())),
                    ..Ending::default()
                },
            );
            return Ok((
                json_response(status, body, &route.provider.name, self.overhead()),
                Health::Healthy,
            ));
        }
        if self.is_stream() {
            let translator = (kind == ProviderKind::Anthropic)
                .then(|| anthropic::StreamTranslator::new(self.body.api.model()));
            let upstream = resp.into_body();
            let overhead = self.overhead();
            let completion = self.completion(route);
            let collect = completion.wants_answer();
            let body = ProxyStream::new(
                upstream,
                translator,
                !client_wants_usage,
                idle,
                deadline.into(),
                completion,
                self.proxy.tasks.clone(),
            )
            .collecting_text(collect);
            let mut response = Response::new(Body::new(body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            common_headers(headers, &route.provider.name, overhead);
            return Ok((response, Health::Healthy));
        }
        self.answer_json(route, resp, deadline).await
    }

    /// A complete (non-streaming) answer: read, translated if needed, metered, priced.
    async fn answer_json(
        &mut self,
        route: &Route,
        resp: http::Response<hyper::body::Incoming>,
        deadline: Instant,
    ) -> Result<(Response, Health), AttemptError> {
        let kind = route.provider.config.kind;
        let idle = route.provider.config.stream_idle_timeout;
        let max = self.proxy.max_response_bytes;
        let t0 = Instant::now();
        let body = attempt::read_body(resp, max, idle, deadline).await?;
        self.upstream_time += t0.elapsed();
        // Only for the trace: the model the provider says answered (before any translation).
        let response_model = self
            .upstream_span
            .as_ref()
            .and_then(|_| serde_json::from_slice::<ModelOnly>(&body).ok())
            .and_then(|m| m.model);
        let (body, usage) = if kind == ProviderKind::Anthropic {
            let completion = anthropic::from_messages_response(&body, self.body.api.model())
                .map_err(|e| AttemptError::Protocol(e.to_string()))?;
            let usage = completion.usage.clone();
            let bytes = serde_json::to_vec(&completion)
                .map_err(|e| AttemptError::Protocol(e.to_string()))?;
            (Bytes::from(bytes), usage)
        } else {
            let usage = serde_json::from_slice::<UsageOnly>(&body)
                .map_err(|e| AttemptError::Protocol(e.to_string()))?
                .usage;
            (body, usage)
        };
        let overhead = self.overhead();
        let mut completion = self.completion(route);
        let completion_estimate = match (&usage, self.meta.endpoint) {
            (None, Endpoint::Chat) => completion.estimate_completion(&body),
            _ => None,
        };
        // A complete answer is cached as its bytes; only the judge needs its text.
        let answer_text = completion
            .judge_wants_answer()
            .then(|| answer_text(&body))
            .flatten();
        let (body, blocked) = match &self.meta.response_guard {
            Some(guard) if self.meta.endpoint == Endpoint::Chat => {
                guard_answer(guard, body, &mut completion)
            }
            _ => (body, None),
        };
        let priced = completion.finish(
            if blocked.is_some() { 400 } else { 200 },
            Ending {
                usage: usage.as_ref(),
                completion_estimate,
                response_body: Some(body.clone()),
                error: blocked.map(|_| ErrorCode::ContentBlocked.as_str().to_owned()),
                answer_text,
                cacheable: blocked.is_none().then(|| body.clone()),
                response_model: response_model.as_deref(),
                ..Ending::default()
            },
        );
        if let Some(rule) = blocked {
            // The provider answered (and is paid); the answer itself is withheld.
            let mut response = GatewayError::new(
                ErrorCode::ContentBlocked,
                format!("the answer was blocked by the `{rule}` guardrail"),
            )
            .into_response();
            common_headers(response.headers_mut(), &route.provider.name, overhead);
            return Ok((response, Health::Healthy));
        }
        let mut response = json_response(StatusCode::OK, body, &route.provider.name, overhead);
        if let Some(priced) = priced {
            if let Ok(v) = HeaderValue::from_str(&format_usd(priced.cost_nano)) {
                response
                    .headers_mut()
                    .insert(X_SENTINEL_COST_USD.clone(), v);
            }
        }
        Ok((response, Health::Healthy))
    }

    fn overhead(&self) -> Duration {
        self.meta
            .started
            .elapsed()
            .saturating_sub(self.upstream_time)
    }

    fn completion(&mut self, route: &Route) -> Completion {
        Completion {
            started: self.meta.started,
            endpoint: self.meta.endpoint,
            model: Arc::clone(&self.model.name),
            provider: Arc::clone(&route.provider.name),
            upstream_model: Arc::clone(&route.model),
            tenant: Arc::clone(&self.meta.caller.tenant_id),
            metrics: Arc::clone(&route.metrics),
            overhead: self.overhead(),
            inflight: self.inflight.take().unwrap_or_default(),
            ledger: self.ledger.take(),
            fill: self.meta.fill.take(),
            upstream_span: self.upstream_span.take(),
        }
    }
}

/// The text of a chat answer's first choice.
fn answer_text(body: &[u8]) -> Option<String> {
    let answer: crate::openai::chat::ChatCompletion = serde_json::from_slice(body).ok()?;
    answer.choices.into_iter().next()?.message.content
}

/// Scans a chat answer's message texts with the tenant's PII rules: redacts in place
/// (re-serialising only when something changed), records findings on the ledger, and says
/// which rule blocks it, if one does.
fn guard_answer(
    guard: &crate::middleware::guard::ResponseGuard,
    body: Bytes,
    completion: &mut Completion,
) -> (Bytes, Option<&'static str>) {
    let Ok(mut answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (body, None);
    };
    let mut verdict = crate::shield::Verdict::default();
    let mut changed = false;
    let choices = answer
        .get_mut("choices")
        .and_then(serde_json::Value::as_array_mut);
    for choice in choices.into_iter().flatten() {
        let Some(serde_json::Value::String(text)) = choice.pointer_mut("/message/content") else {
            continue;
        };
        let v = guard.guardrails.shield().scan_text(&guard.policy, text);
        changed |= v.redacted;
        for f in v.findings {
            if !verdict.findings.iter().any(|x| x.rule == f.rule) {
                verdict.findings.push(f);
            }
        }
        verdict.blocked_by = verdict.blocked_by.or(v.blocked_by);
    }
    let findings = crate::middleware::guard::record_findings(&verdict);
    if let Some(ledger) = completion.ledger.as_mut() {
        ledger.shield.extend(findings);
    }
    let body = if changed {
        serde_json::to_vec(&answer).map_or(body, Bytes::from)
    } else {
        body
    };
    (body, verdict.blocked_by)
}

fn timeout_error() -> GatewayError {
    GatewayError::new(
        ErrorCode::UpstreamTimeout,
        "the provider did not answer before the request deadline",
    )
}

fn count_error(provider: &ProviderRuntime, err: &AttemptError) {
    metrics::counter!(names::UPSTREAM_ERRORS, "provider" => provider.name.to_string(), "kind" => err.kind()).increment(1);
}

fn json_response(status: StatusCode, body: Bytes, provider: &str, overhead: Duration) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    common_headers(headers, provider, overhead);
    response
}

fn common_headers(headers: &mut http::HeaderMap, provider: &str, overhead: Duration) {
    if let Ok(v) = HeaderValue::from_str(provider) {
        headers.insert(X_SENTINEL_PROVIDER.clone(), v);
    }
    set_overhead(headers, overhead);
    headers.insert(X_SENTINEL_CACHE.clone(), HeaderValue::from_static("miss"));
}

/// `x-sentinel-overhead-ms`, milliseconds with microsecond resolution.
fn set_overhead(headers: &mut http::HeaderMap, overhead: Duration) {
    let ms = format!("{:.3}", overhead.as_secs_f64() * 1000.0);
    if let Ok(v) = HeaderValue::from_str(&ms) {
        headers.insert(X_SENTINEL_OVERHEAD_MS.clone(), v);
    }
}
