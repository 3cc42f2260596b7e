//! Cached answers and semantic entries in SQLite (schema in `db.rs`), on the SQLite thread.

use rusqlite::{params, Connection, OptionalExtension};

use super::db::{map_err, write};
use crate::store::StoreResult;

fn ms(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn get(
    conn: &Connection,
    tenant: &str,
    key: &str,
    now_ms: u64,
) -> StoreResult<Option<Vec<u8>>> {
    conn.prepare_cached(
        "SELECT value FROM cache WHERE tenant = ?1 AND key = ?2 AND expires_ms > ?3",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant, key, ms(now_ms)], |r| r.get(0))
            .optional()
    })
    .map_err(map_err)
}

pub(super) fn put(
    conn: &mut Connection,
    tenant: &str,
    key: &str,
    value: &[u8],
    expires_ms: u64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO cache (tenant, key, value, expires_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, expires_ms = excluded.expires_ms",
    )
    .and_then(|mut s| s.execute(params![tenant, key, value, ms(expires_ms)]))
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn semantic_append(
    conn: &mut Connection,
    tenant: &str,
    partition: &str,
    entry: &[u8],
    max_entries: usize,
    expires_ms: u64,
) -> StoreResult<()> {
    let tx = write(conn)?;
    tx.prepare_cached(
        "INSERT INTO semantic (tenant, partition, entry, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![tenant, partition, entry, ms(expires_ms)]))
    .map_err(map_err)?;
    tx.prepare_cached(
        "DELETE FROM semantic WHERE tenant = ?1 AND partition = ?2 AND id <=
            (SELECT id FROM semantic WHERE tenant = ?1 AND partition = ?2
             ORDER BY id DESC LIMIT 1 OFFSET ?3)",
    )
    .and_then(|mut s| s.execute(params![tenant, partition, ms(max_entries as u64)]))
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}

pub(super) fn semantic_since(
    conn: &Connection,
    tenant: &str,
    partition: &str,
    from: u64,
    now_ms: u64,
) -> StoreResult<(Vec<Vec<u8>>, u64)> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, entry FROM semantic WHERE tenant = ?1 AND partition = ?2 AND id > ?3
             AND expires_ms > ?4 ORDER BY id",
        )
        .map_err(map_err)?;
    let mut rows = stmt
        .query(params![tenant, partition, ms(from), ms(now_ms)])
        .map_err(map_err)?;
    let mut out = Vec::new();
    let mut last = from;
    while let Some(row) = rows.next().map_err(map_err)? {
        let id: i64 = row.get(0).map_err(map_err)?;
        last = last.max(u64::try_from(id).unwrap_or(0));
        out.push(row.get(1).map_err(map_err)?);
    }
    Ok((out, last))
}

/// Drops expired entries and keeps at most `max_entries` answers (the soonest to expire go
/// first).
pub(super) fn prune(conn: &mut Connection, now_ms: u64, max_entries: u64) -> StoreResult<()> {
    let tx = write(conn)?;
    tx.execute("DELETE FROM cache WHERE expires_ms <= ?1", [ms(now_ms)])
        .map_err(map_err)?;
    tx.execute("DELETE FROM semantic WHERE expires_ms <= ?1", [ms(now_ms)])
        .map_err(map_err)?;
    tx.execute(
        "DELETE FROM cache WHERE (tenant, key) IN (SELECT tenant, key FROM cache
             ORDER BY expires_ms DESC LIMIT -1 OFFSET ?1)",
        [ms(max_entries)],
    )
    .map_err(map_err)?;
    tx.commit().map_err(map_err)
}
