//! Tenants and keys: authentication, the admin API, the CLI, allow-lists and revocation.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::assert_openai_error;
use crate::support::gateway::{
    anonymous, basic_config, chat_status, client, client_with_key, post_chat, Gateway, ADMIN_KEY,
    TEST_KEY,
};
use crate::support::upstream::Upstream;

fn chat() -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]})
}

/// Polls `f` until it returns true, for at most `limit`.
async fn within<F, Fut>(limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let url = gw.url("/v1/chat/completions");
    let unknown = format!("sk-sntl-{}", "z".repeat(43));
    let cases = [
        anonymous().post(&url),
        anonymous()
            .post(&url)
            .header("authorization", "Bearer not-a-key"),
        anonymous()
            .post(&url)
            .header("authorization", format!("Basic {TEST_KEY}")),
        anonymous()
            .post(&url)
            .header("authorization", format!("Bearer {unknown}")),
        anonymous().post(&url).header("x-api-key", &unknown),
    ];
    for req in cases {
        let resp = req.json(&chat()).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_openai_error(&resp.json().await.unwrap(), "invalid_api_key");
    }
    assert_eq!(up.mock.control().total_calls(), 0);
    // x-api-key works like the bearer header.
    let resp = anonymous()
        .post(&url)
        .header("x-api-key", TEST_KEY)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The allow-list answers without a key; everything else does not.
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/metrics/prometheus",
    ] {
        assert_eq!(
            anonymous().get(gw.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        anonymous()
            .get(gw.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario end to end: create, use, narrow, revoke, delete"
)]
async fn admin_api_round_trip_allow_list_and_revocation() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let admin = client_with_key(ADMIN_KEY);

    // Tenant keys cannot use the admin API; the admin key cannot call models.
    let resp = client().get(gw.url("/admin/tenants")).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = post_chat(&admin, &gw, &chat()).await;
    assert_eq!(resp.status(), 403);

    let resp = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "acme", "name": "Acme", "models": ["same-name"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let dup = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let bad = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "bad id!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let t: Value = admin
        .get(gw.url("/admin/tenants/acme"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(t["name"], "Acme");

    let created: Value = admin
        .post(gw.url("/admin/tenants/acme/keys"))
        .json(&json!({"name": "ci", "expires_in": "30d"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sntl-") && secret.len() >= 8 + 32);
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert!(created["expires_at"].as_str().is_some());
    let listed: Value = admin
        .get(gw.url("/admin/tenants/acme/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], key_id.as_str());
    assert!(
        listed["data"][0].get("key").is_none(),
        "the secret is shown only once"
    );
    assert!(!listed.to_string().contains(&secret));

    let acme = client_with_key(&secret);
    // Allow-list: `same-name` only.
    let ok = acme
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "same-name", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = post_chat(&acme, &gw, &chat()).await;
    assert_eq!(denied.status(), 403);
    assert_openai_error(&denied.json().await.unwrap(), "model_not_allowed");
    let unknown = acme
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404, "unknown beats not-allowed");
    let models: Value = acme
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "same-name");

    // PATCH changes only what it names: widen the allow-list, name kept.
    let patched: Value = admin
        .patch(gw.url("/admin/tenants/acme"))
        .json(&json!({"models": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "Acme");
    within(Duration::from_secs(2), || async {
        chat_status(&acme, &gw, &chat()).await == 200
    })
    .await;

    // Revocation takes effect within a second.
    assert_eq!(
        admin
            .delete(gw.url(&format!("/admin/keys/{key_id}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let took = within(Duration::from_secs(1), || async {
        chat_status(&acme, &gw, &chat()).await == 401
    })
    .await;
    assert!(took < Duration::from_secs(1));
    assert_eq!(
        admin
            .delete(gw.url("/admin/keys/key_nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Deleting a tenant revokes its keys.
    let k2: Value = admin
        .post(gw.url("/admin/tenants/acme/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = client_with_key(k2["key"].as_str().unwrap());
    within(Duration::from_secs(2), || async {
        chat_status(&second, &gw, &chat()).await == 200
    })
    .await;
    assert_eq!(
        admin
            .delete(gw.url("/admin/tenants/acme"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    within(Duration::from_secs(1), || async {
        chat_status(&second, &gw, &chat()).await == 401
    })
    .await;
    assert_eq!(
        admin
            .get(gw.url("/admin/tenants/acme"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // No secret at rest, in logs or metrics.
    let db = std::fs::read_dir(gw.dir().join("data")).unwrap();
    for entry in db {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for s in [secret.as_str(), TEST_KEY] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret is stored in clear"
            );
        }
    }
    let metrics = anonymous()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for s in [secret.as_str(), TEST_KEY, ADMIN_KEY] {
        assert!(!gw.log_text().contains(s) && !metrics.contains(s));
    }
}

#[tokio::test]
async fn cli_manages_keys_while_the_server_runs() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let config = gw.dir().join("sentinel.toml");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sentinel"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(gw.dir())
            .env("E2E_TEST_KEY", TEST_KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let created = cli(&[
        "keys", "create", "--tenant", "test", "--name", "cli", "--rpm", "50",
    ]);
    let secret = created
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .unwrap()
        .trim()
        .to_owned();
    let key_id = created
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned();
    let c = client_with_key(&secret);
    within(Duration::from_secs(1), || async {
        chat_status(&c, &gw, &chat()).await == 200
    })
    .await;
    let listed = cli(&["keys", "list", "--tenant", "test"]);
    assert!(
        listed.contains(&key_id) && !listed.contains(&secret),
        "{listed}"
    );
    let row = listed.lines().find(|l| l.starts_with(&key_id)).unwrap();
    assert!(
        row.ends_with("\tactive\trpm=50"),
        "the key's own limit is listed: {row}"
    );
    // ... and enforced: the gateway reports the key's window (tighter than none).
    let resp = post_chat(&c, &gw, &chat()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-ratelimit-limit-requests"]
            .to_str()
            .unwrap(),
        "50"
    );
    cli(&["keys", "revoke", &key_id]);
    within(Duration::from_secs(1), || async {
        chat_status(&c, &gw, &chat()).await == 401
    })
    .await;
    assert!(cli(&["keys", "list", "--tenant", "test"]).contains("revoked"));
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let admin = client_with_key(ADMIN_KEY);
    let k: Value = admin
        .post(gw.url("/admin/tenants/test/keys"))
        .json(&json!({"expires_in": "1s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = client_with_key(k["key"].as_str().unwrap());
    within(Duration::from_secs(5), || async {
        let resp = post_chat(&c, &gw, &chat()).await;
        resp.status() == 401 && resp.text().await.unwrap().contains("expired")
    })
    .await;
    // Its own client: the gateway closes a connection whose oversized body it did not read.
    let huge = client_with_key(ADMIN_KEY)
        .post(gw.url("/admin/tenants"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"id\": \"big\", \"name\": \"{}\"}}",
            "x".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_openai_error(&huge.json().await.unwrap(), "body_too_large");
    let bad = admin
        .post(gw.url("/admin/tenants/test/keys"))
        .json(&json!({"expires_in": "soon"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_openai_error(&bad.json().await.unwrap(), "invalid_body");
}
