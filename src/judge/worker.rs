//! Judge workers: take jobs off the queue, ask the judge model, record the verdict.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use metrics::Counter;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use super::parse::{parse, Parsed};
use super::{JudgeJob, JUDGE_TENANT};
use crate::audit::record::JudgeResult;
use crate::config::JudgeConfig;
use crate::context::{ApiRequest, ParsedBody, RequestId};
use crate::metering::Meter;
use crate::openai::chat::{ChatMessage, ChatRequest, MessageContent, Role};
use crate::providers::Endpoint;
use crate::proxy::{Proxy, RequestMeta};
use crate::store::{Limits, Store, Tenant};
use crate::telemetry::names;
use crate::tenancy::RequestContext;

static FAILURES: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(names::JUDGE_FAILURES));
static LOW: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(names::JUDGE_LOW_SCORES));

/// Largest judge answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Tokens the judge may write.
const MAX_JUDGE_TOKENS: u32 = 400;

/// What the workers share.
pub struct Workers {
    pub proxy: Arc<Proxy>,
    pub meter: Arc<Meter>,
    pub store: Arc<dyn Store>,
    pub config: JudgeConfig,
    caller: Arc<RequestContext>,
}

impl Workers {
    /// Workers calling `config.model` through `proxy` as the `_judge` tenant.
    pub fn new(
        proxy: Arc<Proxy>,
        meter: Arc<Meter>,
        store: Arc<dyn Store>,
        config: JudgeConfig,
    ) -> Arc<Self> {
        let tenant = Tenant {
            name: Some("LLM-as-judge calls".into()),
            ..Tenant::new(JUDGE_TENANT)
        };
        let caller = Arc::new(RequestContext {
            tenant_id: Arc::from(JUDGE_TENANT),
            tenant: Arc::new(tenant),
            key_id: Arc::from("judge"),
            key_prefix: Arc::from("judge"),
            key_limits: Limits::default(),
        });
        Arc::new(Self {
            proxy,
            meter,
            store,
            config,
            caller,
        })
    }

    /// One worker: runs until shutdown or until the queue closes.
    pub async fn run(
        self: Arc<Self>,
        rx: Arc<Mutex<mpsc::Receiver<JudgeJob>>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let job = tokio::select! {
                () = shutdown.cancelled() => break,
                job = async { rx.lock().await.recv().await } => job,
            };
            let Some(job) = job else { break };
            self.judge(job).await;
        }
    }

    async fn judge(&self, job: JudgeJob) {
        let result = match self.ask(&job).await {
            Ok(Some(p)) => Some(p),
            // A malformed verdict is asked once more.
            Ok(None) => self.ask(&job).await.ok().flatten(),
            Err(e) => {
                tracing::warn!(request_id = %job.request_id, error = %e, "judge call failed");
                None
            }
        };
        let Some(Parsed { score, verdict }) = result else {
            FAILURES.increment(1);
            return;
        };
        metrics::histogram!(names::JUDGE_SCORE, "model" => self.config.model.clone()).record(score);
        let low = job.min_score.is_some_and(|min| score < min);
        if low {
            LOW.increment(1);
        }
        let judged = JudgeResult {
            score,
            verdict,
            model: self.config.model.clone(),
            low,
        };
        if let Err(e) = self
            .store
            .set_judge(&job.tenant, &job.request_id, &judged)
            .await
        {
            FAILURES.increment(1);
            tracing::warn!(request_id = %job.request_id, error = %e, "storing the judge's verdict failed");
        }
    }

    /// One call to the judge model: `Ok(None)` when it answered but not with a verdict.
    async fn ask(&self, job: &JudgeJob) -> Result<Option<Parsed>, String> {
        let prompt = self
            .config
            .rubric
            .replace("{{system}}", &job.system)
            .replace("{{question}}", &job.question)
            .replace("{{answer}}", &job.answer);
        let request = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: Some(MessageContent::Text(prompt)),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                extra: serde_json::Map::new(),
            }],
            stream: None,
            stream_options: None,
            max_tokens: Some(MAX_JUDGE_TOKENS),
            max_completion_tokens: None,
            temperature: Some(0.0),
            top_p: None,
            stop: None,
            tools: None,
            tool_choice: None,
            response_format: Some(serde_json::json!({"type": "json_object"})),
            seed: None,
            user: None,
            extra: serde_json::Map::new(),
        };
        let raw = bytes::Bytes::from(serde_json::to_vec(&request).map_err(|e| e.to_string())?);
        let id = RequestId::generate();
        let started = Instant::now();
        let mut tags = std::collections::BTreeMap::new();
        tags.insert("judged_request".to_owned(), job.request_id.clone());
        tags.insert("judged_tenant".to_owned(), job.tenant.clone());
        let ledger = self.meter.open(
            id.clone(),
            &self.caller,
            Endpoint::Chat,
            started,
            &self.config.model,
            false,
            tags,
            raw.clone(),
        );
        let body = ParsedBody {
            raw,
            api: ApiRequest::Chat(Box::new(request)),
            rewritten: false,
        };
        let meta = RequestMeta {
            id,
            caller: Arc::clone(&self.caller),
            started,
            endpoint: Endpoint::Chat,
            response_guard: None,
            fill: None,
        };
        let resp = self.proxy.handle(meta, body, Some(ledger)).await;
        let status = resp.status();
        let bytes = tokio::time::timeout(
            Duration::from_secs(60),
            to_bytes(resp.into_body(), MAX_ANSWER_BYTES),
        )
        .await
        .map_err(|_| "the judge's answer did not arrive in time".to_owned())?
        .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the judge model answered {status}"));
        }
        let answer: crate::openai::chat::ChatCompletion =
            serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let text = answer
            .choices
            .first()
            .and_then(|c| c.message.content.clone())
            .unwrap_or_default();
        Ok(parse(&text))
    }
}
