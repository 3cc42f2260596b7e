//! One conformance suite for every backend: each method's contract, exercised the same way.
//! A backend's tests call [`run_all`] on a fresh, empty store.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{
    AuditQuery, Budget, BudgetReserve, KeyRecord, Limits, Outcome, Settlement, Store, Tenant,
    UsageGrain, WindowSettle, WindowTake,
};
use crate::config::raw::{BudgetPeriod, PolicyMode};

/// Runs every check; each uses its own tenant ids, so one store serves them all.
pub async fn run_all<S: Store>(store: &S) {
    tenants(store).await;
    keys(store).await;
    windows(store).await;
    window_adjust(store).await;
    budgets(store).await;
    combined_admission(store).await;
    concurrent_takes_are_atomic(store).await;
    audit_outcomes(store).await;
    batched_outcomes(store).await;
    audit_pages(store).await;
    cache_entries(store).await;
    semantic_partitions(store).await;
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: Some(format!("{id} inc")),
        models: vec!["demo".into()],
        limits: Limits {
            rpm: NonZeroU32::new(60),
            tpm: None,
            mode: PolicyMode::Enforce,
        },
        budget: Some(Budget {
            limit_usd: 12.5,
            period: BudgetPeriod::Month,
            mode: PolicyMode::DryRun,
        }),
        shield: None,
        judge: None,
        cache: None,
    }
}

fn key(id: &str, tenant: &str, hash_byte: u8) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        tenant: tenant.into(),
        name: "ci".into(),
        prefix: "sk-sntl-abcd".into(),
        hash: hex32(hash_byte),
        created_at: 1_700_000_000,
        expires_at: Some(1_800_000_000),
        revoked_at: None,
        // Odd hashes carry per-key limits, so both the empty and the set form round-trip.
        limits: if hash_byte % 2 == 1 {
            Limits {
                rpm: NonZeroU32::new(7),
                tpm: NonZeroU32::new(700),
                mode: PolicyMode::DryRun,
            }
        } else {
            Limits::default()
        },
    }
}

fn hex32(b: u8) -> String {
    format!("{b:02x}").repeat(32)
}

async fn tenants<S: Store>(s: &S) {
    assert!(s.get_tenant("t-a").await.unwrap().is_none());
    s.put_tenant(&tenant("t-a")).await.unwrap();
    s.put_tenant(&tenant("t-b")).await.unwrap();
    assert_eq!(s.get_tenant("t-a").await.unwrap(), Some(tenant("t-a")));
    let mut changed = tenant("t-a");
    changed.models.clear();
    s.put_tenant(&changed).await.unwrap();
    assert_eq!(
        s.get_tenant("t-a").await.unwrap().unwrap().models,
        Vec::<String>::new()
    );
    let ids: Vec<String> = s
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .filter(|i| i.starts_with("t-"))
        .collect();
    assert_eq!(ids, ["t-a", "t-b"]);
    assert!(s.delete_tenant("t-b").await.unwrap());
    assert!(!s.delete_tenant("t-b").await.unwrap());
    assert!(s.get_tenant("t-b").await.unwrap().is_none());
}

async fn keys<S: Store>(s: &S) {
    s.put_tenant(&tenant("k-t")).await.unwrap();
    let seq0 = s.change_seq().await.unwrap();
    s.put_key(&key("key_1", "k-t", 1)).await.unwrap();
    s.put_key(&key("key_2", "k-t", 2)).await.unwrap();
    let mut hash = [0u8; 32];
    hash.fill(1);
    assert_eq!(
        s.key_by_hash(&hash).await.unwrap(),
        Some(key("key_1", "k-t", 1))
    );
    assert!(s.key_by_hash(&[9u8; 32]).await.unwrap().is_none());
    assert_eq!(
        s.key_by_id("key_2").await.unwrap(),
        Some(key("key_2", "k-t", 2))
    );
    let listed: Vec<String> = s
        .list_keys("k-t")
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["key_1", "key_2"]);
    assert!(s.list_keys("nobody").await.unwrap().is_empty());

    let revoked = s.revoke_key("key_1", 1_750_000_000).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(1_750_000_000));
    let again = s.revoke_key("key_1", 1_760_000_000).await.unwrap().unwrap();
    assert_eq!(
        again.revoked_at,
        Some(1_750_000_000),
        "revocation keeps its first time"
    );
    assert_eq!(
        s.key_by_hash(&hash).await.unwrap().unwrap().revoked_at,
        Some(1_750_000_000)
    );
    assert!(s.revoke_key("key_missing", 1).await.unwrap().is_none());
    assert!(
        s.change_seq().await.unwrap() > seq0,
        "key changes advance the change sequence"
    );

    // Deleting a tenant revokes its keys.
    let seq1 = s.change_seq().await.unwrap();
    assert!(s.delete_tenant("k-t").await.unwrap());
    assert!(s
        .key_by_id("key_2")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    assert!(s.change_seq().await.unwrap() > seq1);
}

async fn windows<S: Store>(s: &S) {
    let w = Duration::from_secs(60);
    let t0 = 1_000_020_000_000; // a multiple of 60 s
    assert_eq!(t0 % 60_000, 0);
    for i in 0..5 {
        let d = s.window_take("w:rpm", 5, w, 1, t0 + i).await.unwrap();
        assert!(d.allowed, "take {i}");
        assert_eq!(d.count, i + 1);
        assert_eq!(d.retry_after_ms, 0);
    }
    let refused = s.window_take("w:rpm", 5, w, 1, t0 + 10).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!(refused.count, 5, "a refused take adds nothing");
    assert_eq!(
        refused.retry_after_ms,
        60_000 - 10,
        "the current window is full: wait for the next"
    );
    // Half-way through the next window the previous one weighs half: 5 * 0.5 = 2 (floor).
    let half = s.window_take("w:rpm", 5, w, 3, t0 + 90_000).await.unwrap();
    assert!(half.allowed);
    assert_eq!(half.count, 2 + 3);
    let refused = s.window_take("w:rpm", 5, w, 1, t0 + 90_000).await.unwrap();
    assert!(!refused.allowed);
    // 3 + 1 fit the current window; the previous 5 must weigh at most 1: at 48 s in.
    assert_eq!(refused.retry_after_ms, 18_000);
    // Two windows later nothing old counts.
    let fresh = s.window_take("w:rpm", 5, w, 5, t0 + 240_000).await.unwrap();
    assert!(fresh.allowed);
    assert_eq!(fresh.count, 5);
    // An amount larger than the limit never fits.
    let huge = s.window_take("w:other", 5, w, 6, t0).await.unwrap();
    assert!(!huge.allowed);
    assert_eq!(huge.count, 0);
    assert_eq!(huge.retry_after_ms, 60_000);
}

async fn window_adjust<S: Store>(s: &S) {
    let w = Duration::from_secs(60);
    let t0 = 1_000_020_000_000;
    assert!(
        s.window_take("w:tpm", 1000, w, 800, t0)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !s.window_take("w:tpm", 1000, w, 300, t0 + 1)
            .await
            .unwrap()
            .allowed
    );
    // The reservation of 800 settles to 100 real tokens: 700 come back.
    s.window_adjust("w:tpm", w, -700, t0).await.unwrap();
    let d = s.window_take("w:tpm", 1000, w, 300, t0 + 2).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.count, 400);
    // Adjusting never goes below zero.
    s.window_adjust("w:tpm", w, -10_000, t0).await.unwrap();
    assert_eq!(
        s.window_take("w:tpm", 1000, w, 1, t0 + 3)
            .await
            .unwrap()
            .count,
        1
    );
}

async fn budgets<S: Store>(s: &S) {
    let limit = 1_000;
    assert_eq!(s.budget_state("b-t", "2026-11").await.unwrap(), (0, 0));
    let d = s
        .budget_reserve("b-t", "2026-11", 600, limit, true)
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!((d.spent, d.reserved), (0, 0));
    let d = s
        .budget_reserve("b-t", "2026-11", 500, limit, true)
        .await
        .unwrap();
    assert!(!d.allowed, "600 reserved + 500 > 1000");
    assert_eq!((d.spent, d.reserved), (0, 600));
    s.budget_settle("b-t", "2026-11", 600, 250).await.unwrap();
    assert_eq!(s.budget_state("b-t", "2026-11").await.unwrap(), (250, 0));
    assert!(
        s.budget_reserve("b-t", "2026-11", 750, limit, true)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !s.budget_reserve("b-t", "2026-11", 1, limit, true)
            .await
            .unwrap()
            .allowed
    );
    // dry_run: never refused, still tracked.
    let d = s
        .budget_reserve("b-t", "2026-11", 5_000, limit, false)
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!(
        s.budget_state("b-t", "2026-11").await.unwrap(),
        (250, 5_750)
    );
    // Periods are independent.
    assert_eq!(s.budget_state("b-t", "2026-12").await.unwrap(), (0, 0));
    // Settling more than was reserved floors the reservation at zero.
    s.budget_settle("b-t", "2026-11", 99_999, 10).await.unwrap();
    assert_eq!(s.budget_state("b-t", "2026-11").await.unwrap(), (260, 0));
}

/// `admit` decides every window and the budget exactly as the separate methods do, in one
/// step, and leaves the same state behind.
async fn combined_admission<S: Store>(s: &S) {
    let minute = Duration::from_secs(60);
    let now = 1_700_000_010_000_u64;
    let takes = |tokens: u64| {
        vec![
            WindowTake {
                scope: "adm-t:key:k1:rpm".into(),
                limit: 2,
                amount: 1,
            },
            WindowTake {
                scope: "adm-t:rpm".into(),
                limit: 5,
                amount: 1,
            },
            WindowTake {
                scope: "adm-t:tpm".into(),
                limit: 100,
                amount: tokens,
            },
        ]
    };
    let budget = |amount: i64| BudgetReserve {
        tenant: "adm-t".into(),
        period: "2026-11-28".into(),
        amount,
        limit: 1_000,
        enforce: true,
    };
    let (d, spend) = s
        .admit(&takes(60), minute, Some(&budget(600)), now)
        .await
        .unwrap();
    assert_eq!(
        d.iter().map(|d| (d.allowed, d.count)).collect::<Vec<_>>(),
        [(true, 1), (true, 1), (true, 60)]
    );
    let spend = spend.unwrap();
    assert!(spend.allowed);
    assert_eq!((spend.spent, spend.reserved), (0, 0));
    // The second: the key's rpm still fits, the tokens and the budget do not.
    let (d, spend) = s
        .admit(&takes(60), minute, Some(&budget(600)), now + 1)
        .await
        .unwrap();
    assert_eq!(
        d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(d[2].count, 60, "a refused take reports the count it saw");
    assert!(d[2].retry_after_ms > 0);
    let spend = spend.unwrap();
    assert!(!spend.allowed);
    assert_eq!(spend.reserved, 600);
    // The third: the key's own window is full.
    let (d, spend) = s.admit(&takes(1), minute, None, now + 2).await.unwrap();
    assert_eq!(
        d.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert!(spend.is_none());
    // The state is what the separate methods see.
    let seen = s
        .window_take("adm-t:rpm", 5, minute, 0, now + 3)
        .await
        .unwrap();
    assert_eq!(seen.count, 3);
    assert_eq!(
        s.budget_state("adm-t", "2026-11-28").await.unwrap(),
        (0, 600)
    );
    assert_eq!(
        s.admit(&[], minute, None, now).await.unwrap(),
        (Vec::new(), None)
    );
}

async fn concurrent_takes_are_atomic<S: Store>(s: &S) {
    let w = Duration::from_secs(60);
    let t0 = 1_000_020_000_000;
    let takes = (0..50).map(|i| s.window_take("w:race", 20, w, 1, t0 + i));
    let admitted = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(admitted, 20);
    let reserves = (0..50).map(|_| s.budget_reserve("race-t", "2026-11", 10, 200, true));
    let admitted = futures_util::future::join_all(reserves)
        .await
        .into_iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(admitted, 20);
}

fn outcome(tenant: &str, id: &str, ts_ms: u64, seq: u64, prev: &str) -> Outcome {
    let mut record = crate::audit::record::sample(tenant, id, ts_ms);
    record.seal("w-test", seq, prev);
    Outcome {
        record,
        cost_nano: 1_500,
        saved_nano: 0,
        settle: Settlement::default(),
    }
}

/// Outcomes are written once, with their rollups and settlements, and replays change nothing.
/// Midnight UTC two days ago: recent enough to be inside any retention.
fn recent_midnight() -> u64 {
    let day = 86_400_000;
    crate::audit::record::now_ms() / day * day - 2 * day
}

#[expect(
    clippy::too_many_lines,
    reason = "one scenario: reservations, a batch, its replay, and every figure it moved"
)]
async fn audit_outcomes<S: Store>(s: &S) {
    use crate::audit::record::day_of;
    let t0 = recent_midnight();
    let (d1, d2, d3) = (
        day_of(t0),
        day_of(t0 + 86_400_000),
        day_of(t0 + 2 * 86_400_000),
    );
    let month = d1[..7].to_owned();
    let w = Duration::from_secs(60);
    // Reservations made before the requests ran.
    assert!(
        s.budget_reserve("au-t", &month, 10_000, 1_000_000, true)
            .await
            .unwrap()
            .allowed
    );
    assert!(
        s.window_take("au-t:tpm", 1_000, w, 100, t0)
            .await
            .unwrap()
            .allowed
    );

    let a = outcome("au-t", "req-a", t0, 1, crate::audit::record::GENESIS);
    let mut b = outcome("au-t", "req-b", t0 + 1, 2, &a.record.hash);
    b.cost_nano = 2_500;
    b.settle = Settlement {
        budget: Some((month.clone(), 10_000)),
        windows: vec![WindowSettle {
            scope: "au-t:tpm".into(),
            window_ms: 60_000,
            delta: -85,
            taken_at_ms: t0,
        }],
        keep: None,
    };
    let mut hit = outcome("au-t", "req-c", t0 + 86_400_000, 3, &b.record.hash);
    hit.record.cache = "exact".into();
    hit.record.model = "other".into();
    hit.cost_nano = 0;
    hit.saved_nano = 700;
    let batch = vec![a.clone(), b.clone(), hit.clone()];
    assert_eq!(s.record_outcomes(&batch).await.unwrap(), 3);
    // A replay (after a spill) is skipped whole: no second settlement, no double count.
    assert_eq!(s.record_outcomes(&batch).await.unwrap(), 0);

    assert_eq!(s.budget_state("au-t", &month).await.unwrap(), (2_500, 0));
    // 100 reserved, settled to 15: 985 tokens left in the window.
    assert!(
        s.window_take("au-t:tpm", 1_000, w, 985, t0 + 1)
            .await
            .unwrap()
            .allowed
    );

    let rows = s
        .usage_rows("au-t", &d1, &d2, UsageGrain::Model)
        .await
        .unwrap();
    let day1: Vec<_> = rows.iter().filter(|r| r.day == d1).collect();
    assert_eq!(day1.len(), 1, "{rows:?}");
    assert_eq!(
        (
            day1[0].requests,
            day1[0].prompt_tokens,
            day1[0].completion_tokens,
            day1[0].cost_nano
        ),
        (2, 20, 10, 4_000)
    );
    let day2 = rows.iter().find(|r| r.day == d2).unwrap();
    assert_eq!(
        (
            day2.model.as_str(),
            day2.cache_hits,
            day2.saved_nano,
            day2.cost_nano
        ),
        ("other", 1, 700, 0)
    );
    // The same figures per key: one key made all three requests.
    let by_key = s
        .usage_rows("au-t", &d1, &d2, UsageGrain::Key)
        .await
        .unwrap();
    assert_eq!(
        by_key
            .iter()
            .map(|r| (
                r.day.as_str(),
                r.key_id.as_str(),
                r.requests,
                r.model.is_empty()
            ))
            .collect::<Vec<_>>(),
        [
            (d1.as_str(), "key_1", 2, true),
            (d2.as_str(), "key_1", 1, true)
        ]
    );
    assert!(s
        .usage_rows("au-t", &d3, &d3, UsageGrain::Model)
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .usage_rows("other-t", &d1, &d2, UsageGrain::Key)
        .await
        .unwrap()
        .is_empty());

    audit_lookups(s, &b.record, &hit.record).await;
}

/// The outcomes of `tenant`, one chain: costs rise, every third request had reserved more
/// than the budget holds, the token corrections drive the window to zero and back, and every
/// tenth request started before the ones sealed ahead of it (a slow request finishing late).
fn settling_outcomes(tenant: &str, t0: u64, month: &str) -> Vec<Outcome> {
    let mut prev = crate::audit::record::GENESIS.to_owned();
    (1..=70u64)
        .map(|i| {
            let ts = if i % 10 == 0 { t0 } else { t0 + i };
            let mut o = outcome(tenant, &format!("req-{i}"), ts, i, &prev);
            prev.clone_from(&o.record.hash);
            o.cost_nano = i64::try_from(i * 100).unwrap();
            o.settle = Settlement {
                budget: Some((month.to_owned(), if i % 3 == 0 { 5_000 } else { 50 })),
                windows: vec![WindowSettle {
                    scope: format!("{tenant}:tpm"),
                    window_ms: 60_000,
                    delta: if i % 4 == 0 { -40 } else { 7 },
                    taken_at_ms: t0,
                }],
                keep: None,
            };
            o
        })
        .collect()
}

/// A batch settles exactly as its outcomes written one call at a time: each release floors
/// the reservation at zero and each token correction floors the window, in order, even when
/// the backend folds a batch's counters together; a batch that starts with records already
/// written skips them and writes the new ones after them; a batch larger than one script call
/// keeps its order.
async fn batched_outcomes<S: Store>(s: &S) {
    let t0 = recent_midnight();
    let month = crate::audit::record::day_of(t0)[..7].to_owned();
    let w = Duration::from_secs(60);
    for tenant in ["bo-one", "bo-batch"] {
        assert!(
            s.budget_reserve(tenant, &month, 20_000, 1_000_000, true)
                .await
                .unwrap()
                .allowed
        );
        let scope = format!("{tenant}:tpm");
        assert!(
            s.window_take(&scope, 1_000, w, 100, t0)
                .await
                .unwrap()
                .allowed
        );
    }
    for o in settling_outcomes("bo-one", t0, &month) {
        assert_eq!(s.record_outcomes(&[o]).await.unwrap(), 1);
    }
    let batched = settling_outcomes("bo-batch", t0, &month);
    assert_eq!(s.record_outcomes(&batched[..10]).await.unwrap(), 10);
    assert_eq!(s.record_outcomes(&batched[4..]).await.unwrap(), 60);

    // The figures, worked out one outcome at a time.
    let outcomes = settling_outcomes("expected", t0, &month);
    let (mut reserved, mut tokens) = (20_000_i64, 100_i64);
    for o in &outcomes {
        reserved = (reserved - o.settle.budget.as_ref().unwrap().1).max(0);
        tokens = (tokens + o.settle.windows[0].delta).max(0);
    }
    let spent: i64 = outcomes.iter().map(|o| o.cost_nano).sum();
    for tenant in ["bo-one", "bo-batch"] {
        assert_eq!(
            s.budget_state(tenant, &month).await.unwrap(),
            (spent, reserved),
            "{tenant}"
        );
        let scope = format!("{tenant}:tpm");
        let probe = s
            .window_take(&scope, 1_000_000, w, 0, t0 + 1)
            .await
            .unwrap();
        assert_eq!(probe.count, u64::try_from(tokens).unwrap(), "{tenant}");
        let (records, heads) = s.audit_all(tenant).await.unwrap();
        let ids: Vec<_> = records.iter().map(|r| r.request_id.clone()).collect();
        let expected: Vec<_> = (1..=70).map(|i| format!("req-{i}")).collect();
        assert_eq!(ids, expected, "{tenant}: every record once, in chain order");
        assert_eq!(heads.len(), 1);
        assert_eq!(heads[0].seq, 70, "{tenant}");
        let rows = s
            .usage_rows(
                tenant,
                &crate::audit::record::day_of(t0),
                &crate::audit::record::day_of(t0),
                UsageGrain::Key,
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{tenant}: {rows:?}");
        assert_eq!(
            (rows[0].requests, rows[0].prompt_tokens, rows[0].cost_nano),
            (70, 700, spent),
            "{tenant}"
        );
    }
}

/// Lookups are per tenant; judge results merge in; the whole log comes back in write order.
async fn audit_lookups<S: Store>(
    s: &S,
    b: &crate::audit::record::AuditRecord,
    last: &crate::audit::record::AuditRecord,
) {
    let got = s.audit_get("au-t", "req-b").await.unwrap().unwrap();
    assert_eq!(&got, b);
    assert!(s.audit_get("other-t", "req-b").await.unwrap().is_none());
    assert!(s.audit_get("au-t", "nope").await.unwrap().is_none());

    // The judge's result is kept beside the sealed record and merged on read.
    let judge = crate::audit::record::JudgeResult {
        score: 8.5,
        verdict: "good".into(),
        model: "judge-model".into(),
        low: false,
    };
    s.set_judge("au-t", "req-b", &judge).await.unwrap();
    let got = s.audit_get("au-t", "req-b").await.unwrap().unwrap();
    assert_eq!(got.judge, Some(judge));
    assert_eq!(
        got.expected_hash(),
        got.hash,
        "the judge is outside the seal"
    );

    let (all, heads) = s.audit_all("au-t").await.unwrap();
    assert_eq!(
        all.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["req-a", "req-b", "req-c"]
    );
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].seq, heads[0].hash.as_str()),
        (3, last.hash.as_str())
    );
}

/// Pages come newest first, filtered, and a cursor continues without gaps or repeats even
/// while new records arrive.
async fn audit_pages<S: Store>(s: &S) {
    let t0 = recent_midnight();
    let mut prev = crate::audit::record::GENESIS.to_owned();
    let mut batch = Vec::new();
    for i in 1..=25u64 {
        let mut o = outcome("pg-t", &format!("p{i:02}"), t0 + i * 1000, i, &prev);
        if i % 5 == 0 {
            o.record.status = 429;
            o.record.tags.insert("team".into(), "search".into());
        }
        prev.clone_from(&o.record.hash);
        o.record.seal("w-test", i, &o.record.prev_hash.clone());
        batch.push(o);
    }
    assert_eq!(s.record_outcomes(&batch).await.unwrap(), 25);
    let q = |limit| AuditQuery {
        limit,
        ..AuditQuery::default()
    };
    let first = s.audit_page("pg-t", &q(10)).await.unwrap();
    assert_eq!(first.records.len(), 10);
    assert_eq!(first.records[0].request_id, "p25");
    assert!(first.next_cursor.is_some());

    // New records arrive between pages: the next page still continues where it left off.
    let late = outcome("pg-t", "late", t0 + 99_000, 26, &prev);
    s.record_outcomes(&[late]).await.unwrap();
    let mut seen: Vec<String> = first.records.iter().map(|r| r.request_id.clone()).collect();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = s
            .audit_page(
                "pg-t",
                &AuditQuery {
                    cursor: Some(c),
                    ..q(10)
                },
            )
            .await
            .unwrap();
        seen.extend(page.records.iter().map(|r| r.request_id.clone()));
        cursor = page.next_cursor;
    }
    let expected: Vec<String> = (1..=25).rev().map(|i| format!("p{i:02}")).collect();
    assert_eq!(seen, expected);

    let filtered = s
        .audit_page(
            "pg-t",
            &AuditQuery {
                status: Some(429),
                tag: Some(("team".into(), "search".into())),
                start_ms: Some(t0 + 6_000),
                end_ms: Some(t0 + 20_000),
                ..q(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        filtered
            .records
            .iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
        ["p20", "p15", "p10"]
    );
    assert!(filtered.next_cursor.is_none());
    assert!(s
        .audit_page(
            "pg-t",
            &AuditQuery {
                model: Some("none".into()),
                ..q(5)
            }
        )
        .await
        .unwrap()
        .records
        .is_empty());
}

/// Answers are per tenant and expire.
async fn cache_entries<S: Store>(s: &S) {
    let hour = Duration::from_secs(3600);
    assert!(s.cache_get("c-a", "k1").await.unwrap().is_none());
    s.cache_put("c-a", "k1", b"answer one", hour).await.unwrap();
    assert_eq!(
        s.cache_get("c-a", "k1").await.unwrap().unwrap(),
        b"answer one"
    );
    assert!(
        s.cache_get("c-b", "k1").await.unwrap().is_none(),
        "another tenant's"
    );
    s.cache_put("c-a", "k1", b"replaced", hour).await.unwrap();
    assert_eq!(
        s.cache_get("c-a", "k1").await.unwrap().unwrap(),
        b"replaced"
    );
    s.cache_put("c-a", "short", &[0u8, 255, 7], Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!(
        s.cache_get("c-a", "short").await.unwrap().unwrap(),
        [0u8, 255, 7]
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        s.cache_get("c-a", "short").await.unwrap().is_none(),
        "expired"
    );
}

/// Partitions grow by appends; readers ask only for what is new; old entries are trimmed.
async fn semantic_partitions<S: Store>(s: &S) {
    let hour = Duration::from_secs(3600);
    let (none, pos) = s.semantic_since("sp-t", "ctx", 0).await.unwrap();
    assert!(none.is_empty());
    for i in 0..3u8 {
        s.semantic_append("sp-t", "ctx", &[i], 10, hour)
            .await
            .unwrap();
    }
    let (all, pos1) = s.semantic_since("sp-t", "ctx", pos).await.unwrap();
    assert_eq!(all, [vec![0u8], vec![1], vec![2]]);
    let (nothing, same) = s.semantic_since("sp-t", "ctx", pos1).await.unwrap();
    assert!(nothing.is_empty());
    assert_eq!(same, pos1);
    s.semantic_append("sp-t", "ctx", &[3], 10, hour)
        .await
        .unwrap();
    let (new, _) = s.semantic_since("sp-t", "ctx", pos1).await.unwrap();
    assert_eq!(new, [vec![3u8]]);
    assert!(s
        .semantic_since("sp-t", "other", 0)
        .await
        .unwrap()
        .0
        .is_empty());
    assert!(s
        .semantic_since("other-t", "ctx", 0)
        .await
        .unwrap()
        .0
        .is_empty());
    // At most `max_entries` are kept: the oldest go.
    for i in 10..20u8 {
        s.semantic_append("sp-t", "trim", &[i], 4, hour)
            .await
            .unwrap();
    }
    let (kept, _) = s.semantic_since("sp-t", "trim", 0).await.unwrap();
    assert_eq!(kept, [vec![16u8], vec![17], vec![18], vec![19]]);
}
