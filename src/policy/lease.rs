//! Admission leases: a serving lane that admits many requests of one caller (tenant and key)
//! takes a slice of the caller's windows and budget from the shared store in one step, then
//! admits from that slice in memory, without a store round trip per request.
//!
//! Limits stay exact in the direction that costs money: every request a lease admits was
//! counted in the store before it was let in, so no replica or lane admits past a `rpm` or
//! `tpm` limit. What a lease changes is how early callers can be refused: its unused part
//! still counts in the store. Three rules keep that small:
//! - a lease is granted only while the window or budget, lease included, stays within half of
//!   its limit ([`HEADROOM`]), so near a limit every request is checked by the store alone;
//! - a lease is at most 1/[`LEASE_SHARE`] of any limit it draws on, so limits too small to
//!   share out (under 1,024 requests or 4 requests' worth) are never leased;
//! - a lease lasts [`LEASE_FOR`] (and never past its window's bucket); what it did not use is
//!   given back when it ends, within a sweep ([`LEASE_FOR`] / 2) of its end.
//!
//! So callers of a tenant are refused early only when the tenant goes from half a limit to the
//! limit within about one lease's life, by at most the unused leases of that moment.
//!
//! **The budget** is held by the lease as a whole: requests admitted from a lease settle their
//! cost but release nothing (their reservation is the lease's), and the lease's reservation is
//! given back whole once the lease has ended and the outcome of every request it admitted has
//! been written ([`BudgetShare`], kept alive by each request's settlement, and by the audit
//! writer while the outcome waits in the spill file). So a leased request is reserved for until
//! its cost is recorded, as any other. And the store can end a lease by
//! itself: each part of a lease is registered in the store, and a budget part never given back
//! (its replica died, its give-back was lost) is released by the next admission that reads
//! the budget after [`REAP_AFTER`]. A request still running then (a stream longer than that)
//! is no longer reserved for: the budget can overshoot by such requests, the bound SPEC gives.
//!
//! **Give-backs are applied at most once** ([`crate::store::CounterStore::lease_end`]), so one
//! that failed, even one that timed out and then ran late, is simply sent again. Windows of a
//! lease never given back are not corrected: their buckets expire within the window.
//!
//! A lease is sized to the lane's recent demand for the caller: twice the requests of the
//! last [`LEASE_FOR`], times the tokens and cost bound of the request that asked. A request a
//! lease cannot cover (a larger prompt, a used-up lease) goes to the store as before. The
//! next lease is asked for in the background when half of one is used or half its life is
//! gone, so a steady caller is rarely without one; a refused ask backs off exponentially.
//! Only the shared store leases; the embedded store is in-process and gains nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;

use super::MINUTE;
use crate::audit::record::now_ms;
use crate::lanes::PerLane;
use crate::store::{
    BudgetDecision, BudgetReserve, LeaseEnd, LeasePart, LeaseTake, Store, WindowDecision,
    WindowTake,
};
use crate::telemetry::names;

/// How long a lease lasts.
pub const LEASE_FOR: Duration = Duration::from_millis(250);
/// How long after it is taken the store releases the budget of a lease never given back:
/// longer than requests run, so it only ever releases what a dead replica left.
pub const REAP_AFTER: Duration = Duration::from_secs(15 * 60);
/// A lease is at most this fraction (1/n) of any limit it draws on.
const LEASE_SHARE: u64 = 256;
/// A lease is granted only while its window or budget stays within limit / `HEADROOM`.
const HEADROOM: u64 = 2;
/// Requests per [`LEASE_FOR`] on one lane before a caller is given leases.
const DEMAND: u64 = 8;
/// Fewest and most requests a lease is sized for.
const FEWEST: u64 = 4;
const MOST: u64 = 4096;
/// The longest wait before asking again after refused asks (doubling from [`LEASE_FOR`]).
const LONGEST_BACKOFF_MS: u64 = 60_000;

fn lease_ms() -> u64 {
    u64::try_from(LEASE_FOR.as_millis()).unwrap_or(250)
}

fn window_ms() -> u64 {
    u64::try_from(MINUTE.as_millis()).unwrap_or(60_000)
}

/// Every lane's leases, and the store they come from.
pub struct Leases {
    store: Arc<dyn Store>,
    books: PerLane<Mutex<Book>>,
    /// Asks and give-backs in flight, so shutdown can wait for them.
    inflight: TaskTracker,
    /// Set at shutdown: no more asks, and a lease granted after it is given back at once.
    closed: AtomicBool,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

/// One lane's callers, by tenant then key id (two levels, so a lookup borrows both).
#[derive(Debug, Default)]
struct Book {
    callers: HashMap<String, HashMap<String, Caller>>,
    /// Give-backs the store has not taken yet, retried by [`Leases::sweep`].
    owed: Vec<LeaseEnd>,
}

/// One caller on one lane.
#[derive(Debug, Default)]
struct Caller {
    lease: Option<Lease>,
    asking: bool,
    /// No lease is asked for before this (after refused asks).
    quiet_until_ms: u64,
    refusals: u32,
    period_start_ms: u64,
    seen: u64,
    seen_before: u64,
}

impl Caller {
    /// Counts a request in the current period of [`LEASE_FOR`].
    fn observe(&mut self, now: u64) {
        let period = lease_ms();
        if now >= self.period_start_ms.saturating_add(period) {
            let consecutive = now < self.period_start_ms.saturating_add(2 * period);
            self.seen_before = if consecutive { self.seen } else { 0 };
            self.seen = 0;
            self.period_start_ms = now;
        }
        self.seen += 1;
    }

    fn demand(&self) -> u64 {
        self.seen.max(self.seen_before)
    }

    /// Whether a lease may be asked for now.
    fn may_ask(&self, now: u64) -> bool {
        !self.asking && now >= self.quiet_until_ms
    }

    /// The lease to ask for now, sized for this caller's demand and a request taking `takes`
    /// and `budget`, marked as being asked for; `None` when none may be asked for.
    fn start_ask(
        &mut self,
        now: u64,
        takes: &[WindowTake],
        budget: Option<&BudgetReserve>,
    ) -> Option<Ask> {
        if !self.may_ask(now) {
            return None;
        }
        let ask = plan(self.demand(), takes, budget)?;
        self.asking = true;
        Some(ask)
    }

    /// After a refused ask: wait before the next, twice as long as after the last refusal.
    fn refused(&mut self, now: u64) {
        let wait = lease_ms()
            .saturating_mul(1 << self.refusals.min(16))
            .min(LONGEST_BACKOFF_MS);
        self.refusals = self.refusals.saturating_add(1);
        self.quiet_until_ms = now.saturating_add(wait);
    }
}

/// Admission capacity taken from the store for one caller, used up in memory.
#[derive(Debug)]
struct Lease {
    tenant: String,
    id: String,
    windows: Vec<LeasedWindow>,
    budget: Option<LeasedBudget>,
    at_ms: u64,
    until_ms: u64,
}

#[derive(Debug)]
struct LeasedWindow {
    scope: String,
    limit: u64,
    granted: u64,
    used: u64,
    /// The window's count once the lease was added.
    count: u64,
}

#[derive(Debug)]
struct LeasedBudget {
    /// Shared with every request admitted from the lease; the reservation is given back when
    /// the last of them lets go.
    share: Arc<BudgetShare>,
    period: String,
    limit: i64,
    granted: i64,
    used: i64,
    spent: i64,
    /// The period's reservations once the lease was added.
    reserved: i64,
}

/// A lease's budget reservation, held by the lease and by the settlement of every request
/// it admitted: dropping the last holder gives it back to the store. Sent at most once.
pub struct BudgetShare {
    leases: Weak<Leases>,
    end: LeaseEnd,
    sent: AtomicBool,
}

impl std::fmt::Debug for BudgetShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetShare")
            .field("lease", &self.end.id)
            .finish_non_exhaustive()
    }
}

impl BudgetShare {
    /// The give-back, unless it was taken already.
    fn take_end(&self) -> Option<LeaseEnd> {
        (!self.sent.swap(true, Ordering::SeqCst)).then(|| self.end.clone())
    }
}

impl crate::store::Held for BudgetShare {
    fn leave_to_store(&self) {
        self.sent.store(true, Ordering::SeqCst);
    }
}

impl Drop for BudgetShare {
    fn drop(&mut self) {
        let Some(end) = self.take_end() else {
            return;
        };
        // Outside a runtime (the process is ending) nothing can be sent: the store reaps it.
        if let (Some(leases), Ok(_)) =
            (self.leases.upgrade(), tokio::runtime::Handle::try_current())
        {
            leases.give_back(end);
        }
    }
}

/// The lease a lane asks the store for: each window's amount and the budget's, against their
/// real limits (halved when asked).
#[derive(Debug, Clone, PartialEq)]
struct Ask {
    windows: Vec<WindowTake>,
    budget: Option<BudgetReserve>,
}

impl Lease {
    fn matches(&self, takes: &[WindowTake], budget: Option<&BudgetReserve>) -> bool {
        self.windows.len() == takes.len()
            && self
                .windows
                .iter()
                .zip(takes)
                .all(|(w, t)| w.scope == t.scope && w.limit == t.limit)
            && match (&self.budget, budget) {
                (None, None) => true,
                (Some(l), Some(b)) => {
                    self.tenant == b.tenant && l.period == b.period && l.limit == b.limit
                }
                _ => false,
            }
    }

    fn covers(&self, takes: &[WindowTake], budget: Option<&BudgetReserve>) -> bool {
        self.windows
            .iter()
            .zip(takes)
            .all(|(w, t)| w.granted.saturating_sub(w.used) >= t.amount)
            && match (&self.budget, budget) {
                (Some(l), Some(b)) => l.granted.saturating_sub(l.used) >= b.amount,
                _ => true,
            }
    }

    /// Takes a request's amounts; the decisions report the counts as if the unused part of
    /// the lease were not taken.
    fn take(&mut self, takes: &[WindowTake], budget: Option<&BudgetReserve>) -> Admitted {
        let windows = self
            .windows
            .iter_mut()
            .zip(takes)
            .map(|(w, t)| {
                w.used = w.used.saturating_add(t.amount);
                WindowDecision {
                    allowed: true,
                    count: w.count.saturating_sub(w.granted.saturating_sub(w.used)),
                    retry_after_ms: 0,
                }
            })
            .collect();
        let spend = match (&mut self.budget, budget) {
            (Some(l), Some(b)) => {
                // Reported as the store reports a reservation: before this request's.
                let before = l.reserved.saturating_sub(l.granted.saturating_sub(l.used));
                l.used = l.used.saturating_add(b.amount);
                Some((
                    BudgetDecision {
                        allowed: true,
                        spent: l.spent,
                        reserved: before,
                    },
                    Arc::clone(&l.share),
                ))
            }
            _ => None,
        };
        Admitted {
            windows,
            budget: spend,
        }
    }

    /// Whether a new lease should be asked for now: half of one is used, or half its life.
    fn wearing(&self, now: u64) -> bool {
        let half_used = self
            .windows
            .iter()
            .any(|w| w.granted > 0 && w.used.saturating_mul(2) >= w.granted)
            || self
                .budget
                .as_ref()
                .is_some_and(|b| b.used.saturating_mul(2) >= b.granted);
        half_used || now >= self.at_ms.saturating_add(lease_ms() / 2)
    }

    /// Whether a request at `now` may take from this lease: before its end, and in the window
    /// bucket it took from (a request's own settlement goes to the bucket of its `now`).
    fn serves(&self, now: u64) -> bool {
        now < self.until_ms && now / window_ms() == self.at_ms / window_ms()
    }

    /// Leaves out of its figures what `old`, which it replaces, had not used: that is given
    /// back now, so the counts in the `x-ratelimit-*` headers should not include it.
    fn replacing(&mut self, old: &Lease) {
        for w in &mut self.windows {
            if let Some(o) = old.windows.iter().find(|o| o.scope == w.scope) {
                if old.at_ms / window_ms() == self.at_ms / window_ms() {
                    w.count = w.count.saturating_sub(o.granted.saturating_sub(o.used));
                }
            }
        }
        // The old budget part stays reserved until its requests are written.
    }

    /// Ends the lease: the windows' unused amounts go back now (`None` without windows); its
    /// budget share is let go, and goes back once no request holds it either.
    fn end(self) -> Option<LeaseEnd> {
        (!self.windows.is_empty()).then(|| LeaseEnd {
            part: LeasePart::Windows {
                unused: self
                    .windows
                    .into_iter()
                    .map(|w| {
                        let unused = w.granted.saturating_sub(w.used);
                        (w.scope, unused)
                    })
                    .collect(),
                at_ms: self.at_ms,
            },
            tenant: self.tenant,
            id: self.id,
        })
    }

    /// Ends the lease at shutdown: also its budget part, when no request holds it any more
    /// (else the last one gives it back, or the store reaps it).
    fn end_all(self) -> Vec<LeaseEnd> {
        let budget = self
            .budget
            .as_ref()
            .filter(|b| Arc::strong_count(&b.share) == 1)
            .and_then(|b| b.share.take_end());
        self.end().into_iter().chain(budget).collect()
    }
}

/// A request admitted from a lease: its window decisions, and its budget decision with the
/// lease's budget share, which its settlement keeps until its outcome is written.
#[derive(Debug)]
pub struct Admitted {
    pub windows: Vec<WindowDecision>,
    pub budget: Option<(BudgetDecision, Arc<BudgetShare>)>,
}

/// The lease to ask for, for a caller seeing `demand` requests per period whose request
/// takes `takes` and reserves `budget`; `None` when its limits are too small to lease, or its
/// budget reservation is 0 (an unpriced model: such a request is checked against a spent
/// budget by the store alone).
fn plan(demand: u64, takes: &[WindowTake], budget: Option<&BudgetReserve>) -> Option<Ask> {
    if budget.is_some_and(|b| b.amount <= 0) {
        return None;
    }
    let mut n = demand.saturating_mul(2).clamp(FEWEST, MOST);
    for t in takes.iter().filter(|t| t.amount > 0) {
        n = n.min(t.limit / LEASE_SHARE / t.amount);
    }
    if let Some(b) = budget.filter(|b| b.amount > 0) {
        let share = b.limit.max(0) / i64::try_from(LEASE_SHARE).unwrap_or(i64::MAX) / b.amount;
        n = n.min(u64::try_from(share).unwrap_or(0));
    }
    if n < FEWEST {
        return None;
    }
    Some(Ask {
        windows: takes
            .iter()
            .map(|t| WindowTake {
                scope: t.scope.clone(),
                limit: t.limit,
                amount: t.amount.saturating_mul(n),
            })
            .collect(),
        budget: budget.map(|b| BudgetReserve {
            amount: b.amount.saturating_mul(i64::try_from(n).unwrap_or(0)),
            enforce: true,
            ..b.clone()
        }),
    })
}

impl Leases {
    pub fn new(store: Arc<dyn Store>, lanes: usize) -> Self {
        Self {
            store,
            books: PerLane::filled(lanes, || Mutex::new(Book::default())),
            inflight: TaskTracker::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Admits a request of `tenant`'s key `key_id` from the calling lane's lease, when one
    /// covers every take and the reservation; `None` sends it to the store. Counts the
    /// request towards the caller's demand either way, and asks for the next lease when this
    /// one is wearing out.
    pub fn take(
        self: &Arc<Self>,
        tenant: &str,
        key_id: &str,
        takes: &[WindowTake],
        budget: Option<&BudgetReserve>,
        now: u64,
    ) -> Option<Admitted> {
        // Only this lane takes its book, but for the sweep and shutdown: a busy book means
        // the store decides, never a wait.
        let mut book = self.books.get().try_lock().ok()?;
        let caller = book.caller(tenant, key_id)?;
        caller.observe(now);
        let lease = caller.lease.take()?;
        if now >= lease.until_ms || !lease.matches(takes, budget) {
            drop(book);
            if let Some(end) = lease.end() {
                self.give_back(end);
            }
            return None;
        }
        let lease = caller.lease.insert(lease);
        if !lease.serves(now) || !lease.covers(takes, budget) {
            return None;
        }
        let decisions = lease.take(takes, budget);
        let next = (lease.wearing(now) && !self.closed())
            .then(|| caller.start_ask(now, takes, budget))
            .flatten();
        drop(book);
        if let Some(ask) = next {
            self.ask(tenant, key_id, ask);
        }
        Some(decisions)
    }

    /// After the store admitted a request the lane had no lease for: asks for one when the
    /// caller's demand on this lane is high enough.
    pub fn admitted(
        self: &Arc<Self>,
        tenant: &str,
        key_id: &str,
        takes: &[WindowTake],
        budget: Option<&BudgetReserve>,
        now: u64,
    ) {
        if self.closed() {
            return;
        }
        let Ok(mut book) = self.books.get().try_lock() else {
            return;
        };
        let Some(caller) = book.caller(tenant, key_id) else {
            return;
        };
        if caller.lease.is_some() || caller.demand() < DEMAND {
            return;
        }
        let next = caller.start_ask(now, takes, budget);
        drop(book);
        if let Some(ask) = next {
            self.ask(tenant, key_id, ask);
        }
    }

    /// Ends the calling lane's expired leases and gives back what they did not use, with
    /// anything the store did not take earlier. Run by each lane every half lease.
    pub async fn sweep(&self) {
        if self.closed() {
            return;
        }
        let now = now_ms();
        let mut back = {
            let mut book = self.books.get().lock().await;
            let mut back = std::mem::take(&mut book.owed);
            for keys in book.callers.values_mut() {
                for caller in keys.values_mut() {
                    if caller.lease.as_ref().is_some_and(|l| now >= l.until_ms) {
                        back.extend(caller.lease.take().and_then(Lease::end));
                    }
                }
                // Callers gone quiet for a while are forgotten, so the book stays small.
                keys.retain(|_, c| {
                    c.lease.is_some()
                        || c.asking
                        || now < c.quiet_until_ms
                        || now < c.period_start_ms + 4 * lease_ms()
                });
            }
            book.callers.retain(|_, keys| !keys.is_empty());
            back
        };
        // Give-backs that failed off the lanes (a request's last share dropped on the main
        // runtime) wait in the shared book: the lanes retry them too.
        back.append(&mut self.books.shared().lock().await.owed);
        let owed = self.return_to_store(back).await;
        self.owe(owed).await;
    }

    /// At shutdown, once the lanes stopped serving: no more asks, and every lease of every
    /// lane ended: its windows' unused part given back, its budget part too when no request
    /// holds it (else the last outcome written gives it back; [`Leases::finish`] waits for
    /// that).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.inflight.close();
        self.inflight.wait().await;
        // Give-backs set off by the outcomes still to be written are tracked for `finish`.
        self.inflight.reopen();
        let mut back = Vec::new();
        for book in self.books.all() {
            let mut book = book.lock().await;
            back.append(&mut book.owed);
            for keys in book.callers.values_mut() {
                for caller in keys.values_mut() {
                    back.extend(caller.lease.take().map(Lease::end_all).unwrap_or_default());
                }
            }
        }
        let owed = self.return_to_store(back).await;
        self.owe(owed).await;
    }

    /// Asks the store for `ask` in the background, on the calling lane.
    fn ask(self: &Arc<Self>, tenant: &str, key_id: &str, ask: Ask) {
        let leases = Arc::clone(self);
        let (tenant, key_id) = (tenant.to_owned(), key_id.to_owned());
        self.inflight.spawn(async move {
            let asked = leases.request(&tenant, &ask).await;
            let now = now_ms();
            let mut back = Vec::new();
            let (failed, granted) = match asked {
                Ok(granted) => (false, granted),
                Err(maybe_taken) => {
                    // The store may have taken the lease and lost only its answer: give back
                    // both parts whole. A part it never registered is a no-op, so this is
                    // right either way, and no lease waits for the store's reap.
                    back.extend(maybe_taken);
                    (true, None)
                }
            };
            {
                let mut book = leases.books.get().lock().await;
                let closed = leases.closed();
                match (book.caller(&tenant, &key_id), granted) {
                    (Some(caller), Some(mut lease)) if !closed => {
                        caller.asking = false;
                        caller.refusals = 0;
                        if let Some(old) = caller.lease.take() {
                            lease.replacing(&old);
                            back.extend(old.end());
                        }
                        caller.lease = Some(lease);
                    }
                    (caller, granted) => {
                        if let Some(caller) = caller {
                            caller.asking = false;
                            if failed {
                                // The store failing is not a refusal: ask again after one
                                // lease's time, not longer and longer through an outage.
                                caller.quiet_until_ms = now.saturating_add(lease_ms());
                            } else if granted.is_none() {
                                caller.refused(now);
                            }
                        }
                        back.extend(granted.map(Lease::end_all).unwrap_or_default());
                    }
                }
            }
            let owed = leases.return_to_store(back).await;
            leases.owe(owed).await;
        });
    }

    /// One atomic step for the whole lease, against half of every limit: all of it, or none
    /// (`Ok(None)`). A step that fails (the store is down, or did not answer in time and may
    /// still have run it) returns the give-backs of the whole lease, in case it was taken.
    async fn request(
        self: &Arc<Self>,
        tenant: &str,
        ask: &Ask,
    ) -> Result<Option<Lease>, Vec<LeaseEnd>> {
        let at_ms = now_ms();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let take = LeaseTake {
            tenant: tenant.to_owned(),
            id: id.clone(),
            takes: ask
                .windows
                .iter()
                .map(|t| WindowTake {
                    limit: t.limit / HEADROOM,
                    ..t.clone()
                })
                .collect(),
            budget: ask.budget.as_ref().map(|b| BudgetReserve {
                limit: b.limit / i64::try_from(HEADROOM).unwrap_or(2),
                ..b.clone()
            }),
            now_ms: at_ms,
            reap_after: REAP_AFTER,
        };
        let grant = match self.store.lease_take(&take, MINUTE).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return Ok(None),
            Err(err) => {
                metrics::counter!(names::STORE_ERRORS, "op" => "lease").increment(1);
                tracing::debug!(error = %err, "asking for an admission lease failed");
                let windows = (!ask.windows.is_empty()).then(|| LeaseEnd {
                    tenant: tenant.to_owned(),
                    id: id.clone(),
                    part: LeasePart::Windows {
                        unused: ask
                            .windows
                            .iter()
                            .map(|t| (t.scope.clone(), t.amount))
                            .collect(),
                        at_ms,
                    },
                });
                let budget = ask.budget.as_ref().map(|b| LeaseEnd {
                    tenant: tenant.to_owned(),
                    id: id.clone(),
                    part: LeasePart::Budget {
                        period: b.period.clone(),
                        amount: b.amount,
                    },
                });
                return Err(windows.into_iter().chain(budget).collect());
            }
        };
        let bucket_end = (at_ms / window_ms() + 1) * window_ms();
        Ok(Some(Lease {
            tenant: tenant.to_owned(),
            id: id.clone(),
            windows: ask
                .windows
                .iter()
                .zip(grant.counts)
                .map(|(t, count)| LeasedWindow {
                    scope: t.scope.clone(),
                    limit: t.limit,
                    granted: t.amount,
                    used: 0,
                    count,
                })
                .collect(),
            budget: ask
                .budget
                .as_ref()
                .zip(grant.budget)
                .map(|(b, (spent, reserved))| LeasedBudget {
                    share: Arc::new(BudgetShare {
                        leases: Arc::downgrade(self),
                        end: LeaseEnd {
                            tenant: tenant.to_owned(),
                            id: id.clone(),
                            part: LeasePart::Budget {
                                period: b.period.clone(),
                                amount: b.amount,
                            },
                        },
                        sent: AtomicBool::new(false),
                    }),
                    period: b.period.clone(),
                    limit: b.limit,
                    granted: b.amount,
                    used: 0,
                    spent,
                    reserved: reserved.saturating_add(b.amount),
                }),
            at_ms,
            until_ms: at_ms.saturating_add(lease_ms()).min(bucket_end),
        }))
    }

    /// Gives `end` back to the store in the background.
    fn give_back(self: &Arc<Self>, end: LeaseEnd) {
        let leases = Arc::clone(self);
        self.inflight.spawn(async move {
            let owed = leases.return_to_store(vec![end]).await;
            leases.owe(owed).await;
        });
    }

    /// Sends each give-back; returns those the store did not take.
    async fn return_to_store(&self, back: Vec<LeaseEnd>) -> Vec<LeaseEnd> {
        let mut owed = Vec::new();
        for end in back {
            if let Err(err) = self.store.lease_end(&end, MINUTE).await {
                metrics::counter!(names::STORE_ERRORS, "op" => "lease").increment(1);
                tracing::debug!(error = %err, "giving back an admission lease failed; retried");
                owed.push(end);
            }
        }
        owed
    }

    /// Keeps give-backs the store did not take for the next sweep (or, at shutdown, for
    /// [`Leases::finish`]).
    async fn owe(&self, owed: Vec<LeaseEnd>) {
        if !owed.is_empty() {
            self.books.get().lock().await.owed.extend(owed);
        }
    }

    /// The last step of shutdown, once the audit writers are done: waits for the give-backs
    /// their last writes set off, and tries once more what the store did not take. Whatever
    /// is left is logged: its windows count until they expire, and the store releases its
    /// budget after [`REAP_AFTER`].
    pub async fn finish(&self) {
        self.inflight.close();
        self.inflight.wait().await;
        let mut back = Vec::new();
        for book in self.books.all() {
            back.append(&mut book.lock().await.owed);
        }
        let left = self.return_to_store(back).await;
        if !left.is_empty() {
            tracing::warn!(
                leases = left.len(),
                reap_after_s = REAP_AFTER.as_secs(),
                "the store did not take back unused admission leases at shutdown; their windows count until they expire and the store releases their budget by itself"
            );
        }
    }
}

impl Book {
    /// `tenant`'s key `key_id`, added when new.
    fn caller(&mut self, tenant: &str, key_id: &str) -> Option<&mut Caller> {
        if !self.callers.contains_key(tenant) {
            self.callers.insert(tenant.to_owned(), HashMap::new());
        }
        let keys = self.callers.get_mut(tenant)?;
        if !keys.contains_key(key_id) {
            keys.insert(key_id.to_owned(), Caller::default());
        }
        keys.get_mut(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(scope: &str, limit: u64, amount: u64) -> WindowTake {
        WindowTake {
            scope: scope.into(),
            limit,
            amount,
        }
    }

    fn reserve(limit: i64, amount: i64) -> BudgetReserve {
        BudgetReserve {
            tenant: "t".into(),
            period: "2026-12".into(),
            amount,
            limit,
            enforce: true,
        }
    }

    fn lease(takes: &[WindowTake], budget: Option<&BudgetReserve>, n: u64) -> Lease {
        Lease {
            tenant: "t".into(),
            id: "l1".into(),
            windows: takes
                .iter()
                .map(|t| LeasedWindow {
                    scope: t.scope.clone(),
                    limit: t.limit,
                    granted: t.amount * n,
                    used: 0,
                    count: 100 + t.amount * n,
                })
                .collect(),
            budget: budget.map(|b| LeasedBudget {
                share: Arc::new(BudgetShare {
                    leases: Weak::new(),
                    end: LeaseEnd {
                        tenant: "t".into(),
                        id: "l1".into(),
                        part: LeasePart::Budget {
                            period: b.period.clone(),
                            amount: b.amount * i64::try_from(n).unwrap(),
                        },
                    },
                    sent: AtomicBool::new(false),
                }),
                period: b.period.clone(),
                limit: b.limit,
                granted: b.amount * i64::try_from(n).unwrap(),
                used: 0,
                spent: 7,
                reserved: 1000 + b.amount * i64::try_from(n).unwrap(),
            }),
            at_ms: 1_000,
            until_ms: 1_000 + lease_ms(),
        }
    }

    #[test]
    fn a_lease_is_twice_the_demand_within_a_share_of_every_limit() {
        let takes = [take("t:rpm", 1_000_000, 1), take("t:tpm", 100_000_000, 500)];
        let budget = reserve(1_000_000_000_000, 2_000);
        let ask = plan(100, &takes, Some(&budget)).unwrap();
        assert_eq!(ask.windows[0].amount, 200);
        assert_eq!(ask.windows[1].amount, 200 * 500);
        assert_eq!(ask.budget.as_ref().unwrap().amount, 200 * 2_000);
        assert!(
            ask.budget.unwrap().enforce,
            "a lease never overdraws a budget"
        );

        // The tpm window allows 100_000_000 / 256 / 500 = 781 requests per lease.
        assert_eq!(plan(10_000, &takes, None).unwrap().windows[0].amount, 781);
        // rpm 1,000 allows 3 per lease: below the fewest worth leasing.
        assert_eq!(plan(100, &[take("t:rpm", 1_000, 1)], None), None);
        // A budget of $1 with a $0.01 bound allows 0.
        assert_eq!(
            plan(100, &[], Some(&reserve(1_000_000_000, 10_000_000))),
            None
        );
    }

    #[test]
    fn a_lease_admits_until_used_up_and_gives_back_what_is_left() {
        let takes = [take("t:rpm", 1_000_000, 1), take("t:tpm", 100_000_000, 500)];
        let budget = reserve(1_000_000_000_000, 2_000);
        let mut l = lease(&takes, Some(&budget), 4);
        assert!(l.matches(&takes, Some(&budget)));
        assert!(!l.matches(&takes[..1], Some(&budget)));
        assert!(!l.matches(&takes, None));
        let mut other_limit = takes.clone();
        other_limit[0].limit = 5;
        assert!(!l.matches(&other_limit, Some(&budget)));

        let admitted = l.take(&takes, Some(&budget));
        // The counts leave out the lease's unused part: 100 before, plus this request.
        assert_eq!(admitted.windows[0].count, 101);
        assert_eq!(admitted.windows[1].count, 600);
        let (spend, share) = admitted.budget.unwrap();
        assert_eq!((spend.spent, spend.reserved), (7, 1000));
        // The request holds the lease's budget share until its outcome is written.
        assert_eq!(Arc::strong_count(&share), 2);
        drop(share);
        assert!(!l.wearing(1_000), "a quarter used, no time gone");
        l.take(&takes, Some(&budget));
        assert!(l.wearing(1_000), "half used");
        assert!(l.covers(&takes, Some(&budget)));

        let mut bigger = takes.clone();
        bigger[1].amount = 1_001;
        assert!(!l.covers(&bigger, Some(&budget)), "1,000 tokens are left");
        // The unused part of each window, and the whole budget reservation: both requests
        // have let go of their shares.
        assert_eq!(
            l.end_all(),
            [
                LeaseEnd {
                    tenant: "t".into(),
                    id: "l1".into(),
                    part: LeasePart::Windows {
                        unused: vec![("t:rpm".into(), 2), ("t:tpm".into(), 1_000)],
                        at_ms: 1_000,
                    },
                },
                LeaseEnd {
                    tenant: "t".into(),
                    id: "l1".into(),
                    part: LeasePart::Budget {
                        period: "2026-12".into(),
                        amount: 8_000,
                    },
                },
            ]
        );

        // A request still holding the share: only the windows go back; the budget goes when
        // the last holder lets go, once.
        let mut l = lease(&takes, Some(&budget), 4);
        let (_, held) = l.take(&takes, Some(&budget)).budget.unwrap();
        assert_eq!(l.end_all().len(), 1);
        assert!(held.take_end().is_some());
        assert_eq!(held.take_end(), None, "sent once");
    }

    #[test]
    fn an_old_lease_is_renewed_and_a_used_up_one_gives_nothing_back() {
        let takes = [take("t:rpm", 1_000_000, 1)];
        let mut l = lease(&takes, None, 4);
        assert!(!l.wearing(1_000 + lease_ms() / 2 - 1));
        assert!(l.wearing(1_000 + lease_ms() / 2));
        for _ in 0..4 {
            assert!(l.covers(&takes, None));
            l.take(&takes, None);
        }
        assert!(!l.covers(&takes, None));
        let end = l.end().unwrap();
        assert_eq!(
            end.part,
            LeasePart::Windows {
                unused: vec![("t:rpm".into(), 0)],
                at_ms: 1_000
            }
        );
    }

    #[test]
    fn a_lease_serves_only_its_own_window_bucket_and_life() {
        let takes = [take("t:rpm", 1_000_000, 1)];
        let mut l = lease(&takes, None, 4);
        l.at_ms = 59_900;
        l.until_ms = 60_000;
        assert!(l.serves(59_999));
        assert!(!l.serves(60_000));
        // A request that started in the bucket before the lease's is settled in its own.
        l.at_ms = 60_100;
        l.until_ms = 60_350;
        assert!(!l.serves(59_990));
        assert!(l.serves(60_200));
    }

    #[test]
    fn a_replacing_lease_leaves_the_old_ones_unused_part_out_of_its_figures() {
        let takes = [take("t:rpm", 1_000_000, 1)];
        let budget = reserve(1_000_000_000_000, 2_000);
        let mut old = lease(&takes, Some(&budget), 4);
        old.take(&takes, Some(&budget));
        let mut new = lease(&takes, Some(&budget), 4);
        // Granted while the old lease's 3 unused requests still counted.
        new.windows[0].count = 110;
        new.budget.as_mut().unwrap().reserved = 20_000;
        new.replacing(&old);
        assert_eq!(new.windows[0].count, 107);
        // The old budget part is still reserved: its request is not written yet.
        assert_eq!(new.budget.as_ref().unwrap().reserved, 20_000);
    }

    #[test]
    fn an_unpriced_request_is_never_leased_against_a_budget() {
        let takes = [take("t:rpm", 1_000_000, 1)];
        assert_eq!(plan(100, &takes, Some(&reserve(1_000_000_000, 0))), None);
        assert!(plan(100, &takes, None).is_some());
        // A window part of 0 (no tokens to reserve) never makes a lease look worn.
        let mut l = lease(
            &[take("t:rpm", 1_000_000, 1), take("t:tpm", 1_000_000, 0)],
            None,
            4,
        );
        l.take(
            &[take("t:rpm", 1_000_000, 1), take("t:tpm", 1_000_000, 0)],
            None,
        );
        assert!(!l.wearing(1_000));
    }

    #[test]
    fn refused_asks_back_off_twice_as_long_each_time() {
        let mut c = Caller::default();
        assert!(c.may_ask(0));
        c.refused(1_000);
        assert!(!c.may_ask(1_000 + lease_ms() - 1));
        assert!(c.may_ask(1_000 + lease_ms()));
        c.refused(2_000);
        assert!(!c.may_ask(2_000 + 2 * lease_ms() - 1));
        for _ in 0..20 {
            c.refused(10_000);
        }
        assert_eq!(c.quiet_until_ms, 10_000 + LONGEST_BACKOFF_MS);
    }

    #[test]
    fn demand_is_counted_per_period_and_forgets_a_gap() {
        let mut c = Caller::default();
        for t in 0..10 {
            c.observe(10_000 + t);
        }
        assert_eq!(c.demand(), 10);
        c.observe(10_000 + lease_ms());
        assert_eq!((c.seen, c.seen_before), (1, 10));
        assert_eq!(c.demand(), 10);
        // A period with nothing in it: the old demand no longer counts.
        c.observe(10_000 + 4 * lease_ms());
        assert_eq!((c.seen, c.seen_before), (1, 0));
    }
}
