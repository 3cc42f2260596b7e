//! [`MockControl`]: what a test can observe and steer while the mock runs.
//!
//! Everything a request touches is an atomic: call counters, the forced-failure countdown, the
//! latency and the stream gate. Recording the last requests uses one slot per request in a
//! ring, each behind its own (practically never contended) lock, so two requests do not wait
//! for each other.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::text::fnv1a_64;
use super::FailKind;

/// How many requests [`MockControl::requests`] keeps.
pub const RECORDED_REQUESTS: usize = 256;

/// Distinct paths counted one by one; requests to further paths only count in the total.
const PATH_SLOTS: usize = 64;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Every request header, as received.
    pub headers: HeaderMap,
    /// The whole request body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Shared handle to a running mock: counters, recorded requests and run-time switches.
#[derive(Debug)]
pub struct MockControl {
    total: AtomicU64,
    paths: PathCounters,
    forced_left: AtomicU32,
    forced_kind: AtomicU8,
    latency_nanos: AtomicU64,
    recording: AtomicBool,
    recorder: Recorder,
    gates: AtomicUsize,
    gate_opened: Notify,
}

// === impl MockControl ===

impl MockControl {
    pub(super) fn new(latency: Duration, recording: bool) -> Self {
        Self {
            total: AtomicU64::new(0),
            paths: PathCounters::new(),
            forced_left: AtomicU32::new(0),
            forced_kind: AtomicU8::new(FailKind::Status500.code()),
            latency_nanos: AtomicU64::new(duration_nanos(latency)),
            recording: AtomicBool::new(recording),
            recorder: Recorder::new(),
            gates: AtomicUsize::new(0),
            gate_opened: Notify::new(),
        }
    }

    /// Requests received on `path` (e.g. `"/v1/chat/completions"`), whatever their outcome.
    pub fn calls(&self, path: &str) -> u64 {
        self.paths.get(path)
    }

    /// Requests received on any path.
    pub fn total_calls(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The last [`RECORDED_REQUESTS`] requests, oldest first.
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.snapshot().await
    }

    /// Turns request recording on or off (on by default; off saves a header copy per request).
    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// The next `n` requests to a POST endpoint fail with `kind`; then normal behaviour
    /// resumes. Replaces any countdown still running.
    pub fn fail_next(&self, n: u32, kind: FailKind) {
        self.forced_kind.store(kind.code(), Ordering::Relaxed);
        self.forced_left.store(n, Ordering::Release);
    }

    /// While the returned gate is held, every stream sends its first content chunk and then
    /// waits before the rest.
    pub fn hold_streams(self: &Arc<Self>) -> StreamGate {
        self.gates.fetch_add(1, Ordering::AcqRel);
        StreamGate {
            control: Arc::clone(self),
        }
    }

    /// Changes the delay before response headers, for requests that arrive from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_nanos
            .store(duration_nanos(latency), Ordering::Relaxed);
    }

    /// The current delay before response headers.
    pub fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    // --- used by the service ---

    /// Counts a request; returns its sequence number (1 for the first), used in answer ids.
    pub(super) fn count(&self, path: &str) -> u64 {
        self.paths.increment(path);
        self.total.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    pub(super) async fn record(&self, request: RecordedRequest) {
        self.recorder.push(request).await;
    }

    /// Takes one forced failure from the countdown, if one is left.
    pub(super) fn take_forced_failure(&self) -> Option<FailKind> {
        if self.forced_left.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.forced_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .ok()
            .map(|_| FailKind::from_code(self.forced_kind.load(Ordering::Relaxed)))
    }

    /// Waits while a [`StreamGate`] is held, or until shutdown.
    pub(super) async fn pass_gate(&self, shutdown: &CancellationToken) {
        loop {
            if self.gates.load(Ordering::Acquire) == 0 {
                return;
            }
            // Register for the wake-up before re-checking, so a release in between is not lost.
            let opened = self.gate_opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.gates.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::select! {
                () = opened => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// === impl StreamGate ===

/// Holds streams after their first content chunk until released (or dropped).
#[derive(Debug)]
#[must_use = "streams are released as soon as the gate is dropped"]
pub struct StreamGate {
    control: Arc<MockControl>,
}

impl StreamGate {
    /// Lets held streams continue.
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for StreamGate {
    fn drop(&mut self) {
        if self.control.gates.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control.gate_opened.notify_waiters();
        }
    }
}

// === impl PathCounters ===

/// A fixed-size, insert-only, lock-free map from path to counter (open addressing). A slot's
/// key is set once; only the first request to a new path pays for claiming its slot.
#[derive(Debug)]
struct PathCounters {
    slots: Box<[PathSlot]>,
}

#[derive(Debug, Default)]
struct PathSlot {
    path: OnceLock<Box<str>>,
    count: AtomicU64,
}

impl PathCounters {
    fn new() -> Self {
        Self {
            slots: (0..PATH_SLOTS).map(|_| PathSlot::default()).collect(),
        }
    }

    fn probe(&self, path: &str) -> impl Iterator<Item = &PathSlot> {
        let start = fnv1a(path.as_bytes()) % self.slots.len();
        self.slots[start..].iter().chain(&self.slots[..start])
    }

    fn increment(&self, path: &str) {
        for slot in self.probe(path) {
            let key = match slot.path.get() {
                Some(key) => key,
                None => match slot.path.set(path.into()) {
                    Ok(()) => path,
                    // Another request claimed this slot first; it may be for the same path.
                    Err(_) => slot.path.get().map_or("", |k| &**k),
                },
            };
            if key == path {
                slot.count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    fn get(&self, path: &str) -> u64 {
        for slot in self.probe(path) {
            match slot.path.get() {
                Some(key) if &**key == path => return slot.count.load(Ordering::Relaxed),
                Some(_) => {}
                None => return 0,
            }
        }
        0
    }
}

/// A slot index from the path's hash (only the low bits matter).
fn fnv1a(bytes: &[u8]) -> usize {
    usize::try_from(fnv1a_64(bytes.iter().copied()) & 0xffff).unwrap_or(0)
}

// === impl Recorder ===

/// A ring of the last requests. Each request claims its own slot through an atomic sequence
/// number, so writers only meet on a slot when the ring wraps around under them.
#[derive(Debug)]
struct Recorder {
    next: AtomicU64,
    slots: Box<[RecordSlot]>,
}

/// A recorded request with its sequence number.
type RecordSlot = Mutex<Option<(u64, RecordedRequest)>>;

impl Recorder {
    fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            slots: (0..RECORDED_REQUESTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    async fn push(&self, request: RecordedRequest) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(seq % RECORDED_REQUESTS as u64).unwrap_or(0);
        let slot = &self.slots[index];
        let mut guard = match slot.try_lock() {
            Ok(guard) => guard,
            Err(_) => slot.lock().await,
        };
        // A writer that lapped this one may already have stored a newer request here.
        if guard.as_ref().is_none_or(|(held, _)| *held < seq) {
            *guard = Some((seq, request));
        }
    }

    async fn snapshot(&self) -> Vec<RecordedRequest> {
        let mut out = Vec::with_capacity(RECORDED_REQUESTS);
        for slot in &*self.slots {
            if let Some(entry) = slot.lock().await.as_ref() {
                out.push(entry.clone());
            }
        }
        out.sort_unstable_by_key(|(seq, _)| *seq);
        out.into_iter().map(|(_, request)| request).collect()
    }
}
