//! The mock provider, in process, on port 0.

use sentinel::mock_provider::{MockOptions, MockProvider};
use sentinel::tasks::Tasks;

/// A running mock upstream; stops when dropped.
pub struct Upstream {
    pub mock: MockProvider,
    tasks: Tasks,
}

impl Upstream {
    /// Starts with default options.
    pub async fn start() -> Self {
        Self::with(MockOptions::default()).await
    }

    /// Starts with `options`.
    pub async fn with(options: MockOptions) -> Self {
        let tasks = Tasks::new();
        let mock = MockProvider::start("127.0.0.1:0".parse().unwrap(), options, &tasks)
            .await
            .unwrap();
        Self { mock, tasks }
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.mock.addr()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.tasks.begin_shutdown();
    }
}
