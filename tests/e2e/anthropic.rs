//! Anthropic Messages translation through the running gateway, against the mock's
//! Anthropic-shaped `/v1/messages`.

use serde_json::{json, Value};

use crate::support::gateway::{client, Gateway};
use crate::support::sse_data;
use crate::support::upstream::Upstream;

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://{upstream}/v1"
api_key_env = "TEST_ANTHROPIC_KEY"

[[models]]
name = "claude"
routes = [{{ provider = "claude", model = "claude-sonnet-test" }}]
"#
    )
}

async fn start() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &config(up.addr()),
        &[("TEST_ANTHROPIC_KEY", "sk-ant-secret-123")],
    )
    .await;
    (up, gw)
}

#[tokio::test]
async fn non_stream_is_translated_both_ways() {
    let (up, gw) = start().await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "max_tokens": 100,
            "messages": [{"role": "system", "content": "be brief cache-test"}, {"role": "user", "content": "hello claude"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sentinel-provider"], "claude");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("hello claude"));
    // cache read 10 + cache write 5 are inside prompt_tokens, as OpenAI counts them.
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 10);
    assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 5);
    assert!(usage["prompt_tokens"].as_u64().unwrap() >= 15);

    let seen = up.mock.control().requests().await;
    let req = seen.last().unwrap();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.headers["x-api-key"], "sk-ant-secret-123");
    assert_eq!(req.headers["anthropic-version"], "2023-06-01");
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-test");
    assert_eq!(sent["system"], "be brief cache-test");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["messages"][0]["role"], "user");
}

#[tokio::test]
async fn stream_becomes_openai_chunks() {
    let (_up, gw) = start().await;
    let text = client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream claude"}]}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]", "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert!(content.contains("stream claude"), "{content}");
    assert!(chunks.iter().any(|c| c["choices"]
        .get(0)
        .is_some_and(|ch| ch["finish_reason"] == "stop")));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn tool_calls_round_trip() {
    let (up, gw) = start().await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "w",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body: Value = client()
        .post(gw.url("/v1/chat/completions"))
        .json(
            &json!({"model": "claude", "tools": tools, "tool_choice": "auto",
            "messages": [{"role": "user", "content": "weather?"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).is_ok());
    let sent: Value =
        serde_json::from_slice(&up.mock.control().requests().await.last().unwrap().body).unwrap();
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(sent["tool_choice"]["type"], "auto");

    let text = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "stream": true, "tools": tools, "messages": [{"role": "user", "content": "weather?"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"tool_calls\""), "{text}");
    assert!(text.contains("get_weather"));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn provider_secret_never_reaches_logs() {
    let (_up, gw) = start().await;
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let metrics = client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("sk-ant-secret-123"));
    assert!(!gw.log_text().contains("sk-ant-secret-123"));
}
