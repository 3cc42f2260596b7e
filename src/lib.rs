//! Sentinel: an OpenAI-compatible LLM gateway.
pub mod openai;
pub mod tasks;
