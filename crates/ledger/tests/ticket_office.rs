//! The seeds' ticket office: one seller holds N tickets (its balance), three clerks race
//! to sell them, each signing its own sale for the same seller nonce to a different
//! buyer, and buyers resell among themselves. Txs reach blocks in random order (gapped
//! nonces wait in the pool and come back, some txs are included twice, null blocks
//! interleave), exactly as a mempool and faulty primaries would deliver them.
//!
//! Checked after every block: never more than N sold, supply conserved, every result
//! equal to an independent sequential model, and at the end every buyer's balance equal
//! to what the model says it received minus what it sent.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};

use common::{genesis, key, pay};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_crypto::PublicKey;
use stele_ledger::{classify, execute, Class, MemState};
use stele_types::{
    tx_hash, Amount, Block, Height, Op, Params, StateView, Transaction, TxHash, TxResult,
};

const TICKETS: u64 = 40;
/// Seller nonces the clerks sell on: more than the tickets, so some sales must fail.
const SALES: u64 = 60;
const CLERKS: usize = 3;
const BUYERS: u8 = 12;
const RESALES_PER_BUYER: u64 = 5;

fn seller() -> PublicKey {
    key(200)
}

fn buyer(i: u8) -> PublicKey {
    key(i + 1)
}

/// A deliberately plain reimplementation of the rules, to check the ledger against.
#[derive(Default)]
struct Model {
    accounts: HashMap<PublicKey, (u64, u64)>,
    applied: HashSet<TxHash>,
    received: HashMap<PublicKey, u64>,
    sent: HashMap<PublicKey, u64>,
}

impl Model {
    fn apply(&mut self, t: &Transaction, min: u64) -> TxResult {
        let h = tx_hash(t);
        let Some(&(balance, nonce)) = self.accounts.get(&t.sender) else {
            return TxResult::UnknownSender;
        };
        if t.nonce.0 < nonce {
            return TxResult::StaleNonce;
        }
        if t.nonce.0 > nonce {
            return TxResult::NonceGap;
        }
        // The nonce rule alone keeps a tx from being applied twice.
        assert!(self.applied.insert(h), "a tx is applied at most once");
        self.accounts.insert(t.sender, (balance, nonce + 1));
        let Op::Transfer { to, amount } = &t.op else {
            unreachable!("the office only transfers")
        };
        let amount = amount.0;
        if balance < amount {
            return TxResult::InsufficientFunds;
        }
        match self.accounts.get(to).copied() {
            None if amount < min => return TxResult::BelowMinimum,
            None => {
                self.accounts.insert(*to, (amount, 0));
            }
            Some((b, n)) => {
                self.accounts.insert(*to, (b + amount, n));
            }
        }
        self.accounts
            .insert(t.sender, (balance - amount, nonce + 1));
        *self.received.entry(*to).or_default() += amount;
        *self.sent.entry(t.sender).or_default() += amount;
        TxResult::Ok
    }
}

fn run_office(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = Params {
        min_new_account: Amount(1),
        ..Params::default()
    };
    // Even buyers have (empty) genesis accounts; odd ones get one with their first ticket.
    let mut funded = vec![(seller(), TICKETS)];
    funded.extend((0..BUYERS).filter(|i| i % 2 == 0).map(|i| (buyer(i), 0)));
    let g = genesis(&funded, params.clone());
    let mut state = MemState::genesis(&g);
    let mut model = Model::default();
    for (k, b) in &funded {
        model.accounts.insert(*k, (*b, 0));
    }

    let mut pool: Vec<Transaction> = Vec::new();
    for nonce in 0..SALES {
        for _ in 0..CLERKS {
            let t = pay(seller(), nonce, buyer(rng.gen_range(0..BUYERS)), 1);
            if !pool.contains(&t) {
                pool.push(t);
            }
        }
    }
    for b in 0..BUYERS {
        for nonce in 0..RESALES_PER_BUYER {
            let to = buyer((b + rng.gen_range(1..BUYERS)) % BUYERS);
            pool.push(pay(buyer(b), nonce, to, rng.gen_range(1..3)));
        }
    }
    let mut finished: Vec<Transaction> = Vec::new();
    let mut height = Height(0);
    let mut sold_results = 0u64;

    for _ in 0..400 {
        if pool.is_empty() {
            break;
        }
        height = height.next();
        let block = if rng.gen_bool(0.05) {
            Block::null(height)
        } else {
            pool.shuffle(&mut rng);
            let take = rng.gen_range(1..=25).min(pool.len());
            let mut txs: Vec<Transaction> = pool[..take].to_vec();
            // A faulty primary re-proposes a tx that was already applied.
            if !finished.is_empty() && rng.gen_bool(0.2) {
                let t = finished[rng.gen_range(0..finished.len())].clone();
                let at = rng.gen_range(0..=txs.len());
                txs.insert(at, t);
            }
            Block::new(height, height.0 * 10, txs)
        };
        let e = execute(&block, &state, &params).unwrap();
        state.apply(&block, &e);

        for (t, r) in block.txs.iter().zip(&e.results) {
            assert_eq!(*r, model.apply(t, params.min_new_account.0), "tx {t:?}");
            if t.sender == seller() && *r == TxResult::Ok {
                sold_results += 1;
            }
            if r.is_final() {
                if let Some(i) = pool.iter().position(|p| p == t) {
                    finished.push(pool.swap_remove(i));
                }
            }
        }
        // The node's re-classification after execution: dead txs leave the pool.
        pool.retain(|t| {
            let next = state.account(&t.sender).unwrap().map_or(0, |a| a.nonce.0);
            classify(stele_types::Nonce(next), t.nonce) != Class::Dead
        });

        let sold = TICKETS - state.account(&seller()).unwrap().unwrap().balance.0;
        assert!(sold <= TICKETS, "oversold at {height}: {sold}");
        assert_eq!(sold, sold_results);
        assert_eq!(state.total_supply(), u128::from(TICKETS));
    }

    // All tickets are sold (there were more sales than tickets), each seller nonce used
    // once, and what is left in the pool can only be txs of buyers that never got a
    // ticket (so never an account).
    assert_eq!(state.account(&seller()).unwrap().unwrap().balance.0, 0);
    assert_eq!(state.account(&seller()).unwrap().unwrap().nonce.0, SALES);
    assert_eq!(sold_results, TICKETS);
    for t in &pool {
        assert!(state.account(&t.sender).unwrap().is_none(), "{t:?} stuck");
    }
    for b in 0..BUYERS {
        let k = buyer(b);
        let expected =
            model.received.get(&k).copied().unwrap_or(0) - model.sent.get(&k).copied().unwrap_or(0);
        let have = state.account(&k).unwrap().map_or(0, |a| a.balance.0);
        assert_eq!(have, expected, "buyer {b} (seed {seed})");
        assert_eq!(model.accounts.get(&k).map_or(0, |a| a.0), have);
    }
}

#[test]
fn ticket_office_never_oversells_and_every_buyer_balance_is_right() {
    for seed in 0..16 {
        run_office(seed);
    }
}
