//! Hands freed memory back to the OS once a serving lane goes quiet.
//!
//! The allocator keeps each thread's freed pages for reuse and returns them lazily, during
//! that thread's own later allocations. A lane that stops serving after a burst (a load
//! spike, an audit backlog behind a slow store) would keep its high-water mark until traffic
//! came back. Each lane watches its own runtime's busy time instead: after a second with
//! work followed by a quiet one, it releases its free memory once. Never under load, so the
//! request path pays nothing and no page is handed back only to be faulted in again.
//!
//! The library does not know which allocator the binary installed, so the binary registers
//! how to release ([`set_release`]); without it, lanes do nothing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tasks::Tasks;

/// How often a lane looks at its busy time.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Busy time per check under which a lane counts as quiet: its timers and store pings take
/// well under this, one request's work at least ~0.1 ms and a loaded second hundreds.
const QUIET: Duration = Duration::from_millis(5);

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets how a thread returns its free memory to the OS. The first call wins.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Starts the calling lane's watch (on its own current-thread runtime): releases the lane's
/// free memory once each time a busy spell ends. Stops at shutdown.
pub fn release_when_idle(tasks: &Tasks) {
    let Some(&release) = RELEASE.get() else {
        return;
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    // A lane runtime has one worker: the lane thread itself.
    let mut watch = IdleWatch::new(metrics.worker_total_busy_duration(0));
    tasks.spawn_every("lane-memory-release", CHECK_EVERY, move || {
        if watch.quieted(metrics.worker_total_busy_duration(0)) {
            let started = Instant::now();
            release();
            tracing::debug!(took = ?started.elapsed(), "lane idle: released free memory");
        }
        std::future::ready(())
    });
}

/// Tells, from a runtime's running total of busy time read once per check, when a busy
/// spell has just ended.
#[derive(Debug)]
struct IdleWatch {
    last_total: Duration,
    worked: bool,
}

impl IdleWatch {
    fn new(busy_total: Duration) -> Self {
        Self {
            last_total: busy_total,
            worked: false,
        }
    }

    /// Takes the busy total now; true exactly once per spell, at the first quiet check after
    /// one with work.
    fn quieted(&mut self, busy_total: Duration) -> bool {
        let spent = busy_total.saturating_sub(self.last_total);
        self.last_total = busy_total;
        if spent >= QUIET {
            self.worked = true;
            false
        } else {
            std::mem::take(&mut self.worked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn releases_once_when_a_busy_spell_ends() {
        let mut watch = IdleWatch::new(ms(0));
        // Quiet from the start: nothing to release.
        assert!(!watch.quieted(ms(1)));
        // Two loaded seconds, then quiet: one release, not one per quiet check.
        assert!(!watch.quieted(ms(301)));
        assert!(!watch.quieted(ms(700)));
        assert!(watch.quieted(ms(702)));
        assert!(!watch.quieted(ms(703)));
        assert!(!watch.quieted(ms(704)));
        // The next spell gets its own release.
        assert!(!watch.quieted(ms(800)));
        assert!(watch.quieted(ms(800)));
    }

    #[test]
    fn background_work_under_the_threshold_never_counts_as_load() {
        let mut watch = IdleWatch::new(ms(10));
        for second in 1..=100 {
            assert!(!watch.quieted(ms(10 + second * 4)), "second {second}");
        }
    }

    #[test]
    fn a_busy_total_that_goes_backwards_reads_as_quiet() {
        // The total never shrinks in tokio, but a wrap must not panic or release spuriously.
        let mut watch = IdleWatch::new(ms(500));
        assert!(!watch.quieted(ms(100)));
        assert!(!watch.quieted(ms(103)));
    }
}
