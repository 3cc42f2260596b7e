//! Admission: the model allow-list, rate limits (`rpm`, `tpm`) and budgets, checked before a
//! request may reach the cache or a provider.
//!
//! - **Requests per minute** take 1 from a sliding window per tenant, and per key when the
//!   key has its own limits (a key's limits narrow its tenant's, never widen them).
//! - **Tokens per minute** reserve the prompt's tokens (tiktoken) plus the completion cap
//!   (`max_tokens`, else the room left in the model's `context_window`, else
//!   [`DEFAULT_COMPLETION_RESERVE`]) and are settled to the real count when the request ends.
//! - **Budgets** reserve an upper bound of the cost (those token bounds at the dearest
//!   route's prices) in the current UTC day or month, and settle to the real cost.
//!
//! The checks are one store step ([`crate::store::CounterStore::admit`]): on Redis one script
//! and one round trip for all of them, or none when the lane holds a lease of the caller's
//! limits ([`lease`]). A refusal
//! gives back what the other checks reserved. `dry_run` policies never refuse: they record a
//! violation on the audit record and in `sentinel_policy_violations_total`.
//!
//! When the shared store fails, the checks fall back to this replica's own counters
//! ([`local`]) and `/health` says so; after a failure the store is left alone for
//! [`STORE_RETRY_AFTER`] so no request waits on a dead store's timeout, then tried again.

pub mod lease;
pub mod local;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use self::lease::{BudgetShare, Leases};
use self::local::LocalCounters;
use crate::audit::record::{day_of, now_ms, Violation};
use crate::config::raw::{BudgetPeriod, PolicyMode};
use crate::config::{Config, StoreConfig};
use crate::context::{ApiRequest, ParsedBody};
use crate::error::{ErrorCode, GatewayError};
use crate::offload;
use crate::store::{
    BudgetDecision, BudgetReserve, KeepAlive, Limits, Settlement, Store, StoreError,
    WindowDecision, WindowSettle, WindowTake,
};
use crate::telemetry::names;
use crate::tenancy::RequestContext;
use crate::tokens::pricing::{Price, PricingTable};
use crate::tokens::Tokenizer;

/// Completion tokens reserved when a request sets no cap and its model no context window.
pub const DEFAULT_COMPLETION_RESERVE: u64 = 4096;
/// After a store failure, counters stay local this long before the store is tried again.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long `/health` reports per-replica counters after the local-only period that follows
/// the last store failure ([`STORE_RETRY_AFTER`]).
pub const DEGRADED_FOR: Duration = Duration::from_secs(2);
/// The rate-limit window.
pub const MINUTE: Duration = Duration::from_secs(60);

/// What admission needs to know about a client-facing model.
#[derive(Debug, Clone)]
struct ModelBound {
    /// The primary route's upstream model: picks the token encoding.
    encoding_model: String,
    /// The dearest price among the routes (any of them may end up serving the request).
    price: Option<Price>,
    context_window: Option<u32>,
}

/// The admission service. One per process.
pub struct Policy {
    store: Arc<dyn Store>,
    local: LocalCounters,
    tokenizer: Arc<Tokenizer>,
    models: HashMap<String, ModelBound>,
    /// Unix ms until which the store is skipped after a failure.
    store_down_until: AtomicU64,
    degraded: AtomicBool,
    /// On the shared store only: per-lane leases of busy callers' limits ([`lease`]).
    leases: Option<Arc<Leases>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("models", &self.models.len())
            .finish_non_exhaustive()
    }
}

/// Where a reservation was made, so it is settled in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Store,
    /// The shared store, through a lane's lease: the lease holds the budget reservation and
    /// releases it itself ([`lease`]).
    Lease,
    Local,
}

/// What a request took from a window: settled to the real tokens when it ends, or given
/// back whole when another check refuses it.
#[derive(Debug, Clone)]
struct WindowHold {
    scope: String,
    unit: Unit,
    amount: u64,
    at_ms: u64,
    place: Place,
}

/// A budget reservation.
#[derive(Debug, Clone)]
struct BudgetHold {
    tenant: String,
    period: String,
    amount: i64,
    place: Place,
    /// From a lease: its budget share, kept by the settlement until the outcome is written.
    lease: Option<Arc<BudgetShare>>,
}

/// What a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    /// The policy name in violations (SPEC: `rpm|tpm`).
    fn policy(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// Whose limit a window enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Tenant,
    Key,
}

impl Level {
    fn noun(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
        }
    }
}

/// What admission needs to know about one of a request's window takes, besides the take.
#[derive(Debug, Clone, Copy)]
struct WindowCheck {
    level: Level,
    unit: Unit,
    mode: PolicyMode,
}

impl WindowCheck {
    /// The windows a request takes from, its key's first (the most specific refusal wins),
    /// then its tenant's: the takes for the store and, index for index, their checks. A
    /// scope starts with the tenant id, so a tenant's windows share a Redis slot.
    fn all(
        tenant: &str,
        key_id: &str,
        tenant_limits: Limits,
        key_limits: Limits,
        tokens: u64,
    ) -> (Vec<WindowTake>, Vec<Self>) {
        let mut takes = Vec::with_capacity(4);
        let mut checks = Vec::with_capacity(4);
        for (level, limits) in [(Level::Key, key_limits), (Level::Tenant, tenant_limits)] {
            let prefix = match level {
                Level::Tenant => tenant.to_owned(),
                Level::Key => format!("{tenant}:key:{key_id}"),
            };
            for (unit, limit, amount) in [
                (Unit::Requests, limits.rpm, 1),
                (Unit::Tokens, limits.tpm, tokens),
            ] {
                let Some(limit) = limit else { continue };
                takes.push(WindowTake {
                    scope: format!("{prefix}:{}", unit.policy()),
                    limit: u64::from(limit.get()),
                    amount,
                });
                checks.push(Self {
                    level,
                    unit,
                    mode: limits.mode,
                });
            }
        }
        (takes, checks)
    }

    /// `rate_limited_total{limit}`.
    fn label(self) -> &'static str {
        match (self.level, self.unit) {
            (Level::Tenant, Unit::Requests) => "rpm",
            (Level::Tenant, Unit::Tokens) => "tpm",
            (Level::Key, Unit::Requests) => "key_rpm",
            (Level::Key, Unit::Tokens) => "key_tpm",
        }
    }
}

/// `x-ratelimit-*` figures for the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
}

impl RateHeaders {
    /// Takes a window's figures if they leave less room than the ones noted so far: the
    /// headers describe the limit the client will hit first.
    fn note(&mut self, unit: Unit, limit: u64, count: u64) {
        let remaining = limit.saturating_sub(count);
        let (limit_slot, remaining_slot) = match unit {
            Unit::Requests => (&mut self.limit_requests, &mut self.remaining_requests),
            Unit::Tokens => (&mut self.limit_tokens, &mut self.remaining_tokens),
        };
        if remaining_slot.is_none_or(|r| remaining < r) {
            *limit_slot = Some(limit);
            *remaining_slot = Some(remaining);
        }
    }
}

/// A request let in: its reservations (settled when it ends), its dry-run violations, the
/// prompt estimate and the rate-limit figures.
#[derive(Debug, Default)]
pub struct Admission {
    pub prompt_estimate: Option<u64>,
    pub violations: Vec<Violation>,
    pub headers: RateHeaders,
    windows: Vec<WindowHold>,
    budget: Option<BudgetHold>,
}

/// A refusal, with the figures for the rate-limit headers.
#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub headers: RateHeaders,
}

impl Policy {
    /// Builds the admission service for `config`'s models.
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        tokenizer: Arc<Tokenizer>,
        pricing: &PricingTable,
    ) -> Self {
        let models = config
            .models
            .iter()
            .map(|m| {
                let price = m
                    .routes
                    .iter()
                    .filter_map(|r| pricing.price(&r.model))
                    .reduce(|a, b| Price {
                        input: a.input.max(b.input),
                        output: a.output.max(b.output),
                        cached_input: a.cached_input.max(b.cached_input),
                        cache_write: a.cache_write.max(b.cache_write),
                        reasoning: a.reasoning.max(b.reasoning),
                    });
                (
                    m.name.clone(),
                    ModelBound {
                        encoding_model: m
                            .routes
                            .first()
                            .map(|r| r.model.clone())
                            .unwrap_or_default(),
                        price,
                        context_window: m.context_window,
                    },
                )
            })
            .collect();
        let leases = matches!(config.store, StoreConfig::Redis { .. })
            .then(|| Arc::new(Leases::new(Arc::clone(&store), config.server.workers)));
        Self {
            store,
            leases,
            local: LocalCounters::default(),
            tokenizer,
            models,
            store_down_until: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
        }
    }

    /// Whether counters fell back to this replica's own recently: a failure less than
    /// [`DEGRADED_FOR`] ago that no successful operation has cleared since. Without traffic
    /// the flag lapses by itself, so a replica out of rotation can become ready again.
    pub fn degraded(&self) -> bool {
        let last = self.store_down_until.load(Ordering::Relaxed);
        let lapse = u64::try_from(DEGRADED_FOR.as_millis()).unwrap_or(u64::MAX);
        self.degraded.load(Ordering::Relaxed) && now_ms() < last.saturating_add(lapse)
    }

    fn store_usable(&self, now: u64) -> bool {
        now >= self.store_down_until.load(Ordering::Relaxed)
    }

    fn store_failed(&self, op: &'static str, err: &StoreError, now: u64) {
        metrics::counter!(names::STORE_ERRORS, "op" => op).increment(1);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "the store failed; limits and budgets are enforced per replica until it is back");
        }
        let retry = now + u64::try_from(STORE_RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.store_down_until.store(retry, Ordering::Relaxed);
    }

    fn store_ok(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("the store answers again; limits and budgets are shared again");
        }
    }

    /// The admission leases, on the shared store.
    pub fn leases(&self) -> Option<&Arc<Leases>> {
        self.leases.as_ref()
    }

    /// Every window take and the budget reservation of one request of `tenant`'s key
    /// `key_id`: from the lane's lease when it has one that covers them, else one store step
    /// (one round trip and one script on Redis), or this replica's own counters while the
    /// store is failing.
    async fn check(
        &self,
        (tenant, key_id): (&str, &str),
        takes: &[WindowTake],
        budget: Option<&BudgetReserve>,
        now: u64,
    ) -> (
        Vec<(WindowDecision, Place)>,
        Option<(BudgetDecision, Place)>,
        Option<Arc<BudgetShare>>,
    ) {
        if let Some(leases) = &self.leases {
            if let Some(admitted) = leases.take(tenant, key_id, takes, budget, now) {
                let (spend, share) = admitted.budget.unzip();
                if let (Some(b), Some(d)) = (budget, &spend) {
                    self.local.note_spent(&b.tenant, &b.period, d.spent);
                }
                return (
                    admitted
                        .windows
                        .into_iter()
                        .map(|d| (d, Place::Lease))
                        .collect(),
                    spend.map(|d| (d, Place::Lease)),
                    share,
                );
            }
        }
        if self.store_usable(now) {
            match self.store.admit(takes, MINUTE, budget, now).await {
                Ok((decisions, spend)) => {
                    self.store_ok();
                    if let (Some(b), Some(d)) = (budget, &spend) {
                        self.local.note_spent(&b.tenant, &b.period, d.spent);
                    }
                    let admitted = decisions.iter().all(|d| d.allowed)
                        && spend.as_ref().is_none_or(|d| d.allowed);
                    if let Some(leases) = self.leases.as_ref().filter(|_| admitted) {
                        leases.admitted(tenant, key_id, takes, budget, now);
                    }
                    return (
                        decisions.into_iter().map(|d| (d, Place::Store)).collect(),
                        spend.map(|d| (d, Place::Store)),
                        None,
                    );
                }
                Err(e) => self.store_failed("admission", &e, now),
            }
        }
        let mut decisions = Vec::with_capacity(takes.len());
        for t in takes {
            let d = self
                .local
                .window_take(&t.scope, t.limit, MINUTE, t.amount, now)
                .await;
            decisions.push((d, Place::Local));
        }
        let spend = match budget {
            Some(b) => Some((
                self.local
                    .budget_reserve(&b.tenant, &b.period, b.amount, b.limit, b.enforce)
                    .await,
                Place::Local,
            )),
            None => None,
        };
        (decisions, spend, None)
    }

    /// Checks `caller`'s policies for `body`; reserves what the request may use.
    #[expect(
        clippy::too_many_lines,
        reason = "the checks are one store step and are judged together; one place reads best"
    )]
    pub async fn admit(
        &self,
        caller: &RequestContext,
        body: &ParsedBody,
    ) -> Result<Admission, Refusal> {
        let tenant = &caller.tenant;
        let model = body.api.model();
        let Some(bound) = self.models.get(model) else {
            // Unknown beats not-allowed, and costs no quota.
            return Err(Refusal {
                error: GatewayError::new(
                    ErrorCode::ModelNotFound,
                    format!("the model `{model}` does not exist"),
                )
                .with_param("model"),
                headers: RateHeaders::default(),
            });
        };
        if !caller.allows_model(model) {
            return Err(Refusal {
                error: GatewayError::new(
                    ErrorCode::ModelNotAllowed,
                    format!("this key may not use the model `{model}`"),
                )
                .with_param("model"),
                headers: RateHeaders::default(),
            });
        }
        let budget = tenant.budget;
        let mut admission = Admission::default();
        let (tenant_limits, key_limits) = (tenant.limits, caller.key_limits);
        let any_tpm = tenant_limits.tpm.is_some() || key_limits.tpm.is_some();
        if tenant_limits.is_unlimited() && key_limits.is_unlimited() && budget.is_none() {
            return Ok(admission);
        }
        let now = now_ms();

        // Token bounds: only computed when a token limit or a budget needs them.
        let (prompt, completion_cap) = if any_tpm || budget.is_some() {
            self.tokenizer.prepare(&bound.encoding_model).await;
            let prompt = prompt_tokens(
                &self.tokenizer,
                &bound.encoding_model,
                &body.api,
                body.raw.len(),
            )
            .await;
            let cap = match &body.api {
                ApiRequest::Embeddings(_) => 0,
                ApiRequest::Chat(chat) => chat.max_output_tokens().map_or_else(
                    || {
                        bound
                            .context_window
                            .map_or(DEFAULT_COMPLETION_RESERVE, |w| {
                                u64::from(w).saturating_sub(prompt).max(1)
                            })
                    },
                    u64::from,
                ),
            };
            admission.prompt_estimate = Some(prompt);
            (prompt, cap)
        } else {
            (0, 0)
        };

        let tenant_id = tenant.id.as_str();
        let tokens = prompt.saturating_add(completion_cap);
        let (takes, checks) =
            WindowCheck::all(tenant_id, &caller.key_id, tenant_limits, key_limits, tokens);
        let period = budget.map(|b| match b.period {
            BudgetPeriod::Day => day_of(now),
            BudgetPeriod::Month => day_of(now)[..7].to_owned(),
        });
        let cost_bound = bound
            .price
            .map_or(0, |p| upper_cost(&p, prompt, completion_cap));
        let limit_nano = budget.map_or(0, |b| usd_to_nano(b.limit_usd));

        let reserve = match (budget, period) {
            (Some(b), Some(period)) => Some(BudgetReserve {
                tenant: tenant_id.to_owned(),
                period,
                amount: cost_bound,
                limit: limit_nano,
                enforce: b.mode == PolicyMode::Enforce,
            }),
            _ => None,
        };
        let (decisions, spend, share) = self
            .check((tenant_id, &caller.key_id), &takes, reserve.as_ref(), now)
            .await;

        let mut refusal: Option<GatewayError> = None;
        let mut retry_after_ms = 0;
        for ((take, check), (d, place)) in takes.into_iter().zip(checks).zip(decisions) {
            admission.headers.note(check.unit, take.limit, d.count);
            if d.allowed {
                admission.windows.push(WindowHold {
                    scope: take.scope,
                    unit: check.unit,
                    amount: take.amount,
                    at_ms: now,
                    place,
                });
                continue;
            }
            if check.mode == PolicyMode::DryRun {
                admission.violation(tenant_id, check.unit.policy());
                continue;
            }
            metrics::counter!(names::RATE_LIMITED, "tenant" => tenant_id.to_owned(), "limit" => check.label())
                .increment(1);
            // The first refusing check names the limit; the client waits for the slowest.
            retry_after_ms = retry_after_ms.max(d.retry_after_ms.max(1));
            refusal.get_or_insert_with(|| {
                GatewayError::new(
                    ErrorCode::RateLimitExceeded,
                    format!(
                        "rate limit reached: {} per minute for this {}; retry after the given time",
                        check.unit.noun(),
                        check.level.noun()
                    ),
                )
            });
        }
        refusal = refusal.map(|e| e.with_retry_after(Duration::from_millis(retry_after_ms)));
        if let (Some(b), Some(r), Some((d, place))) = (budget, reserve, &spend) {
            let over = i128::from(d.spent) + i128::from(d.reserved) + i128::from(r.amount)
                > i128::from(r.limit);
            if b.mode == PolicyMode::DryRun && over {
                admission.violation(tenant_id, "budget");
            }
            if d.allowed {
                admission.budget = Some(BudgetHold {
                    tenant: r.tenant,
                    period: r.period,
                    amount: r.amount,
                    place: *place,
                    lease: share,
                });
            }
        }

        // A rate limit is named before the budget; everything reserved so far is given back.
        if refusal.is_none() {
            if let (Some(b), Some((d, _))) = (budget, &spend) {
                if !d.allowed && b.mode == PolicyMode::Enforce {
                    metrics::counter!(names::BUDGET_REJECTIONS, "tenant" => tenant_id.to_owned())
                        .increment(1);
                    refusal = Some(GatewayError::new(
                        ErrorCode::BudgetExceeded,
                        format!(
                            "the tenant's {} budget of ${} is spent",
                            match b.period {
                                BudgetPeriod::Day => "daily",
                                BudgetPeriod::Month => "monthly",
                            },
                            b.limit_usd
                        ),
                    ));
                }
            }
        }
        match refusal {
            None => Ok(admission),
            Some(error) => {
                let headers = admission.headers;
                // Nothing was used: release the reservations now.
                let settlement = self.settle_as(admission, None, 0).await;
                self.settle_in_store(&settlement, tenant_id, 0).await;
                Err(Refusal { error, headers })
            }
        }
    }

    /// Turns an admission into the settlement its outcome carries: local reservations are
    /// settled here and now; store reservations go into the returned [`Settlement`], written
    /// atomically with the audit record.
    pub async fn settle(&self, admission: Admission, tokens: u64, cost_nano: i64) -> Settlement {
        self.settle_as(admission, Some(tokens), cost_nano).await
    }

    /// [`Self::settle`] to `tokens` really used, or, with `None`, a release of everything the
    /// request took (it was refused, so it used nothing and counts against no window).
    async fn settle_as(
        &self,
        admission: Admission,
        tokens: Option<u64>,
        cost_nano: i64,
    ) -> Settlement {
        let mut settlement = Settlement::default();
        for hold in admission.windows {
            let taken = i64::try_from(hold.amount).unwrap_or(i64::MAX);
            let delta = match (tokens, hold.unit) {
                (None, _) => -taken,
                (Some(used), Unit::Tokens) => i64::try_from(used).unwrap_or(i64::MAX) - taken,
                // An admitted request keeps its place in the request window.
                (Some(_), Unit::Requests) => continue,
            };
            if delta == 0 {
                continue;
            }
            match hold.place {
                Place::Local => {
                    self.local
                        .window_adjust(&hold.scope, MINUTE, delta, hold.at_ms)
                        .await;
                }
                Place::Store | Place::Lease => settlement.windows.push(WindowSettle {
                    scope: hold.scope,
                    window_ms: 60_000,
                    delta,
                    taken_at_ms: hold.at_ms,
                }),
            }
        }
        if let Some(hold) = admission.budget {
            match hold.place {
                Place::Local => {
                    self.local
                        .budget_settle(&hold.tenant, &hold.period, hold.amount, cost_nano)
                        .await;
                }
                Place::Store => settlement.budget = Some((hold.period, hold.amount)),
                // The cost is settled; the reservation is the lease's, given back once the
                // lease and every request it admitted are done with it.
                Place::Lease => {
                    settlement.budget = Some((hold.period, 0));
                    settlement.keep = hold.lease.map(|share| KeepAlive(share));
                }
            }
        }
        settlement
    }

    /// Applies a settlement directly (for requests that leave no audit record, e.g. refusals).
    async fn settle_in_store(&self, settlement: &Settlement, tenant: &str, cost_nano: i64) {
        if let Some((period, reserved)) = &settlement.budget {
            if let Err(e) = self
                .store
                .budget_settle(tenant, period, *reserved, cost_nano)
                .await
            {
                metrics::counter!(names::STORE_ERRORS, "op" => "budget").increment(1);
                tracing::warn!(error = %e, "releasing a budget reservation failed");
            }
        }
        for w in &settlement.windows {
            if let Err(e) = self
                .store
                .window_adjust(&w.scope, MINUTE, w.delta, w.taken_at_ms)
                .await
            {
                metrics::counter!(names::STORE_ERRORS, "op" => "limits").increment(1);
                tracing::warn!(error = %e, "releasing a token reservation failed");
            }
        }
    }
}

impl Admission {
    /// Whether anything was reserved (and must be settled).
    pub fn holds(&self) -> bool {
        self.windows.iter().any(|w| w.unit == Unit::Tokens) || self.budget.is_some()
    }

    fn violation(&mut self, tenant: &str, policy: &'static str) {
        metrics::counter!(names::POLICY_VIOLATIONS, "tenant" => tenant.to_owned(), "policy" => policy, "mode" => "dry_run")
            .increment(1);
        self.violations.push(Violation {
            policy: policy.to_owned(),
            mode: "dry_run".to_owned(),
        });
    }
}

/// Nano-USD of a budget limit (rounded to the nano).
#[expect(
    clippy::cast_possible_truncation,
    reason = "limits are far below i64::MAX nano-USD; the value is rounded and clamped"
)]
pub fn usd_to_nano(usd: f64) -> i64 {
    (usd * 1e9).round().clamp(0.0, 9.0e18) as i64
}

/// The most `prompt` + `completion` tokens can cost at `price`: every prompt token uncached
/// (or cache-written, if dearer), every completion token at the dearer of output and
/// reasoning.
fn upper_cost(price: &Price, prompt: u64, completion: u64) -> i64 {
    let input = u128::from(price.input.max(price.cache_write));
    let output = u128::from(price.output.max(price.reasoning));
    let pico = u128::from(prompt) * input + u128::from(completion) * output;
    // Round up: a bound must not be below the real cost.
    i64::try_from(pico.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// Tiktoken's count of the prompt `api` sends; `body_bytes` is the size of the body it was
/// parsed from. A large one is counted off the serving lane ([`crate::offload`]): tiktoken
/// took about 27 µs per KB here.
async fn prompt_tokens(
    tokenizer: &Arc<Tokenizer>,
    encoding_model: &str,
    api: &ApiRequest,
    body_bytes: usize,
) -> u64 {
    let Some(permit) = offload::permit_for(body_bytes) else {
        return count_prompt(tokenizer, encoding_model, api);
    };
    let (counter, model, request) = (
        Arc::clone(tokenizer),
        encoding_model.to_owned(),
        api.clone(),
    );
    offload::run(permit, move || count_prompt(&counter, &model, &request))
        .await
        // Only a job dropped by a runtime that is shutting down gets here.
        .unwrap_or_else(|| count_prompt(tokenizer, encoding_model, api))
}

fn count_prompt(tokenizer: &Tokenizer, encoding_model: &str, api: &ApiRequest) -> u64 {
    match api {
        ApiRequest::Chat(chat) => tokenizer.count_chat_prompt(encoding_model, chat),
        ApiRequest::Embeddings(e) => e
            .input_texts()
            .iter()
            .map(|t| tokenizer.count_text(encoding_model, t))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn chat(text: &str) -> ApiRequest {
        let request = serde_json::json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": text}],
        });
        ApiRequest::Chat(Box::new(serde_json::from_value(request).unwrap()))
    }

    /// Counts `api` on a current-thread runtime beside a task that ticks whenever it gets
    /// the thread; returns the count and the ticks made before the count was done. A count
    /// done in place finishes in its first poll, so the ticker never runs.
    async fn count_beside_ticker(
        tokenizer: &Arc<Tokenizer>,
        api: &ApiRequest,
        bytes: usize,
    ) -> (u64, u64) {
        let done = AtomicBool::new(false);
        let ticks = AtomicU64::new(0);
        let count = async {
            let tokens = prompt_tokens(tokenizer, "gpt-4o", api, bytes).await;
            done.store(true, Ordering::Relaxed);
            tokens
        };
        let ticker = async {
            while !done.load(Ordering::Relaxed) {
                ticks.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        };
        let (tokens, ()) = tokio::join!(count, ticker);
        (tokens, ticks.load(Ordering::Relaxed))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_large_prompt_is_counted_off_the_serving_thread() {
        let tokenizer = Arc::new(Tokenizer::new(Vec::new()));
        tokenizer.prepare("gpt-4o").await;
        let text = "many words of a long retrieved document, ".repeat(15_000);
        let api = chat(&text);
        let in_place = count_prompt(&tokenizer, "gpt-4o", &api);

        let (tokens, ticks) = count_beside_ticker(&tokenizer, &api, text.len()).await;
        assert_eq!(tokens, in_place);
        assert!(in_place > 100_000, "{in_place}");
        // Counting ~600 KB takes milliseconds; the lane ran its other work meanwhile.
        assert!(
            ticks > 100,
            "the lane was held while counting: {ticks} ticks"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_small_prompt_is_counted_in_place() {
        let tokenizer = Arc::new(Tokenizer::new(Vec::new()));
        tokenizer.prepare("gpt-4o").await;
        let api = chat("Say hello.");
        let (tokens, ticks) = count_beside_ticker(&tokenizer, &api, 64).await;
        assert_eq!(tokens, count_prompt(&tokenizer, "gpt-4o", &api));
        assert_eq!(ticks, 0, "a small count should not hand off");
    }
}
