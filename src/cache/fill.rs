//! The fill writers: the tasks that store fresh answers, one per serving lane (fed by the
//! requests that lane served, on its runtime) and one for other threads.
//!
//! A write per answer would cost the request's thread a socket write and a wake-up for the
//! store's reply on every miss. Instead [`super::Fill::store`] queues the answer and returns;
//! the writer wakes on the first fill of a batch, gathers more for [`crate::lanes::LINGER`],
//! and writes the batch at once (pipelined on one connection). A full queue drops the fill
//! (counted): it is only a cache. Semantic entries are indexed once their exact entry is
//! stored.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use metrics::Counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::entry::CachedAnswer;
use super::SemanticLookup;
use crate::lanes::{LaneQueue, LaneReceivers};
use crate::store::Store;
use crate::tasks::Tasks;
use crate::telemetry::names;

/// Fills waiting to be written; beyond it they are dropped.
pub const QUEUE: usize = 4096;
/// Fills per write.
pub const BATCH: usize = 256;

static DROPPED: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(names::CACHE_FILLS_DROPPED));

/// One answer to store.
#[derive(Debug)]
pub struct Pending {
    pub tenant: Arc<str>,
    pub key: String,
    pub ttl: Duration,
    pub answer: CachedAnswer,
    /// Also index it as a semantic entry: (partition, question text).
    pub semantic: Option<(String, String)>,
}

/// The queues, held by the cache.
#[derive(Debug)]
pub struct Filler {
    queues: LaneQueue<Pending>,
    lanes: LaneReceivers<Pending>,
    store: Arc<dyn Store>,
    semantic: Option<Arc<dyn SemanticLookup>>,
}

impl Filler {
    /// Queues for `lanes` lanes; starts the shared writer on `tasks` (each lane starts its own
    /// with [`Filler::start_lane`]). A writer stops once every sender is gone, or at shutdown
    /// after writing what is queued.
    pub fn start(
        store: Arc<dyn Store>,
        semantic: Option<Arc<dyn SemanticLookup>>,
        lanes: usize,
        tasks: &Tasks,
    ) -> Self {
        let (queues, rx, lanes) = LaneQueue::new(lanes, QUEUE);
        let filler = Self {
            queues,
            lanes,
            store,
            semantic,
        };
        filler.spawn_writer(rx, tasks);
        filler
    }

    /// Starts lane `lane`'s writer on the calling runtime (once).
    pub fn start_lane(&self, lane: usize, tasks: &Tasks) {
        if let Some(rx) = self.lanes.take(lane) {
            self.spawn_writer(rx, tasks);
        }
    }

    fn spawn_writer(&self, rx: mpsc::Receiver<Pending>, tasks: &Tasks) {
        let writer = Writer {
            store: Arc::clone(&self.store),
            semantic: self.semantic.clone(),
            tasks: tasks.clone(),
        };
        tasks.spawn("cache-fill", writer.run(rx, tasks.shutdown_token()));
    }

    /// Queues `fill` on the calling lane's writer without waiting; drops it when the queue is
    /// full or closed.
    pub fn queue(&self, fill: Pending) {
        if self.queues.sender().try_send(fill).is_err() {
            DROPPED.increment(1);
            tracing::debug!("cache fill dropped: the fill queue is full or closed");
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    semantic: Option<Arc<dyn SemanticLookup>>,
    tasks: Tasks,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Pending>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut gather = crate::lanes::Gather::default();
        loop {
            let n = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = stop.cancelled() => {
                    // Take no more; write what is queued below.
                    rx.close();
                    rx.recv_many(&mut batch, BATCH).await
                }
            };
            if n == 0 {
                return;
            }
            gather.top_up(&mut rx, &mut batch, BATCH).await;
            self.write(std::mem::take(&mut batch)).await;
        }
    }

    async fn write(&self, batch: Vec<Pending>) {
        let puts = batch.iter().map(|fill| async move {
            let value = fill.answer.encode();
            self.store
                .cache_put(&fill.tenant, &fill.key, &value, fill.ttl)
                .await
        });
        let results = futures_util::future::join_all(puts).await;
        for (fill, stored) in batch.into_iter().zip(results) {
            if let Err(e) = stored {
                metrics::counter!(names::STORE_ERRORS, "op" => "cache_put").increment(1);
                tracing::debug!(error = %e, "storing a cache entry failed");
                continue;
            }
            if let (Some((partition, text)), Some(semantic)) = (fill.semantic, &self.semantic) {
                // Indexing embeds the question: its own task, so it does not hold up the
                // next batch.
                let semantic = Arc::clone(semantic);
                self.tasks.spawn("cache-index", async move {
                    semantic
                        .add(&fill.tenant, &partition, &text, &fill.key)
                        .await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::CacheStore;

    fn pending(n: usize) -> Pending {
        Pending {
            tenant: Arc::from("fill-t"),
            key: format!("key-{n}"),
            ttl: Duration::from_secs(60),
            answer: CachedAnswer {
                cost_nano: 7,
                body: bytes::Bytes::from(format!("{{\"n\":{n}}}")),
            },
            semantic: None,
        }
    }

    /// More fills than one batch, queued faster than they are written: every one is stored,
    /// the last ones by the shutdown drain.
    #[tokio::test]
    async fn every_queued_fill_is_stored_by_the_time_shutdown_has_drained() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.db")).await.unwrap());
        store.set_cache_max_entries(10_000);
        let tasks = Tasks::new();
        let filler = Filler::start(Arc::clone(&store) as Arc<dyn Store>, None, 0, &tasks);
        let total = BATCH * 2 + 10;
        for n in 0..total {
            filler.queue(pending(n));
        }
        tasks.begin_shutdown();
        assert!(tasks.drain(Duration::from_secs(10)).await);
        for n in 0..total {
            let stored = store
                .cache_get("fill-t", &format!("key-{n}"))
                .await
                .unwrap();
            let answer = CachedAnswer::decode(&stored.unwrap()).unwrap();
            assert_eq!(answer.body, format!("{{\"n\":{n}}}"));
        }
        // The writer is gone: a later fill is dropped, not queued forever.
        filler.queue(pending(total));
        assert!(store
            .cache_get("fill-t", &format!("key-{total}"))
            .await
            .unwrap()
            .is_none());
    }
}
