//! The shield layer: the tenant's guardrails on the request, before the cache and the
//! provider (so a redacted secret is neither sent nor cached). PII is redacted in place (the
//! proxy then re-serialises the body), `block` answers 400 `content_blocked`, `log` only
//! records. Findings (rule and action, never the text) go on the audit record and into
//! `sentinel_shield_findings_total`. When the policy also checks responses, a
//! [`ResponseGuard`] is left for the proxy, which scans non-streaming answers before they are
//! metered.
//!
//! Reads `Arc<RequestContext>` and the `LedgerSlot`; changes [`ParsedBody`]; inserts
//! [`ResponseGuard`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::Request;
use tower::{Layer, Service};

use crate::audit::record::ShieldFinding;
use crate::context::{ApiRequest, ParsedBody};
use crate::error::{ErrorCode, GatewayError};
use crate::metering::{Finish, LedgerSlot};
use crate::offload;
use crate::shield::rules::Guardrails;
use crate::shield::{CompiledPolicy, Verdict};
use crate::telemetry::names;
use crate::tenancy::RequestContext;

/// Left for the proxy when responses are scanned too.
#[derive(Clone, Debug)]
pub struct ResponseGuard {
    pub guardrails: Arc<Guardrails>,
    pub policy: Arc<CompiledPolicy>,
}

/// Adds [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardLayer {
    guardrails: Arc<Guardrails>,
}

impl GuardLayer {
    /// Applies `guardrails`.
    pub fn new(guardrails: Arc<Guardrails>) -> Self {
        Self { guardrails }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            guardrails: Arc::clone(&self.guardrails),
        }
    }
}

/// Scans, redacts or refuses.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    guardrails: Arc<Guardrails>,
}

/// Counts findings and turns them into audit entries.
pub fn record_findings(verdict: &Verdict) -> Vec<ShieldFinding> {
    verdict
        .findings
        .iter()
        .map(|f| {
            metrics::counter!(names::SHIELD_FINDINGS, "rule" => f.rule, "action" => action_label(f.action))
                .increment(1);
            ShieldFinding {
                rule: f.rule.to_owned(),
                action: f.action,
            }
        })
        .collect()
}

fn action_label(a: crate::shield::Action) -> &'static str {
    use crate::shield::Action;
    match a {
        Action::Redact => "redact",
        Action::Block => "block",
        Action::Log => "log",
    }
}

impl<S> Service<Request<Body>> for Guard<S>
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
        let Some(caller) = req.extensions().get::<Arc<RequestContext>>().cloned() else {
            return Box::pin(inner.call(req));
        };
        let policy = self.guardrails.policy_for(&caller.tenant);
        if !policy.is_active() {
            return Box::pin(inner.call(req));
        }
        let guardrails = Arc::clone(&self.guardrails);
        Box::pin(async move {
            let ext = req.extensions_mut();
            let slot = ext.get::<LedgerSlot>().cloned();
            let scanned = match scan_body(&guardrails, &policy, ext).await {
                Ok(scanned) => scanned,
                Err(err) => return Ok(refuse(slot, err)),
            };
            if let Some((verdict, redacted_body)) = scanned {
                let findings = record_findings(&verdict);
                if let Some(slot) = &slot {
                    slot.with(|ledger| {
                        ledger.shield.extend(findings);
                        if verdict.redacted {
                            if let Some(body) = redacted_body {
                                ledger.redacted_request(body.into());
                            }
                        }
                    });
                }
                if let Some(rule) = verdict.blocked_by {
                    let err = GatewayError::new(
                        ErrorCode::ContentBlocked,
                        format!("the request was blocked by the `{rule}` guardrail"),
                    );
                    return Ok(refuse(slot, err));
                }
            }
            if policy.policy().responses {
                ext.insert(ResponseGuard {
                    guardrails: Arc::clone(&guardrails),
                    policy,
                });
            }
            inner.call(req).await
        })
    }
}

/// A scan's verdict and, when it redacted, the redacted body as sent on.
type Scanned = Option<(Verdict, Option<Vec<u8>>)>;

/// Scans the request's chat body with `policy`, redacting it in place; a large one off the
/// serving lane ([`crate::offload`]: the detectors took about 5 ms for a 600 KB prompt here).
/// `None` when there is no chat body (embeddings inputs are not scanned: they produce
/// vectors, not text that leaves).
async fn scan_body(
    guardrails: &Arc<Guardrails>,
    policy: &Arc<CompiledPolicy>,
    ext: &mut http::Extensions,
) -> Result<Scanned, GatewayError> {
    let permit = match ext.get::<ParsedBody>() {
        Some(
            body @ ParsedBody {
                api: ApiRequest::Chat(_),
                ..
            },
        ) => offload::permit_for(body.raw.len()),
        _ => None,
    };
    let Some(permit) = permit else {
        return Ok(ext
            .get_mut::<ParsedBody>()
            .and_then(|body| scan_chat(guardrails, policy, body)));
    };
    let Some(mut body) = ext.remove::<ParsedBody>() else {
        return Ok(None);
    };
    let (shield, rules) = (Arc::clone(guardrails), Arc::clone(policy));
    let (body, scanned) = offload::run(permit, move || {
        let scanned = scan_chat(&shield, &rules, &mut body);
        (body, scanned)
    })
    .await
    // Only a panic in the scan, or a runtime shutting down, gets here.
    .ok_or_else(|| GatewayError::new(ErrorCode::Internal, "the request could not be scanned"))?;
    ext.insert(body);
    Ok(scanned)
}

fn scan_chat(guardrails: &Guardrails, policy: &CompiledPolicy, body: &mut ParsedBody) -> Scanned {
    let ApiRequest::Chat(chat) = &mut body.api else {
        return None;
    };
    let verdict = guardrails.shield().scan_request(policy, chat);
    let redacted_body = if verdict.redacted {
        body.rewritten = true;
        serde_json::to_vec(chat.as_ref()).ok()
    } else {
        None
    };
    Some((verdict, redacted_body))
}

/// Answers `err` and finishes the request's ledger with it.
fn refuse(slot: Option<LedgerSlot>, err: GatewayError) -> Response {
    if let Some(ledger) = slot.and_then(|s| s.take()) {
        ledger.finish(Finish::refused(&err, Duration::ZERO));
    }
    err.into_response()
}
