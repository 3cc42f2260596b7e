//! Admission: opens the request's [`Ledger`] and applies the tenant's policies (model
//! allow-list, `rpm`/`tpm`, budget) through [`Policy::admit`]. Sits after the body parse,
//! before the shield, the cache and the proxy; adds OpenAI's `x-ratelimit-*` headers to every
//! answer of a limited tenant, and `retry-after` to a 429.
//!
//! Reads `Arc<RequestContext>`, [`ParsedBody`], [`RequestId`], [`RequestStart`] and the
//! `x-sentinel-tags` header; inserts [`Ledger`]. With trace export on it also opens the
//! request's span (parented by an incoming `traceparent`) and puts it in the ledger.
//!
//! [`Policy::admit`]: crate::policy::Policy::admit

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

use crate::context::{ApiRequest, ParsedBody, RequestId, RequestStart};
use crate::error::{ErrorCode, GatewayError};
use crate::metering::{Finish, LedgerSlot, Meter};
use crate::policy::RateHeaders;
use crate::providers::Endpoint;
use crate::tenancy::RequestContext;

/// Most tags one request may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag key or value.
pub const MAX_TAG_LEN: usize = 64;

/// Adds [`Admit`].
#[derive(Debug, Clone)]
pub struct AdmitLayer {
    meter: Arc<Meter>,
    endpoint: Endpoint,
}

impl AdmitLayer {
    /// Admission for `endpoint`'s requests.
    pub fn new(meter: Arc<Meter>, endpoint: Endpoint) -> Self {
        Self { meter, endpoint }
    }
}

impl<S> Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            meter: Arc::clone(&self.meter),
            endpoint: self.endpoint,
        }
    }
}

/// Opens the ledger, admits or refuses.
#[derive(Debug, Clone)]
pub struct Admit<S> {
    inner: S,
    meter: Arc<Meter>,
    endpoint: Endpoint,
}

impl<S> Service<Request<Body>> for Admit<S>
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
        let (meter, endpoint) = (Arc::clone(&self.meter), self.endpoint);
        Box::pin(async move {
            let ext = req.extensions();
            // The admin key reaches here without a tenant; the handler refuses it.
            let (Some(caller), Some(body), Some(id)) = (
                ext.get::<Arc<RequestContext>>().cloned(),
                ext.get::<ParsedBody>(),
                ext.get::<RequestId>().cloned(),
            ) else {
                return inner.call(req).await;
            };
            let started = ext.get::<RequestStart>().map_or_else(Instant::now, |s| s.0);
            let tags = match parse_tags(req.headers()) {
                Ok(tags) => tags,
                Err(err) => {
                    meter.refuse(id, &caller, endpoint, started, body.api.model(), &err);
                    return Ok(err.into_response());
                }
            };
            let stream = matches!(&body.api, ApiRequest::Chat(c) if c.is_stream());
            meter.audit_room().await;
            let mut ledger = meter.open(
                id,
                &caller,
                endpoint,
                started,
                body.api.model(),
                stream,
                tags,
                body.raw.clone(),
            );
            if let Some(tracer) = meter.tracer() {
                let (max_tokens, temperature) = match &body.api {
                    ApiRequest::Chat(c) => {
                        (c.max_completion_tokens.or(c.max_tokens), c.temperature)
                    }
                    ApiRequest::Embeddings(_) => (None, None),
                };
                let span = tracer.request(
                    req.headers(),
                    started,
                    &crate::otel::RequestInfo {
                        endpoint,
                        model: body.api.model(),
                        tenant: &caller.tenant_id,
                        request_id: ledger.request_id().as_str(),
                        max_tokens,
                        temperature,
                    },
                );
                ledger.trace(span);
            }
            match meter.policy().admit(&caller, body).await {
                Ok(admission) => {
                    let headers = admission.headers;
                    ledger.admitted(admission);
                    if let ApiRequest::Chat(chat) = &body.api {
                        ledger.sample_for_judge(&caller.tenant, chat);
                    }
                    req.extensions_mut().insert(LedgerSlot::new(ledger));
                    let mut resp = inner.call(req).await?;
                    rate_headers(resp.headers_mut(), headers);
                    Ok(resp)
                }
                Err(refusal) => {
                    ledger.finish(Finish::refused(&refusal.error, started.elapsed()));
                    let mut resp = refusal.error.into_response();
                    rate_headers(resp.headers_mut(), refusal.headers);
                    Ok(resp)
                }
            }
        })
    }
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");

fn rate_headers(headers: &mut HeaderMap, figures: RateHeaders) {
    for (name, value) in [
        (&LIMIT_REQUESTS, figures.limit_requests),
        (&REMAINING_REQUESTS, figures.remaining_requests),
        (&LIMIT_TOKENS, figures.limit_tokens),
        (&REMAINING_TOKENS, figures.remaining_tokens),
    ] {
        if let Some(v) = value {
            headers.insert(name.clone(), HeaderValue::from(v));
        }
    }
}

/// `x-sentinel-tags: k=v,k2=v2` (keys and values of `[A-Za-z0-9_.:/-]`, at most
/// [`MAX_TAGS`] pairs of at most [`MAX_TAG_LEN`] characters).
pub fn parse_tags(headers: &HeaderMap) -> Result<BTreeMap<String, String>, GatewayError> {
    let mut tags = BTreeMap::new();
    let Some(value) = headers.get("x-sentinel-tags") else {
        return Ok(tags);
    };
    let bad = |why: &str| {
        GatewayError::new(
            ErrorCode::InvalidBody,
            format!("x-sentinel-tags: {why}; expected k=v,k2=v2 with keys and values of A-Z a-z 0-9 _ . : / -"),
        )
    };
    let text = value.to_str().map_err(|_| bad("not ASCII"))?;
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad("a pair has no `=`"))?;
        let (k, v) = (k.trim(), v.trim());
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_TAG_LEN
                && s.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-')
                })
        };
        if !ok(k) || !ok(v) {
            return Err(bad(
                "a key or value is empty, too long or has other characters",
            ));
        }
        tags.insert(k.to_owned(), v.to_owned());
        if tags.len() > MAX_TAGS {
            return Err(bad("more than 16 tags"));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_and_refuse_junk() {
        let mut h = HeaderMap::new();
        h.insert("x-sentinel-tags", "team=search, env=prod".parse().unwrap());
        let tags = parse_tags(&h).unwrap();
        assert_eq!(tags["team"], "search");
        assert_eq!(tags["env"], "prod");
        for bad in ["novalue", "a=b c", "=x", &format!("k={}", "v".repeat(65))] {
            h.insert("x-sentinel-tags", bad.parse().unwrap());
            assert!(parse_tags(&h).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("k{i}=v")).collect();
        h.insert("x-sentinel-tags", many.join(",").parse().unwrap());
        assert!(parse_tags(&h).is_err());
    }
}
