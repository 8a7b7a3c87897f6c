//! Ledger state in memory: the genesis state and [`MemState`], a [`StateView`] that
//! applies [`Execution`]s.
//!
//! The simulator runs the ledger over `MemState`; the node runs it over the store. Both
//! start from [`genesis_changes`] and [`genesis_state_digest`], so a replica's first
//! checkpoint agrees whichever backs it.

use std::collections::{BTreeMap, HashMap};

use stele_crypto::{Digest, PublicKey};
use stele_types::state_root;
use stele_types::{
    Account, Block, Genesis, Height, Nonce, RecordKey, RecordValue, StateChanges, StateError,
    StateView, TxHash, TxLocation,
};

use crate::execute::{genesis_state_digest, Execution};

/// The state at height 0: every genesis account with its balance and nonce 0, no
/// records.
pub fn genesis_changes(genesis: &Genesis) -> StateChanges {
    let accounts: BTreeMap<PublicKey, Account> = genesis
        .accounts
        .iter()
        .map(|a| {
            (
                a.key,
                Account {
                    balance: a.balance,
                    nonce: Nonce(0),
                },
            )
        })
        .collect();
    debug_assert_eq!(
        accounts.len(),
        genesis.accounts.len(),
        "Genesis::validate refuses an account listed twice"
    );
    StateChanges {
        accounts,
        records: BTreeMap::new(),
    }
}

/// The whole ledger state in memory, with the tx and nonce indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemState {
    accounts: BTreeMap<PublicKey, Account>,
    records: BTreeMap<(PublicKey, RecordKey), RecordValue>,
    tx_index: HashMap<TxHash, TxLocation>,
    nonce_index: HashMap<(PublicKey, Nonce), TxHash>,
    height: Height,
    state_digest: Digest,
}

impl MemState {
    /// The state at height 0 of `genesis`.
    pub fn genesis(genesis: &Genesis) -> MemState {
        let changes = genesis_changes(genesis);
        MemState {
            accounts: changes.accounts,
            records: changes.records,
            tx_index: HashMap::new(),
            nonce_index: HashMap::new(),
            height: Height(0),
            state_digest: genesis_state_digest(genesis),
        }
    }

    /// Applies the execution of `block` over this very state.
    ///
    /// # Panics
    /// If `exec` is not the execution of `block` at the next height: applying anything
    /// else would silently fork this replica's state.
    pub fn apply(&mut self, block: &Block, exec: &Execution) {
        assert_eq!(exec.height, self.height.next(), "executions apply in order");
        assert_eq!(
            exec.block_digest,
            block.digest(),
            "execution of another block"
        );
        assert_eq!(exec.results.len(), block.txs.len());
        for (index, location) in exec.applied() {
            let tx = &block.txs[index];
            let hash = exec.tx_hashes[index];
            let fresh_tx = self.tx_index.insert(hash, location).is_none();
            let fresh_nonce = self
                .nonce_index
                .insert((tx.sender, tx.nonce), hash)
                .is_none();
            assert!(
                fresh_tx && fresh_nonce,
                "the tx and nonce indexes are write-once"
            );
        }
        self.accounts
            .extend(exec.changes.accounts.iter().map(|(k, a)| (*k, *a)));
        self.records.extend(
            exec.changes
                .records
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        self.height = exec.height;
        self.state_digest = exec.state_digest;
        debug_assert_eq!(self.last_state(), Ok((exec.height, exec.state_digest)));
    }

    /// Every account, in key order.
    pub fn accounts(&self) -> impl Iterator<Item = (&PublicKey, &Account)> {
        self.accounts.iter()
    }

    /// Every record, in (owner, key) order.
    pub fn records(&self) -> impl Iterator<Item = (&(PublicKey, RecordKey), &RecordValue)> {
        self.records.iter()
    }

    /// The sum of all balances (u128: it cannot overflow, whatever the state).
    pub fn total_supply(&self) -> u128 {
        self.accounts
            .values()
            .map(|a| u128::from(a.balance.0))
            .sum()
    }

    /// How many txs have been applied.
    pub fn applied_count(&self) -> usize {
        self.tx_index.len()
    }
}

impl StateView for MemState {
    fn account(&self, key: &PublicKey) -> Result<Option<Account>, StateError> {
        Ok(self.accounts.get(key).copied())
    }

    fn record(
        &self,
        owner: &PublicKey,
        key: &RecordKey,
    ) -> Result<Option<RecordValue>, StateError> {
        Ok(self.records.get(&(*owner, key.clone())).cloned())
    }

    fn tx_location(&self, hash: &TxHash) -> Result<Option<TxLocation>, StateError> {
        Ok(self.tx_index.get(hash).copied())
    }

    fn nonce_tx(&self, sender: &PublicKey, nonce: Nonce) -> Result<Option<TxHash>, StateError> {
        Ok(self.nonce_index.get(&(*sender, nonce)).copied())
    }

    fn last_state(&self) -> Result<(Height, Digest), StateError> {
        Ok((self.height, self.state_digest))
    }

    fn state_root(&self, changes: &StateChanges) -> Result<Digest, StateError> {
        let mut accounts = self.accounts.clone();
        accounts.extend(changes.accounts.iter().map(|(k, a)| (*k, *a)));
        let mut records = self.records.clone();
        records.extend(changes.records.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(state_root::root_of(&accounts, &records))
    }
}
