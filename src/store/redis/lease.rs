//! Admission leases on Redis (`policy/lease.rs`): taken all or nothing by one `LEASE_TAKE`
//! script, each part registered per tenant so the store itself releases a budget part that is
//! never given back (its replica died), and each part given back at most once by one
//! `LEASE_END` script. Every key is in the tenant's slot.

use std::time::Duration;

use super::scripts::{LEASE_END_SCRIPT, LEASE_TAKE_SCRIPT};
use super::{bucket_keys, bucket_ttl_ms, keys, non_negative, window_ms, RedisStore};
use crate::store::{LeaseEnd, LeaseGrant, LeasePart, LeaseTake, StoreError, StoreResult};

/// How long a tenant's lease register lives after its last lease: past the longest budget
/// period, so a lease never given back is still reaped while its period can be spent in.
const REGISTER_TTL_MS: u64 = 40 * 24 * 3_600_000;

/// The register member of a lease's window part.
fn windows_member(id: &str) -> String {
    format!("{id}w||0")
}

/// The register member of a lease's budget part: `<id>|<budget hash>|<amount>` (the reaper
/// reads the last two).
fn budget_member(tenant: &str, id: &str, period: &str, amount: i64) -> String {
    format!("{id}|{}|{amount}", keys::budget(tenant, period))
}

impl RedisStore {
    pub(super) async fn take_lease(
        &self,
        lease: &LeaseTake,
        window: Duration,
    ) -> StoreResult<Option<LeaseGrant>> {
        let w = window_ms(window);
        let bucket = lease.now_ms / w;
        let tenant = lease.tenant.as_str();
        let mut invocation = LEASE_TAKE_SCRIPT.prepare_invoke();
        for t in &lease.takes {
            let (current, previous) = bucket_keys(&t.scope, bucket);
            invocation.key(current).key(previous);
        }
        if let Some(b) = &lease.budget {
            invocation.key(keys::budget(tenant, &b.period));
        }
        invocation
            .key(keys::leases(tenant))
            .arg(lease.takes.len())
            .arg(w)
            .arg(lease.now_ms % w)
            .arg(bucket_ttl_ms(w))
            .arg(u8::from(lease.budget.is_some()));
        for t in &lease.takes {
            invocation.arg(t.limit).arg(t.amount);
        }
        let (amount, limit, member) = lease.budget.as_ref().map_or((0, 0, String::new()), |b| {
            (
                b.amount,
                b.limit,
                budget_member(tenant, &lease.id, &b.period, b.amount),
            )
        });
        invocation
            .arg(amount)
            .arg(limit)
            .arg(windows_member(&lease.id))
            .arg(member)
            .arg(u64::try_from(lease.reap_after.as_millis()).unwrap_or(u64::MAX))
            .arg(REGISTER_TTL_MS);
        let flat: Vec<i64> = self
            .run(|mut conn| async move { Ok(invocation.invoke_async(&mut conn).await?) })
            .await?;
        match flat.split_first() {
            Some((0, [])) => Ok(None),
            Some((1, rest)) if rest.len() == lease.takes.len() + 2 => {
                let (counts, budget) = rest.split_at(lease.takes.len());
                Ok(Some(LeaseGrant {
                    counts: counts
                        .iter()
                        .map(|c| non_negative(*c, "window count"))
                        .collect::<StoreResult<_>>()?,
                    budget: lease.budget.as_ref().map(|_| (budget[0], budget[1])),
                }))
            }
            _ => Err(StoreError::Corrupt(format!(
                "lease_take answered {} values",
                flat.len()
            ))),
        }
    }

    pub(super) async fn end_lease(&self, end: &LeaseEnd, window: Duration) -> StoreResult<()> {
        let tenant = end.tenant.as_str();
        let mut invocation = LEASE_END_SCRIPT.prepare_invoke();
        invocation.key(keys::leases(tenant));
        match &end.part {
            LeasePart::Windows { unused, at_ms } => {
                let bucket = at_ms / window_ms(window);
                for (scope, _) in unused {
                    invocation.key(keys::window(scope, bucket));
                }
                invocation.arg(windows_member(&end.id)).arg(unused.len());
                for (_, amount) in unused {
                    invocation.arg(*amount);
                }
                invocation.arg(0);
            }
            LeasePart::Budget { period, amount } => {
                invocation
                    .key(keys::budget(tenant, period))
                    .arg(budget_member(tenant, &end.id, period, *amount))
                    .arg(0)
                    .arg(*amount);
            }
        }
        let _: i64 = self
            .run(|mut conn| async move { Ok(invocation.invoke_async(&mut conn).await?) })
            .await?;
        Ok(())
    }
}
