//! Fixtures shared by stele-types' integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use stele_crypto::{ChainBinding, ChainId, Digest, KeyPair, Signed, Signer};
use stele_types::genesis::{Genesis, GenesisAccount, Params};
use stele_types::{Amount, ValidatorInfo, ValidatorSet};

pub fn chain() -> ChainId {
    ChainId::new("stele-test").unwrap()
}

/// What [`sign`] signs for and [`set`] verifies for, whatever the set's size: these
/// tests are about certificates and kinds, not about which genesis.
pub fn binding() -> ChainBinding {
    ChainBinding::new(chain(), Digest::of(b"stele-test genesis"))
}

pub fn keys(n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|i| KeyPair::from_seed([i as u8 + 1; 32]))
        .collect()
}

pub fn genesis(n: usize) -> Genesis {
    genesis_with(n, Params::default())
}

pub fn genesis_with(n: usize, params: Params) -> Genesis {
    Genesis {
        chain_id: chain(),
        genesis_time_ms: 1_700_000_000_000,
        validators: keys(n)
            .iter()
            .enumerate()
            .map(|(i, k)| ValidatorInfo {
                key: k.public(),
                p2p_addr: format!("127.0.0.1:{}", 7100 + i),
                api_addr: format!("127.0.0.1:{}", 8100 + i),
            })
            .collect(),
        accounts: (0..4u8)
            .map(|i| GenesisAccount {
                key: KeyPair::from_seed([200 + i; 32]).public(),
                balance: Amount(1_000_000),
            })
            .collect(),
        params,
    }
}

pub fn set(n: usize) -> ValidatorSet {
    ValidatorSet::new(binding(), genesis(n).validators)
}

pub fn sign<T: stele_crypto::Signable>(value: T, k: &dyn Signer) -> Signed<T> {
    Signed::sign(value, &binding(), k)
}
