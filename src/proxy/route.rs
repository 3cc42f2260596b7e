//! Model → routes, and the order in which a request tries them.
//!
//! The first route of a plan is the choice; the rest are its fallbacks. `ordered` keeps the
//! configured order; `weighted` draws the first route by weight; `latency` compares two random
//! healthy routes by peak-EWMA latency (power of two choices), preferring routes whose recent
//! p95 keeps the model's SLO. Routes whose circuit is open go last (the breaker refuses them
//! unless their cool-down has passed).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use super::provider::ProviderRuntime;
use super::record::RouteMetrics;
use crate::config::{ModelConfig, Strategy};
use crate::providers::UpstreamTarget;

/// One way to serve a model.
#[derive(Debug)]
pub struct Route {
    pub provider: Arc<ProviderRuntime>,
    /// The model id at the provider.
    pub model: Arc<str>,
    pub weight: u32,
    pub chat: UpstreamTarget,
    pub embeddings: Option<UpstreamTarget>,
    pub latency: LatencyTracker,
    pub metrics: Arc<RouteMetrics>,
}

/// A client-facing model and its routes.
#[derive(Debug)]
pub struct ModelRoutes {
    pub name: Arc<str>,
    pub strategy: Strategy,
    pub slo_p95: Option<Duration>,
    pub context_window: Option<u32>,
    pub routes: Vec<Route>,
}

impl ModelRoutes {
    /// Builds the runtime routes of `config`.
    pub fn new(config: &ModelConfig, routes: Vec<Route>) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            strategy: config.strategy,
            slo_p95: config.slo_p95,
            context_window: config.context_window,
            routes,
        }
    }

    /// The order in which to try the routes.
    pub fn plan(&self) -> Vec<usize> {
        let n = self.routes.len();
        let mut order: Vec<usize> = (0..n).collect();
        if n > 1 {
            match self.strategy {
                Strategy::Ordered => {}
                Strategy::Weighted => {
                    let first = self.draw_weighted();
                    order.retain(|&i| i != first);
                    order.insert(0, first);
                }
                Strategy::Latency => order = self.latency_order(),
            }
        }
        // Circuits refusing traffic go last, keeping the strategy's order otherwise; a circuit
        // whose cool-down has passed keeps its place so that its probe is actually sent.
        let now = Instant::now();
        order.sort_by_key(|&i| self.routes[i].provider.breaker.is_refusing(now));
        order
    }

    fn draw_weighted(&self) -> usize {
        let total: u64 = self.routes.iter().map(|r| u64::from(r.weight)).sum();
        let mut ticket = rand::rng().random_range(0..total.max(1));
        for (i, r) in self.routes.iter().enumerate() {
            let w = u64::from(r.weight);
            if ticket < w {
                return i;
            }
            ticket -= w;
        }
        0
    }

    fn latency_order(&self) -> Vec<usize> {
        let now = Instant::now();
        let keeps_slo = |i: usize| {
            self.slo_p95
                .is_none_or(|slo| self.routes[i].latency.p95().is_none_or(|p| p <= slo))
        };
        let (mut good, mut breaking): (Vec<usize>, Vec<usize>) =
            (0..self.routes.len()).partition(|&i| keeps_slo(i));
        let cost = |i: usize| self.routes[i].latency.cost(now);
        if good.len() >= 2 {
            // Power of two choices: the better of two random candidates goes first.
            let mut rng = rand::rng();
            let a = rng.random_range(0..good.len());
            let mut b = rng.random_range(0..good.len() - 1);
            if b >= a {
                b += 1;
            }
            let first = if cost(good[a]) <= cost(good[b]) {
                good[a]
            } else {
                good[b]
            };
            good.retain(|&i| i != first);
            good.sort_by(|&x, &y| cost(x).total_cmp(&cost(y)));
            good.insert(0, first);
        }
        breaking.sort_by(|&x, &y| cost(x).total_cmp(&cost(y)));
        good.extend(breaking);
        good
    }
}

/// Recent latency of one route: a peak-sensitive EWMA (for choosing) and a ring of recent
/// samples (for the p95 SLO). Lock-free; concurrent updates may lose a sample, which only
/// blurs a statistic.
#[derive(Debug)]
pub struct LatencyTracker {
    epoch: Instant,
    ewma_us: AtomicU64,
    last_ms: AtomicU64,
    pending: AtomicU32,
    samples_ms: [AtomicU32; RING],
    next: AtomicUsize,
    filled: AtomicUsize,
}

const RING: usize = 64;
/// Decay time of the EWMA.
const TAU: Duration = Duration::from_secs(10);

impl Default for LatencyTracker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            last_ms: AtomicU64::new(0),
            pending: AtomicU32::new(0),
            samples_ms: std::array::from_fn(|_| AtomicU32::new(0)),
            next: AtomicUsize::new(0),
            filled: AtomicUsize::new(0),
        }
    }
}

/// Counts a request in flight on a route until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a LatencyTracker);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LatencyTracker {
    /// Marks a request as started.
    pub fn start(&self) -> InFlight<'_> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// Records a completed attempt's latency.
    pub fn observe(&self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64() * 1e6;
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let last = self.last_ms.swap(now_ms, Ordering::AcqRel);
        let old = f64::from_bits(self.ewma_us.load(Ordering::Acquire));
        #[expect(
            clippy::cast_precision_loss,
            reason = "milliseconds since start fit an f64 exactly for ages"
        )]
        let dt = now_ms.saturating_sub(last) as f64 / 1000.0;
        let w = (-dt / TAU.as_secs_f64()).exp();
        // Peak-sensitive: a slower sample takes over at once, faster ones decay in.
        let new = if sample > old || old == 0.0 {
            sample
        } else {
            old * w + sample * (1.0 - w)
        };
        self.ewma_us.store(new.to_bits(), Ordering::Release);
        let slot = self.next.fetch_add(1, Ordering::AcqRel) % RING;
        self.samples_ms[slot].store(
            u32::try_from(latency.as_millis()).unwrap_or(u32::MAX),
            Ordering::Release,
        );
        let _ = self
            .filled
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                (f < RING).then_some(f + 1)
            });
    }

    /// The choosing cost: EWMA weighted by the requests in flight.
    fn cost(&self, _now: Instant) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Acquire));
        ewma * f64::from(self.pending.load(Ordering::Acquire) + 1)
    }

    /// p95 of the recent samples, once there are enough to say.
    pub fn p95(&self) -> Option<Duration> {
        let filled = self.filled.load(Ordering::Acquire);
        if filled < 10 {
            return None;
        }
        let mut v: Vec<u32> = self.samples_ms[..filled]
            .iter()
            .map(|s| s.load(Ordering::Acquire))
            .collect();
        v.sort_unstable();
        let idx = (filled * 95).div_ceil(100).saturating_sub(1);
        v.get(idx).map(|ms| Duration::from_millis(u64::from(*ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerConfig, ProviderConfig, ProviderKind};
    use crate::providers::{target, Endpoint};

    fn routes(strategy: Strategy, weights: &[u32]) -> ModelRoutes {
        let routes = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| {
                let config = Arc::new(ProviderConfig {
                    name: format!("p{i}"),
                    kind: ProviderKind::OpenaiCompatible,
                    base_url: url::Url::parse("http://127.0.0.1:1/v1").unwrap(),
                    api_key: None,
                    timeout: Duration::from_secs(1),
                    stream_idle_timeout: Duration::from_secs(1),
                    max_retries: 0,
                    api_version: None,
                    circuit_breaker: BreakerConfig {
                        consecutive_failures: 1,
                        error_ratio: 1.0,
                        min_requests: 1,
                        window: Duration::from_secs(60),
                        cooldown: Duration::from_secs(60),
                    },
                });
                let chat = target(&config, "m", Endpoint::Chat).unwrap().unwrap();
                Route {
                    provider: Arc::new(ProviderRuntime::new(config)),
                    model: Arc::from("m"),
                    weight,
                    chat,
                    embeddings: None,
                    latency: LatencyTracker::default(),
                    metrics: Arc::new(RouteMetrics::new("m", "p")),
                }
            })
            .collect();
        ModelRoutes {
            name: Arc::from("m"),
            strategy,
            slo_p95: None,
            context_window: None,
            routes,
        }
    }

    #[test]
    fn ordered_keeps_order_and_puts_open_circuits_last() {
        let m = routes(Strategy::Ordered, &[1, 1, 1]);
        assert_eq!(m.plan(), [0, 1, 2]);
        m.routes[0]
            .provider
            .breaker
            .try_acquire(Instant::now())
            .unwrap()
            .record(super::super::breaker::Health::Failed);
        assert_eq!(m.plan(), [1, 2, 0]);
    }

    #[test]
    fn weighted_draws_in_proportion() {
        let m = routes(Strategy::Weighted, &[1, 3]);
        let firsts = (0..4000).filter(|_| m.plan()[0] == 1).count();
        assert!(
            (2700..3300).contains(&firsts),
            "{firsts} of 4000 should be about 3000"
        );
        assert_eq!(m.plan().len(), 2, "the other route stays as the fallback");
    }

    #[test]
    fn latency_strategy_prefers_the_faster_route_and_the_slo() {
        let mut m = routes(Strategy::Latency, &[1, 1]);
        let now = Instant::now();
        for _ in 0..20 {
            m.routes[0].latency.observe(Duration::from_millis(500), now);
            m.routes[1].latency.observe(Duration::from_millis(20), now);
        }
        assert_eq!(m.plan(), [1, 0]);
        m.slo_p95 = Some(Duration::from_millis(100));
        assert_eq!(m.plan(), [1, 0], "the SLO-breaking route goes last");
    }

    #[test]
    fn p95_needs_samples_and_reports_the_tail() {
        let t = LatencyTracker::default();
        let now = Instant::now();
        for _ in 0..5 {
            t.observe(Duration::from_millis(10), now);
        }
        assert!(t.p95().is_none());
        for i in 0..20u64 {
            t.observe(
                Duration::from_millis(if i % 10 == 0 { 900 } else { 10 }),
                now,
            );
        }
        assert_eq!(t.p95(), Some(Duration::from_millis(900)));
    }

    #[test]
    fn latency_cost_prefers_the_faster_route() {
        let fast = LatencyTracker::default();
        let slow = LatencyTracker::default();
        let now = Instant::now();
        for _ in 0..20 {
            fast.observe(Duration::from_millis(10), now);
            slow.observe(Duration::from_millis(200), now);
        }
        assert!(fast.cost(now) < slow.cost(now));
        assert_eq!(slow.p95(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn ewma_takes_peaks_at_once() {
        let t = LatencyTracker::default();
        let now = Instant::now();
        t.observe(Duration::from_millis(5), now);
        t.observe(Duration::from_millis(500), now);
        assert!(t.cost(now) >= 500_000.0);
        let _busy = t.start();
        assert!(
            t.cost(now) >= 1_000_000.0,
            "in-flight requests raise the cost"
        );
    }
}
