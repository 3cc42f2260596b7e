//! Cached answers and semantic entries on Redis, in the tenant's hash-tag slot:
//!
//! | key | type | what |
//! |---|---|---|
//! | `sntl:{<t>}:cache:<key>` | string | a cached answer (opaque bytes), expires with its TTL |
//! | `sntl:{<t>}:sem:<partition>` | list | semantic entries, newest last, trimmed to a maximum |
//! | `sntl:{<t>}:semn:<partition>` | string | how many entries were ever appended (positions) |
//!
//! Memory is bounded by the TTLs, the per-partition maximum, and Redis' own `maxmemory`
//! policy (`volatile-lru` evicts cache entries first: everything here has a TTL).

use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::RedisStore;
use crate::store::StoreResult;

/// KEYS: list, counter. ARGV: entry, max entries, ttl ms.
const APPEND: &str = r"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS: list, counter. ARGV: from. Returns `{total, entries...}`: the entries at positions
/// `from..total` that are still in the (trimmed) list.
const SINCE: &str = r"
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local len = redis.call('LLEN', KEYS[1])
local first = total - len
local from = tonumber(ARGV[1])
if from < first then
  from = first
end
local out = {tostring(total)}
if from < total then
  local entries = redis.call('LRANGE', KEYS[1], from - first, -1)
  for i = 1, #entries do
    out[#out + 1] = entries[i]
  end
end
return out
";

static APPEND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND));
static SINCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SINCE));

fn answer(tenant: &str, key: &str) -> String {
    format!("sntl:{{{tenant}}}:cache:{key}")
}

fn partition_keys(tenant: &str, partition: &str) -> (String, String) {
    (
        format!("sntl:{{{tenant}}}:sem:{partition}"),
        format!("sntl:{{{tenant}}}:semn:{partition}"),
    )
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    pub(super) async fn cache_get_impl(
        &self,
        tenant: &str,
        key: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        let k = answer(tenant, key);
        self.run(|mut conn| async move { Ok(conn.get::<_, Option<Vec<u8>>>(&k).await?) })
            .await
    }

    pub(super) async fn cache_put_impl(
        &self,
        tenant: &str,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> StoreResult<()> {
        let k = answer(tenant, key);
        let value = value.to_vec();
        self.run(|mut conn| async move {
            let () = conn.pset_ex(&k, value, ttl_ms(ttl)).await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn semantic_append_impl(
        &self,
        tenant: &str,
        partition: &str,
        entry: &[u8],
        max_entries: usize,
        ttl: Duration,
    ) -> StoreResult<()> {
        let (list, counter) = partition_keys(tenant, partition);
        let entry = entry.to_vec();
        self.run(|mut conn| async move {
            let _: i64 = APPEND_SCRIPT
                .key(list)
                .key(counter)
                .arg(entry)
                .arg(max_entries.max(1))
                .arg(ttl_ms(ttl))
                .invoke_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn semantic_since_impl(
        &self,
        tenant: &str,
        partition: &str,
        from: u64,
    ) -> StoreResult<(Vec<Vec<u8>>, u64)> {
        let (list, counter) = partition_keys(tenant, partition);
        let mut out: Vec<Vec<u8>> = self
            .run(|mut conn| async move {
                Ok(SINCE_SCRIPT
                    .key(list)
                    .key(counter)
                    .arg(from)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
        if out.is_empty() {
            return Ok((Vec::new(), from));
        }
        let total = String::from_utf8_lossy(&out.remove(0))
            .parse()
            .unwrap_or(from);
        Ok((out, total))
    }
}
