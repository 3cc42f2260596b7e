//! Tenants and keys at run time: who is calling, with which policy.
//!
//! [`Tenancy`] owns an in-process cache of validated keys so the hot path makes no store round
//! trip. Every replica polls the store's change sequence every [`WATCH_INTERVAL`] and drops its
//! cache when anything changed, so revocations and tenant edits (admin API, CLI, another
//! replica) take effect everywhere within a second. Entries older than [`SAFETY_TTL`] are
//! re-read even without a change. When the store cannot be reached, keys already known keep
//! working from the cache (fail open for known keys) and unknown keys are refused with 503
//! (fail closed for auth), as SPEC section 5 asks.

pub mod key;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::error::{ErrorCode, GatewayError};
pub use crate::store::unix_now;
use crate::store::{KeyRecord, Store, StoreError, Tenant};
use crate::tasks::Tasks;

use self::key::PresentedKey;

/// How often each replica checks the store's change sequence.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// A cached key is re-read after this long even if nothing announced a change.
pub const SAFETY_TTL: Duration = Duration::from_secs(30);

/// Who is calling: inserted by the auth layer, read by every later layer.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: Arc<Tenant>,
    /// `tenant.id`, shared: metric labels and records take it without allocating.
    pub tenant_id: Arc<str>,
    pub key_id: Arc<str>,
    pub key_prefix: Arc<str>,
    /// The key's own `rpm`/`tpm`, on top of the tenant's.
    pub key_limits: crate::store::Limits,
}

impl RequestContext {
    /// Whether the tenant may use `model` (an empty allow-list allows all).
    pub fn allows_model(&self, model: &str) -> bool {
        self.tenant.models.is_empty() || self.tenant.models.iter().any(|m| m == model)
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer sk-sntl-...` or `x-api-key`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    #[error("this API key has expired")]
    Expired,
    #[error("the key cannot be checked right now; retry shortly")]
    Unavailable,
}

impl AuthError {
    /// The client-facing error.
    pub fn to_gateway(&self) -> GatewayError {
        match self {
            Self::Unavailable => GatewayError::new(ErrorCode::AuthUnavailable, self.to_string())
                .with_retry_after(Duration::from_secs(1)),
            _ => GatewayError::new(ErrorCode::InvalidApiKey, self.to_string()),
        }
    }
}

/// A validated key: the shared context plus the two times `check` needs, so a hit clones
/// one `Arc` and nothing else.
#[derive(Debug, Clone)]
struct Cached {
    context: Arc<RequestContext>,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    fetched: Instant,
}

/// The key cache and its store.
#[derive(Debug)]
pub struct Tenancy {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    seen_seq: AtomicU64,
    store_ok: AtomicBool,
}

impl Tenancy {
    /// A cache in front of `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
            seen_seq: AtomicU64::new(0),
            store_ok: AtomicBool::new(true),
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resolves a presented key to its request context.
    pub async fn authenticate(
        &self,
        presented: &PresentedKey,
    ) -> Result<Arc<RequestContext>, AuthError> {
        let now = unix_now();
        let cached = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(presented.hash()).cloned());
        if let Some(hit) = &cached {
            if hit.fetched.elapsed() < SAFETY_TTL {
                return check(hit, now).map(|()| Arc::clone(&hit.context));
            }
        }
        match self.load(presented.hash()).await {
            Ok(Some(entry)) => {
                let result = check(&entry, now).map(|()| Arc::clone(&entry.context));
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(*presented.hash(), entry);
                }
                result
            }
            Ok(None) => Err(AuthError::Invalid),
            Err(err) => {
                tracing::warn!(error = %err, "key lookup failed; serving known keys from the cache");
                metrics::counter!(crate::telemetry::names::STORE_ERRORS, "op" => "key_lookup")
                    .increment(1);
                match cached {
                    Some(stale) => check(&stale, now).map(|()| stale.context),
                    None => Err(AuthError::Unavailable),
                }
            }
        }
    }

    async fn load(&self, hash: &[u8; 32]) -> Result<Option<Cached>, StoreError> {
        let Some(record) = self.store.key_by_hash(hash).await? else {
            return Ok(None);
        };
        let Some(tenant) = self.store.get_tenant(&record.tenant).await? else {
            return Ok(None);
        };
        let context = Arc::new(RequestContext {
            tenant_id: Arc::from(tenant.id.as_str()),
            tenant: Arc::new(tenant),
            key_id: Arc::from(record.id.as_str()),
            key_prefix: Arc::from(record.prefix.as_str()),
            key_limits: record.limits,
        });
        Ok(Some(Cached {
            context,
            revoked_at: record.revoked_at,
            expires_at: record.expires_at,
            fetched: Instant::now(),
        }))
    }

    /// Whether the last probe of the store succeeded (for `/health`).
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Acquire)
    }

    /// Drops every cached key (after a change anywhere).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    /// One check of the change sequence; drops the cache if it moved.
    pub async fn poll_changes(&self) -> Result<bool, StoreError> {
        let polled = self.store.change_seq().await;
        self.store_ok
            .store(polled.is_ok() && self.store.lanes_ok(), Ordering::Release);
        let seq = polled?;
        let old = self.seen_seq.swap(seq, Ordering::AcqRel);
        if old != seq {
            self.invalidate();
            return Ok(true);
        }
        Ok(false)
    }

    /// Watches the change sequence until shutdown.
    pub fn spawn_watch(self: &Arc<Self>, tasks: &Tasks) {
        let this = Arc::clone(self);
        tasks.spawn_every("tenancy-watch", WATCH_INTERVAL, move || {
            let this = Arc::clone(&this);
            async move {
                if let Err(err) = this.poll_changes().await {
                    metrics::counter!(crate::telemetry::names::STORE_ERRORS, "op" => "change_seq")
                        .increment(1);
                    tracing::debug!(error = %err, "change poll failed");
                }
            }
        });
    }
}

/// Mints a key for `tenant` and stores its hash; the secret is returned once and never kept.
pub async fn create_key(
    store: &dyn Store,
    tenant: &str,
    name: &str,
    expires_in: Option<Duration>,
    limits: crate::store::Limits,
) -> Result<(crate::config::Secret, KeyRecord), StoreError> {
    let minted = key::generate();
    let record = record_for(&minted, tenant, name, expires_in, limits);
    store.put_key(&record).await?;
    Ok((minted.secret, record))
}

/// The stored record of a minted key.
pub fn record_for(
    minted: &key::NewKey,
    tenant: &str,
    name: &str,
    expires_in: Option<Duration>,
    limits: crate::store::Limits,
) -> KeyRecord {
    let now = unix_now();
    KeyRecord {
        id: minted.id.clone(),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        prefix: minted.prefix.clone(),
        hash: minted.hash_hex.clone(),
        created_at: now,
        expires_at: expires_in
            .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        revoked_at: None,
        limits,
    }
}

/// Creates or updates the tenants and keys declared in the config. Declared fields (name,
/// models, limits, budget, shield, judge, cache) win at start-up; keys added at run time are kept. A bootstrap key already stored stays
/// as it is (a revoked one stays revoked).
pub async fn bootstrap(
    store: &dyn Store,
    tenants: &[crate::config::TenantConfig],
) -> Result<(), StoreError> {
    for declared in tenants {
        let mut tenant = store
            .get_tenant(&declared.id)
            .await?
            .unwrap_or_else(|| Tenant::new(declared.id.clone()));
        tenant.name.clone_from(&declared.name);
        tenant.models.clone_from(&declared.models);
        tenant.limits = declared.limits;
        tenant.budget = declared.budget;
        tenant.shield.clone_from(&declared.shield);
        tenant.judge.clone_from(&declared.judge);
        tenant.cache.clone_from(&declared.cache);
        store.put_tenant(&tenant).await?;
        for bootstrap in &declared.keys {
            let secret = bootstrap.secret.expose();
            match store.key_by_hash(&key::hash(secret)).await? {
                Some(existing) if existing.tenant == declared.id => {
                    // Declared limits win, like the tenant's fields; everything else stays.
                    if existing.limits != bootstrap.limits {
                        store
                            .put_key(&KeyRecord {
                                limits: bootstrap.limits,
                                ..existing
                            })
                            .await?;
                    }
                }
                Some(existing) => {
                    tracing::error!(key_id = %existing.id, tenant = %declared.id, env = %bootstrap.key_env,
                        "a bootstrap key is already registered to another tenant; not reassigned");
                }
                None => {
                    let record = record_for(
                        &key::from_secret(secret),
                        &declared.id,
                        &bootstrap.name,
                        None,
                        bootstrap.limits,
                    );
                    store.put_key(&record).await?;
                    tracing::info!(key_id = %record.id, tenant = %declared.id, "bootstrap key registered");
                }
            }
        }
    }
    Ok(())
}

/// Tenant ids: 1..=64 of `[A-Za-z0-9_-]`, not starting with `_` (reserved, e.g. `_judge`).
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && !id.starts_with('_')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check(key: &Cached, now: i64) -> Result<(), AuthError> {
    if key.revoked_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Revoked);
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(AuthError::Expired);
    }
    Ok(())
}
