//! Sentinel: an OpenAI-compatible LLM gateway.
//!
//! The request path, outermost first (assembled in [`server::stack`], which documents every
//! layer and the extensions they insert and read):
//! 1. [`server`] accepts the connection (TCP_NODELAY, header-read timeout, graceful drain) on
//!    one of the serving [`lanes`], which runs the whole request on its own thread.
//! 2. [`middleware::request_id`], [`middleware::auth`] (keys through the [`tenancy`] cache).
//! 3. [`middleware::parse`] reads the body once, bounded, into [`openai`] wire types.
//! 4. [`middleware::admit`] opens the request's [`metering::Ledger`] and applies the tenant's
//!    [`policy`] (allow-list, `rpm`/`tpm`, budget), reserving tokens and money.
//! 5. [`middleware::guard`] applies the [`shield`] (redact, block, log).
//! 6. [`cache::layer`] answers exact and semantic hits, or leaves a fill for the proxy.
//! 7. [`proxy`] routes, retries, falls back and streams through an observing body; the end of
//!    every request finishes its ledger: [`tokens`] prices it, the reservations settle, and one
//!    sealed record goes to the [`audit`] writer (with the usage rollup); sampled answers go
//!    to the [`judge`].
//!
//! Off the request path: [`api`] (models, usage, audit, admin, health, metrics, docs,
//! dashboard), [`store`] (embedded SQLite or Redis), [`telemetry`], [`otel`] (optional
//! OpenTelemetry trace export), [`tasks`] (the only place that spawns), [`mock_provider`] (the
//! bundled upstream), [`memory`] (free memory back to the OS when a lane goes quiet),
//! [`offload`] (a large body's prompt count and shield scan, moved off its lane).

#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod error;
pub mod judge;
pub mod lanes;
pub mod memory;
pub mod metering;
pub mod middleware;
pub mod mock_provider;
pub mod offload;
pub mod openai;
pub mod otel;
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
