//! Health probes, metrics, the keyless demo, and the Redis test helper.

use serde_json::{json, Value};

use crate::support::gateway::{basic_config, client, Gateway, TEST_KEY};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;

#[tokio::test]
async fn health_probes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/health/live")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(gw.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let h: Value = c
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["checks"]["store"], "ok");
    assert_eq!(h["checks"]["upstreams"]["mock"], "closed");
    assert!(h["version"].as_str().is_some() && h["uptime_s"].as_u64().is_some());
}

#[tokio::test]
async fn metrics_cover_the_core_families() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let c = client();
    let before = c
        .get(gw.url("/metrics/prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        before.contains("sentinel_inflight_requests 0"),
        "exported at zero from start-up:\n{before}"
    );
    assert!(before.contains("sentinel_upstream_errors_total{provider=\"mock\",kind=\"connect\"} 0"));
    for stream in [false, true] {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .json(&json!({"model": "demo", "stream": stream, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap();
    }
    let text = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "sentinel_requests_total{",
        "sentinel_request_duration_seconds_bucket{",
        "sentinel_overhead_seconds_bucket{route=\"/v1/chat/completions\"",
        "sentinel_upstream_duration_seconds_bucket{provider=\"mock\"",
        "sentinel_time_to_first_token_seconds_bucket{model=\"demo\"",
        "sentinel_tokens_total{",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }
    assert!(text.contains(r#"sentinel_requests_total{tenant="test",model="demo",provider="mock",status="200",cache="miss"} 2"#), "{text}");
}

#[tokio::test]
async fn the_shipped_demo_config_answers_without_provider_keys() {
    // The README's run command: the shipped config with its bundled mock. Ports moved to free
    // ones so the test does not collide with anything on the machine.
    let mock_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/sentinel.toml"))
            .unwrap();
    let config = shipped.replace("127.0.0.1:9100", &format!("127.0.0.1:{mock_port}"));
    let gw = Gateway::start_with_env(&config, &[("SENTINEL_DEMO_KEY", TEST_KEY)]).await;
    let body: Value = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "demo", "messages": [{"role": "user", "content": "hi demo"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("hi demo"),
        "{body}"
    );
}

#[tokio::test]
async fn private_redis_helper_starts_and_answers() {
    let redis = RedisServer::start().await;
    assert!(redis.ping().await);
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
}

#[tokio::test]
async fn a_lane_hands_its_free_memory_back_once_the_load_stops() {
    use futures_util::StreamExt;

    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &basic_config(up.addr(), ""),
        &[
            ("SENTINEL_LOG", "info,sentinel::memory=debug"),
            // One lane takes all the work, so it is busy past its quiet line on any host.
            ("SENTINEL_SERVER__WORKERS", "1"),
        ],
    )
    .await;
    let released = || gw.log_text().matches("released free memory").count();
    assert_eq!(released(), 0, "nothing to release before any traffic");

    // Enough traffic to keep the lane busy well past its quiet line (2.5 ms per check).
    let c = client();
    let body = json!({"model": "demo", "messages": [{"role": "user", "content": "hi"}]});
    let statuses: Vec<u16> = futures_util::stream::iter(0..400)
        .map(|_| crate::support::gateway::chat_status(&c, &gw, &body))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    // The lane looks at its busy time every 500 ms and releases after 2 s of quiet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while released() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no lane released memory after the load; logs:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
