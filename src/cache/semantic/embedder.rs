//! Sentence embeddings for the semantic cache: all-MiniLM-L6-v2 run in-process with candle.
//!
//! The model files (`model.safetensors`, `tokenizer.json`, `config.json`) are fetched once by
//! `scripts/fetch-model` and loaded from a directory at startup; nothing is downloaded at run
//! time. Inference is synchronous and CPU-bound (about 8 ms for a short prompt), so the cache
//! calls [`Embedder::embed`] from a bounded blocking pool rather than an async worker.

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Maximum sequence length in tokens, including `[CLS]` and `[SEP]`. all-MiniLM-L6-v2 was
/// trained with 128 and sentence-transformers serves it with 256; beyond that the mean-pooled
/// vector drifts and latency grows quadratically in attention.
pub const MAX_TOKENS: usize = 256;

/// Inputs are cut to this many bytes (on a char boundary) before tokenising. The tokenizer
/// only truncates after encoding the whole text, so without this a 1 MB prompt would cost a
/// full tokenisation just to keep 256 tokens. 256 word pieces rarely exceed 4 KiB of text, so
/// 16 KiB leaves a wide margin and only changes the result for inputs that are mostly
/// whitespace.
const MAX_INPUT_BYTES: usize = 16 * 1024;

/// Files that make up a model directory, in the order they are checked.
const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Why a model could not be loaded or a text could not be embedded.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A required model file is absent; run `scripts/fetch-model`.
    #[error("model file {} not found (run scripts/fetch-model)", path.display())]
    MissingFile {
        /// The path that was expected to exist.
        path: PathBuf,
    },
    /// `config.json` could not be read or parsed.
    #[error("cannot read model config {}: {source}", path.display())]
    Config {
        /// Path of the config file.
        path: PathBuf,
        /// The underlying I/O or JSON error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The tokenizer failed to load, configure or encode.
    #[error("tokenizer error: {0}")]
    Tokenizer(#[source] tokenizers::Error),
    /// The model failed to load its weights or to run.
    #[error("model error: {0}")]
    Model(#[from] candle_core::Error),
}

/// Turns text into a fixed-size, L2-normalised vector whose dot product with another
/// embedding from the same model is their cosine similarity.
///
/// Synchronous and CPU-bound: callers run it on a bounded blocking pool.
pub trait Embedder: Send + Sync + fmt::Debug {
    /// Number of dimensions of every vector returned by [`Embedder::embed`].
    fn dims(&self) -> usize;

    /// Embeds one text. The result has [`Embedder::dims`] elements and unit length (or is all
    /// zeros in the degenerate case of a zero vector from the model).
    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError>;
}

// === impl MiniLm ===

/// all-MiniLM-L6-v2 (6-layer BERT, 384 dimensions) with mean pooling over the attention mask
/// and L2 normalisation, matching the sentence-transformers pipeline for this model.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dims: usize,
}

impl MiniLm {
    /// Loads the model from a directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` (as written by `scripts/fetch-model`). The weights are memory-mapped.
    pub fn load(model_dir: &Path) -> Result<Self, EmbedError> {
        // Check every file up front so the error names the missing one, instead of an opaque
        // I/O error from whichever loader happens to run first.
        for name in MODEL_FILES {
            let path = model_dir.join(name);
            if !path.is_file() {
                return Err(EmbedError::MissingFile { path });
            }
        }
        let config_path = model_dir.join("config.json");
        let config: Config = std::fs::read_to_string(&config_path)
            .map_err(|e| EmbedError::Config {
                path: config_path.clone(),
                source: Box::new(e),
            })
            .and_then(|raw| {
                serde_json::from_str(&raw).map_err(|e| EmbedError::Config {
                    path: config_path.clone(),
                    source: Box::new(e),
                })
            })?;

        let mut tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(EmbedError::Tokenizer)?;
        // The shipped tokenizer.json pads every input to 128 tokens and truncates at 128. One
        // text per call needs no padding (it would only add wasted attention work), and the
        // serving length for this model is 256.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(EmbedError::Tokenizer)?;

        let device = Device::Cpu;
        let weights = model_dir.join("model.safetensors");
        // candle's mmap constructor is `unsafe` (the file must not change while mapped) and the
        // crate forbids unsafe code, so the weights are read into memory instead: 90 MB, once,
        // at startup.
        let bytes = std::fs::read(&weights).map_err(|e| EmbedError::Model(e.into()))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)?;
        let model = BertModel::load(vb, &config)?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dims: config.hidden_size,
        })
    }
}

impl fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiniLm")
            .field("dims", &self.dims)
            .field("max_tokens", &MAX_TOKENS)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Embedder for MiniLm {
    fn dims(&self) -> usize {
        self.dims
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let text = truncate_to_char_boundary(text, MAX_INPUT_BYTES);
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(EmbedError::Tokenizer)?;
        let ids = Tensor::new(encoding.get_ids(), &self.device)?.unsqueeze(0)?;
        let type_ids = Tensor::new(encoding.get_type_ids(), &self.device)?.unsqueeze(0)?;
        let mask = Tensor::new(encoding.get_attention_mask(), &self.device)?.unsqueeze(0)?;

        // (1, tokens, hidden)
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over the tokens the mask marks as real. Without padding every mask entry is 1,
        // but pooling through the mask keeps this correct if batching with padding is added.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let count = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
        let pooled = summed.broadcast_div(&count)?;
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f64::INFINITY)?;
        let normalised = pooled.broadcast_div(&norm)?;
        Ok(normalised.squeeze(0)?.to_vec1::<f32>()?)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn truncate_to_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::cosine;
    use super::{truncate_to_char_boundary, EmbedError, Embedder, MiniLm};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    /// Model directory for tests: `SENTINEL_MODEL_DIR` or `models/all-minilm-l6-v2`.
    pub(crate) fn model_dir() -> PathBuf {
        std::env::var_os("SENTINEL_MODEL_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-minilm-l6-v2"),
            PathBuf::from,
        )
    }

    /// One shared model per test binary: loading costs ~100 ms and 90 MB.
    pub(crate) fn model() -> &'static MiniLm {
        static MODEL: OnceLock<MiniLm> = OnceLock::new();
        MODEL.get_or_init(|| MiniLm::load(&model_dir()).expect("run scripts/fetch-model first"))
    }

    fn sim(a: &str, b: &str) -> f32 {
        let m = model();
        cosine(&m.embed(a).unwrap(), &m.embed(b).unwrap())
    }

    #[test]
    fn reproduces_sentence_transformers_reference_similarity() {
        // Reference value from the sentence-transformers documentation for this model.
        let s = sim("A man is eating food.", "A man is eating a piece of bread.");
        assert!((s - 0.755).abs() < 0.01, "cosine {s}");
    }

    #[test]
    fn embeddings_are_unit_length_with_model_dims() {
        let m = model();
        assert_eq!(m.dims(), 384);
        for text in ["", "hi", "How do I reset my password?"] {
            let v = m.embed(text).unwrap();
            assert_eq!(v.len(), 384);
            assert!((cosine(&v, &v) - 1.0).abs() < 1e-4, "{text:?}");
        }
    }

    #[test]
    fn paraphrases_score_above_unrelated_text() {
        let para = sim(
            "How do I reset my password?",
            "What are the steps to change my password?",
        );
        let unrelated = sim(
            "How do I reset my password?",
            "The capital of France is Paris.",
        );
        assert!(para > 0.7, "paraphrase {para}");
        assert!(unrelated < 0.3, "unrelated {unrelated}");
    }

    #[test]
    fn long_input_is_truncated_not_rejected() {
        let long = "word ".repeat(5_000);
        let v = model().embed(&long).unwrap();
        assert_eq!(v.len(), 384);
        let multibyte = "é".repeat(20_000);
        assert_eq!(model().embed(&multibyte).unwrap().len(), 384);
    }

    #[test]
    fn embedding_is_deterministic() {
        let m = model();
        assert_eq!(m.embed("same text").unwrap(), m.embed("same text").unwrap());
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let dir = std::env::temp_dir().join(format!("semantic-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let err = MiniLm::load(&dir).unwrap_err();
        assert!(
            matches!(&err, EmbedError::MissingFile { path } if path.ends_with("tokenizer.json")),
            "{err}"
        );
        assert!(err.to_string().contains("tokenizer.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_to_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_to_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_to_char_boundary("abc", 10), "abc");
    }
}
