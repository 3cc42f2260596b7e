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

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::Request;
use tower::{Layer, Service};

use crate::audit::record::ShieldFinding;
use crate::context::{ApiRequest, ParsedBody};
use crate::error::{ErrorCode, GatewayError};
use crate::metering::{Finish, LedgerSlot};
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
        let ext = req.extensions_mut();
        let verdict = match ext
            .get_mut::<ParsedBody>()
            .map(|b| (&mut b.api, &mut b.rewritten))
        {
            Some((ApiRequest::Chat(chat), rewritten)) => {
                let verdict = self.guardrails.shield().scan_request(&policy, chat);
                let redacted_body = if verdict.redacted {
                    *rewritten = true;
                    serde_json::to_vec(chat.as_ref()).ok()
                } else {
                    None
                };
                Some((verdict, redacted_body))
            }
            // Embeddings inputs are not scanned: they produce vectors, not text that leaves.
            _ => None,
        };
        if let Some((verdict, redacted_body)) = verdict {
            let slot = ext.get::<LedgerSlot>().cloned();
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
                if let Some(ledger) = slot.and_then(|s| s.take()) {
                    ledger.finish(Finish {
                        status: err.code.status().as_u16(),
                        provider: "none",
                        error: Some(err.code.as_str().to_owned()),
                        ..Finish::default()
                    });
                }
                return Box::pin(async move { Ok(err.into_response()) });
            }
        }
        if policy.policy().responses {
            ext.insert(ResponseGuard {
                guardrails: Arc::clone(&self.guardrails),
                policy,
            });
        }
        Box::pin(inner.call(req))
    }
}
