//! End-to-end tests: the real `sentinel` binary on port 0, the mock upstream over real
//! sockets on port 0, and (for the store tests) a private `redis-server`. One test binary so
//! it links once.

mod support;

mod anthropic;
mod config;
mod errors;
mod ops;
mod proxy;
mod resilience;
mod shutdown;
