//! SHIM (replaced on merge).
use crate::tasks::Tasks;
use std::net::SocketAddr;
use std::time::Duration;
#[derive(Clone, Debug, Default)]
pub struct MockOptions {
    pub latency: Duration,
    pub chunk_interval: Duration,
    pub chunks: usize,
    pub fail_rate: f64,
    pub fail_kind: FailKind,
    pub reply: Option<String>,
}
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailKind {
    #[default]
    Status500,
}
impl std::str::FromStr for FailKind {
    type Err = String;
    fn from_str(_s: &str) -> Result<Self, String> {
        Ok(Self::Status500)
    }
}
pub struct MockProvider {
    addr: SocketAddr,
}
impl MockProvider {
    pub async fn start(listen: SocketAddr, _o: MockOptions, _t: &Tasks) -> std::io::Result<Self> {
        tokio::task::yield_now().await;
        Ok(Self { addr: listen })
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
