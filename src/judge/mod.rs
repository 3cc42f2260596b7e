//! LLM-as-judge: a sampled share of answers is scored by `judge.model` after the client has
//! its answer.
//!
//! - [`Judge::sampled`] decides per request from a hash of the request id and the tenant's
//!   rate, so every replica (and a test that picks its ids) reaches the same decision.
//! - [`Judge::submit`] queues a [`JudgeJob`] on a bounded queue without waiting; a full queue
//!   drops the sample and counts it (`sentinel_judge_dropped_total`).
//! - [`worker`] tasks (owned by the task tracker) render the rubric, call the judge model
//!   through the gateway's own routing as the reserved tenant `_judge` (so its spend shows in
//!   `_judge`'s usage, not the judged tenant's), parse `{score, verdict}` ([`parse`]), retry a
//!   malformed answer once, and write the result beside the audit record.

pub mod parse;
pub mod worker;

use std::sync::{Arc, LazyLock};

use metrics::Counter;
use tokio::sync::mpsc;

use crate::config::JudgeConfig;
use crate::openai::chat::{ChatRequest, MessageContent, Role};
use crate::store::Tenant;
use crate::telemetry::names;

/// The reserved tenant judge calls are metered under.
pub const JUDGE_TENANT: &str = "_judge";
/// Longest question or answer text handed to the judge (characters); longer texts are cut.
pub const MAX_TEXT: usize = 16_000;

static DROPPED: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(names::JUDGE_DROPPED));

/// One answer to score.
#[derive(Debug, Clone)]
pub struct JudgeJob {
    pub tenant: String,
    pub request_id: String,
    pub system: String,
    pub question: String,
    pub answer: String,
    pub min_score: Option<f64>,
}

/// The texts of a request the judge needs (taken when the request is sampled).
#[derive(Debug, Clone, Default)]
pub struct Question {
    pub system: String,
    pub question: String,
    pub min_score: Option<f64>,
}

/// The request path's handle on the judge.
#[derive(Debug)]
pub struct Judge {
    tx: mpsc::Sender<JudgeJob>,
    config: JudgeConfig,
}

impl Judge {
    /// A judge feeding `tx`.
    pub fn new(tx: mpsc::Sender<JudgeJob>, config: JudgeConfig) -> Arc<Self> {
        Arc::new(Self { tx, config })
    }

    /// The tenant's sample rate (its override, else the global one).
    pub fn rate_for(&self, tenant: &Tenant) -> f64 {
        tenant
            .judge
            .as_ref()
            .and_then(|j| j.sample_rate)
            .unwrap_or(self.config.sample_rate)
    }

    /// Whether the answer to `request_id` is judged.
    pub fn sampled(&self, tenant: &Tenant, request_id: &str) -> bool {
        tenant.id != JUDGE_TENANT && sample(request_id, self.rate_for(tenant))
    }

    /// What to keep of a sampled request.
    pub fn question(&self, tenant: &Tenant, chat: &ChatRequest) -> Question {
        let text = |role: Role| {
            chat.messages
                .iter()
                .filter(|m| m.role == role)
                .filter_map(|m| m.content.as_ref().map(MessageContent::text))
                .collect::<Vec<_>>()
        };
        let system = text(Role::System).join("\n");
        let question = text(Role::User).pop().unwrap_or_default();
        Question {
            system: cut(&system),
            question: cut(&question),
            min_score: tenant
                .judge
                .as_ref()
                .and_then(|j| j.min_score)
                .or(self.config.min_score),
        }
    }

    /// Queues a job; never waits.
    pub fn submit(&self, job: JudgeJob) {
        if self.tx.try_send(job).is_err() {
            DROPPED.increment(1);
        }
    }
}

/// Deterministic sampling: the request id's FNV-1a hash as a fraction of `u64::MAX`.
pub fn sample(request_id: &str, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let h = request_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    // Mix the low-entropy tail of sequential ids into every bit.
    let mut z = h ^ (h >> 33);
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    #[expect(clippy::cast_precision_loss, reason = "a fraction of the hash space")]
    let fraction = z as f64 / u64::MAX as f64;
    fraction < rate
}

/// At most [`MAX_TEXT`] characters.
pub fn cut(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_its_rate() {
        assert!(!sample("abc", 0.0));
        assert!(sample("abc", 1.0));
        assert_eq!(sample("req-1", 0.5), sample("req-1", 0.5));
        let ids: Vec<String> = (0..10_000)
            .map(|_| crate::context::RequestId::generate().to_string())
            .collect();
        for rate in [0.05, 0.3, 0.7] {
            let hits = ids.iter().filter(|id| sample(id, rate)).count();
            #[expect(clippy::cast_precision_loss, reason = "test arithmetic")]
            let share = hits as f64 / ids.len() as f64;
            // 10k draws: the standard deviation is below 0.005; allow 4 of them.
            assert!((share - rate).abs() < 0.02, "rate {rate}: {share}");
        }
    }
}
