//! Unit tests of the evaluation arithmetic (fake embedder), a sanity check of the shipped
//! evaluation set, and the ignored `eval_report` that prints the threshold sweep.

use std::path::{Path, PathBuf};

use super::super::embedder::{EmbedError, Embedder};
use super::super::guard::{check, Mismatch};
use super::super::{compatible, DEFAULT_THRESHOLD};
use super::{choose, evaluate, format_table, sweep, thresholds, EvalSet};

fn verdict(a: &str, b: &str) -> &'static str {
    check(a, b).map_or_else(Mismatch::as_str, |()| "ok")
}

/// Embeds by looking the text up in a table of 2-d unit vectors.
#[derive(Debug)]
struct Table(Vec<(&'static str, [f32; 2])>);

impl Embedder for Table {
    fn dims(&self) -> usize {
        2
    }
    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .0
            .iter()
            .find(|(t, _)| *t == text)
            .map_or(vec![0.0, 0.0], |(_, v)| v.to_vec()))
    }
}

fn unit(deg: f32) -> [f32; 2] {
    let r = deg.to_radians();
    [r.cos(), r.sin()]
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn hit_requires_threshold_and_guard() {
    // cos(25.8°) ≈ 0.90, cos(0°) = 1.
    let emb = Table(vec![
        ("reset my password", unit(0.0)),
        ("how to reset my password", unit(25.8)),
        ("what is 2+2", unit(0.0)),
        ("what is 2+3", unit(0.0)),
        ("bake bread", unit(90.0)),
    ]);
    let set = EvalSet {
        paraphrases: vec![
            pair("reset my password", "how to reset my password"),
            pair("reset my password", "bake bread"),
        ],
        near_misses: vec![pair("what is 2+2", "what is 2+3")],
    };
    let r = evaluate(&emb, &set, 0.85).unwrap();
    assert_eq!((r.hits, r.false_hits, r.guard_saved), (1, 0, 1));
    assert!((r.hit_rate - 0.5).abs() < 1e-6);
    assert!(r.false_hit_rate.abs() < 1e-6);
    let r = evaluate(&emb, &set, 0.95).unwrap();
    assert_eq!(r.hits, 0);
}

#[test]
fn sweep_covers_070_to_098_inclusive() {
    let t: Vec<f32> = thresholds().collect();
    assert_eq!(t.len(), 29);
    assert!((t[0] - 0.70).abs() < 1e-6 && (t[28] - 0.98).abs() < 1e-6);
    let emb = Table(vec![]);
    let set = EvalSet {
        paraphrases: vec![],
        near_misses: vec![],
    };
    let table = sweep(&emb, &set).unwrap();
    assert_eq!(table.len(), 29);
    assert!(format_table(&table).lines().count() == 30);
}

#[test]
fn choose_prefers_most_hits_within_false_hit_budget() {
    let emb = Table(vec![
        ("fix the bug", unit(0.0)),
        ("fix the bug quickly", unit(30.0)),
        ("open the door", unit(0.0)),
        ("open the door now", unit(20.0)),
    ]);
    // Paraphrase at cos 0.866; near miss at cos 0.9397 that the guard cannot tell apart.
    let set = EvalSet {
        paraphrases: vec![pair("fix the bug", "fix the bug quickly")],
        near_misses: vec![pair("open the door", "open the door now")],
    };
    let table = sweep(&emb, &set).unwrap();
    let best = choose(&table).unwrap();
    // Up to 0.93 the near miss hits; from 0.94 nothing hits at all, and the lowest such
    // threshold is reported.
    assert_eq!(best.false_hits, 0);
    assert!((best.threshold - 0.94).abs() < 1e-6, "{best:?}");
}

fn data_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/semantic_eval.json")
}

#[test]
fn shipped_eval_set_is_well_formed() {
    let set = EvalSet::load(&data_path()).unwrap();
    assert!(set.paraphrases.len() >= 100, "{}", set.paraphrases.len());
    assert!(set.near_misses.len() >= 100, "{}", set.near_misses.len());
    let mut seen = std::collections::HashSet::new();
    for (a, b) in set.paraphrases.iter().chain(&set.near_misses) {
        assert_ne!(a, b);
        assert!(!a.trim().is_empty() && !b.trim().is_empty());
        assert!(
            seen.insert((a.clone(), b.clone())),
            "duplicate pair {a:?} / {b:?}"
        );
    }
}

/// Loads the real model and the shipped set once; shared by the tests below.
fn real_sweep() -> Vec<super::EvalReport> {
    let set = EvalSet::load(&data_path()).unwrap();
    let model = super::super::embedder::tests::model();
    sweep(model, &set).unwrap()
}

#[test]
fn default_threshold_meets_the_false_hit_target() {
    let table = real_sweep();
    let at_default = table
        .iter()
        .find(|r| (r.threshold - DEFAULT_THRESHOLD).abs() < 1e-6)
        .unwrap();
    assert!(
        at_default.false_hit_rate <= super::MAX_FALSE_HIT_RATE,
        "{at_default:?}"
    );
    assert!(at_default.hit_rate >= 0.70, "{at_default:?}");
}

/// Prints the sweep, the chosen threshold and the pairs it gets wrong:
/// `cargo test -- --ignored eval_report --nocapture`.
#[test]
#[ignore = "prints a report; run on demand"]
fn eval_report() {
    print_report(&data_path());
}

/// The same report for a held-out set written after the guard was tuned on the main set, to
/// show how much of the result is fitted: `cargo test -- --ignored holdout_report --nocapture`.
#[test]
#[ignore = "prints a report; run on demand"]
fn holdout_report() {
    print_report(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/semantic_holdout.json"));
}

fn print_report(path: &Path) {
    let set = EvalSet::load(path).unwrap();
    let model = super::super::embedder::tests::model();
    let table = sweep(model, &set).unwrap();
    println!(
        "{} paraphrases, {} near misses",
        set.paraphrases.len(),
        set.near_misses.len()
    );
    println!(
        "guard rejects {} of {} paraphrases outright",
        table[0].guard_rejected_paraphrases, table[0].paraphrases
    );
    print!("{}", format_table(&table));
    println!(
        "chosen by rule (most hits within the false-hit budget): {:?}",
        choose(&table)
    );
    let threshold = DEFAULT_THRESHOLD;
    let sim =
        |a: &str, b: &str| super::super::cosine(&model.embed(a).unwrap(), &model.embed(b).unwrap());
    println!("\n-- paraphrases missed at the default {threshold:.2} --");
    for (a, b) in &set.paraphrases {
        let s = sim(a, b);
        if s < threshold || !compatible(a, b) {
            println!("{s:.3} guard={:<12} {a:?} | {b:?}", verdict(a, b));
        }
    }
    println!("\n-- near misses at or above {SHOW_NEAR_MISSES_FROM:.2} (guard verdict) --");
    for (a, b) in &set.near_misses {
        let s = sim(a, b);
        if s >= SHOW_NEAR_MISSES_FROM {
            println!("{s:.3} guard={:<12} {a:?} | {b:?}", verdict(a, b));
        }
    }
}

/// Near misses above this similarity are listed with the guard's verdict.
const SHOW_NEAR_MISSES_FROM: f32 = 0.80;
