//! What this crate's integration tests share: four Ed25519 validators on 127.0.0.1 and
//! one funded sender.

#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;

use stele_consensus::{Config, Engine, Verifier};
use stele_crypto::{ChainId, Digest, Ed25519, KeyPair, Signer};
use stele_types::genesis::Params;
use stele_types::tx::sign_tx;
use stele_types::{
    Amount, Genesis, GenesisAccount, Nonce, Op, ReplicaId, Transaction, TxBody, ValidatorInfo,
    ValidatorSet,
};

pub fn validator(i: u8) -> KeyPair {
    KeyPair::from_seed([i; 32])
}

pub fn sender() -> KeyPair {
    KeyPair::from_seed([100; 32])
}

/// Four validators (keys `validator(0..4)`), [`sender`] funded with 1,000, default
/// parameters.
pub fn four_validators(chain_id: &str) -> Genesis {
    let g = Genesis {
        chain_id: ChainId::new(chain_id).expect("chain id"),
        genesis_time_ms: 1_700_000_000_000,
        validators: (0..4)
            .map(|i| ValidatorInfo {
                key: validator(i).public(),
                p2p_addr: format!("127.0.0.1:{}", 7100 + u16::from(i)),
                api_addr: format!("127.0.0.1:{}", 7200 + u16::from(i)),
            })
            .collect(),
        accounts: vec![GenesisAccount {
            key: sender().public(),
            balance: Amount(1_000),
        }],
        params: Params::default(),
    };
    g.validate().expect("the test genesis is valid");
    g
}

pub fn verifier<'a>(g: &'a Genesis, vs: &'a ValidatorSet) -> Verifier<'a> {
    Verifier {
        validators: vs,
        genesis: g,
        scheme: &Ed25519,
        known: None,
    }
}

/// [`sender`]'s transfer of 5 to validator 0, nonce `nonce`, signed for `g`.
pub fn transfer(g: &Genesis, nonce: u64) -> Transaction {
    let s = sender();
    sign_tx(
        TxBody {
            sender: s.public_key(),
            nonce: Nonce(nonce),
            op: Op::Transfer {
                to: validator(0).public(),
                amount: Amount(5),
            },
        },
        &g.chain_binding(),
        &s,
    )
}

/// Replica `id` of `g` (key `validator(id)`), started at virtual time 0.
pub fn replica(g: &Genesis, id: u8) -> Engine {
    let config = Config {
        id: ReplicaId(u16::from(id)),
        genesis: g.clone(),
        signer: Arc::new(validator(id)),
        genesis_state: Digest::ZERO,
    };
    Engine::new(config, 0)
}
