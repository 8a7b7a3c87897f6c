//! The vocabulary of execution, shared by the ledger (which computes it), the store
//! (which persists it), the node and the simulator: results, state changes, and the
//! read-only `StateView` the ledger executes over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stele_crypto::{Digest, PublicKey};

use crate::codec;
use crate::ids::{Amount, Height, Nonce};
use crate::tx::{RecordKey, RecordValue, TxHash};

/// The outcome of one tx in a block. The encoding is the variant index: append new
/// variants at the end, never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxResult {
    /// Applied, and did what it said.
    Ok,
    /// Applied (the nonce moved on), but the sender's balance was too small.
    InsufficientFunds,
    /// Applied, but a value was out of bounds (e.g. a balance would overflow).
    TooLarge,
    /// Applied, but a transfer to a new account was below the genesis minimum.
    BelowMinimum,
    /// Not applied: the sender has no account.
    UnknownSender,
    /// Not applied: this very tx was applied before. No longer produced: execution reads
    /// no tx index (which pruning removes), so a tx included again is `stale_nonce`. Kept
    /// so the encoding of the variants after it stays as it was.
    Duplicate,
    /// Not applied: another tx already used this nonce.
    StaleNonce,
    /// Not applied: the nonce is ahead of the sender's next; the tx waits.
    NonceGap,
    /// Applied (the nonce moved on), but the tx is not well-formed (a transfer to a
    /// small-order key) and changes nothing else. Admission refuses such a tx and honest
    /// backups refuse a block holding one, so only a chain that more than f faulty
    /// validators wrote can show it; it is last so older encodings stay as they were.
    Malformed,
}

impl TxResult {
    /// Every result, for metrics labels.
    pub const ALL: [TxResult; 9] = [
        TxResult::Ok,
        TxResult::InsufficientFunds,
        TxResult::TooLarge,
        TxResult::BelowMinimum,
        TxResult::UnknownSender,
        TxResult::Duplicate,
        TxResult::StaleNonce,
        TxResult::NonceGap,
        TxResult::Malformed,
    ];

    /// Whether the tx was applied: its nonce was used, its result is recorded in the tx
    /// index, and it can never be applied again.
    pub fn is_applied(self) -> bool {
        matches!(
            self,
            TxResult::Ok
                | TxResult::InsufficientFunds
                | TxResult::TooLarge
                | TxResult::BelowMinimum
                | TxResult::Malformed
        )
    }

    /// Whether the outcome is final and gets a signed receipt: applied, or `stale_nonce`
    /// (the nonce is used for good by another tx).
    pub fn is_final(self) -> bool {
        self.is_applied() || self == TxResult::StaleNonce
    }

    /// The snake_case name, as in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TxResult::Ok => "ok",
            TxResult::InsufficientFunds => "insufficient_funds",
            TxResult::TooLarge => "too_large",
            TxResult::BelowMinimum => "below_minimum",
            TxResult::UnknownSender => "unknown_sender",
            TxResult::Duplicate => "duplicate",
            TxResult::StaleNonce => "stale_nonce",
            TxResult::NonceGap => "nonce_gap",
            TxResult::Malformed => "malformed",
        }
    }
}

/// An account: balance and the next nonce it must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    pub nonce: Nonce,
}

/// Where an applied tx is: height, index in the block, and its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    pub height: Height,
    pub index: u32,
    pub result: TxResult,
}

/// What executing one block changed: new values of the touched accounts and records.
/// Sorted maps, so the changes hash is the same on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StateChanges {
    pub accounts: BTreeMap<PublicKey, Account>,
    pub records: BTreeMap<(PublicKey, RecordKey), RecordValue>,
}

impl StateChanges {
    /// Hash of the sorted changed accounts and records with their new values.
    pub fn hash(&self) -> Digest {
        Digest::of_parts("stele/state-changes", &[&codec::encode(self)])
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.records.is_empty()
    }
}

/// A failed read of replicated state (a store error); execution stops on it rather than
/// guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct StateError(pub String);

/// Read access to the committed state the ledger executes over: store-backed in the
/// node, in memory in the simulator.
pub trait StateView {
    /// The account of `key`, if it has one.
    fn account(&self, key: &PublicKey) -> Result<Option<Account>, StateError>;
    /// The record `key` in `owner`'s namespace.
    fn record(&self, owner: &PublicKey, key: &RecordKey)
        -> Result<Option<RecordValue>, StateError>;
    /// Where the applied tx `hash` is, if it was applied.
    fn tx_location(&self, hash: &TxHash) -> Result<Option<TxLocation>, StateError>;
    /// The applied tx that used `nonce` of `sender`.
    fn nonce_tx(&self, sender: &PublicKey, nonce: Nonce) -> Result<Option<TxHash>, StateError>;
    /// The height executed last and the state digest after it (height 0: genesis).
    fn last_state(&self) -> Result<(Height, Digest), StateError>;
    /// The state root ([`crate::state_root`]) of this state with `changes` applied
    /// over it: what a checkpoint height's state digest covers.
    fn state_root(&self, changes: &StateChanges) -> Result<Digest, StateError>;
}
