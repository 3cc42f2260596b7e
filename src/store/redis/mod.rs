//! The shared backend: Redis standalone (through a self-reconnecting
//! [`ConnectionManager`]) or Redis Cluster (through [`ClusterConnection`]), for several
//! replicas that must agree on tenants, keys, limits and budgets.
//!
//! - Every operation is bounded by `op_timeout` ([`StoreError::Timeout`]); connection errors
//!   are [`StoreError::Unavailable`]. Both clients reconnect by themselves when Redis returns.
//! - Counter operations are one Lua script each (`scripts.rs`): atomic and one round trip.
//!   `now_ms` always comes from the caller, never from Redis `TIME`, so this backend and the
//!   embedded one compute the same windows.
//! - Tenant and key writes bump `sntl:changes` and publish the changed id on the channel of the
//!   same name ([`RedisStore::subscribe_changes`]), so replicas drop cached entries at once.
//!
//! The key layout is in `keys.rs`.

mod audit;
mod cache;
mod changes;
mod keys;
mod lease;
mod scripts;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

use self::scripts::{
    ADMIT_SCRIPT, BUDGET_RESERVE_SCRIPT, BUDGET_SETTLE_SCRIPT, BUMP_SCRIPT, PUT_KEY_SCRIPT,
    REVOKE_KEY_SCRIPT, WINDOW_ADJUST_SCRIPT, WINDOW_TAKE_SCRIPT,
};
use super::{
    AuditPage, AuditQuery, AuditStore, BudgetDecision, BudgetReserve, CacheStore, ChainHead,
    CounterStore, KeyRecord, KeyStore, LeaseEnd, LeaseGrant, LeaseTake, Outcome, Store, StoreError,
    StoreResult, Tenant, TenantStore, UsageGrain, UsageRow, WindowDecision, WindowTake,
};
use crate::audit::record::{AuditRecord, JudgeResult};
use crate::lanes::PerLane;

/// Where the Redis store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://host:port/db`.
    Standalone(String),
    /// A Redis Cluster: some of its nodes' URLs (the rest are discovered).
    Cluster(Vec<String>),
}

impl std::fmt::Debug for RedisTarget {
    // URLs may carry a password: show only the shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone(_) => f.write_str("Standalone"),
            Self::Cluster(nodes) => write!(f, "Cluster({} seed nodes)", nodes.len()),
        }
    }
}

/// The Redis-backed [`Store`]. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    /// The shared connection, and each serving lane's own once it has attached (see
    /// [`crate::lanes`]): a lane's requests then never wait on another thread's driver task.
    conns: Arc<PerLane<Conn>>,
    /// Whether each lane's connection answered its last [`Store::ping`].
    lanes_ok: Arc<[AtomicBool]>,
    /// Where lane connections go.
    target: RedisTarget,
    /// Clients for pub/sub connections: the server, or each cluster seed node in turn.
    pubsub: Vec<redis::Client>,
    op_timeout: Duration,
    /// How long audit records are kept (`audit.retention`).
    audit_retention: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conns.shared() {
            Conn::Standalone(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("kind", &kind)
            .field("lanes", &self.conns.lanes())
            .field("pubsub_nodes", &self.pubsub.len())
            .field("op_timeout", &self.op_timeout)
            .field("audit_retention", &self.audit_retention)
            .finish_non_exhaustive()
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects and checks that the store answers. Fails with [`StoreError::Unavailable`]
    /// (or [`StoreError::Timeout`]) when it cannot be reached within `max(op_timeout, 1 s)`;
    /// once connected, the store reconnects by itself whenever Redis comes back.
    pub async fn connect(target: RedisTarget, op_timeout: Duration) -> Result<Self, StoreError> {
        let (conn, pubsub) = open(&target, op_timeout).await?;
        let store = Self {
            conns: Arc::new(PerLane::new(conn, 0)),
            lanes_ok: Arc::new([]),
            target,
            pubsub,
            op_timeout,
            audit_retention: Duration::from_secs(30 * 24 * 3600),
        };
        // A cluster connection can exist before its slots are served: check with one read.
        store.change_seq().await?;
        Ok(store)
    }

    /// Leaves room for `lanes` serving lanes to attach their own connections
    /// ([`Store::attach_lane`]). Call before the store is cloned.
    #[must_use]
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.conns = Arc::new(PerLane::new(self.conns.shared().clone(), lanes));
        self.lanes_ok = (0..lanes).map(|_| AtomicBool::new(true)).collect();
        self
    }

    /// Keeps audit records (and their request-id lookups) for `retention`.
    #[must_use]
    pub fn with_audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = retention;
        self
    }

    /// The calling thread's connection: its lane's own, or the shared one.
    fn conn(&self) -> Conn {
        self.conns.get().clone()
    }

    /// Runs `op` on a clone of the connection, bounded by the operation timeout.
    async fn run<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        tokio::time::timeout(self.op_timeout, op(self.conn()))
            .await
            .map_err(|_| StoreError::Timeout)?
    }
}

/// Connects to `target` (the connection's driver task runs on the calling runtime) and
/// returns the connection plus the clients for pub/sub connections. Fails with
/// [`StoreError::Unavailable`] or [`StoreError::Timeout`] within `max(op_timeout, 1 s)`.
async fn open(
    target: &RedisTarget,
    op_timeout: Duration,
) -> StoreResult<(Conn, Vec<redis::Client>)> {
    // Establishing a connection may take a few round trips (cluster: one per node), so
    // it gets a little more than one operation.
    let connect_timeout = op_timeout.max(Duration::from_secs(1));
    let connecting = async {
        match target {
            RedisTarget::Standalone(url) => {
                let client = client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(op_timeout))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1))
                    .set_number_of_retries(3);
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok::<_, StoreError>((Conn::Standalone(manager), vec![client]))
            }
            RedisTarget::Cluster(nodes) => {
                let pubsub = nodes
                    .iter()
                    .map(|url| client(url))
                    .collect::<Result<Vec<_>, _>>()?;
                if pubsub.is_empty() {
                    return Err(StoreError::Unavailable(
                        "no redis cluster nodes configured".into(),
                    ));
                }
                let client = ClusterClientBuilder::new(nodes.clone())
                    .tcp_settings(tcp_settings())
                    .connection_timeout(connect_timeout)
                    .response_timeout(op_timeout)
                    .retries(3)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Ok((Conn::Cluster(conn), pubsub))
            }
        }
    };
    tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| StoreError::Timeout)?
}

/// Bumps the change sequence and publishes `ids` (after the write they announce).
async fn bump(conn: &mut Conn, ids: &[&str]) -> StoreResult<()> {
    let mut invocation = BUMP_SCRIPT.key(keys::CHANGES);
    invocation.arg(keys::CHANGES);
    for id in ids {
        invocation.arg(*id);
    }
    let _seq: u64 = invocation.invoke_async(conn).await?;
    Ok(())
}

/// Reads a key record by id: the JSON record plus the authoritative `revoked_at` field.
async fn load_key(conn: &mut Conn, id: &str) -> StoreResult<Option<KeyRecord>> {
    let (rec, revoked_at): (Option<String>, Option<i64>) = redis::cmd("HMGET")
        .arg(keys::key(id))
        .arg("rec")
        .arg("revoked_at")
        .query_async(conn)
        .await?;
    rec.map(|rec| decode_key(&rec, revoked_at)).transpose()
}

fn decode_key(rec: &str, revoked_at: Option<i64>) -> StoreResult<KeyRecord> {
    let mut key: KeyRecord =
        serde_json::from_str(rec).map_err(|e| StoreError::Corrupt(format!("key record: {e}")))?;
    key.revoked_at = revoked_at;
    Ok(key)
}

/// Revokes one key (keeping an earlier revocation time); `None` when it does not exist.
async fn revoke(conn: &mut Conn, id: &str, at_unix: i64) -> StoreResult<Option<KeyRecord>> {
    let found: Option<(String, i64)> = REVOKE_KEY_SCRIPT
        .key(keys::key(id))
        .arg(at_unix)
        .invoke_async(conn)
        .await?;
    found
        .map(|(rec, at)| decode_key(&rec, Some(at)))
        .transpose()
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn non_negative(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}: {v}")))
}

// === impl TenantStore ===

#[async_trait]
impl TenantStore for RedisStore {
    async fn put_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let json = serde_json::to_string(tenant)
            .map_err(|e| StoreError::Corrupt(format!("tenant record: {e}")))?;
        self.run(|mut conn| async move {
            // Two slots in a cluster: two commands, pipelined on the one connection.
            let mut c2 = conn.clone();
            let set = async { conn.set::<_, _, ()>(keys::tenant(&tenant.id), &json).await };
            let add = async { c2.sadd::<_, _, ()>(keys::TENANTS, &tenant.id).await };
            futures_util::try_join!(set, add)?;
            bump(&mut conn, &[&tenant.id]).await
        })
        .await
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        self.run(|mut conn| async move {
            let json: Option<String> = conn.get(keys::tenant(id)).await?;
            json.map(|j| {
                serde_json::from_str(&j)
                    .map_err(|e| StoreError::Corrupt(format!("tenant {id}: {e}")))
            })
            .transpose()
        })
        .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.run(|mut conn| async move {
            let ids: Vec<String> = conn.smembers(keys::TENANTS).await?;
            let reads = ids.iter().map(|id| {
                let mut conn = conn.clone();
                async move { conn.get::<_, Option<String>>(keys::tenant(id)).await }
            });
            let mut tenants = Vec::with_capacity(ids.len());
            // A tenant deleted between the two reads is simply not listed.
            for json in try_join_all(reads).await?.into_iter().flatten() {
                tenants.push(
                    serde_json::from_str::<Tenant>(&json)
                        .map_err(|e| StoreError::Corrupt(format!("tenant record: {e}")))?,
                );
            }
            tenants.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(tenants)
        })
        .await
    }

    async fn delete_tenant(&self, id: &str) -> StoreResult<bool> {
        let at = super::unix_now();
        self.run(|mut conn| async move {
            // Revoke first: if this fails half-way the tenant still exists and a retry
            // finishes the job.
            let key_ids: Vec<String> = conn.zrange(keys::tenant_keys(id), 0, -1).await?;
            try_join_all(key_ids.iter().map(|key_id| {
                let mut conn = conn.clone();
                async move { revoke(&mut conn, key_id, at).await }
            }))
            .await?;
            let mut c2 = conn.clone();
            let del = async { conn.del::<_, u64>(keys::tenant(id)).await };
            let rem = async { c2.srem::<_, _, u64>(keys::TENANTS, id).await };
            let (deleted, removed) = futures_util::try_join!(del, rem)?;
            let mut changed: Vec<&str> = vec![id];
            changed.extend(key_ids.iter().map(String::as_str));
            bump(&mut conn, &changed).await?;
            Ok(deleted + removed > 0)
        })
        .await
    }
}

// === impl KeyStore ===

#[async_trait]
impl KeyStore for RedisStore {
    async fn put_key(&self, key: &KeyRecord) -> StoreResult<()> {
        // `revoked_at` lives in its own field so revocation is one atomic HSETNX.
        let record = KeyRecord {
            revoked_at: None,
            ..key.clone()
        };
        let json = serde_json::to_string(&record)
            .map_err(|e| StoreError::Corrupt(format!("key record: {e}")))?;
        let revoked_at = key.revoked_at.map(|at| at.to_string()).unwrap_or_default();
        self.run(|mut conn| async move {
            let (mut c2, mut c3) = (conn.clone(), conn.clone());
            let rec = async {
                PUT_KEY_SCRIPT
                    .key(keys::key(&key.id))
                    .arg(&json)
                    .arg(&revoked_at)
                    .invoke_async::<()>(&mut conn)
                    .await
            };
            let by_hash = async { c2.set::<_, _, ()>(keys::key_hash(&key.hash), &key.id).await };
            let listed = async {
                c3.zadd::<_, _, _, ()>(keys::tenant_keys(&key.tenant), &key.id, key.created_at)
                    .await
            };
            futures_util::try_join!(rec, by_hash, listed)?;
            bump(&mut conn, &[&key.id]).await
        })
        .await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRecord>> {
        let hex = super::hex(hash);
        self.run(|mut conn| async move {
            let Some(id) = conn.get::<_, Option<String>>(keys::key_hash(&hex)).await? else {
                return Ok(None);
            };
            // Trust the record, not the index: a stale index entry finds nothing.
            Ok(load_key(&mut conn, &id).await?.filter(|k| k.hash == hex))
        })
        .await
    }

    async fn key_by_id(&self, id: &str) -> StoreResult<Option<KeyRecord>> {
        self.run(|mut conn| async move { load_key(&mut conn, id).await })
            .await
    }

    async fn list_keys(&self, tenant: &str) -> StoreResult<Vec<KeyRecord>> {
        self.run(|mut conn| async move {
            // Oldest first: scored by created_at, ties by id.
            let ids: Vec<String> = conn.zrange(keys::tenant_keys(tenant), 0, -1).await?;
            let loads = ids.iter().map(|id| {
                let mut conn = conn.clone();
                async move { load_key(&mut conn, id).await }
            });
            Ok(try_join_all(loads).await?.into_iter().flatten().collect())
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at_unix: i64) -> StoreResult<Option<KeyRecord>> {
        self.run(|mut conn| async move {
            let revoked = revoke(&mut conn, id, at_unix).await?;
            if revoked.is_some() {
                // Announced even when it was already revoked: a retry after a lost bump
                // still reaches every replica.
                bump(&mut conn, &[id]).await?;
            }
            Ok(revoked)
        })
        .await
    }

    async fn change_seq(&self) -> StoreResult<u64> {
        self.run(|mut conn| async move {
            Ok(conn
                .get::<_, Option<u64>>(keys::CHANGES)
                .await?
                .unwrap_or(0))
        })
        .await
    }
}

// === impl CounterStore ===

#[async_trait]
impl CounterStore for RedisStore {
    async fn window_take(
        &self,
        scope: &str,
        limit: u64,
        window: Duration,
        amount: u64,
        now_ms: u64,
    ) -> StoreResult<WindowDecision> {
        let w = window_ms(window);
        let (current, previous) = bucket_keys(scope, now_ms / w);
        self.run(|mut conn| async move {
            let (allowed, count, retry): (i64, i64, i64) = WINDOW_TAKE_SCRIPT
                .key(current)
                .key(previous)
                .arg(limit)
                .arg(w)
                .arg(amount)
                .arg(now_ms % w)
                .arg(bucket_ttl_ms(w))
                .invoke_async(&mut conn)
                .await?;
            window_decision(allowed, count, retry)
        })
        .await
    }

    async fn admit(
        &self,
        takes: &[WindowTake],
        window: Duration,
        budget: Option<&BudgetReserve>,
        now_ms: u64,
    ) -> StoreResult<(Vec<WindowDecision>, Option<BudgetDecision>)> {
        if takes.is_empty() && budget.is_none() {
            return Ok((Vec::new(), None));
        }
        let w = window_ms(window);
        let bucket = now_ms / w;
        let mut invocation = ADMIT_SCRIPT.prepare_invoke();
        for t in takes {
            let (current, previous) = bucket_keys(&t.scope, bucket);
            invocation.key(current).key(previous);
        }
        if let Some(b) = budget {
            invocation
                .key(keys::budget(&b.tenant, &b.period))
                .key(keys::leases(&b.tenant));
        }
        invocation
            .arg(takes.len())
            .arg(w)
            .arg(now_ms % w)
            .arg(bucket_ttl_ms(w))
            .arg(u8::from(budget.is_some()));
        for t in takes {
            invocation.arg(t.limit).arg(t.amount);
        }
        if let Some(b) = budget {
            invocation
                .arg(b.amount)
                .arg(b.limit)
                .arg(u8::from(b.enforce));
        }
        let flat: Vec<i64> = self
            .run(|mut conn| async move { Ok(invocation.invoke_async(&mut conn).await?) })
            .await?;
        let expected = 3 * (takes.len() + usize::from(budget.is_some()));
        if flat.len() != expected {
            return Err(StoreError::Corrupt(format!(
                "admit answered {} values, expected {expected}",
                flat.len()
            )));
        }
        let (windows, spend) = flat.split_at(3 * takes.len());
        let decisions = windows
            .chunks_exact(3)
            .map(|d| window_decision(d[0], d[1], d[2]))
            .collect::<StoreResult<Vec<_>>>()?;
        let spend = match spend {
            [allowed, spent_nano, reserved_nano] => Some(BudgetDecision {
                allowed: *allowed == 1,
                spent: *spent_nano,
                reserved: *reserved_nano,
            }),
            _ => None,
        };
        Ok((decisions, spend))
    }

    async fn lease_take(
        &self,
        lease: &LeaseTake,
        window: Duration,
    ) -> StoreResult<Option<LeaseGrant>> {
        self.take_lease(lease, window).await
    }

    async fn lease_end(&self, end: &LeaseEnd, window: Duration) -> StoreResult<()> {
        self.end_lease(end, window).await
    }

    async fn window_adjust(
        &self,
        scope: &str,
        window: Duration,
        delta: i64,
        taken_at_ms: u64,
    ) -> StoreResult<()> {
        let w = window_ms(window);
        let bucket = keys::window(scope, taken_at_ms / w);
        self.run(|mut conn| async move {
            let _: i64 = WINDOW_ADJUST_SCRIPT
                .key(bucket)
                .arg(delta)
                .arg(bucket_ttl_ms(w))
                .invoke_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn budget_reserve(
        &self,
        tenant: &str,
        period: &str,
        amount: i64,
        limit: i64,
        enforce: bool,
    ) -> StoreResult<BudgetDecision> {
        self.run(|mut conn| async move {
            let (allowed, spent, reserved): (i64, i64, i64) = BUDGET_RESERVE_SCRIPT
                .key(keys::budget(tenant, period))
                .arg(amount)
                .arg(limit)
                .arg(u8::from(enforce))
                .invoke_async(&mut conn)
                .await?;
            Ok(BudgetDecision {
                allowed: allowed == 1,
                spent,
                reserved,
            })
        })
        .await
    }

    async fn budget_settle(
        &self,
        tenant: &str,
        period: &str,
        reserved: i64,
        actual: i64,
    ) -> StoreResult<()> {
        self.run(|mut conn| async move {
            let _: i64 = BUDGET_SETTLE_SCRIPT
                .key(keys::budget(tenant, period))
                .arg(reserved)
                .arg(actual)
                .arg(reserved.saturating_neg())
                .invoke_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn budget_state(&self, tenant: &str, period: &str) -> StoreResult<(i64, i64)> {
        self.run(|mut conn| async move {
            let (spent, reserved): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(keys::budget(tenant, period))
                .arg("spent")
                .arg("reserved")
                .query_async(&mut conn)
                .await?;
            Ok((spent.unwrap_or(0), reserved.unwrap_or(0)))
        })
        .await
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn record_outcomes(&self, batch: &[Outcome]) -> StoreResult<usize> {
        self.record_outcomes_impl(batch).await
    }

    async fn audit_page(&self, tenant: &str, query: &AuditQuery) -> StoreResult<AuditPage> {
        self.audit_page_impl(tenant, query).await
    }

    async fn audit_get(&self, tenant: &str, request_id: &str) -> StoreResult<Option<AuditRecord>> {
        self.audit_get_impl(tenant, request_id).await
    }

    async fn audit_all(&self, tenant: &str) -> StoreResult<(Vec<AuditRecord>, Vec<ChainHead>)> {
        self.audit_all_impl(tenant).await
    }

    async fn set_judge(
        &self,
        tenant: &str,
        request_id: &str,
        judge: &JudgeResult,
    ) -> StoreResult<()> {
        self.set_judge_impl(tenant, request_id, judge).await
    }

    async fn usage_rows(
        &self,
        tenant: &str,
        start_day: &str,
        end_day: &str,
        grain: UsageGrain,
    ) -> StoreResult<Vec<UsageRow>> {
        self.usage_rows_impl(tenant, start_day, end_day, grain)
            .await
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn cache_get(&self, tenant: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.cache_get_impl(tenant, key).await
    }

    async fn cache_put(
        &self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> StoreResult<()> {
        self.cache_put_impl(tenant, key, value, ttl).await
    }

    async fn semantic_append(
        &self,
        tenant: &str,
        partition: &str,
        entry: &[u8],
        max_entries: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        self.semantic_append_impl(tenant, partition, entry, max_entries, ttl)
            .await
    }

    async fn semantic_since(
        &self,
        tenant: &str,
        partition: &str,
        from: u64,
    ) -> StoreResult<(Vec<Vec<u8>>, u64)> {
        self.semantic_since_impl(tenant, partition, from).await
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn attach_lane(&self, lane: usize) {
        match open(&self.target, self.op_timeout).await {
            Ok((conn, _)) => {
                if self.conns.set(lane, conn).is_err() {
                    tracing::debug!(lane, "lane already has its redis connection");
                }
            }
            // Not fatal: the lane uses the shared connection, as every thread once did.
            Err(err) => {
                tracing::warn!(lane, error = %err, "lane cannot open its own redis connection; it shares the main one");
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        let pinged = self
            .run(|mut conn| async move {
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
                Ok(())
            })
            .await;
        if let Some(ok) = crate::lanes::current().and_then(|lane| self.lanes_ok.get(lane)) {
            ok.store(pinged.is_ok(), Ordering::Relaxed);
        }
        pinged
    }

    fn lanes_ok(&self) -> bool {
        self.lanes_ok.iter().all(|ok| ok.load(Ordering::Relaxed))
    }
}

// === Conn ===

/// The keys of a window's current and previous bucket. Bucket 0 has no predecessor;
/// `u64::MAX` is never a live bucket.
fn bucket_keys(scope: &str, bucket: u64) -> (String, String) {
    (
        keys::window(scope, bucket),
        keys::window(scope, bucket.wrapping_sub(1)),
    )
}

/// A window take's answer as the scripts return it: allowed (`1`/`0`), count, retry ms.
fn window_decision(allowed: i64, count: i64, retry: i64) -> StoreResult<WindowDecision> {
    Ok(WindowDecision {
        allowed: allowed == 1,
        count: non_negative(count, "window count")?,
        retry_after_ms: non_negative(retry, "retry_after_ms")?,
    })
}

/// How long a window bucket lives: it counts as the previous window until its successor ends,
/// two windows after its own start by the clock of whichever replica reads it. The third
/// window is slack for replicas whose clocks run behind the one that created it (the bucket
/// gets its expiry once, when created).
pub(super) fn bucket_ttl_ms(window_ms: u64) -> u64 {
    window_ms.saturating_mul(3)
}

/// Without `TCP_NODELAY` (redis-rs leaves Nagle on by default) a command written while an
/// earlier one is unacknowledged waits for that acknowledgement: admission could wait behind
/// an audit write's round trip.
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn client(url: &str) -> Result<redis::Client, StoreError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?
        .set_tcp_settings(tcp_settings());
    redis::Client::open(info)
        .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))
}

/// One connection type for both deployments; both variants multiplex and are cheap to clone.
#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(e: RedisError) -> Self {
        if e.is_timeout() {
            return Self::Timeout;
        }
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Self::Corrupt(e.to_string()),
            _ => Self::Unavailable(e.to_string()),
        }
    }
}
