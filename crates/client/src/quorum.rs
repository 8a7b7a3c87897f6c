//! Receipt quorums: when a client may believe a tx's outcome.
//!
//! Any one validator may lie, so a result is accepted only when f+1 distinct validators
//! signed matching block receipts (height, block digest, results root, state digest) and
//! each of their receipts proves the same leaf (tx hash, result) at the same index under
//! that results root: at least one of them is honest. A validator signs once per block,
//! so the client checks each (validator, height) signature once ([`ReceiptChecker`]) and
//! a Merkle path per tx. This module is pure (no I/O), so the rule is tested on its own
//! and shared by `submit_and_wait`, `wait_for`, `stele tx`, the bench and offline
//! verification.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use stele_crypto::{Digest, Ed25519, PublicKey};
use stele_types::{
    tx_hash, AuthError, BlockReceipt, Height, Nonce, Receipt, ReplicaId, Signed, Transaction,
    TxHash, TxResult, ValidatorSet,
};

/// What a receipt says about one tx, apart from who signed it: receipts "match" when
/// these are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Outcome {
    pub height: Height,
    /// The proven leaf's index in the block.
    pub index: u32,
    pub block_digest: Digest,
    pub results_root: Digest,
    pub state_digest: Digest,
    /// The tx's outcome: the leaf's result, or `stale_nonce` when the leaf is the tx
    /// that used its nonce.
    pub result: TxResult,
}

// Ordered only so that tallies iterate the same way on every run; TxResult has no order
// of its own, so its stable encoding index stands in.
impl Ord for Outcome {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |o: &Outcome| {
            (
                o.height,
                o.index,
                o.block_digest,
                o.results_root,
                o.state_digest,
                o.result as u8,
            )
        };
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Outcome {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The tx a receipt must be for: its hash, and its sender and nonce when known (a
/// `stale_nonce` receipt can be checked only with them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxId {
    pub hash: TxHash,
    pub sender_nonce: Option<(PublicKey, Nonce)>,
}

impl TxId {
    /// `tx`, whole.
    pub fn of(tx: &Transaction) -> TxId {
        TxId {
            hash: tx_hash(tx),
            sender_nonce: Some((tx.sender, tx.nonce)),
        }
    }

    /// Only the hash is known.
    pub fn hash(hash: TxHash) -> TxId {
        TxId {
            hash,
            sender_nonce: None,
        }
    }
}

/// Why a receipt does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt is for tx {found}, expected {expected}")]
    OtherTx { expected: TxHash, found: TxHash },
    #[error("block receipt of validator {replica}: {source}")]
    Auth {
        replica: ReplicaId,
        source: AuthError,
    },
    #[error("validator {replica} proves the result {result:?}, which is not an applied one")]
    NotFinal {
        replica: ReplicaId,
        result: TxResult,
    },
    #[error("validator {replica}'s Merkle proof does not show the leaf under its results root")]
    BadProof { replica: ReplicaId },
    #[error("validator {replica}'s stale_nonce receipt does not show the nonce used: {why}")]
    StaleUnproven { replica: ReplicaId, why: String },
}

/// Most checked block receipts [`ReceiptChecker`] remembers (the lowest heights go
/// first): a few per block and validator.
const REMEMBERED: usize = 16_384;

/// Checks receipts against a validator set, each (validator, height) block receipt's
/// signature once: a repeat of one already checked, byte for byte, is not checked again.
/// Shared by every tally of a client (it locks inside).
#[derive(Debug)]
pub struct ReceiptChecker {
    validators: ValidatorSet,
    checked: Mutex<BTreeMap<(Height, ReplicaId), Signed<BlockReceipt>>>,
}

impl ReceiptChecker {
    /// A checker for receipts signed by `validators`.
    pub fn new(validators: ValidatorSet) -> ReceiptChecker {
        ReceiptChecker {
            validators,
            checked: Mutex::new(BTreeMap::new()),
        }
    }

    /// The validators whose receipts count.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// f+1: how many matching receipts accept a result.
    pub fn need(&self) -> usize {
        self.validators.f() + 1
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(Height, ReplicaId), Signed<BlockReceipt>>> {
        // A panic while holding the lock leaves whole, checked entries: still right.
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `block` is signed by the validator it names, for this chain.
    pub fn check_block(&self, block: &Signed<BlockReceipt>) -> Result<(), ReceiptError> {
        let key = (block.height, block.replica);
        if self.lock().get(&key) == Some(block) {
            return Ok(());
        }
        self.validators
            .verify(block.clone(), &Ed25519)
            .map_err(|source| ReceiptError::Auth {
                replica: block.replica,
                source,
            })?;
        let mut checked = self.lock();
        // The first good one stays: a second, different one from the same validator and
        // height (only a faulty validator signs two) is checked each time it is offered.
        checked.entry(key).or_insert_with(|| block.clone());
        while checked.len() > REMEMBERED {
            checked.pop_first();
        }
        Ok(())
    }

    /// Checks `receipt` as one for `tx`: the leaf is the tx (or, for `stale_nonce`, the
    /// tx `used_by`, with the same sender and nonce), applied, proven under the results
    /// root, and the block receipt's signature good. Returns the signer and what it says.
    pub fn check(
        &self,
        tx: &TxId,
        receipt: &Receipt,
        used_by: Option<&Transaction>,
    ) -> Result<(ReplicaId, Outcome), ReceiptError> {
        let replica = receipt.replica();
        let result = if receipt.tx_hash == tx.hash {
            receipt.result
        } else {
            let Some(other) = used_by else {
                return Err(ReceiptError::OtherTx {
                    expected: tx.hash,
                    found: receipt.tx_hash,
                });
            };
            let stale = |why: String| ReceiptError::StaleUnproven { replica, why };
            if tx_hash(other) != receipt.tx_hash {
                return Err(stale("the tx sent beside it is not the leaf's".into()));
            }
            match tx.sender_nonce {
                None => return Err(stale("this tx's sender and nonce are not known".into())),
                Some((sender, nonce)) if sender != other.sender || nonce != other.nonce => {
                    return Err(stale(format!(
                        "the leaf's tx is sender {} nonce {}, this tx sender {sender} nonce {nonce}",
                        other.sender, other.nonce
                    )))
                }
                Some(_) => TxResult::StaleNonce,
            }
        };
        // Only an applied tx's leaf settles anything: `nonce_gap` and `duplicate`
        // inclusions are not outcomes, and `stale_nonce` is shown by the tx that won.
        if !receipt.result.is_applied() {
            return Err(ReceiptError::NotFinal {
                replica,
                result: receipt.result,
            });
        }
        let index =
            u32::try_from(receipt.proof.index).map_err(|_| ReceiptError::BadProof { replica })?;
        if !receipt.proves_leaf() {
            return Err(ReceiptError::BadProof { replica });
        }
        self.check_block(&receipt.block)?;
        let b = &receipt.block;
        Ok((
            replica,
            Outcome {
                height: b.height,
                index,
                block_digest: b.block_digest,
                results_root: b.results_root,
                state_digest: b.state_digest,
                result,
            },
        ))
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
    pub results_root: Digest,
    /// The state digest after that block, as f+1 validators signed it.
    pub state_digest: Digest,
    pub result: TxResult,
    /// The matching receipts, each checked, one per validator, by id.
    pub receipts: Vec<Receipt>,
    /// For `stale_nonce`: the tx that used the nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_by: Option<Transaction>,
}

impl Confirmed {
    /// The agreed outcome.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            height: self.height,
            index: self.index,
            block_digest: self.block_digest,
            results_root: self.results_root,
            state_digest: self.state_digest,
            result: self.result,
        }
    }
}

/// The receipts gathered so far for one tx, grouped by what they say.
///
/// A validator counts at most once per outcome. One that signs two different outcomes
/// (only a faulty one can) may appear in two groups; that is harmless, since a group
/// of f+1 distinct validators still holds an honest one.
#[derive(Debug, Clone)]
pub struct ReceiptTally {
    tx: TxId,
    need: usize,
    groups: BTreeMap<Outcome, BTreeMap<ReplicaId, Receipt>>,
    used_by: Option<Transaction>,
}

impl ReceiptTally {
    /// An empty tally for `tx`; f+1 of the checker's validators must agree.
    pub fn new(tx: TxId, checker: &ReceiptChecker) -> ReceiptTally {
        ReceiptTally {
            tx,
            need: checker.need(),
            groups: BTreeMap::new(),
            used_by: None,
        }
    }

    /// The tx this tally is for.
    pub fn hash(&self) -> TxHash {
        self.tx.hash
    }

    /// Learns the tx's sender and nonce from a body a node sent, if it hashes to this
    /// tx (a body needs no trust: its hash says what it is).
    pub fn learn(&mut self, body: &Transaction) {
        if self.tx.sender_nonce.is_none() && tx_hash(body) == self.tx.hash {
            self.tx.sender_nonce = Some((body.sender, body.nonce));
        }
    }

    /// f+1: how many matching receipts accept a result.
    pub fn need(&self) -> usize {
        self.need
    }

    /// Checks a receipt (with, for `stale_nonce`, the tx that used the nonce) and counts
    /// it. `Ok(true)` when it is new, `Ok(false)` for a repeat of one already counted.
    pub fn offer(
        &mut self,
        checker: &ReceiptChecker,
        receipt: Receipt,
        used_by: Option<&Transaction>,
    ) -> Result<bool, ReceiptError> {
        let (replica, outcome) = checker.check(&self.tx, &receipt, used_by)?;
        if outcome.result == TxResult::StaleNonce && self.used_by.is_none() {
            self.used_by = used_by.cloned();
        }
        let group = self.groups.entry(outcome).or_default();
        let new = !group.contains_key(&replica);
        if new {
            group.insert(replica, receipt);
        }
        debug_assert!(group.len() <= checker.validators().n());
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
    pub fn receipts(&self) -> Vec<Receipt> {
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
            hash: self.tx.hash,
            height: outcome.height,
            index: outcome.index,
            block_digest: outcome.block_digest,
            results_root: outcome.results_root,
            state_digest: outcome.state_digest,
            result: outcome.result,
            receipts: group.values().cloned().collect(),
            used_by: (outcome.result == TxResult::StaleNonce)
                .then(|| self.used_by.clone())
                .flatten(),
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

/// The outcome f+1 of the checker's validators signed for `tx` among `receipts`, if
/// any; bad, foreign and repeated receipts are skipped.
pub fn confirm(
    checker: &ReceiptChecker,
    tx: TxId,
    receipts: impl IntoIterator<Item = Receipt>,
) -> Option<Confirmed> {
    let mut tally = ReceiptTally::new(tx, checker);
    for r in receipts {
        // A receipt that does not count is simply not counted.
        let _ = tally.offer(checker, r, None);
    }
    tally.accepted()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use stele_crypto::{merkle, ChainBinding, ChainId, KeyPair};
    use stele_types::{results_leaf, ValidatorInfo};

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

    /// Where a test puts a tx's leaf: height, block, index in a block of five, result.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Spot {
        pub height: u64,
        pub block_digest: Digest,
        pub index: u32,
        pub result: TxResult,
    }

    pub(crate) fn spot(height: u64, result: TxResult) -> Spot {
        Spot {
            height,
            block_digest: Digest::of(&height.to_le_bytes()),
            index: 2,
            result,
        }
    }

    /// A block of five leaves with (`hash`, result) at the spot's index, the others
    /// filler txs applied `ok`.
    fn leaves(hash: TxHash, s: Spot) -> Vec<Vec<u8>> {
        (0..5u32)
            .map(|i| {
                if i == s.index {
                    results_leaf(&hash, s.result)
                } else {
                    results_leaf(&Digest::of(&[i as u8]), TxResult::Ok)
                }
            })
            .collect()
    }

    /// Validator `replica`'s receipt for leaf `hash` at `s`, its block receipt signed
    /// with `key`.
    pub(crate) fn receipt(
        vs: &ValidatorSet,
        key: &KeyPair,
        replica: u16,
        hash: TxHash,
        s: Spot,
    ) -> Receipt {
        let tree = merkle::Tree::new(&leaves(hash, s));
        let block = BlockReceipt {
            replica: ReplicaId(replica),
            height: Height(s.height),
            block_digest: s.block_digest,
            results_root: tree.root(),
            state_digest: Digest::of_parts("test/state", &[&s.height.to_le_bytes()]),
        };
        Receipt {
            block: Signed::sign(block, vs.chain(), key),
            tx_hash: hash,
            result: s.result,
            proof: tree.prove(s.index as usize).unwrap(),
        }
    }

    fn tx() -> TxHash {
        Digest::of(b"the tx")
    }

    /// `count` receipts from validators 0.. agreeing on `s`.
    fn agreeing(vs: &ValidatorSet, keys: &[KeyPair], count: usize, s: Spot) -> Vec<Receipt> {
        (0..count)
            .map(|i| receipt(vs, &keys[i], i as u16, tx(), s))
            .collect()
    }

    fn confirm_tx(vs: &ValidatorSet, rs: Vec<Receipt>) -> Option<Confirmed> {
        confirm(&ReceiptChecker::new(vs.clone()), TxId::hash(tx()), rs)
    }

    #[test]
    fn f_plus_one_matching_receipts_are_accepted() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let s = spot(5, TxResult::Ok);
            let rs = agreeing(&vs, &k, vs.f() + 1, s);
            let c = confirm_tx(&vs, rs.clone()).expect("accepted");
            assert_eq!(c.height, Height(5), "n={n}");
            assert_eq!(c.index, 2);
            assert_eq!(c.result, TxResult::Ok);
            assert_eq!(c.results_root, rs[0].block.results_root);
            assert_eq!(c.receipts.len(), vs.f() + 1);
            assert_eq!(c.hash, tx());
        }
    }

    #[test]
    fn f_matching_receipts_are_not_enough() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let s = spot(5, TxResult::Ok);
            assert!(
                confirm_tx(&vs, agreeing(&vs, &k, vs.f(), s)).is_none(),
                "n={n}"
            );
        }
    }

    #[test]
    fn a_receipt_with_a_bad_signature_never_counts() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let checker = ReceiptChecker::new(vs.clone());
            let s = spot(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f() + 1, s);
            rs[0].block.signature.0[7] ^= 1;
            let mut tally = ReceiptTally::new(TxId::hash(tx()), &checker);
            let verdicts: Vec<_> = rs
                .into_iter()
                .map(|r| tally.offer(&checker, r, None))
                .collect();
            assert!(
                matches!(verdicts[0], Err(ReceiptError::Auth { .. })),
                "n={n}"
            );
            assert!(tally.accepted().is_none(), "n={n}");
            assert_eq!(tally.best(), vs.f());
        }
    }

    #[test]
    fn a_signature_is_checked_once_per_validator_and_height_and_a_changed_one_again() {
        let k = keys(4);
        let vs = set("t", &k);
        let checker = ReceiptChecker::new(vs.clone());
        let s = spot(5, TxResult::Ok);
        let good = receipt(&vs, &k[0], 0, tx(), s);
        checker.check_block(&good.block).unwrap();
        // The same block receipt with another signature is not taken on trust from the
        // memory of the first.
        let mut forged = good.clone();
        forged.block.signature.0[3] ^= 1;
        assert!(matches!(
            checker.check_block(&forged.block),
            Err(ReceiptError::Auth { .. })
        ));
        // Nor is another content under the same (validator, height).
        let mut other = good.block.clone();
        other.value.state_digest = Digest::of(b"another state");
        assert!(checker.check_block(&other).is_err());
        assert!(checker.check_block(&good.block).is_ok());
    }

    #[test]
    fn a_receipt_whose_path_does_not_prove_the_leaf_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let checker = ReceiptChecker::new(vs.clone());
        let s = spot(5, TxResult::Ok);
        // A validator claiming another result for the same leaf position.
        let mut lie = receipt(&vs, &k[0], 0, tx(), s);
        lie.result = TxResult::InsufficientFunds;
        assert_eq!(
            checker.check(&TxId::hash(tx()), &lie, None),
            Err(ReceiptError::BadProof {
                replica: ReplicaId(0)
            })
        );
        // A path with a flipped node.
        let mut bent = receipt(&vs, &k[1], 1, tx(), s);
        bent.proof.path[0].0[0] ^= 1;
        assert!(matches!(
            checker.check(&TxId::hash(tx()), &bent, None),
            Err(ReceiptError::BadProof { .. })
        ));
        let mut rs = agreeing(&vs, &k, 1, s);
        rs.push(bent);
        assert!(confirm_tx(&vs, rs).is_none());
    }

    #[test]
    fn a_receipt_signed_by_the_wrong_key_or_a_non_validator_never_counts() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let checker = ReceiptChecker::new(vs.clone());
            let s = spot(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f(), s);
            // An outsider claiming to be validator f.
            let outsider = KeyPair::generate();
            rs.push(receipt(&vs, &outsider, vs.f() as u16, tx(), s));
            // An id outside the set, signed by a real validator's key.
            rs.push(receipt(&vs, &k[0], n as u16, tx(), s));
            assert!(confirm_tx(&vs, rs.clone()).is_none(), "n={n}");
            let mut tally = ReceiptTally::new(TxId::hash(tx()), &checker);
            let last = rs.pop().unwrap();
            assert!(matches!(
                tally.offer(&checker, last, None),
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
            let s = spot(5, TxResult::Ok);
            let mut rs = agreeing(&vs, &k, vs.f(), s);
            let f = vs.f();
            rs.push(receipt(&vs, &k[f], f as u16, Digest::of(b"another tx"), s));
            assert!(confirm_tx(&vs, rs).is_none(), "n={n}");
        }
    }

    #[test]
    fn a_receipt_from_another_chain_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let other = set("other", &k);
        let s = spot(5, TxResult::Ok);
        let mut rs = agreeing(&vs, &k, 1, s);
        rs.push(receipt(&other, &k[1], 1, tx(), s));
        assert!(confirm_tx(&vs, rs).is_none());
    }

    #[test]
    fn a_receipt_from_another_genesis_under_the_same_chain_id_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let again = set_for(
            ChainBinding::new(vs.chain_id().clone(), Digest::of(b"another genesis")),
            &k,
        );
        let s = spot(5, TxResult::Ok);
        let mut rs = agreeing(&vs, &k, 1, s);
        rs.push(receipt(&again, &k[1], 1, tx(), s));
        assert!(confirm_tx(&vs, rs).is_none());
    }

    #[test]
    fn disagreeing_validators_give_no_result_until_f_plus_one_agree() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let checker = ReceiptChecker::new(vs.clone());
            let f = vs.f();
            let good = spot(5, TxResult::Ok);
            let bad = spot(6, TxResult::InsufficientFunds);
            let mut tally = ReceiptTally::new(TxId::hash(tx()), &checker);
            // f say `bad`, f say `good`: nothing is accepted.
            for (i, key) in k.iter().enumerate().take(2 * f) {
                let says = if i < f { bad } else { good };
                tally
                    .offer(&checker, receipt(&vs, key, i as u16, tx(), says), None)
                    .unwrap();
            }
            assert!(tally.accepted().is_none(), "n={n}");
            assert_eq!(tally.groups().len(), 2);
            // One more for `good` reaches f+1.
            let i = 2 * f;
            tally
                .offer(&checker, receipt(&vs, &k[i], i as u16, tx(), good), None)
                .unwrap();
            let c = tally.accepted().unwrap();
            assert_eq!((c.height, c.result), (Height(5), TxResult::Ok), "n={n}");
        }
    }

    #[test]
    fn only_the_result_differing_is_a_disagreement() {
        let k = keys(4);
        let vs = set("t", &k);
        let a = spot(5, TxResult::Ok);
        let b = Spot {
            result: TxResult::InsufficientFunds,
            ..a
        };
        let rs = vec![
            receipt(&vs, &k[0], 0, tx(), a),
            receipt(&vs, &k[1], 1, tx(), b),
        ];
        assert!(confirm_tx(&vs, rs).is_none());
    }

    #[test]
    fn duplicate_receipts_from_one_validator_count_once() {
        for n in [4, 7] {
            let k = keys(n);
            let vs = set("t", &k);
            let checker = ReceiptChecker::new(vs.clone());
            let s = spot(5, TxResult::Ok);
            let one = receipt(&vs, &k[0], 0, tx(), s);
            let rs = vec![one.clone(); vs.f() + 1];
            assert!(confirm_tx(&vs, rs).is_none(), "n={n}");
            let mut tally = ReceiptTally::new(TxId::hash(tx()), &checker);
            assert_eq!(tally.offer(&checker, one.clone(), None), Ok(true));
            assert_eq!(tally.offer(&checker, one, None), Ok(false));
            assert_eq!(tally.best(), 1);
            assert!(tally.has(ReplicaId(0)));
            assert!(!tally.has(ReplicaId(1)));
        }
    }

    #[test]
    fn a_leaf_that_is_not_applied_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        for r in [
            TxResult::NonceGap,
            TxResult::Duplicate,
            TxResult::StaleNonce,
            TxResult::UnknownSender,
        ] {
            assert!(
                confirm_tx(&vs, agreeing(&vs, &k, 4, spot(5, r))).is_none(),
                "{r:?}"
            );
        }
    }

    /// A tx and another by the same sender with the same nonce (signed for chain "t").
    fn rivals() -> (Transaction, Transaction) {
        let sender = KeyPair::generate();
        let chain = ChainBinding::new(ChainId::new("t").unwrap(), Digest::of(b"t"));
        let mk = |amount| {
            stele_types::tx::sign_tx(
                stele_types::TxBody {
                    sender: sender.public(),
                    nonce: Nonce(4),
                    op: stele_types::Op::Transfer {
                        to: KeyPair::generate().public(),
                        amount: stele_types::Amount(amount),
                    },
                },
                &chain,
                &sender,
            )
        };
        (mk(1), mk(2))
    }

    #[test]
    fn stale_nonce_is_shown_by_the_tx_that_used_the_nonce_with_the_same_sender_and_nonce() {
        let k = keys(4);
        let vs = set("t", &k);
        let checker = ReceiptChecker::new(vs.clone());
        let (mine, winner) = rivals();
        let s = spot(9, TxResult::Ok);
        let rs: Vec<Receipt> = (0..2)
            .map(|i| receipt(&vs, &k[i], i as u16, tx_hash(&winner), s))
            .collect();
        // Without the winner's body, or without knowing this tx's nonce: not shown.
        let mut blind = ReceiptTally::new(TxId::hash(tx_hash(&mine)), &checker);
        assert!(matches!(
            blind.offer(&checker, rs[0].clone(), Some(&winner)),
            Err(ReceiptError::StaleUnproven { .. })
        ));
        let mut tally = ReceiptTally::new(TxId::of(&mine), &checker);
        assert!(matches!(
            tally.offer(&checker, rs[0].clone(), None),
            Err(ReceiptError::OtherTx { .. })
        ));
        for r in &rs {
            tally.offer(&checker, r.clone(), Some(&winner)).unwrap();
        }
        let c = tally.accepted().unwrap();
        assert_eq!(c.result, TxResult::StaleNonce);
        assert_eq!(c.used_by.as_ref(), Some(&winner));
        // Learnt from a body that hashes to it, the blind tally gets there too.
        blind.learn(&mine);
        blind.offer(&checker, rs[0].clone(), Some(&winner)).unwrap();
    }

    #[test]
    fn a_stale_nonce_claim_with_a_tx_of_another_nonce_or_sender_never_counts() {
        let k = keys(4);
        let vs = set("t", &k);
        let checker = ReceiptChecker::new(vs.clone());
        let (mine, _) = rivals();
        let (other_sender, _) = rivals();
        let s = spot(9, TxResult::Ok);
        let r = receipt(&vs, &k[0], 0, tx_hash(&other_sender), s);
        assert!(matches!(
            checker.check(&TxId::of(&mine), &r, Some(&other_sender)),
            Err(ReceiptError::StaleUnproven { .. })
        ));
        // A body that is not the leaf's tx.
        let (_, winner) = rivals();
        assert!(matches!(
            checker.check(&TxId::of(&mine), &r, Some(&winner)),
            Err(ReceiptError::StaleUnproven { .. })
        ));
    }
}
