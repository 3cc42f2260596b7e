//! Offline evaluation of the semantic cache's hit decision, used to choose the threshold.
//!
//! A pair "hits" when the cosine similarity of its embeddings is at least the threshold
//! **and** [`compatible`] accepts it, exactly the rule the cache applies. The evaluation set
//! (`tests/data/semantic_eval.json`) holds paraphrase pairs that should hit and near-miss
//! pairs (same wording, different number, entity, negation or direction) that must not.
//! Embeddings are computed once per distinct sentence, so a sweep over thresholds costs one
//! pass of the model.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::embedder::{EmbedError, Embedder};
use super::{compatible, cosine};

/// First threshold of [`sweep`].
pub const SWEEP_START: f32 = 0.70;
/// Last threshold of [`sweep`] (inclusive).
pub const SWEEP_END: f32 = 0.98;
/// Step between thresholds in [`sweep`].
pub const SWEEP_STEP: f32 = 0.01;

/// Target for choosing a threshold: at most this share of near misses may hit.
pub const MAX_FALSE_HIT_RATE: f32 = 0.01;

/// Labelled prompt pairs, as stored in `tests/data/semantic_eval.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSet {
    /// Pairs that ask the same thing and should share a cached answer.
    pub paraphrases: Vec<(String, String)>,
    /// Pairs that look alike but need different answers.
    pub near_misses: Vec<(String, String)>,
}

/// Why an evaluation set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be read.
    #[error("cannot read evaluation set: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid evaluation set.
    #[error("invalid evaluation set: {0}")]
    Json(#[from] serde_json::Error),
    /// Embedding a sentence failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

impl EvalSet {
    /// Reads a set from a JSON file `{"paraphrases": [[a, b], ...], "near_misses": [...]}`.
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}

/// Outcome of the hit rule at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// The cosine threshold evaluated.
    pub threshold: f32,
    /// Share of paraphrase pairs that hit (higher is better).
    pub hit_rate: f32,
    /// Share of near-miss pairs that hit (must stay near zero).
    pub false_hit_rate: f32,
    /// Paraphrase pairs that hit.
    pub hits: usize,
    /// Near-miss pairs that hit.
    pub false_hits: usize,
    /// Paraphrase pairs the guard alone rejected (lost regardless of threshold).
    pub guard_rejected_paraphrases: usize,
    /// Near-miss pairs at or above the threshold that only the guard stopped.
    pub guard_saved: usize,
    /// Number of paraphrase pairs.
    pub paraphrases: usize,
    /// Number of near-miss pairs.
    pub near_misses: usize,
}

/// A pair scored once: its similarity and the guard's verdict.
#[derive(Debug, Clone, Copy)]
struct Scored {
    similarity: f32,
    compatible: bool,
}

/// Both halves of a set, scored.
#[derive(Debug)]
struct ScoredSet {
    paraphrases: Vec<Scored>,
    near_misses: Vec<Scored>,
}

/// Evaluates the hit rule at one threshold.
pub fn evaluate(
    embedder: &dyn Embedder,
    set: &EvalSet,
    threshold: f32,
) -> Result<EvalReport, EvalError> {
    Ok(score(embedder, set)?.report(threshold))
}

/// Evaluates every threshold from [`SWEEP_START`] to [`SWEEP_END`] in steps of
/// [`SWEEP_STEP`], embedding each sentence once.
pub fn sweep(embedder: &dyn Embedder, set: &EvalSet) -> Result<Vec<EvalReport>, EvalError> {
    let scored = score(embedder, set)?;
    Ok(thresholds().map(|t| scored.report(t)).collect())
}

/// The lowest threshold whose false-hit rate is within [`MAX_FALSE_HIT_RATE`] (and so the
/// one with the most hits among those), or `None` if no threshold in the table qualifies.
pub fn choose(table: &[EvalReport]) -> Option<EvalReport> {
    table
        .iter()
        .filter(|r| r.false_hit_rate <= MAX_FALSE_HIT_RATE)
        .max_by(|a, b| {
            a.hits
                .cmp(&b.hits)
                .then(b.threshold.total_cmp(&a.threshold))
        })
        .copied()
}

/// Renders a sweep as a compact text table.
pub fn format_table(table: &[EvalReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("thresh  hit%   false%  hits  false  guard_saved\n");
    for r in table {
        let _ = writeln!(
            out,
            "{:.2}   {:5.1}  {:5.1}   {:4}  {:5}  {:5}",
            r.threshold,
            r.hit_rate * 100.0,
            r.false_hit_rate * 100.0,
            r.hits,
            r.false_hits,
            r.guard_saved,
        );
    }
    out
}

fn thresholds() -> impl Iterator<Item = f32> {
    // Integer steps avoid accumulating float error (0.70 + 28 * 0.01 must land on 0.98).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small positive step count"
    )]
    let steps = ((SWEEP_END - SWEEP_START) / SWEEP_STEP).round() as u32;
    #[expect(clippy::cast_precision_loss, reason = "step index below 100")]
    (0..=steps).map(|k| ((SWEEP_START + k as f32 * SWEEP_STEP) * 100.0).round() / 100.0)
}

fn score(embedder: &dyn Embedder, set: &EvalSet) -> Result<ScoredSet, EvalError> {
    let mut cache: HashMap<&str, Vec<f32>> = HashMap::new();
    let all = set.paraphrases.iter().chain(&set.near_misses);
    for (a, b) in all {
        for s in [a.as_str(), b.as_str()] {
            if !cache.contains_key(s) {
                cache.insert(s, embedder.embed(s)?);
            }
        }
    }
    let pair = |(a, b): &(String, String)| Scored {
        similarity: cosine(&cache[a.as_str()], &cache[b.as_str()]),
        compatible: compatible(a, b),
    };
    Ok(ScoredSet {
        paraphrases: set.paraphrases.iter().map(pair).collect(),
        near_misses: set.near_misses.iter().map(pair).collect(),
    })
}

impl ScoredSet {
    fn report(&self, threshold: f32) -> EvalReport {
        let hit = |s: &Scored| s.similarity >= threshold && s.compatible;
        let hits = self.paraphrases.iter().filter(|s| hit(s)).count();
        let false_hits = self.near_misses.iter().filter(|s| hit(s)).count();
        EvalReport {
            threshold,
            hit_rate: rate(hits, self.paraphrases.len()),
            false_hit_rate: rate(false_hits, self.near_misses.len()),
            hits,
            false_hits,
            guard_rejected_paraphrases: self.paraphrases.iter().filter(|s| !s.compatible).count(),
            guard_saved: self
                .near_misses
                .iter()
                .filter(|s| s.similarity >= threshold && !s.compatible)
                .count(),
            paraphrases: self.paraphrases.len(),
            near_misses: self.near_misses.len(),
        }
    }
}

#[expect(clippy::cast_precision_loss, reason = "pair counts are far below 2^24")]
fn rate(n: usize, of: usize) -> f32 {
    if of == 0 {
        0.0
    } else {
        n as f32 / of as f32
    }
}

#[cfg(test)]
mod tests;
