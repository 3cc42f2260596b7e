//! Handlers off the proxy path (models, usage, audit, admin, health, metrics, the API
//! document `/openapi.json` and its Swagger UI, the dashboard) and the proxy entry handlers.

pub mod admin;
pub mod audit;
pub mod caller;
pub mod dashboard;
pub mod health;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod proxy;
pub mod time;
pub mod usage;
