//! The SQLite side of the embedded store: one connection, owned by one dedicated thread that
//! runs jobs sent over a channel, so no async worker ever waits on SQLite (or on the file lock
//! another process holds) and prepared statements stay cached between calls.
//!
//! The file is in WAL mode with a busy timeout, so a second process (the `sentinel keys` CLI)
//! can write while the server runs; every tenant or key write bumps `meta.change_seq` in the
//! same transaction, which is how the server notices.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use tokio::sync::oneshot;

use crate::store::{KeyRecord, StoreError, StoreResult, Tenant};

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bumped when the schema changes incompatibly; checked at open.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', 2), ('change_seq', 0);

CREATE TABLE IF NOT EXISTS tenants (
    id     TEXT PRIMARY KEY,
    record TEXT NOT NULL            -- the Tenant as JSON
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE, -- SHA-256 of the secret, lower-case hex; never the secret
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    limits     TEXT                  -- the key's own Limits as JSON; NULL = none (schema 2)
);
CREATE INDEX IF NOT EXISTS keys_by_tenant ON keys (tenant, created_at);

-- Settled spend only: reservations live in memory and die with the process.
CREATE TABLE IF NOT EXISTS budgets (
    tenant TEXT NOT NULL,
    period TEXT NOT NULL,
    spent  INTEGER NOT NULL,
    PRIMARY KEY (tenant, period)
) WITHOUT ROWID;

-- The audit log: one sealed record per (tenant, chain, seq) — the seal is what makes a write
-- unique, since clients may reuse a request id; rowid is the write order and the pagination
-- cursor. `judge` is attached after sealing and is outside the hash.
CREATE TABLE IF NOT EXISTS audit (
    tenant     TEXT NOT NULL,
    chain      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    record     TEXT NOT NULL,
    UNIQUE (tenant, chain, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (tenant, ts_ms);
CREATE INDEX IF NOT EXISTS audit_by_request ON audit (tenant, request_id);
CREATE TABLE IF NOT EXISTS audit_judge (
    tenant     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    judge      TEXT NOT NULL,
    PRIMARY KEY (tenant, request_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit_chains (
    tenant TEXT NOT NULL,
    chain  TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL,
    PRIMARY KEY (tenant, chain)
) WITHOUT ROWID;

-- Cached answers (opaque, compressed by the cache layer) and semantic-cache entries.
CREATE TABLE IF NOT EXISTS cache (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_by_expiry ON cache (expires_ms);
CREATE TABLE IF NOT EXISTS semantic (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant     TEXT NOT NULL,
    partition  TEXT NOT NULL,
    entry      BLOB NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS semantic_by_partition ON semantic (tenant, partition, id);

-- Usage rollups, updated in the same transaction as the audit record they count.
CREATE TABLE IF NOT EXISTS usage (
    tenant            TEXT NOT NULL,
    day               TEXT NOT NULL,
    model             TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_nano         INTEGER NOT NULL,
    cache_hits        INTEGER NOT NULL,
    saved_nano        INTEGER NOT NULL,
    PRIMARY KEY (tenant, day, model, key_id)
) WITHOUT ROWID;
";

/// Work for the SQLite thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Durable spend read at open: `(tenant, period, spent)`.
pub(super) type SpentRows = Vec<(String, String, i64)>;

/// Handle to the SQLite thread. Dropping it lets the thread finish the queued jobs, close the
/// connection, and waits for that.
pub(super) struct Db {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Db {
    /// Starts the thread: creates `path`'s directories, opens the file, sets it up, and reads
    /// back the durable spend.
    pub(super) async fn open(path: &Path) -> StoreResult<(Self, SpentRows)> {
        let path = path.to_path_buf();
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, opened) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sentinel-sqlite".into())
            .spawn(move || {
                let mut conn = match open_connection(&path)
                    .and_then(|conn| load_spent(&conn).map(|rows| (conn, rows)))
                {
                    Ok((conn, rows)) => {
                        // The receiver only goes away when `open` was cancelled.
                        if ready.send(Ok(rows)).is_err() {
                            return;
                        }
                        conn
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                // Ends when every sender is gone: the store was dropped.
                while let Ok(job) = queue.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the SQLite thread: {e}")))?;
        let db = Self {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        let rows = opened.await.map_err(|_| stopped())??;
        Ok((db, rows))
    }

    /// Runs `f` on the SQLite thread and waits for its answer.
    pub(super) async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.send(Box::new(move |conn| {
            // The caller may have stopped waiting (a timeout); the work is done regardless.
            let _ = reply.send(f(conn));
        }))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Queues `job` without waiting for it.
    pub(super) fn send(&self, job: Job) -> StoreResult<()> {
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop after the jobs already queued (the final
        // budget flush among them); waiting for it makes a dropped store durable before the
        // process exits. This blocks the dropping thread for at most that queue, once.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the SQLite thread panicked");
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite thread has stopped".into())
}

/// Maps SQLite errors: a lock still held after the busy timeout is a timeout, bad rows and
/// broken files are corrupt, a clash with a unique id or hash is refused as corrupt input,
/// anything else (I/O, permissions, full disk) makes the store unavailable.
#[expect(
    clippy::needless_pass_by_value,
    reason = "shaped for `.map_err(map_err)`"
)]
pub(super) fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &e {
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        _ => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Timeout,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e.to_string())
            }
            Some(ErrorCode::ConstraintViolation) => {
                StoreError::Corrupt(format!("refused by a uniqueness rule: {e}"))
            }
            _ => StoreError::Unavailable(format!("SQLite: {e}")),
        },
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(map_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use WAL mode (got {mode})",
            path.display()
        )));
    }
    // In WAL mode NORMAL syncs at checkpoints, not per commit: a power cut may lose the last
    // commits, a process crash loses nothing committed.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(map_err)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(SCHEMA).map_err(map_err)?;
    let mut version: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    if version == 1 {
        // Schema 1 had no per-key limits.
        tx.execute_batch(
            "ALTER TABLE keys ADD COLUMN limits TEXT;
             UPDATE meta SET value = 2 WHERE name = 'schema_version';",
        )
        .map_err(map_err)?;
        version = 2;
    }
    if version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {version}, this build reads {SCHEMA_VERSION}",
            path.display()
        )));
    }
    tx.commit().map_err(map_err)?;
    Ok(conn)
}

fn load_spent(conn: &Connection) -> StoreResult<SpentRows> {
    let mut stmt = conn
        .prepare("SELECT tenant, period, spent FROM budgets")
        .map_err(map_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(map_err)?;
    rows.collect::<Result<_, _>>().map_err(map_err)
}

/// Adds settled spend to the durable rows, in one transaction.
pub(super) fn add_spent(
    conn: &mut Connection,
    pending: &[(String, String, i64)],
) -> StoreResult<()> {
    let tx = write(conn)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO budgets (tenant, period, spent) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, period) DO UPDATE SET spent = spent + excluded.spent",
            )
            .map_err(map_err)?;
        for (tenant, period, delta) in pending {
            stmt.execute(params![tenant, period, delta])
                .map_err(map_err)?;
        }
    }
    tx.commit().map_err(map_err)
}

/// A write transaction that takes the file's write lock up front, so it waits (busy timeout)
/// instead of failing half-way when another process writes.
pub(super) fn write(conn: &mut Connection) -> StoreResult<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)
}

/// Advances `change_seq`; call inside the transaction that changed a tenant or key.
fn bump(tx: &Transaction<'_>) -> StoreResult<()> {
    tx.prepare_cached("UPDATE meta SET value = value + 1 WHERE name = 'change_seq'")
        .and_then(|mut s| s.execute([]))
        .map_err(map_err)?;
    Ok(())
}

pub(super) fn change_seq(conn: &Connection) -> StoreResult<u64> {
    let seq: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE name = 'change_seq'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(map_err)?;
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative change_seq {seq}")))
}

// === Tenants ===

pub(super) fn put_tenant(conn: &mut Connection, tenant: &Tenant) -> StoreResult<()> {
    let json = serde_json::to_string(tenant)
        .map_err(|e| StoreError::Corrupt(format!("tenant {} cannot be encoded: {e}", tenant.id)))?;
    let tx = write(conn)?;
    tx.prepare_cached("INSERT INTO tenants (id, record) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET record = excluded.record")
        .and_then(|mut s| s.execute(params![tenant.id, json]))
        .map_err(map_err)?;
    bump(&tx)?;
    tx.commit().map_err(map_err)
}

fn decode_tenant(id: &str, json: &str) -> StoreResult<Tenant> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("tenant {id}: {e}")))
}

pub(super) fn get_tenant(conn: &Connection, id: &str) -> StoreResult<Option<Tenant>> {
    let json: Option<String> = conn
        .prepare_cached("SELECT record FROM tenants WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(map_err)?;
    json.map(|json| decode_tenant(id, &json)).transpose()
}

pub(super) fn list_tenants(conn: &Connection) -> StoreResult<Vec<Tenant>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, record FROM tenants ORDER BY id")
        .map_err(map_err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(map_err)?;
    rows.map(|row| {
        let (id, json) = row.map_err(map_err)?;
        decode_tenant(&id, &json)
    })
    .collect()
}

/// Deletes the tenant and revokes its live keys at `now_unix`.
pub(super) fn delete_tenant(conn: &mut Connection, id: &str, now_unix: i64) -> StoreResult<bool> {
    let tx = write(conn)?;
    let deleted = tx
        .execute("DELETE FROM tenants WHERE id = ?1", [id])
        .map_err(map_err)?;
    let revoked = tx
        .execute(
            "UPDATE keys SET revoked_at = ?2 WHERE tenant = ?1 AND revoked_at IS NULL",
            params![id, now_unix],
        )
        .map_err(map_err)?;
    if deleted + revoked > 0 {
        bump(&tx)?;
    }
    tx.commit().map_err(map_err)?;
    Ok(deleted > 0)
}

// === Keys ===

/// The columns [`key_row`] reads, in its order.
macro_rules! key_columns {
    () => {
        "id, tenant, name, prefix, hash, created_at, expires_at, revoked_at, limits"
    };
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked_at: r.get(7)?,
        limits: match r.get_ref(8)?.as_str_or_null()? {
            None => crate::store::Limits::default(),
            Some(json) => serde_json::from_str(json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, e.into())
            })?,
        },
    })
}

/// Inserts a key, or replaces the record with the same id (so bootstrapping from the config
/// is idempotent). A hash already used by another id is refused.
pub(super) fn put_key(conn: &mut Connection, key: &KeyRecord) -> StoreResult<()> {
    let limits = if key.limits.is_unlimited() {
        None
    } else {
        Some(
            serde_json::to_string(&key.limits)
                .map_err(|e| StoreError::Corrupt(format!("key limits: {e}")))?,
        )
    };
    let tx = write(conn)?;
    tx.prepare_cached(
        "INSERT INTO keys (id, tenant, name, prefix, hash, created_at, expires_at, revoked_at, limits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name,
             prefix = excluded.prefix, hash = excluded.hash, created_at = excluded.created_at,
             expires_at = excluded.expires_at, revoked_at = excluded.revoked_at,
             limits = excluded.limits",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.id,
            key.tenant,
            key.name,
            key.prefix,
            key.hash.to_ascii_lowercase(),
            key.created_at,
            key.expires_at,
            key.revoked_at,
            limits
        ])
    })
    .map_err(map_err)?;
    bump(&tx)?;
    tx.commit().map_err(map_err)
}

pub(super) fn key_by(
    conn: &Connection,
    column: KeyColumn,
    value: &str,
) -> StoreResult<Option<KeyRecord>> {
    let sql = match column {
        KeyColumn::Id => concat!("SELECT ", key_columns!(), " FROM keys WHERE id = ?1"),
        KeyColumn::Hash => concat!("SELECT ", key_columns!(), " FROM keys WHERE hash = ?1"),
    };
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row([value], key_row).optional())
        .map_err(map_err)
}

/// Which unique column a key is looked up by.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyColumn {
    Id,
    Hash,
}

pub(super) fn list_keys(conn: &Connection, tenant: &str) -> StoreResult<Vec<KeyRecord>> {
    // rowid breaks ties between keys created in the same second: insertion order.
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            key_columns!(),
            " FROM keys WHERE tenant = ?1 ORDER BY created_at, rowid"
        ))
        .map_err(map_err)?;
    let rows = stmt.query_map([tenant], key_row).map_err(map_err)?;
    rows.collect::<Result<_, _>>().map_err(map_err)
}

/// Sets `revoked_at` unless already set; returns the record as it is afterwards.
pub(super) fn revoke_key(
    conn: &mut Connection,
    id: &str,
    at_unix: i64,
) -> StoreResult<Option<KeyRecord>> {
    let tx = write(conn)?;
    let changed = tx
        .execute(
            "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at_unix],
        )
        .map_err(map_err)?;
    if changed > 0 {
        bump(&tx)?;
    }
    let key = key_by(&tx, KeyColumn::Id, id)?;
    tx.commit().map_err(map_err)?;
    Ok(key)
}
