//! Test support: the real `sentinel` binary on port 0, the in-process mock upstream on port 0,
//! and a private `redis-server` on a free port.

pub mod cluster;
pub mod gateway;
pub mod redis;
pub mod upstream;

use serde_json::Value;

/// Asserts the OpenAI error shape and returns the error object.
pub fn assert_openai_error(body: &Value, code: &str) -> Value {
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no error object in {body}"))
        .clone();
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    assert!(err["type"].as_str().is_some(), "type in {body}");
    assert_eq!(err["code"], code, "code in {body}");
    assert!(err.get("param").is_some(), "param key present in {body}");
    err
}

/// Parses an SSE body into its `data:` payloads.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        })
        .map(str::to_owned)
        .collect()
}

/// Concatenates the `delta.content` of every chunk.
pub fn sse_content(text: &str) -> String {
    sse_data(text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str())
                .map(str::to_owned)
        })
        .collect()
}
