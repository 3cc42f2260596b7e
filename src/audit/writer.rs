//! The audit writer: the task that seals and writes outcomes. A process runs one per serving
//! lane, fed by the requests that lane served, and one for other threads; each has its own
//! chain.
//!
//! It takes outcomes from the queue in batches, seals each into its tenant's chain (this
//! writer's chain id, `seq` + `prev_hash`), and writes the batch to the store. If the store
//! fails, the batch goes to the spill file and the writer switches to spilling: every later
//! batch is appended behind it, so order is kept, and every [`REPLAY_EVERY`] it tries to move
//! the spill into the store. Once the spill is empty it writes to the store directly again.
//! It runs until every sender is gone (the server has stopped and the last stream drain,
//! settlement and judge call have finished), so a record made during the shutdown grace is
//! still written; then it tries the spill once more and returns.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use metrics::Counter;
use tokio::sync::mpsc;

use super::record::GENESIS;
use super::spill::Spill;
use crate::store::{Outcome, Store};
use crate::telemetry::names;

/// Outcomes per store write.
pub const BATCH: usize = 512;
/// How often a spilling writer tries the store again.
pub const REPLAY_EVERY: Duration = Duration::from_millis(250);

static WRITE_FAILURES: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!(names::AUDIT_WRITE_FAILURES));
static SPILLED: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(names::AUDIT_SPILLED));

/// The spill file, shared by the writers of one process (one per serving lane and one for
/// other threads). Each writer appends its own batches in order, so each chain stays in order
/// in the file; whichever writer replays moves every chain's records, in file order.
pub type SharedSpill = Arc<tokio::sync::Mutex<Spill>>;

/// The writer's state.
pub struct AuditWriter {
    store: Arc<dyn Store>,
    spill: SharedSpill,
    chain: String,
    /// Per tenant: the last `seq` and `hash` this writer sealed.
    heads: HashMap<String, (u64, String)>,
    /// What the outcomes this writer spilled kept alive (a lease's budget share): held until
    /// the spill is empty, i.e. until those outcomes are written.
    held: Vec<crate::store::KeepAlive>,
}

impl AuditWriter {
    /// A writer with a fresh chain id (one chain per tenant and writer process).
    pub fn new(store: Arc<dyn Store>, spill: SharedSpill) -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        let chain = format!("w-{}", uuid::Uuid::now_v7().simple().encode_lower(&mut buf));
        Self {
            store,
            spill,
            chain,
            heads: HashMap::new(),
            held: Vec::new(),
        }
    }

    /// This writer's chain id.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Runs until the queue is closed and empty (every sender dropped), then returns.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Outcome>) {
        let mut buf = Vec::with_capacity(BATCH);
        let mut gather = crate::lanes::Gather::default();
        let mut tick = tokio::time::interval(REPLAY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    gather.top_up(&mut rx, &mut buf, BATCH).await;
                    self.write(std::mem::take(&mut buf)).await;
                }
                _ = tick.tick() => {
                    self.replay().await;
                    self.let_go_once_written().await;
                }
            }
        }
        self.replay().await;
        self.let_go_once_written().await;
        if !self.spill.lock().await.is_empty() {
            tracing::warn!("the store is unreachable at shutdown; audit records stay in the spill file and are replayed at the next start");
            // Their lease budget shares stay reserved in the store, which releases them by
            // itself: giving them back now would leave those costs counted nowhere.
            for kept in self.held.drain(..) {
                kept.0.leave_to_store();
            }
        }
    }

    /// Lets go of what spilled outcomes kept alive once the spill is empty: every one of them
    /// is written by then.
    async fn let_go_once_written(&mut self) {
        if !self.held.is_empty() && self.spill.lock().await.is_empty() {
            self.held.clear();
        }
    }

    /// Seals and writes one batch.
    async fn write(&mut self, mut batch: Vec<Outcome>) {
        for outcome in &mut batch {
            let r = &mut outcome.record;
            let head = self
                .heads
                .entry(r.tenant.clone())
                .or_insert_with(|| (0, GENESIS.to_owned()));
            r.seal(&self.chain, head.0 + 1, &head.1);
            *head = (r.seq, r.hash.clone());
        }
        let spilling = !self.spill.lock().await.is_empty();
        if !spilling {
            match self.store.record_outcomes(&batch).await {
                Ok(_) => return,
                Err(err) => {
                    WRITE_FAILURES.increment(1);
                    metrics::counter!(names::STORE_ERRORS, "op" => "audit_write").increment(1);
                    tracing::warn!(error = %err, records = batch.len(), "audit write failed; spilling to the local file until the store is back");
                }
            }
        }
        self.spill_batch(batch).await;
    }

    async fn spill_batch(&mut self, mut batch: Vec<Outcome>) {
        let n = batch.len() as u64;
        self.held
            .extend(batch.iter_mut().filter_map(|o| o.settle.keep.take()));
        match self.spill.lock().await.append(batch).await {
            Ok(()) => SPILLED.increment(n),
            Err(err) => {
                // The disk failed as well: nothing is left to keep the records.
                tracing::error!(error = %err, records = n, "audit records lost: neither the store nor the spill file could take them");
            }
        }
    }

    /// Moves spilled outcomes into the store, in order, until the spill is empty or the store
    /// fails again.
    async fn replay(&mut self) {
        // Held throughout, so two writers never replay the same records.
        let mut spill = self.spill.lock().await;
        if spill.is_empty() {
            return;
        }
        loop {
            let (chunk, next) = match spill.peek(BATCH).await {
                Ok(v) => v,
                Err(err) => {
                    tracing::error!(error = %err, "reading the audit spill file failed");
                    return;
                }
            };
            if !chunk.is_empty() {
                if let Err(err) = self.store.record_outcomes(&chunk).await {
                    tracing::debug!(error = %err, "the store is still unavailable for audit replay");
                    return;
                }
            }
            if let Err(err) = spill.advance(next).await {
                tracing::error!(error = %err, "advancing the audit spill file failed");
                return;
            }
            if chunk.is_empty() || spill.is_empty() {
                if spill.is_empty() {
                    tracing::info!("audit spill replayed; writing to the store again");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{AuditStore, Settlement};

    fn outcome(n: u64) -> Outcome {
        Outcome {
            record: super::super::record::sample("burst-t", &format!("req-{n}"), 1_000 + n),
            cost_nano: 1_000,
            saved_nano: 0,
            settle: Settlement::default(),
        }
    }

    /// Outcomes arriving while the writer lingers over a batch, and those still queued when
    /// the last sender goes, are all written, sealed in order into one unbroken chain.
    #[tokio::test]
    async fn every_outcome_of_a_burst_is_written_in_one_unbroken_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("s.db")).await.unwrap());
        let spill = Spill::open(&dir.path().join("spill.log")).unwrap();
        let writer = AuditWriter::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::new(tokio::sync::Mutex::new(spill)),
        );
        let chain = writer.chain().to_owned();
        let (tx, rx) = mpsc::channel(16);
        let tasks = crate::tasks::Tasks::new();
        let running = tasks.spawn("audit-writer", writer.run(rx));
        for n in 0..100 {
            tx.send(outcome(n)).await.unwrap();
            if n % 10 == 0 {
                // Let the writer take a first outcome and start lingering.
                tokio::task::yield_now().await;
            }
        }
        drop(tx);
        running.await.unwrap();

        let (records, heads) = store.audit_all("burst-t").await.unwrap();
        assert_eq!(records.len(), 100);
        let mut prev = GENESIS.to_owned();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.request_id, format!("req-{i}"));
            assert_eq!((r.chain.as_str(), r.seq), (chain.as_str(), i as u64 + 1));
            assert_eq!(r.prev_hash, prev);
            prev.clone_from(&r.hash);
        }
        assert_eq!(heads.len(), 1);
        assert_eq!((heads[0].seq, &heads[0].hash), (100, &prev));
    }

    /// Records whether it was let go of, and how.
    struct Probe {
        left: std::sync::atomic::AtomicBool,
        dropped: Arc<std::sync::atomic::AtomicBool>,
    }

    impl crate::store::Held for Probe {
        fn leave_to_store(&self) {
            self.left.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            if !self.left.load(std::sync::atomic::Ordering::SeqCst) {
                self.dropped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    fn kept(n: u64, dropped: &Arc<std::sync::atomic::AtomicBool>) -> Outcome {
        let mut o = outcome(n);
        o.settle.keep = Some(crate::store::KeepAlive(Arc::new(Probe {
            left: std::sync::atomic::AtomicBool::new(false),
            dropped: Arc::clone(dropped),
        })));
        o
    }

    /// Waits until the writer has spilled something, at most 10 s.
    async fn until_spilled(spill: &SharedSpill) {
        let t0 = std::time::Instant::now();
        while spill.lock().await.is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the outcome was not spilled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What a spilled outcome keeps alive (a lease's budget share) is let go of only once the
    /// spill has been written to the store; at exit with records still spilled it is left to
    /// the store instead of being let go.
    #[tokio::test]
    async fn a_spilled_outcome_keeps_its_hold_until_the_spill_is_written() {
        use std::sync::atomic::{AtomicBool, Ordering};

        use crate::store::redis::testing::RedisServer;
        use crate::store::redis::{RedisStore, RedisTarget};
        let dir = tempfile::tempdir().unwrap();
        let mut redis = RedisServer::start().await;
        let store: Arc<dyn Store> = Arc::new(
            RedisStore::connect(
                RedisTarget::Standalone(redis.url()),
                Duration::from_millis(200),
            )
            .await
            .unwrap(),
        );
        let spill = Arc::new(tokio::sync::Mutex::new(
            Spill::open(&dir.path().join("spill.log")).unwrap(),
        ));
        let tasks = crate::tasks::Tasks::new();
        let (tx, rx) = mpsc::channel(16);
        let running = tasks.spawn(
            "audit-writer",
            AuditWriter::new(Arc::clone(&store), Arc::clone(&spill)).run(rx),
        );

        redis.stop().await;
        let written_later = Arc::new(AtomicBool::new(false));
        tx.send(kept(0, &written_later)).await.unwrap();
        until_spilled(&spill).await;
        // Spilled, and the store is still away: held.
        tokio::time::sleep(REPLAY_EVERY * 2).await;
        assert!(
            !written_later.load(Ordering::SeqCst),
            "let go while only spilled"
        );

        redis.restart().await;
        let t0 = std::time::Instant::now();
        while !written_later.load(Ordering::SeqCst) {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "not let go once written"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(spill.lock().await.is_empty());

        // Stopping with a record still spilled: its hold is left to the store.
        redis.stop().await;
        let never = Arc::new(AtomicBool::new(false));
        tx.send(kept(1, &never)).await.unwrap();
        until_spilled(&spill).await;
        drop(tx);
        running.await.unwrap();
        assert!(
            !never.load(Ordering::SeqCst),
            "let go though its record was never written"
        );
    }
}
