//! Fixtures shared by stele-store's tests: a genesis, txs with a placeholder signature
//! (the store and the ledger never check signatures; consensus did), certificates
//! without signatures (the store checks that a certificate names the block, not its
//! signatures: the node verified them), and "execute the next block over the store and
//! commit it".
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use rand::Rng;
use stele_crypto::{ChainId, PublicKey, Signature, Signed};
use stele_ledger::{execute, genesis_changes, genesis_state_digest, Execution};
use stele_store::{GenesisState, Store, StoreConfig, StoreError};
use stele_types::{
    Amount, Block, CommitCertificate, Genesis, GenesisAccount, Nonce, Op, Params, RecordKey,
    RecordValue, StateView, Transaction, TxBody, ValidatorInfo, ViewNumber,
};

/// Funded senders at genesis.
pub const SENDERS: u8 = 16;
pub const BALANCE: u64 = 1_000_000_000;

pub fn key(i: u8) -> PublicKey {
    PublicKey([i; 32])
}

pub fn sender(i: u8) -> PublicKey {
    key(i + 1)
}

pub fn chain() -> ChainId {
    ChainId::new("store-test").unwrap()
}

pub fn params() -> Params {
    Params {
        min_new_account: Amount(10),
        ..Params::default()
    }
}

pub fn genesis() -> Genesis {
    genesis_with_time(1_700_000_000_000)
}

pub fn genesis_with_time(genesis_time_ms: u64) -> Genesis {
    Genesis {
        chain_id: chain(),
        genesis_time_ms,
        validators: (0..4u8)
            .map(|i| ValidatorInfo {
                key: PublicKey([250 - i; 32]),
                p2p_addr: format!("127.0.0.1:{}", 7100 + u16::from(i)),
                api_addr: format!("127.0.0.1:{}", 8100 + u16::from(i)),
            })
            .collect(),
        accounts: (0..SENDERS)
            .map(|i| GenesisAccount {
                key: sender(i),
                balance: Amount(BALANCE),
            })
            .collect(),
        params: params(),
    }
}

pub fn genesis_state(g: &Genesis) -> GenesisState {
    GenesisState {
        changes: genesis_changes(g),
        state_digest: genesis_state_digest(g),
    }
}

pub fn open_with(dir: &Path, g: &Genesis, config: &StoreConfig) -> Result<Store, StoreError> {
    Store::open(dir, g, &genesis_state(g), config)
}

pub fn open(dir: &Path) -> Result<Store, StoreError> {
    open_with(dir, &genesis(), &StoreConfig::default())
}

pub fn tx(sender: PublicKey, nonce: u64, op: Op) -> Transaction {
    Signed {
        value: TxBody {
            sender,
            nonce: Nonce(nonce),
            op,
        },
        signature: Signature([0; 64]),
    }
}

pub fn pay(sender: PublicKey, nonce: u64, to: PublicKey, amount: u64) -> Transaction {
    tx(
        sender,
        nonce,
        Op::Transfer {
            to,
            amount: Amount(amount),
        },
    )
}

pub fn put(sender: PublicKey, nonce: u64, k: &[u8], v: &[u8]) -> Transaction {
    tx(
        sender,
        nonce,
        Op::Put {
            key: RecordKey::new(k.to_vec()).unwrap(),
            value: RecordValue::new(v.to_vec()).unwrap(),
        },
    )
}

pub fn cert(block: &Block) -> CommitCertificate {
    CommitCertificate {
        view: ViewNumber(0),
        height: block.height(),
        digest: block.digest(),
        commits: vec![],
    }
}

/// `n` txs against the state in `view`: mostly next-nonce transfers (to senders and to
/// fresh keys), some puts, some stale or gapped nonces.
pub fn random_txs(view: &impl StateView, rng: &mut impl Rng, n: usize) -> Vec<Transaction> {
    let mut next: std::collections::HashMap<PublicKey, u64> = Default::default();
    (0..n)
        .map(|_| {
            let s = sender(rng.gen_range(0..SENDERS));
            let expected = *next
                .entry(s)
                .or_insert_with(|| view.account(&s).unwrap().unwrap().nonce.0);
            let nonce = match rng.gen_range(0..20) {
                0 => expected.saturating_sub(1),
                1 => expected + 2,
                _ => {
                    next.insert(s, expected + 1);
                    expected
                }
            };
            match rng.gen_range(0..10) {
                0 => put(s, nonce, &[rng.gen_range(0..4)], &rng.gen::<[u8; 8]>()),
                1 => pay(s, nonce, PublicKey(rng.gen()), rng.gen_range(1..30)),
                _ => pay(
                    s,
                    nonce,
                    sender(rng.gen_range(0..SENDERS)),
                    rng.gen_range(1..1000),
                ),
            }
        })
        .collect()
}

/// Executes `txs` as the next block over the store and commits it.
pub fn commit_next(store: &Store, txs: Vec<Transaction>) -> (Block, Execution) {
    let h = store.latest_height().next();
    let block = Block::new(h, 1_700_000_000_000 + h.0, txs);
    let e = execute(&block, store, &params()).unwrap();
    commit(store, &block, &e);
    (block, e)
}

/// Commits `block` as `e` executed it.
pub fn commit(store: &Store, block: &Block, e: &Execution) {
    store
        .commit_block(
            block,
            &cert(block),
            &e.results,
            &e.changes,
            e.state_digest,
            e.opening.as_ref(),
        )
        .unwrap();
}
