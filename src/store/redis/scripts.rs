//! The Lua scripts: each counter operation is one `EVALSHA` (loaded on first `NOSCRIPT`), so
//! it is atomic and one round trip. The arithmetic is the one `types.rs` documents and
//! `conformance.rs` asserts, shared with the embedded backend.
//!
//! Lua numbers are doubles: every value stays an exact integer while it is below 2^53. Counts
//! and limits are far below that; products such as `prev * (W - x)` are split
//! (`prev = q*W + r`) so they stay exact for windows up to a day. Counters are changed with
//! `INCRBY`/`HINCRBY` on the caller's decimal strings, never on numbers formatted by Lua's
//! `tostring` (which switches to exponent notation); the audit's `RECORD_BATCH` formats the
//! sums it folds with `'%d'`, exact for every integer a double holds.

use std::sync::LazyLock;

use redis::Script;

/// The sliding-window take, as a Lua function shared by [`WINDOW_TAKE`] and [`ADMIT`].
/// Arguments: current bucket key, the current and previous buckets' values (as `MGET` read
/// them: the caller reads every bucket in one call, since each `redis.call` costs Redis more
/// than the arithmetic here), limit, window ms, amount (the caller's decimal string, used as
/// is by `INCRBY`), offset of now into the window (ms), bucket ttl (ms).
/// Returns `allowed, count, retry_after_ms`.
const WINDOW_TAKE_FN: &str = r"
local function window_take(kcur, cur_raw, prev_raw, limit, w, amount_s, x, ttl)
  local amount = tonumber(amount_s)
  local cur = tonumber(cur_raw or '0')
  local prev = tonumber(prev_raw or '0')
  local rest = w - x

  -- floor(prev * rest / w), exact: prev = q*w + r with r < w.
  local q = math.floor(prev / w)
  local r = prev - q * w
  local count = q * rest + math.floor(r * rest / w) + cur

  if amount > limit then
    return 0, count, w
  end
  if count + amount <= limit then
    -- A bucket gets its expiry when this take creates it.
    if redis.call('INCRBY', kcur, amount_s) == amount then
      redis.call('PEXPIRE', kcur, ttl)
    end
    return 1, count + amount, 0
  end
  if cur + amount > limit or prev <= 0 then
    -- The current window alone cannot take it: wait for the next one.
    return 0, count, rest
  end
  -- Wait until prev * (w - y) / w <= room, y the offset then:
  -- y = w - floor(room * w / prev), computed exactly as above (room = a*prev + b, b < prev).
  local room = limit - amount - cur
  local a = math.floor(room / prev)
  local b = room - a * prev
  local y = w - (a * w + math.floor(b * w / prev))
  local wait = y - x
  if wait < 1 then
    wait = 1
  end
  return 0, count, wait
end
";

/// `window_take`. KEYS: current bucket, previous bucket. ARGV: limit, window ms, amount,
/// offset of now into the window (ms), bucket ttl (ms). Returns `{allowed, count, retry_after_ms}`.
const WINDOW_TAKE: &str = r"
local v = redis.call('MGET', KEYS[1], KEYS[2])
local allowed, count, retry = window_take(KEYS[1], v[1], v[2], tonumber(ARGV[1]),
  tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5])
return {allowed, count, retry}
";

/// `window_adjust`. KEYS: the bucket the take fell in. ARGV: delta, bucket ttl (ms).
/// Adds `delta`, flooring at zero; a missing bucket is created only for a positive result.
const WINDOW_ADJUST: &str = r"
local raw = redis.call('GET', KEYS[1])
local cur = tonumber(raw or '0')
local delta = tonumber(ARGV[1])
if cur + delta >= 0 then
  if not raw and cur + delta == 0 then
    return 0
  end
  redis.call('INCRBY', KEYS[1], ARGV[1])
else
  if not raw then
    return 0
  end
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// The budget reservation, as a Lua function shared by [`BUDGET_RESERVE`] and [`ADMIT`].
/// Arguments: the period's hash, amount (decimal string), limit, enforce (`'1'`/`'0'`).
/// Returns `allowed, spent, reserved` as they were before this reservation.
const BUDGET_RESERVE_FN: &str = r"
local function budget_reserve(key, amount_s, limit, enforce)
  local v = redis.call('HMGET', key, 'spent', 'reserved')
  local spent = tonumber(v[1] or '0')
  local reserved = tonumber(v[2] or '0')
  if enforce == '1' and spent + reserved + tonumber(amount_s) > limit then
    return 0, spent, reserved
  end
  redis.call('HINCRBY', key, 'reserved', amount_s)
  return 1, spent, reserved
end
";

/// Ends admission leases that were never given back (their replica died, or the give-back was
/// lost): each registered part whose reap time has passed (by Redis's clock) is removed, and a
/// budget part of `budget_key` (the one hash the caller declared, `''` for none) releases its
/// reservation. Members are `<id>|<budget hash key>|<amount>` for a budget part and `<id>w||0`
/// for the window part. Windows are not corrected (their buckets expire by themselves); a
/// budget part of another hash is only removed: its period is over, or, when a lease without
/// a budget reaps, the tenant's budget was removed, and its reservation is left in place
/// until the period ends. At most 8 per call, so a call stays short.
const REAP_FN: &str = r"
local function redis_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reap(zset, budget_key)
  local dead = redis.call('ZRANGEBYSCORE', zset, '-inf', redis_ms(), 'LIMIT', 0, 8)
  for _, member in ipairs(dead) do
    local key, amount = string.match(member, '^[^|]*|([^|]*)|(%d+)$')
    if key and key == budget_key and tonumber(amount) > 0 then
      local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
      if reserved - tonumber(amount) < 0 then
        redis.call('HSET', key, 'reserved', '0')
      else
        redis.call('HINCRBY', key, 'reserved', '-' .. amount)
      end
    end
    redis.call('ZREM', zset, member)
  end
end
";

/// `budget_reserve`. KEYS: the period's hash. ARGV: amount, limit, enforce (`1`/`0`).
/// Returns `{allowed, spent, reserved}` as they were before this reservation.
const BUDGET_RESERVE: &str = r"
local allowed, spent, reserved = budget_reserve(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3])
return {allowed, spent, reserved}
";

/// `admit`: a request's window takes and budget reservation in one script, each decided as
/// by its own script. KEYS: per window its current and previous bucket, then the budget hash
/// and the tenant's lease register (if a budget). ARGV: window count n, window ms, offset of
/// now into the window, bucket ttl, has budget (`1`/`0`), then per window its limit and
/// amount, then the budget's amount, limit and enforce. Returns `{allowed, count, retry}` per
/// window, then `{allowed, spent, reserved}` of the budget, flattened. Before the budget is
/// read, leases past their reap time give back their reservation (`reap`).
const ADMIT: &str = r"
local n = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local x = tonumber(ARGV[3])
local out = {}
-- Every bucket in one read: the windows' keys are distinct (one scope each), so a take never
-- changes a bucket another window reads.
local v = {}
if n > 0 then
  v = redis.call('MGET', unpack(KEYS, 1, 2 * n))
end
for i = 0, n - 1 do
  local allowed, count, retry = window_take(KEYS[2 * i + 1], v[2 * i + 1], v[2 * i + 2],
    tonumber(ARGV[6 + 2 * i]), w, ARGV[7 + 2 * i], x, ARGV[4])
  out[#out + 1] = allowed
  out[#out + 1] = count
  out[#out + 1] = retry
end
if ARGV[5] == '1' then
  local at = 6 + 2 * n
  reap(KEYS[2 * n + 2], KEYS[2 * n + 1])
  local allowed, spent, reserved = budget_reserve(KEYS[2 * n + 1], ARGV[at],
    tonumber(ARGV[at + 1]), ARGV[at + 2])
  out[#out + 1] = allowed
  out[#out + 1] = spent
  out[#out + 1] = reserved
end
return out
";

/// `lease_take`: an admission lease, all or nothing. KEYS: per window its current and
/// previous bucket, then the budget hash (if any), then the tenant's lease register. ARGV:
/// window count n, window ms, offset of now into the window, bucket ttl, has budget, per
/// window its limit and amount, the budget's amount and limit (always enforced), the window
/// part's register member, the budget part's, the reap delay (ms, from Redis's clock), the
/// register's ttl (ms). Takes every window and the budget as `admit` would; if any refuses,
/// undoes the others and returns `{0}`; else registers each part and returns `{1, count per
/// window..., spent, reserved}` (the budget's figures as they were before the lease, 0
/// without a budget).
const LEASE_TAKE: &str = r"
local n = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local x = tonumber(ARGV[3])
local at = 6 + 2 * n
local has_budget = ARGV[5] == '1'
local register = KEYS[2 * n + 1]
local budget_key = ''
if has_budget then
  budget_key = KEYS[2 * n + 1]
  register = KEYS[2 * n + 2]
end
reap(register, budget_key)
local v = {}
if n > 0 then
  v = redis.call('MGET', unpack(KEYS, 1, 2 * n))
end
local took, counts, ok = {}, {}, true
for i = 0, n - 1 do
  local allowed, count = window_take(KEYS[2 * i + 1], v[2 * i + 1], v[2 * i + 2],
    tonumber(ARGV[6 + 2 * i]), w, ARGV[7 + 2 * i], x, ARGV[4])
  took[i] = allowed == 1
  counts[#counts + 1] = count
  if allowed ~= 1 then
    ok = false
  end
end
local spent, reserved = 0, 0
if has_budget and ok then
  local allowed
  allowed, spent, reserved = budget_reserve(budget_key, ARGV[at], tonumber(ARGV[at + 1]), '1')
  ok = allowed == 1
end
if not ok then
  for i = 0, n - 1 do
    if took[i] and tonumber(ARGV[7 + 2 * i]) > 0 then
      redis.call('INCRBY', KEYS[2 * i + 1], '-' .. ARGV[7 + 2 * i])
    end
  end
  return {0}
end
local reap_at = redis_ms() + tonumber(ARGV[at + 4])
if n > 0 then
  redis.call('ZADD', register, reap_at, ARGV[at + 2])
end
if has_budget then
  redis.call('ZADD', register, reap_at, ARGV[at + 3])
end
redis.call('PEXPIRE', register, ARGV[at + 5])
local out = {1}
for i = 1, n do
  out[#out + 1] = counts[i]
end
out[#out + 1] = spent
out[#out + 1] = reserved
return out
";

/// `lease_end`: gives back one part of a lease, once: its windows' unused amounts, or its
/// budget reservation. KEYS: the tenant's lease register, per window the bucket the lease took
/// from, then the budget hash (for the budget part). ARGV: the part's register member, window
/// count n, per window the unused amount, the budget amount to release (0 for the window
/// part). Does nothing (returns 0) when the member is gone: the lease was given back
/// already, or reaped, so a give-back that timed out and ran late is never applied twice.
/// Every field floors at zero.
const LEASE_END: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local n = tonumber(ARGV[2])
for i = 1, n do
  local key, amount = KEYS[1 + i], tonumber(ARGV[2 + i])
  if amount > 0 then
    local raw = redis.call('GET', key)
    if raw then
      if tonumber(raw) - amount < 0 then
        redis.call('SET', key, '0', 'KEEPTTL')
      else
        redis.call('INCRBY', key, '-' .. ARGV[2 + i])
      end
    end
  end
end
local release = tonumber(ARGV[3 + n])
if release > 0 then
  local key = KEYS[2 + n]
  local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
  if reserved - release < 0 then
    redis.call('HSET', key, 'reserved', '0')
  else
    redis.call('HINCRBY', key, 'reserved', '-' .. ARGV[3 + n])
  end
end
return 1
";

/// `budget_settle`. KEYS: the period's hash. ARGV: reserved, actual, -reserved.
/// Releases the reservation and records the actual spend, each field flooring at zero.
const BUDGET_SETTLE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
local spent = tonumber(v[1] or '0')
local reserved = tonumber(v[2] or '0')
if reserved - tonumber(ARGV[1]) < 0 then
  redis.call('HSET', KEYS[1], 'reserved', '0')
else
  redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[3])
end
if spent + tonumber(ARGV[2]) < 0 then
  redis.call('HSET', KEYS[1], 'spent', '0')
else
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
end
return 1
";

/// `put_key`'s record write. KEYS: `sntl:key:<id>`. ARGV: record JSON, `revoked_at` or `''`.
/// Replaces the whole hash so no stale field survives.
const PUT_KEY: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'rec', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[2])
end
return 1
";

/// `revoke_key`. KEYS: `sntl:key:<id>`. ARGV: `revoked_at`. Keeps the first revocation time.
/// Returns `{rec, revoked_at}`, or nil when the key does not exist.
const REVOKE_KEY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return redis.call('HMGET', KEYS[1], 'rec', 'revoked_at')
";

/// Bumps the change sequence and announces the changed ids. KEYS: `sntl:changes`.
/// ARGV: the channel, then the changed ids. `PUBLISH` reaches every node of a cluster.
const BUMP: &str = r"
local seq = redis.call('INCR', KEYS[1])
for i = 2, #ARGV do
  redis.call('PUBLISH', ARGV[1], ARGV[i])
end
return seq
";

pub(super) static WINDOW_TAKE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{WINDOW_TAKE_FN}{WINDOW_TAKE}")));
pub(super) static WINDOW_ADJUST_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(WINDOW_ADJUST));
pub(super) static BUDGET_RESERVE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{BUDGET_RESERVE_FN}{BUDGET_RESERVE}")));
pub(super) static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WINDOW_TAKE_FN}{BUDGET_RESERVE_FN}{REAP_FN}{ADMIT}"
    ))
});
pub(super) static LEASE_TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{WINDOW_TAKE_FN}{BUDGET_RESERVE_FN}{REAP_FN}{LEASE_TAKE}"
    ))
});
pub(super) static LEASE_END_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE_END));
pub(super) static BUDGET_SETTLE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(BUDGET_SETTLE));
pub(super) static PUT_KEY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_KEY));
pub(super) static REVOKE_KEY_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REVOKE_KEY));
pub(super) static BUMP_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BUMP));
