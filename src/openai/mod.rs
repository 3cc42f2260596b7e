//! OpenAI wire types: what clients send and what they expect back.
//!
//! Typed only as far as the gateway needs to observe or translate; every object keeps an
//! `extra` map so fields Sentinel does not know pass through unchanged.

pub mod chat;
pub mod embeddings;
pub mod models;
pub mod sse;
pub mod usage;
