//! `POST /v1/embeddings` request: only the routing field is typed, the rest passes through.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An embeddings request. `input` stays raw JSON: it is forwarded, and only counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingsRequest {
    /// The texts of `input` (a string or an array of strings); token arrays yield nothing.
    pub fn input_texts(&self) -> Vec<&str> {
        match &self.input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}
