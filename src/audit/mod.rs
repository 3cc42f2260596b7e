//! The audit log: one sealed record per request, written off the request path.
//!
//! [`AuditSink`] is the request path's side: a bounded queue that never blocks. The
//! [`writer`] task on the other side seals records into per-tenant hash chains
//! ([`record`]), and writes them in batches together with their usage rollups and the
//! settlement of their reservations ([`crate::store::AuditStore::record_outcomes`]). When the
//! store is down or slow, batches go to an append-only spill file ([`spill`]) and are replayed
//! in order once it answers again; the store skips what it already has, so nothing is lost or
//! counted twice. [`verify`] checks the chains (`sentinel audit verify`).

pub mod record;
pub mod spill;
pub mod verify;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use metrics::Gauge;
use tokio::sync::mpsc;

use crate::lanes::LaneQueue;
use crate::store::Outcome;
use crate::tasks::Tasks;
use crate::telemetry::names;

static QUEUE_DEPTH: LazyLock<Gauge> = LazyLock::new(|| metrics::gauge!(names::AUDIT_QUEUE_DEPTH));

/// The request path's handle on the audit queues: the calling lane's writer, or the shared
/// one (see [`crate::lanes::LaneQueue`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditSink {
    queues: Arc<LaneQueue<Outcome>>,
    tasks: Tasks,
    waiting: Arc<AtomicU64>,
}

impl AuditSink {
    /// A sink feeding `queues`.
    pub fn new(queues: Arc<LaneQueue<Outcome>>, tasks: Tasks) -> Self {
        Self {
            queues,
            tasks,
            waiting: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands one outcome to the writer without waiting. When the queue is full (the writer is
    /// behind, e.g. its disk stalls), a tracked task waits for room instead of the request:
    /// the record is late, never lost. New requests wait in [`AuditSink::room`] meanwhile, so
    /// such tasks number at most the requests in flight.
    pub fn submit(&self, outcome: Outcome) {
        let tx = self.queues.sender();
        match tx.try_send(outcome) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(outcome)) => {
                let tx = tx.clone();
                let waiting = Arc::clone(&self.waiting);
                waiting.fetch_add(1, Ordering::Relaxed);
                self.tasks.spawn("audit-enqueue", async move {
                    if tx.send(outcome).await.is_err() {
                        tracing::error!("the audit writer has stopped; a record was lost");
                    }
                    waiting.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the audit writer has stopped; a record was lost");
            }
        }
        self.report_depth();
    }

    /// Waits while the calling lane's queue is full. Admission calls it before a request
    /// starts, so a writer that cannot keep up (a slow store) slows new requests down instead
    /// of letting records pile up in memory without bound; a request already running never
    /// waits for the audit.
    pub async fn room(&self) {
        let tx = self.queues.sender();
        if tx.capacity() == 0 {
            // Queued behind the records already waiting for room (the semaphore is fair);
            // the slot goes back at once.
            let _ = tx.reserve().await;
        }
    }

    /// Updates `sentinel_audit_queue_depth`.
    #[expect(clippy::cast_precision_loss, reason = "a gauge of a queue length")]
    fn report_depth(&self) {
        let queued: usize = self
            .queues
            .senders()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum();
        QUEUE_DEPTH.set(queued as f64 + self.waiting.load(Ordering::Relaxed) as f64);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            record: record::sample("room-t", "req", 1),
            cost_nano: 0,
            saved_nano: 0,
            settle: crate::store::Settlement::default(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_holds_new_requests_until_the_writer_takes_a_record() {
        let (queues, mut rx, _) = LaneQueue::new(0, 2);
        let sink = AuditSink::new(Arc::new(queues), Tasks::new());
        assert!(
            sink.room().now_or_never().is_some(),
            "an empty queue has room"
        );
        sink.submit(outcome());
        sink.submit(outcome());
        let mut waiting = Box::pin(sink.room());
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "a full queue has no room"
        );
        // A third record still goes in (behind the queue, in a task), never lost.
        sink.submit(outcome());
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_some());
        waiting.await;
    }
}
