//! Executing one committed block: per-tx results, state changes and the state digest.
//!
//! Every replica must reach the same bytes from the same block, so this module is the
//! whole rule book: nonce rules, transfers with checked arithmetic, records, and the
//! digest chain digest(h) = H(digest(h−1), block digest, results root, changes hash).
//! Txs run in block order over an overlay, so a later tx sees an earlier one's effects.

use std::collections::BTreeMap;

use stele_crypto::{merkle, Digest, PublicKey};
use stele_types::state_root::StateOpening;
use stele_types::{
    Account, Amount, Block, Genesis, Height, Nonce, Op, Params, RecordKey, RecordValue,
    StateChanges, StateError, StateView, Transaction, TxHash, TxLocation, TxResult,
};

/// Domain of the state digest chain.
const STATE_DOMAIN: &str = "stele/state";
/// Domain of the state digest at height 0.
const GENESIS_STATE_DOMAIN: &str = "stele/state/genesis";

/// What executing one block produced. `results[i]` and `tx_hashes[i]` belong to
/// `block.txs[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub height: Height,
    pub block_digest: Digest,
    pub tx_hashes: Vec<TxHash>,
    pub results: Vec<TxResult>,
    /// New values of every account and record an applied tx wrote.
    pub changes: StateChanges,
    /// Merkle root over the encoded (tx hash, result) pairs, in block order.
    pub results_root: Digest,
    /// The tree under `results_root`, for receipts' proofs.
    pub results_tree: merkle::Tree,
    /// At checkpoint heights (a multiple of the checkpoint interval): what the state
    /// digest is the hash of, the state root after this block among it, so a checkpoint
    /// certificate commits to the root.
    pub opening: Option<StateOpening>,
    /// The state digest after this block.
    pub state_digest: Digest,
}

impl Execution {
    /// The state root after this block, at checkpoint heights.
    pub fn state_root(&self) -> Option<Digest> {
        self.opening.as_ref().map(|o| o.state_root)
    }

    /// The applied txs as (index in the block, location): what enters the tx index.
    pub fn applied(&self) -> impl Iterator<Item = (usize, TxLocation)> + '_ {
        self.results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_applied())
            .map(|(i, r)| {
                (
                    i,
                    TxLocation {
                        height: self.height,
                        // `execute` refuses blocks whose indexes do not fit a u32.
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        result: *r,
                    },
                )
            })
    }
}

/// Why a block could not be executed. Never a property of the txs: a bad tx only gets
/// a failing result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error(
        "block at height {block} cannot execute: the state has executed up to height \
         {executed}, so it expects height {}",
        executed.next()
    )]
    HeightMismatch { executed: Height, block: Height },
    #[error("block at height {height} holds {count} txs, more than a u32 index can name")]
    TooManyTxs { height: Height, count: usize },
    #[error("executing height {height}: {source}")]
    State { height: Height, source: StateError },
}

/// The state digest at height 0: H("stele/state/genesis", genesis digest). The genesis
/// digest covers the whole genesis file (accounts, validators, parameters), so two chains
/// with different genesis files never share a state digest.
pub fn genesis_state_digest(genesis: &Genesis) -> Digest {
    Digest::of_parts(GENESIS_STATE_DOMAIN, &[genesis.digest().as_bytes()])
}

/// Merkle root over the encoded (tx hash, result) pairs, in block order.
pub fn results_root(tx_hashes: &[TxHash], results: &[TxResult]) -> Digest {
    results_tree(tx_hashes, results).root()
}

/// The whole Merkle tree over the (tx hash, result) leaves ([`stele_types::results_leaf`]),
/// kept so a receipt's proof is read out in O(log n).
pub fn results_tree(tx_hashes: &[TxHash], results: &[TxResult]) -> merkle::Tree {
    assert_eq!(
        tx_hashes.len(),
        results.len(),
        "one result per tx hash is the caller's invariant"
    );
    let leaves: Vec<Digest> = tx_hashes
        .iter()
        .zip(results)
        .map(|(h, r)| merkle::leaf_hash(&stele_types::results_leaf(h, *r)))
        .collect();
    merkle::Tree::from_leaf_hashes(leaves)
}

/// At a checkpoint height: H(digest(h−1), block digest, results root, changes hash, state
/// root), under its own domain, so the CHECKPOINT that signs the digest covers the root.
pub fn checkpoint_state_digest(opening: &StateOpening) -> Digest {
    opening.digest()
}

/// digest(h) = H(digest(h−1), block digest, results root, changes hash).
pub fn state_digest(
    previous: &Digest,
    block_digest: &Digest,
    results_root: &Digest,
    changes_hash: &Digest,
) -> Digest {
    Digest::of_parts(
        STATE_DOMAIN,
        &[
            previous.as_bytes(),
            block_digest.as_bytes(),
            results_root.as_bytes(),
            changes_hash.as_bytes(),
        ],
    )
}

/// Executes `block` over `view`, which must have executed exactly the height before.
///
/// Per tx, in block order: `unknown_sender` if the sender has no account; `stale_nonce`
/// below the sender's next nonce, `nonce_gap` above it; otherwise it is applied: the
/// nonce moves on and the op either succeeds (`ok`) or fails without another effect.
/// None of the non-applied results changes anything. Null blocks advance the digest.
///
/// Results depend on accounts and records only, never on the tx or nonce index, so a
/// validator that pruned old index entries computes what every other one does. A tx
/// applied before is `stale_nonce` when included again: applying it used its nonce for
/// good. (`duplicate`, which read the tx index, is no longer produced.)
pub fn execute<V: StateView + ?Sized>(
    block: &Block,
    view: &V,
    params: &Params,
) -> Result<Execution, ExecError> {
    let height = block.height();
    let state_err = |source| ExecError::State { height, source };
    let (executed, previous) = view.last_state().map_err(state_err)?;
    if height != executed.next() || executed.0 == u64::MAX {
        return Err(ExecError::HeightMismatch {
            executed,
            block: height,
        });
    }
    if u32::try_from(block.txs.len()).is_err() {
        return Err(ExecError::TooManyTxs {
            height,
            count: block.txs.len(),
        });
    }

    let mut overlay = Overlay::new(view);
    let tx_hashes = block.tx_hashes();
    let mut results = Vec::with_capacity(block.txs.len());
    for tx in &block.txs {
        let result = overlay.apply(tx, params).map_err(state_err)?;
        results.push(result);
    }

    let changes = overlay.into_changes();
    let results_tree = results_tree(tx_hashes, &results);
    let results_root = results_tree.root();
    let block_digest = block.digest();
    let checkpoint = params.checkpoint_interval != 0 && height.0 % params.checkpoint_interval == 0;
    let changes_hash = changes.hash();
    let opening = if checkpoint {
        Some(StateOpening {
            height,
            previous,
            block_digest,
            results_root,
            changes_hash,
            state_root: view.state_root(&changes).map_err(state_err)?,
        })
    } else {
        None
    };
    let state_digest = match &opening {
        Some(o) => checkpoint_state_digest(o),
        None => state_digest(&previous, &block_digest, &results_root, &changes_hash),
    };
    let execution = Execution {
        height,
        block_digest,
        tx_hashes: tx_hashes.to_vec(),
        results,
        changes,
        results_root,
        results_tree,
        opening,
        state_digest,
    };
    debug_assert_eq!(execution.results.len(), block.txs.len());
    debug_assert!(
        execution.results.iter().any(|r| r.is_applied()) || execution.changes.is_empty(),
        "only applied txs change state"
    );
    Ok(execution)
}

/// The block's writes so far over the committed state. Only applied txs write, so its
/// maps are exactly the block's state changes.
struct Overlay<'a, V: ?Sized> {
    base: &'a V,
    accounts: BTreeMap<PublicKey, Account>,
    records: BTreeMap<(PublicKey, RecordKey), RecordValue>,
}

impl<'a, V: StateView + ?Sized> Overlay<'a, V> {
    fn new(base: &'a V) -> Self {
        Overlay {
            base,
            accounts: BTreeMap::new(),
            records: BTreeMap::new(),
        }
    }

    fn account(&self, key: &PublicKey) -> Result<Option<Account>, StateError> {
        match self.accounts.get(key) {
            Some(a) => Ok(Some(*a)),
            None => self.base.account(key),
        }
    }

    fn apply(&mut self, tx: &Transaction, params: &Params) -> Result<TxResult, StateError> {
        let Some(mut sender) = self.account(&tx.sender)? else {
            return Ok(TxResult::UnknownSender);
        };
        if tx.nonce < sender.nonce {
            return Ok(TxResult::StaleNonce);
        }
        // Nonce u64::MAX can never be applied: the next nonce would not exist, and a
        // saturating one would let a second tx use the same nonce.
        if tx.nonce > sender.nonce || tx.nonce.0 == u64::MAX {
            return Ok(TxResult::NonceGap);
        }
        let before = self.balance_pair(tx)?;
        sender.nonce = Nonce(tx.nonce.0 + 1);
        let result = match &tx.op {
            Op::Transfer { to, amount } => {
                self.transfer(&tx.sender, &mut sender, to, *amount, params)?
            }
            Op::Put { key, value } => {
                self.records.insert((tx.sender, key.clone()), value.clone());
                TxResult::Ok
            }
        };
        self.accounts.insert(tx.sender, sender);
        debug_assert!(result.is_applied());
        debug_assert_eq!(
            before,
            self.balance_pair(tx)?,
            "a tx moves value between its two parties, never creates or destroys it"
        );
        Ok(result)
    }

    /// Moves `amount` from `sender` (the caller writes it back) to `to`.
    fn transfer(
        &mut self,
        from: &PublicKey,
        sender: &mut Account,
        to: &PublicKey,
        amount: Amount,
        params: &Params,
    ) -> Result<TxResult, StateError> {
        if to.is_small_order() {
            // Well-formedness refuses these too (anyone can sign for such a key under
            // ZIP-215); if one reaches a block anyway it uses the nonce and moves nothing.
            return Ok(TxResult::Malformed);
        }
        let Some(remaining) = sender.balance.checked_sub(amount) else {
            return Ok(TxResult::InsufficientFunds);
        };
        if to == from {
            // Well-formedness refuses self-transfers before consensus; if one reaches a
            // block anyway it is a no-op that still uses the nonce.
            return Ok(TxResult::Ok);
        }
        let recipient = match self.account(to)? {
            Some(mut r) => match r.balance.checked_add(amount) {
                Some(b) => {
                    r.balance = b;
                    r
                }
                None => return Ok(TxResult::TooLarge),
            },
            None if amount < params.min_new_account => return Ok(TxResult::BelowMinimum),
            None => Account {
                balance: amount,
                nonce: Nonce(0),
            },
        };
        sender.balance = remaining;
        self.accounts.insert(*to, recipient);
        Ok(TxResult::Ok)
    }

    /// Sum of the balances of a tx's sender and (for a transfer) recipient, for the
    /// conservation check in debug builds.
    fn balance_pair(&self, tx: &Transaction) -> Result<u128, StateError> {
        let bal = |k: &PublicKey| -> Result<u128, StateError> {
            Ok(self.account(k)?.map_or(0, |a| u128::from(a.balance.0)))
        };
        let mut sum = bal(&tx.sender)?;
        if let Op::Transfer { to, .. } = &tx.op {
            if *to != tx.sender {
                sum += bal(to)?;
            }
        }
        Ok(sum)
    }

    fn into_changes(self) -> StateChanges {
        StateChanges {
            accounts: self.accounts,
            records: self.records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use stele_crypto::{ChainId, Signature, Signed};
    use stele_types::{GenesisAccount, TxBody};

    fn key(i: u8) -> PublicKey {
        PublicKey([i; 32])
    }

    fn params() -> Params {
        Params {
            min_new_account: Amount(10),
            ..Params::default()
        }
    }

    fn genesis(accounts: &[(u8, u64)]) -> Genesis {
        Genesis {
            chain_id: ChainId::new("ledger-test").unwrap(),
            genesis_time_ms: 1,
            validators: vec![],
            accounts: accounts
                .iter()
                .map(|&(k, b)| GenesisAccount {
                    key: key(k),
                    balance: Amount(b),
                })
                .collect(),
            params: params(),
        }
    }

    fn tx(sender: u8, nonce: u64, op: Op) -> Transaction {
        Signed {
            value: TxBody {
                sender: key(sender),
                nonce: Nonce(nonce),
                op,
            },
            signature: Signature([0; 64]),
        }
    }

    fn pay(sender: u8, nonce: u64, to: u8, amount: u64) -> Transaction {
        tx(
            sender,
            nonce,
            Op::Transfer {
                to: key(to),
                amount: Amount(amount),
            },
        )
    }

    /// Executes `txs` as the next block over `s` and applies it.
    fn run(s: &mut MemState, txs: Vec<Transaction>) -> Execution {
        let h = s.last_state().unwrap().0.next();
        let block = Block::new(h, 1000 + h.0, txs);
        let e = execute(&block, s, &params()).unwrap();
        s.apply(&block, &e);
        e
    }

    fn acct(s: &MemState, k: u8) -> Option<(u64, u64)> {
        s.account(&key(k))
            .unwrap()
            .map(|a| (a.balance.0, a.nonce.0))
    }

    #[test]
    fn transfer_moves_value_and_uses_the_nonce() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 5)]));
        let e = run(&mut s, vec![pay(1, 0, 2, 30)]);
        assert_eq!(e.results, vec![TxResult::Ok]);
        assert_eq!(acct(&s, 1), Some((70, 1)));
        assert_eq!(acct(&s, 2), Some((35, 0)));
        assert_eq!(e.changes.accounts.len(), 2);
    }

    #[test]
    fn failed_but_applied_txs_change_only_the_nonce() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, u64::MAX - 5)]));
        let e = run(
            &mut s,
            vec![
                pay(1, 0, 2, 101), // more than the balance
                pay(1, 1, 2, 6),   // recipient would overflow
                pay(1, 2, 9, 9),   // new account below the minimum of 10
            ],
        );
        assert_eq!(
            e.results,
            vec![
                TxResult::InsufficientFunds,
                TxResult::TooLarge,
                TxResult::BelowMinimum
            ]
        );
        assert_eq!(acct(&s, 1), Some((100, 3)));
        assert_eq!(acct(&s, 2), Some((u64::MAX - 5, 0)));
        assert_eq!(acct(&s, 9), None);
        assert_eq!(e.changes.accounts.keys().collect::<Vec<_>>(), vec![&key(1)]);
        assert_eq!(s.applied_count(), 3);
    }

    #[test]
    fn a_transfer_to_a_small_order_key_in_a_block_moves_nothing() {
        // The identity point: under ZIP-215 anyone can sign for it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let small = PublicKey(identity);
        assert!(small.is_small_order());
        let mut s = MemState::genesis(&genesis(&[(1, 100)]));
        let t = tx(
            1,
            0,
            Op::Transfer {
                to: small,
                amount: Amount(50),
            },
        );
        let e = run(&mut s, vec![t]);
        assert_eq!(e.results, vec![TxResult::Malformed]);
        assert_eq!(acct(&s, 1), Some((100, 1)), "only the nonce moves");
        assert_eq!(s.account(&small).unwrap(), None, "no account is made");
        assert_eq!(e.changes.accounts.keys().collect::<Vec<_>>(), vec![&key(1)]);
    }

    #[test]
    fn transfer_of_at_least_the_minimum_creates_the_account() {
        let mut s = MemState::genesis(&genesis(&[(1, 100)]));
        let e = run(&mut s, vec![pay(1, 0, 9, 10)]);
        assert_eq!(e.results, vec![TxResult::Ok]);
        assert_eq!(acct(&s, 9), Some((10, 0)));
        assert_eq!(s.total_supply(), 100);
    }

    #[test]
    fn not_applied_results_change_nothing() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 0)]));
        run(&mut s, vec![pay(1, 0, 2, 10)]);
        let before = s.clone();
        let e = run(
            &mut s,
            vec![
                pay(7, 0, 1, 1),  // no account
                pay(1, 0, 2, 20), // nonce 0 is used
                pay(1, 5, 2, 20), // nonce 5 is ahead of 1
            ],
        );
        assert_eq!(
            e.results,
            vec![
                TxResult::UnknownSender,
                TxResult::StaleNonce,
                TxResult::NonceGap
            ]
        );
        assert!(e.changes.is_empty());
        assert_eq!(
            s.accounts().collect::<Vec<_>>(),
            before.accounts().collect::<Vec<_>>()
        );
        assert_eq!(s.applied_count(), before.applied_count());
        assert_ne!(s.last_state().unwrap().1, before.last_state().unwrap().1);
    }

    /// A view of `MemState` whose tx and nonce indexes were pruned: what a validator
    /// that removed old index entries (issue 24) executes over.
    struct Pruned<'a>(&'a MemState);

    impl StateView for Pruned<'_> {
        fn account(&self, key: &PublicKey) -> Result<Option<stele_types::Account>, StateError> {
            self.0.account(key)
        }
        fn record(
            &self,
            owner: &PublicKey,
            key: &stele_types::RecordKey,
        ) -> Result<Option<stele_types::RecordValue>, StateError> {
            self.0.record(owner, key)
        }
        fn tx_location(&self, _: &TxHash) -> Result<Option<TxLocation>, StateError> {
            Ok(None)
        }
        fn nonce_tx(&self, _: &PublicKey, _: Nonce) -> Result<Option<TxHash>, StateError> {
            Ok(None)
        }
        fn last_state(&self) -> Result<(Height, Digest), StateError> {
            self.0.last_state()
        }
        fn state_root(&self, changes: &StateChanges) -> Result<Digest, StateError> {
            self.0.state_root(changes)
        }
    }

    #[test]
    fn execution_does_not_depend_on_the_prunable_tx_and_nonce_indexes() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 0)]));
        let t = pay(1, 0, 2, 10);
        run(&mut s, vec![t.clone()]);
        // The applied tx again, and a fresh one: every validator must get the same
        // results and digest whether or not it still holds the index entries.
        let h = s.last_state().unwrap().0.next();
        let block = Block::new(h, 1000 + h.0, vec![t, pay(1, 1, 2, 5)]);
        let full = execute(&block, &s, &params()).unwrap();
        let pruned = execute(&block, &Pruned(&s), &params()).unwrap();
        assert_eq!(full.results, pruned.results);
        assert_eq!(full.state_digest, pruned.state_digest);
        assert_eq!(full.results, vec![TxResult::StaleNonce, TxResult::Ok]);
    }

    #[test]
    fn a_tx_included_in_two_blocks_is_applied_once() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 0)]));
        let t = pay(1, 0, 2, 10);
        let first = run(&mut s, vec![t.clone()]);
        assert_eq!(first.results, vec![TxResult::Ok]);
        // Applying it used its nonce: included again it is stale.
        let second = run(&mut s, vec![t.clone()]);
        assert_eq!(second.results, vec![TxResult::StaleNonce]);
        assert_eq!(acct(&s, 1), Some((90, 1)));
        assert_eq!(acct(&s, 2), Some((10, 0)));
        // Twice in one block (a body that check_content would refuse): the first copy
        // used the nonce.
        let t2 = pay(1, 1, 2, 10);
        let e = run(&mut s, vec![t2.clone(), t2]);
        assert_eq!(e.results, vec![TxResult::Ok, TxResult::StaleNonce]);
        assert_eq!(acct(&s, 1), Some((80, 2)));
    }

    #[test]
    fn a_tx_that_was_gapped_applies_when_its_turn_comes() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 0)]));
        let later = pay(1, 1, 2, 10);
        assert_eq!(
            run(&mut s, vec![later.clone()]).results,
            vec![TxResult::NonceGap]
        );
        let e = run(&mut s, vec![pay(1, 0, 2, 10), later]);
        assert_eq!(e.results, vec![TxResult::Ok, TxResult::Ok]);
        assert_eq!(acct(&s, 1), Some((80, 2)));
    }

    #[test]
    fn later_txs_in_a_block_see_earlier_ones() {
        let mut s = MemState::genesis(&genesis(&[(1, 100)]));
        // 9 has no account until the first tx creates it; then it can send.
        let e = run(
            &mut s,
            vec![pay(9, 0, 1, 5), pay(1, 0, 9, 50), pay(9, 0, 8, 20)],
        );
        assert_eq!(
            e.results,
            vec![TxResult::UnknownSender, TxResult::Ok, TxResult::Ok]
        );
        assert_eq!(acct(&s, 9), Some((30, 1)));
        assert_eq!(acct(&s, 8), Some((20, 0)));
        assert_eq!(s.total_supply(), 100);
    }

    #[test]
    fn put_writes_a_record_in_the_senders_namespace() {
        let mut s = MemState::genesis(&genesis(&[(1, 100), (2, 100)]));
        let k = RecordKey::new(b"seat".to_vec()).unwrap();
        let put = |sender, v: &[u8]| {
            tx(
                sender,
                0,
                Op::Put {
                    key: k.clone(),
                    value: RecordValue::new(v.to_vec()).unwrap(),
                },
            )
        };
        let e = run(&mut s, vec![put(1, b"12A"), put(2, b"3C")]);
        assert_eq!(e.results, vec![TxResult::Ok, TxResult::Ok]);
        assert_eq!(s.record(&key(1), &k).unwrap().unwrap().as_slice(), b"12A");
        assert_eq!(s.record(&key(2), &k).unwrap().unwrap().as_slice(), b"3C");
        assert_eq!(e.changes.records.len(), 2);
    }

    #[test]
    fn null_blocks_advance_the_digest_and_change_nothing() {
        let g = genesis(&[(1, 100)]);
        let mut s = MemState::genesis(&g);
        let d0 = s.last_state().unwrap().1;
        assert_eq!(d0, genesis_state_digest(&g));
        let null = Block::null(Height(1));
        let e = execute(&null, &s, &params()).unwrap();
        assert!(e.changes.is_empty() && e.results.is_empty());
        assert_ne!(e.state_digest, d0);
        assert_eq!(
            e.state_digest,
            state_digest(
                &d0,
                &null.digest(),
                &merkle::empty_root(),
                &StateChanges::default().hash()
            )
        );
        s.apply(&null, &e);
        assert_eq!(s.last_state().unwrap(), (Height(1), e.state_digest));
    }

    #[test]
    fn executing_a_height_other_than_the_next_is_refused() {
        let s = MemState::genesis(&genesis(&[(1, 100)]));
        let err = execute(&Block::null(Height(2)), &s, &params()).unwrap_err();
        assert_eq!(
            err,
            ExecError::HeightMismatch {
                executed: Height(0),
                block: Height(2)
            }
        );
        assert!(err.to_string().contains("expects height 1"), "{err}");
    }

    #[test]
    fn nonce_u64_max_is_never_applied() {
        let mut s = MemState::genesis(&genesis(&[(1, 100)]));
        // Reach nonce u64::MAX by way of a hand-built state: give 1 that nonce directly.
        let e = Execution {
            changes: StateChanges {
                accounts: [(
                    key(1),
                    Account {
                        balance: Amount(100),
                        nonce: Nonce(u64::MAX),
                    },
                )]
                .into(),
                records: BTreeMap::new(),
            },
            ..execute(&Block::null(Height(1)), &s, &params()).unwrap()
        };
        s.apply(&Block::null(Height(1)), &e);
        let r = run(&mut s, vec![pay(1, u64::MAX, 2, 10)]);
        assert_eq!(r.results, vec![TxResult::NonceGap]);
        assert_eq!(acct(&s, 1), Some((100, u64::MAX)));
    }

    #[test]
    fn the_digest_commits_to_the_results_and_the_genesis() {
        // Same block, different prior state, different results: different digests.
        let b = Block::new(Height(1), 5, vec![pay(1, 0, 2, 50)]);
        let rich = MemState::genesis(&genesis(&[(1, 100), (2, 0)]));
        let poor = MemState::genesis(&genesis(&[(1, 10), (2, 0)]));
        let er = execute(&b, &rich, &params()).unwrap();
        let ep = execute(&b, &poor, &params()).unwrap();
        assert_eq!(er.results, vec![TxResult::Ok]);
        assert_eq!(ep.results, vec![TxResult::InsufficientFunds]);
        assert_ne!(er.results_root, ep.results_root);
        assert_ne!(er.state_digest, ep.state_digest);
        assert_ne!(
            genesis_state_digest(&genesis(&[(1, 100)])),
            genesis_state_digest(&genesis(&[(1, 101)]))
        );
        // And it is exactly the documented formula.
        assert_eq!(
            er.results_root,
            merkle::root(&[stele_types::codec::encode(&(
                b.tx_hashes()[0],
                TxResult::Ok
            ))])
        );
    }
}
