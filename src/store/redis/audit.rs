//! The audit log, usage rollups and settlement on Redis.
//!
//! Per tenant, all in the tenant's hash-tag slot (so one Lua script can touch them together):
//!
//! | key | type | what |
//! |---|---|---|
//! | `sntl:{<t>}:audit` | stream | sealed records (`r` = JSON), trimmed by `MINID` to the retention |
//! | `sntl:{<t>}:audit:seen:<chain>:<seq>` | string | marks a sealed record as written (idempotency), expires with the retention |
//! | `sntl:{<t>}:audit:rid:<request_id>` | string | the stream id of the latest record with that request id (lookup), expires with the retention |
//! | `sntl:{<t>}:audit:judge:<request_id>` | string | the judge's result, JSON (outside the seal) |
//! | `sntl:{<t>}:audit:chains` | hash | chain id → `seq:hash` of its last record |
//! | `sntl:{<t>}:usage:<YYYY-MM-DD>:m` | hash | `<model>\x1f<metric>` → count |
//! | `sntl:{<t>}:usage:<YYYY-MM-DD>:k` | hash | `<key_id>\x1f<metric>` → count |
//!
//! Rollups are kept per model and per key (not per model × key) so a report reads a few
//! dozen fields a day, not every combination.
//!
//! One `RECORD` script per outcome writes the record, its rollup and its settlement, and does
//! nothing when the record's seal (chain and seq) is already known: replays after an outage
//! are harmless, while a client reusing a request id still gets every request recorded.

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{AsyncCommands, Script};

use super::{keys, Conn, RedisStore};
use crate::audit::record::{day_of, days_between, AuditRecord, JudgeResult};
use crate::store::{
    AuditPage, AuditQuery, ChainHead, Outcome, StoreError, StoreResult, UsageGrain, UsageRow,
};

/// Rollups outlive the audit records they count: usage reports look back this far.
const USAGE_TTL_SECS: u64 = 400 * 24 * 3600;
/// Records written this long after their timestamp (replayed after an outage) are still found
/// by an `end`-bounded query.
const LATE_WRITE_GRACE_MS: u64 = 3_600_000;
/// Entries read per `XREVRANGE` while filling a page.
const PAGE_BATCH: usize = 500;
/// Most entries one page request scans before answering with what it found.
const SCAN_CAP: usize = 20_000;
/// Unit separator between the parts of a rollup field.
const SEP: char = '\u{1f}';

/// KEYS: stream, rid, chains, usage day by model, budget period (or an unused key), seen,
/// usage day by key, window buckets...
/// ARGV: 1 record, 2 retention s, 3 minid ms, 4 chain, 5 seq, 6 hash, 7 model field prefix,
/// 8 prompt, 9 completion, 10 cost, 11 hit, 12 saved, 13 budget reserved (`''`: none),
/// 14 usage ttl s, 15 window ttl ms, 16 record time (Unix ms), 17 key field prefix, then one
/// delta per window bucket.
const RECORD: &str = r"
-- The seal marker is set only when absent: a replayed record stops here.
if not redis.call('SET', KEYS[6], '1', 'EX', ARGV[2], 'NX') then
  return 0
end
-- The entry id follows the record's time (so time ranges are id ranges), never going below
-- the newest entry: a record written late (replayed, or behind a concurrent writer) takes the
-- newest entry's millisecond. The stream's top is read only when the record's own time is
-- refused, which keeps the common case to one command.
local minid = ARGV[3]
local id = redis.pcall('XADD', KEYS[1], 'MINID', '~', minid, ARGV[16] .. '-*', 'r', ARGV[1])
if type(id) == 'table' and id.err then
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then
    id = redis.pcall('XADD', KEYS[1], 'MINID', '~', minid,
      string.match(top[1][1], '^(%d+)') .. '-*', 'r', ARGV[1])
  end
  if type(id) ~= 'string' then
    -- The stream's last id is past its newest entry (that entry was trimmed or deleted): let
    -- Redis pick the next id.
    id = redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'r', ARGV[1])
  end
end
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
if ARGV[4] ~= '' then
  local head = redis.call('HGET', KEYS[3], ARGV[4])
  local cur = 0
  if head then
    cur = tonumber(string.match(head, '^(%d+)')) or 0
  end
  if tonumber(ARGV[5]) > cur then
    redis.call('HSET', KEYS[3], ARGV[4], ARGV[5] .. ':' .. ARGV[6])
  end
end
-- Absent fields read as zero, so zero increments are skipped; a rollup hash gets its expiry
-- when its first record creates it.
for _, rollup in ipairs({{KEYS[4], ARGV[7]}, {KEYS[7], ARGV[17]}}) do
  local key, p = rollup[1], rollup[2]
  if redis.call('HINCRBY', key, p .. 'requests', 1) == 1 then
    redis.call('EXPIRE', key, ARGV[14])
  end
  for _, m in ipairs({{'prompt_tokens', ARGV[8]}, {'completion_tokens', ARGV[9]},
                      {'cost_nano', ARGV[10]}, {'cache_hits', ARGV[11]}, {'saved_nano', ARGV[12]}}) do
    if m[2] ~= '0' then
      redis.call('HINCRBY', key, p .. m[1], m[2])
    end
  end
end
if ARGV[13] ~= '' then
  local v = redis.call('HMGET', KEYS[5], 'spent', 'reserved')
  local reserved = tonumber(v[2] or '0')
  if reserved - tonumber(ARGV[13]) < 0 then
    redis.call('HSET', KEYS[5], 'reserved', '0')
  else
    redis.call('HINCRBY', KEYS[5], 'reserved', -tonumber(ARGV[13]))
  end
  redis.call('HINCRBY', KEYS[5], 'spent', ARGV[10])
end
-- A window bucket is touched only when the settlement changes it (an admitted request's rpm
-- take stands as it was).
for i = 8, #KEYS do
  local delta = tonumber(ARGV[17 + i - 7])
  if delta ~= 0 then
    local raw = redis.call('GET', KEYS[i])
    local cur = tonumber(raw or '0')
    local touched = false
    if cur + delta >= 0 then
      if raw or cur + delta > 0 then
        redis.call('INCRBY', KEYS[i], delta)
        touched = true
      end
    elseif raw then
      redis.call('SET', KEYS[i], '0', 'KEEPTTL')
    end
    if touched and redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[15])
    end
  end
end
return 1
";

static RECORD_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD));

/// A stream entry as `XRANGE` returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, String)>);

fn stream(tenant: &str) -> String {
    format!("sntl:{{{tenant}}}:audit")
}
fn rid(tenant: &str, request_id: &str) -> String {
    format!("sntl:{{{tenant}}}:audit:rid:{request_id}")
}
fn seen(tenant: &str, chain: &str, seq: u64) -> String {
    format!("sntl:{{{tenant}}}:audit:seen:{chain}:{seq}")
}
fn judge_key(tenant: &str, request_id: &str) -> String {
    format!("sntl:{{{tenant}}}:audit:judge:{request_id}")
}
fn chains(tenant: &str) -> String {
    format!("sntl:{{{tenant}}}:audit:chains")
}
fn usage(tenant: &str, day: &str, grain: UsageGrain) -> String {
    let g = match grain {
        UsageGrain::Model => 'm',
        UsageGrain::Key => 'k',
    };
    format!("sntl:{{{tenant}}}:usage:{day}:{g}")
}

fn corrupt(e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("audit record: {e}"))
}

impl RedisStore {
    fn retention_secs(&self) -> u64 {
        self.audit_retention.as_secs().max(1)
    }

    async fn record_one(&self, mut conn: Conn, o: &Outcome) -> StoreResult<bool> {
        let r = &o.record;
        let json = serde_json::to_string(r).map_err(|e| corrupt(&e))?;
        let minid = crate::audit::record::now_ms()
            .saturating_sub(u64::try_from(self.audit_retention.as_millis()).unwrap_or(u64::MAX));
        let mut inv = RECORD_SCRIPT.key(stream(&r.tenant));
        inv.key(rid(&r.tenant, &r.request_id))
            .key(chains(&r.tenant))
            .key(usage(&r.tenant, &day_of(r.ts_ms), UsageGrain::Model));
        match &o.settle.budget {
            Some((period, _)) => inv.key(keys::budget(&r.tenant, period)),
            None => inv.key(format!("sntl:{{{}}}:nobudget", r.tenant)),
        };
        inv.key(seen(&r.tenant, &r.chain, r.seq));
        inv.key(usage(&r.tenant, &day_of(r.ts_ms), UsageGrain::Key));
        let mut window_ttl = 0;
        for w in &o.settle.windows {
            inv.key(keys::window(&w.scope, w.taken_at_ms / w.window_ms.max(1)));
            window_ttl = window_ttl.max(super::bucket_ttl_ms(w.window_ms));
        }
        inv.arg(json)
            .arg(self.retention_secs())
            .arg(minid)
            .arg(&r.chain)
            .arg(r.seq)
            .arg(&r.hash)
            .arg(format!("{}{SEP}", r.model))
            .arg(r.prompt_tokens)
            .arg(r.completion_tokens)
            .arg(o.cost_nano)
            .arg(u8::from(r.is_cache_hit()))
            .arg(o.saved_nano)
            .arg(
                o.settle
                    .budget
                    .as_ref()
                    .map(|(_, reserved)| reserved.to_string())
                    .unwrap_or_default(),
            )
            .arg(USAGE_TTL_SECS)
            .arg(window_ttl.max(1))
            .arg(r.ts_ms)
            .arg(format!("{}{SEP}", r.key_id));
        for w in &o.settle.windows {
            inv.arg(w.delta);
        }
        let written: i64 = inv.invoke_async(&mut conn).await?;
        Ok(written == 1)
    }

    pub(super) async fn record_outcomes_impl(&self, batch: &[Outcome]) -> StoreResult<usize> {
        // A wider bound than one operation: a batch is many scripts on the one connection.
        let timeout = self
            .op_timeout
            .saturating_mul(4)
            .max(Duration::from_secs(1));
        let Some((first, rest)) = batch.split_first() else {
            return Ok(0);
        };
        let writing = async {
            // The first record alone: when Redis has lost its script cache (a restart), it is
            // the one that gets NOSCRIPT and loads the script. Sent concurrently, every record
            // would, and their retries could reach Redis out of order, putting the stream out
            // of chain order.
            let first = self.record_one(self.conn(), first).await?;
            let rest = try_join_all(rest.iter().map(|o| self.record_one(self.conn(), o))).await?;
            Ok::<_, StoreError>(usize::from(first) + rest.into_iter().filter(|new| *new).count())
        };
        tokio::time::timeout(timeout, writing)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    pub(super) async fn audit_page_impl(
        &self,
        tenant: &str,
        q: &AuditQuery,
    ) -> StoreResult<AuditPage> {
        let key = stream(tenant);
        let low = q.start_ms.map_or_else(|| "-".to_owned(), |s| s.to_string());
        let mut high = match (&q.cursor, q.end_ms) {
            (Some(c), _) => format!("({c}"),
            (None, Some(e)) => e.saturating_add(LATE_WRITE_GRACE_MS).to_string(),
            (None, None) => "+".to_owned(),
        };
        let mut page = AuditPage::default();
        let mut scanned = 0;
        let mut last_id: Option<String> = None;
        'scan: loop {
            let entries: Vec<StreamEntry> = self
                .run(|mut conn| {
                    let (key, high, low) = (key.clone(), high.clone(), low.clone());
                    async move {
                        Ok(redis::cmd("XREVRANGE")
                            .arg(&key)
                            .arg(&high)
                            .arg(&low)
                            .arg("COUNT")
                            .arg(PAGE_BATCH)
                            .query_async(&mut conn)
                            .await?)
                    }
                })
                .await?;
            let batch_len = entries.len();
            for (id, fields) in entries {
                scanned += 1;
                last_id = Some(id.clone());
                let Some((_, json)) = fields.into_iter().find(|(f, _)| f == "r") else {
                    continue;
                };
                let record: AuditRecord = serde_json::from_str(&json).map_err(|e| corrupt(&e))?;
                if q.matches(&record) {
                    page.records.push(record);
                    if page.records.len() == q.limit {
                        break 'scan;
                    }
                }
                if scanned >= SCAN_CAP {
                    break 'scan;
                }
            }
            if batch_len < PAGE_BATCH {
                last_id = None;
                break;
            }
            if let Some(id) = &last_id {
                high = format!("({id}");
            }
        }
        if page.records.len() == q.limit || scanned >= SCAN_CAP {
            page.next_cursor = last_id;
        }
        self.merge_judges(tenant, &mut page.records).await?;
        Ok(page)
    }

    async fn merge_judges(&self, tenant: &str, records: &mut [AuditRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = records
            .iter()
            .map(|r| judge_key(tenant, &r.request_id))
            .collect();
        let judges: Vec<Option<String>> = self
            .run(|mut conn| async move { Ok(conn.mget(&keys).await?) })
            .await?;
        for (r, j) in records.iter_mut().zip(judges) {
            r.judge = j.and_then(|j| serde_json::from_str(&j).ok());
        }
        Ok(())
    }

    pub(super) async fn audit_get_impl(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> StoreResult<Option<AuditRecord>> {
        let (rid_key, stream_key) = (rid(tenant, request_id), stream(tenant));
        let found: Option<Vec<StreamEntry>> = self
            .run(|mut conn| async move {
                let Some(id) = conn.get::<_, Option<String>>(&rid_key).await? else {
                    return Ok(None);
                };
                Ok(Some(
                    redis::cmd("XRANGE")
                        .arg(&stream_key)
                        .arg(&id)
                        .arg(&id)
                        .query_async(&mut conn)
                        .await?,
                ))
            })
            .await?;
        let Some(json) = found
            .into_iter()
            .flatten()
            .flat_map(|(_, fields)| fields)
            .find_map(|(f, v)| (f == "r").then_some(v))
        else {
            return Ok(None);
        };
        let mut records =
            vec![serde_json::from_str::<AuditRecord>(&json).map_err(|e| corrupt(&e))?];
        self.merge_judges(tenant, &mut records).await?;
        Ok(records.pop())
    }

    pub(super) async fn audit_all_impl(
        &self,
        tenant: &str,
    ) -> StoreResult<(Vec<AuditRecord>, Vec<ChainHead>)> {
        let key = stream(tenant);
        let mut records = Vec::new();
        let mut low = "-".to_owned();
        loop {
            let entries: Vec<StreamEntry> = self
                .run(|mut conn| {
                    let (key, low) = (key.clone(), low.clone());
                    async move {
                        Ok(redis::cmd("XRANGE")
                            .arg(&key)
                            .arg(&low)
                            .arg("+")
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn)
                            .await?)
                    }
                })
                .await?;
            let n = entries.len();
            for (id, fields) in entries {
                low = format!("({id}");
                match fields
                    .into_iter()
                    .find_map(|(f, v)| (f == "r").then_some(v))
                {
                    Some(json) => records
                        .push(serde_json::from_str::<AuditRecord>(&json).map_err(|e| corrupt(&e))?),
                    // An entry without a record is itself evidence of tampering.
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "stream entry {id} has no record"
                        )))
                    }
                }
            }
            if n < 1000 {
                break;
            }
        }
        let chains_key = chains(tenant);
        let heads: Vec<(String, String)> = self
            .run(|mut conn| async move { Ok(conn.hgetall(&chains_key).await?) })
            .await?;
        let mut heads: Vec<ChainHead> = heads
            .into_iter()
            .filter_map(|(chain, v)| {
                let (seq, hash) = v.split_once(':')?;
                Some(ChainHead {
                    chain,
                    seq: seq.parse().ok()?,
                    hash: hash.to_owned(),
                })
            })
            .collect();
        heads.sort_by(|a, b| a.chain.cmp(&b.chain));
        Ok((records, heads))
    }

    pub(super) async fn set_judge_impl(
        &self,
        tenant: &str,
        request_id: &str,
        judge: &JudgeResult,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(judge).map_err(|e| corrupt(&e))?;
        let key = judge_key(tenant, request_id);
        let ttl = self.retention_secs();
        self.run(|mut conn| async move {
            let () = conn.set_ex(&key, json, ttl).await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn usage_rows_impl(
        &self,
        tenant: &str,
        start_day: &str,
        end_day: &str,
        grain: UsageGrain,
    ) -> StoreResult<Vec<UsageRow>> {
        let days = days_between(start_day, end_day);
        // One pipeline (one slot: the tenant's tag), one round trip for the whole range.
        let mut pipe = redis::pipe();
        for day in &days {
            pipe.hgetall(usage(tenant, day, grain));
        }
        let hashes: Vec<Vec<(String, i64)>> = self
            .run(|mut conn| async move { Ok(pipe.query_async(&mut conn).await?) })
            .await?;
        let mut rows: Vec<UsageRow> = Vec::new();
        for (day, fields) in days.iter().zip(hashes) {
            let mut by_name: std::collections::BTreeMap<String, UsageRow> =
                std::collections::BTreeMap::new();
            for (field, value) in fields {
                let Some((name, metric)) = field.rsplit_once(SEP) else {
                    continue;
                };
                if !by_name.contains_key(name) {
                    let mut row = UsageRow {
                        day: day.clone(),
                        ..UsageRow::default()
                    };
                    match grain {
                        UsageGrain::Model => name.clone_into(&mut row.model),
                        UsageGrain::Key => name.clone_into(&mut row.key_id),
                    }
                    by_name.insert(name.to_owned(), row);
                }
                let Some(row) = by_name.get_mut(name) else {
                    continue;
                };
                let n = u64::try_from(value).unwrap_or(0);
                match metric {
                    "requests" => row.requests = n,
                    "prompt_tokens" => row.prompt_tokens = n,
                    "completion_tokens" => row.completion_tokens = n,
                    "cost_nano" => row.cost_nano = value,
                    "cache_hits" => row.cache_hits = n,
                    "saved_nano" => row.saved_nano = value,
                    _ => {}
                }
            }
            rows.extend(by_name.into_values());
        }
        Ok(rows)
    }
}
