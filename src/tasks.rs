//! Where tasks are spawned.
//!
//! Every background task (connection handlers, audit writers, judge workers, stream drains)
//! is owned by one [`Tasks`] tracker, so shutdown can stop accepting work, signal the
//! workers, and wait for them up to a deadline. `tokio::spawn` is a disallowed method
//! everywhere else (clippy.toml). The one other tracker is the admission leases' own
//! (`policy::lease`): their give-backs are set off by the audit writers' last writes, after
//! this one has drained, and shutdown waits for them separately.

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

    /// Runs `tick` every `period` (the first at once; a late tick delays the next rather than
    /// bunching up) until shutdown begins.
    pub fn spawn_every<F, Fut>(&self, name: &'static str, period: Duration, mut tick: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = self.shutdown_token();
        self.spawn(name, async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = interval.tick() => tick().await,
                }
            }
        });
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_periodic_task_ticks_until_shutdown_and_then_drains() {
        let tasks = Tasks::new();
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&ticks);
        tasks.spawn_every("ticker", Duration::from_millis(10), move || {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(35)).await;
        // At 0, 10, 20 and 30 ms.
        assert_eq!(ticks.load(Ordering::SeqCst), 4);
        tasks.begin_shutdown();
        assert!(tasks.drain(Duration::from_secs(1)).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 4);
    }

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
