//! One conformance suite for every backend: each method's contract, exercised the same way.
//! A backend's tests call [`run_all`] on a fresh, empty store.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{Budget, KeyRecord, Limits, Store, Tenant};
use crate::config::raw::{BudgetPeriod, PolicyMode};

/// Runs every check; each uses its own tenant ids, so one store serves them all.
pub async fn run_all<S: Store>(store: &S) {
    tenants(store).await;
    keys(store).await;
    windows(store).await;
    window_adjust(store).await;
    budgets(store).await;
    concurrent_takes_are_atomic(store).await;
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.into(),
        name: Some(format!("{id} inc")),
        models: vec!["demo".into()],
        limits: Limits {
            rpm: NonZeroU32::new(60),
            tpm: None,
        },
        budget: Some(Budget {
            limit_usd: 12.5,
            period: BudgetPeriod::Month,
            mode: PolicyMode::DryRun,
        }),
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
