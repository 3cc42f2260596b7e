//! The path table: which handler serves which path, and which routes skip authentication.

/// Routes that answer without a key: probes, metrics, docs and dashboard assets. Everything
/// else requires one (allow-list, so a new route cannot forget auth).
pub const UNAUTHENTICATED: &[&str] = &[
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/metrics/prometheus",
    // The OpenAPI document, its Swagger UI page and the files that page loads (exact paths:
    // the rest of the Swagger UI bundle, e.g. source maps, still needs a key).
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/swagger-ui.css",
    "/docs/index.css",
    "/docs/favicon-32x32.png",
    "/docs/favicon-16x16.png",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui-standalone-preset.js",
    "/docs/swagger-initializer.js",
    // The dashboard page: it holds no data and reads the API with the key the operator types.
    "/",
];

/// Client chat completions (proxied).
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
/// Client embeddings (proxied).
pub const EMBEDDINGS: &str = "/v1/embeddings";
/// Model list.
pub const MODELS: &str = "/v1/models";
