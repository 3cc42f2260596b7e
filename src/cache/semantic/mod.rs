//! Semantic cache building blocks: a local sentence embedder, a lexical false-hit guard and
//! the offline evaluation that picks the similarity threshold.
//!
//! The semantic cache sits behind the exact cache in the request path: when an exact lookup
//! misses, the prompt is embedded ([`embedder::MiniLm`], all-MiniLM-L6-v2 on the CPU), the
//! nearest cached prompt is found by brute-force [`cosine`], and its answer is reused only if
//! the similarity clears the configured threshold **and** [`guard::compatible`] agrees that
//! the two prompts ask for the same numbers, entities, polarity and direction. Embeddings
//! are blind to exactly those details ("2+2" and "2+3" score about 0.9), so the guard is
//! what keeps a semantic hit from returning a wrong answer.
//!
//! [`eval`] measures both together on `tests/data/semantic_eval.json` and sweeps the
//! threshold; [`DEFAULT_THRESHOLD`] is the value chosen from that sweep.
//!
//! Embedding is synchronous CPU work (about 8 ms for a short prompt), so callers run it on a
//! bounded blocking pool, never on an async worker.

pub mod embedder;
pub mod eval;
pub mod guard;

pub use embedder::{EmbedError, Embedder, MiniLm};
pub use guard::{check, compatible, Mismatch};

/// Default cosine-similarity threshold for a semantic hit, chosen from [`eval::sweep`] over
/// `tests/data/semantic_eval.json` (109 paraphrases, 115 near misses): 86.2 % of paraphrases
/// hit and 0 % of near misses. Hits are flat (86–88 %) from 0.70 to 0.82 because the guard,
/// not the threshold, rejects the near misses; 0.80 sits inside that plateau rather than at
/// its lower edge, so the embedding still turns away loosely related prompts on which the
/// guard has no opinion.
/// A held-out set written after the guard was tuned gives 80 % hits and 1 of 30 false hits
/// ("good" vs "bad") at this value.
pub const DEFAULT_THRESHOLD: f32 = 0.80;

/// Cosine similarity of two L2-normalised vectors, i.e. their dot product.
///
/// Vectors of different lengths are compared over the shorter prefix; callers only ever
/// compare embeddings from one model, so that case indicates a bug rather than data.
///
/// Eight independent accumulators let LLVM keep the loop in SIMD registers: a single running
/// sum is a serial dependency chain that it may not reassociate (no fast-math in Rust), which
/// makes the naive `zip().map().sum()` about three times slower on a 100k-entry scan.
/// Plain `+=` rather than `mul_add`: without `target-feature=+fma` (the portable default),
/// `mul_add` becomes a libm call per element and defeats vectorisation.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0_f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (x, y) in tail_a.iter().zip(tail_b) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_matches_naive_dot_product() {
        for len in [0, 1, 7, 8, 9, 384, 385] {
            #[expect(clippy::cast_precision_loss, reason = "small test indices")]
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            #[expect(clippy::cast_precision_loss, reason = "small test indices")]
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((cosine(&a, &b) - naive).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn cosine_of_unit_vector_with_itself_is_one() {
        let v = vec![1.0 / 384_f32.sqrt(); 384];
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn cosine_uses_shorter_prefix() {
        assert!((cosine(&[1.0, 2.0, 3.0], &[1.0, 1.0]) - 3.0).abs() < 1e-6);
    }
}
