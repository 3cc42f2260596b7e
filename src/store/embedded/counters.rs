//! The hot-path counters, in memory: rate-limit windows per scope and budgets per tenant and
//! period. Each lives in one of [`SHARDS`] maps behind its own `tokio::sync::Mutex`, so a take
//! or a reservation is one short critical section (exact under concurrency) and unrelated
//! scopes rarely contend. SQLite only sees budgets, in batches ([`Budgets::take_pending`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use tokio::sync::Mutex;

use super::window::WindowState;
use crate::store::BudgetDecision;

/// Shards per map; a power of two.
const SHARDS: usize = 32;

/// A map split into independently locked shards by key.
pub(crate) struct Sharded<V> {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<String, V>>]>,
}

impl<V> Sharded<V> {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The index of the shard `key` lives in.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low bits pick a shard"
    )]
    fn index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    /// The shard `key` lives in.
    pub(crate) fn shard(&self, key: &str) -> &Mutex<HashMap<String, V>> {
        &self.shards[self.index(key)]
    }

    /// Every shard, to visit them one at a time.
    pub(crate) fn shards(&self) -> &[Mutex<HashMap<String, V>>] {
        &self.shards
    }

    /// Every shard without locking, when the map is exclusively held (e.g. in `Drop`).
    pub(crate) fn shards_mut(&mut self) -> impl Iterator<Item = &mut HashMap<String, V>> {
        self.shards.iter_mut().map(Mutex::get_mut)
    }
}

// === Windows ===

/// A scope's window state and the window length it was counted with.
#[derive(Debug, Default)]
pub(crate) struct WindowEntry {
    window_ms: u64,
    state: WindowState,
}

impl WindowEntry {
    /// The state for `window_ms`; a scope re-used with another window length starts over.
    pub(crate) fn state(&mut self, window_ms: u64) -> &mut WindowState {
        if self.window_ms != window_ms {
            *self = Self {
                window_ms,
                state: WindowState::default(),
            };
        }
        &mut self.state
    }

    /// Whether the entry counts for nothing at `now_ms` any more.
    pub(crate) fn is_idle(&self, now_ms: u64) -> bool {
        self.state.is_idle(self.window_ms, now_ms)
    }
}

// === Budgets ===

/// One tenant's budget for one period.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BudgetEntry {
    /// Settled spend: durable (flushed to SQLite).
    pub(crate) spent: i64,
    /// In-flight reservations: memory only, released by a restart.
    pub(crate) reserved: i64,
    /// Spend settled since the last flush; SQLite adds it to its row.
    pub(crate) unflushed: i64,
}

impl BudgetEntry {
    /// Reserves `amount` if `spent + reserved + amount <= limit`, or always when not enforcing.
    pub(crate) fn reserve(&mut self, amount: i64, limit: i64, enforce: bool) -> BudgetDecision {
        let decision = BudgetDecision {
            allowed: !enforce
                || i128::from(self.spent) + i128::from(self.reserved) + i128::from(amount)
                    <= i128::from(limit),
            spent: self.spent,
            reserved: self.reserved,
        };
        if decision.allowed {
            self.reserved = self.reserved.saturating_add(amount);
        }
        decision
    }

    /// Releases `reserved` (never below zero) and records `actual` as spent.
    pub(crate) fn settle(&mut self, reserved: i64, actual: i64) {
        self.reserved = self.reserved.saturating_sub(reserved).max(0);
        self.spent = self.spent.saturating_add(actual);
        self.unflushed = self.unflushed.saturating_add(actual);
    }
}

/// Budgets by tenant (the shard key), then period.
pub(crate) type Budgets = Sharded<HashMap<String, BudgetEntry>>;

/// Spend not yet in SQLite: `(tenant, period, delta)`.
pub(crate) type Pending = Vec<(String, String, i64)>;

impl Budgets {
    /// Loads durable spend read at open.
    pub(crate) fn from_rows(rows: Vec<(String, String, i64)>) -> Self {
        let mut budgets = Self::new();
        for (tenant, period, spent) in rows {
            let i = budgets.index(&tenant);
            budgets.shards[i]
                .get_mut()
                .entry(tenant)
                .or_default()
                .insert(
                    period,
                    BudgetEntry {
                        spent,
                        ..BudgetEntry::default()
                    },
                );
        }
        budgets
    }

    /// Runs `f` on the entry of `tenant` and `period`, creating it at zero.
    pub(crate) async fn with<T>(
        &self,
        tenant: &str,
        period: &str,
        f: impl FnOnce(&mut BudgetEntry) -> T,
    ) -> T {
        let mut shard = self.shard(tenant).lock().await;
        // Look up before inserting so the hot path allocates no key.
        if let Some(entry) = shard
            .get_mut(tenant)
            .and_then(|periods| periods.get_mut(period))
        {
            return f(entry);
        }
        f(shard
            .entry(tenant.to_owned())
            .or_default()
            .entry(period.to_owned())
            .or_default())
    }

    /// `(spent, reserved)` without creating an entry.
    pub(crate) async fn state(&self, tenant: &str, period: &str) -> (i64, i64) {
        let shard = self.shard(tenant).lock().await;
        shard
            .get(tenant)
            .and_then(|periods| periods.get(period))
            .map_or((0, 0), |e| (e.spent, e.reserved))
    }

    /// Moves every unflushed delta out (zeroing it), one shard at a time.
    pub(crate) async fn take_pending(&self) -> Pending {
        let mut pending = Vec::new();
        for shard in self.shards() {
            collect_pending(&mut *shard.lock().await, &mut pending);
        }
        pending
    }

    /// [`Budgets::take_pending`] without locking, for `Drop`.
    pub(crate) fn take_pending_mut(&mut self) -> Pending {
        let mut pending = Vec::new();
        for shard in self.shards_mut() {
            collect_pending(shard, &mut pending);
        }
        pending
    }

    /// Puts deltas back after a failed flush, so the next flush writes them.
    pub(crate) async fn restore_pending(&self, pending: Pending) {
        for (tenant, period, delta) in pending {
            self.with(&tenant, &period, |e| {
                e.unflushed = e.unflushed.saturating_add(delta);
            })
            .await;
        }
    }
}

fn collect_pending(shard: &mut HashMap<String, HashMap<String, BudgetEntry>>, out: &mut Pending) {
    for (tenant, periods) in shard.iter_mut() {
        for (period, entry) in periods.iter_mut() {
            if entry.unflushed != 0 {
                out.push((
                    tenant.clone(),
                    period.clone(),
                    std::mem::take(&mut entry.unflushed),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_spend_is_taken_once_and_can_be_restored() {
        let budgets = Budgets::from_rows(vec![("t".into(), "2026-11".into(), 40)]);
        assert_eq!(budgets.state("t", "2026-11").await, (40, 0));
        assert!(
            budgets
                .with("t", "2026-11", |e| e.reserve(10, 100, true))
                .await
                .allowed
        );
        budgets.with("t", "2026-11", |e| e.settle(10, 7)).await;
        budgets.with("u", "2026-11", |e| e.settle(0, 3)).await;
        let mut pending = budgets.take_pending().await;
        pending.sort();
        assert_eq!(
            pending,
            [
                ("t".into(), "2026-11".into(), 7),
                ("u".into(), "2026-11".into(), 3)
            ]
        );
        assert!(budgets.take_pending().await.is_empty());
        budgets.restore_pending(pending).await;
        budgets.with("t", "2026-11", |e| e.settle(0, 1)).await;
        let mut again = budgets.take_pending().await;
        again.sort();
        assert_eq!(
            again,
            [
                ("t".into(), "2026-11".into(), 8),
                ("u".into(), "2026-11".into(), 3)
            ]
        );
        assert_eq!(budgets.state("t", "2026-11").await, (48, 0));
    }

    #[test]
    fn reservations_saturate_instead_of_overflowing() {
        let mut e = BudgetEntry {
            spent: i64::MAX,
            reserved: 0,
            unflushed: 0,
        };
        assert!(!e.reserve(i64::MAX, i64::MAX, true).allowed);
        assert!(e.reserve(i64::MAX, 0, false).allowed);
        assert!(e.reserve(i64::MAX, 0, false).allowed);
        assert_eq!(e.reserved, i64::MAX);
    }
}
