//! Sliding-window arithmetic, pure: no clock, no I/O, no locking. The embedded store runs it
//! under a per-shard lock; the Redis backend mirrors it in Lua, so keep the two in step (the
//! conformance suite checks both against the same numbers).
//!
//! A scope keeps two counts: the bucket `now / W` is *current*, the one before it *previous*.
//! At offset `x = now % W` into the current bucket the previous one still weighs `(W - x) / W`:
//!
//! ```text
//! count = floor(previous * (W - x) / W) + current
//! ```
//!
//! A take of `amount` is admitted when `count + amount <= limit` (and then added to
//! `current`); otherwise nothing changes and `retry_after_ms` says how long to wait:
//! - `amount > limit`: never fits; the window length `W`.
//! - `current + amount > limit`: the current bucket alone is too full; until it ends, `W - x`.
//! - otherwise the previous bucket must decay until `previous * (W - x') <= room * W`, with
//!   `room = limit - amount - current` (exact, not floored, so the hint is never early):
//!   `x' = W - floor(room * W / previous)`, and the wait is `x' - x`.
//!
//! Time only moves forward: a take whose `now` falls in a bucket older than the current one
//! (requests racing across a boundary) is counted at the start of the current bucket, where
//! the previous bucket weighs the most, so the answer errs towards refusing.

use crate::store::WindowDecision;

/// One scope's counts: the current bucket and the one just before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Index of the current bucket: `now_ms / window_ms`.
    pub bucket: u64,
    /// Amount taken in the current bucket.
    pub current: u64,
    /// Amount taken in bucket `bucket - 1`.
    pub previous: u64,
}

impl WindowState {
    /// Moves forward to `bucket`: one step turns current into previous, more clear both.
    /// Never moves back.
    fn roll(&mut self, bucket: u64) {
        if bucket <= self.bucket {
            return;
        }
        self.previous = if bucket == self.bucket + 1 {
            self.current
        } else {
            0
        };
        self.current = 0;
        self.bucket = bucket;
    }

    /// Takes `amount` from a window of `window_ms` holding at most `limit`, at `now_ms`
    /// (module docs for the arithmetic). A zero window counts as 1 ms.
    pub fn take(&mut self, limit: u64, window_ms: u64, amount: u64, now_ms: u64) -> WindowDecision {
        let w = window_ms.max(1);
        let bucket = now_ms / w;
        self.roll(bucket);
        let offset = if bucket < self.bucket { 0 } else { now_ms % w };
        let count = weighted(self.previous, w, offset).saturating_add(self.current);

        if amount > limit {
            return WindowDecision {
                allowed: false,
                count,
                retry_after_ms: w,
            };
        }
        if count.saturating_add(amount) <= limit {
            self.current = self.current.saturating_add(amount);
            return WindowDecision {
                allowed: true,
                count: count + amount,
                retry_after_ms: 0,
            };
        }
        let retry_after_ms = if self.current.saturating_add(amount) > limit {
            w - offset
        } else {
            // current + amount <= limit, so the previous bucket is what refuses: wait until
            // previous * (W - x') <= room * W.
            let room = limit - amount - self.current;
            let keep = u128::from(room) * u128::from(w) / u128::from(self.previous.max(1));
            let decayed_at = w - u64::try_from(keep).unwrap_or(w).min(w);
            decayed_at.saturating_sub(offset).max(1)
        };
        WindowDecision {
            allowed: false,
            count,
            retry_after_ms,
        }
    }

    /// Adds `delta` (negative gives back, never below zero) to the bucket `taken_at_ms` fell
    /// in: the current one, the previous one, or nothing when that bucket has already expired.
    /// A bucket later than the current one becomes current first.
    pub fn adjust(&mut self, window_ms: u64, delta: i64, taken_at_ms: u64) {
        let bucket = taken_at_ms / window_ms.max(1);
        self.roll(bucket);
        let slot = if bucket == self.bucket {
            &mut self.current
        } else if bucket + 1 == self.bucket {
            &mut self.previous
        } else {
            return;
        };
        *slot = if delta >= 0 {
            slot.saturating_add(delta.unsigned_abs())
        } else {
            slot.saturating_sub(delta.unsigned_abs())
        };
    }

    /// Whether the state counts for nothing at `now_ms` (both buckets are over), so the scope
    /// can be forgotten.
    pub fn is_idle(&self, window_ms: u64, now_ms: u64) -> bool {
        now_ms / window_ms.max(1) >= self.bucket.saturating_add(2)
            || (self.current == 0 && self.previous == 0)
    }
}

/// `floor(previous * (w - offset) / w)`, without overflow.
fn weighted(previous: u64, w: u64, offset: u64) -> u64 {
    let scaled = u128::from(previous) * u128::from(w - offset) / u128::from(w);
    // scaled <= previous, so it fits.
    u64::try_from(scaled).unwrap_or(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 60_000;
    const T0: u64 = 1_000_020_000_000; // a multiple of W

    fn take(s: &mut WindowState, limit: u64, amount: u64, now: u64) -> (bool, u64, u64) {
        let d = s.take(limit, W, amount, now);
        (d.allowed, d.count, d.retry_after_ms)
    }

    #[test]
    fn fills_the_current_bucket_then_waits_for_the_next() {
        let mut s = WindowState::default();
        for i in 0..5 {
            assert_eq!(take(&mut s, 5, 1, T0 + i), (true, i + 1, 0));
        }
        assert_eq!(take(&mut s, 5, 1, T0 + 10), (false, 5, W - 10));
        assert_eq!(
            s,
            WindowState {
                bucket: T0 / W,
                current: 5,
                previous: 0
            }
        );
    }

    #[test]
    fn the_previous_bucket_decays_linearly_with_floor() {
        let mut s = WindowState {
            bucket: T0 / W,
            current: 5,
            previous: 0,
        };
        // Half-way: 5 * 30/60 = 2.5, floored to 2.
        assert_eq!(take(&mut s, 5, 3, T0 + W + 30_000), (true, 5, 0));
        // room = 5 - 1 - 3 = 1; 5 * (W - x) <= 1 * W at x = 48 s; now is 30 s in.
        assert_eq!(take(&mut s, 5, 1, T0 + W + 30_000), (false, 5, 18_000));
        // Exactly then the take fits: floor(5 * 12/60) = 1, + 3 + 1 = 5.
        assert_eq!(take(&mut s, 5, 1, T0 + W + 48_000), (true, 5, 0));
    }

    #[test]
    fn retry_hint_is_the_first_moment_the_exact_weight_fits() {
        let limit = 40;
        let bucket = T0 / W + 1;
        for prev in 1..=40u64 {
            for cur in 0..limit {
                for offset in [0, 1, 7_000, 29_999, 59_999] {
                    let now = T0 + W + offset;
                    let mut s = WindowState {
                        bucket,
                        current: cur,
                        previous: prev,
                    };
                    let d = s.take(limit, W, 1, now);
                    if d.allowed || cur + 1 > limit {
                        continue;
                    }
                    let room = u128::from(limit - 1 - cur);
                    if room == 0 {
                        assert_eq!(
                            d.retry_after_ms,
                            W - offset,
                            "no room left: until the bucket ends"
                        );
                        continue;
                    }
                    let exact_fits =
                        |t: u64| u128::from(prev) * u128::from(W - t % W) <= room * u128::from(W);
                    let at = now + d.retry_after_ms;
                    assert!(d.retry_after_ms >= 1);
                    assert!(
                        at / W == bucket,
                        "the previous bucket decays within the current one"
                    );
                    assert!(exact_fits(at), "prev {prev} cur {cur} offset {offset}");
                    assert!(
                        !exact_fits(at - 1),
                        "not the first moment: prev {prev} cur {cur}"
                    );
                    // The admission check floors, so at the hinted time the take is admitted.
                    let mut later = WindowState {
                        bucket,
                        current: cur,
                        previous: prev,
                    };
                    assert!(later.take(limit, W, 1, at).allowed);
                }
            }
        }
    }

    #[test]
    fn two_buckets_later_nothing_counts() {
        let mut s = WindowState {
            bucket: T0 / W,
            current: 5,
            previous: 9,
        };
        assert_eq!(take(&mut s, 5, 5, T0 + 4 * W), (true, 5, 0));
        assert_eq!(
            s,
            WindowState {
                bucket: T0 / W + 4,
                current: 5,
                previous: 0
            }
        );
    }

    #[test]
    fn an_amount_above_the_limit_never_fits() {
        let mut s = WindowState::default();
        assert_eq!(take(&mut s, 5, 6, T0), (false, 0, W));
        assert_eq!(s.current, 0);
    }

    #[test]
    fn late_takes_count_at_the_start_of_the_current_bucket() {
        let mut s = WindowState {
            bucket: T0 / W + 1,
            current: 0,
            previous: 4,
        };
        // now falls in the previous bucket: the previous bucket weighs fully.
        assert_eq!(take(&mut s, 5, 1, T0 + W - 1), (true, 5, 0));
        assert_eq!(s.bucket, T0 / W + 1, "time never moves back");
        assert_eq!(s.current, 1);
    }

    #[test]
    fn adjust_hits_the_bucket_of_the_take() {
        let mut s = WindowState::default();
        assert!(s.take(1000, W, 800, T0).allowed);
        s.adjust(W, -700, T0);
        assert_eq!(s.current, 100);
        s.adjust(W, -10_000, T0);
        assert_eq!(s.current, 0, "never below zero");
        s.adjust(W, 50, T0 + 1);
        assert_eq!(s.current, 50);
        // Once the take's bucket has become the previous one, that one is corrected.
        assert!(s.take(1000, W, 10, T0 + W).allowed);
        s.adjust(W, -20, T0);
        assert_eq!((s.previous, s.current), (30, 10));
        // A take two buckets back is gone: nothing to correct.
        assert!(s.take(1000, W, 1, T0 + 2 * W).allowed);
        s.adjust(W, 500, T0);
        assert_eq!((s.previous, s.current), (10, 1));
    }

    #[test]
    fn idle_states_can_be_forgotten() {
        let s = WindowState {
            bucket: T0 / W,
            current: 3,
            previous: 0,
        };
        assert!(!s.is_idle(W, T0 + W + 1));
        assert!(s.is_idle(W, T0 + 2 * W));
        assert!(WindowState::default().is_idle(W, 0));
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let mut s = WindowState {
            bucket: 0,
            current: u64::MAX - 1,
            previous: u64::MAX,
        };
        let d = s.take(u64::MAX - 1, u64::MAX, 1, 1);
        assert!(!d.allowed);
        assert_eq!(d.count, u64::MAX);
    }
}
