//! Metering: the end of every request a tenant made, whatever path it took (refused, failed,
//! answered, streamed, cut short by the client, answered from the cache).
//!
//! The admission layer opens a [`Ledger`] for the request; whoever ends the request calls
//! [`Ledger::finish`] once, and a ledger dropped without that finishes itself as a client
//! disconnect (499). Finishing counts the tokens (the upstream's usage, else tiktoken, marked
//! `tokens_estimated`), prices them exactly ([`crate::tokens::pricing`]), settles the
//! admission's reservations, and hands one [`Outcome`] to the audit queue. All of that is a
//! few microseconds on the caller; the store work happens in the audit writer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::audit::record::{now_ms, rfc3339_ms, AuditRecord, ShieldFinding};
use crate::audit::AuditSink;
use crate::config::raw::StoreBodies;
use crate::context::RequestId;
use crate::judge::{Judge, JudgeJob, Question};
use crate::openai::chat::ChatRequest;
use crate::openai::usage::{TokenCounts, Usage};
use crate::policy::{Admission, Policy};
use crate::providers::Endpoint;
use crate::store::Outcome;
use crate::store::Tenant;
use crate::tasks::Tasks;
use crate::telemetry::names;
use crate::tenancy::RequestContext;
use crate::tokens::pricing::{cost_nano, usd_f64, PricingTable};
use crate::tokens::Tokenizer;

/// Shared by every ledger: how to count, price, settle and record.
pub struct Meter {
    tokenizer: Arc<Tokenizer>,
    pricing: Arc<PricingTable>,
    policy: Arc<Policy>,
    sink: AuditSink,
    tasks: Tasks,
    store_bodies: StoreBodies,
    judge: Option<Arc<Judge>>,
    /// Present only while trace export is on.
    tracer: Option<crate::otel::Tracer>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

/// The priced figures of a finished request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Priced {
    pub counts: TokenCounts,
    pub estimated: bool,
    pub cost_nano: i64,
    pub unknown: bool,
}

impl Meter {
    /// A meter writing to `sink`.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        pricing: Arc<PricingTable>,
        policy: Arc<Policy>,
        sink: AuditSink,
        tasks: Tasks,
        store_bodies: StoreBodies,
        judge: Option<Arc<Judge>>,
    ) -> Self {
        Self {
            tokenizer,
            pricing,
            policy,
            sink,
            tasks,
            store_bodies,
            judge,
            tracer: None,
        }
    }

    /// Opens a span per request with `tracer` (trace export on).
    #[must_use]
    pub fn with_tracer(mut self, tracer: Option<crate::otel::Tracer>) -> Self {
        self.tracer = tracer;
        self
    }

    /// The tracer, when trace export is on.
    pub fn tracer(&self) -> Option<&crate::otel::Tracer> {
        self.tracer.as_ref()
    }

    /// The admission service.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The token counter.
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Waits while the audit queue is full (see [`AuditSink::room`]).
    pub async fn audit_room(&self) {
        self.sink.room().await;
    }

    /// Opens the ledger of a request.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, the admission layer"
    )]
    pub fn open(
        self: &Arc<Self>,
        request_id: RequestId,
        caller: &RequestContext,
        endpoint: Endpoint,
        started: Instant,
        model: &str,
        stream: bool,
        tags: BTreeMap<String, String>,
        raw: Bytes,
    ) -> Ledger {
        Ledger {
            meter: Arc::clone(self),
            request_id,
            tenant: Arc::clone(&caller.tenant_id),
            key_id: Arc::clone(&caller.key_id),
            endpoint,
            started,
            ts_ms: now_ms(),
            model: model.to_owned(),
            stream,
            tags,
            admission: None,
            shield: Vec::new(),
            cache: "miss",
            raw,
            judge: None,
            span: None,
            done: false,
        }
    }

    /// Records a request refused before it was admitted (bad body, bad header).
    pub fn refuse(
        self: &Arc<Self>,
        request_id: RequestId,
        caller: &RequestContext,
        endpoint: Endpoint,
        started: Instant,
        model: &str,
        err: &crate::error::GatewayError,
    ) {
        self.open(
            request_id,
            caller,
            endpoint,
            started,
            model,
            false,
            BTreeMap::new(),
            Bytes::new(),
        )
        .finish(Finish::refused(err, started.elapsed()));
    }

    /// Prices `counts` of `model` (the upstream id that was billed).
    pub fn price(&self, model: &str, counts: &TokenCounts) -> (i64, bool) {
        match self.pricing.price(model) {
            Some(p) => (cost_nano(&p, counts), false),
            None => (0, true),
        }
    }
}

/// How a request ended.
#[derive(Debug, Default)]
pub struct Finish<'a> {
    pub status: u16,
    pub provider: &'a str,
    /// The provider's model id that served (and billed) the request.
    pub upstream_model: Option<&'a str>,
    pub usage: Option<&'a Usage>,
    /// Completion tokens the gateway saw, for when the upstream reported no usage.
    pub completion_estimate: Option<u64>,
    pub first_token: Option<Instant>,
    pub overhead: Duration,
    pub error: Option<String>,
    /// What a cache hit saved, nano-USD.
    pub saved_nano: i64,
    /// The answer, kept when `audit.store_bodies` asks for bodies.
    pub response_body: Option<Bytes>,
    /// The answer's text, when the request was sampled for the judge.
    pub answer_text: Option<String>,
    /// Answered from the cache: no tokens were used and nothing is owed.
    pub cache_hit: bool,
}

impl Finish<'_> {
    /// A request answered with `err` before any provider was paid: a refusal, a block, or a
    /// failure of the gateway itself. `overhead` is the gateway's own time so far.
    pub fn refused(err: &crate::error::GatewayError, overhead: Duration) -> Self {
        Self {
            status: err.code.status().as_u16(),
            provider: "none",
            error: Some(err.code.as_str().to_owned()),
            overhead,
            ..Self::default()
        }
    }
}

/// The request-extension form of a [`Ledger`] (extensions must be `Clone`): whoever ends the
/// request takes the ledger out once.
#[derive(Clone, Debug)]
pub struct LedgerSlot(Arc<tokio::sync::Mutex<Option<Ledger>>>);

impl LedgerSlot {
    /// Wraps `ledger`.
    pub fn new(ledger: Ledger) -> Self {
        Self(Arc::new(tokio::sync::Mutex::new(Some(ledger))))
    }

    /// Takes the ledger (once; later calls get `None`). Never contended: one request owns it.
    pub fn take(&self) -> Option<Ledger> {
        self.0.try_lock().ok().and_then(|mut slot| slot.take())
    }

    /// Runs `f` on the ledger while it is still in the slot.
    pub fn with<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> Option<R> {
        self.0
            .try_lock()
            .ok()
            .and_then(|mut slot| slot.as_mut().map(f))
    }
}

/// One request's accounting, from admission to its outcome.
pub struct Ledger {
    meter: Arc<Meter>,
    request_id: RequestId,
    tenant: Arc<str>,
    key_id: Arc<str>,
    endpoint: Endpoint,
    started: Instant,
    ts_ms: u64,
    model: String,
    stream: bool,
    tags: BTreeMap<String, String>,
    admission: Option<Admission>,
    /// Guardrail findings (rule and action only).
    pub shield: Vec<ShieldFinding>,
    /// `miss`, `exact`, `semantic` or `bypass`.
    pub cache: &'static str,
    raw: Bytes,
    /// Set when the answer is sampled for the judge.
    judge: Option<Question>,
    /// The request's span, when trace export is on; ended by [`Ledger::finish`].
    span: Option<crate::otel::RequestSpan>,
    done: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("request_id", &self.request_id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Attaches the admission's reservations and violations.
    pub fn admitted(&mut self, admission: Admission) {
        self.admission = Some(admission);
    }

    /// Samples the answer for the judge (deterministically from the request id).
    pub fn sample_for_judge(&mut self, tenant: &Tenant, chat: &ChatRequest) {
        if let Some(judge) = &self.meter.judge {
            if judge.sampled(tenant, self.request_id.as_str()) {
                self.judge = Some(judge.question(tenant, chat));
            }
        }
    }

    /// Whether the answer's text is needed (the judge sampled it).
    pub fn wants_answer(&self) -> bool {
        self.judge.is_some()
    }

    /// Attaches the request's span (trace export on); [`Ledger::finish`] ends it.
    pub fn trace(&mut self, span: crate::otel::RequestSpan) {
        self.span = Some(span);
    }

    /// The request's span, when trace export is on.
    pub fn span(&self) -> Option<&crate::otel::RequestSpan> {
        self.span.as_ref()
    }

    /// The request id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The tenant.
    pub fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }

    /// The shield rewrote the request: with `audit.store_bodies = "redacted"` the record keeps
    /// this form instead of the client's bytes.
    pub fn redacted_request(&mut self, body: Bytes) {
        if self.meter.store_bodies == StoreBodies::Redacted {
            self.raw = body;
        }
    }

    /// Tokens of `text` in `model`'s encoding.
    pub fn count_text(&self, model: &str, text: &str) -> u64 {
        self.meter.tokenizer.count_text(model, text)
    }

    /// Marks the request as answered from the cache (`exact`, `semantic`) or not looked up
    /// (`bypass`).
    pub fn set_cache(&mut self, cache: &'static str) {
        self.cache = cache;
    }

    /// Ends the request: prices it, settles its reservations and queues its audit record.
    /// Returns what it cost.
    #[expect(
        clippy::too_many_lines,
        reason = "one record literal with every SPEC field; splitting it scatters the record"
    )]
    pub fn finish(mut self, f: Finish<'_>) -> Priced {
        self.done = true;
        let meter = Arc::clone(&self.meter);
        let billed_model = f.upstream_model.unwrap_or(&self.model).to_owned();
        let (counts, estimated) = match f.usage {
            _ if f.cache_hit => (TokenCounts::default(), false),
            Some(u) => (TokenCounts::from(u), false),
            None if f.status == 200 || f.completion_estimate.is_some() => {
                let prompt = self
                    .admission
                    .as_ref()
                    .and_then(|a| a.prompt_estimate)
                    .unwrap_or_else(|| self.estimate_prompt(&billed_model));
                (
                    TokenCounts {
                        prompt,
                        completion: f.completion_estimate.unwrap_or(0),
                        ..TokenCounts::default()
                    },
                    true,
                )
            }
            None => (TokenCounts::default(), false),
        };
        let spent = counts.prompt > 0 || counts.completion > 0;
        let (cost, unknown) = if spent {
            meter.price(&billed_model, &counts)
        } else {
            (0, false)
        };
        if unknown {
            metrics::counter!(names::UNPRICED_REQUESTS, "model" => self.model.clone()).increment(1);
        }
        if cost > 0 {
            metrics::gauge!(names::COST_USD, "tenant" => self.tenant.to_string(), "model" => self.model.clone())
                .increment(usd_f64(cost));
        }
        let store_bodies = meter.store_bodies;
        let request_body = (store_bodies != StoreBodies::None)
            .then(|| String::from_utf8_lossy(&self.raw).into_owned());
        let response_body = (store_bodies != StoreBodies::None)
            .then_some(f.response_body)
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let admission = self.admission.take();
        let violations = admission
            .as_ref()
            .map(|a| a.violations.clone())
            .unwrap_or_default();
        // Kept for the span only (the record takes the original).
        let error = self.span.as_ref().and_then(|_| f.error.clone());
        let record = AuditRecord {
            request_id: self.request_id.to_string(),
            timestamp: rfc3339_ms(self.ts_ms),
            ts_ms: self.ts_ms,
            tenant: self.tenant.to_string(),
            key_id: self.key_id.to_string(),
            endpoint: self.endpoint.path().to_owned(),
            model: self.model.clone(),
            provider: f.provider.to_owned(),
            status: f.status,
            stream: self.stream,
            latency_ms: ms(self.started.elapsed()),
            ttft_ms: f
                .first_token
                .map(|t| ms(t.saturating_duration_since(self.started))),
            prompt_tokens: counts.prompt,
            cached_tokens: counts.cached,
            completion_tokens: counts.completion,
            reasoning_tokens: counts.reasoning,
            tokens_estimated: estimated,
            cost_usd: usd_f64(cost),
            cost_unknown: unknown,
            cost_saved_usd: usd_f64(f.saved_nano),
            cache: self.cache.to_owned(),
            overhead_ms: ms(f.overhead),
            judge: None,
            shield: std::mem::take(&mut self.shield),
            violations,
            tags: std::mem::take(&mut self.tags),
            error: f.error,
            request_body,
            response_body,
            chain: String::new(),
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
        };
        if let (Some(q), Some(judge), Some(answer)) = (
            self.judge.take(),
            &meter.judge,
            f.answer_text.filter(|a| !a.is_empty()),
        ) {
            if f.status == 200 {
                judge.submit(JudgeJob {
                    tenant: self.tenant.to_string(),
                    request_id: self.request_id.to_string(),
                    system: q.system,
                    question: q.question,
                    answer: crate::judge::cut(&answer),
                    min_score: q.min_score,
                });
            }
        }
        let tokens = counts.prompt.saturating_add(counts.completion);
        let saved = f.saved_nano;
        let span = self.span.take();
        let enqueue = span.as_ref().map(crate::otel::RequestSpan::audit_enqueue);
        let status = f.status;
        match admission {
            // Reservations to settle: local ones need the (async) local counters.
            Some(admission) if admission.holds() => {
                let m = Arc::clone(&meter);
                meter.tasks.spawn("settle", async move {
                    let settle = m.policy.settle(admission, tokens, cost).await;
                    m.sink.submit(Outcome {
                        record,
                        cost_nano: cost,
                        saved_nano: saved,
                        settle,
                    });
                    if let Some(enqueue) = enqueue {
                        enqueue.end();
                    }
                });
            }
            _ => {
                meter.sink.submit(Outcome {
                    record,
                    cost_nano: cost,
                    saved_nano: saved,
                    settle: crate::store::Settlement::default(),
                });
                if let Some(enqueue) = enqueue {
                    enqueue.end();
                }
            }
        }
        if let Some(span) = span {
            let counted = !f.cache_hit && (f.usage.is_some() || estimated);
            span.end(&crate::otel::RequestEnd {
                status,
                provider: f.provider,
                cache: self.cache,
                tokens: counted.then_some((counts.prompt, counts.completion)),
                error: error.as_deref(),
            });
        }
        Priced {
            counts,
            estimated,
            cost_nano: cost,
            unknown,
        }
    }

    fn estimate_prompt(&self, model: &str) -> u64 {
        let t = &self.meter.tokenizer;
        match self.endpoint {
            Endpoint::Chat => serde_json::from_slice::<crate::openai::chat::ChatRequest>(&self.raw)
                .map_or(0, |req| t.count_chat_prompt(model, &req)),
            Endpoint::Embeddings => {
                serde_json::from_slice::<crate::openai::embeddings::EmbeddingsRequest>(&self.raw)
                    .map_or(0, |req| {
                        req.input_texts()
                            .iter()
                            .map(|x| t.count_text(model, x))
                            .sum()
                    })
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped before anyone finished it: the client went away before an answer.
        let this = Ledger {
            meter: Arc::clone(&self.meter),
            request_id: self.request_id.clone(),
            tenant: Arc::clone(&self.tenant),
            key_id: Arc::clone(&self.key_id),
            endpoint: self.endpoint,
            started: self.started,
            ts_ms: self.ts_ms,
            model: std::mem::take(&mut self.model),
            stream: self.stream,
            tags: std::mem::take(&mut self.tags),
            admission: self.admission.take(),
            shield: std::mem::take(&mut self.shield),
            cache: self.cache,
            raw: self.raw.clone(),
            judge: None,
            span: self.span.take(),
            done: false,
        };
        this.finish(Finish {
            status: crate::proxy::record::CLIENT_CLOSED,
            error: Some("client_disconnected".into()),
            ..Finish::default()
        });
    }
}

#[expect(clippy::cast_precision_loss, reason = "milliseconds for display")]
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}
