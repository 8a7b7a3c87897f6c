//! Receipt quorums: when a client may believe a tx's outcome.
//!
//! Any one validator may lie, so a result is accepted only when f+1 distinct validators
//! signed matching receipts (tx hash, height, index, block digest, result): at least one
//! of them is honest. This module is pure (no I/O), so the rule is tested on its own and
//! shared by `submit_and_wait`, `wait_for`, `stele tx` and offline verification.

use std::collections::BTreeMap;

use serde::Serialize;
use stele_crypto::{Digest, Ed25519};
use stele_types::{AuthError, Height, Receipt, ReplicaId, Signed, TxHash, TxResult, ValidatorSet};

/// What a receipt says, apart from who signed it: receipts "match" when these are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Outcome {
    pub height: Height,
    pub index: u32,
    pub block_digest: Digest,
    pub result: TxResult,
}

// Ordered only so that tallies iterate the same way on every run; TxResult has no order
// of its own, so its stable encoding index stands in.
impl Ord for Outcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |o: &Outcome| (o.height, o.index, o.block_digest, o.result as u8);
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Outcome {
    fn of(r: &Receipt) -> Outcome {
        Outcome {
            height: r.height,
            index: r.index,
            block_digest: r.block_digest,
            result: r.result,
        }
    }
}

/// A tx outcome that f+1 validators signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Confirmed {
    pub hash: TxHash,
    /// Where it was applied; for `stale_nonce`, where the tx that used the nonce was.
    pub height: Height,
    pub index: u32,
    pub block_digest: Digest,
    pub result: TxResult,
    /// The matching receipts, each signature checked, one per validator, by id.
    pub receipts: Vec<Signed<Receipt>>,
}

impl Confirmed {
    /// The agreed outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            height: self.height,
            index: self.index,
            block_digest: self.block_digest,
            result: self.result,
        }
    }
}

/// Why a receipt does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt is for tx {found}, expected {expected}")]
    OtherTx { expected: TxHash, found: TxHash },
    #[error("receipt of validator {replica}: {source}")]
    Auth {
        replica: ReplicaId,
        source: AuthError,
    },
    #[error("validator {replica} signed a receipt for the non-final result {result:?}")]
    NotFinal {
        replica: ReplicaId,
        result: TxResult,
    },
}

/// The receipts gathered so far for one tx, grouped by what they say.
///
/// A validator counts at most once per outcome. One that signs two different outcomes
/// (only a faulty one can) may appear in two groups; that is harmless, since a group
/// of f+1 distinct validators still holds an honest one.
#[derive(Debug, Clone)]
pub struct ReceiptTally {
    hash: TxHash,
    need: usize,
    groups: BTreeMap<Outcome, BTreeMap<ReplicaId, Signed<Receipt>>>,
}

impl ReceiptTally {
    /// An empty tally for `hash`; f+1 of `validators` must agree.
    pub fn new(hash: TxHash, validators: &ValidatorSet) -> ReceiptTally {
        ReceiptTally {
            hash,
            need: validators.f() + 1,
            groups: BTreeMap::new(),
        }
    }

    /// The tx this tally is for.
    pub fn hash(&self) -> TxHash {
        self.hash
    }

    /// f+1: how many matching receipts accept a result.
    pub fn need(&self) -> usize {
        self.need
    }

    /// Checks a receipt (tx, signer's genesis key, final result) and counts it. `Ok(true)`
    /// when it is new, `Ok(false)` for a repeat of a receipt already counted.
    pub fn offer(
        &mut self,
        validators: &ValidatorSet,
        receipt: Signed<Receipt>,
    ) -> Result<bool, ReceiptError> {
        if receipt.tx_hash != self.hash {
            return Err(ReceiptError::OtherTx {
                expected: self.hash,
                found: receipt.tx_hash,
            });
        }
        let replica = receipt.replica;
        if !receipt.result.is_final() {
            return Err(ReceiptError::NotFinal {
                replica,
                result: receipt.result,
            });
        }
        let verified = validators
            .verify(receipt, &Ed25519)
            .map_err(|source| ReceiptError::Auth { replica, source })?;
        let outcome = Outcome::of(&verified);
        let group = self.groups.entry(outcome).or_default();
        let new = !group.contains_key(&replica);
        if new {
            group.insert(replica, verified.into_signed());
        }
        debug_assert!(group.len() <= validators.n());
        Ok(new)
    }

    /// Whether `replica` already gave a counted receipt (no need to ask it again).
    pub fn has(&self, replica: ReplicaId) -> bool {
        self.groups.values().any(|g| g.contains_key(&replica))
    }

    /// The size of the largest group of matching receipts.
    pub fn best(&self) -> usize {
        self.groups.values().map(BTreeMap::len).max().unwrap_or(0)
    }

    /// Every counted receipt, in outcome then validator order.
    pub fn receipts(&self) -> Vec<Signed<Receipt>> {
        self.groups
            .values()
            .flat_map(|g| g.values().cloned())
            .collect()
    }

    /// The groups: each outcome with how many validators signed it.
    pub fn groups(&self) -> Vec<(Outcome, usize)> {
        self.groups.iter().map(|(o, g)| (*o, g.len())).collect()
    }

    /// The outcome f+1 validators agree on, if any. Should two groups reach f+1 (more
    /// than f validators are faulty, which the protocol does not survive anyway) the
    /// larger wins, so the answer still does not depend on arrival order.
    pub fn accepted(&self) -> Option<Confirmed> {
        let (outcome, group) = self
            .groups
            .iter()
            .filter(|(_, g)| g.len() >= self.need)
            .max_by_key(|(o, g)| (g.len(), std::cmp::Reverse(**o)))?;
        debug_assert!(group.len() >= self.need);
        Some(Confirmed {
            hash: self.hash,
            height: outcome.height,
            index: outcome.index,
            block_digest: outcome.block_digest,
            result: outcome.result,
            receipts: group.values().cloned().collect(),
        })
    }

    /// A short account of the groups, for timeout messages.
    pub fn describe(&self) -> String {
        if self.groups.is_empty() {
            return "no valid receipt yet".to_owned();
        }
        self.groups
            .iter()
            .map(|(o, g)| {
                format!(
                    "{} at height {} by {} validator(s)",
                    o.result.as_str(),
                    o.height,
                    g.len()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The outcome f+1 of `validators` signed for `hash` among `receipts`, if any; bad,
/// foreign and repeated receipts are skipped.
pub fn confirm(
    validators: &ValidatorSet,
    hash: TxHash,
    receipts: impl IntoIterator<Item = Signed<Receipt>>,
) -> Option<Confirmed> {
    let mut tally = ReceiptTally::new(hash, validators);
    for r in receipts {
        // A receipt that does not count is simply not counted.
        let _ = tally.offer(validators, r);
    }
    tally.accepted()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stele_crypto::{ChainBinding, ChainId, KeyPair};
    use stele_types::ValidatorInfo;

    pub(crate) fn keys(n: usize) -> Vec<KeyPair> {
        (0..n).map(|_| KeyPair::generate()).collect()
    }

    /// The validators `keys` of chain `chain`, whose genesis digest is `Digest::of(chain)`.
    pub(crate) fn set(chain: &str, keys: &[KeyPair]) -> ValidatorSet {
        let id = ChainId::new(chain).unwrap();
        set_for(ChainBinding::new(id, Digest::of(chain.as_bytes())), keys)
    }

    fn set_for(chain: ChainBinding, keys: &[KeyPair]) -> ValidatorSet {
        let v = keys
            .iter()
            .enumerate()
            .map(|(i, k)| ValidatorInfo {
                key: k.public(),
                p2p_addr: format!("127.0.0.1:{}", 7100 + i),
                api_addr: format!("127.0.0.1:{}", 7200 + i),
            })
            .collect();
        ValidatorSet::new(chain, v)
    }

    fn outcome(height: u64, result: TxResult) -> Outcome {
        Outcome {
            height: Height(height),
            index: 2,
            block_digest: Digest::of(&height.to_le_bytes()),
            result,
        }
    }

    pub(crate) fn receipt(
        vs: &ValidatorSet,
        key: &KeyPair,
        replica: u16,
        hash: TxHash,
        o: Outcome,
    ) -> Signed<Receipt> {
        Signed::sign(
            Receipt {
                tx_hash: hash,
                height: o.height,
                index: o.index,
                block_digest: o.block_digest,
                result: o.result,
                replica: ReplicaId(replica),
            },
            vs.chain(),
            key,
        )
    }

    fn tx() -> TxHash {
        Digest::of(b"the tx")
    }

    /// `count` receipts from validators 0.. agreeing on `o`.
    fn agreeing(
        vs: &ValidatorSet,
        keys: &[KeyPair],
        count: usize,
        o: Outcome,
    ) -> Vec<Signed<Receipt>> {
        (0..count)
            .map(|i| receipt(vs, &keys[i], i as u16, tx(), o))
            .collect()
    }

    #[test]
    fn f_plus_one_matching_receipts_are_accepted() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            let c = confirm(&vs, tx(), agreeing(&vs, &k, vs.f() + 1, o)).expect("accepted");
            assert_eq!(c.outcome(), o, "n={n}");
            assert_eq!(c.receipts.len(), vs.f() + 1);
            assert_eq!(c.hash, tx());
        }
    }

    #[test]
    fn f_matching_receipts_are_not_enough() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            assert!(
                confirm(&vs, tx(), agreeing(&vs, &k, vs.f(), o)).is_none(),
                "n={n}"
            );
        }
    }

    #[test]
    fn a_receipt_with_a_bad_signature_never_counts() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f() + 1, o);
            rs[0].signature.0[7] ^= 1;
            let mut tally = ReceiptTally::new(tx(), &vs);
            let verdicts: Vec<_> = rs.into_iter().map(|r| tally.offer(&vs, r)).collect();
            assert!(
                matches!(verdicts[0], Err(ReceiptError::Auth { .. })),
                "n={n}"
            );
            assert!(tally.accepted().is_none(), "n={n}");
            assert_eq!(tally.best(), vs.f());
        }
    }

    #[test]
    fn a_receipt_signed_by_the_wrong_key_or_a_non_validator_never_counts() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f(), o);
            // An outsider claiming to be validator f.
            let outsider = KeyPair::generate();
            rs.push(receipt(&vs, &outsider, vs.f() as u16, tx(), o));
            // An id outside the set, signed by a real validator's key.
            rs.push(receipt(&vs, &k[0], n as u16, tx(), o));
            assert!(confirm(&vs, tx(), rs.clone()).is_none(), "n={n}");
            let mut tally = ReceiptTally::new(tx(), &vs);
            let last = rs.pop().unwrap();
            assert!(matches!(
                tally.offer(&vs, last),
                Err(ReceiptError::Auth {
                    source: AuthError::UnknownReplica(_),
                    ..
                })
            ));
        }
    }

    #[test]
    fn a_receipt_for_another_tx_never_counts() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f(), o);
            let f = vs.f();
            rs.push(receipt(&vs, &k[f], f as u16, Digest::of(b"another tx"), o));
            assert!(confirm(&vs, tx(), rs).is_none(), "n={n}");
        }
    }

    #[test]
    fn a_receipt_from_another_chain_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let other = set("other", &k);
        let o = outcome(5, TxResult::Ok);
        let mut rs = agreeing(&vs, &k, 1, o);
        rs.push(receipt(&other, &k[1], 1, tx(), o));
        assert!(confirm(&vs, tx(), rs).is_none());
    }

    #[test]
    fn a_receipt_from_another_genesis_under_the_same_chain_id_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let again = set_for(
            ChainBinding::new(vs.chain_id().clone(), Digest::of(b"another genesis")),
            &k,
        );
        let o = outcome(5, TxResult::Ok);
        let mut rs = agreeing(&vs, &k, 1, o);
        rs.push(receipt(&again, &k[1], 1, tx(), o));
        assert!(confirm(&vs, tx(), rs).is_none());
    }

    #[test]
    fn disagreeing_validators_give_no_result_until_f_plus_one_agree() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let f = vs.f();
            let good = outcome(5, TxResult::Ok);
            let bad = outcome(6, TxResult::InsufficientFunds);
            let mut tally = ReceiptTally::new(tx(), &vs);
            // f say `bad`, f say `good`: nothing is accepted.
            for (i, key) in k.iter().enumerate().take(2 * f) {
                let says = if i < f { bad } else { good };
                tally
                    .offer(&vs, receipt(&vs, key, i as u16, tx(), says))
                    .unwrap();
            }
            assert!(tally.accepted().is_none(), "n={n}");
            assert_eq!(tally.groups().len(), 2);
            // One more for `good` reaches f+1.
            let i = 2 * f;
            tally
                .offer(&vs, receipt(&vs, &k[i], i as u16, tx(), good))
                .unwrap();
            assert_eq!(tally.accepted().unwrap().outcome(), good, "n={n}");
        }
    }

    #[test]
    fn only_the_result_differing_is_a_disagreement() {
        let k = keys(4);
        let vs = set("t", &k);
        let a = outcome(5, TxResult::Ok);
        let b = Outcome {
            result: TxResult::InsufficientFunds,
            ..a
        };
        let rs = vec![
            receipt(&vs, &k[0], 0, tx(), a),
            receipt(&vs, &k[1], 1, tx(), b),
        ];
        assert!(confirm(&vs, tx(), rs).is_none());
    }

    #[test]
    fn duplicate_receipts_from_one_validator_count_once() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let o = outcome(5, TxResult::Ok);
            let one = receipt(&vs, &k[0], 0, tx(), o);
            let rs = vec![one.clone(); vs.f() + 1];
            assert!(confirm(&vs, tx(), rs).is_none(), "n={n}");
            let mut tally = ReceiptTally::new(tx(), &vs);
            assert_eq!(tally.offer(&vs, one.clone()), Ok(true));
            assert_eq!(tally.offer(&vs, one), Ok(false));
            assert_eq!(tally.best(), 1);
            assert!(tally.has(ReplicaId(0)));
            assert!(!tally.has(ReplicaId(1)));
        }
    }

    #[test]
    fn a_signed_non_final_result_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let o = outcome(5, TxResult::NonceGap);
        assert!(confirm(&vs, tx(), agreeing(&vs, &k, 4, o)).is_none());
    }

    #[test]
    fn stale_nonce_is_a_final_outcome_with_a_quorum() {
        let k = keys(4);
        let vs = set("t", &k);
        let o = outcome(9, TxResult::StaleNonce);
        let c = confirm(&vs, tx(), agreeing(&vs, &k, 2, o)).unwrap();
        assert_eq!(c.result, TxResult::StaleNonce);
    }
}
