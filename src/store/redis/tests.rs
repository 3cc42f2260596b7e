//! The conformance suite against a private standalone server and a private 3-node cluster,
//! plus failure behaviour: a dead or frozen store answers within the timeout, and the store
//! recovers by itself.

use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};

use super::testing::{free_port, RedisCluster, RedisServer};
use super::{RedisStore, RedisTarget};
use crate::store::{conformance, KeyRecord, KeyStore, Store, StoreError, Tenant, TenantStore};

const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// Scheduling slack on top of the operation timeout.
const MARGIN: Duration = Duration::from_millis(250);

async fn standalone(server: &RedisServer) -> RedisStore {
    RedisStore::connect(RedisTarget::Standalone(server.url()), OP_TIMEOUT)
        .await
        .unwrap()
}

fn tenant(id: &str) -> Tenant {
    Tenant::new(id)
}

async fn next_change(changes: &mut (impl Stream<Item = String> + Unpin)) -> String {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("a change within 5 s")
        .expect("the stream goes on")
}

/// Retries `get_tenant` until the store answers again, at most 10 s.
async fn until_answering(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get_tenant("anyone").await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "the store did not recover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_passes_conformance() {
    let server = RedisServer::start().await;
    let store = standalone(&server).await;
    assert_eq!(store.backend(), "redis");
    conformance::run_all(&store).await;
    every_per_request_key_expires(&server).await;
}

/// The scripts set an expiry only when they create a key; this checks that no window bucket,
/// rollup or audit lookup key the conformance run wrote was left without one.
async fn every_per_request_key_expires(server: &RedisServer) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let per_request =
        |k: &str| k.contains(":win:") || k.contains(":usage:") || k.contains(":audit:rid:");
    let checked: Vec<&String> = keys.iter().filter(|k| per_request(k)).collect();
    assert!(checked.len() > 10, "the run wrote such keys: {keys:?}");
    for key in checked {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry ({ttl})");
    }
}

/// Redis's own count of calls to `command` since the server started.
async fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// One chain of `n` sealed outcomes of `tenant`, record `i` stamped `ts(i)`.
fn sealed_chain(tenant: &str, n: u64, ts: impl Fn(u64) -> u64) -> Vec<crate::store::Outcome> {
    let mut prev = crate::audit::record::GENESIS.to_owned();
    (1..=n)
        .map(|i| {
            let mut record = crate::audit::record::sample(tenant, &format!("req-{i}"), ts(i));
            record.seal(&format!("w-{tenant}"), i, &prev);
            prev.clone_from(&record.hash);
            crate::store::Outcome {
                record,
                cost_nano: 1,
                saved_nano: 0,
                settle: crate::store::Settlement::default(),
            }
        })
        .collect()
}

/// The stream of `tenant` holds `req-1` to `req-n`, in that (the chain's) order.
async fn assert_stream_in_chain_order(store: &RedisStore, tenant: &str, n: u64) {
    use crate::store::AuditStore;
    let (records, heads) = store.audit_all(tenant).await.unwrap();
    let ids: Vec<_> = records.iter().map(|r| r.request_id.clone()).collect();
    let expected: Vec<_> = (1..=n).map(|i| format!("req-{i}")).collect();
    assert_eq!(ids, expected, "the stream holds the chain's order");
    assert_eq!(heads[0].seq, n);
}

/// A batch whose records did not finish in the order they started (a slow request sealed
/// after quicker ones that started later) still takes one `XADD` per record: the script never
/// asks for an entry id below the one it just added, so it never has to read the stream's top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_out_of_time_order_appends_without_reading_the_stream() {
    use crate::store::AuditStore;
    let server = RedisServer::start().await;
    let store = standalone(&server).await;
    let t0 = crate::audit::record::now_ms();
    // Every other record started 10 ms before the one sealed ahead of it.
    let batch = sealed_chain(
        "ooo-t",
        20,
        |i| if i % 2 == 0 { t0 + i - 10 } else { t0 + i },
    );
    assert_eq!(store.record_outcomes(&batch).await.unwrap(), 20);
    assert_eq!(command_calls(&server, "xadd").await, 20);
    assert_eq!(command_calls(&server, "xrevrange").await, 0);
    assert_stream_in_chain_order(&store, "ooo-t", 20).await;
}

/// A Redis that lost its scripts (a restart, `SCRIPT FLUSH`) gets a whole batch, in order,
/// on the first try: the pipeline loads the script before its calls, so no call is refused
/// and retried behind a later one (which would then make the earlier records look written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_after_redis_lost_its_scripts_is_written_whole_and_in_order() {
    use crate::store::AuditStore;
    let server = RedisServer::start().await;
    let store = standalone(&server).await;
    let t0 = crate::audit::record::now_ms();
    let outcomes = sealed_chain("flush-t", 100, |i| t0 + i);
    assert_eq!(store.record_outcomes(&outcomes[..1]).await.unwrap(), 1);
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Four script calls' worth, all sent in one pipeline.
    assert_eq!(store.record_outcomes(&outcomes[1..]).await.unwrap(), 99);
    assert_stream_in_chain_order(&store, "flush-t", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_passes_conformance() {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::connect(RedisTarget::Cluster(cluster.urls()), OP_TIMEOUT)
        .await
        .unwrap();
    conformance::run_all(&store).await;
    // Notifications work through a cluster too.
    let mut changes = Box::pin(store.subscribe_changes().await.unwrap());
    store.put_tenant(&tenant("c-sub")).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "c-sub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_publish_the_changed_ids() {
    let server = RedisServer::start().await;
    let store = standalone(&server).await;
    let mut changes = Box::pin(store.subscribe_changes().await.unwrap());
    store.put_tenant(&tenant("n-t")).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "n-t");
    let key = KeyRecord {
        id: "key_n".into(),
        tenant: "n-t".into(),
        name: "ci".into(),
        prefix: "sk-sntl-abcd".into(),
        hash: "ab".repeat(32),
        created_at: 1,
        expires_at: None,
        revoked_at: None,
        limits: crate::store::Limits::default(),
    };
    store.put_key(&key).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "key_n");
    store.revoke_key("key_n", 5).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "key_n");
    assert!(store.delete_tenant("n-t").await.unwrap());
    assert_eq!(next_change(&mut changes).await, "n-t");
    assert_eq!(next_change(&mut changes).await, "key_n");
    assert_eq!(
        store.key_by_id("key_n").await.unwrap().unwrap().revoked_at,
        Some(5),
        "the first revocation stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_fails_fast_and_recovers_by_itself() {
    let mut server = RedisServer::start().await;
    let store = standalone(&server).await;
    let mut changes = Box::pin(store.subscribe_changes().await.unwrap());
    store.put_tenant(&tenant("d-t")).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "d-t");

    server.stop().await;
    // Several operations while down, each bounded (the first sees the dropped connection,
    // later ones wait on the reconnect attempts).
    for _ in 0..3 {
        let started = Instant::now();
        let err = store.get_tenant("d-t").await.unwrap_err();
        assert!(
            matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
            "{err:?}"
        );
        assert!(
            started.elapsed() < OP_TIMEOUT + MARGIN,
            "took {:?}",
            started.elapsed()
        );
    }

    server.restart().await;
    until_answering(&store).await;
    // Nothing was persisted: the store is empty again, and writes work.
    assert!(store.get_tenant("d-t").await.unwrap().is_none());
    // The subscription came back on its own and says changes may have been missed.
    assert_eq!(next_change(&mut changes).await, "");
    store.put_tenant(&tenant("d-t2")).await.unwrap();
    assert_eq!(next_change(&mut changes).await, "d-t2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_store_times_out() {
    let server = RedisServer::start().await;
    let store = standalone(&server).await;
    store.put_tenant(&tenant("f-t")).await.unwrap();

    server.pause().await;
    let started = Instant::now();
    let err = store.get_tenant("f-t").await.unwrap_err();
    let took = started.elapsed();
    server.resume().await;
    assert!(matches!(err, StoreError::Timeout), "{err:?}");
    assert!(took < OP_TIMEOUT + MARGIN, "took {took:?}");

    until_answering(&store).await;
    assert_eq!(store.get_tenant("f-t").await.unwrap().unwrap().id, "f-t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_fails() {
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let started = Instant::now();
    let err = RedisStore::connect(RedisTarget::Standalone(url), OP_TIMEOUT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1) + MARGIN,
        "took {:?}",
        started.elapsed()
    );
}

/// What the lease tests read and write: tenant `t`, an rpm window of 100, a budget of
/// 1,000,000 nano-USD in period `2026-12`.
mod leases {
    use std::time::Duration;

    use crate::store::{BudgetReserve, LeaseEnd, LeasePart, LeaseTake, WindowTake};

    pub const MINUTE: Duration = Duration::from_secs(60);
    pub const LATER: Duration = Duration::from_secs(60);

    pub fn rpm(amount: u64) -> WindowTake {
        WindowTake {
            scope: "t:rpm".into(),
            limit: 100,
            amount,
        }
    }

    pub fn budget(amount: i64) -> BudgetReserve {
        BudgetReserve {
            tenant: "t".into(),
            period: "2026-12".into(),
            amount,
            limit: 1_000_000,
            enforce: true,
        }
    }

    pub fn lease(
        id: &str,
        now_ms: u64,
        takes: Vec<WindowTake>,
        budget: Option<BudgetReserve>,
        reap_after: Duration,
    ) -> LeaseTake {
        LeaseTake {
            tenant: "t".into(),
            id: id.into(),
            takes,
            budget,
            now_ms,
            reap_after,
        }
    }

    pub fn windows_part(id: &str, unused: u64, at_ms: u64) -> LeaseEnd {
        LeaseEnd {
            tenant: "t".into(),
            id: id.into(),
            part: LeasePart::Windows {
                unused: vec![("t:rpm".into(), unused)],
                at_ms,
            },
        }
    }

    pub fn budget_part(id: &str, amount: i64) -> LeaseEnd {
        LeaseEnd {
            tenant: "t".into(),
            id: id.into(),
            part: LeasePart::Budget {
                period: "2026-12".into(),
                amount,
            },
        }
    }

    /// A private Redis, the store on it, a plain connection to read it with, and now.
    pub async fn setup() -> (
        super::RedisServer,
        super::RedisStore,
        redis::aio::MultiplexedConnection,
        u64,
    ) {
        let server = super::RedisServer::start().await;
        let store = super::standalone(&server).await;
        let client = redis::Client::open(server.url()).unwrap();
        let conn = client.get_multiplexed_async_connection().await.unwrap();
        (server, store, conn, crate::audit::record::now_ms())
    }

    /// The rpm window's current bucket.
    pub async fn rpm_count(conn: &mut redis::aio::MultiplexedConnection, now_ms: u64) -> i64 {
        let bucket = super::super::keys::window("t:rpm", now_ms / 60_000);
        let n: Option<i64> = redis::cmd("GET")
            .arg(&bucket)
            .query_async(conn)
            .await
            .unwrap();
        n.unwrap_or(0)
    }
}

/// Admission leases on Redis: taken all or nothing, and each part given back at most once
/// (a give-back retried after it timed out and ran late changes nothing twice).
#[tokio::test]
async fn a_lease_is_all_or_nothing_and_each_part_is_given_back_once() {
    use self::leases::{budget, budget_part, lease, rpm, rpm_count, windows_part, LATER, MINUTE};
    use crate::store::{CounterStore, WindowTake};
    let (_server, store, mut conn, now) = leases::setup().await;

    // The tpm window cannot take 2,000 of 1,000: nothing is taken, the rpm part neither.
    let tpm = WindowTake {
        scope: "t:tpm".into(),
        limit: 1_000,
        amount: 2_000,
    };
    let refused = lease("a", now, vec![rpm(10), tpm], Some(budget(5_000)), LATER);
    assert_eq!(store.lease_take(&refused, MINUTE).await.unwrap(), None);
    assert_eq!(rpm_count(&mut conn, now).await, 0);
    assert_eq!(store.budget_state("t", "2026-12").await.unwrap(), (0, 0));
    // A budget that cannot take it: the same.
    let too_dear = lease("b", now, vec![rpm(10)], Some(budget(2_000_000)), LATER);
    assert_eq!(store.lease_take(&too_dear, MINUTE).await.unwrap(), None);
    assert_eq!(rpm_count(&mut conn, now).await, 0);

    let granted = lease("c", now, vec![rpm(10)], Some(budget(5_000)), LATER);
    let grant = store.lease_take(&granted, MINUTE).await.unwrap().unwrap();
    assert_eq!(grant.counts, [10]);
    assert_eq!(grant.budget, Some((0, 0)));
    assert_eq!(rpm_count(&mut conn, now).await, 10);
    assert_eq!(
        store.budget_state("t", "2026-12").await.unwrap(),
        (0, 5_000)
    );
    for _ in 0..2 {
        store
            .lease_end(&windows_part("c", 4, now), MINUTE)
            .await
            .unwrap();
        assert_eq!(rpm_count(&mut conn, now).await, 6, "given back once");
        assert_eq!(
            store.budget_state("t", "2026-12").await.unwrap(),
            (0, 5_000)
        );
    }
    for _ in 0..2 {
        store
            .lease_end(&budget_part("c", 5_000), MINUTE)
            .await
            .unwrap();
        assert_eq!(store.budget_state("t", "2026-12").await.unwrap(), (0, 0));
    }
}

/// A lease never given back: the next admission that reads its budget after its reap time
/// releases its reservation (the windows are left to expire), its late give-backs change
/// nothing, and a part of another budget period is only dropped from the register.
#[tokio::test]
async fn a_lease_never_given_back_is_reaped_by_the_store() {
    use self::leases::{budget, budget_part, lease, rpm, rpm_count, windows_part, MINUTE};
    use crate::store::{BudgetReserve, CounterStore};
    let (_server, store, mut conn, now) = leases::setup().await;

    let lost = lease("d", now, vec![rpm(10)], Some(budget(7_000)), Duration::ZERO);
    store.lease_take(&lost, MINUTE).await.unwrap().unwrap();
    assert_eq!(
        store.budget_state("t", "2026-12").await.unwrap(),
        (0, 7_000)
    );
    let (_, spend) = store
        .admit(&[], MINUTE, Some(&budget(1)), now)
        .await
        .unwrap();
    assert_eq!(spend.unwrap().reserved, 0, "reaped before this reservation");
    assert_eq!(store.budget_state("t", "2026-12").await.unwrap(), (0, 1));
    store
        .lease_end(&windows_part("d", 4, now), MINUTE)
        .await
        .unwrap();
    store
        .lease_end(&budget_part("d", 7_000), MINUTE)
        .await
        .unwrap();
    assert_eq!(store.budget_state("t", "2026-12").await.unwrap(), (0, 1));
    assert_eq!(rpm_count(&mut conn, now).await, 10);

    let other = lease(
        "e",
        now,
        vec![],
        Some(BudgetReserve {
            period: "2026-11".into(),
            ..budget(3_000)
        }),
        Duration::ZERO,
    );
    store.lease_take(&other, MINUTE).await.unwrap().unwrap();
    assert_eq!(
        store.budget_state("t", "2026-11").await.unwrap(),
        (0, 3_000)
    );
    store
        .admit(&[], MINUTE, Some(&budget(1)), now)
        .await
        .unwrap();
    assert_eq!(
        store.budget_state("t", "2026-11").await.unwrap(),
        (0, 3_000)
    );
    let members: u64 = redis::cmd("ZCARD")
        .arg(super::keys::leases("t"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 0, "every reaped part left the register");
}
