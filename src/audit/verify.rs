//! Checks a tenant's hash chains (`sentinel audit verify --tenant ID`).
//!
//! For every chain: each record's hash must match its content and its predecessor's hash,
//! `seq` must count up by one, and the chain must end at the head the store remembers (so a
//! deleted tail is seen). A chain may start after 1 only where retention trimmed it: when its
//! first remaining record is older than the retention horizon (with a day of slack).

use std::collections::BTreeMap;

use super::record::{AuditRecord, GENESIS};
use crate::store::ChainHead;

/// Slack on the retention horizon, for trimming that runs a little late.
const TRIM_SLACK_MS: u64 = 24 * 3600 * 1000;

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("chain {chain}: record {request_id} (seq {seq}) does not match its hash: edited")]
    Edited {
        chain: String,
        seq: u64,
        request_id: String,
    },
    #[error("chain {chain}: record {request_id} (seq {seq}) does not follow seq {prev_seq}: inserted or reordered")]
    Linkage {
        chain: String,
        seq: u64,
        prev_seq: u64,
        request_id: String,
    },
    #[error("chain {chain}: records {from}..={to} are missing: deleted")]
    Gap { chain: String, from: u64, to: u64 },
    #[error("chain {chain}: the store's head is seq {head} but the last record is seq {last}: the tail was deleted")]
    Tail { chain: String, head: u64, last: u64 },
    #[error("record {request_id} carries no chain: it was not written by a Sentinel audit writer")]
    Unsealed { request_id: String },
}

/// What a successful check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub chains: usize,
    pub records: usize,
}

/// Verifies `records` (any order) against `heads`.
pub fn verify(
    records: &[AuditRecord],
    heads: &[ChainHead],
    retention_ms: u64,
    now_ms: u64,
) -> Result<Report, ChainBreak> {
    let mut chains: BTreeMap<&str, Vec<&AuditRecord>> = BTreeMap::new();
    for r in records {
        if r.chain.is_empty() {
            return Err(ChainBreak::Unsealed {
                request_id: r.request_id.clone(),
            });
        }
        chains.entry(&r.chain).or_default().push(r);
    }
    let horizon = now_ms
        .saturating_sub(retention_ms)
        .saturating_add(TRIM_SLACK_MS);
    for (chain, list) in &mut chains {
        list.sort_by_key(|r| r.seq);
        let mut prev: Option<&AuditRecord> = None;
        for r in list.iter() {
            if r.expected_hash() != r.hash {
                return Err(ChainBreak::Edited {
                    chain: (*chain).to_owned(),
                    seq: r.seq,
                    request_id: r.request_id.clone(),
                });
            }
            match prev {
                None => {
                    let trimmed = r.ts_ms <= horizon;
                    if r.seq != 1 && !trimmed {
                        return Err(ChainBreak::Gap {
                            chain: (*chain).to_owned(),
                            from: 1,
                            to: r.seq.saturating_sub(1),
                        });
                    }
                    if r.seq == 1 && r.prev_hash != GENESIS {
                        return Err(ChainBreak::Linkage {
                            chain: (*chain).to_owned(),
                            seq: r.seq,
                            prev_seq: 0,
                            request_id: r.request_id.clone(),
                        });
                    }
                }
                Some(p) => {
                    if r.seq > p.seq + 1 {
                        return Err(ChainBreak::Gap {
                            chain: (*chain).to_owned(),
                            from: p.seq + 1,
                            to: r.seq - 1,
                        });
                    }
                    if r.seq != p.seq + 1 || r.prev_hash != p.hash {
                        return Err(ChainBreak::Linkage {
                            chain: (*chain).to_owned(),
                            seq: r.seq,
                            prev_seq: p.seq,
                            request_id: r.request_id.clone(),
                        });
                    }
                }
            }
            prev = Some(r);
        }
        if let (Some(last), Some(head)) = (prev, heads.iter().find(|h| h.chain == *chain)) {
            if head.seq > last.seq {
                return Err(ChainBreak::Tail {
                    chain: (*chain).to_owned(),
                    head: head.seq,
                    last: last.seq,
                });
            }
        }
    }
    // A chain the store knows with no record left at all: deleted entirely (unless trimmed,
    // which cannot be told apart here; a whole chain past retention leaves no records either).
    Ok(Report {
        chains: chains.len(),
        records: records.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::sample;

    const NOW: u64 = 1_764_000_000_000;
    const RETENTION: u64 = 30 * 24 * 3600 * 1000;

    fn chain(n: u64) -> (Vec<AuditRecord>, Vec<ChainHead>) {
        let mut prev = GENESIS.to_owned();
        let records: Vec<AuditRecord> = (1..=n)
            .map(|i| {
                let mut r = sample("t", &format!("r{i}"), NOW - 1000 + i);
                r.seal("w1", i, &prev);
                prev.clone_from(&r.hash);
                r
            })
            .collect();
        let head = ChainHead {
            chain: "w1".into(),
            seq: n,
            hash: prev,
        };
        (records, vec![head])
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (records, heads) = chain(5);
        assert_eq!(
            verify(&records, &heads, RETENTION, NOW),
            Ok(Report {
                chains: 1,
                records: 5
            })
        );
    }

    #[test]
    fn edits_deletions_insertions_and_tails_are_found() {
        let (mut records, heads) = chain(5);
        records[2].status = 500;
        assert!(matches!(
            verify(&records, &heads, RETENTION, NOW),
            Err(ChainBreak::Edited { seq: 3, .. })
        ));

        let (mut records, heads) = chain(5);
        records.remove(2);
        assert!(matches!(
            verify(&records, &heads, RETENTION, NOW),
            Err(ChainBreak::Gap { from: 3, to: 3, .. })
        ));

        let (mut records, heads) = chain(5);
        let mut forged = sample("t", "forged", NOW);
        forged.seal("w1", 3, &records[1].hash);
        records.insert(2, forged);
        assert!(matches!(
            verify(&records, &heads, RETENTION, NOW),
            Err(ChainBreak::Linkage { .. })
        ));

        let (mut records, heads) = chain(5);
        records.pop();
        assert!(matches!(
            verify(&records, &heads, RETENTION, NOW),
            Err(ChainBreak::Tail {
                head: 5,
                last: 4,
                ..
            })
        ));

        let (mut records, heads) = chain(5);
        records.remove(0);
        assert!(matches!(
            verify(&records, &heads, RETENTION, NOW),
            Err(ChainBreak::Gap { from: 1, to: 1, .. })
        ));
        // ...unless retention trimmed it: the same records, a month later.
        assert!(verify(&records, &heads, RETENTION, NOW + RETENTION).is_ok());
    }
}
