//! The path table: which handler serves which path, and which routes skip authentication.

/// Routes that answer without a key: probes, metrics, docs and dashboard assets. Everything
/// else requires one (allow-list, so a new route cannot forget auth).
pub const UNAUTHENTICATED: &[&str] = &[
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/metrics/prometheus",
];

/// Client chat completions (proxied).
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
/// Client embeddings (proxied).
pub const EMBEDDINGS: &str = "/v1/embeddings";
/// Model list.
pub const MODELS: &str = "/v1/models";
