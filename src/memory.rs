//! Hands freed memory back to the OS once a serving lane goes quiet.
//!
//! The allocator keeps each thread's freed pages for reuse and returns them lazily, during
//! that thread's own later allocations. A lane that stops serving after a burst (a load
//! spike, an audit backlog behind a slow store) would keep its high-water mark until traffic
//! came back. Each lane watches its own runtime's busy time instead: once it has been quiet
//! for two seconds after work, it releases its free memory once. Never under load, so the
//! request path pays nothing and no page is handed back only to be faulted in again.
//!
//! Only the lane threads do this. Work moved off a lane ([`crate::offload`]) allocates on
//! tokio's blocking threads, whose memory goes back when an idle one exits (after 10 s).
//!
//! The library does not know which allocator the binary installed, so the binary registers
//! how to release ([`set_release`]); without it, lanes do nothing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tasks::Tasks;

/// How often a lane looks at its busy time.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Busy time per check under which a lane counts as quiet: its timers and store pings take
/// well under this, one request's work ~0.1 ms and a loaded check hundreds of ms.
const QUIET: Duration = Duration::from_micros(2_500);

/// Quiet checks in a row before a release: a lightly loaded lane (a few requests a second)
/// crosses the line back and forth, and must not release, and re-fault, every other check.
const QUIET_CHECKS: u32 = 4;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets how a thread returns its free memory to the OS. The first call wins.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Returns the calling thread's free memory to the OS now, if the binary registered how: for
/// one-off work that frees more than it keeps, such as compiling a token splitter's automaton
/// (measured: 1.8 MB less resident at ready).
pub fn release_now() {
    if let Some(release) = RELEASE.get() {
        release();
    }
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
            let took = started.elapsed();
            watch.released(took);
            tracing::debug!(?took, "lane idle: released free memory");
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
    quiet_in_a_row: u32,
    /// The last release's own time, which the next reading holds and which is not work.
    discount: Duration,
}

impl IdleWatch {
    fn new(busy_total: Duration) -> Self {
        Self {
            last_total: busy_total,
            worked: false,
            quiet_in_a_row: 0,
            discount: Duration::ZERO,
        }
    }

    /// Takes the busy total now; true exactly once per spell, at the [`QUIET_CHECKS`]th quiet
    /// check in a row after one with work.
    fn quieted(&mut self, busy_total: Duration) -> bool {
        let spent = busy_total
            .saturating_sub(self.last_total)
            .saturating_sub(std::mem::take(&mut self.discount));
        self.last_total = busy_total;
        if spent >= QUIET {
            self.worked = true;
            self.quiet_in_a_row = 0;
            return false;
        }
        self.quiet_in_a_row = self.quiet_in_a_row.saturating_add(1);
        if self.worked && self.quiet_in_a_row >= QUIET_CHECKS {
            self.worked = false;
            return true;
        }
        false
    }

    /// Says how long the release took, so the next check does not count it as work.
    fn released(&mut self, took: Duration) {
        self.discount = took;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds busy times per check (ms) and returns the checks that released; each release
    /// takes `release_ms`, which shows in the next check's reading.
    fn releases_taking(release_ms: u64, per_check_ms: &[u64]) -> Vec<usize> {
        let mut watch = IdleWatch::new(ms(0));
        let mut total = 0;
        let mut out = Vec::new();
        for (i, &spent) in per_check_ms.iter().enumerate() {
            total += spent;
            if watch.quieted(ms(total)) {
                out.push(i);
                total += release_ms;
                watch.released(ms(release_ms));
            }
        }
        out
    }

    fn releases(per_check_ms: &[u64]) -> Vec<usize> {
        releases_taking(0, per_check_ms)
    }

    #[test]
    fn releases_once_when_a_busy_spell_ends() {
        // Quiet from the start: nothing to release.
        assert_eq!(releases(&[0, 1, 0, 0, 0, 0]), Vec::<usize>::new());
        // Loaded, then quiet: one release, at the fourth quiet check, not one per check.
        assert_eq!(releases(&[300, 400, 0, 1, 0, 0, 0, 0, 0, 0]), vec![5]);
        // A release's own time (it took up to 1.8 ms; here 5) does not start a spell of its
        // own, but work in the same check still does.
        assert_eq!(
            releases_taking(5, &[300, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            vec![4]
        );
        assert_eq!(
            releases_taking(5, &[300, 0, 0, 0, 0, 100, 0, 0, 0, 0]),
            vec![4, 9]
        );
        // The next spell gets its own release.
        assert_eq!(releases(&[100, 0, 0, 0, 0, 100, 0, 0, 0, 0]), vec![4, 9]);
    }

    #[test]
    fn a_lightly_loaded_lane_that_crosses_the_line_does_not_release() {
        // A few requests a check: busy, quiet, busy, quiet... never four quiet in a row.
        let flicker: Vec<u64> = (0..40).map(|i| if i % 3 == 0 { 3 } else { 1 }).collect();
        assert_eq!(releases(&flicker), Vec::<usize>::new());
    }

    #[test]
    fn background_work_under_the_threshold_never_counts_as_load() {
        let mut watch = IdleWatch::new(ms(10));
        for check in 1..=100 {
            assert!(!watch.quieted(ms(10 + check * 2)), "check {check}");
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
