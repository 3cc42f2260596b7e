//! OpenTelemetry trace export over OTLP/HTTP, off unless `[telemetry] otlp_endpoint` is set.
//!
//! **Spans.** One `SERVER` span per proxied request, named `{gen_ai.operation.name}
//! {gen_ai.request.model}` (`chat demo`), as the generative-AI semantic conventions name
//! inference spans.
//! The admission layer opens it (the start time is the request's [`RequestStart`]) and puts it
//! in the request's [`Ledger`]; [`Ledger::finish`], the one place every request ends, ends it
//! with the status, the tokens and the cache result. Its children:
//! - `cache lookup` (`INTERNAL`), when the tenant has a cache and the client did not bypass it;
//! - one `CLIENT` span per upstream attempt, named `{operation} {upstream model}`, ended when
//!   the answer (or the stream) ends, or when the attempt fails;
//! - `audit enqueue` (`INTERNAL`), handing the record to the audit queue.
//!
//! Attributes are the generative-AI ones (`gen_ai.operation.name`, `gen_ai.request.model`,
//! `gen_ai.response.model`, `gen_ai.provider.name`, `gen_ai.usage.input_tokens`,
//! `gen_ai.usage.output_tokens`, `gen_ai.request.max_tokens`, `gen_ai.request.temperature`),
//! `http.response.status_code`, `error.type`, and `sentinel.tenant`, `sentinel.request_id`,
//! `sentinel.cache`. Never a key, a prompt or an answer.
//!
//! **Propagation.** A W3C `traceparent` (and `tracestate`) on the request makes it the parent of
//! the request span; each upstream attempt carries a `traceparent` naming its `CLIENT` span.
//! Without export, no header is read or written.
//!
//! **Off means off.** Without an endpoint there is no [`Tracer`]: the request path branches on
//! one `Option` and creates nothing.
//!
//! **Never in the way.** A finished span goes into a bounded queue with `try_send`: when the
//! queue is full (a slow or dead collector) the span is dropped and counted in
//! `sentinel_trace_spans_dropped_total`, and the request never waits. The `trace-export` task
//! batches the queue (up to [`MAX_BATCH`] spans, or every [`FLUSH_EVERY`]) and POSTs OTLP
//! protobuf to `<endpoint>/v1/traces` through the same hyper client as the upstreams (no
//! blocking client, no thread of its own); failed exports count in
//! `sentinel_trace_export_failures_total`. The task ends after a last export once the last
//! tracer handle is gone, which the shutdown drain waits for, like the audit writer.
//!
//! [`RequestStart`]: crate::context::RequestStart
//! [`Ledger`]: crate::metering::Ledger
//! [`Ledger::finish`]: crate::metering::Ledger::finish

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

use crate::config::{ProviderKind, TelemetryConfig};
use crate::providers::Endpoint;
use crate::tasks::Tasks;
use crate::telemetry::names;

/// Finished spans waiting for the exporter; beyond this they are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 4096;
/// Most spans in one OTLP request.
pub const MAX_BATCH: usize = 512;
/// A partial batch is sent after this long.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bound on one export, retries included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// At most one export-failure warning per this interval (each failure is counted).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Attribute keys (OpenTelemetry semantic conventions for generative AI and
/// HTTP, and Sentinel's own).
pub mod attr {
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const HTTP_REQUEST_RESEND_COUNT: &str = "http.request.resend_count";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const ERROR_TYPE: &str = "error.type";
    pub const SENTINEL_TENANT: &str = "sentinel.tenant";
    pub const SENTINEL_REQUEST_ID: &str = "sentinel.request_id";
    /// `hit` or `miss`.
    pub const SENTINEL_CACHE: &str = "sentinel.cache";
    /// What `x-sentinel-cache` said: `miss`, `exact`, `semantic` or `bypass`.
    pub const SENTINEL_CACHE_KIND: &str = "sentinel.cache.kind";
    /// The configured provider that answered (`cache` for a cache hit, `none` for a refusal).
    pub const SENTINEL_PROVIDER: &str = "sentinel.provider";
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint: cannot set up trace export: {0}")]
pub struct TraceError(String);

/// `gen_ai.operation.name` of an endpoint.
pub fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Chat => "chat",
        Endpoint::Embeddings => "embeddings",
    }
}

/// `gen_ai.provider.name` of a provider kind (the semantic conventions'
/// well-known values where one exists).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai => "openai",
        ProviderKind::Azure => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::OpenaiCompatible => "openai_compatible",
    }
}

/// Creates request spans; cheap to clone. Exists only while export is on.
#[derive(Clone, Debug)]
pub struct Tracer {
    tracer: SdkTracer,
    /// Configured model names: any other requested name is recorded as `unknown`, so client
    /// input never becomes a span name.
    models: Arc<HashSet<String>>,
}

/// What a request span is opened with.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub endpoint: Endpoint,
    pub model: &'a str,
    pub tenant: &'a str,
    pub request_id: &'a str,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
}

impl Tracer {
    /// Starts export when `config` names an endpoint: builds the OTLP/HTTP exporter and spawns
    /// the `trace-export` task on `tasks`. `None` when export is off.
    pub fn start(
        config: &TelemetryConfig,
        models: impl IntoIterator<Item = String>,
        tasks: &Tasks,
    ) -> Result<Option<Self>, TraceError> {
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(ExportClient {
                client: crate::proxy::attempt::client(),
                timeout: EXPORT_TIMEOUT,
            })
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TraceError(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue { tx })
            .with_resource(resource)
            .build();
        let scope = InstrumentationScope::builder("sentinel")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        tasks.spawn("trace-export", export_loop(exporter, rx));
        tracing::info!(endpoint = %url, service = %config.service_name, "trace export on (OTLP/HTTP)");
        Ok(Some(Self {
            tracer,
            models: Arc::new(models.into_iter().collect()),
        }))
    }

    /// Opens the `SERVER` span of a request that started at `started`. An incoming W3C
    /// `traceparent` in `headers` becomes its parent.
    pub fn request(
        &self,
        headers: &HeaderMap,
        started: Instant,
        info: &RequestInfo<'_>,
    ) -> RequestSpan {
        let parent = TraceContextPropagator::new().extract_with_context(
            &Context::new(),
            &opentelemetry_http::HeaderExtractor(headers),
        );
        let op = operation(info.endpoint);
        let model = if self.models.contains(info.model) {
            info.model
        } else {
            "unknown"
        };
        let mut attributes = Vec::with_capacity(9);
        attributes.extend([
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, op),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.to_owned()),
            KeyValue::new(attr::HTTP_REQUEST_METHOD, "POST"),
            KeyValue::new(attr::HTTP_ROUTE, info.endpoint.path()),
            KeyValue::new(attr::SENTINEL_TENANT, info.tenant.to_owned()),
            KeyValue::new(attr::SENTINEL_REQUEST_ID, info.request_id.to_owned()),
        ]);
        if let Some(max) = info.max_tokens {
            attributes.push(KeyValue::new(
                attr::GEN_AI_REQUEST_MAX_TOKENS,
                i64::from(max),
            ));
        }
        if let Some(t) = info.temperature.filter(|t| t.is_finite()) {
            attributes.push(KeyValue::new(attr::GEN_AI_REQUEST_TEMPERATURE, t));
        }
        let span = self
            .tracer
            .span_builder(format!("{op} {model}"))
            .with_kind(SpanKind::Server)
            .with_start_time(wall_clock(started))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            tracer: self.tracer.clone(),
            cx: Context::new().with_span(span),
        }
    }
}

/// The wall-clock time of `instant` (spans carry wall-clock times).
fn wall_clock(instant: Instant) -> SystemTime {
    let now = SystemTime::now();
    now.checked_sub(instant.elapsed()).unwrap_or(now)
}

fn count(counts: u64) -> i64 {
    i64::try_from(counts).unwrap_or(i64::MAX)
}

/// A request's `SERVER` span, kept in its ledger until the request ends.
#[derive(Debug)]
pub struct RequestSpan {
    tracer: SdkTracer,
    cx: Context,
}

/// How a request ended, for its span.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestEnd<'a> {
    pub status: u16,
    /// The configured provider that answered, `cache` or `none`.
    pub provider: &'a str,
    /// `miss`, `exact`, `semantic` or `bypass`.
    pub cache: &'a str,
    /// Prompt and completion tokens, when the request used any.
    pub tokens: Option<(u64, u64)>,
    /// A bounded error code (`upstream_error`, `client_disconnected`, ...).
    pub error: Option<&'a str>,
}

/// Who an upstream attempt goes to, for its span.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamInfo<'a> {
    pub endpoint: Endpoint,
    pub kind: ProviderKind,
    /// The configured provider name.
    pub provider: &'a str,
    /// The provider's model id.
    pub model: &'a str,
    pub uri: &'a http::Uri,
    /// Attempts of this request before this one (retries and fallbacks).
    pub resends: u32,
}

impl RequestSpan {
    fn child(&self, name: &'static str) -> ChildSpan {
        ChildSpan(
            self.tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .start_with_context(&self.tracer, &self.cx),
        )
    }

    /// The `cache lookup` child.
    pub fn cache_lookup(&self) -> ChildSpan {
        self.child("cache lookup")
    }

    /// The `audit enqueue` child.
    pub fn audit_enqueue(&self) -> ChildSpan {
        self.child("audit enqueue")
    }

    /// The `CLIENT` span of one upstream attempt.
    pub fn upstream(&self, info: &UpstreamInfo<'_>) -> UpstreamSpan {
        let op = operation(info.endpoint);
        let mut attributes = Vec::with_capacity(8);
        attributes.extend([
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, op),
            KeyValue::new(attr::GEN_AI_REQUEST_MODEL, info.model.to_owned()),
            KeyValue::new(attr::GEN_AI_PROVIDER_NAME, provider_name(info.kind)),
            KeyValue::new(attr::SENTINEL_PROVIDER, info.provider.to_owned()),
            KeyValue::new(attr::HTTP_REQUEST_METHOD, "POST"),
        ]);
        if let Some(host) = info.uri.host() {
            attributes.push(KeyValue::new(attr::SERVER_ADDRESS, host.to_owned()));
        }
        let port = info.uri.port_u16().or(match info.uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        if let Some(port) = port {
            attributes.push(KeyValue::new(attr::SERVER_PORT, i64::from(port)));
        }
        if info.resends > 0 {
            attributes.push(KeyValue::new(
                attr::HTTP_REQUEST_RESEND_COUNT,
                i64::from(info.resends),
            ));
        }
        let span = self
            .tracer
            .span_builder(format!("{op} {}", info.model))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        let headers = trace_headers(&cx);
        UpstreamSpan {
            cx,
            kind: info.kind,
            headers,
        }
    }

    /// Records who answered: the provider kind and the model the answer names.
    pub fn answered_by(&self, kind: ProviderKind, response_model: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            attr::GEN_AI_PROVIDER_NAME,
            provider_name(kind),
        ));
        span.set_attribute(KeyValue::new(
            attr::GEN_AI_RESPONSE_MODEL,
            response_model.to_owned(),
        ));
    }

    /// Ends the span. A 5xx is an error (the gateway failed); other statuses leave the status
    /// unset, as the HTTP conventions ask of server spans, with `error.type` when one applies.
    pub fn end(self, end: &RequestEnd<'_>) {
        let span = self.cx.span();
        let hit = matches!(end.cache, "exact" | "semantic");
        let mut attributes = vec![
            KeyValue::new(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(end.status)),
            KeyValue::new(attr::SENTINEL_CACHE, if hit { "hit" } else { "miss" }),
            KeyValue::new(attr::SENTINEL_CACHE_KIND, end.cache.to_owned()),
            KeyValue::new(attr::SENTINEL_PROVIDER, end.provider.to_owned()),
        ];
        if let Some((input, output)) = end.tokens {
            attributes.push(KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, count(input)));
            attributes.push(KeyValue::new(
                attr::GEN_AI_USAGE_OUTPUT_TOKENS,
                count(output),
            ));
        }
        if let Some(error) = end.error {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, error.to_owned()));
        }
        span.set_attributes(attributes);
        if end.status >= 500 {
            span.set_status(Status::error(
                end.error.unwrap_or("server error").to_owned(),
            ));
        }
        span.end();
    }
}

/// The `traceparent` (and a non-empty `tracestate`) naming the span in `cx`.
fn trace_headers(cx: &Context) -> Vec<(HeaderName, HeaderValue)> {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return Vec::new();
    }
    let mut headers = Vec::with_capacity(2);
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8() & 1
    );
    if let Ok(v) = HeaderValue::from_str(&parent) {
        headers.push((TRACEPARENT.clone(), v));
    }
    let state = sc.trace_state().header();
    if !state.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&state) {
            headers.push((TRACESTATE.clone(), v));
        }
    }
    headers
}

/// A short `INTERNAL` child span.
#[derive(Debug)]
pub struct ChildSpan(opentelemetry_sdk::trace::Span);

impl ChildSpan {
    /// Sets a string attribute.
    pub fn set(&mut self, key: &'static str, value: &'static str) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.0.end();
    }
}

/// The `CLIENT` span of one upstream attempt.
#[derive(Debug)]
pub struct UpstreamSpan {
    cx: Context,
    kind: ProviderKind,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl UpstreamSpan {
    /// Adds `traceparent` (and `tracestate`) naming this span to the upstream request.
    pub fn inject(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The provider kind it calls.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// Ends an attempt that failed: `error_type` is the bounded failure kind (`connect`,
    /// `timeout`, `status_5xx`, ...), `status` the upstream's status when it answered.
    pub fn failed(self, error_type: &'static str, status: Option<u16>) {
        let span = self.cx.span();
        if let Some(status) = status {
            span.set_attribute(KeyValue::new(
                attr::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type));
        span.set_status(Status::error(error_type));
        span.end();
    }

    /// Records the status of the upstream's response head. For a client span any 4xx or 5xx
    /// is a failed call.
    pub fn head(&self, status: u16) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            attr::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        if status >= 400 {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, status.to_string()));
            span.set_status(Status::error(format!("status {status}")));
        }
    }

    /// Ends an attempt whose answer was read (or streamed) to its end: `response_model` is the
    /// model the answer names, `tokens` the upstream's own usage (prompt, completion) when it
    /// reported it, `broken` whether the answer broke off (a stream that failed mid-way).
    pub fn answered(self, response_model: &str, tokens: Option<(u64, u64)>, broken: bool) {
        let span = self.cx.span();
        let mut attributes = vec![KeyValue::new(
            attr::GEN_AI_RESPONSE_MODEL,
            response_model.to_owned(),
        )];
        if let Some((input, output)) = tokens {
            attributes.push(KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, count(input)));
            attributes.push(KeyValue::new(
                attr::GEN_AI_USAGE_OUTPUT_TOKENS,
                count(output),
            ));
        }
        span.set_attributes(attributes);
        if broken {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, "stream_broken"));
            span.set_status(Status::error("stream_broken"));
        }
        span.end();
    }

    /// Ends the span without a verdict (its outcome is recorded elsewhere).
    pub fn end(self) {
        self.cx.span().end();
    }
}

/// The span processor: hands finished spans to the export task without ever waiting.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            metrics::counter!(names::TRACE_SPANS_DROPPED).increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // The export task flushes on its own schedule and when the last tracer is gone.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Batches the queue and exports; ends, after a last export, when every sender is gone.
async fn export_loop(exporter: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<SpanData>) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            received = rx.recv_many(&mut batch, MAX_BATCH) => {
                if received == 0 {
                    break;
                }
                if batch.len() >= MAX_BATCH {
                    export(&exporter, &mut batch, &mut last_warning).await;
                }
            }
            _ = tick.tick() => {
                if !batch.is_empty() {
                    export(&exporter, &mut batch, &mut last_warning).await;
                }
            }
        }
    }
    if !batch.is_empty() {
        export(&exporter, &mut batch, &mut last_warning).await;
    }
    tracing::debug!("trace export stopped");
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: &mut Vec<SpanData>,
    last_warning: &mut Option<Instant>,
) {
    let spans = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
    let n = spans.len();
    // The exporter bounds each attempt and its retries by EXPORT_TIMEOUT; this is a backstop.
    let result = tokio::time::timeout(EXPORT_TIMEOUT * 2, exporter.export(spans)).await;
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    metrics::counter!(names::TRACE_EXPORT_FAILURES).increment(1);
    if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
        *last_warning = Some(Instant::now());
        tracing::warn!(spans = n, error = %error, "trace export failed; those spans are lost (further failures are counted in sentinel_trace_export_failures_total)");
    }
}

/// The exporter's HTTP client: the upstream hyper client (TLS included), bounded in time and
/// in how much of the collector's answer it reads.
#[derive(Debug, Clone)]
struct ExportClient {
    client: crate::proxy::attempt::UpstreamClient,
    timeout: Duration,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "the collector did not answer in time")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(tasks: &Tasks) -> Tracer {
        let config = TelemetryConfig {
            // Nothing listens there: exports fail (and are counted), spans are still made.
            otlp_endpoint: Some(url::Url::parse("http://127.0.0.1:9").unwrap()),
            service_name: "unit".into(),
        };
        Tracer::start(&config, ["demo".to_owned()], tasks)
            .unwrap()
            .unwrap()
    }

    fn traceparent_out(tracer: &Tracer, incoming: &'static str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(incoming));
        let request = tracer.request(
            &headers,
            Instant::now(),
            &RequestInfo {
                endpoint: Endpoint::Chat,
                model: "demo",
                tenant: "t",
                request_id: "r",
                max_tokens: Some(5),
                temperature: None,
            },
        );
        let uri: http::Uri = "http://upstream:8080/v1/chat/completions".parse().unwrap();
        let upstream = request.upstream(&UpstreamInfo {
            endpoint: Endpoint::Chat,
            kind: ProviderKind::Openai,
            provider: "p",
            model: "gpt-x",
            uri: &uri,
            resends: 0,
        });
        let mut out = HeaderMap::new();
        upstream.inject(&mut out);
        upstream.answered("gpt-x", Some((3, 4)), false);
        request.end(&RequestEnd {
            status: 200,
            ..RequestEnd::default()
        });
        out.get("traceparent")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_callers_trace_reaches_the_upstream_with_a_new_span_id() {
        let tasks = Tasks::new();
        let tracer = start(&tasks);
        let sampled = traceparent_out(
            &tracer,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let parts: Vec<&str> = sampled.split('-').collect();
        assert_eq!(parts.len(), 4, "{sampled}");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's own span");
        assert_eq!(parts[3], "01");
        // The caller's sampling decision holds downstream.
        let unsampled = traceparent_out(
            &tracer,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        assert!(unsampled.ends_with("-00"), "{unsampled}");
        // Junk is ignored: a new trace starts.
        let fresh = traceparent_out(&tracer, "00-zz-yy-01");
        assert!(!fresh.contains("4bf92f3577b34da6a3ce929d0e0e4736") && fresh.len() == 55);
        // The export task ends once the last tracer is gone.
        drop(tracer);
        assert!(tasks.drain(Duration::from_secs(20)).await);
    }

    #[test]
    fn provider_names_follow_the_conventions() {
        assert_eq!(provider_name(ProviderKind::Openai), "openai");
        assert_eq!(provider_name(ProviderKind::Anthropic), "anthropic");
        assert_eq!(provider_name(ProviderKind::Azure), "azure.ai.openai");
        assert_eq!(operation(Endpoint::Embeddings), "embeddings");
    }
}
