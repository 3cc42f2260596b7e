//! Handlers off the proxy path (models, usage, audit, admin, health, metrics) and the proxy
//! entry handlers.

pub mod admin;
pub mod audit;
pub mod caller;
pub mod health;
pub mod metrics;
pub mod models;
pub mod proxy;
pub mod time;
pub mod usage;
