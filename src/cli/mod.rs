//! Command-line interface: `serve`, `check-config`, `keys`, `audit`, `mock-provider`.

pub mod audit;
pub mod cache;
pub mod check_config;
pub mod keys;
pub mod mock_provider;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Sentinel, an OpenAI-compatible LLM gateway.
#[derive(Debug, Parser)]
#[command(name = "sentinel", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/sentinel.toml")]
        config: PathBuf,
    },
    /// Validate the configuration and print the effective result (secrets masked).
    CheckConfig {
        #[arg(long, default_value = "config/sentinel.toml")]
        config: PathBuf,
    },
    /// Manage API keys in the configured store.
    Keys {
        #[arg(long, default_value = "config/sentinel.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Semantic cache tools.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Check the audit log in the configured store.
    Audit {
        #[arg(long, default_value = "config/sentinel.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Run a fast OpenAI-compatible (and Anthropic-shaped) mock upstream.
    MockProvider(mock_provider::MockArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(transparent)]
    Metrics(#[from] crate::telemetry::MetricsError),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyInitError),
    #[error(transparent)]
    Trace(#[from] crate::otel::TraceError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("audit chain broken: {0}")]
    Tampered(String),
}
