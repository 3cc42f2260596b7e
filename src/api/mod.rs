//! Handlers off the proxy path (models, health, metrics) and the proxy entry handlers.

pub mod admin;
pub mod health;
pub mod metrics;
pub mod models;
pub mod proxy;
