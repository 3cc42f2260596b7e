//! A provider at run time: its configuration and its circuit breaker.

use std::sync::Arc;

use super::breaker::CircuitBreaker;
use crate::config::ProviderConfig;

/// One upstream provider, shared by every route that points at it.
#[derive(Debug)]
pub struct ProviderRuntime {
    pub config: Arc<ProviderConfig>,
    /// The configured name, cheap to clone into metric labels.
    pub name: Arc<str>,
    pub breaker: CircuitBreaker,
}

impl ProviderRuntime {
    /// Wraps a configured provider.
    pub fn new(config: Arc<ProviderConfig>) -> Self {
        let breaker = CircuitBreaker::new(&config.name, config.circuit_breaker.clone());
        Self {
            name: Arc::from(config.name.as_str()),
            config,
            breaker,
        }
    }
}
