//! Fixtures shared by stele-ledger's integration tests: a genesis over plain keys, and
//! txs with a placeholder signature (the ledger never checks signatures: consensus
//! admitted only verified txs before they reach it).
#![allow(dead_code, clippy::unwrap_used)]

use stele_crypto::{ChainId, PublicKey, Signature, Signed};
use stele_types::{
    Amount, Genesis, GenesisAccount, Nonce, Op, Params, Transaction, TxBody, ValidatorInfo,
};

pub fn key(i: u8) -> PublicKey {
    PublicKey([i; 32])
}

pub fn chain() -> ChainId {
    ChainId::new("ledger-test").unwrap()
}

pub fn genesis(accounts: &[(PublicKey, u64)], params: Params) -> Genesis {
    Genesis {
        chain_id: chain(),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..4u8)
            .map(|i| ValidatorInfo {
                key: PublicKey([250 - i; 32]),
                p2p_addr: format!("127.0.0.1:{}", 7100 + u16::from(i)),
                api_addr: format!("127.0.0.1:{}", 8100 + u16::from(i)),
            })
            .collect(),
        accounts: accounts
            .iter()
            .map(|&(key, b)| GenesisAccount {
                key,
                balance: Amount(b),
            })
            .collect(),
        params,
    }
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
