//! The shield: guardrails applied to a chat request before it leaves the gateway, and to a
//! non-streaming response before it reaches the client.
//!
//! Three rule families (SPEC "Caching, judge and shield"):
//! - `pii` (`pii.rs`, `financial.rs`, `secrets.rs`): personal data and credentials, with action
//!   `redact` (typed placeholders such as `[EMAIL]`), `block` or `log`;
//! - `injection` (`injection.rs`): prompt-injection heuristics that add up to a score in 0..=1,
//!   with action `block` or `log`;
//! - `deny_terms` (`deny.rs`): tenant-configured words or phrases; any hit blocks.
//!
//! Everything expensive happens once: [`Shield::new`] compiles every detector at start-up and
//! [`Shield::compile`] builds a tenant's deny-term automaton when its policy is loaded. A scan then
//! only runs the compiled automata and allocates just the span list and, when something is
//! redacted, the rewritten string.
//!
//! A [`Verdict`] names rules and actions, never the matched text, so it can go on the audit record
//! and into `sentinel_shield_findings_total{rule,action}` as is.

mod deny;
mod financial;
mod injection;
mod pii;
mod redact;
pub mod rules;
mod secrets;
#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::Value;

use crate::openai::chat::{ChatRequest, MessageContent, Role};

use deny::DenyTerms;
use injection::InjectionDetector;
use pii::{PiiDetectors, Span};

/// What a rule does when it fires: `redact` (pii only), `block` or `log`. The config's enum,
/// so a policy read from the file is used as it is.
pub use crate::config::raw::ShieldAction as Action;

/// The injection threshold used when a policy does not set one.
///
/// 0.5 because of how the weights in `injection.rs` are chosen: one unambiguous signal
/// (an instruction override, a system-prompt exfiltration request, a chat-template control token,
/// an encoded payload hiding either) weighs 0.6 or more and crosses it alone, while weak cues
/// (a fake `### system` header, "developer mode", "act as") weigh 0.3–0.4 and need a second,
/// corroborating signal: two weak cues combine to about 0.55.
pub const DEFAULT_INJECTION_THRESHOLD: f64 = 0.5;

/// A tenant's effective rules (global `[shield]` merged with the tenant override by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct ShieldPolicy {
    /// Action for every `pii.*` rule; `None` disables PII detection.
    pub pii: Option<Action>,
    /// Action for `injection` (`block` or `log`); `None` disables the heuristics.
    pub injection: Option<Action>,
    /// Score (0..=1) at or above which a text counts as an injection attempt.
    pub injection_threshold: f64,
    /// Words or phrases that block a request (case-insensitive, whole words).
    pub deny_terms: Vec<String>,
    /// Whether non-streaming responses are scanned for PII too.
    pub responses: bool,
}

impl Default for ShieldPolicy {
    /// Everything off, with the default injection threshold ready for when injection is enabled.
    fn default() -> Self {
        Self {
            pii: None,
            injection: None,
            injection_threshold: DEFAULT_INJECTION_THRESHOLD,
            deny_terms: Vec::new(),
            responses: false,
        }
    }
}

/// One finding: the rule and what was done; never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `pii.email`, `pii.phone`, `pii.credit_card`, `pii.iban`, `pii.us_ssn`, `pii.ip_address`,
    /// `pii.secret`, `injection` or `deny_terms`.
    pub rule: &'static str,
    /// The action the policy attached to the rule.
    pub action: Action,
}

/// The outcome of one scan.
///
/// Findings are deduplicated per rule: three e-mail addresses in a request give one `pii.email`
/// finding, so audit records and the findings counter count requests, not occurrences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Every rule that fired, in the order first seen.
    pub findings: Vec<Finding>,
    /// The first rule whose action is `block`, if any: the request must be refused.
    pub blocked_by: Option<&'static str>,
    /// Whether some text was rewritten with placeholders.
    pub redacted: bool,
}

impl Verdict {
    /// Whether the request (or response) must be refused.
    pub fn is_blocked(&self) -> bool {
        self.blocked_by.is_some()
    }

    fn record(&mut self, rule: &'static str, action: Action) {
        if !self.findings.iter().any(|f| f.rule == rule) {
            self.findings.push(Finding { rule, action });
        }
        if action == Action::Block && self.blocked_by.is_none() {
            self.blocked_by = Some(rule);
        }
    }
}

/// Why a policy cannot be compiled. Raised when configuration is loaded, never per request.
#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    /// The injection threshold is outside 0..=1 (or NaN).
    #[error("shield injection threshold must be within 0..=1, got {0}")]
    InvalidThreshold(f64),
    /// `redact` was configured for `injection`: there is no span to redact, only a score.
    #[error("shield injection action `redact` is not supported: use `block` or `log`")]
    InjectionCannotRedact,
    /// A deny term is empty or only whitespace, which would match everywhere.
    #[error("shield deny_terms contains an empty term")]
    EmptyDenyTerm,
    /// The deny-term automaton could not be built (for example, too many terms).
    #[error("shield deny_terms could not be compiled: {0}")]
    DenyTerms(#[from] aho_corasick::BuildError),
}

/// A tenant policy with its deny-term automaton, built by [`Shield::compile`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    policy: ShieldPolicy,
    deny: Option<DenyTerms>,
}

impl CompiledPolicy {
    /// The policy this was compiled from.
    pub fn policy(&self) -> &ShieldPolicy {
        &self.policy
    }

    /// Whether any rule is enabled for requests: when not, the caller can skip the scan (and the
    /// body rewrite) entirely.
    pub fn is_active(&self) -> bool {
        self.policy.pii.is_some() || self.policy.injection.is_some() || self.deny.is_some()
    }
}

/// The compiled detectors, built once at start-up and shared (wrap in an `Arc`) by every request.
#[derive(Debug)]
pub struct Shield {
    pii: PiiDetectors,
    injection: InjectionDetector,
}

impl Default for Shield {
    fn default() -> Self {
        Self::new()
    }
}

impl Shield {
    /// Compiles every detector once.
    pub fn new() -> Self {
        Self {
            pii: PiiDetectors::new(),
            injection: InjectionDetector::new(),
        }
    }

    /// Validates a tenant policy and builds its deny-term automaton.
    pub fn compile(&self, policy: &ShieldPolicy) -> Result<CompiledPolicy, ShieldError> {
        if !(0.0..=1.0).contains(&policy.injection_threshold) {
            return Err(ShieldError::InvalidThreshold(policy.injection_threshold));
        }
        if policy.injection == Some(Action::Redact) {
            return Err(ShieldError::InjectionCannotRedact);
        }
        Ok(CompiledPolicy {
            policy: policy.clone(),
            deny: DenyTerms::new(&policy.deny_terms)?,
        })
    }

    /// Scans a chat request: every message's text (string content and text parts) and every tool
    /// call's arguments. Redacts in place when the PII action is `redact`; a string is rewritten
    /// only if something in it matched.
    ///
    /// Injection heuristics run on `user`, `tool` and `function` messages only: those carry text
    /// from the end user or from fetched documents, while `system`/`developer` prompts are the
    /// operator's own and routinely say things like "never reveal your system prompt", and
    /// `assistant` turns are the model's earlier output. PII and deny terms apply to every message.
    pub fn scan_request(&self, policy: &CompiledPolicy, req: &mut ChatRequest) -> Verdict {
        let mut scan = Scan::new(self, policy);
        if !policy.is_active() {
            return scan.verdict;
        }
        for msg in &mut req.messages {
            let untrusted = matches!(msg.role, Role::User | Role::Tool | Role::Function);
            match &mut msg.content {
                Some(MessageContent::Text(text)) => scan.text(text, untrusted),
                Some(MessageContent::Parts(parts)) => {
                    for text in parts.iter_mut().filter_map(|p| p.text.as_mut()) {
                        scan.text(text, untrusted);
                    }
                }
                None => {}
            }
            for call in msg.tool_calls.iter_mut().flatten() {
                scan.json_text(&mut call.function.arguments);
            }
        }
        scan.verdict
    }

    /// Scans a response text (a non-streaming completion's content). Only PII applies, and only
    /// when `policy.responses` is set: injection and deny terms guard what goes upstream.
    pub fn scan_text(&self, policy: &CompiledPolicy, text: &mut String) -> Verdict {
        let mut scan = Scan::new(self, policy);
        if policy.policy.responses {
            scan.pii(text);
        }
        scan.verdict
    }

    /// The prompt-injection score of a text, from 0 (nothing suspicious) to 1.
    pub fn injection_score(&self, text: &str) -> f64 {
        self.injection.score(text)
    }
}

// === impl Scan ===

/// One scan in progress: the verdict so far and a span buffer reused across the request's texts.
struct Scan<'a> {
    shield: &'a Shield,
    policy: &'a CompiledPolicy,
    spans: Vec<Span>,
    verdict: Verdict,
}

impl<'a> Scan<'a> {
    fn new(shield: &'a Shield, policy: &'a CompiledPolicy) -> Self {
        Self {
            shield,
            policy,
            spans: Vec::new(),
            verdict: Verdict::default(),
        }
    }

    /// All request-side rules on one string.
    fn text(&mut self, text: &mut String, untrusted: bool) {
        if let Some(deny) = &self.policy.deny {
            if deny.is_present(text) {
                self.verdict.record("deny_terms", Action::Block);
            }
        }
        if let (true, Some(action)) = (untrusted, self.policy.policy.injection) {
            let score = self.shield.injection.score(text);
            // A zero score never fires, so a threshold of 0 means "anything suspicious".
            if score > 0.0 && score >= self.policy.policy.injection_threshold {
                self.verdict.record("injection", action);
            }
        }
        self.pii(text);
    }

    /// PII detection, and redaction when the policy asks for it.
    fn pii(&mut self, text: &mut String) {
        let Some(action) = self.policy.policy.pii else {
            return;
        };
        self.shield.pii.detect(text, &mut self.spans);
        for span in &self.spans {
            self.verdict.record(span.kind.rule(), action);
        }
        if action == Action::Redact && !self.spans.is_empty() {
            redact::apply(text, &self.spans);
            self.verdict.redacted = true;
        }
    }

    /// Tool call arguments: a JSON document in a string. Each string value inside is scanned on
    /// its own, so a match can neither start inside an escape sequence (`\n4111…`) nor cut one in
    /// half when redacted; the document is re-serialised only if something was redacted.
    /// Arguments that are not valid JSON are scanned as plain text.
    fn json_text(&mut self, args: &mut String) {
        let Ok(mut doc) = serde_json::from_str::<Value>(args) else {
            self.text(args, false);
            return;
        };
        let before = self.verdict.redacted;
        self.verdict.redacted = false;
        self.json_value(&mut doc, 0);
        if self.verdict.redacted {
            if let Ok(rewritten) = serde_json::to_string(&doc) {
                *args = rewritten;
            }
        }
        self.verdict.redacted |= before;
    }

    fn json_value(&mut self, value: &mut Value, depth: usize) {
        // serde_json already refuses documents nested deeper than 128; this keeps the walk's own
        // recursion bounded too.
        if depth > 128 {
            return;
        }
        match value {
            Value::String(s) => self.text(s, false),
            Value::Array(items) => {
                for item in items {
                    self.json_value(item, depth + 1);
                }
            }
            Value::Object(map) => {
                for item in map.values_mut() {
                    self.json_value(item, depth + 1);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}
