//! Shield scan cost on a realistic 4 kB prompt with every rule enabled.
//!
//! Plain `Instant` loop (no criterion, to keep the build lean): each run scans a batch of
//! pre-cloned requests, so the clone is not timed; the figure is the median ns per scan over
//! several runs. Run with `cargo bench --bench shield`.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![expect(clippy::unwrap_used, reason = "benchmark set-up on constant inputs")]

use std::hint::black_box;
use std::time::Instant;

use sentinel::openai::chat::ChatRequest;
use sentinel::shield::{Action, Shield, ShieldPolicy};

/// Scans per timed run, and the number of runs whose median is reported.
const BATCH: u32 = 500;
const RUNS: usize = 11;

const PARAGRAPH: &str = "Our quarterly review covers the migration of the billing service to the \
new cluster, the changes to the onboarding flow, and the open questions from the last planning \
meeting. The team agreed to follow the instructions in the runbook when rolling back, and to keep \
the old endpoints alive for two more weeks so that partners have time to update their clients. \
Latency improved by about 18% after the cache change, although the p99 is still above target on \
Mondays when the batch jobs run. ";

fn prompt() -> String {
    let mut text = String::with_capacity(4200);
    let mut i = 0;
    while text.len() < 4000 {
        text.push_str(PARAGRAPH);
        match i {
            1 => text.push_str("If anything breaks, write to jane.doe@example.com. "),
            3 => text.push_str("Her phone is +44 20 7946 0958 during office hours. "),
            _ => {}
        }
        i += 1;
    }
    text
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let shield = Shield::new();
    let policy = shield
        .compile(&ShieldPolicy {
            pii: Some(Action::Redact),
            injection: Some(Action::Block),
            injection_threshold: 0.5,
            deny_terms: vec!["project falcon".into(), "confidential merger".into()],
            responses: true,
        })
        .unwrap();
    let text = prompt();
    let req: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for the operations team."},
            {"role": "user", "content": text},
        ]
    }))
    .unwrap();

    // Sanity: both PII items are found and redacted, nothing blocks.
    let mut probe = req.clone();
    let verdict = shield.scan_request(&policy, &mut probe);
    assert!(verdict.redacted && verdict.blocked_by.is_none());
    assert_eq!(verdict.findings.len(), 2);

    let mut request_ns = Vec::with_capacity(RUNS);
    let mut text_ns = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut batch = vec![req.clone(); BATCH as usize];
        let start = Instant::now();
        for r in &mut batch {
            black_box(shield.scan_request(&policy, black_box(r)));
        }
        request_ns.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH));

        let mut texts = vec![text.clone(); BATCH as usize];
        let start = Instant::now();
        for t in &mut texts {
            black_box(shield.scan_text(&policy, black_box(t)));
        }
        text_ns.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH));
    }
    println!(
        "prompt: {} bytes; all rules on (pii=redact, injection=block, 2 deny terms)",
        text.len()
    );
    println!(
        "scan_request: median {:.1} us/op over {RUNS} runs of {BATCH}",
        median(request_ns) / 1000.0
    );
    println!(
        "scan_text (pii only): median {:.1} us/op over {RUNS} runs of {BATCH}",
        median(text_ns) / 1000.0
    );
}
