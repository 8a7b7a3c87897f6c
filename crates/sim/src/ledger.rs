//! A small deterministic executor with nonces and balances, standing in for stele-ledger
//! inside the simulator: same results vocabulary, same nonce rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use stele_crypto::{Digest, PublicKey};
use stele_types::{codec, tx_hash, Account, Amount, Block, Genesis, Nonce, Op, TxHash, TxResult};

/// Accounts and the applied-tx index of one replica.
#[derive(Debug, Clone)]
pub struct MiniLedger {
    pub accounts: BTreeMap<PublicKey, Account>,
    pub applied: HashMap<TxHash, (u64, TxResult)>,
    pub digest: Digest,
    min_new: Amount,
}

impl MiniLedger {
    /// The genesis state.
    pub fn genesis(g: &Genesis) -> MiniLedger {
        MiniLedger {
            accounts: g
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
                .collect(),
            applied: HashMap::new(),
            digest: Digest::of_parts("stele/state/0", &[g.digest().as_bytes()]),
            min_new: g.params.min_new_account,
        }
    }

    /// Executes a block: per-tx results and the new state digest.
    pub fn execute(&mut self, block: &Block) -> Vec<TxResult> {
        let mut results = Vec::with_capacity(block.txs.len());
        for tx in &block.txs {
            let h = tx_hash(tx);
            let r = if self.applied.contains_key(&h) {
                TxResult::Duplicate
            } else if let Some(acct) = self.accounts.get(&tx.sender).copied() {
                if tx.nonce < acct.nonce {
                    TxResult::StaleNonce
                } else if tx.nonce > acct.nonce {
                    TxResult::NonceGap
                } else {
                    let r = self.apply(&tx.sender, &tx.value.op);
                    if let Some(a) = self.accounts.get_mut(&tx.sender) {
                        a.nonce = a.nonce.next();
                    }
                    self.applied.insert(h, (block.height().0, r));
                    r
                }
            } else {
                TxResult::UnknownSender
            };
            results.push(r);
        }
        let pairs: Vec<(TxHash, TxResult)> = block
            .txs
            .iter()
            .map(tx_hash)
            .zip(results.iter().copied())
            .collect();
        self.digest = Digest::of_parts(
            "stele/sim/state",
            &[
                self.digest.as_bytes(),
                block.digest().as_bytes(),
                &codec::encode(&pairs),
            ],
        );
        results
    }

    fn apply(&mut self, sender: &PublicKey, op: &Op) -> TxResult {
        match op {
            Op::Put { .. } => TxResult::Ok,
            Op::Transfer { to, amount } => {
                let Some(from) = self.accounts.get(sender).copied() else {
                    return TxResult::UnknownSender;
                };
                let Some(left) = from.balance.checked_sub(*amount) else {
                    return TxResult::InsufficientFunds;
                };
                let target = self.accounts.get(to).copied();
                if target.is_none() && *amount < self.min_new {
                    return TxResult::BelowMinimum;
                }
                let to_acct = target.unwrap_or_default();
                let Some(new_to) = to_acct.balance.checked_add(*amount) else {
                    return TxResult::TooLarge;
                };
                self.accounts.insert(
                    *sender,
                    Account {
                        balance: left,
                        nonce: from.nonce,
                    },
                );
                self.accounts.insert(
                    *to,
                    Account {
                        balance: new_to,
                        nonce: to_acct.nonce,
                    },
                );
                TxResult::Ok
            }
        }
    }

    /// Next nonce of `sender`, if it has an account.
    pub fn nonce_of(&self, sender: &PublicKey) -> Option<Nonce> {
        self.accounts.get(sender).map(|a| a.nonce)
    }

    /// Sum of all balances (conserved by transfers).
    pub fn supply(&self) -> u128 {
        self.accounts.values().map(|a| a.balance.0 as u128).sum()
    }

    /// Senders touched by a block.
    pub fn senders(block: &Block) -> HashSet<PublicKey> {
        block.txs.iter().map(|t| t.sender).collect()
    }
}
