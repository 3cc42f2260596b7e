//! The exact-cache lookup, started beside admission instead of after it.
//!
//! On Redis, admission and the cache `GET` are each a round trip. Both depend only on the
//! request as parsed, unless the shield rewrites it: so [`PrefetchLayer`] (between the body
//! parse and admission) starts the `GET` for the key of the request as it arrived and drives
//! it alongside the rest of the request, and the cache layer takes the answer from
//! [`Prefetched`] when the body reached it unchanged. When the shield redacted the body the
//! prefetched answer is dropped uncounted and the cache layer looks up the redacted key as
//! before: nothing keyed on text the shield removed is ever used or stored. (The early `GET`
//! itself does carry the SHA-256 of the request as sent to the store.)
//!
//! The trade: a request that admission then refuses has cost one `GET`, and a redacted one
//! two.
//!
//! The prefetch never outlives the request: once the inner service answers (a refusal, a
//! block, a hit, or the response head of a miss), an unfinished lookup is dropped.
//!
//! Reads `Arc<RequestContext>`, [`ParsedBody`] and the `x-sentinel-cache` request header;
//! inserts [`Prefetched`].

use std::cell::Cell;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::{self, BoxFuture, Either};
use http::Request;
use tokio::sync::{oneshot, Mutex};
use tower::{Layer, Service};

use super::{key, Cache, Fetched, Mode};
use crate::context::{ApiRequest, ParsedBody};
use crate::tenancy::RequestContext;

/// The lookup started for the request as it arrived.
#[derive(Debug, Clone)]
pub struct Prefetched {
    /// The exact key of the request as parsed.
    pub key: String,
    answer: Arc<Mutex<Option<oneshot::Receiver<Fetched>>>>,
}

impl Prefetched {
    /// The lookup's result, `None` when it was already taken or did not finish.
    pub async fn take(&self) -> Option<Fetched> {
        let rx = self.answer.lock().await.take()?;
        rx.await.ok()
    }
}

/// Adds [`Prefetch`].
#[derive(Debug, Clone)]
pub struct PrefetchLayer {
    cache: Arc<Cache>,
    /// Whether the store's commands leave through a task of the lane (Redis), which a
    /// request must yield to before its lookup is sent. The embedded store's thread takes a
    /// lookup as it is queued.
    turn: bool,
}

impl PrefetchLayer {
    /// Prefetches from `cache`.
    pub fn new(cache: Arc<Cache>) -> Self {
        let turn = cache.store_is_remote();
        Self { cache, turn }
    }
}

impl<S> Layer<S> for PrefetchLayer {
    type Service = Prefetch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Prefetch {
            inner,
            cache: Arc::clone(&self.cache),
            turn: self.turn,
        }
    }
}

/// Starts the exact lookup and drives it beside the inner service.
#[derive(Debug, Clone)]
pub struct Prefetch<S> {
    inner: S,
    cache: Arc<Cache>,
    turn: bool,
}

impl<S> Service<Request<Body>> for Prefetch<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some((tenant, key)) = self.lookup_key(&req) else {
            return Box::pin(inner.call(req));
        };
        let (tx, rx) = oneshot::channel();
        req.extensions_mut().insert(Prefetched {
            key: key.clone(),
            answer: Arc::new(Mutex::new(Some(rx))),
        });
        let cache = Arc::clone(&self.cache);
        let turn = self.turn && crate::lanes::current().is_some();
        let answer = inner.call(req);
        Box::pin(async move {
            let waiting = turn.then(LookupsWaiting::enter);
            let alone = waiting.as_ref().is_some_and(|(_, alone)| *alone);
            let mut lookup = Box::pin(async move {
                let fetched = cache.fetch(&tenant, &key).await;
                drop(waiting);
                // The receiver may be gone (the request was refused or redacted).
                let _ = tx.send(fetched);
                future::pending::<Infallible>().await
            });
            // The lookup goes first, but on Redis its `GET` only leaves when the connection's
            // task runs, and a lane is one thread: without a turn here that is when this
            // request next waits. With a lease (or no limits) that wait is the cache layer's
            // own, after the shield and admission, and the round trip would overlap nothing.
            // So a request whose lookup is its lane's only one outstanding yields once, and
            // the `GET` travels while the shield and admission run. When other lookups are
            // outstanding the lane is busy with requests at the same stage; there the turn
            // would only make this request wait behind every ready task, for no gain.
            if let Poll::Ready(never) = futures_util::poll!(&mut lookup) {
                match never {}
            }
            if alone {
                tokio::task::yield_now().await;
            }
            match future::select(Box::pin(answer), lookup).await {
                Either::Left((resp, _unfinished_lookup)) => resp,
                Either::Right((never, _)) => match never {},
            }
        })
    }
}

thread_local! {
    /// Exact lookups of the calling lane started and not yet answered.
    static LOOKUPS_WAITING: Cell<u32> = const { Cell::new(0) };
}

/// Counts a lookup in [`LOOKUPS_WAITING`] while it waits. Only lane threads count: a lane is a
/// single-threaded runtime, so the lookup's future counts down on the thread it counted up on.
struct LookupsWaiting;

impl LookupsWaiting {
    /// Counts the calling request's lookup in; whether it is its lane's only one.
    fn enter() -> (Self, bool) {
        let count = LOOKUPS_WAITING.with(|n| {
            let count = n.get().saturating_add(1);
            n.set(count);
            count
        });
        (Self, count == 1)
    }
}

impl Drop for LookupsWaiting {
    fn drop(&mut self) {
        LOOKUPS_WAITING.with(|n| {
            debug_assert!(n.get() > 0, "a lookup counted down on another thread");
            n.set(n.get().saturating_sub(1));
        });
    }
}

impl<S> Prefetch<S> {
    /// The tenant and exact key to look up, when the request will read the exact cache.
    fn lookup_key(&self, req: &Request<Body>) -> Option<(Arc<str>, String)> {
        let ext = req.extensions();
        let caller = ext.get::<Arc<RequestContext>>()?;
        let ApiRequest::Chat(chat) = &ext.get::<ParsedBody>()?.api else {
            return None;
        };
        if !self.cache.reads_exact(&caller.tenant)
            || Mode::from_header(req.headers().get("x-sentinel-cache")) != Mode::Normal
        {
            return None;
        }
        Some((Arc::clone(&caller.tenant_id), key::exact(chat)?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use tower::ServiceExt;

    use super::*;
    use crate::cache::entry::CachedAnswer;
    use crate::config::CacheConfig;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{Limits, Store, Tenant};
    use crate::tasks::Tasks;

    const TENANT: &str = "pf-t";

    async fn cache(dir: &tempfile::TempDir) -> (Arc<Cache>, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::open(&dir.path().join("sentinel.db"))
                .await
                .unwrap(),
        );
        let config = CacheConfig {
            exact_enabled: true,
            exact_ttl: Duration::from_secs(60),
            exact_max_entries: 100,
            semantic_enabled: false,
            semantic_ttl: Duration::from_secs(60),
            semantic_threshold: 0.9,
            semantic_embedder: "minilm".into(),
            semantic_model_dir: dir.path().into(),
            semantic_max_entries: 100,
        };
        (
            Cache::new(Arc::clone(&store), config, 0, &Tasks::new(), None),
            store,
        )
    }

    fn request(text: &str) -> Request<Body> {
        let chat: crate::openai::chat::ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": text}]
        }))
        .unwrap();
        let tenant = Tenant::new(TENANT);
        let mut req = Request::new(Body::empty());
        req.extensions_mut().insert(Arc::new(RequestContext {
            tenant: Arc::new(tenant),
            tenant_id: Arc::from(TENANT),
            key_id: Arc::from("key_pf"),
            key_prefix: Arc::from("sk-sntl-pf"),
            key_limits: Limits::default(),
        }));
        req.extensions_mut().insert(ParsedBody {
            raw: Bytes::new(),
            api: ApiRequest::Chat(Box::new(chat)),
            rewritten: false,
        });
        req
    }

    /// An empty answer: 200 when `yes`, else `no`.
    fn verdict(yes: bool, no: http::StatusCode) -> Response {
        let status = if yes { http::StatusCode::OK } else { no };
        http::Response::builder()
            .status(status)
            .body(Body::empty())
            .unwrap()
    }

    /// An inner service that waits for the prefetched answer before answering: it can only
    /// finish if the lookup runs beside it, not after it.
    async fn waits_for_the_lookup(req: Request<Body>) -> Result<Response, Infallible> {
        let prefetched = req.extensions().get::<Prefetched>().cloned();
        let hit = match prefetched {
            Some(p) => p.take().await.as_ref().and_then(Cache::settle).is_some(),
            None => false,
        };
        Ok(verdict(hit, http::StatusCode::NOT_FOUND))
    }

    #[tokio::test]
    async fn the_lookup_runs_beside_the_inner_service() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, store) = cache(&dir).await;
        let req = request("prefetch me");
        let ParsedBody {
            api: ApiRequest::Chat(chat),
            ..
        } = req.extensions().get::<ParsedBody>().unwrap()
        else {
            unreachable!()
        };
        let answer = CachedAnswer {
            cost_nano: 5,
            body: Bytes::from_static(b"{}"),
        };
        store
            .cache_put(
                TENANT,
                &key::exact(chat).unwrap(),
                &answer.encode(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let svc =
            PrefetchLayer::new(Arc::clone(&cache)).layer(tower::service_fn(waits_for_the_lookup));
        let resp = tokio::time::timeout(Duration::from_secs(5), svc.clone().oneshot(req))
            .await
            .expect("the inner service got the prefetched answer")
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK, "a hit");
        let miss =
            tokio::time::timeout(Duration::from_secs(5), svc.oneshot(request("never stored")))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(miss.status(), http::StatusCode::NOT_FOUND);
    }

    async fn yielded(cache: &Arc<Cache>, tasks: &Tasks) -> bool {
        let other_ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&other_ran);
        let other = tasks.spawn("other", async move { flag.store(true, Ordering::SeqCst) });
        // The inner service answers 200 when that task ran before it was first polled,
        // which happens only if the request yielded after starting its lookup.
        let svc = PrefetchLayer::new(Arc::clone(cache)).layer(tower::service_fn(
            move |_: Request<Body>| {
                let other_ran = Arc::clone(&other_ran);
                async move {
                    Ok::<_, Infallible>(verdict(
                        other_ran.load(Ordering::SeqCst),
                        http::StatusCode::NO_CONTENT,
                    ))
                }
            },
        ));
        let resp = svc.oneshot(request("turn")).await.unwrap();
        other.await.unwrap();
        resp.status() == http::StatusCode::OK
    }

    /// On a lane with Redis, a request whose lookup is the lane's only one outstanding yields
    /// once after starting it, so the connection's task sends the `GET` before the rest of
    /// the request runs; a request parked on its upstream does not count, another outstanding
    /// lookup does. Off a lane, or on the embedded store (whose thread takes the lookup as it
    /// is queued), nothing yields.
    #[tokio::test]
    async fn a_lookup_alone_on_its_lane_yields_once_so_the_get_leaves_at_once() {
        let tasks = Tasks::new();
        let server = crate::store::redis::testing::RedisServer::start().await;
        let redis: Arc<dyn Store> = Arc::new(
            crate::store::redis::RedisStore::connect(
                crate::store::redis::RedisTarget::Standalone(server.url()),
                Duration::from_secs(1),
            )
            .await
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let (embedded, _) = cache(&dir).await;
        let on_redis = Cache::new(redis, embedded.config.clone(), 0, &tasks, None);
        assert!(!yielded(&on_redis, &tasks).await, "not a lane thread");

        crate::lanes::enter(0);
        assert!(yielded(&on_redis, &tasks).await, "alone on the lane");
        assert!(!yielded(&embedded, &tasks).await, "the embedded store");

        // A request parked after its lookup answered (waiting on its upstream) is no reason
        // to skip the turn.
        let lookup_answered = Arc::new(tokio::sync::Notify::new());
        let answered = Arc::clone(&lookup_answered);
        let parks = PrefetchLayer::new(Arc::clone(&on_redis)).layer(tower::service_fn(
            move |req: Request<Body>| {
                let answered = Arc::clone(&answered);
                async move {
                    let p = req.extensions().get::<Prefetched>().cloned().unwrap();
                    p.take().await;
                    answered.notify_one();
                    future::pending::<Result<Response, Infallible>>().await
                }
            },
        ));
        let held = tasks.spawn("parked", parks.oneshot(request("parked")));
        lookup_answered.notified().await;
        assert!(yielded(&on_redis, &tasks).await, "beside a parked request");
        held.abort();

        let (another, _) = LookupsWaiting::enter();
        assert!(
            !yielded(&on_redis, &tasks).await,
            "another lookup outstanding"
        );
        drop(another);
        assert!(yielded(&on_redis, &tasks).await, "alone again");
    }

    #[tokio::test]
    async fn nothing_is_prefetched_when_the_client_bypasses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = cache(&dir).await;
        let svc =
            PrefetchLayer::new(cache).layer(tower::service_fn(|req: Request<Body>| async move {
                Ok::<_, Infallible>(verdict(
                    req.extensions().get::<Prefetched>().is_some(),
                    http::StatusCode::NO_CONTENT,
                ))
            }));
        let mut bypass = request("bypassed");
        bypass
            .headers_mut()
            .insert("x-sentinel-cache", http::HeaderValue::from_static("bypass"));
        let resp = svc.clone().oneshot(bypass).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::NO_CONTENT);
        let resp = svc.oneshot(request("normal")).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
    }
}
