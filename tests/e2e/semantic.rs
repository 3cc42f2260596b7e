//! The semantic cache with the real `MiniLM` model in process: paraphrases hit, near misses are
//! stopped by the guard, entries reach other replicas, and missing model files degrade to the
//! exact cache only. Needs `scripts/fetch-model` (the test command runs it).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::{basic_config, client, post_chat, Gateway};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;

fn model_dir() -> String {
    std::env::var("SENTINEL_MODEL_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/all-minilm-l6-v2").to_owned()
    })
}

fn config(upstream: std::net::SocketAddr, store: &str, model_dir: &str) -> String {
    basic_config(
        upstream,
        &format!(
            r#"
{store}
[cache.exact]
enabled = true

[cache.semantic]
enabled = true
threshold = 0.80
model_dir = "{model_dir}"
"#
        ),
    )
}

fn chat(text: &str) -> Value {
    json!({"model": "demo", "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": text}]})
}

/// Sends paraphrases of one question, one after another, until one is answered as `want` or
/// the deadline passes (fills and partition refreshes happen off the request path). Each try
/// uses the next variant, because a miss stores its own question exactly and a repeat would
/// then be an exact hit.
async fn eventually(gw: &Gateway, variants: &[&str], want: &str, within: Duration) -> String {
    let c = client();
    let until = Instant::now() + within;
    let mut got = String::new();
    for text in variants.iter().cycle() {
        let resp = post_chat(&c, gw, &chat(text)).await;
        assert_eq!(resp.status(), 200);
        got = resp.headers()["x-sentinel-cache"]
            .to_str()
            .unwrap()
            .to_owned();
        if got == want || Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    got
}

const FRANCE: &[&str] = &[
    "What's the capital city of France?",
    "Tell me the capital of France.",
    "Which city is the capital of France?",
    "What city is France's capital?",
    "Name the capital of France.",
    "What is France's capital city?",
];

#[tokio::test]
async fn paraphrases_hit_and_near_misses_do_not() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(up.addr(), "", &model_dir())).await;
    let c = client();
    let first = post_chat(&c, &gw, &chat("What is the capital of France?")).await;
    assert_eq!(first.headers()["x-sentinel-cache"], "miss");
    let answer: Value = first.json().await.unwrap();
    assert_eq!(
        eventually(&gw, FRANCE, "semantic", Duration::from_secs(10)).await,
        "semantic"
    );
    // A hit carries a cached answer to the same question (the first, or an earlier probe's).
    let hit: Value = post_chat(
        &c,
        &gw,
        &chat("Which city is the capital of France, please?"),
    )
    .await
    .json()
    .await
    .unwrap();
    let text = hit["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.contains("France"), "{hit} vs {answer}");
    let provider_calls = up.mock.control().calls("/v1/chat/completions");

    // Near misses: another entity, a negation, another number.
    for near in [
        "What is the capital of Germany?",
        "What is not the capital of France?",
    ] {
        let resp = post_chat(&c, &gw, &chat(near)).await;
        assert_eq!(resp.headers()["x-sentinel-cache"], "miss", "{near}");
    }
    post_chat(&c, &gw, &chat("Is 2+2 equal to 4?")).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // the fill, then one refresh period
    let resp = post_chat(&c, &gw, &chat("Is 2+3 equal to 4?")).await;
    assert_eq!(resp.headers()["x-sentinel-cache"], "miss", "2+2 vs 2+3");
    assert!(up.mock.control().calls("/v1/chat/completions") > provider_calls);

    let metrics = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains(r#"sentinel_cache_lookups_total{kind="semantic",result="hit"}"#));
    let health: Value = reqwest::get(gw.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["semantic_cache"], "ok");
}

#[tokio::test]
async fn an_entry_written_on_one_replica_is_found_on_another() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let store = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    );
    let a = Gateway::start(&config(up.addr(), &store, &model_dir())).await;
    let b = Gateway::start(&config(up.addr(), &store, &model_dir())).await;
    let c = client();
    post_chat(&c, &a, &chat("How many legs does a spider have?")).await;
    let started = Instant::now();
    let got = eventually(
        &b,
        &[
            "How many legs do spiders have?",
            "How many legs has a spider got?",
            "What is the number of legs a spider has?",
            "Spiders have how many legs?",
        ],
        "semantic",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(got, "semantic");
    // The replica found it within the refresh interval plus the fill, not by luck.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn missing_model_files_leave_the_exact_cache_working() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&config(up.addr(), "", "/nonexistent/model")).await;
    let health: Value = reqwest::get(gw.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["semantic_cache"], "disabled", "{health}");
    assert!(gw.log_text().contains("semantic cache is disabled"));
    let c = client();
    post_chat(&c, &gw, &chat("exact still works")).await;
    assert_eq!(
        eventually(&gw, &["exact still works"], "exact", Duration::from_secs(5)).await,
        "exact"
    );
}

#[tokio::test]
async fn a_remote_embedder_is_called_through_the_gateway_and_metered() {
    let up = Upstream::start().await;
    // The mock's embeddings are hashes of the text: only an identical question is "similar".
    // With the exact cache off for the tenant, the repeat can only be a semantic hit.
    let extra = r#"
[cache.semantic]
enabled = true
embedder = "remote:embed"

[[tenants]]
id = "test"
cache = { exact = false, semantic = true }
keys = [{ name = "e2e", key_env = "E2E_TEST_KEY" }]
"#;
    let gw = Gateway::start(&basic_config(up.addr(), extra)).await;
    let c = client();
    assert_eq!(
        post_chat(&c, &gw, &chat("Which planet is largest?"))
            .await
            .headers()["x-sentinel-cache"],
        "miss"
    );
    assert_eq!(
        eventually(
            &gw,
            &["Which planet is largest?"],
            "semantic",
            Duration::from_secs(10)
        )
        .await,
        "semantic"
    );
    assert!(
        up.mock.control().calls("/v1/embeddings") >= 1,
        "embedded by the provider"
    );
    // That spend belongs to the reserved tenant `_cache`.
    let admin = crate::support::gateway::client_with_key(crate::support::gateway::ADMIN_KEY);
    let until = Instant::now() + Duration::from_secs(5);
    let mut usage = Value::Null;
    while Instant::now() < until {
        usage = admin
            .get(gw.url("/v1/usage?tenant=_cache"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if usage["totals"]["requests"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        usage["totals"]["requests"].as_u64().unwrap_or(0) >= 1,
        "{usage}"
    );
}
