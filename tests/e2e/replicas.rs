//! Several replicas sharing one Redis: keys and revocations reach every replica.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::gateway::{
    basic_config, chat_status, client_with_key, post_chat, Gateway, ADMIN_KEY, TEST_KEY,
};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;

fn redis_config(upstream: std::net::SocketAddr, redis: &RedisServer) -> String {
    basic_config(
        upstream,
        &format!(
            "\n[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
            redis.url()
        ),
    )
}

/// Every string stored anywhere in the Redis keyspace.
async fn keyspace_text(redis: &RedisServer) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut text = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap()],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "stream" => {
                let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                entries
                    .into_iter()
                    .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
                    .collect()
            }
            other => panic!("unexpected type {other} for {key}"),
        };
        text.push_str(&key);
        for v in values {
            text.push(' ');
            text.push_str(&v);
        }
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn keys_and_revocations_reach_every_replica_within_a_second() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let config = redis_config(up.addr(), &redis);
    let a = Gateway::start(&config).await;
    let b = Gateway::start(&config).await;
    let chat = json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]});

    // The bootstrap key works on both replicas.
    for gw in [&a, &b] {
        let resp = client_with_key(TEST_KEY)
            .post(gw.url("/v1/chat/completions"))
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let health: Value = reqwest::get(a.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["store"], "ok");

    // A key minted through replica A works on replica B.
    let admin = client_with_key(ADMIN_KEY);
    admin
        .post(a.url("/admin/tenants"))
        .json(&json!({"id": "shared"}))
        .send()
        .await
        .unwrap();
    let created: Value = admin
        .post(a.url("/admin/tenants/shared/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["key"].as_str().unwrap().to_owned();
    let on_b = client_with_key(&secret);
    assert_eq!(chat_status(&on_b, &b, &chat).await, 200);

    // Revoked on A, refused by B within a second.
    let t0 = Instant::now();
    let revoked = admin
        .delete(a.url(&format!("/admin/keys/{}", created["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    loop {
        let status = chat_status(&on_b, &b, &chat).await;
        if status == 401 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "replica B still accepts a key revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Only hashes are stored.
    let stored = keyspace_text(&redis).await;
    assert!(stored.contains("sntl:"), "{stored}");
    for s in [secret.as_str(), TEST_KEY, ADMIN_KEY] {
        assert!(!stored.contains(s), "a secret is stored in clear in Redis");
    }
}

#[tokio::test]
async fn known_keys_keep_working_while_redis_is_down_and_unknown_ones_get_503() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&redis_config(up.addr(), &redis)).await;
    let chat = json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]});
    let known = client_with_key(TEST_KEY);
    assert_eq!(chat_status(&known, &gw, &chat).await, 200);

    drop(redis);
    let unknown = client_with_key(&format!("sk-sntl-{}", "q".repeat(43)));
    let t0 = Instant::now();
    let resp = post_chat(&unknown, &gw, &chat).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "a dead store must not hang auth"
    );
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    crate::support::assert_openai_error(&resp.json().await.unwrap(), "auth_unavailable");
    for _ in 0..5 {
        assert_eq!(chat_status(&known, &gw, &chat).await, 200);
    }
    let t0 = Instant::now();
    loop {
        let health: Value = reqwest::get(gw.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["checks"]["store"] == "down" {
            assert_eq!(health["status"], "degraded");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "health never noticed the store is down: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reqwest::get(gw.url("/health/ready"))
            .await
            .unwrap()
            .status(),
        503
    );
}
