//! The default backend: one local SQLite file, for a single node.
//!
//! Two halves with different needs:
//! - **Tenants and keys** are rare writes that must be durable at once and visible to another
//!   process on the same file (the `sentinel keys` CLI while `serve` runs). They go straight
//!   to SQLite, on one connection owned by a dedicated thread ([`db`]); the file is in WAL mode
//!   with a busy timeout, and each write bumps `change_seq` in the same transaction.
//! - **Counters** are on every request and must cost microseconds. They live in memory
//!   ([`counters`]), sharded, each shard behind its own lock so a take or a reservation is
//!   exact under concurrency. Rate-limit windows are memory only (they matter for two windows
//!   at most; a restart forgets them). Budgets persist their *settled spend* to SQLite in
//!   batches: see [`EmbeddedStore::flush`].
//!
//! What a restart keeps: every tenant and key; each budget's `spent` up to the last flush
//! (the flusher runs every [`FLUSH_EVERY`], on shutdown, and when the store is dropped, so
//! only a crash loses up to one interval of spend). Reservations open at a crash or restart
//! are released on open: only `spent` is durable truth, and the requests that held them are
//! gone.
//!
//! One server process owns the counters of a file. Flushes *add* their deltas to the stored
//! rows, so another process on the same file (the CLI) never overwrites the server's spend,
//! but it does not see the server's unflushed spend either.

mod audit;
mod cache;
pub(crate) mod counters;
mod db;
pub mod window;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use self::counters::{Budgets, Sharded, WindowEntry};
use self::db::{Db, KeyColumn};
use super::{
    AuditPage, AuditQuery, AuditStore, BudgetDecision, CacheStore, ChainHead, CounterStore,
    KeyRecord, KeyStore, Outcome, Store, StoreResult, Tenant, TenantStore, UsageGrain, UsageRow,
    WindowDecision,
};
use crate::audit::record::{AuditRecord, JudgeResult};
use crate::tasks::Tasks;

/// How often the flusher started by [`EmbeddedStore::start_flusher`] writes settled spend.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// Default audit retention (30 days), until `audit.retention` sets it.
const DEFAULT_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;

/// The flusher forgets idle rate-limit scopes every this many flushes (about 30 s).
const PRUNE_EVERY_FLUSHES: u32 = 120;

/// Tenants, keys and counters in one local SQLite file (module docs for the design).
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Db,
    windows: Sharded<WindowEntry>,
    budgets: Budgets,
    /// The latest `now_ms` any take has seen: the clock idle windows are pruned by, so tests
    /// and callers passing their own times are never pruned by the wall clock.
    latest_ms: AtomicU64,
    /// Audit records older than this are deleted by the flusher (`audit.retention`).
    audit_retention_ms: AtomicU64,
    /// Most cached answers kept (`cache.exact.max_entries`).
    cache_max_entries: AtomicU64,
}

// === impl EmbeddedStore ===

impl EmbeddedStore {
    /// Opens (or creates, with its parent directories and schema) the store at `path` and
    /// loads the durable budget spend. Reservations start at zero.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let (db, spent) = Db::open(path).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                windows: Sharded::new(),
                budgets: Budgets::from_rows(spent),
                latest_ms: AtomicU64::new(0),
                audit_retention_ms: AtomicU64::new(DEFAULT_RETENTION_MS),
                cache_max_entries: AtomicU64::new(100_000),
            }),
        })
    }

    /// Keeps audit records for `retention` (default 30 days); older ones are pruned.
    pub fn set_audit_retention(&self, retention: Duration) {
        self.inner.audit_retention_ms.store(
            u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Keeps at most `max` cached answers (pruned with the expired ones by the flusher).
    pub fn set_cache_max_entries(&self, max: u64) {
        self.inner.cache_max_entries.store(max, Ordering::Relaxed);
    }

    /// The file this store is kept in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes the spend settled since the last flush to SQLite, in one transaction. Runs every
    /// [`FLUSH_EVERY`] once [`EmbeddedStore::start_flusher`] is called, once more when
    /// shutdown begins, from [`EmbeddedStore::close`], and (without waiting for an answer)
    /// when the store is dropped. On failure the spend stays pending for the next flush.
    pub async fn flush(&self) -> StoreResult<()> {
        self.inner.flush().await
    }

    /// Flushes; call before exiting. The connection itself closes when the store is dropped.
    pub async fn close(&self) -> StoreResult<()> {
        self.flush().await
    }

    /// Starts the background flusher on `tasks`: a flush every [`FLUSH_EVERY`], a final one
    /// when shutdown begins, and now and then the pruning of idle rate-limit scopes. It holds
    /// the store weakly, so dropping the store also ends it.
    pub fn start_flusher(&self, tasks: &Tasks) {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        let shutdown = tasks.shutdown_token();
        tasks.spawn("store-flush", async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut flushes: u32 = 0;
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    () = shutdown.cancelled() => true,
                };
                let Some(inner) = inner.upgrade() else { break };
                if let Err(e) = inner.flush().await {
                    tracing::warn!(error = %e, "flushing budget spend to SQLite failed; it stays pending");
                }
                flushes = flushes.wrapping_add(1);
                if flushes % PRUNE_EVERY_FLUSHES == 0 {
                    inner.prune_windows().await;
                    inner.prune_audit().await;
                    inner.prune_cache().await;
                }
                if stopping {
                    break;
                }
            }
        });
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    async fn flush(&self) -> StoreResult<()> {
        let pending = self.budgets.take_pending().await;
        if pending.is_empty() {
            return Ok(());
        }
        // The batch travels to the SQLite thread and comes back, so a failed write can put
        // the deltas back instead of losing them.
        let (written, pending) = self
            .db
            .call(move |conn| {
                let written = db::add_spent(conn, &pending);
                Ok((written, pending))
            })
            .await?;
        if let Err(e) = written {
            self.budgets.restore_pending(pending).await;
            return Err(e);
        }
        Ok(())
    }

    /// Deletes audit records past the retention.
    async fn prune_audit(&self) {
        let keep = self.audit_retention_ms.load(Ordering::Relaxed);
        let before = crate::audit::record::now_ms().saturating_sub(keep);
        if let Err(e) = self.db.call(move |conn| audit::prune(conn, before)).await {
            tracing::warn!(error = %e, "pruning old audit records failed");
        }
    }

    /// Drops expired cache entries and bounds their number.
    async fn prune_cache(&self) {
        let max = self.cache_max_entries.load(Ordering::Relaxed);
        let now = crate::audit::record::now_ms();
        if let Err(e) = self.db.call(move |conn| cache::prune(conn, now, max)).await {
            tracing::warn!(error = %e, "pruning the cache failed");
        }
    }

    /// Forgets rate-limit scopes that count for nothing any more.
    async fn prune_windows(&self) {
        let now_ms = self.latest_ms.load(Ordering::Relaxed);
        for shard in self.windows.shards() {
            shard.lock().await.retain(|_, entry| !entry.is_idle(now_ms));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last handle gone: queue the unflushed spend for the SQLite thread, which `Db`'s drop
        // (right after this) lets finish before the connection closes.
        let pending = self.budgets.take_pending_mut();
        if pending.is_empty() {
            return;
        }
        let queued = self.db.send(Box::new(move |conn| {
            if let Err(e) = db::add_spent(conn, &pending) {
                tracing::error!(error = %e, "the final budget flush failed; this spend is lost");
            }
        }));
        if let Err(e) = queued {
            tracing::error!(error = %e, "the final budget flush could not be queued; this spend is lost");
        }
    }
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

// === impl TenantStore, KeyStore, CounterStore, Store ===

#[async_trait]
impl TenantStore for EmbeddedStore {
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let tenant = tenant.clone();
        self.inner
            .db
            .call(move |conn| db::put_tenant(conn, &tenant))
            .await
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let id = id.to_owned();
        self.inner
            .db
            .call(move |conn| db::get_tenant(conn, &id))
            .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.inner.db.call(|conn| db::list_tenants(conn)).await
    }

    async fn delete_tenant(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        let now = super::unix_now();
        self.inner
            .db
            .call(move |conn| db::delete_tenant(conn, &id, now))
            .await
    }
}

#[async_trait]
impl KeyStore for EmbeddedStore {
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let key = key.clone();
        self.inner
            .db
            .call(move |conn| db::put_key(conn, &key))
            .await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRecord>> {
        let hash = super::hex(hash);
        self.inner
            .db
            .call(move |conn| db::key_by(conn, KeyColumn::Hash, &hash))
            .await
    }

    async fn key_by_id(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_owned();
        self.inner
            .db
            .call(move |conn| db::key_by(conn, KeyColumn::Id, &id))
            .await
    }

    async fn list_keys(&self, tenant: &str) -> StoreResult<Vec<KeyRecord>> {
        let tenant = tenant.to_owned();
        self.inner
            .db
            .call(move |conn| db::list_keys(conn, &tenant))
            .await
    }

    async fn revoke_key(&self, id: &str, at_unix: i64) -> StoreResult<Option<KeyRecord>> {
        let id = id.to_owned();
        self.inner
            .db
            .call(move |conn| db::revoke_key(conn, &id, at_unix))
            .await
    }

    async fn change_seq(&self) -> StoreResult<u64> {
        // Read from the file every time, so writes by another process show up.
        self.inner.db.call(|conn| db::change_seq(conn)).await
    }
}

#[async_trait]
impl CounterStore for EmbeddedStore {
    async fn window_take(
        &self,
        scope: &str,
        limit: u64,
        window: Duration,
        amount: u64,
        now_ms: u64,
    ) -> StoreResult<WindowDecision> {
        self.inner.latest_ms.fetch_max(now_ms, Ordering::Relaxed);
        let w = window_ms(window);
        let mut shard = self.inner.windows.shard(scope).lock().await;
        // Look up before inserting so the hot path allocates no key.
        if let Some(entry) = shard.get_mut(scope) {
            return Ok(entry.state(w).take(limit, w, amount, now_ms));
        }
        let mut entry = WindowEntry::default();
        let decision = entry.state(w).take(limit, w, amount, now_ms);
        if decision.allowed {
            shard.insert(scope.to_owned(), entry);
        }
        Ok(decision)
    }

    async fn window_adjust(
        &self,
        scope: &str,
        window: Duration,
        delta: i64,
        taken_at_ms: u64,
    ) -> StoreResult<()> {
        let w = window_ms(window);
        let mut shard = self.inner.windows.shard(scope).lock().await;
        if let Some(entry) = shard.get_mut(scope) {
            entry.state(w).adjust(w, delta, taken_at_ms);
        } else if delta > 0 {
            // Nothing to give back to a scope we do not know (e.g. after a restart), but an
            // addition counts.
            let mut entry = WindowEntry::default();
            entry.state(w).adjust(w, delta, taken_at_ms);
            shard.insert(scope.to_owned(), entry);
        }
        Ok(())
    }

    async fn budget_reserve(
        &self,
        tenant: &str,
        period: &str,
        amount: i64,
        limit: i64,
        enforce: bool,
    ) -> StoreResult<BudgetDecision> {
        Ok(self
            .inner
            .budgets
            .with(tenant, period, |e| e.reserve(amount, limit, enforce))
            .await)
    }

    async fn budget_settle(
        &self,
        tenant: &str,
        period: &str,
        reserved: i64,
        actual: i64,
    ) -> StoreResult<()> {
        self.inner
            .budgets
            .with(tenant, period, |e| e.settle(reserved, actual))
            .await;
        Ok(())
    }

    async fn budget_state(&self, tenant: &str, period: &str) -> StoreResult<(i64, i64)> {
        Ok(self.inner.budgets.state(tenant, period).await)
    }
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn record_outcomes(&self, batch: &[Outcome]) -> StoreResult<usize> {
        let batch = batch.to_vec();
        let fresh = self
            .inner
            .db
            .call(move |conn| audit::record_outcomes(conn, &batch))
            .await?;
        // Counters live in memory: settle them once the records are durable, only for the
        // outcomes that were new, so a replay never settles twice.
        for (tenant, settle, cost) in &fresh {
            if let Some((period, reserved)) = &settle.budget {
                self.budget_settle(tenant, period, *reserved, *cost).await?;
            }
            for w in &settle.windows {
                self.window_adjust(
                    &w.scope,
                    Duration::from_millis(w.window_ms),
                    w.delta,
                    w.taken_at_ms,
                )
                .await?;
            }
        }
        Ok(fresh.len())
    }

    async fn audit_page(&self, tenant: &str, query: &AuditQuery) -> StoreResult<AuditPage> {
        let (tenant, query) = (tenant.to_owned(), query.clone());
        self.inner
            .db
            .call(move |conn| audit::page(conn, &tenant, &query))
            .await
    }

    async fn audit_get(&self, tenant: &str, request_id: &str) -> StoreResult<Option<AuditRecord>> {
        let (tenant, id) = (tenant.to_owned(), request_id.to_owned());
        self.inner
            .db
            .call(move |conn| audit::get(conn, &tenant, &id))
            .await
    }

    async fn audit_all(&self, tenant: &str) -> StoreResult<(Vec<AuditRecord>, Vec<ChainHead>)> {
        let tenant = tenant.to_owned();
        self.inner
            .db
            .call(move |conn| audit::all(conn, &tenant))
            .await
    }

    async fn set_judge(
        &self,
        tenant: &str,
        request_id: &str,
        judge: &JudgeResult,
    ) -> StoreResult<()> {
        let (tenant, id, judge) = (tenant.to_owned(), request_id.to_owned(), judge.clone());
        self.inner
            .db
            .call(move |conn| audit::set_judge(conn, &tenant, &id, &judge))
            .await
    }

    async fn usage_rows(
        &self,
        tenant: &str,
        start_day: &str,
        end_day: &str,
        grain: UsageGrain,
    ) -> StoreResult<Vec<UsageRow>> {
        let (tenant, start, end) = (tenant.to_owned(), start_day.to_owned(), end_day.to_owned());
        self.inner
            .db
            .call(move |conn| audit::usage_rows(conn, &tenant, &start, &end, grain))
            .await
    }
}

#[async_trait]
impl CacheStore for EmbeddedStore {
    async fn cache_get(&self, tenant: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let (tenant, key) = (tenant.to_owned(), key.to_owned());
        let now = crate::audit::record::now_ms();
        self.inner
            .db
            .call(move |conn| cache::get(conn, &tenant, &key, now))
            .await
    }

    async fn cache_put(
        &self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> StoreResult<()> {
        let (tenant, key, value) = (tenant.to_owned(), key.to_owned(), value.to_vec());
        let expires = expiry(ttl);
        self.inner
            .db
            .call(move |conn| cache::put(conn, &tenant, &key, &value, expires))
            .await
    }

    async fn semantic_append(
        &self,
        tenant: &str,
        partition: &str,
        entry: &[u8],
        max_entries: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        let (tenant, partition, entry) = (tenant.to_owned(), partition.to_owned(), entry.to_vec());
        let expires = expiry(ttl);
        self.inner
            .db
            .call(move |conn| {
                cache::semantic_append(conn, &tenant, &partition, &entry, max_entries, expires)
            })
            .await
    }

    async fn semantic_since(
        &self,
        tenant: &str,
        partition: &str,
        from: u64,
    ) -> StoreResult<(Vec<Vec<u8>>, u64)> {
        let (tenant, partition) = (tenant.to_owned(), partition.to_owned());
        let now = crate::audit::record::now_ms();
        self.inner
            .db
            .call(move |conn| cache::semantic_since(conn, &tenant, &partition, from, now))
            .await
    }
}

fn expiry(ttl: Duration) -> u64 {
    crate::audit::record::now_ms()
        .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn flush(&self) -> StoreResult<()> {
        EmbeddedStore::flush(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    async fn store_in(dir: &tempfile::TempDir) -> EmbeddedStore {
        EmbeddedStore::open(&dir.path().join("nested/dir/sentinel.db"))
            .await
            .unwrap()
    }

    fn key(id: &str, hash: [u8; 32]) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            tenant: "cli-t".into(),
            name: "from the cli".into(),
            prefix: "sk-sntl-wxyz".into(),
            hash: crate::store::hex(&hash),
            created_at: 1_700_000_000,
            expires_at: None,
            revoked_at: None,
            limits: crate::store::Limits::default(),
        }
    }

    #[tokio::test]
    async fn a_schema_1_file_is_migrated_in_place_and_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // The keys table and meta row as the first release wrote them.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO meta VALUES ('schema_version', 1), ('change_seq', 3);
                 CREATE TABLE keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL,
                     prefix TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
                     expires_at INTEGER, revoked_at INTEGER);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO keys VALUES ('key_old', 'cli-t', 'from the cli', 'sk-sntl-wxyz', ?1,
                     1700000000, NULL, NULL)",
                [crate::store::hex(&[7; 32])],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&path).await.unwrap();
        assert_eq!(
            store.key_by_id("key_old").await.unwrap(),
            Some(key("key_old", [7; 32])),
            "an old key reads back with no limits of its own"
        );
        let limited = KeyRecord {
            limits: crate::store::Limits {
                rpm: std::num::NonZeroU32::new(9),
                ..crate::store::Limits::default()
            },
            ..key("key_old", [7; 32])
        };
        store.put_key(&limited).await.unwrap();
        drop(store);
        let reopened = EmbeddedStore::open(&path).await.unwrap();
        assert_eq!(reopened.key_by_id("key_old").await.unwrap(), Some(limited));
    }

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        assert_eq!(store.backend(), "embedded");
        conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn passes_the_conformance_suite_on_several_workers() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run_all(&store_in(&dir).await).await;
    }

    #[tokio::test]
    async fn spend_survives_a_restart_and_reservations_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        assert!(
            store
                .budget_reserve("d-t", "2026-11", 600, 1_000, true)
                .await
                .unwrap()
                .allowed
        );
        store
            .budget_settle("d-t", "2026-11", 600, 250)
            .await
            .unwrap();
        assert!(
            store
                .budget_reserve("d-t", "2026-11-22", 40, 1_000, true)
                .await
                .unwrap()
                .allowed
        );
        store
            .budget_settle("d-t", "2026-11-22", 40, 30)
            .await
            .unwrap();
        store.flush().await.unwrap();
        let before = (
            store.budget_state("d-t", "2026-11").await.unwrap(),
            store.budget_state("d-t", "2026-11-22").await.unwrap(),
        );
        drop(store);

        let store = store_in(&dir).await;
        let after = (
            store.budget_state("d-t", "2026-11").await.unwrap(),
            store.budget_state("d-t", "2026-11-22").await.unwrap(),
        );
        assert_eq!(after, before);
        assert_eq!(after, ((250, 0), (30, 0)));

        // A reservation still open when the process goes away is released on open.
        assert!(
            store
                .budget_reserve("d-t", "2026-11", 700, 1_000, true)
                .await
                .unwrap()
                .allowed
        );
        store.close().await.unwrap();
        drop(store);
        let store = store_in(&dir).await;
        assert_eq!(
            store.budget_state("d-t", "2026-11").await.unwrap(),
            (250, 0)
        );
        assert!(
            store
                .budget_reserve("d-t", "2026-11", 750, 1_000, true)
                .await
                .unwrap()
                .allowed
        );
    }

    #[tokio::test]
    async fn dropping_the_store_flushes_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        store
            .budget_settle("drop-t", "2026-11", 0, 77)
            .await
            .unwrap();
        drop(store);
        let store = store_in(&dir).await;
        assert_eq!(
            store.budget_state("drop-t", "2026-11").await.unwrap(),
            (77, 0)
        );
    }

    #[tokio::test]
    async fn the_flusher_writes_on_its_own_and_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let tasks = Tasks::new();
        store.start_flusher(&tasks);
        store.budget_settle("f-t", "2026-11", 0, 5).await.unwrap();
        // Another handle on the file sees the spend once a tick has passed.
        let reader = store_in(&dir).await;
        let mut seen = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = reader
                .inner
                .db
                .call(|conn| {
                    conn.query_row(
                        "SELECT COALESCE(SUM(spent), 0) FROM budgets WHERE tenant = 'f-t'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(db::map_err)
                })
                .await
                .unwrap();
            if seen == 5 {
                break;
            }
        }
        assert_eq!(seen, 5, "the periodic flush wrote the spend");
        store.budget_settle("f-t", "2026-11", 0, 6).await.unwrap();
        tasks.begin_shutdown();
        assert!(tasks.drain(Duration::from_secs(5)).await);
        drop(store);
        drop(reader);
        let store = store_in(&dir).await;
        assert_eq!(store.budget_state("f-t", "2026-11").await.unwrap(), (11, 0));
    }

    #[tokio::test]
    async fn another_process_on_the_same_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let server = store_in(&dir).await;
        let hash = [0xab; 32];
        assert!(server.key_by_hash(&hash).await.unwrap().is_none());
        let seq = server.change_seq().await.unwrap();

        // The CLI opens the same file while the server runs.
        let cli = store_in(&dir).await;
        cli.put_key(&key("key_cli", hash)).await.unwrap();
        drop(cli);

        assert_eq!(
            server.key_by_hash(&hash).await.unwrap(),
            Some(key("key_cli", hash))
        );
        assert!(server.change_seq().await.unwrap() > seq);

        // And a revocation by the CLI as well.
        let seq = server.change_seq().await.unwrap();
        let cli = store_in(&dir).await;
        assert!(cli
            .revoke_key("key_cli", 1_750_000_000)
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            server
                .key_by_id("key_cli")
                .await
                .unwrap()
                .unwrap()
                .revoked_at,
            Some(1_750_000_000)
        );
        assert!(server.change_seq().await.unwrap() > seq);
    }

    #[tokio::test]
    async fn a_hash_taken_by_another_key_is_refused_and_ids_are_upserted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        store.put_key(&key("key_a", [1; 32])).await.unwrap();
        assert!(store.put_key(&key("key_b", [1; 32])).await.is_err());
        let mut renamed = key("key_a", [1; 32]);
        renamed.name = "renamed".into();
        store.put_key(&renamed).await.unwrap();
        assert_eq!(store.key_by_id("key_a").await.unwrap(), Some(renamed));
        assert_eq!(store.list_keys("cli-t").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_bad_tenant_row_is_corrupt_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        store
            .inner
            .db
            .call(|conn| {
                conn.execute(
                    "INSERT INTO tenants (id, record) VALUES ('bad', '{not json')",
                    [],
                )
                .map_err(db::map_err)
            })
            .await
            .unwrap();
        assert!(matches!(
            store.get_tenant("bad").await,
            Err(crate::store::StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.list_tenants().await,
            Err(crate::store::StoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn idle_windows_are_pruned_by_the_latest_time_seen() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let w = Duration::from_secs(60);
        let t0 = 1_000_020_000_000;
        assert!(
            store
                .window_take("p:old", 5, w, 1, t0)
                .await
                .unwrap()
                .allowed
        );
        assert!(
            store
                .window_take("p:new", 5, w, 1, t0 + 120_000)
                .await
                .unwrap()
                .allowed
        );
        store.inner.prune_windows().await;
        let mut scopes = Vec::new();
        for shard in store.inner.windows.shards() {
            scopes.extend(shard.lock().await.keys().cloned());
        }
        assert_eq!(scopes, ["p:new"]);
    }

    #[test]
    fn hashes_are_lower_case_hex() {
        let mut h = [0u8; 32];
        h[0] = 0xAB;
        h[31] = 0x0f;
        let s = crate::store::hex(&h);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("ab00"));
        assert!(s.ends_with("000f"));
    }
}
