//! `sentinel mock-provider`: the bundled mock upstream as a standalone server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::mock_provider::{FailKind, MockOptions, MockProvider};
use crate::tasks::Tasks;

/// Flags of `sentinel mock-provider`.
#[derive(Debug, Clone, Args)]
pub struct MockArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9100)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Delay before each response head, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Delay between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub chunk_interval_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// Share of requests (0..1) that fail with --fail-kind.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// How failing requests fail: 500, 429, hang, reset, malformed-sse.
    #[arg(long, default_value = "500")]
    pub fail_kind: FailKind,
}

/// Runs the mock until SIGTERM/SIGINT.
pub async fn run(args: MockArgs) -> Result<(), CliError> {
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(CliError::Usage(
            "--fail-rate must be between 0 and 1".into(),
        ));
    }
    let tasks = Tasks::new();
    let options = MockOptions {
        latency: Duration::from_millis(args.latency_ms),
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        chunks: args.chunks,
        fail_rate: args.fail_rate,
        fail_kind: args.fail_kind,
        ..MockOptions::default()
    };
    let mock = MockProvider::start(SocketAddr::new(args.host, args.port), options, &tasks).await?;
    tracing::info!(addr = %mock.addr(), "mock provider listening");
    crate::server::shutdown_signal().await;
    tasks.begin_shutdown();
    tasks.drain(Duration::from_secs(5)).await;
    Ok(())
}
