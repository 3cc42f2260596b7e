//! Cost accounting through the running gateway: exact costs per provider shape (OpenAI usage,
//! Anthropic cache read/write), unpriced models, streams billed from the usage chunk the
//! gateway asked for (whether or not the client asked), a client that disconnects mid-stream
//! still billed in full, and `/v1/usage` agreeing with the audit log to the nano-dollar.
//!
//! Every expected cost below is computed by hand from the mock's deterministic token counts:
//! a prompt is 3 tokens per message plus its words, a reply is `Mock reply to: <the last user
//! message>` counted in words.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::audit_log::{
    all_records, audit_verify, days_of, get_json, metric, metrics_text, nano, redis_store,
    request_id, two_tenant_config, wait_record, wait_records, OTHER_ENV, OTHER_KEY,
};
use crate::support::assert_openai_error;
use crate::support::gateway::{
    basic_config, client, client_with_key, post_chat, Gateway, ADMIN_KEY,
};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;
use crate::support::{sse_content, sse_data};
use sentinel::mock_provider::{FailKind, MockOptions, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS};

/// USD per million tokens. `frac` has prices that are not exact binary fractions; `half`
/// costs half a nano-dollar per prompt token, so 13 tokens land on 6.5: the half-up rounding.
const PRICES: &str = r#"
[[models]]
name = "frac"
routes = [{ provider = "mock", model = "mock-frac" }]

[[models]]
name = "half"
routes = [{ provider = "mock", model = "mock-half" }]

[pricing."mock-gpt"]
input = 1000.0
output = 2000.0
cached_input = 500.0

[pricing."mock-frac"]
input = 0.1
output = 0.2

[pricing."mock-half"]
input = 0.0005
output = 0.0

[pricing."mock-embedding"]
input = 100.0
output = 0.0
"#;

/// System "be brief" (2 words + 3) and user "one two three four five" (5 + 3): 13 prompt
/// tokens; the reply "Mock reply to: one two three four five" is 8 words.
fn golden_chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one two three four five"}]})
}

fn cost_header(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-sentinel-cost-usd")
        .unwrap_or_else(|| panic!("no x-sentinel-cost-usd on {resp:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts the token counts and cost of an audit record.
fn assert_billed(record: &Value, prompt: u64, completion: u64, cached: u64, cost_nano: i64) {
    assert_eq!(record["prompt_tokens"], prompt, "{record}");
    assert_eq!(record["completion_tokens"], completion, "{record}");
    assert_eq!(record["cached_tokens"], cached, "{record}");
    assert_eq!(record["tokens_estimated"], false, "{record}");
    assert_eq!(record["cost_unknown"], false, "{record}");
    assert_eq!(nano(&record["cost_usd"]), cost_nano, "{record}");
}

#[tokio::test]
async fn openai_shaped_usage_is_costed_exactly() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), PRICES)).await;
    let c = client();

    // demo: 13 × $1000/M + 8 × $2000/M = $0.013 + $0.016.
    let resp = post_chat(&c, &gw, &golden_chat("demo")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(cost_header(&resp), "0.029");
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 13);
    assert_eq!(body["usage"]["completion_tokens"], 8);
    let record = wait_record(&c, &gw, &id).await;
    assert_billed(&record, 13, 8, 0, 29_000_000);
    assert_eq!(record["status"], 200);
    assert_eq!(record["model"], "demo");
    assert_eq!(record["provider"], "mock");
    assert_eq!(record["endpoint"], "/v1/chat/completions");
    assert_eq!(record["stream"], false);
    assert_eq!(record["cost_saved_usd"], 0.0);
    assert!(record["error"].is_null());

    // frac: 13 × $0.1/M + 8 × $0.2/M = $0.0000029 exactly (0.1 and 0.2 are not binary).
    let resp = post_chat(&c, &gw, &golden_chat("frac")).await;
    assert_eq!(cost_header(&resp), "0.0000029");
    let record = wait_record(&c, &gw, &request_id(&resp)).await;
    assert_billed(&record, 13, 8, 0, 2_900);

    // half: 13 × $0.0005/M = 6.5 nano-USD, rounded half up once, to 7.
    let resp = post_chat(&c, &gw, &golden_chat("half")).await;
    assert_eq!(cost_header(&resp), "0.000000007");
    let record = wait_record(&c, &gw, &request_id(&resp)).await;
    assert_billed(&record, 13, 8, 0, 7);

    // Embeddings: 5 words of input × $100/M.
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "embed", "input": ["one two three", "four five"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(cost_header(&resp), "0.0005");
    let record = wait_record(&c, &gw, &request_id(&resp)).await;
    assert_billed(&record, 5, 0, 0, 500_000);
    assert_eq!(record["endpoint"], "/v1/embeddings");
}

#[tokio::test]
async fn the_cost_counter_is_one_metric_family_that_follows_the_bills() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), PRICES)).await;
    let c = client();
    for model in ["demo", "demo", "frac"] {
        let resp = post_chat(&c, &gw, &golden_chat(model)).await;
        assert_eq!(resp.status(), 200);
    }
    // One family, exported from start-up and then counting: a second TYPE line for the same
    // name makes Prometheus reject the whole scrape. A gauge that only grows, because USD
    // needs fractions and the exporter's counters are integers.
    let metrics = metrics_text(&gw).await;
    let families: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE sentinel_cost_usd_total "))
        .collect();
    assert_eq!(
        families,
        ["# TYPE sentinel_cost_usd_total gauge"],
        "{metrics}"
    );
    for (model, usd) in [("demo", 0.058), ("frac", 0.000_002_9), ("embed", 0.0)] {
        let series = format!("sentinel_cost_usd_total{{tenant=\"test\",model=\"{model}\"}}");
        let value = metric(&metrics, &series);
        // Summed in floating point: equal to a picodollar.
        assert!(
            value.is_some_and(|v| (v - usd).abs() < 1e-12),
            "{series} = {value:?}, not {usd}:\n{metrics}"
        );
    }
}

fn anthropic_config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://{upstream}/v1"
api_key_env = "TEST_ANTHROPIC_KEY"

[[models]]
name = "claude"
routes = [{{ provider = "claude", model = "claude-sonnet-test" }}]

[pricing."claude-sonnet-test"]
input = 3.0
output = 15.0
cached_input = 0.3
cache_write = 3.75
"#
    )
}

#[tokio::test]
async fn anthropic_cache_reads_and_writes_are_costed_exactly() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &anthropic_config(up.addr()),
        &[("TEST_ANTHROPIC_KEY", "sk-ant-test")],
    )
    .await;
    let c = client();
    // The system prompt carries the mock's marker: 10 tokens read from the prompt cache and 5
    // written to it, on top of input_tokens = 3 (system words) + 2 + 3 (the user message).
    assert_eq!((CACHE_READ_TOKENS, CACHE_CREATION_TOKENS), (10, 5));
    let cached = |stream: bool| {
        json!({"model": "claude", "max_tokens": 50, "stream": stream, "messages": [
            {"role": "system", "content": "be brief cache-test"},
            {"role": "user", "content": "hello claude"}]})
    };
    // 8 × $3/M + 10 × $0.3/M + 5 × $3.75/M + 5 (reply words) × $15/M
    //   = 24 + 3 + 18.75 + 75 = $120.75/M.
    let resp = post_chat(&c, &gw, &cached(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(cost_header(&resp), "0.00012075");
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 23, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");
    let record = wait_record(&c, &gw, &id).await;
    assert_billed(&record, 23, 5, 10, 120_750);
    assert_eq!(record["provider"], "claude");

    // Streamed, without the client asking for usage: same bill, no usage chunk delivered.
    let resp = post_chat(&c, &gw, &cached(true)).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert_eq!(sse_data(&text).last().unwrap(), "[DONE]", "{text}");
    assert!(sse_content(&text).contains("hello claude"));
    assert_no_usage_chunk(&text);
    let record = wait_record(&c, &gw, &id).await;
    assert_billed(&record, 23, 5, 10, 120_750);
    assert_eq!(record["stream"], true);

    // Without the marker there is nothing cached: 7 × $3/M + 5 × $15/M = $96/M.
    let resp = post_chat(
        &c,
        &gw,
        &json!({"model": "claude", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello claude"}]}),
    )
    .await;
    assert_eq!(cost_header(&resp), "0.000096");
    let record = wait_record(&c, &gw, &request_id(&resp)).await;
    assert_billed(&record, 7, 5, 0, 96_000);
}

#[tokio::test]
async fn an_unpriced_model_is_served_at_zero_cost_flagged_and_counted() {
    let up = Upstream::start().await;
    // No [pricing] for mock-gpt, and the built-in list does not know it.
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    let c = client();
    let metrics = metrics_text(&gw).await;
    let before =
        metric(&metrics, "sentinel_unpriced_requests_total{model=\"demo\"}").unwrap_or(0.0);
    let resp = post_chat(&c, &gw, &golden_chat("demo")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(cost_header(&resp), "0");
    let record = wait_record(&c, &gw, &request_id(&resp)).await;
    assert_eq!(record["cost_unknown"], true, "{record}");
    assert_eq!(record["cost_usd"], 0.0);
    assert_eq!(record["prompt_tokens"], 13, "tokens are still counted");
    assert_eq!(record["completion_tokens"], 8);
    let stream =
        json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let resp = post_chat(&c, &gw, &stream).await;
    let id = request_id(&resp);
    resp.bytes().await.unwrap();
    let record = wait_record(&c, &gw, &id).await;
    assert_eq!(record["cost_unknown"], true, "{record}");
    let metrics = metrics_text(&gw).await;
    let after = metric(&metrics, "sentinel_unpriced_requests_total{model=\"demo\"}");
    assert_eq!(after, Some(before + 2.0), "{metrics}");
}

/// Asserts that no SSE event carries usage counts or is a choice-less usage chunk.
fn assert_no_usage_chunk(text: &str) {
    for data in sse_data(text).iter().filter(|d| *d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(
            chunk.get("usage").is_none_or(Value::is_null),
            "usage reached a client that did not ask: {data}"
        );
        assert!(
            chunk["choices"].as_array().is_some_and(|c| !c.is_empty()),
            "a choice-less chunk reached the client: {data}"
        );
    }
}

#[tokio::test]
async fn streams_are_billed_from_the_upstream_usage_whether_or_not_the_client_asks() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), PRICES)).await;
    let c = client();
    // "stream me please": 3 + 3 prompt tokens; "Mock reply to: stream me please": 6 words.
    // 6 × $1000/M + 6 × $2000/M = $0.018.
    let messages = json!([{"role": "user", "content": "stream me please"}]);

    let resp = post_chat(
        &c,
        &gw,
        &json!({"model": "demo", "stream": true, "messages": messages}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-sentinel-cost-usd").is_none());
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    assert_eq!(sse_data(&text).last().unwrap(), "[DONE]");
    assert_eq!(sse_content(&text), "Mock reply to: stream me please");
    assert_no_usage_chunk(&text);
    let record = wait_record(&c, &gw, &id).await;
    assert_billed(&record, 6, 6, 0, 18_000_000);
    assert_eq!(record["stream"], true);
    assert!(record["ttft_ms"].as_f64().is_some(), "{record}");

    let resp = post_chat(
        &c,
        &gw,
        &json!({"model": "demo", "stream": true, "stream_options": {"include_usage": true},
                "messages": messages}),
    )
    .await;
    let id = request_id(&resp);
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert_eq!(usage["usage"]["prompt_tokens"], 6);
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(usage["usage"]["total_tokens"], 12);
    let record = wait_record(&c, &gw, &id).await;
    assert_billed(&record, 6, 6, 0, 18_000_000);
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_billed_for_the_whole_answer() {
    // 60 words in 20 chunks 50 ms apart: the answer takes about a second.
    let up = Upstream::with(MockOptions {
        chunk_interval: Duration::from_millis(50),
        chunks: 20,
        reply: Some("tok ".repeat(60)),
        ..MockOptions::default()
    })
    .await;
    let gw = Gateway::start(&basic_config(up.addr(), PRICES)).await;
    let c = client();
    let mut resp = post_chat(
        &c,
        &gw,
        &json!({"model": "demo", "stream": true,
                "messages": [{"role": "user", "content": "disconnect me"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let mut seen = String::new();
    while sse_content(&seen).is_empty() {
        let chunk = resp.chunk().await.unwrap().expect("a first content chunk");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!seen.contains("[DONE]"));
    drop(resp);

    let record = wait_record(&c, &gw, &id).await;
    assert_eq!(record["status"], 499, "{record}");
    assert_eq!(record["error"], "client_disconnected");
    assert_eq!(record["stream"], true);
    // The usage the upstream reported at the end: 2 + 3 prompt tokens and all 60 words, not
    // the few chunks the client saw. 5 × $1000/M + 60 × $2000/M = $0.125.
    assert_billed(&record, 5, 60, 0, 125_000_000);
    assert_eq!(up.mock.control().calls("/v1/chat/completions"), 1);
}

/// Sums of audit records per group: requests, prompt, completion, nano-USD.
type Sums = (u64, u64, u64, i64);

fn add(sums: &mut Sums, r: &Value) {
    sums.0 += 1;
    sums.1 += r["prompt_tokens"].as_u64().unwrap();
    sums.2 += r["completion_tokens"].as_u64().unwrap();
    sums.3 += nano(&r["cost_usd"]);
}

fn usage_sums(v: &Value) -> Sums {
    (
        v["requests"].as_u64().unwrap(),
        v["prompt_tokens"].as_u64().unwrap(),
        v["completion_tokens"].as_u64().unwrap(),
        nano(&v["cost_usd"]),
    )
}

/// Sends every kind of request the gateway meters, through two keys of tenant `test`:
/// chat, streams with and without usage, embeddings, an upstream failure after retries, a
/// stream that breaks, a provider refusal and an unknown model. Returns how many were sent
/// and the id of the broken stream.
async fn mixed_run(
    gw: &Gateway,
    up: &Upstream,
    a: &reqwest::Client,
    b: &reqwest::Client,
) -> (usize, String) {
    let control = up.mock.control();
    let mut sent = 0;
    let mut expect = |resp: reqwest::Response, status: u16| {
        assert_eq!(resp.status(), status);
        sent += 1;
        resp
    };
    for (c, content) in [(a, "first"), (a, "second one"), (b, "third one here")] {
        expect(post_chat(c, gw, &golden_chat("demo")).await, 200);
        let frac = json!({"model": "frac", "messages": [{"role": "user", "content": content}]});
        expect(post_chat(c, gw, &frac).await, 200);
    }
    for (c, usage) in [(a, false), (b, true)] {
        let body = json!({"model": "demo", "stream": true, "stream_options": {"include_usage": usage},
                          "messages": [{"role": "user", "content": "a streamed answer"}]});
        expect(post_chat(c, gw, &body).await, 200)
            .bytes()
            .await
            .unwrap();
    }
    for c in [a, b] {
        let resp = c
            .post(gw.url("/v1/embeddings"))
            .json(&json!({"model": "embed", "input": ["some words to embed", "more"]}))
            .send()
            .await
            .unwrap();
        expect(resp, 200);
    }
    // Every attempt fails: 502 after the retries.
    control.fail_next(3, FailKind::Status500);
    expect(post_chat(a, gw, &golden_chat("demo")).await, 502);
    // A stream that breaks after its first event: no usage, so the tokens are estimated.
    control.fail_next(1, FailKind::MalformedSse);
    let body = json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "break"}]});
    let resp = expect(post_chat(b, gw, &body).await, 200);
    let broken = request_id(&resp);
    resp.bytes().await.unwrap();
    // The provider's own refusal, and a model that does not exist.
    let refused = json!({"model": "demo", "mock_status": 400, "messages": [{"role": "user", "content": "no"}]});
    expect(post_chat(a, gw, &refused).await, 400);
    let unknown = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]});
    expect(post_chat(b, gw, &unknown).await, 404);
    (sent, broken)
}

#[tokio::test]
async fn usage_totals_and_breakdowns_equal_the_audit_records_after_a_mixed_run() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), PRICES)).await;
    let a = client();
    let created: Value = client_with_key(ADMIN_KEY)
        .post(gw.url("/admin/tenants/test/keys"))
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = client_with_key(created["key"].as_str().expect("a new key"));
    let (sent, broken) = mixed_run(&gw, &up, &a, &b).await;

    let records = wait_records(&a, &gw, &[], sent).await;
    assert_eq!(records.len(), sent, "one record per request");
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    for s in [200, 400, 404, 502] {
        assert!(statuses.contains(&s), "a {s} record among {statuses:?}");
    }
    let broken = records.iter().find(|r| r["request_id"] == broken).unwrap();
    assert_eq!(broken["tokens_estimated"], true, "{broken}");
    assert!(nano(&broken["cost_usd"]) > 0, "{broken}");

    // Totals: the sum over the records, to the nano-dollar.
    let mut total: Sums = (0, 0, 0, 0);
    let mut by: BTreeMap<&str, BTreeMap<String, Sums>> = BTreeMap::new();
    for r in &records {
        add(&mut total, r);
        for (group, key) in [
            ("model", r["model"].as_str().unwrap().to_owned()),
            ("day", r["timestamp"].as_str().unwrap()[..10].to_owned()),
            ("key", r["key_id"].as_str().unwrap().to_owned()),
        ] {
            add(by.entry(group).or_default().entry(key).or_default(), r);
        }
    }
    assert!(total.3 > 0);
    assert_eq!(by["key"].len(), 2, "two keys were used");
    let days: Vec<&String> = by["day"].keys().collect();
    let (start, end) = (days[0].as_str(), days[days.len() - 1].as_str());

    let (status, usage) = get_json(&a, &gw, "/v1/usage", &[("start", start), ("end", end)]).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["tenant"], "test");
    assert_eq!(usage_sums(&usage["totals"]), total, "{usage}");
    assert_eq!(usage["totals"]["cache_hits"], 0);
    assert_eq!(usage["totals"]["cost_saved_usd"], 0.0);

    for (group, field) in [("model", "model"), ("day", "day"), ("key", "key_id")] {
        let (status, usage) = get_json(
            &a,
            &gw,
            "/v1/usage",
            &[("start", start), ("end", end), ("group_by", group)],
        )
        .await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["group_by"], group);
        assert_eq!(usage_sums(&usage["totals"]), total);
        let mut sum: Sums = (0, 0, 0, 0);
        let mut got: BTreeMap<String, Sums> = BTreeMap::new();
        for entry in usage["breakdown"].as_array().unwrap() {
            let s = usage_sums(entry);
            sum = (sum.0 + s.0, sum.1 + s.1, sum.2 + s.2, sum.3 + s.3);
            got.insert(entry[field].as_str().unwrap().to_owned(), s);
        }
        assert_eq!(sum, total, "group_by={group} sums to the totals");
        assert_eq!(got, by[group], "group_by={group} matches the records");
    }
}

#[tokio::test]
async fn usage_of_another_tenant_needs_the_admin_key_embedded() {
    usage_ownership("").await;
}

#[tokio::test]
async fn usage_of_another_tenant_needs_the_admin_key_redis() {
    let redis = crate::support::redis::RedisServer::start().await;
    usage_ownership(&crate::audit_log::redis_store(&redis)).await;
}

/// Usage is per tenant on `store` (a `[store]` section, empty for the embedded default).
async fn usage_ownership(store: &str) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &two_tenant_config(up.addr(), &format!("{store}{PRICES}")),
        &[OTHER_ENV],
    )
    .await;
    let (mine, theirs) = (client(), client_with_key(OTHER_KEY));
    let admin = client_with_key(ADMIN_KEY);
    assert_eq!(
        post_chat(&mine, &gw, &golden_chat("demo")).await.status(),
        200
    );
    for _ in 0..2 {
        assert_eq!(
            post_chat(&theirs, &gw, &golden_chat("demo")).await.status(),
            200
        );
    }
    let mut records = wait_records(&admin, &gw, &[("tenant", "other")], 2).await;
    records.extend(wait_records(&mine, &gw, &[], 1).await);
    let (start, end) = days_of(&records);
    let range = [("start", start.as_str()), ("end", end.as_str())];
    let with = |tenant: &'static str| [range[0], range[1], ("tenant", tenant)];

    let (status, usage) = get_json(&admin, &gw, "/v1/usage", &with("other")).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["tenant"], "other");
    assert_eq!(usage_sums(&usage["totals"]), (2, 26, 16, 58_000_000));
    let (_, usage) = get_json(&admin, &gw, "/v1/usage", &with("test")).await;
    assert_eq!(usage_sums(&usage["totals"]), (1, 13, 8, 29_000_000));
    // A tenant reads its own usage, with or without naming itself...
    for query in [&range[..], &with("test")[..]] {
        let (status, usage) = get_json(&mine, &gw, "/v1/usage", query).await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["tenant"], "test");
        assert_eq!(usage["totals"]["requests"], 1);
    }
    // ...and never another's.
    let (status, body) = get_json(&mine, &gw, "/v1/usage", &[("tenant", "other")]).await;
    assert_eq!(status, 403, "{body}");
    assert_openai_error(&body, "admin_required");
    // The admin must name the tenant.
    let (status, body) = get_json(&admin, &gw, "/v1/usage", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, "invalid_body");
    // The records behind it are the other tenant's only.
    let theirs_records = all_records(&admin, &gw, &[("tenant", "other")]).await;
    assert!(theirs_records.iter().all(|r| r["tenant"] == "other"));
}

/// A client may send its own x-request-id, and nothing stops it from sending the same one
/// twice: both requests are served, so both must be billed and recorded, and the audit chain
/// must still verify.
async fn check_reused_request_id(store: &str) {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), &format!("{PRICES}{store}"))).await;
    let c = client();
    for _ in 0..2 {
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", "reused-request-id")
            .json(&golden_chat("demo"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(cost_header(&resp), "0.029");
    }
    let resp = post_chat(&c, &gw, &golden_chat("demo")).await;
    assert_eq!(resp.status(), 200);
    // The writer keeps the order of the requests: once the last one is stored, so are the
    // two before it.
    wait_record(&c, &gw, &request_id(&resp)).await;
    let records = all_records(&c, &gw, &[]).await;
    let (start, end) = days_of(&records);
    let (_, usage) = get_json(&c, &gw, "/v1/usage", &[("start", &start), ("end", &end)]).await;
    let (code, out) = audit_verify(&gw, "test", &[]).await;
    // Checked together, so a failure shows all three.
    assert_eq!(
        (usage_sums(&usage["totals"]), records.len(), code),
        ((3, 39, 24, 87_000_000), 3, 0),
        "every served request is billed ({usage}) and recorded, and the untampered chain \
         verifies ({out})"
    );
}

#[tokio::test]
async fn a_reused_request_id_is_still_billed_and_keeps_the_chain_intact_embedded() {
    check_reused_request_id("").await;
}

#[tokio::test]
async fn a_reused_request_id_is_still_billed_and_keeps_the_chain_intact_redis() {
    let redis = RedisServer::start().await;
    check_reused_request_id(&redis_store(&redis)).await;
}
