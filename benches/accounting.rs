//! Accounting benchmarks (run: `cargo bench --bench accounting`; needs `redis-server`).
//!
//! 1. `/v1/usage` over a month of rollups: the store read plus the aggregation the handler
//!    does, for a tenant with 31 days × 10 models × 20 keys of rollup cells (the size of the
//!    answer depends on cells, not on how many requests they count), on both stores.
//!    Target: p99 ≤ 20 ms.
//! 2. Audit throughput to Redis: sealed outcomes written in the writer's batches (512),
//!    one batch at a time as the single writer does. Target: ≥ 20,000 records/s.
//!
//! Prints a Markdown table; figures go to BENCHMARKS.md.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "benchmark harness"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sentinel::api::usage::{compute, GroupBy};
use sentinel::audit::record::{day_of, now_ms, rfc3339_ms, AuditRecord, GENESIS};
use sentinel::store::embedded::EmbeddedStore;
use sentinel::store::redis::{RedisStore, RedisTarget};
use sentinel::store::{Outcome, Settlement, Store};

const DAYS: u64 = 31;
const MODELS: u64 = 10;
const KEYS: u64 = 20;
const QUERIES: usize = 300;

fn record(tenant: &str, id: u64, ts_ms: u64, model: u64, key: u64) -> AuditRecord {
    AuditRecord {
        request_id: format!("bench-{id}"),
        timestamp: rfc3339_ms(ts_ms),
        ts_ms,
        tenant: tenant.into(),
        key_id: format!("key_{key:04}"),
        endpoint: "/v1/chat/completions".into(),
        model: format!("model-{model}"),
        provider: "mock".into(),
        status: 200,
        stream: false,
        latency_ms: 12.5,
        ttft_ms: None,
        prompt_tokens: 120,
        cached_tokens: 0,
        completion_tokens: 40,
        reasoning_tokens: 0,
        tokens_estimated: false,
        cost_usd: 0.000_2,
        cost_unknown: false,
        cost_saved_usd: 0.0,
        cache: "miss".into(),
        overhead_ms: 0.1,
        judge: None,
        shield: Vec::new(),
        violations: Vec::new(),
        tags: std::collections::BTreeMap::new(),
        error: None,
        request_body: None,
        response_body: None,
        chain: String::new(),
        seq: 0,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn sealed(records: Vec<AuditRecord>, chain: &str) -> Vec<Outcome> {
    let mut prev = GENESIS.to_owned();
    records
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.seal(chain, i as u64 + 1, &prev);
            prev.clone_from(&r.hash);
            Outcome {
                record: r,
                cost_nano: 200_000,
                saved_nano: 0,
                settle: Settlement::default(),
            }
        })
        .collect()
}

/// One rollup cell per (day, model, key) of the last 31 days.
async fn fill_month(store: &dyn Store, tenant: &str) -> (String, String) {
    let day = 86_400_000;
    let start = now_ms() / day * day - (DAYS - 1) * day;
    let mut records = Vec::new();
    let mut id = 0;
    for d in 0..DAYS {
        for m in 0..MODELS {
            for k in 0..KEYS {
                id += 1;
                records.push(record(tenant, id, start + d * day + id, m, k));
            }
        }
    }
    for chunk in sealed(records, "w-fill").chunks(512) {
        store.record_outcomes(chunk).await.unwrap();
    }
    (day_of(start), day_of(start + (DAYS - 1) * day))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn usage_bench(name: &str, store: &dyn Store) -> String {
    let (start, end) = fill_month(store, "usage-t").await;
    let mut times = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES {
        let group = [
            Some(GroupBy::Model),
            Some(GroupBy::Day),
            Some(GroupBy::Key),
            None,
        ][i % 4];
        let t = Instant::now();
        let report = compute(store, "usage-t", &start, &end, group)
            .await
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(report.totals.requests, DAYS * MODELS * KEYS);
    }
    times.sort();
    format!(
        "| /v1/usage, a month ({} cells), {name} | p50 {:.2} ms | p99 {:.2} ms | ≤ 20 ms p99 |",
        DAYS * MODELS * KEYS,
        pct(&times, 0.5),
        pct(&times, 0.99)
    )
}

async fn audit_bench(store: &dyn Store) -> String {
    let total: u64 = 100_000;
    let now = now_ms();
    // Ten tenants, as a gateway's writer sees them.
    let records: Vec<AuditRecord> = (0..total)
        .map(|i| {
            let mut r = record(
                &format!("tp-{}", i % 10),
                i,
                now + i / 100,
                i % MODELS,
                i % KEYS,
            );
            r.request_id = format!("tp-{i}");
            r
        })
        .collect();
    let outcomes = sealed(records, "w-throughput");
    let t = Instant::now();
    for chunk in outcomes.chunks(sentinel::audit::writer::BATCH) {
        store.record_outcomes(chunk).await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    format!(
        "| audit writes to Redis, batches of {} | {:.0} records/s | {:.2} s for {total} | ≥ 20,000/s |",
        sentinel::audit::writer::BATCH,
        total as f64 / secs,
        secs
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut redis_store = None;
    for _ in 0..100 {
        if let Ok(s) =
            RedisStore::connect(RedisTarget::Standalone(url.clone()), Duration::from_secs(2)).await
        {
            redis_store = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let redis_store: Arc<dyn Store> = Arc::new(redis_store.expect("redis answers"));
    let embedded: Arc<dyn Store> = Arc::new(
        EmbeddedStore::open(&dir.path().join("bench.db"))
            .await
            .unwrap(),
    );

    println!("| benchmark | figure | detail | target |\n|---|---|---|---|");
    println!(
        "{}",
        usage_bench("embedded (SQLite)", embedded.as_ref()).await
    );
    println!("{}", usage_bench("Redis", redis_store.as_ref()).await);
    println!("{}", audit_bench(redis_store.as_ref()).await);
    let _ = redis.kill();
    let _ = redis.wait();
}
