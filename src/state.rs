//! Shared handles built once at start-up. Immutable; each owner handles its own concurrency,
//! and each layer or handler receives only the handles it uses.

use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::metering::Meter;
use crate::middleware::auth::AdminKey;
use crate::proxy::Proxy;
use crate::tenancy::Tenancy;

/// Everything the routes need.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub proxy: Arc<Proxy>,
    pub tenancy: Arc<Tenancy>,
    pub meter: Arc<Meter>,
    pub cache: Arc<crate::cache::Cache>,
    pub admin: Option<AdminKey>,
    pub metrics: Option<PrometheusHandle>,
    pub started: Instant,
}
