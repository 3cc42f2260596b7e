//! The response cache, per tenant: exact (the same request, canonically) and semantic (the
//! same context and a last question that means the same).
//!
//! It sits after auth, admission and the shield, before routing ([`layer`]): a hit never
//! reaches a provider, costs nothing, records what it saved, and is audited as
//! `cache: exact|semantic`; it counted against the request rate only (admission settles its
//! token and budget reservations to zero). A miss leaves a [`Fill`] for the proxy, which
//! stores the answer once it is complete and successful (never an error, never a stream cut
//! short). Store failures are misses: the cache fails open.

pub mod entry;
pub mod fill;
pub mod index;
pub mod key;
pub mod layer;
pub mod prefetch;
pub mod remote;
pub mod semantic;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use metrics::Counter;

use self::entry::CachedAnswer;
use crate::config::CacheConfig;
use crate::store::{Store, StoreResult, Tenant};
use crate::tasks::Tasks;
use crate::telemetry::names;

static EXACT_HITS: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!(names::CACHE_LOOKUPS, "kind" => "exact", "result" => "hit"));
static EXACT_MISSES: LazyLock<Counter> = LazyLock::new(
    || metrics::counter!(names::CACHE_LOOKUPS, "kind" => "exact", "result" => "miss"),
);

/// A store lookup of an exact key, before [`Cache::settle`] counts and decodes it.
#[derive(Debug)]
pub struct Fetched(StoreResult<Option<Vec<u8>>>);

impl Fetched {
    /// The entry, not counted as a lookup; store errors (counted and logged) and undecodable
    /// entries are `None`.
    pub fn decode(&self) -> Option<CachedAnswer> {
        match &self.0 {
            Ok(Some(bytes)) => CachedAnswer::decode(bytes),
            Ok(None) => None,
            Err(e) => {
                metrics::counter!(names::STORE_ERRORS, "op" => "cache_get").increment(1);
                tracing::debug!(error = %e, "cache lookup failed; treated as a miss");
                None
            }
        }
    }
}

/// How a request may use the cache (`x-sentinel-cache` request header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read and write.
    Normal,
    /// `bypass`: do not read; still write the fresh answer.
    Bypass,
    /// `no-store`: neither read nor write.
    NoStore,
}

impl Mode {
    /// From the request header; anything unknown is `Normal`.
    pub fn from_header(value: Option<&http::HeaderValue>) -> Self {
        match value.and_then(|v| v.to_str().ok()).map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("bypass") => Self::Bypass,
            Some(v) if v.eq_ignore_ascii_case("no-store") => Self::NoStore,
            _ => Self::Normal,
        }
    }
}

/// A tenant's effective cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub exact: bool,
    pub semantic: bool,
    pub exact_ttl: Duration,
    pub semantic_ttl: Duration,
}

/// What the proxy needs to store a fresh answer.
#[derive(Clone, Debug)]
pub struct Fill {
    pub cache: Arc<Cache>,
    pub tenant: Arc<str>,
    pub key: String,
    pub ttl: Duration,
    /// Set when the answer also becomes a semantic entry: (partition, question text).
    pub semantic: Option<(String, String)>,
}

impl Fill {
    /// Stores a complete answer off the request path (through the [`fill`] writer).
    pub fn store(self, answer: CachedAnswer) {
        if answer.body.len() > entry::MAX_ANSWER_BYTES {
            return;
        }
        self.cache.filler.queue(fill::Pending {
            tenant: self.tenant,
            key: self.key,
            ttl: self.ttl,
            answer,
            semantic: self.semantic,
        });
    }
}

/// The cache service.
pub struct Cache {
    store: Arc<dyn Store>,
    config: CacheConfig,
    filler: fill::Filler,
    semantic: Option<Arc<dyn SemanticLookup>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config)
            .field("semantic", &self.semantic.is_some())
            .finish_non_exhaustive()
    }
}

/// The semantic side, behind a trait so the exact cache does not depend on embeddings.
#[async_trait::async_trait]
pub trait SemanticLookup: Send + Sync + std::fmt::Debug {
    /// The exact key of a cached answer whose question means the same as `text` in the same
    /// `partition`, if any.
    async fn find(&self, tenant: &str, partition: &str, text: &str) -> Option<String>;
    /// Remembers that `text` in `partition` is answered by the entry at `key`.
    async fn add(&self, tenant: &str, partition: &str, text: &str, key: &str);
    /// `None` when it works; otherwise why not (for `/health`).
    fn unavailable(&self) -> Option<String>;
}

impl Cache {
    /// A cache over `store`; `semantic` when the semantic cache is configured and usable.
    /// Starts the shared fill writer on `tasks`; each of the `lanes` serving lanes starts its
    /// own with [`Cache::start_lane_filler`].
    pub fn new(
        store: Arc<dyn Store>,
        config: CacheConfig,
        lanes: usize,
        tasks: &Tasks,
        semantic: Option<Arc<dyn SemanticLookup>>,
    ) -> Arc<Self> {
        let filler = fill::Filler::start(Arc::clone(&store), semantic.clone(), lanes, tasks);
        Arc::new(Self {
            store,
            config,
            filler,
            semantic,
        })
    }

    /// Starts lane `lane`'s fill writer on the calling runtime.
    pub fn start_lane_filler(&self, lane: usize, tasks: &Tasks) {
        self.filler.start_lane(lane, tasks);
    }

    /// Whether `tenant` uses the exact cache: its switch over the global one. Unlike
    /// [`Cache::settings_for`] it parses no TTL, so the prefetch can ask on every request.
    pub fn reads_exact(&self, tenant: &Tenant) -> bool {
        tenant
            .cache
            .as_ref()
            .and_then(|c| c.exact)
            .unwrap_or(self.config.exact_enabled)
    }

    /// The settings of `tenant`: its switches over the global ones.
    pub fn settings_for(&self, tenant: &Tenant) -> Settings {
        let over = tenant.cache.as_ref();
        let ttl = over
            .and_then(|c| c.ttl.as_deref())
            .and_then(|t| humantime::parse_duration(t).ok())
            .filter(|d| !d.is_zero());
        Settings {
            exact: self.reads_exact(tenant),
            semantic: self.semantic.is_some()
                && over
                    .and_then(|c| c.semantic)
                    .unwrap_or(self.config.semantic_enabled),
            exact_ttl: ttl.unwrap_or(self.config.exact_ttl),
            semantic_ttl: ttl.unwrap_or(self.config.semantic_ttl),
        }
    }

    /// Whether the store is a server reached over the network (Redis), not the embedded one.
    pub fn store_is_remote(&self) -> bool {
        self.store.backend() != "embedded"
    }

    /// The store's answer for `key`, not yet counted: a [`prefetch`] may be thrown away.
    pub async fn fetch(&self, tenant: &str, key: &str) -> Fetched {
        Fetched(self.store.cache_get(tenant, key).await)
    }

    /// Counts a fetched exact lookup and decodes it; store errors and undecodable entries are
    /// misses.
    pub fn settle(fetched: &Fetched) -> Option<CachedAnswer> {
        let hit = fetched.decode();
        if hit.is_some() {
            EXACT_HITS.increment(1);
        } else {
            EXACT_MISSES.increment(1);
        }
        hit
    }

    /// The semantic side, if on.
    pub fn semantic(&self) -> Option<&Arc<dyn SemanticLookup>> {
        self.semantic.as_ref()
    }

    /// Why the semantic cache is off although configured, for `/health`.
    pub fn semantic_status(&self) -> &'static str {
        match (&self.semantic, self.config.semantic_enabled) {
            (Some(s), _) if s.unavailable().is_none() => "ok",
            (_, false) => "off",
            _ => "disabled",
        }
    }
}

/// The body a hit answers with, as bytes for `Body::from`.
pub fn hit_body(answer: &CachedAnswer, stream: bool, include_usage: bool) -> Option<Bytes> {
    if stream {
        entry::replay_sse(&answer.body, include_usage)
    } else {
        Some(answer.body.clone())
    }
}
