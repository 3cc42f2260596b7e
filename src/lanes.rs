//! Serving lanes: one single-threaded runtime per core, each with its own connections.
//!
//! On a work-stealing runtime every request hops threads: the accept, the Redis reply and the
//! upstream reply each wake whichever worker is parked, and the connection tasks of the shared
//! Redis and upstream clients run wherever they were last woken. On a small host that is most
//! of the added latency (BENCHMARKS.md, "Third follow-up: serving lanes"). A lane instead runs the whole request on one
//! thread: it accepts from the shared listener, and the hot-path clients give it its own
//! connections through [`PerLane`], so the request, its Redis round trip and its upstream call
//! are driven by the same thread without a cross-thread wake.
//!
//! The background work requests leave (audit records, cache fills) goes to writers on the
//! same lane through [`LaneQueue`]. Work that belongs to no request (judge workers, watchers)
//! stays on the main runtime and uses the shared connection.

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    /// The lane this thread serves, set once when the lane thread starts.
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The lane the calling thread serves, if it is a lane thread.
pub fn current() -> Option<usize> {
    LANE.with(Cell::get)
}

/// Marks the calling thread as lane `index`. Called once by each lane thread at start.
pub fn enter(index: usize) {
    LANE.with(|lane| lane.set(Some(index)));
}

/// One value per lane plus a shared one: a lane thread gets its own (once set), any other
/// thread, or a lane whose own could not be made, gets the shared one.
#[derive(Debug)]
pub struct PerLane<T> {
    shared: T,
    lanes: Box<[OnceLock<T>]>,
}

impl<T> PerLane<T> {
    /// `shared` only, with room for `lanes` lane values set later by [`PerLane::set`].
    pub fn new(shared: T, lanes: usize) -> Self {
        Self {
            shared,
            lanes: (0..lanes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Every lane's value made up front by `make`.
    pub fn filled(lanes: usize, mut make: impl FnMut() -> T) -> Self {
        let per_lane = Self::new(make(), lanes);
        for slot in &*per_lane.lanes {
            let _ = slot.set(make());
        }
        per_lane
    }

    /// The value for the calling thread.
    pub fn get(&self) -> &T {
        current()
            .and_then(|lane| self.lanes.get(lane))
            .and_then(OnceLock::get)
            .unwrap_or(&self.shared)
    }

    /// The value every non-lane thread uses.
    pub fn shared(&self) -> &T {
        &self.shared
    }

    /// Sets lane `lane`'s value; returns it back when the lane is out of range or already set.
    pub fn set(&self, lane: usize, value: T) -> Result<(), T> {
        match self.lanes.get(lane) {
            Some(slot) => slot.set(value),
            None => Err(value),
        }
    }

    /// The shared value, then every lane's that is set.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.shared).chain(self.lanes.iter().filter_map(OnceLock::get))
    }

    /// How many lanes this holds room for.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }
}

/// A queue per lane plus a shared one, for background work that should run where the
/// request that made it ran: senders pick the calling thread's queue, and each lane takes its
/// receiver once, at start, from [`LaneReceivers`], to run the consumer on its own runtime.
/// Consumers then compete for CPU with the lane's requests inside one scheduler, not as one
/// more thread the kernel shares out, and a send never wakes another thread. The senders and
/// the receivers are separate values, so that holding on to the receivers never keeps a queue
/// open: a consumer sees its queue close once the last [`LaneQueue`] is gone.
#[derive(Debug)]
pub struct LaneQueue<T> {
    senders: PerLane<tokio::sync::mpsc::Sender<T>>,
}

/// The receiving ends of a [`LaneQueue`]'s lane queues, each taken once.
#[derive(Debug)]
pub struct LaneReceivers<T> {
    receivers: Box<[tokio::sync::Mutex<Option<tokio::sync::mpsc::Receiver<T>>>]>,
}

impl<T> LaneQueue<T> {
    /// Queues of `capacity` each for `lanes` lanes and the shared one: the senders, the
    /// shared receiver, and the lanes' receivers.
    pub fn new(
        lanes: usize,
        capacity: usize,
    ) -> (Self, tokio::sync::mpsc::Receiver<T>, LaneReceivers<T>) {
        let (shared_tx, shared_rx) = tokio::sync::mpsc::channel(capacity);
        let senders = PerLane::new(shared_tx, lanes);
        let receivers = (0..lanes)
            .map(|lane| {
                let (tx, rx) = tokio::sync::mpsc::channel(capacity);
                let _ = senders.set(lane, tx);
                tokio::sync::Mutex::new(Some(rx))
            })
            .collect();
        (Self { senders }, shared_rx, LaneReceivers { receivers })
    }

    /// The calling thread's queue.
    pub fn sender(&self) -> &tokio::sync::mpsc::Sender<T> {
        self.senders.get()
    }

    /// Every queue, the shared one first.
    pub fn senders(&self) -> impl Iterator<Item = &tokio::sync::mpsc::Sender<T>> {
        std::iter::once(self.senders.shared())
            .chain(self.senders.lanes.iter().filter_map(OnceLock::get))
    }
}

impl<T> LaneReceivers<T> {
    /// Lane `lane`'s receiver; `None` when out of range or already taken.
    pub fn take(&self, lane: usize) -> Option<tokio::sync::mpsc::Receiver<T>> {
        self.receivers.get(lane)?.try_lock().ok()?.take()
    }
}

/// How long a background writer waits after the first item of a batch for more to arrive.
/// One write per item would wake the writer, and the store, once per request; at a few
/// thousand requests per second a couple of milliseconds gathers several into one pipelined
/// write. The wait is not a loss window: items already sit in memory in the queue.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// How long after a batch that found company a writer still expects more: within it a lone
/// item waits [`LINGER`] for others, after it the writer counts as idle.
pub const BUSY_SPELL: std::time::Duration = std::time::Duration::from_millis(20);

/// Tops up a background writer's batches: after the first item it waits [`LINGER`], then
/// takes whatever has arrived. It does not listen while it waits, so a send to the queue
/// meanwhile wakes nothing; a closed queue still hands over what it holds.
///
/// An idle writer's lone item goes at once. Nothing suggests company is coming, and each
/// lane's writer lingering on its own timer let a lane write a sequential client's later
/// record before another lane wrote its earlier one, listing them out of order. A writer that
/// gathered several items within [`BUSY_SPELL`] keeps lingering, so batches under load stay
/// as large as before.
#[derive(Debug, Default)]
pub struct Gather {
    busy_until: Option<tokio::time::Instant>,
}

impl Gather {
    /// Tops up `batch` (which holds the item or items just received) to at most `max`.
    pub async fn top_up<T>(
        &mut self,
        rx: &mut tokio::sync::mpsc::Receiver<T>,
        batch: &mut Vec<T>,
        max: usize,
    ) {
        let idle = self
            .busy_until
            .is_none_or(|t| t <= tokio::time::Instant::now());
        if batch.len() == 1 && idle && max > 1 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => return,
            }
        }
        if batch.len() < max {
            tokio::time::sleep(LINGER).await;
            while batch.len() < max {
                let Ok(item) = rx.try_recv() else { break };
                batch.push(item);
            }
        }
        if batch.len() > 1 {
            self.busy_until = Some(tokio::time::Instant::now() + BUSY_SPELL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_thread_gets_its_own_value_and_others_the_shared_one() {
        let values = std::sync::Arc::new(PerLane::new("shared", 2));
        values.set(1, "lane one").unwrap();
        assert_eq!(values.set(1, "again"), Err("again"));
        assert_eq!(values.set(5, "out of range"), Err("out of range"));
        assert_eq!(*values.get(), "shared");
        let seen = |lane: usize| {
            let values = std::sync::Arc::clone(&values);
            std::thread::spawn(move || {
                enter(lane);
                *values.get()
            })
            .join()
            .unwrap()
        };
        assert_eq!(seen(1), "lane one");
        // Lane 0 never got its own value, lane 7 does not exist: both fall back.
        assert_eq!(seen(0), "shared");
        assert_eq!(seen(7), "shared");
    }

    #[tokio::test]
    async fn a_lane_sends_to_its_own_queue_and_takes_its_receiver_once() {
        let (queue, mut shared, receivers) = LaneQueue::new(2, 4);
        let queue = std::sync::Arc::new(queue);
        queue.sender().try_send("from a non-lane thread").unwrap();
        assert_eq!(shared.recv().await, Some("from a non-lane thread"));
        let mut lane1 = receivers.take(1).unwrap();
        assert!(receivers.take(1).is_none());
        assert!(receivers.take(2).is_none());
        let sender = std::sync::Arc::clone(&queue);
        std::thread::spawn(move || {
            enter(1);
            sender.sender().try_send("from lane one").unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(lane1.recv().await, Some("from lane one"));
        assert!(shared.try_recv().is_err());
        assert_eq!(queue.senders().count(), 3);
        // The receivers alone do not keep a queue open.
        drop(queue);
        assert_eq!(lane1.recv().await, None);
        assert_eq!(shared.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_takes_what_arrived_while_it_waited_up_to_the_limit() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut batch = vec![0];
        tx.send(1).await.unwrap();
        let sender = async {
            for n in 2..=5 {
                tx.send(n).await.unwrap();
            }
        };
        let mut gather = Gather::default();
        let t0 = tokio::time::Instant::now();
        tokio::join!(gather.top_up(&mut rx, &mut batch, 4), sender);
        assert_eq!(batch, [0, 1, 2, 3]);
        assert_eq!(t0.elapsed(), LINGER, "a second item queued: it lingers");
        // A full batch goes at once.
        let t1 = tokio::time::Instant::now();
        gather.top_up(&mut rx, &mut batch, 4).await;
        assert_eq!(batch.len(), 4);
        assert_eq!(t1.elapsed(), std::time::Duration::ZERO);
        assert_eq!(rx.try_recv(), Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_marks_the_writer_busy() {
        let (_tx, mut rx) = tokio::sync::mpsc::channel::<u32>(16);
        let mut gather = Gather::default();
        let mut batch = vec![0, 1];
        gather.top_up(&mut rx, &mut batch, 2).await;
        let t0 = tokio::time::Instant::now();
        let mut batch = vec![2];
        gather.top_up(&mut rx, &mut batch, 2).await;
        assert_eq!(
            t0.elapsed(),
            LINGER,
            "busy after a full batch: a lone item waits"
        );
        // A batch of one is full at once and takes nothing more.
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        tx.send(3).await.unwrap();
        let mut batch = vec![2];
        Gather::default().top_up(&mut rx, &mut batch, 1).await;
        assert_eq!(batch, [2]);
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn gather_sends_an_idle_writers_lone_item_at_once_and_a_busy_ones_after_lingering() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let mut gather = Gather::default();
        let mut batch = vec![0];
        let t0 = tokio::time::Instant::now();
        gather.top_up(&mut rx, &mut batch, 4).await;
        assert_eq!(batch, [0]);
        assert_eq!(t0.elapsed(), std::time::Duration::ZERO, "idle: at once");

        // Company found: the writer is busy for a spell, and a lone item then waits for more.
        let mut batch = vec![1];
        tx.send(2).await.unwrap();
        gather.top_up(&mut rx, &mut batch, 4).await;
        assert_eq!(batch, [1, 2]);
        let t1 = tokio::time::Instant::now();
        let mut batch = vec![3];
        let late = async {
            tokio::time::sleep(LINGER / 2).await;
            tx.send(4).await.unwrap();
        };
        tokio::join!(gather.top_up(&mut rx, &mut batch, 4), late);
        assert_eq!(batch, [3, 4], "busy: it waited and took what came");
        assert_eq!(t1.elapsed(), LINGER);

        // A lone item that finds no company does not lengthen the spell, which ends
        // BUSY_SPELL after the last batch of several: here, just as that item goes.
        tokio::time::sleep(BUSY_SPELL.saturating_sub(LINGER)).await;
        let t3 = tokio::time::Instant::now();
        let mut batch = vec![9];
        gather.top_up(&mut rx, &mut batch, 4).await;
        assert_eq!(batch, [9]);
        assert_eq!(t3.elapsed(), LINGER, "still busy: it waited");
        let t4 = tokio::time::Instant::now();
        let mut batch = vec![10];
        gather.top_up(&mut rx, &mut batch, 4).await;
        assert_eq!(t4.elapsed(), std::time::Duration::ZERO, "the spell is over");
    }

    #[test]
    fn filled_makes_one_value_per_lane_and_a_shared_one() {
        let mut made = 0;
        let values = PerLane::filled(3, || {
            made += 1;
            made
        });
        assert_eq!(*values.shared(), 1);
        assert_eq!(values.lanes(), 3);
        assert_eq!(made, 4);
    }
}
