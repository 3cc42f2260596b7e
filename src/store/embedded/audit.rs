//! The audit log and usage rollups in SQLite (see the schema in `db.rs`). Runs on the SQLite
//! thread; each batch of outcomes is one transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::db::{map_err, write};
use crate::audit::record::{day_of, AuditRecord, JudgeResult};
use crate::store::{
    AuditPage, AuditQuery, ChainHead, Outcome, Settlement, StoreError, StoreResult, UsageGrain,
    UsageRow,
};

/// Most rows one page request reads before answering with what it found (filters that match
/// rarely must not scan a whole tenant in one call).
const SCAN_CAP: usize = 20_000;

/// Inserts the new outcomes of `batch` (new by their seal: tenant, chain and seq); returns the settlements of those that were new (the
/// in-memory counters apply them after the commit).
pub(super) fn record_outcomes(
    conn: &mut Connection,
    batch: &[Outcome],
) -> StoreResult<Vec<(String, Settlement, i64)>> {
    let tx = write(conn)?;
    let mut fresh = Vec::new();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO audit (tenant, chain, seq, request_id, ts_ms, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map_err)?;
        let mut usage = tx
            .prepare_cached(
                "INSERT INTO usage (tenant, day, model, key_id, requests, prompt_tokens,
                     completion_tokens, cost_nano, cache_hits, saved_nano)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (tenant, day, model, key_id) DO UPDATE SET
                     requests = requests + 1,
                     prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                     completion_tokens = completion_tokens + excluded.completion_tokens,
                     cost_nano = cost_nano + excluded.cost_nano,
                     cache_hits = cache_hits + excluded.cache_hits,
                     saved_nano = saved_nano + excluded.saved_nano",
            )
            .map_err(map_err)?;
        let mut chain = tx
            .prepare_cached(
                "INSERT INTO audit_chains (tenant, chain, seq, hash) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash
                 WHERE excluded.seq > audit_chains.seq",
            )
            .map_err(map_err)?;
        for outcome in batch {
            let r = &outcome.record;
            let json = serde_json::to_string(r)
                .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
            let ts = i64::try_from(r.ts_ms).unwrap_or(i64::MAX);
            if insert
                .execute(params![
                    r.tenant,
                    r.chain,
                    clamp(r.seq),
                    r.request_id,
                    ts,
                    json
                ])
                .map_err(map_err)?
                == 0
            {
                continue;
            }
            usage
                .execute(params![
                    r.tenant,
                    day_of(r.ts_ms),
                    r.model,
                    r.key_id,
                    clamp(r.prompt_tokens),
                    clamp(r.completion_tokens),
                    outcome.cost_nano,
                    i64::from(r.is_cache_hit()),
                    outcome.saved_nano
                ])
                .map_err(map_err)?;
            if !r.chain.is_empty() {
                chain
                    .execute(params![r.tenant, r.chain, clamp(r.seq), r.hash])
                    .map_err(map_err)?;
            }
            fresh.push((r.tenant.clone(), outcome.settle.clone(), outcome.cost_nano));
        }
    }
    tx.commit().map_err(map_err)?;
    Ok(fresh)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decode(json: &str, judge: Option<String>) -> StoreResult<AuditRecord> {
    let mut record: AuditRecord = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
    if let Some(j) = judge {
        record.judge = serde_json::from_str(&j).ok();
    }
    Ok(record)
}

pub(super) fn page(conn: &Connection, tenant: &str, q: &AuditQuery) -> StoreResult<AuditPage> {
    let before: i64 = match &q.cursor {
        None => i64::MAX,
        Some(c) => c
            .parse()
            .map_err(|_| StoreError::Corrupt("bad cursor".into()))?,
    };
    let start = q.start_ms.map_or(0, clamp);
    let end = q.end_ms.map_or(i64::MAX, clamp);
    let mut stmt = conn
        .prepare_cached(
            "SELECT a.rowid, a.record, j.judge FROM audit a
             LEFT JOIN audit_judge j ON j.tenant = a.tenant AND j.request_id = a.request_id
             WHERE a.tenant = ?1 AND a.rowid < ?2 AND a.ts_ms >= ?3 AND a.ts_ms <= ?4
             ORDER BY a.rowid DESC LIMIT ?5",
        )
        .map_err(map_err)?;
    let mut rows = stmt
        .query(params![tenant, before, start, end, clamp(SCAN_CAP as u64)])
        .map_err(map_err)?;
    let mut page = AuditPage::default();
    let mut scanned = 0;
    let mut last_rowid = None;
    while let Some(row) = rows.next().map_err(map_err)? {
        scanned += 1;
        let rowid: i64 = row.get(0).map_err(map_err)?;
        last_rowid = Some(rowid);
        let record = decode(
            &row.get::<_, String>(1).map_err(map_err)?,
            row.get(2).map_err(map_err)?,
        )?;
        if q.matches(&record) {
            page.records.push(record);
            if page.records.len() == q.limit {
                break;
            }
        }
    }
    // More may follow when the page filled up or the scan stopped at its cap.
    if page.records.len() == q.limit || scanned == SCAN_CAP {
        page.next_cursor = last_rowid.map(|r| r.to_string());
    }
    Ok(page)
}

pub(super) fn get(
    conn: &Connection,
    tenant: &str,
    request_id: &str,
) -> StoreResult<Option<AuditRecord>> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT a.record, j.judge FROM audit a
             LEFT JOIN audit_judge j ON j.tenant = a.tenant AND j.request_id = a.request_id
             WHERE a.tenant = ?1 AND a.request_id = ?2 ORDER BY a.rowid DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row(params![tenant, request_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(map_err)?;
    row.map(|(json, judge)| decode(&json, judge)).transpose()
}

pub(super) fn all(
    conn: &Connection,
    tenant: &str,
) -> StoreResult<(Vec<AuditRecord>, Vec<ChainHead>)> {
    let mut stmt = conn
        .prepare("SELECT record FROM audit WHERE tenant = ?1 ORDER BY rowid")
        .map_err(map_err)?;
    let mut records = Vec::new();
    let mut rows = stmt.query([tenant]).map_err(map_err)?;
    while let Some(row) = rows.next().map_err(map_err)? {
        records.push(decode(&row.get::<_, String>(0).map_err(map_err)?, None)?);
    }
    let mut stmt = conn
        .prepare("SELECT chain, seq, hash FROM audit_chains WHERE tenant = ?1 ORDER BY chain")
        .map_err(map_err)?;
    let heads = stmt
        .query_map([tenant], |r| {
            Ok(ChainHead {
                chain: r.get(0)?,
                seq: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                hash: r.get(2)?,
            })
        })
        .map_err(map_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err)?;
    Ok((records, heads))
}

pub(super) fn set_judge(
    conn: &mut Connection,
    tenant: &str,
    request_id: &str,
    judge: &JudgeResult,
) -> StoreResult<()> {
    let json = serde_json::to_string(judge)
        .map_err(|e| StoreError::Corrupt(format!("judge result: {e}")))?;
    conn.prepare_cached(
        "INSERT INTO audit_judge (tenant, request_id, judge) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant, request_id) DO UPDATE SET judge = excluded.judge",
    )
    .and_then(|mut s| s.execute(params![tenant, request_id, json]))
    .map_err(map_err)?;
    Ok(())
}

pub(super) fn usage_rows(
    conn: &Connection,
    tenant: &str,
    start_day: &str,
    end_day: &str,
    grain: UsageGrain,
) -> StoreResult<Vec<UsageRow>> {
    let sql = match grain {
        UsageGrain::Model => {
            "SELECT day, model, '', SUM(requests), SUM(prompt_tokens), SUM(completion_tokens),
                    SUM(cost_nano), SUM(cache_hits), SUM(saved_nano)
             FROM usage WHERE tenant = ?1 AND day >= ?2 AND day <= ?3
             GROUP BY day, model ORDER BY day, model"
        }
        UsageGrain::Key => {
            "SELECT day, '', key_id, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens),
                    SUM(cost_nano), SUM(cache_hits), SUM(saved_nano)
             FROM usage WHERE tenant = ?1 AND day >= ?2 AND day <= ?3
             GROUP BY day, key_id ORDER BY day, key_id"
        }
    };
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let rows = stmt
        .query_map(params![tenant, start_day, end_day], |r| {
            let u = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            Ok(UsageRow {
                day: r.get(0)?,
                model: r.get(1)?,
                key_id: r.get(2)?,
                requests: u(3)?,
                prompt_tokens: u(4)?,
                completion_tokens: u(5)?,
                cost_nano: r.get(6)?,
                cache_hits: u(7)?,
                saved_nano: r.get(8)?,
            })
        })
        .map_err(map_err)?;
    rows.collect::<Result<_, _>>().map_err(map_err)
}

/// Deletes records (and their judge results) older than `before_ms`.
pub(super) fn prune(conn: &mut Connection, before_ms: u64) -> StoreResult<usize> {
    let tx = write(conn)?;
    let before = clamp(before_ms);
    tx.execute(
        "DELETE FROM audit_judge WHERE (tenant, request_id) IN
             (SELECT tenant, request_id FROM audit WHERE ts_ms < ?1)",
        [before],
    )
    .map_err(map_err)?;
    let n = tx
        .execute("DELETE FROM audit WHERE ts_ms < ?1", [before])
        .map_err(map_err)?;
    tx.commit().map_err(map_err)?;
    Ok(n)
}
