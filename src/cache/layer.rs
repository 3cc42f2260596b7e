//! The cache layer: after the shield (keys are computed from the redacted request, so a
//! redacted secret is never part of a cached entry or its key), before the proxy.
//!
//! Reads `Arc<RequestContext>`, [`ParsedBody`], the `LedgerSlot`, [`Prefetched`] and the
//! `x-sentinel-cache` request header; answers hits itself; inserts [`Fill`] on a miss; sets the
//! `x-sentinel-cache` response header to `bypass` when the client asked not to read.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

use super::entry::CachedAnswer;
use super::prefetch::Prefetched;
use super::{hit_body, key, Cache, Fill, Mode};
use crate::context::{ApiRequest, ParsedBody, RequestStart};
use crate::metering::{Finish, LedgerSlot};
use crate::proxy::{
    X_SENTINEL_CACHE, X_SENTINEL_COST_USD, X_SENTINEL_OVERHEAD_MS, X_SENTINEL_PROVIDER,
};
use crate::telemetry::names;
use crate::tenancy::RequestContext;

/// Adds [`CacheService`].
#[derive(Debug, Clone)]
pub struct CacheLayer {
    cache: Arc<Cache>,
    traced: bool,
}

impl CacheLayer {
    /// Caches through `cache`.
    pub fn new(cache: Arc<Cache>) -> Self {
        Self {
            cache,
            traced: false,
        }
    }

    /// Records a `cache lookup` span under the request's span (trace export on).
    #[must_use]
    pub fn traced(mut self, on: bool) -> Self {
        self.traced = on;
        self
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            cache: Arc::clone(&self.cache),
            traced: self.traced,
        }
    }
}

/// Answers from the cache or lets the request through with a [`Fill`].
#[derive(Debug, Clone)]
pub struct CacheService<S> {
    inner: S,
    cache: Arc<Cache>,
    traced: bool,
}

/// The exact lookup (its prefetched answer when there is one), then the semantic one.
async fn lookup(
    cache: &Cache,
    tenant: &str,
    exact: Option<&str>,
    prefetched: Option<&Prefetched>,
    semantic_view: Option<&(String, String)>,
) -> Option<(CachedAnswer, Kind)> {
    if let Some(k) = exact {
        let fetched = match prefetched {
            Some(p) => p.take().await,
            None => None,
        };
        let fetched = match fetched {
            Some(f) => f,
            None => cache.fetch(tenant, k).await,
        };
        if let Some(answer) = Cache::settle(&fetched) {
            return Some((answer, Kind::Exact));
        }
    }
    let ((partition, text), semantic) = (semantic_view?, cache.semantic()?);
    let k = semantic.find(tenant, partition, text).await?;
    // Decoded without counting: this is the semantic lookup's hit, not an exact one.
    cache
        .fetch(tenant, &k)
        .await
        .decode()
        .map(|a| (a, Kind::Semantic))
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Semantic,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Semantic => "semantic",
        }
    }
}

impl<S> Service<Request<Body>> for CacheService<S>
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
        let cache = Arc::clone(&self.cache);
        let traced = self.traced;
        Box::pin(async move {
            // Taken out so an unused early answer is freed now, not with the request.
            let prefetched = req.extensions_mut().remove::<Prefetched>();
            let ext = req.extensions();
            let (
                Some(caller),
                Some(ParsedBody {
                    api: ApiRequest::Chat(chat),
                    rewritten,
                    ..
                }),
            ) = (
                ext.get::<Arc<RequestContext>>().cloned(),
                ext.get::<ParsedBody>(),
            )
            else {
                return inner.call(req).await;
            };
            let settings = cache.settings_for(&caller.tenant);
            if !settings.exact && !settings.semantic {
                return inner.call(req).await;
            }
            let mode = Mode::from_header(req.headers().get("x-sentinel-cache"));
            let slot = ext.get::<LedgerSlot>().cloned();
            if mode != Mode::Normal {
                if let Some(slot) = &slot {
                    slot.with(|l| l.set_cache("bypass"));
                }
            }
            let (stream, include_usage) = (chat.is_stream(), chat.client_wants_stream_usage());
            // The lookup started beside admission is for the body as it arrived: usable only
            // when the shield left it as it was.
            let prefetched = prefetched.filter(|_| !*rewritten);
            let exact_key = match &prefetched {
                Some(p) => {
                    // Only the shield changes the body, and it says so in `rewritten`.
                    debug_assert_eq!(Some(&p.key), key::exact(chat).as_ref());
                    Some(p.key.clone())
                }
                None => key::exact(chat),
            };
            let semantic_view = settings.semantic.then(|| key::semantic(chat)).flatten();
            let started = ext.get::<RequestStart>().map_or_else(Instant::now, |s| s.0);
            let model = chat.model.clone();

            if mode == Mode::Normal {
                let span = traced.then(|| lookup_span(slot.as_ref())).flatten();
                let exact = exact_key.as_deref().filter(|_| settings.exact);
                let hit = lookup(
                    &cache,
                    &caller.tenant_id,
                    exact,
                    prefetched.as_ref(),
                    semantic_view.as_ref(),
                )
                .await;
                if let Some(span) = span {
                    end_lookup_span(span, hit.as_ref().map(|(_, kind)| *kind));
                }
                if let Some((answer, kind)) = hit {
                    if let Some(resp) = answer_hit(
                        &caller,
                        &model,
                        slot,
                        &answer,
                        kind,
                        stream,
                        include_usage,
                        started,
                    ) {
                        return Ok(resp);
                    }
                }
            }
            if mode != Mode::NoStore {
                if let Some(k) = exact_key {
                    req.extensions_mut().insert(Fill {
                        cache: Arc::clone(&cache),
                        tenant: Arc::clone(&caller.tenant_id),
                        key: k,
                        ttl: settings.exact_ttl.max(settings.semantic_ttl),
                        semantic: semantic_view,
                    });
                }
            }
            let mut resp = inner.call(req).await?;
            if mode != Mode::Normal {
                resp.headers_mut()
                    .insert(X_SENTINEL_CACHE.clone(), HeaderValue::from_static("bypass"));
            }
            Ok(resp)
        })
    }
}

/// The `cache lookup` span, under the request's span in the ledger.
fn lookup_span(slot: Option<&LedgerSlot>) -> Option<crate::otel::ChildSpan> {
    slot?
        .with(|l| l.span().map(crate::otel::RequestSpan::cache_lookup))
        .flatten()
}

fn end_lookup_span(mut span: crate::otel::ChildSpan, hit: Option<Kind>) {
    use crate::otel::attr;
    span.set(
        attr::SENTINEL_CACHE,
        if hit.is_some() { "hit" } else { "miss" },
    );
    span.set(attr::SENTINEL_CACHE_KIND, hit.map_or("miss", Kind::as_str));
    span.end();
}

/// Answers a hit: meters it (cost 0, what it saved), records it, builds the response.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; the parts of one hit"
)]
fn answer_hit(
    caller: &RequestContext,
    model: &str,
    slot: Option<LedgerSlot>,
    answer: &CachedAnswer,
    kind: Kind,
    stream: bool,
    include_usage: bool,
    started: Instant,
) -> Option<Response> {
    let body = hit_body(answer, stream, include_usage)?;
    let overhead = started.elapsed();
    if let Some(mut ledger) = slot.and_then(|s| s.take()) {
        ledger.set_cache(kind.as_str());
        ledger.finish(Finish {
            status: 200,
            provider: "cache",
            cache_hit: true,
            saved_nano: answer.cost_nano,
            overhead,
            ..Finish::default()
        });
    }
    let tenant = caller.tenant_id.to_string();
    metrics::gauge!(names::CACHE_SAVED, "tenant" => tenant.clone())
        .increment(crate::tokens::pricing::usd_f64(answer.cost_nano));
    crate::proxy::record::record_cache_hit(&tenant, model, kind.as_str(), started);
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
    if stream {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    h.insert(
        X_SENTINEL_CACHE.clone(),
        HeaderValue::from_static(kind.as_str()),
    );
    h.insert(
        X_SENTINEL_PROVIDER.clone(),
        HeaderValue::from_static("cache"),
    );
    h.insert(X_SENTINEL_COST_USD.clone(), HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)) {
        h.insert(X_SENTINEL_OVERHEAD_MS.clone(), v);
    }
    Some(resp)
}
