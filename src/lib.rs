//! Sentinel: an OpenAI-compatible LLM gateway.
//!
//! The request path, outermost first (assembled in [`server::stack`]):
//! 1. [`server`] accepts the connection (TCP_NODELAY, header-read timeout, graceful drain).
//! 2. [`middleware::request_id`] tags the request with an id and a start time.
//! 3. [`middleware::parse`] reads the body once, bounded, and parses it once into
//!    [`openai`] wire types ([`context::ParsedBody`]).
//! 4. [`proxy`] picks a route ([`proxy::route`]), calls the provider ([`providers`] maps the
//!    wire format; Anthropic is translated) with retries, fallbacks and a circuit breaker
//!    ([`proxy::breaker`]), and streams the answer back through an observing body.
//! 5. [`proxy::record`] records the outcome once per request (metrics today; cost, usage and
//!    audit hang off the same point).
//!
//! Off the request path: [`api`] (models, health, metrics), [`telemetry`] (logs and metric
//! names), [`tasks`] (the only place that spawns), [`mock_provider`] (the bundled upstream).

pub mod api;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod error;
pub mod judge;
pub mod metering;
pub mod middleware;
pub mod mock_provider;
pub mod openai;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod shield;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tenancy;
pub mod tokens;
