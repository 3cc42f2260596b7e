//! The load generator `scripts/bench` drives for what `wrk` cannot measure:
//!
//! - `open URL RATE SECONDS`: an **open-loop** run. Request *i* is due at `start + i / RATE`
//!   whether or not earlier ones have answered, and its latency is measured from that due time
//!   (not from when it was sent), so a stalled server is charged for the requests queued
//!   behind the stall (no coordinated omission, as in wrk2).
//! - `ttfb URL COUNT`: time to the first body byte of a streamed answer, one request at a time.
//!
//! Both print one JSON line. Options come from the environment so the command line stays
//! positional: `LOADGEN_BODY` (request JSON; every `{n}` becomes a per-request counter, to
//! defeat caches), `LOADGEN_AUTH` (bearer token), `LOADGEN_TIMEOUT_MS` (default 10000).
//!
//! Run: `cargo build --release --bench loadgen`, then the built binary (see `scripts/bench`).

#![expect(
    clippy::disallowed_methods,
    clippy::print_stdout,
    reason = "a standalone load generator: its requests are fire-and-forget tasks by design, \
              its result goes to stdout and its exit code reports bad arguments"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Target {
    client: HttpClient,
    uri: hyper::Uri,
    body: String,
    auth: Option<String>,
    timeout: Duration,
    counter: AtomicU64,
}

impl Target {
    fn from_env(url: &str) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector);
        let timeout_ms = std::env::var("LOADGEN_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        Ok(Self {
            client,
            uri: url.parse().map_err(|e| format!("url `{url}`: {e}"))?,
            body: std::env::var("LOADGEN_BODY").map_err(|_| "LOADGEN_BODY is not set")?,
            auth: std::env::var("LOADGEN_AUTH").ok(),
            timeout: Duration::from_millis(timeout_ms),
            counter: AtomicU64::new(0),
        })
    }

    fn request(&self) -> Result<hyper::Request<Full<Bytes>>, String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let body = self.body.replace("{n}", &n.to_string());
        let mut builder =
            hyper::Request::post(self.uri.clone()).header("content-type", "application/json");
        if let Some(auth) = &self.auth {
            builder = builder.header("authorization", format!("Bearer {auth}"));
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())
    }

    /// Sends one request and reads the whole answer; `Ok(status)` or the failure.
    async fn send(&self) -> Result<u16, String> {
        let req = self.request()?;
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(status)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| "timeout".to_owned())?
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short vector"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counts far below 2^52"
)]
async fn open_loop(target: Arc<Target>, rate: f64, seconds: f64) -> serde_json::Value {
    let total = (rate * seconds).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(50);
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let (target, tx) = (Arc::clone(&target), tx.clone());
        tokio::spawn(async move {
            let result = target.send().await;
            // Measured from the due time: a late send is the server's delay too.
            let _ = tx.send((due.elapsed().as_secs_f64() * 1e3, result));
        });
    }
    drop(tx);
    let sent_for = start.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let (mut ok, mut non_2xx, mut failed) = (0_u64, 0_u64, 0_u64);
    while let Some((ms, result)) = rx.recv().await {
        match result {
            Ok(s) if (200..300).contains(&s) => ok += 1,
            Ok(_) => non_2xx += 1,
            Err(_) => failed += 1,
        }
        latencies.push(ms);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    serde_json::json!({
        "mode": "open", "rate": rate, "seconds": seconds, "requests": total,
        "ok": ok, "non_2xx": non_2xx, "failed": failed,
        "achieved_rps": ok as f64 / elapsed.max(sent_for),
        "p50_ms": percentile(&latencies, 0.50), "p90_ms": percentile(&latencies, 0.90),
        "p99_ms": percentile(&latencies, 0.99), "p999_ms": percentile(&latencies, 0.999),
        "max_ms": latencies.last().copied().unwrap_or(f64::NAN),
    })
}

async fn ttfb(target: Arc<Target>, count: u32) -> Result<serde_json::Value, String> {
    let mut firsts = Vec::new();
    let mut totals = Vec::new();
    for _ in 0..count {
        let req = target.request()?;
        let t0 = Instant::now();
        let resp = target
            .client
            .request(req)
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut first = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                first = Some(t0.elapsed());
            }
        }
        let first = first.ok_or("an empty stream")?;
        firsts.push(first.as_secs_f64() * 1e3);
        totals.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    firsts.sort_by(f64::total_cmp);
    totals.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "mode": "ttfb", "requests": count,
        "ttfb_p50_ms": percentile(&firsts, 0.5), "ttfb_p99_ms": percentile(&firsts, 0.99),
        "total_p50_ms": percentile(&totals, 0.5),
    }))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = || -> Result<serde_json::Value, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let number = |i: usize, what: &str| -> Result<f64, String> {
            args.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("missing or bad {what}"))
        };
        match args.first().map(String::as_str) {
            Some("open") => {
                let target = Arc::new(Target::from_env(args.get(1).ok_or("missing URL")?)?);
                let (rate, seconds) = (number(2, "RATE")?, number(3, "SECONDS")?);
                if rate <= 0.0 || seconds <= 0.0 {
                    return Err("RATE and SECONDS must be positive".into());
                }
                Ok(runtime.block_on(open_loop(target, rate, seconds)))
            }
            Some("ttfb") => {
                let target = Arc::new(Target::from_env(args.get(1).ok_or("missing URL")?)?);
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a small request count"
                )]
                let count = number(2, "COUNT")? as u32;
                runtime.block_on(ttfb(target, count))
            }
            // `cargo bench` runs every bench target with `--bench`: nothing to do here.
            _ if args.iter().any(|a| a == "--bench") => Ok(serde_json::json!({"skipped": true})),
            _ => Err("usage: loadgen open URL RATE SECONDS | loadgen ttfb URL COUNT".into()),
        }
    };
    match run() {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
}
