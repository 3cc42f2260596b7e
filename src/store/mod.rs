//! Shared state behind small traits shaped by what the gateway needs, with two backends:
//! `embedded` (one local SQLite file, the default) and `redis` (standalone or Cluster, for
//! several replicas). One conformance suite (`conformance.rs`) runs every method against both.
//!
//! Layout rules every backend keeps:
//! - Secrets are never stored: keys are kept as SHA-256 hashes ([`KeyRecord::hash`]).
//! - Money is integer nano-USD, so totals never drift.
//! - Everything one tenant's atomic operations touch lives together (on Redis, one hash-tag
//!   slot per tenant: `sntl:{<tenant>}:...`).

pub mod embedded;
pub mod redis;
pub mod types;

use std::time::Duration;

use async_trait::async_trait;

pub use types::{
    AuditPage, AuditQuery, Budget, BudgetDecision, BudgetReserve, ChainHead, Held, KeepAlive,
    KeyRecord, LeaseEnd, LeaseGrant, LeasePart, LeaseTake, Limits, Outcome, Settlement, Tenant,
    UsageGrain, UsageRow, WindowDecision, WindowSettle, WindowTake,
};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or answered with an I/O error.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within its timeout.
    #[error("the store did not answer in time")]
    Timeout,
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Bounded label for `store_errors_total{op}` callers and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout => "timeout",
            Self::Corrupt(_) => "corrupt",
        }
    }
}

/// Seconds since the Unix epoch (the stores' and the key records' clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Lower-case hex, the stored form of key hashes.
pub fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{b:02x}")`: formatting each byte cost ~1 % of the gateway's CPU
    // (cache keys, record hashes, one per request each).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Tenants: created from the config (bootstrap), the admin API and the CLI.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates or replaces a tenant.
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    /// One tenant.
    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>>;
    /// Every tenant, sorted by id.
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;
    /// Deletes a tenant and revokes its keys; returns whether it existed.
    async fn delete_tenant(&self, id: &str) -> StoreResult<bool>;
}

/// API keys, stored only as hashes.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key record (the id and hash are unique).
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()>;
    /// The key whose secret hashes to `hash`, revoked or not.
    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRecord>>;
    /// One key by its public id.
    async fn key_by_id(&self, id: &str) -> StoreResult<Option<KeyRecord>>;
    /// A tenant's keys, oldest first.
    async fn list_keys(&self, tenant: &str) -> StoreResult<Vec<KeyRecord>>;
    /// Marks a key revoked at `at_unix` (idempotent); returns the record, if it exists.
    async fn revoke_key(&self, id: &str, at_unix: i64) -> StoreResult<Option<KeyRecord>>;
    /// A counter that changes whenever a key or tenant changes; replicas poll it (or are
    /// told through the backend's notification channel) to drop stale cache entries.
    async fn change_seq(&self) -> StoreResult<u64>;
}

/// Counters for rate limits and budgets. Every call is one atomic step (one round trip on
/// Redis), safe across replicas.
#[async_trait]
pub trait CounterStore: Send + Sync {
    /// Sliding-window limit: adds `amount` to `scope` when the weighted count of the current
    /// and previous `window` plus `amount` stays within `limit`; otherwise adds nothing.
    /// `now_ms` is Unix milliseconds (passed in so tests and replicas agree on windows).
    async fn window_take(
        &self,
        scope: &str,
        limit: u64,
        window: Duration,
        amount: u64,
        now_ms: u64,
    ) -> StoreResult<WindowDecision>;
    /// Corrects a past [`CounterStore::window_take`] by `delta` (settling a reservation to
    /// the real amount; negative gives back), in the window `taken_at_ms` fell in.
    async fn window_adjust(
        &self,
        scope: &str,
        window: Duration,
        delta: i64,
        taken_at_ms: u64,
    ) -> StoreResult<()>;
    /// Reserves `amount` nano-USD of `tenant`'s budget for `period` (e.g. `2026-11`,
    /// `2026-11-22`) if spent + reserved + amount ≤ `limit`, or always when `enforce` is false.
    async fn budget_reserve(
        &self,
        tenant: &str,
        period: &str,
        amount: i64,
        limit: i64,
        enforce: bool,
    ) -> StoreResult<BudgetDecision>;
    /// Settles a reservation: releases `reserved` and records `actual` as spent.
    async fn budget_settle(
        &self,
        tenant: &str,
        period: &str,
        reserved: i64,
        actual: i64,
    ) -> StoreResult<()>;
    /// `(spent, reserved)` nano-USD of a period.
    async fn budget_state(&self, tenant: &str, period: &str) -> StoreResult<(i64, i64)>;

    /// A request's admission in one step: every window take (all in `window`) and the budget
    /// reservation, each decided exactly as its own method would decide it, in order. A
    /// backend that can do it in one round trip and one script (Redis) overrides this; the
    /// default calls the methods one by one.
    async fn admit(
        &self,
        takes: &[WindowTake],
        window: Duration,
        budget: Option<&BudgetReserve>,
        now_ms: u64,
    ) -> StoreResult<(Vec<WindowDecision>, Option<BudgetDecision>)> {
        let mut decisions = Vec::with_capacity(takes.len());
        for t in takes {
            decisions.push(
                self.window_take(&t.scope, t.limit, window, t.amount, now_ms)
                    .await?,
            );
        }
        let spend = match budget {
            Some(b) => Some(
                self.budget_reserve(&b.tenant, &b.period, b.amount, b.limit, b.enforce)
                    .await?,
            ),
            None => None,
        };
        Ok((decisions, spend))
    }

    /// Takes an admission lease ([`crate::policy::lease`]) in one atomic step: every window
    /// and the budget as [`CounterStore::admit`] would, with the budget always enforced, or,
    /// when any of them refuses, nothing at all (`None`). Each part is registered, so that
    /// the store releases a budget part never given back after `reap_after`. Only a shared
    /// store leases; the default refuses every lease.
    async fn lease_take(
        &self,
        lease: &LeaseTake,
        window: Duration,
    ) -> StoreResult<Option<LeaseGrant>> {
        let _ = (lease, window);
        Ok(None)
    }

    /// Gives back one part of a lease: the windows' unused amounts, or the budget
    /// reservation. Applied at most once per part, and not at all once the store reaped it,
    /// so it may be retried after any failure.
    async fn lease_end(&self, end: &LeaseEnd, window: Duration) -> StoreResult<()> {
        let _ = (end, window);
        Ok(())
    }
}

/// The audit log, usage rollups and the settlement of reservations: written together, once
/// per request, by the audit writer (off the request path).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Writes each outcome not written yet (known by its seal: tenant, chain and seq): the
    /// record, its rollup and its settlement, atomically. Outcomes already written are
    /// skipped, so a replayed batch changes nothing twice. Returns how many were new.
    ///
    /// A chain's outcomes must arrive in seal order, within a batch and across calls (the
    /// outcomes of a failed call are sent again before any later outcome of their chain): a
    /// backend may take a record at or below its chain's written head as written (Redis does).
    /// The audit writer keeps that order (it writes each batch after the one before, and while
    /// its spill holds anything it spills instead of writing).
    async fn record_outcomes(&self, batch: &[Outcome]) -> StoreResult<usize>;
    /// A page of a tenant's records, newest first, with the judge results merged in.
    async fn audit_page(&self, tenant: &str, query: &AuditQuery) -> StoreResult<AuditPage>;
    /// One record of a tenant, with its judge result.
    async fn audit_get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> StoreResult<Option<crate::audit::record::AuditRecord>>;
    /// Every stored record of a tenant, in write order, and the chain heads (for verification).
    async fn audit_all(
        &self,
        tenant: &str,
    ) -> StoreResult<(Vec<crate::audit::record::AuditRecord>, Vec<ChainHead>)>;
    /// Attaches the judge's result to a record (kept beside it; see `audit::record`).
    async fn set_judge(
        &self,
        tenant: &str,
        request_id: &str,
        judge: &crate::audit::record::JudgeResult,
    ) -> StoreResult<()>;
    /// Rollup rows of a tenant for the days `start_day..=end_day` (`YYYY-MM-DD`), one per day
    /// and model ([`UsageGrain::Model`], `key_id` empty) or per day and key
    /// ([`UsageGrain::Key`], `model` empty). Rollups are kept at both grains so a report reads
    /// only what it shows.
    async fn usage_rows(
        &self,
        tenant: &str,
        start_day: &str,
        end_day: &str,
        grain: UsageGrain,
    ) -> StoreResult<Vec<UsageRow>>;
}

/// Cached answers and the semantic cache's entries, per tenant. Values are opaque bytes (the
/// cache layer encodes and compresses them); every entry expires.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// A cached answer, if present and not expired.
    async fn cache_get(&self, tenant: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores an answer for `ttl`. The backend bounds how many entries it keeps.
    async fn cache_put(
        &self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> StoreResult<()>;
    /// Appends a semantic entry to a tenant's partition (a context hash), keeping at most
    /// `max_entries` of the newest; the partition expires `ttl` after its last append.
    async fn semantic_append(
        &self,
        tenant: &str,
        partition: &str,
        entry: &[u8],
        max_entries: usize,
        ttl: Duration,
    ) -> StoreResult<()>;
    /// The partition's entries from position `from` on (positions count every append ever
    /// made, so a reader asks only for what is new), and the position after the last.
    async fn semantic_since(
        &self,
        tenant: &str,
        partition: &str,
        from: u64,
    ) -> StoreResult<(Vec<Vec<u8>>, u64)>;
}

/// Everything the gateway stores.
#[async_trait]
pub trait Store:
    TenantStore + KeyStore + CounterStore + AuditStore + CacheStore + std::fmt::Debug
{
    /// Backend name for `/health` and logs.
    fn backend(&self) -> &'static str;
    /// Makes buffered writes durable (the embedded store batches counters); a no-op where
    /// every write is already durable.
    async fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Called on serving lane `lane`'s runtime before it accepts: a networked backend opens
    /// the lane's own connection there (see [`crate::lanes`]). Failure is logged, not fatal.
    async fn attach_lane(&self, _lane: usize) {}
    /// Checks the calling thread's connection. Serving lanes call it on a timer, so a lane
    /// connection left idle through an outage reconnects before a request needs it.
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Whether every lane's own connection answered its last ping (for `/health`).
    fn lanes_ok(&self) -> bool {
        true
    }
}

/// Opens the configured backend.
///
/// With `tasks`, background upkeep starts too (the embedded store's batched flushes); a
/// one-shot command passes `None` and calls [`Store::flush`] before it exits.
pub async fn open(
    config: &crate::config::Config,
    tasks: Option<&crate::tasks::Tasks>,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    use crate::config::StoreConfig;
    let audit_retention = config.audit.retention;
    let cache_max_entries = config.cache.exact_max_entries;
    Ok(match &config.store {
        StoreConfig::Embedded { path } => {
            let store = embedded::EmbeddedStore::open(path).await?;
            store.set_audit_retention(audit_retention);
            store.set_cache_max_entries(cache_max_entries);
            if let Some(tasks) = tasks {
                store.start_flusher(tasks);
            }
            std::sync::Arc::new(store)
        }
        StoreConfig::Redis {
            urls,
            cluster,
            timeout,
        } => {
            let target = if *cluster {
                redis::RedisTarget::Cluster(urls.clone())
            } else {
                redis::RedisTarget::Standalone(urls.first().cloned().unwrap_or_default())
            };
            std::sync::Arc::new(
                redis::RedisStore::connect(target, *timeout)
                    .await?
                    .with_lanes(config.server.workers)
                    .with_audit_retention(audit_retention),
            )
        }
    })
}

#[cfg(test)]
pub mod conformance;
