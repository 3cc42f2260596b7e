//! The audit log through the running gateway: every `/v1/audit` filter and the cursor,
//! tenant isolation of single records, tamper detection by `sentinel audit verify` on both
//! stores, no record lost through a Redis outage or a SIGTERM under load.
//!
//! Records are written asynchronously by a batching writer, so every read here polls with a
//! deadline ([`WAIT`]) until the expected records are there.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::support::gateway::{
    basic_config, client, client_with_key, post_chat, Gateway, ADMIN_KEY, TEST_KEY,
};
use crate::support::redis::RedisServer;
use crate::support::upstream::Upstream;
use crate::support::{assert_openai_error, sse_content, sse_data};
use sentinel::mock_provider::MockOptions;

/// How long an asynchronous write may take to show up.
pub const WAIT: Duration = Duration::from_secs(20);
/// The second tenant's key in the two-tenant configs.
pub const OTHER_KEY: &str = "sk-sntl-e2e-other-key-0123456789abcdefghijklmnop";
/// The second tenant's key as the gateway (and the CLI) read it.
pub const OTHER_ENV: (&str, &str) = ("E2E_OTHER_KEY", OTHER_KEY);

// === helpers shared with accounting.rs ===

/// Two tenants, `test` (`TEST_KEY`) and `other` (`OTHER_KEY`), in front of `upstream`.
pub fn two_tenant_config(upstream: std::net::SocketAddr, extra: &str) -> String {
    basic_config(
        upstream,
        &format!(
            r#"{extra}
[[tenants]]
id = "test"
keys = [{{ name = "e2e", key_env = "E2E_TEST_KEY" }}]

[[tenants]]
id = "other"
keys = [{{ name = "other", key_env = "E2E_OTHER_KEY" }}]
"#
        ),
    )
}

/// `[store]` for a Redis-backed gateway.
pub fn redis_store(redis: &RedisServer) -> String {
    format!(
        "\n[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    )
}

/// GET `path` with `query`; the status and the JSON body.
pub async fn get_json(
    c: &reqwest::Client,
    gw: &Gateway,
    path: &str,
    query: &[(&str, &str)],
) -> (u16, Value) {
    let url = url::Url::parse_with_params(&gw.url(path), query).unwrap();
    let resp = c.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} {query:?}: {e}: {text}"));
    (status, body)
}

/// Every audit record matching `query`, newest first, walking the pages of 1000.
pub async fn all_records(c: &reqwest::Client, gw: &Gateway, query: &[(&str, &str)]) -> Vec<Value> {
    try_all_records(c, gw, query)
        .await
        .unwrap_or_else(|body| panic!("GET /v1/audit {query:?}: {body}"))
}

/// Same, or the error body of a 503 (the store is unavailable or slow for a moment).
async fn try_all_records(
    c: &reqwest::Client,
    gw: &Gateway,
    query: &[(&str, &str)],
) -> Result<Vec<Value>, Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", "1000"));
        if let Some(c) = cursor.as_deref() {
            q.push(("cursor", c));
        }
        let (status, page) = get_json(c, gw, "/v1/audit", &q).await;
        if status == 503 {
            assert_openai_error(&page, "unavailable");
            return Err(page);
        }
        assert_eq!(status, 200, "{page}");
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(out),
        }
    }
}

/// Polls until at least `n` records match `query` (within [`WAIT`]); returns all of them. A
/// 503 while the store catches up (e.g. replaying its spill) counts as "not yet".
pub async fn wait_records(
    c: &reqwest::Client,
    gw: &Gateway,
    query: &[(&str, &str)],
    n: usize,
) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let found = try_all_records(c, gw, query).await;
        if let Ok(records) = &found {
            if records.len() >= n {
                return found.unwrap();
            }
        }
        assert!(
            t0.elapsed() < WAIT,
            "{} of {n} audit records after {WAIT:?}",
            found.map_or_else(|e| format!("none readable ({e})"), |r| r.len().to_string())
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `GET /v1/audit/{request_id}` until the record is there (within [`WAIT`]).
pub async fn wait_record(c: &reqwest::Client, gw: &Gateway, request_id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (status, body) = get_json(c, gw, &format!("/v1/audit/{request_id}"), &[]).await;
        if status == 200 {
            return body;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            t0.elapsed() < WAIT,
            "no audit record {request_id} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A USD amount of the API as integer nano-USD (the unit the gateway counts in).
#[expect(
    clippy::cast_possible_truncation,
    reason = "test amounts are far below i64::MAX nano-USD"
)]
pub fn nano(usd: &Value) -> i64 {
    (usd.as_f64()
        .unwrap_or_else(|| panic!("not a number: {usd}"))
        * 1e9)
        .round() as i64
}

/// The `x-request-id` of an answer.
pub fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

/// Runs `sentinel audit verify --tenant TENANT` against `gw`'s config and store, with the
/// environment the gateway got; returns whether it exited 0, its exit code and its output.
pub async fn audit_verify(gw: &Gateway, tenant: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sentinel"))
        .args(["audit", "verify", "--tenant", tenant, "--config"])
        .arg(gw.dir().join("sentinel.toml"))
        .current_dir(gw.dir())
        .env("E2E_TEST_KEY", TEST_KEY)
        .env("SENTINEL_ADMIN_KEY", ADMIN_KEY)
        .env("SENTINEL_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The Prometheus text of `gw`.
pub async fn metrics_text(gw: &Gateway) -> String {
    reqwest::get(gw.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `series` (`name` or `name{labels}`, exactly as exported).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The first and last day (`YYYY-MM-DD`) of `records`: a `/v1/usage` range that covers them
/// even when the run crosses midnight or a month's end.
pub fn days_of(records: &[Value]) -> (String, String) {
    let days: BTreeSet<&str> = records
        .iter()
        .map(|r| &r["timestamp"].as_str().unwrap()[..10])
        .collect();
    (
        (*days.first().expect("records")).to_owned(),
        (*days.last().unwrap()).to_owned(),
    )
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect()
}

fn id_set(records: &[Value]) -> BTreeSet<String> {
    ids(records).into_iter().collect()
}

fn chat(content: &str) -> Value {
    json!({"model": "demo", "messages": [{"role": "user", "content": content}]})
}

// === filters and limit ===

/// Sends a fixed mix of requests (sequentially: the newest-first order is the reverse of the
/// sending order) and returns their request ids in sending order.
async fn send_filter_mix(gw: &Gateway) -> Vec<String> {
    let c = client();
    let mut sent = Vec::new();
    let tagged = |tags: &'static str, body: Value| {
        c.post(gw.url("/v1/chat/completions"))
            .header("x-sentinel-tags", tags)
            .json(&body)
    };
    for (tags, body, status) in [
        ("team=search", chat("one"), 200),
        ("team=search, env=prod", chat("two"), 200),
        ("team=ads", chat("three"), 200),
        ("team=search", chat("four"), 200),
        ("team=ads", chat("five"), 200),
        (
            "team=ads",
            json!({"model": "demo", "mock_status": 400, "messages": [{"role": "user", "content": "refused"}]}),
            400,
        ),
        (
            "team=none",
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            404,
        ),
        (
            "team=stream",
            json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "s"}]}),
            200,
        ),
    ] {
        let resp = tagged(tags, body).send().await.unwrap();
        assert_eq!(resp.status(), status, "{tags}");
        sent.push(request_id(&resp));
        resp.bytes().await.unwrap();
    }
    let resp = c
        .post(gw.url("/v1/embeddings"))
        .header("x-sentinel-tags", "team=search")
        .json(&json!({"model": "embed", "input": "vector please"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sent.push(request_id(&resp));
    sent
}

/// One filter case: the query, the ids it must return, and (when fixed by the set-up) how
/// many there are.
type Case<'a> = (Vec<(&'a str, &'a str)>, BTreeSet<String>, Option<usize>);

/// Every filter of SPEC's `/v1/audit`, alone and combined, then `limit` and the cursor.
async fn check_filters(gw: &Gateway) {
    let c = client();
    let sent = send_filter_mix(gw).await;
    let all = wait_records(&c, gw, &[], sent.len()).await;
    assert_eq!(all.len(), sent.len(), "one record per request");
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(ids(&all), newest_first, "newest first");
    for r in &all {
        assert_eq!(r["tenant"], "test");
        assert_eq!(r["cache"], "miss");
    }
    check_filter_cases(gw, &all).await;
    check_limit_and_cursor(gw, &all, &newest_first).await;
}

/// The ids of the records of `all` that `pred` selects.
fn select(all: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    all.iter()
        .filter(|r| pred(r))
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The cases of every field filter (model, status, cache, tag), alone and combined.
fn field_cases(all: &[Value]) -> Vec<Case<'static>> {
    let none = BTreeSet::new;
    vec![
        (
            vec![("model", "demo")],
            select(all, |r| r["model"] == "demo"),
            Some(7),
        ),
        (
            vec![("model", "embed")],
            select(all, |r| r["model"] == "embed"),
            Some(1),
        ),
        (
            vec![("model", "no-such-model")],
            select(all, |r| r["model"] == "no-such-model"),
            Some(1),
        ),
        (
            vec![("status", "200")],
            select(all, |r| r["status"] == 200),
            Some(7),
        ),
        (
            vec![("status", "404")],
            select(all, |r| r["status"] == 404),
            Some(1),
        ),
        (
            vec![("status", "400")],
            select(all, |r| r["status"] == 400),
            Some(1),
        ),
        (vec![("status", "503")], none(), Some(0)),
        (vec![("cache", "miss")], id_set(all), Some(9)),
        (vec![("cache", "exact")], none(), Some(0)),
        (vec![("cache", "semantic")], none(), Some(0)),
        (
            vec![("tag", "team=search")],
            select(all, |r| r["tags"]["team"] == "search"),
            Some(4),
        ),
        (
            vec![("tag", "env=prod")],
            select(all, |r| r["tags"]["env"] == "prod"),
            Some(1),
        ),
        (vec![("tag", "team=nobody")], none(), Some(0)),
        (
            vec![("model", "demo"), ("tag", "team=ads"), ("status", "200")],
            select(all, |r| {
                r["model"] == "demo" && r["tags"]["team"] == "ads" && r["status"] == 200
            }),
            Some(2),
        ),
    ]
}

/// Each filter returns exactly the records the same predicate selects from the full list.
async fn check_filter_cases(gw: &Gateway, all: &[Value]) {
    let c = client();
    let mut by_time: Vec<&Value> = all.iter().collect();
    by_time.sort_by_key(|r| r["ts_ms"].as_u64().unwrap());
    let ts = |i: usize| by_time[i]["ts_ms"].as_u64().unwrap();
    let stamp = |i: usize| by_time[i]["timestamp"].as_str().unwrap().to_owned();
    let (start_stamp, end_stamp) = (stamp(3), stamp(6));
    let (start_ms, end_ms) = (ts(3), ts(6));
    let (first_day, last_day) = days_of(all);
    let none = BTreeSet::new;

    let mut cases: Vec<Case<'_>> = field_cases(all);
    cases.extend([
        (
            vec![("start", start_stamp.as_str())],
            select(all, |r| r["ts_ms"].as_u64().unwrap() >= start_ms),
            None,
        ),
        (
            vec![("end", end_stamp.as_str())],
            select(all, |r| r["ts_ms"].as_u64().unwrap() <= end_ms),
            None,
        ),
        (
            vec![("start", start_stamp.as_str()), ("end", end_stamp.as_str())],
            select(all, |r| {
                (start_ms..=end_ms).contains(&r["ts_ms"].as_u64().unwrap())
            }),
            None,
        ),
        (
            vec![("start", first_day.as_str()), ("end", last_day.as_str())],
            id_set(all),
            Some(9),
        ),
        (vec![("end", "2000-01-01")], none(), Some(0)),
        (vec![("start", "2999-12-31")], none(), Some(0)),
        (vec![("end", "2000-01-01T00:00:00Z")], none(), Some(0)),
    ]);
    for (query, expected, count) in cases {
        match count {
            Some(count) => assert_eq!(expected.len(), count, "test set-up for {query:?}"),
            None => assert!(
                !expected.is_empty() && expected.len() < all.len(),
                "a time bound that selects something but not everything: {query:?}"
            ),
        }
        let got = all_records(&c, gw, &query).await;
        assert_eq!(id_set(&got), expected, "filter {query:?}");
        assert_eq!(got.len(), expected.len(), "no duplicates for {query:?}");
    }
}

/// `limit` pages newest first, the cursor continues where a page ended, and bad parameters
/// are OpenAI-shaped 400s.
async fn check_limit_and_cursor(gw: &Gateway, all: &[Value], newest_first: &[String]) {
    let c = client();
    let (status, page) = get_json(&c, gw, "/v1/audit", &[("limit", "4")]).await;
    assert_eq!(status, 200);
    assert_eq!(ids(page["data"].as_array().unwrap()), newest_first[..4]);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, page2) = get_json(&c, gw, "/v1/audit", &[("limit", "4"), ("cursor", &cursor)]).await;
    assert_eq!(ids(page2["data"].as_array().unwrap()), newest_first[4..8]);
    let cursor = page2["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_owned();
    let (_, page3) = get_json(&c, gw, "/v1/audit", &[("limit", "4"), ("cursor", &cursor)]).await;
    assert_eq!(ids(page3["data"].as_array().unwrap()), newest_first[8..]);
    assert!(page3["next_cursor"].is_null(), "{page3}");
    // A filtered page with a limit.
    let (_, tagged) = get_json(
        &c,
        gw,
        "/v1/audit",
        &[("tag", "team=search"), ("limit", "2")],
    )
    .await;
    let expected: Vec<String> = newest_first
        .iter()
        .filter(|id| {
            all.iter()
                .any(|r| r["request_id"] == **id && r["tags"]["team"] == "search")
        })
        .take(2)
        .cloned()
        .collect();
    assert_eq!(ids(tagged["data"].as_array().unwrap()), expected);
    // The default page (100) holds them all; 1000 is the largest allowed.
    let (_, default) = get_json(&c, gw, "/v1/audit", &[]).await;
    assert_eq!(default["data"].as_array().unwrap().len(), 9);
    assert!(default["next_cursor"].is_null());
    let (status, _) = get_json(&c, gw, "/v1/audit", &[("limit", "1000")]).await;
    assert_eq!(status, 200);

    for query in [
        [("limit", "0")],
        [("limit", "1001")],
        [("cursor", "bm90LWEtY3Vyc29y")],
        [("tag", "no-equals-sign")],
        [("cache", "maybe")],
        [("start", "yesterday")],
        [("status", "two-hundred")],
    ] {
        let (status, body) = get_json(&c, gw, "/v1/audit", &query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
        assert_openai_error(&body, "invalid_body");
    }
}

#[tokio::test]
async fn every_filter_and_limit_select_exactly_the_matching_records_embedded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    check_filters(&gw).await;
}

#[tokio::test]
async fn every_filter_and_limit_select_exactly_the_matching_records_redis() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), &redis_store(&redis))).await;
    check_filters(&gw).await;
}

/// A sequential client's records over one connection are listed newest first: answered
/// requests (their token window is settled by a spawned task before the record is queued),
/// refusals before the upstream (queued at once), and 429s once the minute's requests are
/// used up. One connection is served by one lane, whose writer keeps its queue's order;
/// across connections the listing is the order of writing (ARCHITECTURE.md, "Audit order").
async fn check_sequential_order(store: &str) {
    const RPM: usize = 16;
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(
        up.addr(),
        &format!(
            "{store}\n[[tenants]]\nid = \"test\"\nlimits = {{ rpm = {RPM}, tpm = 1000000 }}\n\
             keys = [{{ name = \"e2e\", key_env = \"E2E_TEST_KEY\" }}]\n"
        ),
    ))
    .await;
    let c = client();
    let (mut sent, mut admitted) = (Vec::new(), 0);
    for n in 0..RPM + 12 {
        // Unknown models are refused before the limits count them.
        let model = if n % 3 == 2 { "no-such-model" } else { "demo" };
        let body =
            json!({"model": model, "messages": [{"role": "user", "content": format!("n{n}")}]});
        let resp = c
            .post(gw.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let expected = match model {
            "demo" if admitted < RPM => 200,
            "demo" => 429,
            _ => 404,
        };
        admitted += usize::from(expected == 200);
        assert_eq!(resp.status(), expected, "request {n}");
        sent.push(request_id(&resp));
        resp.bytes().await.unwrap();
    }
    let all = wait_records(&client(), &gw, &[], sent.len()).await;
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(ids(&all), newest_first, "newest first");
    let statuses: BTreeSet<u64> = all.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, BTreeSet::from([200, 404, 429]));
}

#[tokio::test]
async fn a_sequential_clients_records_are_listed_newest_first_embedded() {
    check_sequential_order("").await;
}

#[tokio::test]
async fn a_sequential_clients_records_are_listed_newest_first_redis() {
    let redis = RedisServer::start().await;
    check_sequential_order(&redis_store(&redis)).await;
}

#[tokio::test]
async fn every_refusal_after_auth_leaves_a_record() {
    // Refusals before a provider is chosen are requests of the tenant too: each one leaves
    // exactly one record, like the 404 of an unknown model does.
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &basic_config(up.addr(), ""),
        &[("SENTINEL_SERVER__MAX_BODY_BYTES", "4096")],
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let refusals = [
        (
            c.post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
        ),
        (c.post(&url).json(&json!({"model": "demo"})), 400),
        (
            c.post(&url)
                .header("x-sentinel-tags", "not a tag")
                .json(&chat("x")),
            400,
        ),
        (c.post(&url).json(&chat(&"word ".repeat(2000))), 413),
        (
            c.post(gw.url("/v1/embeddings"))
                .json(&json!({"model": "embed"})),
            400,
        ),
        (
            c.post(&url).json(
                &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            ),
            404,
        ),
    ];
    let mut sent = Vec::new();
    for (req, status) in refusals {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status);
        sent.push((request_id(&resp), status));
    }
    // A served request last: the writer keeps the order, so once it is stored the refusals
    // before it are too.
    let resp = post_chat(&c, &gw, &chat("served")).await;
    assert_eq!(resp.status(), 200);
    wait_record(&c, &gw, &request_id(&resp)).await;
    let records = all_records(&c, &gw, &[]).await;
    let stored: BTreeMap<String, u64> = records
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let missing: Vec<&(String, u16)> = sent
        .iter()
        .filter(|(id, status)| stored.get(id) != Some(&u64::from(*status)))
        .collect();
    assert!(
        missing.is_empty(),
        "refusals without their record (id, status): {missing:?}; stored: {stored:?}"
    );
    assert_eq!(records.len(), sent.len() + 1, "one record per request");
}

// === pagination under concurrent writes ===

/// Chat, stream and embeddings requests from `workers` concurrent loops until stopped: the ids
/// of the answered ones (any status), and the transport failures (no answer at all).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<Mutex<Vec<String>>>,
    handles: Vec<tokio::task::JoinHandle<u64>>,
}

impl Load {
    fn start(gw: &Gateway, workers: usize, tags: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..workers)
            .map(|w| {
                let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
                let url = gw.url("");
                tokio::spawn(async move {
                    let c = client();
                    let mut failed = 0;
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let (path, body) = match (w + i) % 4 {
                            0 => (
                                "/v1/chat/completions",
                                json!({"model": "demo", "stream": true,
                                       "messages": [{"role": "user", "content": format!("w{w} r{i}")}]}),
                            ),
                            1 => (
                                "/v1/embeddings",
                                json!({"model": "embed", "input": format!("w{w} r{i}")}),
                            ),
                            _ => ("/v1/chat/completions", chat(&format!("w{w} r{i}"))),
                        };
                        let sent = c
                            .post(format!("{url}{path}"))
                            .header("x-sentinel-tags", tags)
                            .json(&body)
                            .send()
                            .await;
                        // Read the whole answer, so a stream ends and is recorded.
                        let read = match sent {
                            Ok(resp) => {
                                let id = request_id(&resp);
                                resp.bytes().await.map(|_| id)
                            }
                            Err(e) => Err(e),
                        };
                        let Ok(id) = read else {
                            // The gateway went away (shutdown): this worker is done.
                            failed += 1;
                            break;
                        };
                        answered.lock().await.push(id);
                    }
                    failed
                })
            })
            .collect();
        Self {
            stop,
            answered,
            handles,
        }
    }

    async fn count(&self) -> usize {
        self.answered.lock().await.len()
    }

    /// Stops the loops; returns the answered ids and the number of transport failures.
    async fn finish(self) -> (Vec<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut failed = 0;
        for h in self.handles {
            failed += h.await.unwrap();
        }
        let answered = std::mem::take(&mut *self.answered.lock().await);
        (answered, failed)
    }
}

/// Waits until the load has answered more than `at_least` requests.
async fn load_reaches(load: &Load, at_least: usize) {
    let t0 = Instant::now();
    while load.count().await <= at_least {
        assert!(t0.elapsed() < WAIT, "the background load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn check_pagination_under_writes(gw: &Gateway) {
    const BEFORE: usize = 260;
    const PAGE: usize = 37;
    let c = client();
    // The records that exist before the walk starts.
    let sent: Vec<String> = {
        use futures_util::StreamExt;
        futures_util::stream::iter(0..BEFORE)
            .map(|i| {
                let c = c.clone();
                async move {
                    let resp = post_chat(&c, gw, &chat(&format!("before {i}"))).await;
                    assert_eq!(resp.status(), 200);
                    request_id(&resp)
                }
            })
            .buffer_unordered(8)
            .collect()
            .await
    };
    let before: BTreeSet<String> = sent.into_iter().collect();
    assert_eq!(before.len(), BEFORE);
    let existing = wait_records(&c, gw, &[], BEFORE).await;
    assert_eq!(id_set(&existing), before);

    // Walk page by page while new requests keep arriving between (and during) the pages.
    let load = Load::start(gw, 2, "phase=during");
    let mut walked: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        load_reaches(&load, load.count().await + 2).await;
        let limit = PAGE.to_string();
        let mut q = vec![("limit", limit.as_str())];
        if let Some(cur) = cursor.as_deref() {
            q.push(("cursor", cur));
        }
        let (status, page) = get_json(&c, gw, "/v1/audit", &q).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= PAGE);
        walked.extend(ids(data));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "the walk does not end");
    }
    let (during, failed) = load.finish().await;
    assert_eq!(failed, 0, "every background request was answered");
    assert!(!during.is_empty());

    let walked_set: BTreeSet<String> = walked.iter().cloned().collect();
    assert_eq!(walked_set.len(), walked.len(), "a record appeared twice");
    let missing: Vec<&String> = before.difference(&walked_set).collect();
    assert!(
        missing.is_empty(),
        "{} records that existed before the walk were skipped: {missing:?}",
        missing.len()
    );
    let during: HashSet<String> = during.into_iter().collect();
    let foreign: Vec<&String> = walked_set
        .iter()
        .filter(|id| !before.contains(*id) && !during.contains(*id))
        .collect();
    assert!(foreign.is_empty(), "records nobody sent: {foreign:?}");
    assert!(pages >= BEFORE / PAGE, "{pages} pages");
}

#[tokio::test]
async fn pagination_has_no_duplicates_or_gaps_while_requests_keep_arriving_embedded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    check_pagination_under_writes(&gw).await;
}

#[tokio::test]
async fn pagination_has_no_duplicates_or_gaps_while_requests_keep_arriving_redis() {
    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), &redis_store(&redis))).await;
    check_pagination_under_writes(&gw).await;
}

// === one record, one tenant ===

#[tokio::test]
async fn a_record_is_found_by_its_tenant_and_the_admin_only_embedded() {
    record_ownership("").await;
}

#[tokio::test]
async fn a_record_is_found_by_its_tenant_and_the_admin_only_redis() {
    let redis = RedisServer::start().await;
    record_ownership(&redis_store(&redis)).await;
}

/// Records, and the keys behind them, belong to one tenant: on `store` (a `[store]` section,
/// empty for the embedded default).
async fn record_ownership(store: &str) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with_env(&two_tenant_config(up.addr(), store), &[OTHER_ENV]).await;
    let (mine, theirs) = (client(), client_with_key(OTHER_KEY));
    let admin = client_with_key(ADMIN_KEY);
    let resp = mine
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "audit-owner-1")
        .json(&chat("mine"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(request_id(&resp), "audit-owner-1");
    let resp = post_chat(&theirs, &gw, &chat("theirs")).await;
    assert_eq!(resp.status(), 200);
    let their_id = request_id(&resp);

    let record = wait_record(&mine, &gw, "audit-owner-1").await;
    assert_eq!(record["request_id"], "audit-owner-1");
    assert_eq!(record["tenant"], "test");
    assert_eq!(record["status"], 200);
    wait_record(&theirs, &gw, &their_id).await;

    // Across tenants: 404, exactly as for an id that does not exist.
    for (c, id) in [(&theirs, "audit-owner-1"), (&mine, their_id.as_str())] {
        let (status, body) = get_json(c, &gw, &format!("/v1/audit/{id}"), &[]).await;
        assert_eq!(status, 404, "{body}");
        assert_openai_error(&body, "not_found");
    }
    let (status, body) = get_json(&mine, &gw, "/v1/audit/no-such-request", &[]).await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "not_found");
    // Lists are per tenant too.
    let theirs_list = all_records(&theirs, &gw, &[]).await;
    assert_eq!(ids(&theirs_list), std::slice::from_ref(&their_id));
    // A tenant key cannot name another tenant.
    for path in ["/v1/audit", "/v1/audit/audit-owner-1"] {
        let (status, body) = get_json(&theirs, &gw, path, &[("tenant", "test")]).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_openai_error(&body, "admin_required");
    }
    // The admin reads any tenant's record, and only under that tenant.
    let (status, body) = get_json(
        &admin,
        &gw,
        "/v1/audit/audit-owner-1",
        &[("tenant", "test")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, record);
    let (status, body) = get_json(
        &admin,
        &gw,
        "/v1/audit/audit-owner-1",
        &[("tenant", "other")],
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let listed = all_records(&admin, &gw, &[("tenant", "other")]).await;
    assert_eq!(ids(&listed), [their_id]);
    // Keys: a tenant key opens no admin route, not even for its own tenant.
    let (status, body) = get_json(&theirs, &gw, "/admin/tenants/test/keys", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_openai_error(&body, "admin_required");
    for (method, path) in [
        (reqwest::Method::GET, "/admin/tenants/other/keys"),
        (reqwest::Method::POST, "/admin/tenants/other/keys"),
        (reqwest::Method::GET, "/admin/tenants"),
        (reqwest::Method::DELETE, "/admin/keys/key_anything"),
    ] {
        let resp = theirs
            .request(method.clone(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
    let (_, keys) = get_json(&admin, &gw, "/admin/tenants/other/keys", &[]).await;
    assert!(keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["tenant"] == "other"));
}

// === tamper detection ===

/// Sends `n` chat requests one after the other and waits until their records are stored.
async fn intact_log(gw: &Gateway, n: usize) -> Vec<String> {
    let c = client();
    let mut sent = Vec::new();
    for i in 0..n {
        let resp = post_chat(&c, gw, &chat(&format!("record {i}"))).await;
        assert_eq!(resp.status(), 200);
        sent.push(request_id(&resp));
    }
    let all = wait_records(&c, gw, &[], n).await;
    assert_eq!(all.len(), n);
    let (code, out) = audit_verify(gw, "test", &[]).await;
    assert_eq!(code, 0, "an intact log verifies: {out}");
    assert!(out.contains("ok:"), "{out}");
    assert!(out.contains(&format!("{n} records")), "{out}");
    sent
}

/// A forgery by someone who knows the hashing scheme: a new record sealed as number
/// `after.seq + 1`, linked to `after`.
fn forge(after: &sentinel::audit::record::AuditRecord) -> sentinel::audit::record::AuditRecord {
    let mut forged = after.clone();
    forged.request_id = "forged-record-1".into();
    forged.cost_usd = 0.0;
    forged.seal(&after.chain, after.seq + 1, &after.hash);
    assert_eq!(forged.hash, forged.expected_hash());
    forged
}

async fn assert_verify_fails(gw: &Gateway, what: &str, expect: &[&str]) {
    let (code, out) = audit_verify(gw, "test", &[]).await;
    assert_eq!(code, 1, "{what} must fail verification: {out}");
    for needle in expect {
        assert!(
            out.contains(needle),
            "{what}: output lacks {needle:?}: {out}"
        );
    }
}

async fn assert_verify_ok(gw: &Gateway, what: &str) {
    let (code, out) = audit_verify(gw, "test", &[]).await;
    assert_eq!(code, 0, "after restoring {what}: {out}");
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one tampering scenario after another on the same file, each restored"
)]
async fn tampering_with_the_embedded_log_is_detected() {
    use rusqlite::{params, Connection};
    use sentinel::audit::record::AuditRecord;

    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), "")).await;
    intact_log(&gw, 6).await;

    let db = Connection::open(gw.dir().join("data/sentinel.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    // (request_id, ts_ms, stored JSON) by seq.
    let rows: BTreeMap<u64, (String, i64, String)> = {
        let mut stmt = db
            .prepare("SELECT request_id, ts_ms, record FROM audit WHERE tenant = 'test'")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|row| {
                let (id, ts, json): (String, i64, String) = row.unwrap();
                let record: AuditRecord = serde_json::from_str(&json).unwrap();
                (record.seq, (id, ts, json))
            })
            .collect()
    };
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    let record = |seq: u64| -> AuditRecord { serde_json::from_str(&rows[&seq].2).unwrap() };
    let delete = |seq: u64| {
        let n = db
            .execute(
                "DELETE FROM audit WHERE tenant = 'test' AND request_id = ?1",
                [&rows[&seq].0],
            )
            .unwrap();
        assert_eq!(n, 1);
    };
    let restore = |seq: u64| {
        let (id, ts, json) = &rows[&seq];
        let chain = record(seq).chain;
        db.execute(
            "INSERT INTO audit (tenant, chain, seq, request_id, ts_ms, record)
             VALUES ('test', ?1, ?2, ?3, ?4, ?5)",
            params![chain, i64::try_from(seq).unwrap(), id, ts, json],
        )
        .unwrap();
    };

    // (a) An edited record: its cost lowered after the fact.
    let mut edited: Value = serde_json::from_str(&rows[&3].2).unwrap();
    edited["cost_usd"] = json!(0.0);
    edited["completion_tokens"] = json!(1);
    db.execute(
        "UPDATE audit SET record = ?1 WHERE tenant = 'test' AND request_id = ?2",
        params![edited.to_string(), rows[&3].0],
    )
    .unwrap();
    assert_verify_fails(&gw, "an edited record", &["edited", &rows[&3].0, "seq 3"]).await;
    db.execute(
        "UPDATE audit SET record = ?1 WHERE tenant = 'test' AND request_id = ?2",
        params![rows[&3].2, rows[&3].0],
    )
    .unwrap();
    assert_verify_ok(&gw, "the edited record").await;

    // (b) A deleted record in the middle, then the last one.
    delete(4);
    assert_verify_fails(&gw, "a deleted record", &["deleted", "4..=4"]).await;
    restore(4);
    assert_verify_ok(&gw, "the deleted record").await;
    delete(6);
    assert_verify_fails(&gw, "a deleted last record", &["tail was deleted"]).await;
    restore(6);
    assert_verify_ok(&gw, "the last record").await;

    // (c) A forged record inserted after seq 2, correctly hashed and linked.
    let forged = forge(&record(2));
    // The row's own chain/seq columns are the forger's to choose; the sealed JSON is what
    // verification reads.
    db.execute(
        "INSERT INTO audit (tenant, chain, seq, request_id, ts_ms, record)
         VALUES ('test', ?1, 9999, ?2, ?3, ?4)",
        params![
            forged.chain,
            forged.request_id,
            i64::try_from(forged.ts_ms).unwrap(),
            serde_json::to_string(&forged).unwrap()
        ],
    )
    .unwrap();
    assert_verify_fails(&gw, "an inserted record", &["inserted", "forged-record-1"]).await;
    db.execute(
        "DELETE FROM audit WHERE tenant = 'test' AND request_id = 'forged-record-1'",
        [],
    )
    .unwrap();
    assert_verify_ok(&gw, "the inserted record").await;

    // ...and a naive one that was never sealed by a writer.
    let mut naive = record(5);
    naive.request_id = "forged-record-2".into();
    naive.chain = String::new();
    naive.hash = String::new();
    db.execute(
        "INSERT INTO audit (tenant, chain, seq, request_id, ts_ms, record)
         VALUES ('test', '', 0, ?1, ?2, ?3)",
        params![
            naive.request_id,
            i64::try_from(naive.ts_ms).unwrap(),
            serde_json::to_string(&naive).unwrap()
        ],
    )
    .unwrap();
    assert_verify_fails(&gw, "an unsealed record", &["forged-record-2", "no chain"]).await;
    db.execute(
        "DELETE FROM audit WHERE tenant = 'test' AND request_id = 'forged-record-2'",
        [],
    )
    .unwrap();
    assert_verify_ok(&gw, "the unsealed record").await;
}

/// Deletes one stream entry.
async fn xdel(conn: &mut redis::aio::MultiplexedConnection, key: &str, id: &str) {
    let n: i64 = redis::cmd("XDEL")
        .arg(key)
        .arg(id)
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "XDEL {id}");
}

/// Appends a record as the audit writer stores it (field `r`); returns the entry id.
async fn xadd(conn: &mut redis::aio::MultiplexedConnection, key: &str, json: &str) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("r")
        .arg(json)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn tampering_with_the_redis_log_is_detected() {
    use sentinel::audit::record::AuditRecord;

    let redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), &redis_store(&redis))).await;
    intact_log(&gw, 6).await;

    let key = "sntl:{test}:audit";
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    // (stream id, stored JSON) by seq.
    let mut rows: BTreeMap<u64, (String, String)> = entries
        .into_iter()
        .map(|(id, fields)| {
            let json = fields.into_iter().find(|(f, _)| f == "r").unwrap().1;
            let record: AuditRecord = serde_json::from_str(&json).unwrap();
            (record.seq, (id, json))
        })
        .collect();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    let record = |json: &str| -> AuditRecord { serde_json::from_str(json).unwrap() };

    // (a) An edited record (XDEL + XADD of the changed JSON).
    let (id3, json3) = rows[&3].clone();
    let request3 = record(&json3).request_id;
    let mut edited: Value = serde_json::from_str(&json3).unwrap();
    edited["status"] = json!(500);
    edited["cost_usd"] = json!(0.0);
    xdel(&mut conn, key, &id3).await;
    let edited_id = xadd(&mut conn, key, &edited.to_string()).await;
    assert_verify_fails(&gw, "an edited record", &["edited", &request3, "seq 3"]).await;
    xdel(&mut conn, key, &edited_id).await;
    let restored = xadd(&mut conn, key, &json3).await;
    rows.insert(3, (restored, json3));
    assert_verify_ok(&gw, "the edited record").await;

    // (b) A deleted record in the middle, then the last one.
    for (seq, needles) in [(4, vec!["deleted", "4..=4"]), (6, vec!["tail was deleted"])] {
        let (id, json) = rows[&seq].clone();
        xdel(&mut conn, key, &id).await;
        assert_verify_fails(&gw, &format!("deleting seq {seq}"), &needles).await;
        let restored = xadd(&mut conn, key, &json).await;
        rows.insert(seq, (restored, json));
        assert_verify_ok(&gw, &format!("seq {seq}")).await;
    }

    // (c) A forged record inserted after seq 2, correctly hashed and linked.
    let forged = forge(&record(&rows[&2].1));
    let forged_id = xadd(&mut conn, key, &serde_json::to_string(&forged).unwrap()).await;
    assert_verify_fails(&gw, "an inserted record", &["inserted", "forged-record-1"]).await;
    xdel(&mut conn, key, &forged_id).await;
    assert_verify_ok(&gw, "the inserted record").await;
}

// === nothing lost ===

#[tokio::test]
async fn a_redis_outage_under_load_loses_no_record() {
    outage_under_load(Duration::from_secs(2)).await;
}

/// A longer outage: the spill keeps memory flat (records go to disk, not to memory) and still
/// nothing is lost.
#[tokio::test]
async fn a_long_redis_outage_keeps_memory_bounded_and_loses_no_record() {
    let growth = outage_under_load(Duration::from_secs(10)).await;
    assert!(
        growth < 40.0,
        "RSS grew by {growth:.1} MB during a 10 s outage under load"
    );
}

/// Resident memory of `pid`, MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Redis goes down for `outage` under steady load and comes back; every answered request has
/// exactly one record afterwards. Returns how much the gateway's RSS grew during the outage.
async fn outage_under_load(outage: Duration) -> f64 {
    let mut redis = RedisServer::start().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&basic_config(up.addr(), &redis_store(&redis))).await;
    let c = client();
    // The key is validated (and cached) before the outage, so requests keep flowing.
    let resp = post_chat(&c, &gw, &chat("warm up")).await;
    assert_eq!(resp.status(), 200);
    let warm_up = request_id(&resp);

    let load = Load::start(&gw, 4, "phase=outage");
    load_reaches(&load, 20).await;
    redis.shutdown_save().await;
    let down_at = Instant::now();
    let answered_before_down = load.count().await;
    let pid = gw.child.id().expect("running");
    let rss_at_start = rss_mb(pid);
    let mut rss_peak = rss_at_start;
    // Keep the traffic going through the outage.
    while down_at.elapsed() < outage {
        let n = load.count().await;
        load_reaches(&load, n).await;
        rss_peak = rss_peak.max(rss_mb(pid));
    }
    assert!(
        load.count().await > answered_before_down + 20,
        "requests kept being answered while Redis was down"
    );
    redis.restart().await;
    let n = load.count().await;
    load_reaches(&load, n + 20).await;
    let (answered, failed) = load.finish().await;
    assert_eq!(failed, 0, "every request got an answer");

    let mut expected: BTreeSet<String> = answered.into_iter().collect();
    expected.insert(warm_up);
    let records = wait_records(&c, &gw, &[], expected.len()).await;
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per answered request"
    );
    assert_eq!(id_set(&records), expected);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: usize = redis::cmd("XLEN")
        .arg("sntl:{test}:audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, expected.len(), "replays stored nothing twice");

    let metrics = metrics_text(&gw).await;
    let spilled = metric(&metrics, "sentinel_audit_spilled_total").unwrap();
    assert!(
        spilled >= 1.0,
        "the outage went through the spill file:\n{metrics}"
    );
    assert!(metric(&metrics, "sentinel_audit_write_failures_total").unwrap() >= 1.0);
    let spill = std::fs::metadata(gw.dir().join("data/audit-spill.log")).unwrap();
    assert_eq!(spill.len(), 0, "the spill file is empty once replayed");
    // Usage counted each request once.
    let (first, last) = days_of(&records);
    let (_, usage) = get_json(&c, &gw, "/v1/usage", &[("start", &first), ("end", &last)]).await;
    assert_eq!(
        usage["totals"]["requests"].as_u64().unwrap(),
        expected.len() as u64
    );
    let (code, out) = audit_verify(&gw, "test", &[]).await;
    assert_eq!(code, 0, "{out}");
    rss_peak - rss_at_start
}

#[tokio::test]
async fn sigterm_during_traffic_keeps_every_record() {
    // Streams take about 0.7 s, so some are in flight when the signal arrives.
    let up = Upstream::with(MockOptions {
        chunk_interval: Duration::from_millis(30),
        chunks: 20,
        ..MockOptions::default()
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let config = basic_config(
        up.addr(),
        &format!(
            "\n[store]\npath = \"{0}/sentinel.db\"\n\n[audit]\nspill_path = \"{0}/audit-spill.log\"\n",
            data.path().display()
        ),
    );
    let mut gw = Gateway::start(&config).await;
    let load = Load::start(&gw, 4, "phase=shutdown");
    load_reaches(&load, 40).await;
    // One stream certainly in flight: its first words are out when the signal arrives.
    let mut long = post_chat(
        &client(),
        &gw,
        &json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "in flight"}]}),
    )
    .await;
    assert_eq!(long.status(), 200);
    let long_id = request_id(&long);
    let mut text = String::new();
    while sse_content(&text).is_empty() {
        let chunk = long.chunk().await.unwrap().expect("first words");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    gw.terminate();
    while let Some(chunk) = long.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(
        sse_data(&text).last().unwrap(),
        "[DONE]",
        "the stream finished"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), gw.child.wait())
        .await
        .expect("exited after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let (mut answered, unanswered) = load.finish().await;
    assert!(answered.len() >= 40);
    answered.push(long_id);

    // A new gateway on the same data shows every answered request.
    let again = Gateway::start(&config).await;
    let c = client();
    let records = all_records(&c, &again, &[]).await;
    let stored = id_set(&records);
    assert_eq!(stored.len(), records.len());
    assert!(
        records.len() <= answered.len() + usize::try_from(unanswered).unwrap(),
        "more records than requests"
    );
    let lost: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    let first_logs = gw.log_text();
    let lost_lines: Vec<&str> = first_logs.lines().filter(|l| l.contains("lost")).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no record after SIGTERM: {lost:?}; the first \
         gateway logged: {lost_lines:#?}",
        lost.len(),
        answered.len()
    );
    let (code, out) = audit_verify(&again, "test", &[]).await;
    assert_eq!(code, 0, "{out}");
}
