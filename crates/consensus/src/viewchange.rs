//! The NEW-VIEW computation: what O must be, given V. Primary and backups run the same
//! function, so a backup can reject a NEW-VIEW whose O differs from what V implies.

use std::collections::BTreeMap;

use stele_types::{Block, CheckpointCertificate, Digest, Height, ViewChange};

/// What V implies: the checkpoint to start from and the entries of O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// min-s: the highest checkpoint in V (0 = genesis).
    pub min_s: Height,
    /// Its proof (`None` at genesis).
    pub checkpoint: Option<CheckpointCertificate>,
    /// For each n in (min-s, max-s]: the digest of the highest-view certificate for n in
    /// V, or the null block's digest.
    pub entries: Vec<(Height, Digest)>,
}

/// Computes O from V. All certificates in V were verified by `verify`.
pub fn plan(view_changes: &[&ViewChange]) -> Plan {
    let mut min_s = Height(0);
    let mut checkpoint = None;
    for vc in view_changes {
        if vc.checkpoint_height() > min_s {
            min_s = vc.checkpoint_height();
            checkpoint = vc.checkpoint.clone();
        }
    }
    // Highest view per height; ties in view (impossible with ≤ f faulty, since two
    // certificates in one view need quorums that intersect in an honest replica) broken
    // by the smaller digest so every replica computes the same O.
    let mut best: BTreeMap<Height, (stele_types::ViewNumber, Digest)> = BTreeMap::new();
    for vc in view_changes {
        for c in &vc.prepared {
            if c.height() <= min_s {
                continue;
            }
            let cand = (c.view(), c.digest());
            best.entry(c.height())
                .and_modify(|cur| {
                    if cand.0 > cur.0 || (cand.0 == cur.0 && cand.1 < cur.1) {
                        *cur = cand;
                    }
                })
                .or_insert(cand);
        }
    }
    let max_s = best.keys().next_back().copied().unwrap_or(min_s).max(min_s);
    let entries = (min_s.0 + 1..=max_s.0)
        .map(|n| {
            let h = Height(n);
            (
                h,
                best.get(&h)
                    .map_or_else(|| Block::null_digest(h), |(_, d)| *d),
            )
        })
        .collect();
    Plan {
        min_s,
        checkpoint,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_types::{PrePrepare, PreparedCertificate, ReplicaId, Signature, Signed, ViewNumber};

    fn cert(view: u64, height: u64, digest: &[u8]) -> PreparedCertificate {
        PreparedCertificate {
            pre_prepare: Signed {
                value: PrePrepare {
                    view: ViewNumber(view),
                    height: Height(height),
                    digest: Digest::of(digest),
                },
                signature: Signature([0; 64]),
            },
            prepares: vec![],
        }
    }

    fn vc(replica: u16, prepared: Vec<PreparedCertificate>) -> ViewChange {
        ViewChange {
            new_view: ViewNumber(5),
            replica: ReplicaId(replica),
            checkpoint: None,
            prepared,
        }
    }

    #[test]
    fn o_takes_the_highest_view_certificate_for_a_height() {
        // Height 3 was prepared with A in view 1 and with B in view 2: O must take B,
        // whichever VIEW-CHANGE comes first.
        let a = vc(0, vec![cert(1, 3, b"A")]);
        let b = vc(1, vec![cert(2, 3, b"B"), cert(2, 1, b"C")]);
        let c = vc(2, vec![]);
        for order in [vec![&a, &b, &c], vec![&b, &a, &c], vec![&c, &b, &a]] {
            let p = plan(&order);
            assert_eq!(p.min_s, Height(0));
            assert_eq!(
                p.entries,
                vec![
                    (Height(1), Digest::of(b"C")),
                    (Height(2), Block::null_digest(Height(2))),
                    (Height(3), Digest::of(b"B"))
                ]
            );
        }
    }

    #[test]
    fn no_certificates_means_no_entries() {
        let p = plan(&[&vc(0, vec![]), &vc(1, vec![]), &vc(2, vec![])]);
        assert!(p.entries.is_empty());
        assert_eq!(p.min_s, Height(0));
    }
}
