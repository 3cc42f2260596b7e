//! Limits and budgets shared by several replicas through Redis (standalone and Cluster), under
//! concurrent load, and the fallback while Redis is gone: per-replica counters, `degraded`
//! health, no 5xx, and recovery without a restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::limits::{
    assert_rate_limited, audit, avoid_minute_edge, chat, cost_bound_nano, eventually, metric,
    secret, spent_nano, tenant, usd, wait_spent, PRICING, REAL_COST_NANO,
};
use crate::support::assert_openai_error;
use crate::support::cluster::{RedisCluster, RedisNode};
use crate::support::gateway::{basic_config, client_with_key, post_chat, Gateway};
use crate::support::upstream::Upstream;

fn standalone(url: &str) -> String {
    format!("\n[store]\nbackend = \"redis\"\nredis_url = \"{url}\"\n")
}

fn cluster(urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "\n[store]\nbackend = \"redis\"\ncluster_urls = [{}]\n",
        list.join(", ")
    )
}

/// Sends `total` copies of `body` with `key`, `concurrency` at a time, request `i` to
/// replica `i % gws.len()`. Returns `(status, error code)` per request.
async fn burst(
    gws: &[&Gateway],
    key: &str,
    total: usize,
    concurrency: usize,
    body: &Value,
) -> Vec<(u16, Option<String>)> {
    let urls: Arc<Vec<String>> =
        Arc::new(gws.iter().map(|g| g.url("/v1/chat/completions")).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let client = client_with_key(key);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (urls, next, client, body) = (
            Arc::clone(&urls),
            Arc::clone(&next),
            client.clone(),
            body.clone(),
        );
        workers.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return seen;
                }
                let resp = client
                    .post(&urls[i % urls.len()])
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let code = if status == 200 {
                    None
                } else {
                    let v: Value = resp.json().await.unwrap();
                    v["error"]["code"].as_str().map(str::to_owned)
                };
                seen.push((status, code));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.unwrap());
    }
    assert_eq!(all.len(), total);
    all
}

/// 60 requests, 16 in flight, over `gws` against a tenant with `rpm = 20`: exactly 20 are
/// admitted. The tolerance is zero: a take is one Lua script on Redis (atomic), so no two
/// replicas can both take the last unit; and no false refusal either (at least 20 pass).
async fn assert_rpm_exact(gws: &[&Gateway], up: &Upstream, key: &str) {
    let before = up.mock.control().calls("/v1/chat/completions");
    avoid_minute_edge().await;
    let results = burst(gws, key, 60, 16, &chat(None)).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let limited = results
        .iter()
        .filter(|(s, c)| *s == 429 && c.as_deref() == Some("rate_limit_exceeded"))
        .count();
    assert_eq!(
        ok,
        20,
        "{} replicas admitted {ok} of 60 with rpm = 20 (tolerance 0)",
        gws.len()
    );
    assert_eq!(limited, 40, "every other answer is a 429: {results:?}");
    assert_eq!(up.mock.control().calls("/v1/chat/completions") - before, 20);
    // The window is shared: every replica now refuses, with the OpenAI headers.
    for gw in gws {
        let resp = post_chat(&client_with_key(key), gw, &chat(None)).await;
        assert_eq!(
            resp.headers()["x-ratelimit-remaining-requests"],
            "0",
            "{:?}",
            resp.headers()
        );
        assert_rate_limited(resp).await;
    }
}

#[tokio::test]
async fn rpm_is_exact_across_two_and_three_replicas_on_one_redis() {
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    up.mock.control().set_latency(Duration::from_millis(10));
    let (pair, trio) = (secret("rpm-pair"), secret("rpm-trio"));
    let config = basic_config(
        up.addr(),
        &format!(
            "{}{}{}",
            standalone(&redis.url()),
            tenant("pair", "PAIR_KEY", "limits = { rpm = 20 }"),
            tenant("trio", "TRIO_KEY", "limits = { rpm = 20 }")
        ),
    );
    let env = [("PAIR_KEY", pair.as_str()), ("TRIO_KEY", trio.as_str())];
    let a = Gateway::start_with_env(&config, &env).await;
    let b = Gateway::start_with_env(&config, &env).await;
    let c = Gateway::start_with_env(&config, &env).await;
    assert_rpm_exact(&[&a, &b], &up, &pair).await;
    assert_rpm_exact(&[&a, &b, &c], &up, &trio).await;
}

#[tokio::test]
async fn key_rpm_is_exact_across_replicas_on_a_redis_cluster() {
    let redis = RedisCluster::start().await;
    let up = Upstream::start().await;
    up.mock.control().set_latency(Duration::from_millis(10));
    let key = secret("rpm-cluster");
    let config = basic_config(
        up.addr(),
        &format!(
            "{}{}",
            cluster(&redis.urls()),
            // The limit is the key's own: its window lives in the tenant's slot too.
            "\n[[tenants]]\nid = \"clustered\"\n\
             keys = [{ name = \"k\", key_env = \"CL_KEY\", limits = { rpm = 20 } }]\n"
        ),
    );
    let env = [("CL_KEY", key.as_str())];
    let a = Gateway::start_with_env(&config, &env).await;
    let b = Gateway::start_with_env(&config, &env).await;
    assert_rpm_exact(&[&a, &b], &up, &key).await;
    assert!(redis.dbsize().await > 0, "the state lives in the cluster");
}

#[tokio::test]
async fn budget_across_two_replicas_overshoots_by_at_most_the_requests_in_flight() {
    const CONCURRENCY: usize = 8;
    const MAX_TOKENS: u32 = 10;
    let bound = cost_bound_nano(MAX_TOKENS);
    // Room for about 16 real requests when reservations are settled promptly.
    let limit = bound + 15 * REAL_COST_NANO + REAL_COST_NANO / 2;
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    // Slow enough that CONCURRENCY requests really are in flight together.
    up.mock.control().set_latency(Duration::from_millis(40));
    let key = secret("shared-wallet");
    let policy = format!(
        "budget = {{ limit_usd = {:.9}, period = \"day\", mode = \"enforce\" }}",
        usd(limit)
    );
    let config = basic_config(
        up.addr(),
        &format!(
            "{}{PRICING}{}",
            standalone(&redis.url()),
            tenant("shared", "SHARED_KEY", &policy)
        ),
    );
    let env = [("SHARED_KEY", key.as_str())];
    let a = Gateway::start_with_env(&config, &env).await;
    let b = Gateway::start_with_env(&config, &env).await;

    let results = burst(&[&a, &b], &key, 48, CONCURRENCY, &chat(Some(MAX_TOKENS))).await;
    let admitted = i64::try_from(results.iter().filter(|(s, _)| *s == 200).count()).unwrap();
    for (status, code) in &results {
        assert!(
            *status == 200 || (*status == 429 && code.as_deref() == Some("budget_exceeded")),
            "{results:?}"
        );
    }
    assert!((1..48).contains(&admitted), "admitted {admitted}");
    wait_spent(&a, &key, admitted * REAL_COST_NANO).await;
    let spent = spent_nano(&b, &key).await;
    // SPEC: a budget never overshoots by more than the requests in flight when it ran out.
    let in_flight = i64::try_from(CONCURRENCY).unwrap() * bound;
    assert!(
        spent <= limit + in_flight,
        "spent {spent} > limit {limit} + in flight {in_flight}"
    );
    // Tighter, and what the reservations guarantee: every admitted request reserved its
    // upper bound atomically and cost less than it, so the spend stays within the limit.
    assert!(spent <= limit, "spent {spent} > limit {limit}");

    // No reservation leaked under load: sequentially (each settled before the next), the
    // budget admits until less than one bound is left, on either replica.
    let client = client_with_key(&key);
    let mut spent = spent;
    for i in 0..30 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = post_chat(&client, gw, &chat(Some(MAX_TOKENS))).await;
        if resp.status() == 429 {
            assert_openai_error(&resp.json().await.unwrap(), "budget_exceeded");
            break;
        }
        assert_eq!(resp.status(), 200);
        spent += REAL_COST_NANO;
        wait_spent(gw, &key, spent).await;
    }
    assert!(spent <= limit, "spent {spent} > limit {limit}");
    assert!(
        limit - spent < bound,
        "refused with {} nano-USD left, more than one bound ({bound}): a reservation leaked",
        limit - spent
    );
}

/// `/health` of `gw`.
async fn health(gw: &Gateway) -> Value {
    reqwest::get(gw.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn steady_config(up: &Upstream, redis: &RedisNode) -> String {
    // Limits and a budget that this traffic never reaches, so every request goes through the
    // shared counters (and their per-replica fallback) without being refused. Three serving
    // lanes, whatever the host's cores: lanes that see no traffic through an outage must
    // reconnect too.
    with_lanes(
        3,
        &basic_config(
            up.addr(),
            &format!(
                "{}{PRICING}{}",
                standalone(&redis.url()),
                tenant(
                    "steady",
                    "STEADY_KEY",
                    "limits = { rpm = 100000, tpm = 100000000 }\n\
                 budget = { limit_usd = 1000.0, period = \"day\", mode = \"enforce\" }"
                )
            ),
        ),
    )
}

/// `config` with `workers` serving lanes.
fn with_lanes(workers: usize, config: &str) -> String {
    config.replacen("[server]\n", &format!("[server]\nworkers = {workers}\n"), 1)
}

/// How many clients Redis has connected, not counting the one asking.
async fn redis_clients(redis: &RedisNode) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().count() - 1
}

/// Each serving lane opens its own Redis connection (beside the shared one and the change
/// subscription), so its requests never wait on another thread's connection; every lane
/// serves.
#[tokio::test]
async fn each_serving_lane_has_its_own_redis_connection() {
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    let key = secret("steady");
    let mut connected = Vec::new();
    for workers in [1, 4] {
        let config =
            with_lanes(workers, &steady_config(&up, &redis)).replacen("workers = 3\n", "", 1);
        let gw = Gateway::start_with_env(&config, &[("STEADY_KEY", &key)]).await;
        // Lanes attach before the gateway accepts: the count is final once it answers.
        connected.push(redis_clients(&redis).await);
        // Fresh clients open fresh connections, which the lanes share out between them.
        let answers = futures_util::future::join_all((0..16).map(|_| {
            let client = client_with_key(&key);
            let gw = &gw;
            async move { post_chat(&client, gw, &chat(Some(5))).await.status() }
        }))
        .await;
        assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
        drop(gw);
        eventually(
            Duration::from_secs(5),
            "the gateway's connections close",
            || async { (redis_clients(&redis).await == 0).then_some(()) },
        )
        .await;
    }
    assert_eq!(
        connected[1] - connected[0],
        3,
        "four lanes hold three more connections than one: {connected:?}"
    );
}

/// Redis is killed during traffic and started again on the same port. It runs with an
/// append-only file fsynced on every write, as a Redis holding tenants and keys must: the
/// restarted server still knows the bootstrap tenant and key. (An empty Redis would be a
/// different scenario, the loss of the store's data, in which the tenant is gone by design.)
#[tokio::test]
async fn redis_killed_and_restarted_during_traffic_no_5xx_and_recovery() {
    let mut redis = RedisNode::start_persistent().await;
    let up = Upstream::start().await;
    let key = secret("steady");
    let gw = Gateway::start_with_env(&steady_config(&up, &redis), &[("STEADY_KEY", &key)]).await;
    let client = client_with_key(&key);
    let mut answered = 0_usize;
    let mut send = || {
        answered += 1;
        let n = answered;
        let client = client.clone();
        let gw = &gw;
        async move {
            let resp = post_chat(&client, gw, &chat(Some(20))).await;
            let status = resp.status().as_u16();
            // The limits still apply while Redis is gone (on this replica's counters).
            let limited = resp
                .headers()
                .contains_key("x-ratelimit-remaining-requests");
            let text = resp.text().await.unwrap();
            assert_eq!(status, 200, "request {n}: {text}");
            assert!(limited, "request {n} has no x-ratelimit-* headers");
        }
    };
    for _ in 0..5 {
        send().await;
    }
    eventually(Duration::from_secs(3), "health is ok", || async {
        (health(&gw).await["status"] == "ok").then_some(())
    })
    .await;

    // Down: the known key keeps working (cached), the counters fall back to this replica,
    // health says degraded.
    redis.kill().await;
    let t0 = Instant::now();
    let mut degraded = false;
    while t0.elapsed() < Duration::from_secs(2) || !degraded {
        assert!(
            t0.elapsed() < Duration::from_secs(6),
            "health never reported the store down"
        );
        send().await;
        let h = health(&gw).await;
        if h["checks"]["store"] == "down" {
            assert_eq!(h["status"], "degraded", "{h}");
            degraded = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&gw, "sentinel_store_errors_total", &[]).await > 0);

    // Back: health returns to ok by itself while traffic keeps flowing, no restart.
    redis.restart().await;
    let t0 = Instant::now();
    loop {
        send().await;
        let h = health(&gw).await;
        if h["status"] == "ok" {
            assert_eq!(h["checks"]["store"], "ok");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "health did not recover: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        send().await;
    }

    // Nothing was lost: the records spilled while Redis was down are replayed.
    let total = answered;
    eventually(
        Duration::from_secs(15),
        "spilled records are replayed",
        || async {
            let n = audit(&gw, &key).await.len();
            assert!(n <= total, "{n} records for {total} requests");
            (n == total).then_some(())
        },
    )
    .await;
}

/// Health must not depend on traffic to notice that the store is back: a replica that a
/// readiness probe took out of rotation gets no requests, and would never come back.
#[tokio::test]
async fn health_and_readiness_recover_without_traffic_once_redis_returns() {
    let mut redis = RedisNode::start_persistent().await;
    let up = Upstream::start().await;
    let key = secret("steady-idle");
    let gw = Gateway::start_with_env(&steady_config(&up, &redis), &[("STEADY_KEY", &key)]).await;
    let client = client_with_key(&key);
    assert_eq!(post_chat(&client, &gw, &chat(Some(20))).await.status(), 200);

    redis.kill().await;
    // Limited traffic while down puts the counters on their per-replica fallback.
    eventually(
        Duration::from_secs(5),
        "health reports the store down",
        || async {
            assert_eq!(post_chat(&client, &gw, &chat(Some(20))).await.status(), 200);
            (health(&gw).await["checks"]["store"] == "down").then_some(())
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(post_chat(&client, &gw, &chat(Some(20))).await.status(), 200);
    }

    redis.restart().await;
    // No request from here on until health is ok again.
    let t0 = Instant::now();
    loop {
        let h = health(&gw).await;
        if h["status"] == "ok" && h["checks"]["store"] == "ok" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "health did not recover without traffic within 5 s: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = reqwest::get(gw.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(post_chat(&client, &gw, &chat(Some(20))).await.status(), 200);
}

/// One Redis command's call count since the server started (`INFO commandstats`).
async fn redis_calls(redis: &RedisNode, command: &str) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The sum of every window bucket of `scope` (`tenant:rpm`, `tenant:tpm`), and the
/// reservations of `tenant`'s budget periods, as Redis holds them.
async fn redis_counters(redis: &RedisNode, tenant: &str, scope: &str) -> (i64, i64) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut window = 0;
    let buckets: Vec<String> = redis::cmd("KEYS")
        .arg(format!("sntl:{{{tenant}}}:win:{scope}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for bucket in buckets {
        let n: i64 = redis::cmd("GET")
            .arg(&bucket)
            .query_async(&mut conn)
            .await
            .unwrap();
        window += n;
    }
    let mut reserved = 0;
    let periods: Vec<String> = redis::cmd("KEYS")
        .arg(format!("sntl:{{{tenant}}}:budget:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for period in periods {
        let n: Option<i64> = redis::cmd("HGET")
            .arg(&period)
            .arg("reserved")
            .query_async(&mut conn)
            .await
            .unwrap();
        reserved += n.unwrap_or(0);
    }
    (window, reserved)
}

/// Two replicas with two serving lanes each on `redis`, serving `tenants` (TOML) with the
/// bootstrap key `key` read from its variable.
async fn two_replicas(
    up: &Upstream,
    redis: &RedisNode,
    tenants: &str,
    key: (&str, &str),
) -> (Gateway, Gateway) {
    let config = with_lanes(
        2,
        &basic_config(up.addr(), &format!("{}{tenants}", standalone(&redis.url()))),
    );
    let env = [key];
    (
        Gateway::start_with_env(&config, &env).await,
        Gateway::start_with_env(&config, &env).await,
    )
}

/// A caller busy on a lane is admitted from leases of its limits and budget instead of one
/// store step per request; once the traffic stops, the leases end and give back what they
/// did not use, so the shared counters hold exactly what the requests used.
#[tokio::test]
async fn a_busy_caller_is_admitted_from_leases_and_its_counters_end_exact() {
    const REQUESTS: usize = 400;
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    let key = secret("leased");
    let (a, b) = two_replicas(
        &up,
        &redis,
        &format!(
            "{PRICING}{}",
            tenant(
                "leased",
                "LEASED_KEY",
                "limits = { rpm = 100000, tpm = 100000000 }\n\
                 budget = { limit_usd = 1000.0, period = \"day\", mode = \"enforce\" }"
            )
        ),
        ("LEASED_KEY", &key),
    )
    .await;
    avoid_minute_edge().await;
    // Each admission step on Redis, exact or a lease, reads its windows with one `MGET`.
    let steps_before = redis_calls(&redis, "mget").await;
    let results = burst(&[&a, &b], &key, REQUESTS, 8, &chat(Some(10))).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let steps = redis_calls(&redis, "mget").await - steps_before;
    assert!(
        steps * 4 < REQUESTS as u64,
        "{steps} admission steps on Redis for {REQUESTS} requests: leases were not used"
    );

    let requests = i64::try_from(REQUESTS).unwrap();
    wait_spent(&a, &key, requests * REAL_COST_NANO).await;
    let tokens =
        requests * (crate::limits::MOCK_PROMPT_TOKENS + crate::limits::MOCK_COMPLETION_TOKENS);
    eventually(
        Duration::from_secs(5),
        "the leases end and give back what they did not use",
        || async {
            let (rpm, reserved) = redis_counters(&redis, "leased", "leased:rpm").await;
            let (tpm, _) = redis_counters(&redis, "leased", "leased:tpm").await;
            assert!(rpm >= requests, "{rpm} requests counted for {requests}");
            (rpm == requests && tpm == tokens && reserved == 0).then_some(())
        },
    )
    .await;
    // Nothing else was lost on the way: every request has its audit record.
    assert_eq!(audit(&a, &key).await.len(), REQUESTS);
}

/// With leases in play (rpm 1,024 is large enough to share out), replicas and lanes still
/// never admit past the limit: a lease is counted in Redis before it admits anything, and
/// near the limit every request is checked by Redis alone. Unused leases may refuse a few
/// requests early, never more than they hold.
#[tokio::test]
async fn leases_never_admit_past_a_limit() {
    const RPM: usize = 1_024;
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    let key = secret("lease-edge");
    let (a, b) = two_replicas(
        &up,
        &redis,
        &tenant("edge", "EDGE_KEY", &format!("limits = {{ rpm = {RPM} }}")),
        ("EDGE_KEY", &key),
    )
    .await;
    avoid_minute_edge().await;
    let before = up.mock.control().calls("/v1/chat/completions");
    let steps_before = redis_calls(&redis, "mget").await;
    let results = burst(&[&a, &b], &key, RPM + 100, 8, &chat(None)).await;
    let steps = redis_calls(&redis, "mget").await - steps_before;
    // Up to half the limit, leases admitted part of the requests (else this would test
    // the store alone).
    assert!(
        steps + 100 < (RPM + 100) as u64,
        "{steps} admission steps on Redis for {} requests: leases were not used",
        RPM + 100
    );
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        results
            .iter()
            .all(|(s, c)| *s == 200 || (*s == 429 && c.as_deref() == Some("rate_limit_exceeded"))),
        "{results:?}"
    );
    assert!(admitted <= RPM, "admitted {admitted} with rpm = {RPM}");
    // Two replicas with two lanes each hold at most 4 requests of lease apiece (1/256).
    assert!(
        admitted >= RPM - 16,
        "admitted only {admitted} with rpm = {RPM}"
    );
    assert_eq!(
        up.mock.control().calls("/v1/chat/completions") - before,
        admitted as u64
    );
    let requests = i64::try_from(admitted).unwrap();
    eventually(
        Duration::from_secs(5),
        "unused leases are given back",
        || async {
            let (rpm, _) = redis_counters(&redis, "edge", "edge:rpm").await;
            (rpm == requests).then_some(())
        },
    )
    .await;
}

/// A replica stopped by SIGTERM while its lanes hold leases gives them back on its way out:
/// once it has exited, nothing is reserved in Redis any more and the lease register is empty.
#[tokio::test]
async fn a_replica_stopped_under_load_gives_its_leases_back() {
    let redis = RedisNode::start().await;
    let up = Upstream::start().await;
    let key = secret("lease-stop");
    let (mut a, _idle) = two_replicas(
        &up,
        &redis,
        &format!(
            "{PRICING}{}",
            tenant(
                "stopping",
                "STOPPING_KEY",
                "limits = { rpm = 100000, tpm = 100000000 }\n\
                 budget = { limit_usd = 1000.0, period = \"day\", mode = \"enforce\" }"
            )
        ),
        ("STOPPING_KEY", &key),
    )
    .await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let register = "sntl:{stopping}:leases";

    // Load that outlives the replica: errors once it stops accepting are expected.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = a.url("/v1/chat/completions");
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (stop, url, http) = (Arc::clone(&stop), url.clone(), client_with_key(&key));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = http.post(&url).json(&chat(Some(10))).send().await;
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "a lane holds a lease", || {
        let mut conn = conn.clone();
        async move {
            let held: u64 = redis::cmd("ZCARD")
                .arg(register)
                .query_async(&mut conn)
                .await
                .unwrap();
            (held > 0).then_some(())
        }
    })
    .await;
    a.terminate();
    let status = tokio::time::timeout(Duration::from_secs(30), a.child.wait())
        .await
        .expect("the replica exits")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    assert!(status.success(), "exit status {status:?}");
    let (_, reserved) = redis_counters(&redis, "stopping", "stopping:rpm").await;
    assert_eq!(
        reserved, 0,
        "budget still reserved after the replica stopped"
    );
    let held: u64 = redis::cmd("ZCARD")
        .arg(register)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(held, 0, "leases left in the register");
}
