//! The only place that spawns tasks.
//!
//! Every background task (connection handlers, audit writers, judge workers, stream drains)
//! is owned by one [`Tasks`] tracker, so shutdown can stop accepting work, signal the
//! workers, and wait for them up to a deadline. `tokio::spawn` is a disallowed method
//! everywhere else (clippy.toml).

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tracks background tasks and carries the process-wide shutdown signal.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Tasks {
    /// A new, empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `fut` on the runtime, tracked so [`Tasks::drain`] waits for it.
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tracing::trace!(task = name, "spawn");
        self.tracker.spawn(fut)
    }

    /// Cancelled when shutdown begins; long-running workers select on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Signals shutdown to every worker holding the token.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Closes the tracker and waits for all tasks, at most `deadline`. Returns whether every
    /// task finished in time.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok()
    }

    /// How many tracked tasks are still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no tracked task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tracked_work() {
        let tasks = Tasks::new();
        let token = tasks.shutdown_token();
        let handle = tasks.spawn("waiter", async move {
            token.cancelled().await;
            7
        });
        tasks.begin_shutdown();
        assert!(tasks.drain(Duration::from_secs(5)).await);
        assert_eq!(handle.await.unwrap(), 7);
    }
}
