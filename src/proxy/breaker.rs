//! Per-provider circuit breaker.
//!
//! Closed: everything passes; it opens after `consecutive_failures` failures in a row, or when
//! at least `min_requests` requests in the current `window` failed at `error_ratio` or more.
//! Open: nothing passes until `cooldown` has elapsed; then one probe is let through
//! (half-open). The probe's success closes the circuit, its failure opens it again.
//! Lock-free: every request touches this, on every core.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use crate::config::BreakerConfig;
use crate::telemetry::names;

/// The breaker's state, as exported in `sentinel_circuit_state` and `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl CircuitState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Closed,
            1 => Self::HalfOpen,
            _ => Self::Open,
        }
    }

    /// Lower-case name for `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half_open",
            Self::Open => "open",
        }
    }
}

/// How an attempt ended, as far as provider health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The provider answered (including client errors such as 400).
    Healthy,
    /// Connect error, timeout, 5xx, broken body.
    Failed,
    /// Says nothing about health (429: the provider is fine, just busy).
    Neutral,
}

/// One provider's breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    provider: String,
    config: BreakerConfig,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    opened_at_ms: AtomicU64,
    window_start_ms: AtomicU64,
    window_total: AtomicU32,
    window_failed: AtomicU32,
    probe_in_flight: AtomicBool,
}

/// Permission to send one request; hand it back through [`Permit::record`].
#[derive(Debug)]
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl CircuitBreaker {
    /// A closed breaker for `provider`.
    pub fn new(provider: &str, config: BreakerConfig) -> Self {
        Self {
            provider: provider.to_owned(),
            config,
            epoch: Instant::now(),
            state: AtomicU8::new(CircuitState::Closed as u8),
            consecutive: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            window_start_ms: AtomicU64::new(0),
            window_total: AtomicU32::new(0),
            window_failed: AtomicU32::new(0),
            probe_in_flight: AtomicBool::new(false),
        }
    }

    /// The current state (an open circuit whose cool-down passed still reads open until the
    /// probe is taken).
    pub fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether the breaker would refuse a request now: open and still cooling down, or
    /// half-open with its probe out. A circuit whose cool-down has passed is not refusing: the
    /// next request is its probe, so routing must not move it behind working fallbacks.
    pub fn is_refusing(&self, now: Instant) -> bool {
        match self.state() {
            CircuitState::Closed => false,
            CircuitState::HalfOpen => self.probe_in_flight.load(Ordering::Acquire),
            CircuitState::Open => !self.cooled_down(now),
        }
    }

    fn cooled_down(&self, now: Instant) -> bool {
        self.ms(now)
            .saturating_sub(self.opened_at_ms.load(Ordering::Acquire))
            >= u64::try_from(self.config.cooldown.as_millis()).unwrap_or(u64::MAX)
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Asks to send a request now.
    pub fn try_acquire(&self, now: Instant) -> Option<Permit<'_>> {
        match self.state() {
            CircuitState::Closed => Some(Permit {
                breaker: self,
                probe: false,
                recorded: false,
            }),
            CircuitState::Open => {
                let cooled = self
                    .ms(now)
                    .saturating_sub(self.opened_at_ms.load(Ordering::Acquire))
                    >= u64::try_from(self.config.cooldown.as_millis()).unwrap_or(u64::MAX);
                if cooled && self.take_probe() {
                    self.set_state(CircuitState::HalfOpen);
                    Some(Permit {
                        breaker: self,
                        probe: true,
                        recorded: false,
                    })
                } else {
                    None
                }
            }
            CircuitState::HalfOpen => self.take_probe().then_some(Permit {
                breaker: self,
                probe: true,
                recorded: false,
            }),
        }
    }

    fn take_probe(&self) -> bool {
        self.probe_in_flight
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn set_state(&self, state: CircuitState) {
        let old = self.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            metrics::gauge!(names::CIRCUIT_STATE, "provider" => self.provider.clone())
                .set(f64::from(state as u8));
            tracing::warn!(provider = %self.provider, state = state.as_str(), "circuit breaker changed state");
        }
    }

    fn open(&self, now: Instant) {
        self.opened_at_ms.store(self.ms(now), Ordering::Release);
        self.set_state(CircuitState::Open);
    }

    fn record(&self, health: Health, probe: bool, now: Instant) {
        let now_ms = self.ms(now);
        let window_ms = u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX);
        let start = self.window_start_ms.load(Ordering::Acquire);
        if now_ms.saturating_sub(start) >= window_ms
            && self
                .window_start_ms
                .compare_exchange(start, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.window_total.store(0, Ordering::Release);
            self.window_failed.store(0, Ordering::Release);
        }
        match health {
            Health::Neutral => {
                if probe {
                    self.probe_in_flight.store(false, Ordering::Release);
                }
            }
            Health::Healthy => {
                self.consecutive.store(0, Ordering::Release);
                self.window_total.fetch_add(1, Ordering::AcqRel);
                if probe {
                    self.window_total.store(0, Ordering::Release);
                    self.window_failed.store(0, Ordering::Release);
                    self.set_state(CircuitState::Closed);
                    self.probe_in_flight.store(false, Ordering::Release);
                }
            }
            Health::Failed => {
                let in_a_row = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                let total = self.window_total.fetch_add(1, Ordering::AcqRel) + 1;
                let failed = self.window_failed.fetch_add(1, Ordering::AcqRel) + 1;
                if probe {
                    self.open(now);
                    self.probe_in_flight.store(false, Ordering::Release);
                } else if self.state() == CircuitState::Closed {
                    let ratio_tripped = total >= self.config.min_requests
                        && f64::from(failed) / f64::from(total) >= self.config.error_ratio;
                    if in_a_row >= self.config.consecutive_failures || ratio_tripped {
                        self.open(now);
                    }
                }
            }
        }
    }
}

impl Permit<'_> {
    /// Reports how the attempt went.
    pub fn record(mut self, health: Health) {
        self.recorded = true;
        self.breaker.record(health, self.probe, Instant::now());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // A probe abandoned mid-flight (client gone) must not leave the circuit stuck half-open.
        if !self.recorded && self.probe {
            self.breaker.probe_in_flight.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker(consecutive: u32, ratio: f64, min: u32) -> CircuitBreaker {
        CircuitBreaker::new(
            "p",
            BreakerConfig {
                consecutive_failures: consecutive,
                error_ratio: ratio,
                min_requests: min,
                window: Duration::from_secs(60),
                cooldown: Duration::from_millis(100),
            },
        )
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        b.record(Health::Failed, false, now);
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let b = breaker(3, 1.0, 1000);
        let t0 = Instant::now();
        fail(&b, t0);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire(t0).is_none(), "open circuit refuses");
        assert!(b.is_refusing(t0));
        let later = t0 + Duration::from_millis(150);
        assert!(!b.is_refusing(later), "cooled down: ready for its probe");
        let probe = b.try_acquire(later).expect("probe after cooldown");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.try_acquire(later).is_none(), "one probe at a time");
        probe.record(Health::Healthy);
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(b.try_acquire(later).is_some());
    }

    #[test]
    fn failed_probe_reopens_and_abandoned_probe_is_released() {
        let b = breaker(1, 1.0, 1000);
        let t0 = Instant::now();
        fail(&b, t0);
        let later = t0 + Duration::from_millis(150);
        drop(b.try_acquire(later).expect("probe"));
        let probe = b.try_acquire(later).expect("released probe can be retaken");
        probe.record(Health::Failed);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn error_ratio_trips_only_with_enough_requests() {
        let b = breaker(100, 0.5, 10);
        let t0 = Instant::now();
        for _ in 0..4 {
            b.record(Health::Healthy, false, t0);
            fail(&b, t0);
        }
        assert_eq!(b.state(), CircuitState::Closed, "8 requests < min_requests");
        b.record(Health::Healthy, false, t0);
        fail(&b, t0);
        assert_eq!(b.state(), CircuitState::Open, "5 of 10 failed");
    }

    #[test]
    fn rate_limits_do_not_count() {
        let b = breaker(2, 1.0, 1000);
        let t0 = Instant::now();
        for _ in 0..10 {
            b.record(Health::Neutral, false, t0);
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
