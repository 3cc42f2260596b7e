//! End-to-end tests: the real `sentinel` binary on port 0, the mock upstream over real
//! sockets on port 0, and (for the store tests) a private `redis-server`. One test binary so
//! it links once.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "test harness: a failed set-up step must abort the test loudly"
)]

mod support;

mod accounting;
mod anthropic;
mod audit_log;
mod cache;
mod config;
mod docs;
mod errors;
mod hostile;
mod judge;
mod limits;
mod ops;
mod properties;
mod proxy;
mod replicas;
mod replicas_limits;
mod resilience;
mod semantic;
mod shield;
mod shutdown;
mod telemetry;
mod tenancy;
