//! Fixtures for Stele's criterion benches (the benches themselves are in `benches/`).

use stele_crypto::{ChainBinding, ChainId, Digest, KeyPair};
use stele_types::tx::sign_tx;
use stele_types::{Amount, Block, Height, Nonce, Op, Transaction, TxBody};

/// The chain the fixtures sign for; no genesis is built, any digest names one.
pub fn chain() -> ChainBinding {
    ChainBinding::new(
        ChainId::new("stele-bench").expect("valid chain id"),
        Digest::of(b"stele-bench genesis"),
    )
}

/// `count` transfers, signed by `senders` distinct keys in turn, for [`chain`].
pub fn transfers(count: usize, senders: usize) -> Vec<Transaction> {
    let chain = chain();
    let keys: Vec<KeyPair> = (0..senders).map(|i| KeyPair::from_seed(seed(i))).collect();
    let to = KeyPair::from_seed([0xee; 32]).public();
    (0..count)
        .map(|i| {
            let k = &keys[i % senders];
            sign_tx(
                TxBody {
                    sender: k.public(),
                    nonce: Nonce((i / senders) as u64),
                    op: Op::Transfer {
                        to,
                        amount: Amount(1 + i as u64),
                    },
                },
                &chain,
                k,
            )
        })
        .collect()
}

/// A block of `count` transfers.
pub fn block(count: usize) -> Block {
    Block::new(Height(1), 1_700_000_000_000, transfers(count, 64))
}

fn seed(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s
}
