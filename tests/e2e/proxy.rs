//! Passthrough: JSON and SSE, unknown fields, usage handling, embeddings, models.

use serde_json::{json, Value};

use crate::support::gateway::{basic_config, client, post_chat, Gateway};
use crate::support::upstream::Upstream;
use crate::support::{sse_content, sse_data};

#[tokio::test]
async fn chat_non_stream_passes_through_with_gateway_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "my-req-1")
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-request-id"], "my-req-1");
    assert_eq!(h["x-sentinel-provider"], "mock");
    assert_eq!(h["x-sentinel-cache"], "miss");
    let overhead: f64 = h["x-sentinel-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("hello there"));
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn unknown_fields_reach_the_upstream_unchanged_and_model_is_renamed() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let body = json!({"model": "demo", "messages": [{"role": "user", "content": "hi", "x_part": {"a": 1}}],
                      "logit_bias": {"50256": -100}, "metadata": {"team": "search"}, "vendor_flag": true, "temperature": 0.3});
    let resp = post_chat(&client(), &gw, &body).await;
    assert_eq!(resp.status(), 200);
    let seen = up.mock.control().requests().await;
    let sent: Value = serde_json::from_slice(&seen.last().unwrap().body).unwrap();
    assert_eq!(sent["model"], "mock-gpt", "route model replaces the alias");
    assert_eq!(sent["logit_bias"], body["logit_bias"]);
    assert_eq!(sent["metadata"], body["metadata"]);
    assert_eq!(sent["vendor_flag"], true);
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["messages"][0]["x_part"], json!({"a": 1}));
}

#[tokio::test]
async fn unchanged_bodies_are_forwarded_byte_for_byte() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let raw =
        r#"{ "messages":[{"role":"user","content":"hi"}],   "model":"same-name", "zz":[1,2,3] }"#;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.mock.control().requests().await;
    assert_eq!(&seen.last().unwrap().body[..], raw.as_bytes());
}

#[tokio::test]
async fn stream_chunks_arrive_before_the_upstream_finishes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let gate = up.mock.control().hold_streams();
    let mut resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "stream please"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The mock holds the rest of the stream until the gate opens: whatever arrives now was
    // forwarded while the upstream was still mid-answer.
    let mut early = String::new();
    while !early.contains("\"content\":\"") || sse_content(&early).is_empty() {
        let chunk = resp
            .chunk()
            .await
            .unwrap()
            .expect("a chunk before the upstream finished");
        early.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        !early.contains("[DONE]"),
        "the upstream has not finished yet"
    );
    gate.release();
    let mut all = early;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        all.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let data = sse_data(&all);
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        !all.contains("\"total_tokens\""),
        "usage chunk stripped: the client did not ask"
    );
    assert!(sse_content(&all).contains("stream please"));
    // The gateway asked the upstream for usage on the client's behalf.
    let sent: Value =
        serde_json::from_slice(&up.mock.control().requests().await.last().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn stream_keeps_usage_when_the_client_asks() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let text = client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "demo", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn embeddings_and_models() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let resp = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "embed", "input": ["a", "b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert!(body["usage"]["prompt_tokens"].as_u64().is_some());
    let sent: Value =
        serde_json::from_slice(&up.mock.control().requests().await.last().unwrap().body).unwrap();
    assert_eq!(sent["model"], "mock-embedding");

    let models: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["demo", "embed", "same-name"]);
}

#[tokio::test]
async fn back_to_back_keep_alive_requests_do_not_stall() {
    // Regression guard for a missing TCP_NODELAY, which shows up as a ~40 ms delayed-ACK stall
    // on every request of a reused connection. Not a performance measurement (see BENCHMARKS.md).
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let c = client();
    let body = json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]});
    let mut rtts = Vec::new();
    for _ in 0..21 {
        let t0 = std::time::Instant::now();
        let resp = post_chat(&c, &gw, &body).await;
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        rtts.push(t0.elapsed());
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    assert!(
        median < std::time::Duration::from_millis(35),
        "median round trip {median:?}: a Nagle stall?"
    );
}

#[tokio::test]
async fn azure_routes_to_the_deployment_with_api_key_header() {
    let up = Upstream::start().await;
    let config = format!(
        r#"
[[providers]]
name = "az"
kind = "azure"
base_url = "http://{}/openai"
api_key_env = "E2E_AZURE_KEY"
api_version = "2024-10-21"

[[models]]
name = "gpt-4o"
routes = [{{ provider = "az", model = "my-deployment" }}]
"#,
        up.addr()
    );
    let gw = Gateway::start_with_env(&config, &[("E2E_AZURE_KEY", "azure-secret")]).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi azure"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.mock.control().requests().await;
    let req = seen.last().unwrap();
    assert_eq!(
        req.path,
        "/openai/deployments/my-deployment/chat/completions"
    );
    assert_eq!(req.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(req.headers["api-key"], "azure-secret");
    assert!(req.headers.get("authorization").is_none());
}
