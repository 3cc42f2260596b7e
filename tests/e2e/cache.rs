//! The exact cache on the real request path: hits, keys, isolation, header modes, SSE
//! replay, what is never cached, and how hits are metered and audited.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::audit_log::wait_record;
use crate::support::gateway::{basic_config, client, client_with_key, post_chat, Gateway};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;
use crate::support::{sse_content, sse_data};

const OTHER_KEY: &str = "sk-sntl-cache-other-0123456789abcdefghijklmnopq";

fn config(upstream: std::net::SocketAddr, store: &str) -> String {
    basic_config(
        upstream,
        &format!(
            r#"
{store}
[cache.exact]
enabled = true
ttl = "1h"

[pricing."mock-gpt"]
input = 1000.0
output = 2000.0

[[tenants]]
id = "test"
keys = [{{ name = "e2e", key_env = "E2E_TEST_KEY" }}]

[[tenants]]
id = "other"
keys = [{{ name = "o", key_env = "OTHER_KEY" }}]
"#
        ),
    )
}

async fn start(up: &Upstream, store: &str) -> Gateway {
    Gateway::start_with_env(&config(up.addr(), store), &[("OTHER_KEY", OTHER_KEY)]).await
}

fn chat(text: &str) -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": text}], "temperature": 0.2})
}

fn calls(up: &Upstream) -> u64 {
    up.mock.control().calls("/v1/chat/completions")
}

/// Sends `body` until the gateway answers from the cache (fills are written off the request
/// path, so on a busy machine a repeat may still miss); returns that answer and how many
/// misses (each one a provider call) it took.
async fn until_hit(c: &reqwest::Client, gw: &Gateway, body: &Value) -> (reqwest::Response, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut misses = 0;
    loop {
        let resp = post_chat(c, gw, body).await;
        if resp.headers()["x-sentinel-cache"] != "miss" || Instant::now() > deadline {
            return (resp, misses);
        }
        misses += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_repeat_is_answered_from_the_cache_at_no_cost_and_audited() {
    let up = Upstream::start().await;
    let gw = start(&up, "").await;
    let c = client();
    let first = post_chat(&c, &gw, &chat("cache me")).await;
    assert_eq!(first.headers()["x-sentinel-cache"], "miss");
    let cost: f64 = first.headers()["x-sentinel-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    let first_body: Value = first.json().await.unwrap();

    // Key order and whitespace do not matter: the same request, written differently.
    let same = serde_json::from_str::<Value>(
        r#"{ "temperature": 0.20, "messages": [{"content": "cache me", "role": "user"}], "model": "demo", "user": "someone" }"#,
    )
    .unwrap();
    let (hit, misses) = until_hit(&c, &gw, &same).await;
    assert_eq!(hit.headers()["x-sentinel-cache"], "exact");
    assert_eq!(hit.headers()["x-sentinel-cost-usd"], "0");
    assert_eq!(hit.headers()["x-sentinel-provider"], "cache");
    let id = hit.headers()["x-request-id"].to_str().unwrap().to_owned();
    let hit_body: Value = hit.json().await.unwrap();
    assert_eq!(hit_body["choices"], first_body["choices"]);
    assert_eq!(calls(&up), 1 + misses, "the hit never reached the provider");

    let rec = wait_record(&client(), &gw, &id).await;
    assert_eq!(rec["cache"], "exact");
    assert_eq!(rec["cost_usd"], 0.0);
    assert!(
        (rec["cost_saved_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{rec}"
    );
    let usage: Value = c
        .get(gw.url("/v1/usage"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        usage["totals"]["cache_hits"].as_u64().unwrap() >= 1,
        "{usage}"
    );
    assert!((usage["totals"]["cost_saved_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"sentinel_cache_lookups_total{kind="exact",result="hit"} 1"#),
        "{metrics}"
    );

    // Any answer-changing field is another entry.
    let mut warmer = chat("cache me");
    warmer["temperature"] = json!(0.9);
    assert_eq!(
        post_chat(&c, &gw, &warmer).await.headers()["x-sentinel-cache"],
        "miss"
    );
    let mut capped = chat("cache me");
    capped["max_tokens"] = json!(5);
    assert_eq!(
        post_chat(&c, &gw, &capped).await.headers()["x-sentinel-cache"],
        "miss"
    );
    assert_eq!(calls(&up), 3 + misses);
}

async fn isolation(store: &str) {
    let up = Upstream::start().await;
    let gw = start(&up, store).await;
    let mine = client();
    post_chat(&mine, &gw, &chat("shared prompt")).await;
    let (hit, misses) = until_hit(&mine, &gw, &chat("shared prompt")).await;
    assert_eq!(hit.headers()["x-sentinel-cache"], "exact");
    let theirs = client_with_key(OTHER_KEY);
    let resp = post_chat(&theirs, &gw, &chat("shared prompt")).await;
    assert_eq!(
        resp.headers()["x-sentinel-cache"],
        "miss",
        "no answer crosses tenants"
    );
    assert_eq!(calls(&up), 2 + misses);
}

#[tokio::test]
async fn tenants_never_see_each_others_answers_embedded() {
    isolation("").await;
}

#[tokio::test]
async fn tenants_never_see_each_others_answers_redis() {
    let redis = RedisServer::start().await;
    isolation(&format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    ))
    .await;
}

#[tokio::test]
async fn bypass_reads_nothing_but_writes_and_no_store_does_neither() {
    let up = Upstream::start().await;
    let gw = start(&up, "").await;
    let c = client();
    post_chat(&c, &gw, &chat("modes")).await;
    let _ = until_hit(&c, &gw, &chat("modes")).await;
    let before = calls(&up);
    let send = |mode: &'static str, text: &'static str| {
        let c = c.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            c.post(url)
                .header("x-sentinel-cache", mode)
                .json(&chat(text))
                .send()
                .await
                .unwrap()
        }
    };
    let bypassed = send("bypass", "modes").await;
    assert_eq!(bypassed.headers()["x-sentinel-cache"], "bypass");
    assert_eq!(calls(&up), before + 1, "bypass does not read the cache");
    // ...but it writes: a fresh prompt sent with bypass is a hit afterwards.
    send("bypass", "fresh via bypass").await;
    assert_eq!(
        until_hit(&c, &gw, &chat("fresh via bypass"))
            .await
            .0
            .headers()["x-sentinel-cache"],
        "exact"
    );

    let no_store = send("no-store", "never stored").await;
    assert_eq!(no_store.headers()["x-sentinel-cache"], "bypass");
    tokio::time::sleep(Duration::from_millis(300)).await; // give a (wrong) fill time to land
    assert_eq!(
        post_chat(&c, &gw, &chat("never stored")).await.headers()["x-sentinel-cache"],
        "miss"
    );
}

#[tokio::test]
async fn cached_answers_replay_as_valid_streams_and_streams_fill_the_cache() {
    let up = Upstream::start().await;
    let gw = start(&up, "").await;
    let c = client();
    // Filled by a JSON answer, replayed to a streaming client.
    let answer: Value = post_chat(&c, &gw, &chat("stream me later"))
        .await
        .json()
        .await
        .unwrap();
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut streaming = chat("stream me later");
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (replay, _) = until_hit(&c, &gw, &streaming).await;
    assert_eq!(replay.headers()["x-sentinel-cache"], "exact");
    assert_eq!(replay.headers()["content-type"], "text/event-stream");
    let sse = replay.text().await.unwrap();
    assert_eq!(sse_content(&sse), text);
    let data = sse_data(&sse);
    assert_eq!(data.last().unwrap(), "[DONE]");
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
    }
    assert!(
        data.iter().any(|d| d.contains("\"usage\"")),
        "usage chunk when asked"
    );

    // Filled by a stream, answered to a JSON client.
    let mut first = chat("streamed first");
    first["stream"] = json!(true);
    let streamed = post_chat(&c, &gw, &first).await.text().await.unwrap();
    let (hit, _) = until_hit(&c, &gw, &chat("streamed first")).await;
    assert_eq!(hit.headers()["x-sentinel-cache"], "exact");
    let body: Value = hit.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        sse_content(&streamed)
    );
}

#[tokio::test]
async fn errors_and_cut_streams_are_never_cached() {
    let up = Upstream::with(sentinel::mock_provider::MockOptions {
        chunk_interval: Duration::from_millis(40),
        chunks: 20,
        ..sentinel::mock_provider::MockOptions::default()
    })
    .await;
    let gw = start(&up, "").await;
    let c = client();
    // An upstream error: every retry fails, the client gets 502; nothing is stored.
    up.mock
        .control()
        .fail_next(10, sentinel::mock_provider::FailKind::Status500);
    assert_eq!(post_chat(&c, &gw, &chat("failing")).await.status(), 502);
    up.mock
        .control()
        .fail_next(0, sentinel::mock_provider::FailKind::Status500);
    let after = post_chat(&c, &gw, &chat("failing")).await;
    assert_eq!(after.status(), 200);
    assert_eq!(after.headers()["x-sentinel-cache"], "miss");

    // A stream the client abandons half-way.
    let mut cut = chat("cut short");
    cut["stream"] = json!(true);
    let mut resp = post_chat(&c, &gw, &cut).await;
    let _first = resp.chunk().await.unwrap();
    drop(resp);
    tokio::time::sleep(Duration::from_millis(1200)).await; // longer than the whole stream
    let again = post_chat(&c, &gw, &chat("cut short")).await;
    assert_eq!(
        again.headers()["x-sentinel-cache"],
        "miss",
        "a cut stream is not an answer"
    );
}

const LIMITED_KEY: &str = "sk-sntl-cache-limited-0123456789abcdefghijklmn";
/// Requests per minute of the `limited` tenant.
const LIMITED_RPM: u64 = 8;

/// On Redis, with PII redaction for everyone and a tenant with an `rpm` limit: the setting in
/// which the exact lookup runs beside admission.
async fn start_prefetching(up: &Upstream, redis: &RedisServer) -> Gateway {
    let config = basic_config(
        up.addr(),
        &format!(
            r#"
[store]
backend = "redis"
redis_url = "{}"

[cache.exact]
enabled = true
ttl = "1h"

[shield]
pii = {{ action = "redact" }}

[[tenants]]
id = "test"
keys = [{{ name = "e2e", key_env = "E2E_TEST_KEY" }}]

[[tenants]]
id = "limited"
keys = [{{ name = "l", key_env = "LIMITED_KEY" }}]
limits = {{ rpm = {LIMITED_RPM} }}
"#,
            redis.url()
        ),
    );
    Gateway::start_with_env(&config, &[("LIMITED_KEY", LIMITED_KEY)]).await
}

#[tokio::test]
async fn the_lookup_beside_admission_never_answers_a_refused_request() {
    let (up, redis) = (Upstream::start().await, RedisServer::start().await);
    let gw = start_prefetching(&up, &redis).await;
    let c = client_with_key(LIMITED_KEY);
    let body = chat("looked up while admitted");
    assert_eq!(
        post_chat(&c, &gw, &body).await.headers()["x-sentinel-cache"],
        "miss"
    );
    let (hit, misses) = until_hit(&c, &gw, &body).await;
    assert_eq!(hit.headers()["x-sentinel-cache"], "exact");
    let mut admitted = 2 + misses;
    // The entry is there, but once the rate is spent the answer is a 429, not the entry.
    let refused = loop {
        let resp = post_chat(&c, &gw, &body).await;
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.headers()["x-sentinel-cache"], "exact");
        admitted += 1;
        assert!(admitted <= LIMITED_RPM, "more admitted than the limit");
    };
    assert_eq!(admitted, LIMITED_RPM);
    assert!(refused.headers().get("x-sentinel-cache").is_none());
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded", "{err}");
    assert_eq!(calls(&up), 1 + misses);
    // Only admitted requests count as lookups: the refused one's prefetch was dropped.
    let lookups =
        crate::limits::metric(&gw, "sentinel_cache_lookups_total", &[("kind", "exact")]).await;
    assert_eq!(lookups, LIMITED_RPM);
}

#[tokio::test]
async fn a_redacted_request_is_looked_up_under_its_redacted_key() {
    let (up, redis) = (Upstream::start().await, RedisServer::start().await);
    let gw = start_prefetching(&up, &redis).await;
    let c = client();
    let first = chat("Please write to jane.roe@example.org about the invoice.");
    assert_eq!(
        post_chat(&c, &gw, &first).await.headers()["x-sentinel-cache"],
        "miss"
    );
    let (hit, misses) = until_hit(&c, &gw, &first).await;
    assert_eq!(hit.headers()["x-sentinel-cache"], "exact");
    // Another address redacts to the same request: the same entry, although the request as
    // sent (the key looked up beside admission) was never seen before.
    let other = chat("Please write to john.doe@example.com about the invoice.");
    let resp = post_chat(&c, &gw, &other).await;
    assert_eq!(resp.headers()["x-sentinel-cache"], "exact");
    assert_eq!(calls(&up), 1 + misses);
    let sent = up.mock.control().requests().await;
    assert_eq!(sent.len(), 1 + usize::try_from(misses).unwrap());
    assert!(sent
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains("@example")));
}
