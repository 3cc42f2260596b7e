//! The audit log, usage rollups and settlement on Redis.
//!
//! Per tenant, all in the tenant's hash-tag slot (so one Lua script can touch them together):
//!
//! | key | type | what |
//! |---|---|---|
//! | `sntl:{<t>}:audit` | stream | sealed records (`r` = JSON), trimmed by `MINID` to the retention |
//! | `sntl:{<t>}:audit:rid:<request_id>` | string | the stream id of the latest record with that request id (lookup), expires with the retention |
//! | `sntl:{<t>}:audit:judge:<request_id>` | string | the judge's result, JSON (outside the seal) |
//! | `sntl:{<t>}:audit:chains` | hash | chain id → `seq:hash` of its last record |
//! | `sntl:{<t>}:usage:<YYYY-MM-DD>:m` | hash | `<model>\x1f<metric>` → count |
//! | `sntl:{<t>}:usage:<YYYY-MM-DD>:k` | hash | `<key_id>\x1f<metric>` → count |
//!
//! Rollups are kept per model and per key (not per model × key) so a report reads a few
//! dozen fields a day, not every combination.
//!
//! One `RECORD_BATCH` script call per tenant and batch writes the records, their rollups and
//! their settlements, and skips a record whose seal is not past its chain's head: replays
//! after an outage are harmless, while a client reusing a request id still gets every request
//! recorded.
//!
//! The chain head is the idempotency mark because each chain reaches the store in order: its
//! one writer seals and writes its batches one after another, writes a tenant's records in
//! order, and while anything is spilled it spills instead of writing, and the spill is replayed
//! in order. A record at or below its chain's head has therefore been written (a write that
//! timed out and ran late, or a replay); one per-record marker key would cost Redis a key per
//! request for the whole retention.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{AsyncCommands, Script, ScriptInvocation};

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

/// Records written by one script call at most: a call blocks Redis for as long as its records
/// take, so a large batch (a spill replay) goes as several calls, in order, and other clients'
/// commands run between them. The figure is a judgement, not a measured optimum.
const RECORDS_PER_CALL: usize = 32;

/// Writes a batch of one tenant's outcomes, in order. Each record is written once (a record
/// whose seq is not past its chain's head is skipped whole; an unsealed one, chain `''`, is
/// always written); the rollups, chain heads, budget settlements and window corrections of
/// the records written are then applied once per key, with the same per-record arithmetic as
/// applying them one by one. Every `redis.call` costs Redis a few microseconds of its single
/// thread, so folding the batch's counters together is what keeps the audit's share of Redis
/// small.
///
/// KEYS: 1 stream, 2 chains, then per record: rid, usage day by model, usage day by key,
/// budget period (only when the record settles a budget), one key per window bucket.
/// ARGV: 1 retention s, 2 minid ms, 3 usage ttl s, 4 window ttl ms, 5 record count, then per
/// record: json, chain, seq, hash, model field prefix, key field prefix, prompt, completion,
/// cost, hit, saved, budget reserved (`''`: none), record time (Unix ms), window count n, then
/// one delta per window bucket.
/// Returns the number of records written.
const RECORD_BATCH: &str = r"
local stream, retention, minid = KEYS[1], ARGV[1], ARGV[2]
local written = 0
-- Folded per key, in first-seen order so the effects are deterministic.
local heads, head_order = {}, {} -- chain -> {seq, 'seq:hash' to store or false}
-- Usage roll-ups: per hash key, per model or key-id prefix, the sums of FIELDS. The field
-- names (prefix .. field) are built once per batch, when written.
local FIELDS = {'requests', 'prompt_tokens', 'completion_tokens', 'cost_nano', 'cache_hits',
  'saved_nano'}
local sums, sum_keys = {}, {} -- key -> {order = {prefix, ...}, rows = {prefix -> sums}}
local budgets, budget_order = {}, {}
local deltas, bucket_order = {}, {}

local function row_of(key, prefix)
  local rollup = sums[key]
  if not rollup then
    rollup = {order = {}, rows = {}}
    sums[key] = rollup
    sum_keys[#sum_keys + 1] = key
  end
  local row = rollup.rows[prefix]
  if not row then
    row = {0, 0, 0, 0, 0, 0}
    rollup.rows[prefix] = row
    rollup.order[#rollup.order + 1] = prefix
  end
  return row
end

local function append(entry_id, json)
  return redis.pcall('XADD', stream, 'MINID', '~', minid, entry_id, 'r', json)
end

-- Counters and ids are written as exact integers: Lua numbers are doubles, exact below 2^53,
-- and '%d' never switches to exponent notation the way tostring does.
local function int(v)
  return string.format('%d', v)
end

-- The millisecond of the newest entry this call added: a later record of the batch never
-- asks for an id below it.
local top_ms = 0

local a, k = 6, 3
for _ = 1, tonumber(ARGV[5]) do
  local json, chain, seq, hash = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  local reserved, ts, nwin = ARGV[a + 11], ARGV[a + 12], tonumber(ARGV[a + 13])
  local kwin = k + 3
  if reserved ~= '' then
    kwin = k + 4
  end
  local new = true
  if chain ~= '' then
    local head = heads[chain]
    if not head then
      local stored = redis.call('HGET', KEYS[2], chain)
      head = {stored and tonumber(string.match(stored, '^(%d+)')) or 0, false}
      heads[chain] = head
      head_order[#head_order + 1] = chain
    end
    -- At or below the head: written before (a replay, or a write that ran late).
    new = seq > head[1]
    if new then
      head[1] = seq
      head[2] = ARGV[a + 2] .. ':' .. hash
    end
  end
  if new then
    written = written + 1
    -- The entry id follows the record's time (so time ranges are id ranges), never going
    -- below the newest entry: a record written late (replayed, behind a concurrent writer,
    -- or finished after a later-started one of its batch) takes the newest entry's
    -- millisecond. The stream's top is read only when that is refused (another writer added
    -- a later entry since), which keeps the common case to one command.
    local ms = tonumber(ts)
    if ms < top_ms then
      ms = top_ms
    end
    local id = append(int(ms) .. '-*', json)
    if type(id) == 'table' and id.err then
      local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
      if #top > 0 then
        id = append(string.match(top[1][1], '^(%d+)') .. '-*', json)
      end
      if type(id) ~= 'string' then
        -- The stream's last id is past its newest entry (that entry was trimmed or deleted):
        -- let Redis pick the next id.
        id = redis.call('XADD', stream, 'MINID', '~', minid, '*', 'r', json)
      end
    end
    top_ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('SET', KEYS[k], id, 'EX', retention)
    local prompt, completion, cost = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]),
      tonumber(ARGV[a + 8])
    local hits, saved = tonumber(ARGV[a + 9]), tonumber(ARGV[a + 10])
    -- By model, then by key.
    for r = 1, 2 do
      local row = row_of(KEYS[k + r], ARGV[a + 3 + r])
      row[1] = row[1] + 1
      row[2] = row[2] + prompt
      row[3] = row[3] + completion
      row[4] = row[4] + cost
      row[5] = row[5] + hits
      row[6] = row[6] + saved
    end
    if reserved ~= '' then
      local key = KEYS[k + 3]
      local b = budgets[key]
      if not b then
        b = {0, 0}
        budgets[key] = b
        budget_order[#budget_order + 1] = key
      end
      b[1] = b[1] + tonumber(reserved)
      b[2] = b[2] + cost
    end
    for i = 0, nwin - 1 do
      local delta = tonumber(ARGV[a + 14 + i])
      if delta ~= 0 then
        local key = KEYS[kwin + i]
        if not deltas[key] then
          deltas[key] = {}
          bucket_order[#bucket_order + 1] = key
        end
        local d = deltas[key]
        d[#d + 1] = delta
      end
    end
  end
  a = a + 14 + nwin
  k = kwin + nwin
end

for _, chain in ipairs(head_order) do
  local value = heads[chain][2]
  if value then
    redis.call('HSET', KEYS[2], chain, value)
  end
end
-- Absent fields read as zero, so zero sums are skipped; a rollup hash gets its expiry when
-- its first record creates it.
for _, key in ipairs(sum_keys) do
  local rollup = sums[key]
  for _, prefix in ipairs(rollup.order) do
    local row = rollup.rows[prefix]
    for i, field in ipairs(FIELDS) do
      local v = row[i]
      if v ~= 0 then
        local now = redis.call('HINCRBY', key, prefix .. field, int(v))
        if now == v and i == 1 then
          redis.call('EXPIRE', key, ARGV[3])
        end
      end
    end
  end
end
-- Each settlement releases its reservation, flooring at zero, and records its cost as spent.
-- Releases are never negative, so flooring their sum once equals flooring after each.
for _, key in ipairs(budget_order) do
  local before = tonumber(redis.call('HGET', key, 'reserved') or '0')
  local reserved = before - budgets[key][1]
  if reserved < 0 then
    reserved = 0
  end
  if reserved ~= before then
    redis.call('HINCRBY', key, 'reserved', int(reserved - before))
  end
  redis.call('HINCRBY', key, 'spent', int(budgets[key][2]))
end
-- A window bucket is touched only when a settlement changes it (an admitted request's rpm
-- take stands as it was). Each correction floors at zero and creates a missing bucket only
-- for a positive count, as `window_adjust` does.
for _, key in ipairs(bucket_order) do
  local raw = redis.call('GET', key)
  local before = tonumber(raw or '0')
  local cur, exists = before, raw ~= false
  for _, delta in ipairs(deltas[key]) do
    if cur + delta >= 0 then
      if exists or cur + delta > 0 then
        cur = cur + delta
        exists = true
      end
    elseif exists then
      cur = 0
    end
  end
  if cur ~= before then
    redis.call('INCRBY', key, int(cur - before))
    if redis.call('PTTL', key) < 0 then
      redis.call('PEXPIRE', key, ARGV[4])
    end
  end
end
return written
";

static RECORD_BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_BATCH));

/// A stream entry as `XRANGE` returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, String)>);

fn stream(tenant: &str) -> String {
    format!("sntl:{{{tenant}}}:audit")
}
fn rid(tenant: &str, request_id: &str) -> String {
    format!("sntl:{{{tenant}}}:audit:rid:{request_id}")
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

/// `fut`, failing with [`StoreError::Timeout`] after `bound`.
async fn bounded<T>(
    bound: Duration,
    fut: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> StoreResult<T> {
    tokio::time::timeout(bound, fut)
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(StoreError::from)
}

fn corrupt(e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("audit record: {e}"))
}

impl RedisStore {
    fn retention_secs(&self) -> u64 {
        self.audit_retention.as_secs().max(1)
    }

    /// The script call that writes `batch` (one tenant's outcomes, in order).
    fn record_call(&self, batch: &[&Outcome]) -> StoreResult<Option<ScriptInvocation<'static>>> {
        let Some(first) = batch.first() else {
            return Ok(None);
        };
        let tenant = &first.record.tenant;
        let minid = crate::audit::record::now_ms()
            .saturating_sub(u64::try_from(self.audit_retention.as_millis()).unwrap_or(u64::MAX));
        let mut inv = RECORD_BATCH_SCRIPT.key(stream(tenant));
        inv.key(chains(tenant));
        let window_ttl = batch
            .iter()
            .flat_map(|o| &o.settle.windows)
            .map(|w| super::bucket_ttl_ms(w.window_ms))
            .max()
            .unwrap_or(0);
        inv.arg(self.retention_secs())
            .arg(minid)
            .arg(USAGE_TTL_SECS)
            .arg(window_ttl.max(1))
            .arg(batch.len());
        for o in batch {
            let r = &o.record;
            let json = serde_json::to_string(r).map_err(|e| corrupt(&e))?;
            let day = day_of(r.ts_ms);
            inv.key(rid(tenant, &r.request_id))
                .key(usage(tenant, &day, UsageGrain::Model))
                .key(usage(tenant, &day, UsageGrain::Key));
            if let Some((period, _)) = &o.settle.budget {
                inv.key(keys::budget(tenant, period));
            }
            for w in &o.settle.windows {
                inv.key(keys::window(&w.scope, w.taken_at_ms / w.window_ms.max(1)));
            }
            inv.arg(json)
                .arg(&r.chain)
                .arg(r.seq)
                .arg(&r.hash)
                .arg(format!("{}{SEP}", r.model))
                .arg(format!("{}{SEP}", r.key_id))
                .arg(r.prompt_tokens)
                .arg(r.completion_tokens)
                .arg(o.cost_nano)
                .arg(u8::from(r.is_cache_hit()))
                .arg(o.saved_nano)
                .arg(
                    o.settle
                        .budget
                        .as_ref()
                        // Never negative: the script sums releases before flooring.
                        .map(|(_, reserved)| (*reserved).max(0).to_string())
                        .unwrap_or_default(),
                )
                .arg(r.ts_ms)
                .arg(o.settle.windows.len());
            for w in &o.settle.windows {
                inv.arg(w.delta);
            }
        }
        Ok(Some(inv))
    }

    /// Writes one tenant's outcomes in order, one script call per chunk. A record sent after
    /// a later one of its chain would look written already and be skipped (see the module
    /// doc), so the calls must reach Redis in order, retries included.
    ///
    /// One call (the common case) is sent alone: `invoke_async` loads the script on
    /// `NOSCRIPT` and retries before anything later is sent. On a standalone server several
    /// calls go as one pipeline after a `SCRIPT LOAD`: Redis runs a connection's commands in
    /// order, and with the script loaded first no call can get `NOSCRIPT` and be retried
    /// behind a later one. A large batch (a replay) then costs one round trip however far away
    /// Redis is. Through a cluster a keyless `SCRIPT LOAD` may reach another node, so there
    /// each call waits for the one before. Either way the bound is per round trip, so a long
    /// replay on a slow link still gets through.
    async fn record_tenant(&self, batch: &[&Outcome]) -> StoreResult<usize> {
        let calls = batch
            .chunks(RECORDS_PER_CALL)
            .filter_map(|chunk| self.record_call(chunk).transpose())
            .collect::<StoreResult<Vec<_>>>()?;
        let mut conn = self.conn();
        let bound = self
            .op_timeout
            .saturating_mul(4)
            .max(Duration::from_secs(1));
        if let (Conn::Standalone(_), 2..) = (&conn, calls.len()) {
            let mut pipe = redis::pipe();
            pipe.load_script(&RECORD_BATCH_SCRIPT).ignore();
            for call in &calls {
                pipe.invoke_script(call);
            }
            let written: Vec<usize> = bounded(bound, pipe.query_async(&mut conn)).await?;
            return Ok(written.into_iter().sum());
        }
        let mut written = 0;
        for call in &calls {
            written += bounded(bound, call.invoke_async::<usize>(&mut conn)).await?;
        }
        Ok(written)
    }

    pub(super) async fn record_outcomes_impl(&self, batch: &[Outcome]) -> StoreResult<usize> {
        // Tenants are independent (each has its own chains and keys, in its own slot), so
        // they are written concurrently; each tenant's records stay in order.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut tenants: Vec<Vec<&Outcome>> = Vec::new();
        for o in batch {
            let at = *index.entry(o.record.tenant.as_str()).or_insert_with(|| {
                tenants.push(Vec::new());
                tenants.len() - 1
            });
            tenants[at].push(o);
        }
        let written =
            try_join_all(tenants.iter().map(|records| self.record_tenant(records))).await?;
        Ok(written.into_iter().sum())
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
