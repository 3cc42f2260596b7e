//! The mock over real TCP, driven by reqwest as a gateway would drive it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::openai::chat::{ChatCompletion, ChatCompletionChunk, Role};
use crate::openai::usage::Usage;

struct Mock {
    tasks: Tasks,
    provider: MockProvider,
    client: reqwest::Client,
}

impl Mock {
    async fn start(options: MockOptions) -> Self {
        let tasks = Tasks::new();
        let provider =
            MockProvider::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options, &tasks)
                .await
                .unwrap();
        Self {
            tasks,
            provider,
            client: reqwest::Client::new(),
        }
    }

    async fn default() -> Self {
        Self::start(MockOptions::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.provider.addr())
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn anthropic(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// One SSE event: its `event:` name (if any) and its `data:` payload.
#[derive(Debug)]
struct Event {
    name: Option<String>,
    data: String,
}

fn parse_sse(text: &str) -> Vec<Event> {
    assert!(
        text.ends_with("\n\n"),
        "stream does not end at an event boundary: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|raw| {
            let mut event = Event {
                name: None,
                data: String::new(),
            };
            for line in raw.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event.name = Some(name.to_owned());
                } else if let Some(data) = line.strip_prefix("data: ") {
                    event.data = data.to_owned();
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            event
        })
        .collect()
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there mock"},
        ],
    })
}

/// (3 words + 3) + (3 words + 3).
const CHAT_PROMPT_TOKENS: u64 = 12;
const CHAT_REPLY: &str = "Mock reply to: Hello there mock";

async fn stream_events(response: reqwest::Response) -> Vec<Event> {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    parse_sse(&response.text().await.unwrap())
}

fn chunk(event: &Event) -> ChatCompletionChunk {
    serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("{e}: {}", event.data))
}

// === chat ===

#[tokio::test]
async fn chat_answer_has_openai_shape_and_usage() {
    let mock = Mock::default().await;
    let response = mock.post("/v1/chat/completions", &chat_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let completion: ChatCompletion = response.json().await.unwrap();
    assert_eq!(completion.object, "chat.completion");
    assert_eq!(completion.model, "gpt-4o-mini");
    assert!(completion.id.starts_with("chatcmpl-"));
    assert_eq!(completion.choices.len(), 1);
    let choice = &completion.choices[0];
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.message.content.as_deref(), Some(CHAT_REPLY));
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    let usage = completion.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (CHAT_PROMPT_TOKENS, 6, 18)
    );
}

#[tokio::test]
async fn reply_quotes_forty_chars_or_uses_the_fixed_text() {
    let mock = Mock::default().await;
    let long = "x".repeat(100);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": long}]}]});
    let completion: ChatCompletion = mock
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        completion.choices[0].message.content.as_deref(),
        Some(&*format!("Mock reply to: {}", "x".repeat(40)))
    );

    let fixed = Mock::start(MockOptions {
        reply: Some("Fixed answer".into()),
        ..MockOptions::default()
    })
    .await;
    let completion: ChatCompletion = fixed
        .post("/v1/chat/completions", &chat_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        completion.choices[0].message.content.as_deref(),
        Some("Fixed answer")
    );
    assert_eq!(completion.usage.unwrap().completion_tokens, 2);
}

#[tokio::test]
async fn stream_without_usage_has_no_usage_and_ends_with_done() {
    let mock = Mock::default().await;
    let events = stream_events(mock.post("/v1/chat/completions", &chat_body(true)).await).await;
    // role chunk, 8 content chunks, finish chunk, [DONE]
    assert_eq!(events.len(), 11, "{events:?}");
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<ChatCompletionChunk> = events[..10].iter().map(chunk).collect();
    for event in &events[..10] {
        assert!(
            !event.data.contains("\"usage\""),
            "usage without include_usage: {}",
            event.data
        );
    }
    assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
    assert_eq!(chunks[0].choices[0].delta.content.as_deref(), Some(""));
    let text: String = chunks[1..9]
        .iter()
        .map(|c| c.choices[0].delta.content.clone().unwrap())
        .collect();
    assert_eq!(text, CHAT_REPLY);
    assert!(chunks[1..9].iter().all(|c| !c.choices[0]
        .delta
        .content
        .as_deref()
        .unwrap()
        .is_empty()));
    assert_eq!(chunks[9].choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"
        && c.model == "gpt-4o-mini"
        && c.id == chunks[0].id));
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = Mock::start(MockOptions {
        chunks: 3,
        ..MockOptions::default()
    })
    .await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream_events(mock.post("/v1/chat/completions", &body).await).await;
    // role, 3 content, finish, usage, [DONE]
    assert_eq!(events.len(), 7, "{events:?}");
    assert_eq!(events[6].data, "[DONE]");
    for event in &events[..5] {
        let raw: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(raw.get("usage"), Some(&Value::Null), "{}", event.data);
    }
    let last: Value = serde_json::from_str(&events[5].data).unwrap();
    assert_eq!(last["choices"], json!([]));
    let usage: Usage = serde_json::from_value(last["usage"].clone()).unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (CHAT_PROMPT_TOKENS, 6, 18)
    );
}

fn tool_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "other"}},
        ],
    })
}

#[tokio::test]
async fn tools_get_a_call_to_the_first_tool() {
    let mock = Mock::default().await;
    let completion: ChatCompletion = mock
        .post("/v1/chat/completions", &tool_body(false))
        .await
        .json()
        .await
        .unwrap();
    let choice = &completion.choices[0];
    assert_eq!(choice.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(choice.message.content, None);
    let calls = choice.message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].kind.as_str(), calls[0].function.name.as_str()),
        ("function", "get_weather")
    );
    assert_eq!(calls[0].function.arguments, "{}");

    let events = stream_events(mock.post("/v1/chat/completions", &tool_body(true)).await).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<ChatCompletionChunk> = events[..events.len() - 1].iter().map(chunk).collect();
    let deltas: Vec<_> = chunks
        .iter()
        .filter_map(|c| c.choices[0].delta.tool_calls.as_ref())
        .flatten()
        .collect();
    assert!(deltas[0].id.as_deref().unwrap().starts_with("call_"));
    assert_eq!(deltas[0].kind.as_deref(), Some("function"));
    assert_eq!(
        deltas[0].function.as_ref().unwrap().name.as_deref(),
        Some("get_weather")
    );
    let arguments: String = deltas
        .iter()
        .filter_map(|d| d.function.as_ref()?.arguments.clone())
        .collect();
    assert_eq!(arguments, "{}");
    assert_eq!(
        chunks.last().unwrap().choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );

    // After the tool answered, the model answers in text.
    let mut body = tool_body(false);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "tool", "tool_call_id": "x", "content": "sunny"}));
    let completion: ChatCompletion = mock
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(completion.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn invalid_json_is_an_openai_400() {
    let mock = Mock::default().await;
    let response = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid request body"));

    let response = mock
        .post("/v1/chat/completions", &json!({"messages": []}))
        .await;
    assert_eq!(response.status(), 400, "missing model");
    let response = mock.client.get(mock.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

// === embeddings, models, Azure ===

#[tokio::test]
async fn embeddings_are_deterministic_vectors() {
    let mock = Mock::default().await;
    let body = json!({"model": "text-embedding-3-small", "input": ["hello world", "other text here", "hello world"]});
    let out: Value = mock
        .post("/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(out["object"], "list");
    assert_eq!(out["model"], "text-embedding-3-small");
    assert_eq!(out["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
    let data = out["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"].as_array().unwrap().len(), EMBEDDING_DIMS);
    }
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    let one: Value = mock
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": "hello world"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["data"][0]["embedding"], data[0]["embedding"]);
    assert_eq!(one["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn models_are_listed() {
    let mock = Mock::default().await;
    let out: Value = mock
        .client
        .get(mock.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["object"], "list");
    let ids: Vec<&str> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, MODELS);
}

#[tokio::test]
async fn azure_paths_use_the_deployment_as_model_and_are_recorded() {
    let mock = Mock::default().await;
    let chat = "/openai/deployments/my-gpt/chat/completions";
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let response = mock
        .client
        .post(mock.url(&format!("{chat}?api-version=2024-10-21")))
        .header("api-key", "azure-secret")
        .json(&body)
        .send()
        .await
        .unwrap();
    let completion: ChatCompletion = response.json().await.unwrap();
    assert_eq!(completion.model, "my-gpt");
    let emb: Value = mock
        .post(
            "/openai/deployments/my-emb/embeddings?api-version=1",
            &json!({"input": "a"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(emb["model"], "my-emb");

    let control = mock.provider.control();
    assert_eq!(control.calls(chat), 1);
    let recorded = control.requests().await;
    assert_eq!(recorded[0].path, chat);
    assert_eq!(recorded[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(recorded[0].headers["api-key"], "azure-secret");
}

// === Anthropic ===

#[tokio::test]
async fn anthropic_message_has_anthropic_shape() {
    let mock = Mock::default().await;
    let body = json!({
        "model": "claude-3-5-haiku-latest", "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello Claude"}]}],
    });
    let response = mock.anthropic(&body).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out["type"], "message");
    assert_eq!(out["role"], "assistant");
    assert_eq!(out["model"], "claude-3-5-haiku-latest");
    assert_eq!(
        out["content"],
        json!([{"type": "text", "text": "Mock reply to: Hello Claude"}])
    );
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["stop_sequence"], Value::Null);
    // system 2 words + (2 words + 3)
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 7, "output_tokens": 5, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );

    let cached = json!({"model": "c", "max_tokens": 5, "system": [{"type": "text", "text": "cache-test prefix"}],
                        "messages": [{"role": "user", "content": "hi"}]});
    let out: Value = mock.anthropic(&cached).await.json().await.unwrap();
    assert_eq!(out["usage"]["cache_read_input_tokens"], CACHE_READ_TOKENS);
    assert_eq!(
        out["usage"]["cache_creation_input_tokens"],
        CACHE_CREATION_TOKENS
    );

    let tools = json!({"model": "c", "max_tokens": 5, "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
                       "messages": [{"role": "user", "content": "find it"}]});
    let out: Value = mock.anthropic(&tools).await.json().await.unwrap();
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["content"][0]["type"], "tool_use");
    assert_eq!(out["content"][0]["name"], "lookup");
    assert_eq!(out["content"][0]["input"], json!({}));
    assert!(out["content"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
}

#[tokio::test]
async fn anthropic_requires_its_version_header() {
    let mock = Mock::default().await;
    let body =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let response = mock.post("/v1/messages", &body).await;
    assert_eq!(response.status(), 400);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["type"], "error");
    assert_eq!(out["error"]["type"], "invalid_request_error");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));
}

#[tokio::test]
async fn anthropic_stream_sends_events_in_order() {
    let mock = Mock::start(MockOptions {
        chunks: 4,
        ..MockOptions::default()
    })
    .await;
    let body = json!({"model": "claude", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "Hello Claude"}]});
    let events = stream_events(mock.anthropic(&body).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 4]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    for (name, value) in names.iter().zip(&data) {
        assert_eq!(value["type"], *name);
    }
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 5);
    assert_eq!(data[0]["message"]["content"], json!([]));
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data[3..7]
        .iter()
        .map(|d| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Mock reply to: Hello Claude");
    assert_eq!(data[8]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[8]["usage"]["output_tokens"], 5);

    let tools = json!({"model": "c", "max_tokens": 5, "stream": true, "tools": [{"name": "lookup"}],
                       "messages": [{"role": "user", "content": "find it"}]});
    let events = stream_events(mock.anthropic(&tools).await).await;
    let data: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(data[1]["content_block"]["type"], "tool_use");
    assert_eq!(data[1]["content_block"]["name"], "lookup");
    let json: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(json, "{}");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

// === failures ===

#[tokio::test]
async fn fail_next_fails_exactly_n_requests() {
    let mock = Mock::default().await;
    mock.provider.control().fail_next(2, FailKind::Status500);
    for _ in 0..2 {
        let response = mock.post("/v1/chat/completions", &chat_body(false)).await;
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
    }
    assert_eq!(
        mock.post("/v1/chat/completions", &chat_body(false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn status_429_carries_retry_after() {
    let mock = Mock::default().await;
    mock.provider.control().fail_next(1, FailKind::Status429);
    let response = mock
        .post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
        .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let mock = Mock::default().await;
    mock.provider.control().fail_next(1, FailKind::Reset);
    let err = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    assert_eq!(
        mock.post("/v1/chat/completions", &chat_body(false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn hang_answers_nothing_and_does_not_block_shutdown() {
    let mock = Mock::default().await;
    mock.provider.control().fail_next(1, FailKind::Hang);
    let err = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .timeout(Duration::from_millis(300))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");

    // A second hanging request whose client stays connected: shutdown must still end it.
    mock.provider.control().fail_next(1, FailKind::Hang);
    let request = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat_body(false))
        .send();
    let request = tokio::time::timeout(Duration::from_secs(10), request);
    let shutdown = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        mock.tasks.begin_shutdown();
        mock.tasks.drain(Duration::from_secs(5)).await
    };
    let (answer, drained) = tokio::join!(request, shutdown);
    assert!(drained, "mock tasks still running after shutdown");
    let answer = answer.expect("the connection stayed open after shutdown");
    assert!(
        answer.is_err(),
        "a hanging request was answered: {answer:?}"
    );
}

#[tokio::test]
async fn malformed_sse_breaks_off_without_done() {
    let mock = Mock::default().await;
    mock.provider.control().fail_next(2, FailKind::MalformedSse);
    let text = mock
        .post("/v1/chat/completions", &chat_body(true))
        .await
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    assert_eq!(events.len(), 2, "{text}");
    chunk(&events[0]);
    assert_eq!(events[1].data, "{not json");
    assert!(!text.contains("[DONE]"));

    let response = mock.post("/v1/chat/completions", &chat_body(false)).await;
    assert_eq!(response.status(), 200);
    assert!(serde_json::from_slice::<Value>(&response.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn fail_rate_applies_to_that_share_of_posts() {
    let mock = Mock::start(MockOptions {
        fail_rate: 1.0,
        fail_kind: FailKind::Status429,
        ..MockOptions::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            mock.post("/v1/chat/completions", &chat_body(false))
                .await
                .status(),
            429
        );
    }
    // GETs never fail.
    assert_eq!(
        mock.client
            .get(mock.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bad = MockProvider::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        MockOptions {
            fail_rate: 1.5,
            ..MockOptions::default()
        },
        &mock.tasks,
    )
    .await;
    assert!(bad.is_err());
}

// === control ===

#[tokio::test]
async fn hold_streams_pauses_after_the_first_content_chunk() {
    let mock = Mock::default().await;
    let gate = mock.provider.control().hold_streams();
    let mut response = mock.post("/v1/chat/completions", &chat_body(true)).await;
    let first_content = "\"content\":\"Mock\"";
    let mut seen = String::new();
    while !seen.contains(first_content) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        parse_sse(&seen).len(),
        2,
        "more than role and first content chunk: {seen}"
    );
    let next = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await;
    assert!(next.is_err(), "stream went on while held: {next:?}");

    gate.release();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events = parse_sse(&seen);
    assert_eq!(events.len(), 11);
    assert_eq!(events[10].data, "[DONE]");
}

#[tokio::test]
async fn calls_are_counted_per_path_and_requests_recorded() {
    let mock = Mock::default().await;
    let control = mock.provider.control();
    for _ in 0..3 {
        mock.post("/v1/chat/completions", &chat_body(false)).await;
    }
    mock.post("/v1/embeddings", &json!({"model": "e", "input": "x"}))
        .await;
    mock.client
        .post(mock.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-ant-test")
        .body(r#"{"model":"c","max_tokens":1,"messages":[{"role":"user","content":"recorded?"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(control.calls("/v1/chat/completions"), 3);
    assert_eq!(control.calls("/v1/embeddings"), 1);
    assert_eq!(control.calls("/v1/messages"), 1);
    assert_eq!(control.calls("/v1/models"), 0);
    assert_eq!(control.total_calls(), 5);

    let recorded = control.requests().await;
    assert_eq!(recorded.len(), 5);
    let last = recorded.last().unwrap();
    assert_eq!(last.method, http::Method::POST);
    assert_eq!(last.path, "/v1/messages");
    assert_eq!(last.query, None);
    assert_eq!(last.headers["x-api-key"], "sk-ant-test");
    assert_eq!(last.json().unwrap()["messages"][0]["content"], "recorded?");
    assert_eq!(recorded[0].json().unwrap(), chat_body(false));
}

#[tokio::test]
async fn recording_keeps_only_the_latest_requests() {
    let mock = Mock::default().await;
    let extra = 10;
    for i in 0..RECORDED_REQUESTS + extra {
        mock.post(
            "/v1/embeddings",
            &json!({"model": "e", "input": i.to_string()}),
        )
        .await;
    }
    let recorded = mock.provider.control().requests().await;
    assert_eq!(recorded.len(), RECORDED_REQUESTS);
    assert_eq!(recorded[0].json().unwrap()["input"], extra.to_string());
    assert_eq!(
        recorded.last().unwrap().json().unwrap()["input"],
        (RECORDED_REQUESTS + extra - 1).to_string()
    );

    mock.provider.control().set_recording(false);
    mock.post(
        "/v1/embeddings",
        &json!({"model": "e", "input": "unrecorded"}),
    )
    .await;
    let recorded = mock.provider.control().requests().await;
    assert!(recorded
        .iter()
        .all(|r| r.json().unwrap()["input"] != "unrecorded"));
}

#[tokio::test]
async fn latency_delays_the_answer_and_can_change_at_run_time() {
    let mock = Mock::default().await;
    mock.provider
        .control()
        .set_latency(Duration::from_millis(150));
    let started = std::time::Instant::now();
    assert_eq!(
        mock.post("/v1/chat/completions", &chat_body(false))
            .await
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    mock.provider.control().set_latency(Duration::ZERO);
    let started = std::time::Instant::now();
    mock.post("/v1/chat/completions", &chat_body(false)).await;
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn chunk_interval_spaces_stream_events() {
    let mock = Mock::start(MockOptions {
        chunks: 2,
        chunk_interval: Duration::from_millis(40),
        ..MockOptions::default()
    })
    .await;
    let started = std::time::Instant::now();
    let events = stream_events(mock.post("/v1/chat/completions", &chat_body(true)).await).await;
    // 5 events: 4 gaps.
    assert_eq!(events.len(), 5);
    assert!(
        started.elapsed() >= Duration::from_millis(160),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    let mock = Mock::default().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(mock.url("/v1/chat/completions"))
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let events = stream_events(response).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
}

// === pure helpers ===

#[test]
fn fail_kinds_parse_from_their_cli_names() {
    for kind in FailKind::ALL {
        assert_eq!(kind.as_str().parse::<FailKind>(), Ok(kind));
        assert_eq!(FailKind::from_code(kind.code()), kind);
    }
    assert_eq!("malformed-sse".parse(), Ok(FailKind::MalformedSse));
    assert!("404".parse::<FailKind>().is_err());
}

#[test]
fn pieces_split_on_char_boundaries() {
    assert_eq!(text::pieces("abcdefgh", 3), ["abc", "def", "gh"]);
    assert_eq!(text::pieces("héllo", 5), ["h", "é", "l", "l", "o"]);
    assert_eq!(text::pieces("ab", 4), ["a", "b", "", ""]);
    assert_eq!(text::pieces("abc", 0), Vec::<&str>::new());
    assert_eq!(text::reply(None, "ünïcødé"), "Mock reply to: ünïcødé");
}
