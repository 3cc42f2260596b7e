//! Retries, fallbacks, the circuit breaker and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use sentinel::mock_provider::{FailKind, MockOptions};
use serde_json::{json, Value};

use crate::support::assert_openai_error;
use crate::support::gateway::{basic_config, client, post_chat, Gateway};
use crate::support::upstream::Upstream;

fn chat() -> Value {
    json!({"model": "duo", "messages": [{"role": "user", "content": "x"}]})
}

/// Two providers; model `duo` routes to `primary` then falls back to `backup`.
fn two_provider_config(
    primary: SocketAddr,
    backup: SocketAddr,
    breaker: &str,
    retries: u32,
    timeout: &str,
) -> String {
    format!(
        r#"
[server]
request_timeout = "20s"

[[providers]]
name = "primary"
kind = "openai_compatible"
base_url = "http://{primary}/v1"
timeout = "{timeout}"
stream_idle_timeout = "{timeout}"
max_retries = {retries}
circuit_breaker = {{ {breaker} }}

[[providers]]
name = "backup"
kind = "openai_compatible"
base_url = "http://{backup}/v1"
max_retries = 0

[[models]]
name = "duo"
routes = [{{ provider = "primary", model = "m1" }}, {{ provider = "backup", model = "m2" }}]
"#
    )
}

#[tokio::test]
async fn retries_5xx_then_succeeds_on_the_same_provider() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    up.mock.control().fail_next(2, FailKind::Status500);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.mock.control().calls("/v1/chat/completions"),
        3,
        "two failures, then the retry that worked"
    );
}

#[tokio::test]
async fn retries_connection_resets_and_honours_retry_after() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    up.mock.control().fail_next(1, FailKind::Reset);
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    up.mock.control().fail_next(1, FailKind::Status429);
    let t0 = std::time::Instant::now();
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited for retry-after: 1"
    );
}

#[tokio::test]
async fn falls_back_when_the_primary_keeps_failing() {
    let primary = Upstream::with(MockOptions {
        fail_rate: 1.0,
        ..MockOptions::default()
    })
    .await;
    let backup = Upstream::start().await;
    let gw = Gateway::start(&two_provider_config(
        primary.addr(),
        backup.addr(),
        "consecutive_failures = 100",
        1,
        "5s",
    ))
    .await;
    let resp = post_chat(&client(), &gw, &chat()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-sentinel-provider"], "backup");
    assert_eq!(
        primary.mock.control().calls("/v1/chat/completions"),
        2,
        "first try plus one retry"
    );
    let sent: Value =
        serde_json::from_slice(&backup.mock.control().requests().await.last().unwrap().body)
            .unwrap();
    assert_eq!(sent["model"], "m2", "the fallback route's model id");
}

#[tokio::test]
async fn every_upstream_failing_is_a_502() {
    let primary = Upstream::with(MockOptions {
        fail_rate: 1.0,
        ..MockOptions::default()
    })
    .await;
    let backup = Upstream::with(MockOptions {
        fail_rate: 1.0,
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&two_provider_config(
        primary.addr(),
        backup.addr(),
        "consecutive_failures = 100",
        0,
        "5s",
    ))
    .await;
    let resp = post_chat(&client(), &gw, &chat()).await;
    assert_eq!(resp.status(), 502);
    assert!(
        resp.headers().contains_key("x-sentinel-overhead-ms"),
        "overhead on gateway errors too"
    );
    let body: Value = resp.json().await.unwrap();
    assert_openai_error(&body, "upstream_error");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no upstream addresses in client errors: {body}"
    );
}

#[tokio::test]
async fn circuit_opens_and_stops_calls_to_a_failing_provider() {
    let primary = Upstream::with(MockOptions {
        fail_rate: 1.0,
        ..MockOptions::default()
    })
    .await;
    let backup = Upstream::start().await;
    let breaker = r#"consecutive_failures = 3, cooldown = "60s""#;
    let gw = Gateway::start(&two_provider_config(
        primary.addr(),
        backup.addr(),
        breaker,
        0,
        "5s",
    ))
    .await;
    let c = client();
    for _ in 0..3 {
        let resp = post_chat(&c, &gw, &chat()).await;
        assert_eq!(resp.status(), 200, "served by the fallback");
    }
    assert_eq!(primary.mock.control().calls("/v1/chat/completions"), 3);
    for _ in 0..5 {
        let resp = post_chat(&c, &gw, &chat()).await;
        assert_eq!(resp.headers()["x-sentinel-provider"], "backup");
    }
    assert_eq!(
        primary.mock.control().calls("/v1/chat/completions"),
        3,
        "open circuit: no more calls"
    );
    let health: Value = c
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["upstreams"]["primary"], "open");
    assert_eq!(health["status"], "degraded");
    let metrics = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sentinel_circuit_state{provider=\"primary\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn circuit_half_opens_after_cooldown_and_closes_on_success() {
    let primary = Upstream::start().await;
    let backup = Upstream::start().await;
    let breaker = r#"consecutive_failures = 2, cooldown = "300ms""#;
    let gw = Gateway::start(&two_provider_config(
        primary.addr(),
        backup.addr(),
        breaker,
        0,
        "5s",
    ))
    .await;
    let c = client();
    primary.mock.control().fail_next(2, FailKind::Status500);
    for _ in 0..2 {
        post_chat(&c, &gw, &chat()).await;
    }
    let health: Value = c
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["upstreams"]["primary"], "open");
    // Wait out the cool-down by polling: the first request after it is the probe.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = post_chat(&c, &gw, &chat()).await;
        if resp.headers()["x-sentinel-provider"] == "primary" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit never half-opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health: Value = c
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["upstreams"]["primary"], "closed");
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn a_hanging_upstream_times_out_with_504() {
    let primary = Upstream::with(MockOptions {
        fail_rate: 1.0,
        fail_kind: FailKind::Hang,
        ..MockOptions::default()
    })
    .await;
    let config = basic_config(primary.addr(), "")
        .replace("timeout = \"5s\"", "timeout = \"300ms\"")
        .replace("max_retries = 2", "max_retries = 0");
    let gw = Gateway::start(&config).await;
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_openai_error(&resp.json().await.unwrap(), "upstream_timeout");
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_event() {
    let up = Upstream::start().await;
    let config = basic_config(up.addr(), "").replace(
        "stream_idle_timeout = \"5s\"",
        "stream_idle_timeout = \"300ms\"",
    );
    let gw = Gateway::start(&config).await;
    let _gate = up.mock.control().hold_streams();
    let text = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = crate::support::sse_data(&text);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout", "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn malformed_upstream_stream_is_reported_not_passed_as_complete() {
    let up = Upstream::with(MockOptions {
        fail_rate: 1.0,
        fail_kind: FailKind::MalformedSse,
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let text = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let data = crate::support::sse_data(&text);
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{text}");
}
