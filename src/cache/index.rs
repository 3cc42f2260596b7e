//! The semantic cache's search side: per tenant and context (partition), the embedded last
//! questions of cached answers, kept in memory, searched by brute-force cosine, and checked by
//! the false-hit guard before a hit is declared.
//!
//! - Embeddings run on a bounded blocking pool ([`EMBED_PERMITS`] at a time): when it is busy
//!   the lookup is a miss, never a wait. Identical texts are memoised.
//! - Partitions load lazily from the store and re-read only what is new at most every
//!   [`REFRESH`], so an entry written on one replica is found on another within a second.
//!   At most [`MAX_PARTITIONS`] stay in memory (least recently used go first), each bounded by
//!   `cache.semantic.max_entries` (the store trims the same way).
//! - `remote:<model>` embeds through the gateway's own routing as the reserved tenant
//!   `_cache`, so that spend is metered too.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio::sync::{Mutex, Semaphore};

use super::semantic::{compatible, cosine, Embedder};
use super::SemanticLookup;
use crate::store::Store;
use crate::telemetry::names;

/// Embeddings computed at once (one per core).
pub const EMBED_PERMITS: usize = 2;
/// How stale a partition may be before it re-reads the store.
pub const REFRESH: Duration = Duration::from_millis(500);
/// Partitions kept in memory.
pub const MAX_PARTITIONS: usize = 4096;
/// Texts whose embedding is remembered.
const MEMO: usize = 10_000;
/// Candidates above the threshold checked by the guard, best first.
const CANDIDATES: usize = 5;

static HITS: LazyLock<Counter> = LazyLock::new(
    || metrics::counter!(names::CACHE_LOOKUPS, "kind" => "semantic", "result" => "hit"),
);
static MISSES: LazyLock<Counter> = LazyLock::new(
    || metrics::counter!(names::CACHE_LOOKUPS, "kind" => "semantic", "result" => "miss"),
);

/// Where embeddings come from.
pub enum Source {
    /// In process (`MiniLM`).
    Local(Arc<dyn Embedder>),
    /// Through the gateway's routing: an embeddings model.
    Remote(Box<dyn RemoteEmbed>),
}

/// An embeddings model reached through the gateway (see `remote:<model>`).
#[async_trait::async_trait]
pub trait RemoteEmbed: Send + Sync {
    /// The normalised embedding of `text`.
    async fn embed(&self, text: &str) -> Option<Vec<f32>>;
}

/// `(tenant, partition)`.
type PartitionId = (String, String);
/// A partition, locked while it is refreshed and searched.
type Shared = Arc<Mutex<Partition>>;

#[derive(Default)]
struct Partition {
    dims: usize,
    vectors: Vec<f32>,
    keys: Vec<String>,
    texts: Vec<String>,
    position: u64,
    refreshed: Option<Instant>,
}

/// The semantic index.
pub struct SemanticIndex {
    store: Arc<dyn Store>,
    source: Source,
    threshold: f32,
    ttl: Duration,
    max_entries: usize,
    permits: Arc<Semaphore>,
    memo: RwLock<HashMap<String, Arc<Vec<f32>>>>,
    partitions: RwLock<HashMap<PartitionId, (Shared, Instant)>>,
}

impl std::fmt::Debug for SemanticIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticIndex")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl SemanticIndex {
    /// An index over `store`'s partitions.
    pub fn new(
        store: Arc<dyn Store>,
        source: Source,
        threshold: f32,
        ttl: Duration,
        max_entries: usize,
    ) -> Self {
        Self {
            store,
            source,
            threshold,
            ttl,
            max_entries,
            permits: Arc::new(Semaphore::new(EMBED_PERMITS)),
            memo: RwLock::new(HashMap::new()),
            partitions: RwLock::new(HashMap::new()),
        }
    }

    /// The embedding of `text`, or `None` when the pool is busy or embedding failed.
    async fn embed(&self, text: &str) -> Option<Arc<Vec<f32>>> {
        if let Some(v) = self.memo.read().ok().and_then(|m| m.get(text).cloned()) {
            return Some(v);
        }
        let vector = match &self.source {
            Source::Local(embedder) => {
                // A busy pool is a miss: the request must not wait for an embedding.
                let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
                let (embedder, owned) = (Arc::clone(embedder), text.to_owned());
                let result = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    embedder.embed(&owned)
                })
                .await
                .ok()?;
                match result {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "embedding failed; semantic miss");
                        return None;
                    }
                }
            }
            Source::Remote(remote) => remote.embed(text).await?,
        };
        let vector = Arc::new(vector);
        if let Ok(mut memo) = self.memo.write() {
            if memo.len() >= MEMO {
                memo.clear();
            }
            memo.insert(text.to_owned(), Arc::clone(&vector));
        }
        Some(vector)
    }

    fn partition(&self, tenant: &str, partition: &str) -> Arc<Mutex<Partition>> {
        let id = (tenant.to_owned(), partition.to_owned());
        let now = Instant::now();
        if let Ok(mut map) = self.partitions.write() {
            if let Some((p, used)) = map.get_mut(&id) {
                *used = now;
                return Arc::clone(p);
            }
            if map.len() >= MAX_PARTITIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
            let p = Arc::new(Mutex::new(Partition::default()));
            map.insert(id, (Arc::clone(&p), now));
            return p;
        }
        Arc::new(Mutex::new(Partition::default()))
    }

    /// Reads what the store has that this partition has not seen.
    async fn refresh(&self, tenant: &str, name: &str, p: &mut Partition) {
        if p.refreshed.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        match self.store.semantic_since(tenant, name, p.position).await {
            Ok((entries, position)) => {
                for raw in entries {
                    if let Some((key, text, vector)) = decode(&raw) {
                        if p.dims == 0 {
                            p.dims = vector.len();
                        }
                        if vector.len() == p.dims {
                            p.vectors.extend_from_slice(&vector);
                            p.keys.push(key);
                            p.texts.push(text);
                        }
                    }
                }
                p.position = position;
                let excess = p.keys.len().saturating_sub(self.max_entries);
                if excess > 0 {
                    p.keys.drain(..excess);
                    p.texts.drain(..excess);
                    p.vectors.drain(..excess * p.dims);
                }
                p.refreshed = Some(Instant::now());
            }
            Err(e) => {
                metrics::counter!(names::STORE_ERRORS, "op" => "semantic_read").increment(1);
                tracing::debug!(error = %e, "semantic partition refresh failed");
            }
        }
    }
}

#[async_trait::async_trait]
impl SemanticLookup for SemanticIndex {
    async fn find(&self, tenant: &str, partition: &str, text: &str) -> Option<String> {
        let Some(query) = self.embed(text).await else {
            MISSES.increment(1);
            return None;
        };
        let part = self.partition(tenant, partition);
        let mut p = part.lock().await;
        self.refresh(tenant, partition, &mut p).await;
        let mut scored: Vec<(f32, usize)> = if p.dims == query.len() && p.dims > 0 {
            p.vectors
                .chunks_exact(p.dims)
                .enumerate()
                .map(|(i, v)| (cosine(&query, v), i))
                .filter(|(s, _)| *s >= self.threshold)
                .collect()
        } else {
            Vec::new()
        };
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hit = scored
            .into_iter()
            .take(CANDIDATES)
            .find(|(_, i)| compatible(text, &p.texts[*i]))
            .map(|(_, i)| p.keys[i].clone());
        if hit.is_some() {
            HITS.increment(1);
        } else {
            MISSES.increment(1);
        }
        hit
    }

    async fn add(&self, tenant: &str, partition: &str, text: &str, key: &str) {
        let Some(vector) = self.embed(text).await else {
            return;
        };
        let entry = encode(key, text, &vector);
        if let Err(e) = self
            .store
            .semantic_append(tenant, partition, &entry, self.max_entries, self.ttl)
            .await
        {
            metrics::counter!(names::STORE_ERRORS, "op" => "semantic_write").increment(1);
            tracing::debug!(error = %e, "storing a semantic entry failed");
        }
    }

    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// `[dims: u32][f32 LE × dims][key len: u16][key][text]`.
fn encode(key: &str, text: &str, vector: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + vector.len() * 4 + 2 + key.len() + text.len());
    out.extend_from_slice(&u32::try_from(vector.len()).unwrap_or(0).to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

fn decode(raw: &[u8]) -> Option<(String, String, Vec<f32>)> {
    let dims = usize::try_from(u32::from_le_bytes(raw.get(..4)?.try_into().ok()?)).ok()?;
    let floats = raw.get(4..4 + dims.checked_mul(4)?)?;
    let vector = floats
        .chunks_exact(4)
        .map(|c| c.try_into().map(f32::from_le_bytes))
        .collect::<Result<Vec<f32>, _>>()
        .ok()?;
    let rest = &raw[4 + dims * 4..];
    let key_len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
    let key = std::str::from_utf8(rest.get(2..2 + key_len)?)
        .ok()?
        .to_owned();
    let text = std::str::from_utf8(rest.get(2 + key_len..)?)
        .ok()?
        .to_owned();
    Some((key, text, vector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_ignored() {
        let v = vec![0.5_f32, -0.25, 1.0];
        let raw = encode("k1", "héllo", &v);
        assert_eq!(decode(&raw), Some(("k1".into(), "héllo".into(), v)));
        for junk in [&b""[..], b"\xff\xff\xff\xff", b"\x01\x00\x00\x00abc"] {
            assert!(decode(junk).is_none());
        }
    }
}
