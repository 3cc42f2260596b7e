//! Every error row of SPEC that the core owns, in OpenAI's shape.

use serde_json::{json, Value};

use crate::support::assert_openai_error;
use crate::support::gateway::{basic_config, client, Gateway, TEST_KEY};
use crate::support::upstream::Upstream;

async fn post_raw(gw: &Gateway, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let resp = client()
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn client_errors_have_the_spec_status_and_code() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "").replacen(
        "[server]\n",
        "[server]\nmax_body_bytes = 2048\n",
        1,
    ))
    .await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/chat/completions",
            "{not json".into(),
            400,
            "invalid_body",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"demo"}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"demo","messages":[]}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"demo","messages":"hi"}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            "model_not_found",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"embed"}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"demo","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(4096)
            ),
            413,
            "body_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let (got, json) = post_raw(&gw, path, body.clone()).await;
        assert_eq!(got, status, "{body:.80}: {json}");
        assert_openai_error(&json, code);
    }
    assert_eq!(
        up.mock.control().total_calls(),
        0,
        "no bad request reached the upstream"
    );
}

#[tokio::test]
async fn chunked_oversized_body_is_cut_off_before_it_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "").replacen(
        "[server]\n",
        "[server]\nmax_body_bytes = 1024\n",
        1,
    ))
    .await;
    // A chunked upload that never declares its length: send 2 KiB of it, then stop writing and
    // wait. The gateway must answer 413 without waiting for (or buffering) the rest.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TEST_KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        conn.write_all(format!("200\r\n{}\r\n", " ".repeat(512)).as_bytes())
            .await
            .unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("body_too_large") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(up.mock.control().total_calls(), 0);
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let resp = client().get(gw.url("/v1/nothing")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(&resp.json().await.unwrap(), "not_found");
    let resp = client()
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_openai_error(&resp.json().await.unwrap(), "method_not_allowed");
}

#[tokio::test]
async fn upstream_client_errors_pass_through() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    // `mock_status` makes the mock refuse the request; a 4xx is the provider's verdict on the
    // request, so it goes back as it is, without retries.
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "x"}], "mock_status": 422}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.headers()["x-sentinel-provider"], "mock");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(
        up.mock.control().calls("/v1/chat/completions"),
        1,
        "no retry on a client error"
    );
}

#[tokio::test]
async fn request_id_is_replaced_when_not_sane() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let resp = client()
        .get(gw.url("/health/live"))
        .header("x-request-id", "bad id; drop table")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "bad id; drop table");
    assert_eq!(id.len(), 36, "a UUID: {id}");
}
