//! Tenant policies on one gateway with the embedded store: requests per minute, tokens per
//! minute, budgets (enforced and dry-run), run-time changes through the admin API, and the
//! model allow-list, each seen from the client (status, OpenAI error shape, `x-ratelimit-*`
//! and `retry-after` headers) and from the books (`/v1/audit`, `/v1/usage`, `/metrics`).
//!
//! The helpers here are shared with `replicas_limits.rs`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::assert_openai_error;
use crate::support::gateway::{
    basic_config, chat_status, client_with_key, post_chat, Gateway, ADMIN_KEY,
};
use crate::support::upstream::Upstream;

// === shared helpers ===

/// Prices for the mock's model (USD per 1M tokens): a prompt token costs $0.001 (1e6
/// nano-USD), a completion token $0.002. The mock's `mock-gpt` has no built-in price.
pub const PRICING: &str = "\n[pricing.\"mock-gpt\"]\ninput = 1000.0\noutput = 2000.0\n";
/// Nano-USD per prompt token at [`PRICING`].
pub const INPUT_NANO: i64 = 1_000_000;
/// Nano-USD per completion token at [`PRICING`].
pub const OUTPUT_NANO: i64 = 2_000_000;

/// A well-formed bootstrap secret (`sk-sntl-` + 43 URL-safe characters) unique to `tag`.
pub fn secret(tag: &str) -> String {
    let body = format!("{tag}-{}", "k".repeat(43));
    format!("sk-sntl-{}", &body[..43])
}

/// A `[[tenants]]` block with one bootstrap key read from `key_env`; `policy` is extra TOML
/// lines (`limits = {...}`, `budget = {...}`, `models = [...]`).
pub fn tenant(id: &str, key_env: &str, policy: &str) -> String {
    format!(
        "\n[[tenants]]\nid = \"{id}\"\n{policy}\nkeys = [{{ name = \"k\", key_env = \"{key_env}\" }}]\n"
    )
}

/// The one-message chat every test sends. The mock answers it with 4 prompt tokens (1 word
/// + 3 per message) and 4 completion tokens (`Mock reply to: x`).
pub fn chat(max_tokens: Option<u32>) -> Value {
    let mut body = json!({"model": "demo", "messages": [{"role": "user", "content": "x"}]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

/// The mock's token counts for [`chat`].
pub const MOCK_PROMPT_TOKENS: i64 = 4;
/// The mock's completion tokens for [`chat`].
pub const MOCK_COMPLETION_TOKENS: i64 = 4;
/// What one [`chat`] really costs at [`PRICING`], nano-USD.
pub const REAL_COST_NANO: i64 =
    MOCK_PROMPT_TOKENS * INPUT_NANO + MOCK_COMPLETION_TOKENS * OUTPUT_NANO;

/// The gateway's tiktoken count of [`chat`]'s prompt (the same counter the gateway uses).
pub fn prompt_estimate() -> u64 {
    let req: sentinel::openai::chat::ChatRequest = serde_json::from_value(chat(None)).unwrap();
    sentinel::tokens::tokenizer::Tokenizer::global().count_chat_prompt("mock-gpt", &req)
}

/// The budget reservation of one [`chat`] with `max_tokens`: every prompt token at the input
/// price plus every allowed completion token at the output price, nano-USD.
pub fn cost_bound_nano(max_tokens: u32) -> i64 {
    i64::try_from(prompt_estimate()).unwrap() * INPUT_NANO + i64::from(max_tokens) * OUTPUT_NANO
}

/// USD as the config wants it, from nano-USD.
#[expect(
    clippy::cast_precision_loss,
    reason = "small amounts, exact to the nano"
)]
pub fn usd(nano: i64) -> f64 {
    nano as f64 / 1e9
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A header as an integer.
pub fn header_u64(resp: &reqwest::Response, name: &str) -> Option<u64> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// The four `x-ratelimit-*` headers OpenAI defines.
pub const RATE_HEADERS: [&str; 4] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
];

/// The sum of the samples of counter `name` whose labels include every `labels` pair (0 if
/// none).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counters are small non-negative integers"
)]
pub async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum::<f64>()
        .round() as u64
}

/// `GET /v1/usage` totals of the caller's tenant.
pub async fn usage_totals(gw: &Gateway, key: &str) -> Value {
    let resp = client_with_key(key)
        .get(gw.url("/v1/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["totals"].clone()
}

/// The tenant's spend so far (rollups), nano-USD.
#[expect(
    clippy::cast_possible_truncation,
    reason = "small amounts, rounded to the nano"
)]
pub async fn spent_nano(gw: &Gateway, key: &str) -> i64 {
    (usage_totals(gw, key).await["cost_usd"].as_f64().unwrap() * 1e9).round() as i64
}

/// Waits until the tenant's rollups show `nano` spent, i.e. until every admitted request so
/// far has been settled (an outcome's audit record, usage and settlement are one store step).
pub async fn wait_spent(gw: &Gateway, key: &str, nano: i64) {
    eventually(Duration::from_secs(5), "spend settles", || async {
        let last = spent_nano(gw, key).await;
        assert!(
            last <= nano,
            "spent {last} nano-USD, expected at most {nano}"
        );
        (last == nano).then_some(())
    })
    .await;
}

/// The caller's newest audit records (newest first).
pub async fn audit(gw: &Gateway, key: &str) -> Vec<Value> {
    let resp = client_with_key(key)
        .get(gw.url("/v1/audit?limit=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the caller's tenant has `n` audit records and returns them (newest first).
pub async fn audit_n(gw: &Gateway, key: &str, n: usize) -> Vec<Value> {
    eventually(
        Duration::from_secs(5),
        "audit records are written",
        || async {
            let records = audit(gw, key).await;
            assert!(
                records.len() <= n,
                "more records than requests: {records:?}"
            );
            (records.len() == n).then_some(records)
        },
    )
    .await
}

/// Whether `record` carries the dry-run violation of `policy`.
pub fn has_violation(record: &Value, policy: &str) -> bool {
    record["violations"]
        .as_array()
        .is_some_and(|v| v.contains(&json!({"policy": policy, "mode": "dry_run"})))
}

/// Rate windows are 60-second buckets with a weighted previous bucket (rounded down), so a
/// burst that straddles a bucket edge may admit one request more than the limit. Tests that
/// count admissions exactly start at least 8 s before the next edge; this waits at most 8 s,
/// and only when the clock is that close to it. Not synchronisation: it moves the test away
/// from a wall-clock edge that no readiness signal could announce.
pub async fn avoid_minute_edge() {
    let ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let into = ms % 60_000;
    if into > 52_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 50)).await;
    }
}

/// Asserts a 429 `rate_limit_exceeded` with the OpenAI shape and a `retry-after` of at least
/// one whole second.
pub async fn assert_rate_limited(resp: reqwest::Response) {
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("retry-after on a 429")
        .to_str()
        .unwrap()
        .parse()
        .expect("retry-after is whole seconds");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    let err = assert_openai_error(&resp.json().await.unwrap(), "rate_limit_exceeded");
    assert_eq!(err["type"], "rate_limit_error");
}

// === tests ===

#[tokio::test]
async fn rpm_admits_exactly_the_limit_then_429_with_openai_headers() {
    let up = Upstream::start().await;
    let (limited, free) = (secret("rpm-limited"), secret("rpm-free"));
    let extra = format!(
        "{}{}",
        tenant("limited", "LIMITED_KEY", "limits = { rpm = 5 }"),
        tenant("free", "FREE_KEY", "")
    );
    let gw = Gateway::start_with_env(
        &basic_config(up.addr(), &extra),
        &[("LIMITED_KEY", &limited), ("FREE_KEY", &free)],
    )
    .await;
    avoid_minute_edge().await;

    let client = client_with_key(&limited);
    for i in 0..8_u64 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        // Every answer of a limited tenant carries the request figures; this tenant has no
        // token limit, so the token headers are absent.
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-requests"), Some(5));
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-tokens"), None);
        assert_eq!(header_u64(&resp, "x-ratelimit-remaining-tokens"), None);
        let remaining = header_u64(&resp, "x-ratelimit-remaining-requests");
        if i < 5 {
            assert_eq!(resp.status(), 200, "request {i}");
            assert_eq!(remaining, Some(4 - i), "remaining counts down");
        } else {
            assert_eq!(remaining, Some(0), "request {i}");
            assert_rate_limited(resp).await;
        }
    }
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 5);
    assert_eq!(
        metric(
            &gw,
            "sentinel_rate_limited_total",
            &[("tenant", "limited"), ("limit", "rpm")]
        )
        .await,
        3
    );

    // A tenant without limits is not limited and gets no x-ratelimit-* headers at all: there
    // is no limit to report, and OpenAI's SDKs read absent headers as "unknown", not zero.
    let client = client_with_key(&free);
    for _ in 0..8 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200);
        for h in RATE_HEADERS {
            assert!(
                !resp.headers().contains_key(h),
                "{h} on an unlimited tenant"
            );
        }
    }
}

#[tokio::test]
async fn tpm_refuses_oversized_reservations_and_settles_to_real_usage() {
    const TPM: u64 = 1000;
    let up = Upstream::start().await;
    let key = secret("tpm");
    let gw = Gateway::start_with_env(
        &basic_config(
            up.addr(),
            &tenant("tok", "TOK_KEY", "limits = { tpm = 1000 }"),
        ),
        &[("TOK_KEY", &key)],
    )
    .await;
    avoid_minute_edge().await;
    let client = client_with_key(&key);
    let p = prompt_estimate();

    // A completion cap above the whole minute's allowance can never fit: refused up front,
    // the provider is not called. Without max_tokens the reservation is 4096: refused too.
    for body in [chat(Some(5000)), chat(None)] {
        let resp = post_chat(&client, &gw, &body).await;
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-tokens"), Some(TPM));
        assert_eq!(header_u64(&resp, "x-ratelimit-remaining-tokens"), Some(TPM));
        assert_rate_limited(resp).await;
    }
    assert_eq!(up.mock.control().total_calls(), 0);

    // A small request passes; admission reserves tiktoken(prompt) + max_tokens.
    let first = post_chat(&client, &gw, &chat(Some(100))).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header_u64(&first, "x-ratelimit-limit-tokens"), Some(TPM));
    assert_eq!(
        header_u64(&first, "x-ratelimit-remaining-tokens"),
        Some(TPM - (p + 100))
    );
    let body: Value = first.json().await.unwrap();
    let real = body["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(
        real,
        u64::try_from(MOCK_PROMPT_TOKENS + MOCK_COMPLETION_TOKENS).unwrap()
    );

    // Once the first request is settled, the window holds its real tokens, not its
    // reservation: the next request sees limit − real − its own reservation.
    audit_n(&gw, &key, 3).await;
    let second = post_chat(&client, &gw, &chat(Some(100))).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header_u64(&second, "x-ratelimit-remaining-tokens"),
        Some(TPM - real - (p + 100)),
        "remaining tokens must reflect the settled usage ({real}), not the reservation ({})",
        p + 100
    );

    // Settled, small requests keep passing well beyond TPM / reservation (= 9) requests.
    audit_n(&gw, &key, 4).await;
    for i in 0..12 {
        let resp = post_chat(&client, &gw, &chat(Some(40))).await;
        assert_eq!(resp.status(), 200, "small request {i}");
        audit_n(&gw, &key, 5 + i).await;
    }
}

#[tokio::test]
async fn dry_run_limits_never_refuse_and_record_the_violation() {
    let up = Upstream::start().await;
    let key = secret("dry");
    let gw = Gateway::start_with_env(
        &basic_config(
            up.addr(),
            &tenant("dry", "DRY_KEY", "limits = { rpm = 2, mode = \"dry_run\" }"),
        ),
        &[("DRY_KEY", &key)],
    )
    .await;
    avoid_minute_edge().await;
    let client = client_with_key(&key);
    let mut ids = Vec::new();
    for i in 0..5 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200, "dry_run never refuses (request {i})");
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-requests"), Some(2));
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 5);

    // The three requests over the limit carry the violation, the first two do not.
    let records = audit_n(&gw, &key, 5).await;
    let flagged: Vec<bool> = ids
        .iter()
        .map(|id| {
            let r = records
                .iter()
                .find(|r| r["request_id"] == id.as_str())
                .unwrap_or_else(|| panic!("no record for {id}"));
            assert_eq!(r["status"], 200);
            has_violation(r, "rpm")
        })
        .collect();
    assert_eq!(flagged, [false, false, true, true, true], "{records:?}");
    assert_eq!(
        metric(
            &gw,
            "sentinel_policy_violations_total",
            &[("tenant", "dry"), ("policy", "rpm"), ("mode", "dry_run")]
        )
        .await,
        3
    );
    assert_eq!(
        metric(&gw, "sentinel_rate_limited_total", &[("tenant", "dry")]).await,
        0,
        "a dry-run violation is not a rate-limit refusal"
    );
}

#[tokio::test]
async fn budget_enforce_admits_while_the_bound_fits_and_never_overspends() {
    const MAX_TOKENS: u32 = 10;
    let bound = cost_bound_nano(MAX_TOKENS);
    assert!(bound > REAL_COST_NANO, "the bound is an upper bound");
    // Room for the bound plus three and a half real requests: after three settled requests
    // the fourth still fits (3c + B <= L), after four the fifth does not (4c + B > L).
    let limit = bound + 3 * REAL_COST_NANO + REAL_COST_NANO / 2;
    let expected_admitted = (limit - bound) / REAL_COST_NANO + 1;
    assert_eq!(expected_admitted, 4);

    let up = Upstream::start().await;
    let key = secret("wallet");
    let policy = format!(
        "budget = {{ limit_usd = {:.9}, period = \"day\", mode = \"enforce\" }}",
        usd(limit)
    );
    let gw = Gateway::start_with_env(
        &basic_config(
            up.addr(),
            &format!("{PRICING}{}", tenant("wallet", "WALLET_KEY", &policy)),
        ),
        &[("WALLET_KEY", &key)],
    )
    .await;
    let client = client_with_key(&key);

    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..8 {
        let resp = post_chat(&client, &gw, &chat(Some(MAX_TOKENS))).await;
        match resp.status().as_u16() {
            200 => {
                assert_eq!(refused, 0, "admitted after a refusal (request {i})");
                let cost = resp
                    .headers()
                    .get("x-sentinel-cost-usd")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(cost, "0.012", "the mock's 4 + 4 tokens at the test prices");
                admitted += 1;
                // Sequential: wait until this request is settled before the next one.
                wait_spent(&gw, &key, admitted * REAL_COST_NANO).await;
            }
            429 => {
                let err = assert_openai_error(&resp.json().await.unwrap(), "budget_exceeded");
                assert_eq!(err["type"], "insufficient_quota");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(admitted, expected_admitted);
    assert_eq!(refused, 8 - expected_admitted);
    assert_eq!(
        up.mock.control().calls("/v1/chat/completions"),
        u64::try_from(admitted).unwrap()
    );
    let spent = spent_nano(&gw, &key).await;
    assert!(
        spent <= limit,
        "sequential spend {spent} exceeds the limit {limit}"
    );
    assert!(
        limit - spent < bound,
        "refused while another request's bound still fitted"
    );
    assert_eq!(
        metric(
            &gw,
            "sentinel_budget_rejections_total",
            &[("tenant", "wallet")]
        )
        .await,
        u64::try_from(refused).unwrap()
    );
}

#[tokio::test]
async fn budget_dry_run_never_refuses_and_records_the_violation() {
    let up = Upstream::start().await;
    let key = secret("drywallet");
    // $0.01 is below a single request's bound (and below two real requests).
    let policy = "budget = { limit_usd = 0.01, period = \"month\", mode = \"dry_run\" }";
    let gw = Gateway::start_with_env(
        &basic_config(
            up.addr(),
            &format!("{PRICING}{}", tenant("drywallet", "DRYW_KEY", policy)),
        ),
        &[("DRYW_KEY", &key)],
    )
    .await;
    let client = client_with_key(&key);
    for i in 0..3 {
        let resp = post_chat(&client, &gw, &chat(Some(10))).await;
        assert_eq!(resp.status(), 200, "dry_run never refuses (request {i})");
    }
    let records = audit_n(&gw, &key, 3).await;
    for r in &records {
        assert!(has_violation(r, "budget"), "{r}");
        assert_eq!(r["status"], 200);
    }
    assert_eq!(
        metric(
            &gw,
            "sentinel_policy_violations_total",
            &[
                ("tenant", "drywallet"),
                ("policy", "budget"),
                ("mode", "dry_run")
            ]
        )
        .await,
        3
    );
    assert_eq!(
        metric(
            &gw,
            "sentinel_budget_rejections_total",
            &[("tenant", "drywallet")]
        )
        .await,
        0
    );
    // The spend is recorded in full, past the limit.
    wait_spent(&gw, &key, 3 * REAL_COST_NANO).await;
}

#[tokio::test]
async fn admin_patch_applies_and_removes_limits_within_a_second() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let admin = client_with_key(ADMIN_KEY);
    let resp = admin
        .post(gw.url("/admin/tenants"))
        .json(&json!({"id": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = admin
        .post(gw.url("/admin/tenants/ops/keys"))
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client = client_with_key(created["key"].as_str().unwrap());
    let resp = post_chat(&client, &gw, &chat(None)).await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("x-ratelimit-limit-requests"));
    avoid_minute_edge().await;

    // Limits set at run time: requests before the change are not counted, so the first
    // answer that reports the limit is the first counted one (remaining 1 of 2).
    let resp = admin
        .patch(gw.url("/admin/tenants/ops"))
        .json(&json!({"limits": {"rpm": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(patched["limits"]["rpm"], 2);
    let t0 = Instant::now();
    eventually(Duration::from_secs(1), "new limits apply", || async {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200);
        header_u64(&resp, "x-ratelimit-limit-requests").map(|limit| {
            assert_eq!(limit, 2);
            assert_eq!(header_u64(&resp, "x-ratelimit-remaining-requests"), Some(1));
        })
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(chat_status(&client, &gw, &chat(None)).await, 200);
    assert_rate_limited(post_chat(&client, &gw, &chat(None)).await).await;

    // `"limits": null` removes them: no refusal, no headers.
    let resp = admin
        .patch(gw.url("/admin/tenants/ops"))
        .json(&json!({"limits": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert!(
        patched["limits"]["rpm"].is_null(),
        "PATCH {{\"limits\": null}} must remove the limits: {patched}"
    );
    let t0 = Instant::now();
    eventually(Duration::from_secs(1), "limits are removed", || async {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        (resp.status() == 200 && !resp.headers().contains_key("x-ratelimit-limit-requests"))
            .then_some(())
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    for _ in 0..5 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200);
        assert!(!resp
            .headers()
            .contains_key("x-ratelimit-remaining-requests"));
    }
}

#[tokio::test]
async fn allow_list_and_unknown_model_refusals_consume_no_rpm() {
    let up = Upstream::start().await;
    let key = secret("narrow");
    let gw = Gateway::start_with_env(
        &basic_config(
            up.addr(),
            &tenant(
                "narrow",
                "NARROW_KEY",
                "models = [\"same-name\"]\nlimits = { rpm = 1 }",
            ),
        ),
        &[("NARROW_KEY", &key)],
    )
    .await;
    avoid_minute_edge().await;
    let client = client_with_key(&key);
    let body =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    for _ in 0..3 {
        let resp = post_chat(&client, &gw, &body("demo")).await;
        assert_eq!(resp.status(), 403);
        let err = assert_openai_error(&resp.json().await.unwrap(), "model_not_allowed");
        assert_eq!(err["type"], "permission_error");
        // Unknown beats not-allowed (the model is not in the allow-list either).
        let resp = post_chat(&client, &gw, &body("no-such-model")).await;
        assert_eq!(resp.status(), 404);
        let err = assert_openai_error(&resp.json().await.unwrap(), "model_not_found");
        assert_eq!(err["type"], "invalid_request_error");
    }
    assert_eq!(up.mock.control().total_calls(), 0);
    // The single request of the minute is still there.
    let resp = post_chat(&client, &gw, &body("same-name")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header_u64(&resp, "x-ratelimit-remaining-requests"), Some(0));
    assert_rate_limited(post_chat(&client, &gw, &body("same-name")).await).await;
    assert_eq!(up.mock.control().total_calls(), 1);
}

#[tokio::test]
async fn key_limits_narrow_their_tenant_and_refusals_count_against_nothing() {
    let up = Upstream::start().await;
    let (narrow, wide) = (secret("key-narrow"), secret("key-wide"));
    let config = basic_config(
        up.addr(),
        "\n[[tenants]]\nid = \"shared\"\nlimits = { rpm = 6 }\nkeys = [\n  \
         { name = \"narrow\", key_env = \"NARROW_KEY\", limits = { rpm = 2 } },\n  \
         { name = \"wide\", key_env = \"WIDE_KEY\" },\n]\n",
    );
    let gw =
        Gateway::start_with_env(&config, &[("NARROW_KEY", &narrow), ("WIDE_KEY", &wide)]).await;
    avoid_minute_edge().await;

    // The narrow key: its own window is the tighter one, so the headers describe it.
    let client = client_with_key(&narrow);
    for i in 0..2_u64 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-requests"), Some(2));
        assert_eq!(
            header_u64(&resp, "x-ratelimit-remaining-requests"),
            Some(1 - i)
        );
    }
    for _ in 0..3 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 429);
        let body: Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("for this key"), "{message}");
    }
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 2);
    assert_eq!(
        metric(
            &gw,
            "sentinel_rate_limited_total",
            &[("tenant", "shared"), ("limit", "key_rpm")]
        )
        .await,
        3
    );

    // The refused requests took nothing from the tenant's window: the other key still has
    // 6 − 2 = 4 requests, then the tenant's own limit refuses it.
    let client = client_with_key(&wide);
    for i in 0..4_u64 {
        let resp = post_chat(&client, &gw, &chat(None)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header_u64(&resp, "x-ratelimit-limit-requests"), Some(6));
        assert_eq!(
            header_u64(&resp, "x-ratelimit-remaining-requests"),
            Some(3 - i)
        );
    }
    let resp = post_chat(&client, &gw, &chat(None)).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("for this tenant"), "{message}");
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 6);
}

#[tokio::test]
async fn admin_created_keys_carry_their_own_token_limit() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    avoid_minute_edge().await;
    let admin = client_with_key(ADMIN_KEY);
    let created: Value = admin
        .post(gw.url("/admin/tenants/test/keys"))
        .json(&json!({"name": "batch", "limits": {"tpm": 500}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["limits"], json!({"tpm": 500}));
    let listed: Value = admin
        .get(gw.url("/admin/tenants/test/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .unwrap();
    assert_eq!(row["limits"], json!({"tpm": 500}));

    let client = client_with_key(created["key"].as_str().unwrap());
    // A reservation above the key's minute is refused before the provider is called.
    let resp = post_chat(&client, &gw, &chat(Some(1000))).await;
    assert_eq!(header_u64(&resp, "x-ratelimit-limit-tokens"), Some(500));
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute for this key"));
    assert_eq!(up.mock.control().total_calls(), 0);
    let resp = post_chat(&client, &gw, &chat(Some(100))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header_u64(&resp, "x-ratelimit-remaining-tokens"),
        Some(500 - (prompt_estimate() + 100))
    );

    // Bad limits are refused with the OpenAI error shape.
    let resp = admin
        .post(gw.url("/admin/tenants/test/keys"))
        .json(&json!({"limits": {"rpm": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_openai_error(&resp.json().await.unwrap(), "invalid_body");
}
