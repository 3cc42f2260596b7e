//! Per-replica counters: where limits and budgets are enforced while the shared store is
//! unreachable (SPEC section 5: limits fall back to per-replica enforcement). The same
//! in-memory windows and budget entries the embedded store uses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::store::embedded::counters::{Budgets, Sharded, WindowEntry};
use crate::store::{BudgetDecision, WindowDecision};

/// Windows and budgets of this replica only.
pub struct LocalCounters {
    windows: Sharded<WindowEntry>,
    budgets: Budgets,
    /// Last spend the shared store reported per tenant and period, nano-USD: the starting
    /// point of a local budget when the store goes away. Noted on every admitted request with
    /// a budget, so a known pair is updated under the read lock without allocating.
    last_spent: std::sync::RwLock<HashMap<String, HashMap<String, AtomicI64>>>,
    entries: AtomicU64,
}

impl std::fmt::Debug for LocalCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCounters").finish_non_exhaustive()
    }
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self {
            windows: Sharded::new(),
            budgets: Budgets::new(),
            last_spent: std::sync::RwLock::new(HashMap::new()),
            entries: AtomicU64::new(0),
        }
    }
}

fn ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl LocalCounters {
    /// A sliding-window take, as [`crate::store::CounterStore::window_take`].
    pub async fn window_take(
        &self,
        scope: &str,
        limit: u64,
        window: Duration,
        amount: u64,
        now_ms: u64,
    ) -> WindowDecision {
        let w = ms(window);
        let mut shard = self.windows.shard(scope).lock().await;
        if let Some(entry) = shard.get_mut(scope) {
            return entry.state(w).take(limit, w, amount, now_ms);
        }
        let mut entry = WindowEntry::default();
        let decision = entry.state(w).take(limit, w, amount, now_ms);
        shard.insert(scope.to_owned(), entry);
        self.entries.fetch_add(1, Ordering::Relaxed);
        decision
    }

    /// A window correction, as [`crate::store::CounterStore::window_adjust`].
    pub async fn window_adjust(&self, scope: &str, window: Duration, delta: i64, taken_at_ms: u64) {
        let w = ms(window);
        let mut shard = self.windows.shard(scope).lock().await;
        if let Some(entry) = shard.get_mut(scope) {
            entry.state(w).adjust(w, delta, taken_at_ms);
        }
    }

    /// Remembers the spend the store reported, for a later fallback.
    pub fn note_spent(&self, tenant: &str, period: &str, spent: i64) {
        if let Ok(map) = self.last_spent.read() {
            if let Some(known) = map.get(tenant).and_then(|p| p.get(period)) {
                known.store(spent, Ordering::Relaxed);
                return;
            }
        }
        if let Ok(mut map) = self.last_spent.write() {
            map.entry(tenant.to_owned())
                .or_default()
                .insert(period.to_owned(), AtomicI64::new(spent));
        }
    }

    /// A budget reservation against the last known spend plus what this replica spent since.
    pub async fn budget_reserve(
        &self,
        tenant: &str,
        period: &str,
        amount: i64,
        limit: i64,
        enforce: bool,
    ) -> BudgetDecision {
        let known = self
            .last_spent
            .read()
            .ok()
            .and_then(|m| {
                m.get(tenant)
                    .and_then(|p| p.get(period))
                    .map(|s| s.load(Ordering::Relaxed))
            })
            .unwrap_or(0);
        self.budgets
            .with(tenant, period, |e| {
                if e.spent < known {
                    e.spent = known;
                }
                e.reserve(amount, limit, enforce)
            })
            .await
    }

    /// Settles a local reservation.
    pub async fn budget_settle(&self, tenant: &str, period: &str, reserved: i64, actual: i64) {
        self.budgets
            .with(tenant, period, |e| e.settle(reserved, actual))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_budget_starts_from_the_last_spend_the_store_reported() {
        let local = LocalCounters::default();
        local.note_spent("t", "2026-11", 100);
        // The latest report wins; other tenants and periods are separate.
        local.note_spent("t", "2026-11", 900);
        local.note_spent("t", "2026-12", 10);
        let d = local.budget_reserve("t", "2026-11", 50, 1_000, true).await;
        assert_eq!((d.allowed, d.spent), (true, 900));
        assert!(
            !local
                .budget_reserve("t", "2026-11", 100, 1_000, true)
                .await
                .allowed
        );
        let other = local.budget_reserve("u", "2026-11", 50, 1_000, true).await;
        assert_eq!((other.allowed, other.spent), (true, 0));
        let next = local.budget_reserve("t", "2026-12", 50, 1_000, true).await;
        assert_eq!(next.spent, 10);
    }
}
