//! Token usage as OpenAI reports it, and the normalised counts the gateway meters.

use serde::{Deserialize, Serialize};

/// OpenAI's `usage` block (chat and embeddings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// Breakdown of the prompt tokens. `cached_tokens` is OpenAI's; `cache_write_tokens` carries
/// Anthropic's cache-creation tokens through the OpenAI shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

/// Breakdown of the completion tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Normalised token counts, the unit of metering. OpenAI counts cached tokens inside
/// `prompt` and reasoning tokens inside `completion`; so does this type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl From<&Usage> for TokenCounts {
    fn from(usage: &Usage) -> Self {
        let details = usage.prompt_tokens_details.as_ref();
        Self {
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
            cached: details.map_or(0, |d| d.cached_tokens),
            cache_write: details.map_or(0, |d| d.cache_write_tokens),
            reasoning: usage
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_cached_and_reasoning_details() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,
                "prompt_tokens_details":{"cached_tokens":40,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":20}}"#,
        )
        .unwrap();
        let counts = TokenCounts::from(&usage);
        assert_eq!(
            counts,
            TokenCounts {
                prompt: 100,
                completion: 50,
                cached: 40,
                cache_write: 0,
                reasoning: 20
            }
        );
    }
}
