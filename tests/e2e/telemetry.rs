//! OpenTelemetry trace export: a real OTLP/HTTP receiver (protobuf, `POST /v1/traces`) in the
//! test, the real gateway exporting to it, and the mock upstream recording what it was sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::support::gateway::{basic_config, client, post_chat, Gateway, TEST_KEY};
use crate::support::sse_data;
use crate::support::upstream::Upstream;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
/// A prompt nobody would ever log: it must appear in no span.
const PROMPT: &str = "the purple elephant recites 4417 secrets";

/// One exported span and the `service.name` of its resource.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

/// A minimal OTLP/HTTP receiver: decodes protobuf trace exports and keeps every span.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(Arc::clone(&spans));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn all(&self) -> Vec<Received> {
        self.spans.lock().await.clone()
    }

    /// Waits (polling) until `done` holds for the spans received so far.
    async fn until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.all().await;
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}",
                names(&spans)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Received>>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    assert_eq!(
        headers["content-type"], "application/x-protobuf",
        "OTLP/HTTP protobuf"
    );
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut out = spans.lock().await;
    for rs in request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                Any::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn names(spans: &[Received]) -> Vec<String> {
    spans
        .iter()
        .map(|r| format!("{} ({})", r.span.name, hex(&r.span.span_id)))
        .collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key)? {
        Any::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Any::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn f64_attr(span: &Span, key: &str) -> Option<f64> {
    match attr(span, key)? {
        Any::DoubleValue(f) => Some(*f),
        _ => None,
    }
}

/// The request span of `request_id`.
fn request_span<'a>(spans: &'a [Received], request_id: &str) -> Option<&'a Received> {
    spans.iter().find(|r| {
        r.span.kind == SpanKind::Server as i32
            && str_attr(&r.span, "sentinel.request_id") == Some(request_id)
    })
}

fn children<'a>(spans: &'a [Received], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

fn has_children(spans: &[Received], request_id: &str, wanted: &[&str]) -> bool {
    request_span(spans, request_id).is_some_and(|req| {
        let kids = children(spans, &req.span);
        wanted.iter().all(|w| kids.iter().any(|k| k.name == *w))
    })
}

/// No attribute value of any span carries the prompt, the answer or the key.
fn assert_nothing_secret(spans: &[Received], answer: &str) {
    for r in spans {
        for kv in &r.span.attributes {
            let text = format!("{:?}", kv.value);
            for secret in [PROMPT, "purple elephant", answer, TEST_KEY] {
                assert!(
                    !text.contains(secret),
                    "span {} attribute {} carries {secret:?}",
                    r.span.name,
                    kv.key
                );
            }
        }
    }
}

fn config(up: SocketAddr, dead: SocketAddr, extra: &str) -> String {
    basic_config(
        up,
        &format!(
            r#"
[[providers]]
name = "dead"
kind = "openai_compatible"
base_url = "http://{dead}/v1"
timeout = "2s"
max_retries = 0

[[models]]
name = "broken"
routes = [{{ provider = "dead", model = "nowhere-model" }}]

[cache.exact]
enabled = true
{extra}"#
        ),
    )
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one request's whole trace, checked in order"
)]
async fn a_request_exports_its_span_tree_with_genai_attributes_and_propagates_traceparent() {
    let collector = Collector::start().await;
    let up = Upstream::start().await;
    let dead = closed_port().await;
    let telemetry = format!(
        "\n[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"sentinel-e2e\"\n",
        collector.endpoint()
    );
    let mut gw = Gateway::start(&config(up.addr(), dead, &telemetry)).await;
    let c = client();

    // 1. A chat request that carries the caller's trace context.
    let body = json!({"model": "demo", "max_tokens": 64, "temperature": 0.5,
                      "messages": [{"role": "user", "content": PROMPT}]});
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "otel-req-1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sentinel-cache"], "miss");
    let answer: Value = resp.json().await.unwrap();
    let usage = &answer["usage"];
    let answer_text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    let spans = collector
        .until("the request span and its children", |s| {
            has_children(
                s,
                "otel-req-1",
                &["cache lookup", "chat mock-gpt", "audit enqueue"],
            )
        })
        .await;
    let req = request_span(&spans, "otel-req-1").unwrap();
    assert_eq!(req.service, "sentinel-e2e");
    let rs = &req.span;
    assert_eq!(rs.name, "chat demo");
    assert_eq!(rs.kind, SpanKind::Server as i32);
    assert_eq!(hex(&rs.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&rs.parent_span_id),
        PARENT_ID,
        "the caller's span is the parent"
    );
    assert!(rs.end_time_unix_nano >= rs.start_time_unix_nano);
    assert_eq!(str_attr(rs, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(str_attr(rs, "gen_ai.request.model"), Some("demo"));
    assert_eq!(
        str_attr(rs, "gen_ai.response.model"),
        answer["model"].as_str(),
        "the model the answer names"
    );
    assert_eq!(
        str_attr(rs, "gen_ai.provider.name"),
        Some("openai_compatible")
    );
    assert_eq!(
        int_attr(rs, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64()
    );
    assert_eq!(
        int_attr(rs, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64()
    );
    assert!(int_attr(rs, "gen_ai.usage.input_tokens").unwrap() > 0);
    assert_eq!(int_attr(rs, "gen_ai.request.max_tokens"), Some(64));
    assert_eq!(f64_attr(rs, "gen_ai.request.temperature"), Some(0.5));
    assert_eq!(int_attr(rs, "http.response.status_code"), Some(200));
    assert_eq!(str_attr(rs, "sentinel.tenant"), Some("test"));
    assert_eq!(str_attr(rs, "sentinel.cache"), Some("miss"));
    assert_ne!(
        rs.status.as_ref().map_or(0, |s| s.code),
        StatusCode::Error as i32
    );

    let kids = children(&spans, rs);
    let lookup = kids.iter().find(|s| s.name == "cache lookup").unwrap();
    assert_eq!(lookup.kind, SpanKind::Internal as i32);
    assert_eq!(str_attr(lookup, "sentinel.cache"), Some("miss"));
    let audit = kids.iter().find(|s| s.name == "audit enqueue").unwrap();
    assert_eq!(audit.kind, SpanKind::Internal as i32);
    let upstream = kids.iter().find(|s| s.name == "chat mock-gpt").unwrap();
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(
        str_attr(upstream, "gen_ai.provider.name"),
        Some("openai_compatible")
    );
    assert_eq!(str_attr(upstream, "gen_ai.request.model"), Some("mock-gpt"));
    assert_eq!(int_attr(upstream, "http.response.status_code"), Some(200));
    assert_eq!(
        int_attr(upstream, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64()
    );
    assert_eq!(
        int_attr(upstream, "server.port"),
        Some(i64::from(up.addr().port()))
    );

    // The upstream was told about the gateway's client span, in the caller's trace.
    let seen = up.mock.control().requests().await;
    let sent = seen
        .iter()
        .rev()
        .find(|r| {
            r.json()
                .is_some_and(|b| b["messages"][0]["content"] == PROMPT)
        })
        .expect("the mock saw the request");
    let traceparent = sent.headers["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&upstream.span_id)),
        "the upstream's traceparent names the CLIENT span"
    );

    // 1b. A stream: its span ends with the stream, with the usage the stream reported.
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "otel-stream-1")
        .json(
            &json!({"model": "demo", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "stream me a short answer"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let stream_usage = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .expect("a usage chunk");
    let spans = collector
        .until("the stream's spans", |s| {
            has_children(s, "otel-stream-1", &["chat mock-gpt", "audit enqueue"])
        })
        .await;
    let streamed = &request_span(&spans, "otel-stream-1").unwrap().span;
    assert_eq!(int_attr(streamed, "http.response.status_code"), Some(200));
    assert_eq!(
        int_attr(streamed, "gen_ai.usage.input_tokens"),
        stream_usage["prompt_tokens"].as_i64()
    );
    assert_eq!(
        int_attr(streamed, "gen_ai.usage.output_tokens"),
        stream_usage["completion_tokens"].as_i64()
    );
    assert_eq!(
        hex(&streamed.parent_span_id),
        "",
        "no caller context: a root span"
    );

    // 2. The same request again: answered by the cache, no upstream span.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut hit_id = None;
    for i in 0.. {
        let id = format!("otel-hit-{i}");
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", &id)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        if resp.headers()["x-sentinel-cache"] == "exact" {
            hit_id = Some(id);
            break;
        }
        // The fill is written off the request path; a busy machine may miss once more.
        assert!(Instant::now() < deadline, "the cache never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit_id = hit_id.unwrap();
    let spans = collector
        .until("the cache hit's spans", |s| {
            has_children(s, &hit_id, &["cache lookup", "audit enqueue"])
        })
        .await;
    let hit = &request_span(&spans, &hit_id).unwrap().span;
    assert_eq!(str_attr(hit, "sentinel.cache"), Some("hit"));
    assert_eq!(str_attr(hit, "sentinel.cache.kind"), Some("exact"));
    assert_eq!(
        hex(&hit.parent_span_id),
        "",
        "no caller context: a root span"
    );
    let kids = children(&spans, hit);
    assert!(
        kids.iter().all(|k| k.kind != SpanKind::Client as i32),
        "a hit calls no upstream: {kids:#?}"
    );
    assert_eq!(
        str_attr(
            kids.iter().find(|k| k.name == "cache lookup").unwrap(),
            "sentinel.cache"
        ),
        Some("hit")
    );

    // 3. A model whose only provider is down: error status on the request and the attempt.
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "otel-fail-1")
        .json(&json!({"model": "broken", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let spans = collector
        .until("the failed request's spans", |s| {
            has_children(s, "otel-fail-1", &["chat nowhere-model"])
        })
        .await;
    let failed = &request_span(&spans, "otel-fail-1").unwrap().span;
    assert_eq!(failed.name, "chat broken");
    assert_eq!(int_attr(failed, "http.response.status_code"), Some(502));
    assert_eq!(str_attr(failed, "error.type"), Some("upstream_error"));
    assert_eq!(
        failed.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );
    let attempt = children(&spans, failed)
        .into_iter()
        .find(|k| k.name == "chat nowhere-model")
        .unwrap();
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(str_attr(attempt, "error.type"), Some("connect"));
    assert_eq!(
        attempt.status.as_ref().unwrap().code,
        StatusCode::Error as i32
    );

    // 4. Spans still queued at shutdown are flushed before the process exits.
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .header("x-request-id", "otel-embed-1")
        .json(&json!({"model": "embed", "input": PROMPT}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.terminate();
    let status = tokio::time::timeout(Duration::from_secs(20), gw.child.wait())
        .await
        .expect("the gateway stops")
        .unwrap();
    assert!(status.success());
    let spans = collector.all().await;
    let embed = &request_span(&spans, "otel-embed-1")
        .expect("flushed at shutdown")
        .span;
    assert_eq!(embed.name, "embeddings embed");
    assert_eq!(str_attr(embed, "gen_ai.operation.name"), Some("embeddings"));
    assert!(int_attr(embed, "gen_ai.usage.input_tokens").unwrap() > 0);

    assert_nothing_secret(&spans, &answer_text);
}

#[tokio::test]
async fn without_export_the_upstream_gets_no_traceparent_and_a_dead_collector_never_hurts() {
    let up = Upstream::start().await;
    let dead = closed_port().await;

    // Export off: the caller's traceparent is not forwarded (client headers never are) and
    // the gateway makes none.
    let gw = Gateway::start(&config(up.addr(), dead, "")).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "no trace"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.mock.control().requests().await;
    let sent = seen
        .iter()
        .rev()
        .find(|r| {
            r.json()
                .is_some_and(|b| b["messages"][0]["content"] == "no trace")
        })
        .unwrap();
    assert!(
        !sent.headers.contains_key("traceparent") && !sent.headers.contains_key("tracestate"),
        "{:?}",
        sent.headers
    );
    drop(gw);

    // Export on, collector hanging (it accepts connections and never answers): requests are
    // answered as usual while an export is stuck, and shutdown stays clean and bounded.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = hanging.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hanging.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let telemetry = format!("\n[telemetry]\notlp_endpoint = \"http://{collector}\"\n");
    let mut gw = Gateway::start_with_env(
        &config(up.addr(), dead, &telemetry),
        &[("SENTINEL_SERVER__SHUTDOWN_GRACE", "2s")],
    )
    .await;
    let c = client();
    let chat = |i: usize| json!({"model": "demo", "messages": [{"role": "user", "content": format!("q{i}")}]});
    assert_eq!(post_chat(&c, &gw, &chat(0)).await.status(), 200);
    // Wait until the first export is in flight (and stuck).
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never tried to export"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 1..=20 {
        let started = Instant::now();
        let resp = post_chat(&c, &gw, &chat(i)).await;
        assert_eq!(resp.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a stuck export never slows a request ({:?})",
            started.elapsed()
        );
    }
    let sent = up.mock.control().requests().await;
    assert!(
        sent.last().unwrap().headers.contains_key("traceparent"),
        "export on: the gateway propagates its own context"
    );
    let stopping = Instant::now();
    gw.terminate();
    let status = tokio::time::timeout(Duration::from_secs(30), gw.child.wait())
        .await
        .expect("the gateway stops despite the stuck collector")
        .unwrap();
    assert!(status.success());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown is bounded by shutdown_grace ({:?})",
        stopping.elapsed()
    );
}
