//! Token counting benchmark (run: `cargo bench --bench tokens`).
//!
//! Sentinel's counter against tiktoken-rs's `encode_ordinary`, whose counts it matches, in the
//! same process: time per count for a short chat message, a paragraph, a long document and
//! code, and the time the first count takes to build the encoding. (What the tables cost in
//! memory shows in the gateway's RSS, `scripts/bench`: this process runs on the system
//! allocator, the gateway on mimalloc.)
//!
//! Prints a Markdown table; figures go to BENCHMARKS.md.

#![expect(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use sentinel::tokens::Tokenizer;

const PARAGRAPH: &str = "The gateway counts a prompt's tokens before it calls the upstream, \
    because a tenant's token limits and budget are reserved up front. It's a hot path: every \
    request with a token limit pays it, so the counter must be fast on short messages and must \
    not fall over on long ones (a pasted log, a whole file, 10,000 spaces). Counts must equal \
    OpenAI's, or a budget drifts by a few percent a month.\n\n";

const CODE: &str = "fn main() {\n    let xs: Vec<u64> = (0..1_000).map(|x| x * x).collect();\n    \
    println!(\"{}\", xs.iter().sum::<u64>());\n}\n";

/// Mean time per call of `count` over about `budget` of calls.
fn time_per_call(budget: Duration, mut count: impl FnMut() -> usize) -> Duration {
    let mut calls = 0_u32;
    let start = Instant::now();
    while start.elapsed() < budget {
        black_box(count());
        calls += 1;
    }
    start.elapsed() / calls
}

fn main() {
    let inputs = [
        (
            "chat message (52 B)",
            "Say hello to the benchmark, request 630788997-1-123.".to_owned(),
        ),
        ("paragraph (455 B)", PARAGRAPH.to_owned()),
        ("document (46 KB)", PARAGRAPH.repeat(100)),
        ("code (124 B)", CODE.to_owned()),
    ];

    // Ready to count: Sentinel compiles its split automaton (its rank table is compiled into
    // the binary); tiktoken-rs parses its embedded table and compiles its regex.
    let started = Instant::now();
    let sentinel = Tokenizer::new(Vec::new());
    sentinel.count_text("gpt-4o", "warm");
    let ours = started.elapsed();
    let started = Instant::now();
    let tiktoken = tiktoken_rs::o200k_base().unwrap();
    tiktoken.encode_ordinary("warm");
    let theirs = started.elapsed();
    println!(
        "first count, building the encoding: Sentinel {:.1} ms, tiktoken-rs {:.1} ms\n",
        ours.as_secs_f64() * 1e3,
        theirs.as_secs_f64() * 1e3
    );

    println!("| o200k_base | Sentinel | tiktoken-rs | ratio |");
    println!("|---|---|---|---|");
    for (name, text) in &inputs {
        let ours = sentinel.count_text("gpt-4o", text);
        let theirs = tiktoken.encode_ordinary(text).len() as u64;
        assert_eq!(ours, theirs, "{name}: counts differ");
        let budget = Duration::from_millis(700);
        let ours = time_per_call(budget, || {
            usize::try_from(sentinel.count_text("gpt-4o", black_box(text))).unwrap()
        });
        let theirs = time_per_call(budget, || tiktoken.encode_ordinary(black_box(text)).len());
        println!(
            "| {name} | {:.2} µs | {:.2} µs | {:.1}× faster |",
            ours.as_secs_f64() * 1e6,
            theirs.as_secs_f64() * 1e6,
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
