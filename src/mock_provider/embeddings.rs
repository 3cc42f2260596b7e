//! `POST /v1/embeddings` (and Azure's deployment path) and `GET /v1/models`.

use std::borrow::Cow;

use bytes::Bytes;
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::chat::missing_model;
use super::service::{answer, invalid_body, Body, Dialect};
use super::text::{self, EMBEDDING_DIMS};

/// Models listed by `GET /v1/models`.
pub const MODELS: [&str; 5] = [
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-3-5-haiku-latest",
    "mock-model",
];

#[derive(Deserialize)]
struct EmbeddingsIn<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(borrow)]
    input: InputIn<'a>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InputIn<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

#[derive(Serialize)]
struct EmbeddingListOut<'a> {
    object: &'static str,
    data: Vec<EmbeddingOut>,
    model: &'a str,
    usage: EmbeddingUsageOut,
}

#[derive(Serialize)]
struct EmbeddingOut {
    object: &'static str,
    index: usize,
    embedding: [f32; EMBEDDING_DIMS],
}

#[derive(Serialize)]
struct EmbeddingUsageOut {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// `POST /v1/embeddings` (and Azure's deployment path).
pub fn embeddings(deployment: Option<&str>, body: &[u8], malformed: bool) -> Response<Body> {
    let request: EmbeddingsIn<'_> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_body(Dialect::OpenAi, &err),
    };
    let Some(model) = deployment.or(request.model.as_deref()) else {
        return missing_model();
    };
    // (vector, tokens) per input.
    let inputs: Vec<([f32; EMBEDDING_DIMS], u64)> = match &request.input {
        InputIn::One(text) => vec![(text::embedding(text), text::words(text))],
        InputIn::Many(texts) => texts
            .iter()
            .map(|t| (text::embedding(t), text::words(t)))
            .collect(),
        InputIn::Tokens(tokens) => vec![(text::token_embedding(tokens), tokens.len() as u64)],
        InputIn::TokenLists(lists) => lists
            .iter()
            .map(|t| (text::token_embedding(t), t.len() as u64))
            .collect(),
    };
    let tokens = inputs.iter().map(|(_, n)| n).sum();
    let data = inputs
        .into_iter()
        .enumerate()
        .map(|(index, (embedding, _))| EmbeddingOut {
            object: "embedding",
            index,
            embedding,
        })
        .collect();
    let out = EmbeddingListOut {
        object: "list",
        data,
        model,
        usage: EmbeddingUsageOut {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    answer(&out, malformed)
}

// === models ===

/// The `GET /v1/models` body, built once at start.
pub fn model_list() -> Bytes {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}))
        .collect();
    serde_json::json!({"object": "list", "data": data})
        .to_string()
        .into()
}
