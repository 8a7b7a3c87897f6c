//! The validator set: who may vote, n, f, the quorum q = n − f, and primary(v).
//!
//! Every signature on a consensus message is checked here against the genesis keys and
//! for this chain's genesis: nothing from outside the set, or from another chain that
//! shares its id or its keys, counts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stele_crypto::{
    ChainBinding, ChainId, PublicKey, Scheme, Signable, SignatureError, Signed, Verified,
};

use crate::ids::{ReplicaId, ViewNumber};
use crate::messages::ReplicaSigned;

/// Most validators a set may have (ids are u16; quorum certificates stay small).
pub const MAX_VALIDATORS: usize = 256;

/// One validator as genesis lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorInfo {
    /// Its Ed25519 key: signs votes and is its TLS identity.
    pub key: PublicKey,
    /// `host:port` of its QUIC endpoint.
    pub p2p_addr: String,
    /// `host:port` of its HTTP API.
    pub api_addr: String,
}

/// Why a signed consensus message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("signer {0} is not in the validator set")]
    UnknownReplica(ReplicaId),
    #[error("signature of replica {signer}: {source}")]
    Signature {
        signer: ReplicaId,
        source: SignatureError,
    },
}

/// The validators of a chain, ids 0..n−1 in genesis order.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    chain: ChainBinding,
    validators: Vec<ValidatorInfo>,
    by_key: HashMap<PublicKey, ReplicaId>,
}

impl ValidatorSet {
    /// A set over `validators` running `chain`; genesis validation has checked n ≥ 4 and
    /// distinct keys. `Genesis::validator_set` is the usual way to one.
    pub fn new(chain: ChainBinding, validators: Vec<ValidatorInfo>) -> ValidatorSet {
        assert!(
            (1..=MAX_VALIDATORS).contains(&validators.len()),
            "validator count checked by genesis"
        );
        let by_key = validators
            .iter()
            .enumerate()
            .map(|(i, v)| (v.key, ReplicaId(i as u16)))
            .collect::<HashMap<_, _>>();
        assert_eq!(
            by_key.len(),
            validators.len(),
            "validator keys checked distinct by genesis"
        );
        ValidatorSet {
            chain,
            validators,
            by_key,
        }
    }

    /// The chain these validators run, genesis digest included: what every signature
    /// of theirs, and of this chain's senders, is bound to.
    pub fn chain(&self) -> &ChainBinding {
        &self.chain
    }

    /// The chain id, as transactions name it.
    pub fn chain_id(&self) -> &ChainId {
        self.chain.id()
    }

    /// n.
    pub fn n(&self) -> usize {
        self.validators.len()
    }

    /// f = ⌊(n−1)/3⌋, the most faulty validators tolerated.
    pub fn f(&self) -> usize {
        (self.n() - 1) / 3
    }

    /// q = n − f: any two quorums share at least f+1 validators, so one honest one.
    pub fn quorum(&self) -> usize {
        self.n() - self.f()
    }

    /// primary(v) = v mod n.
    pub fn primary(&self, view: ViewNumber) -> ReplicaId {
        ReplicaId((view.0 % self.n() as u64) as u16)
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        (0..self.n()).map(|i| ReplicaId(i as u16))
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: ReplicaId) -> bool {
        id.index() < self.n()
    }

    /// The key of `id`.
    pub fn key(&self, id: ReplicaId) -> Option<&PublicKey> {
        self.validators.get(id.index()).map(|v| &v.key)
    }

    /// The genesis entry of `id`.
    pub fn info(&self, id: ReplicaId) -> Option<&ValidatorInfo> {
        self.validators.get(id.index())
    }

    /// The id whose key is `key`.
    pub fn id_of(&self, key: &PublicKey) -> Option<ReplicaId> {
        self.by_key.get(key).copied()
    }

    /// Checks a consensus message's signature against the key of the replica that must
    /// have signed it, for this chain.
    pub fn verify<T: Signable + ReplicaSigned>(
        &self,
        signed: Signed<T>,
        scheme: &dyn Scheme,
    ) -> Result<Verified<T>, AuthError> {
        let signer = signed.value.signer(self);
        let key = self.key(signer).ok_or(AuthError::UnknownReplica(signer))?;
        signed
            .verify(&self.chain, key, scheme)
            .map_err(|source| AuthError::Signature { signer, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{Digest, KeyPair};

    fn set(n: usize) -> ValidatorSet {
        let v = (0..n)
            .map(|i| ValidatorInfo {
                key: KeyPair::from_seed([i as u8; 32]).public(),
                p2p_addr: format!("127.0.0.1:{}", 7000 + i),
                api_addr: format!("127.0.0.1:{}", 8000 + i),
            })
            .collect();
        ValidatorSet::new(
            ChainBinding::new(ChainId::new("t").unwrap(), Digest::ZERO),
            v,
        )
    }

    #[test]
    fn quorum_arithmetic() {
        for (n, f, q) in [
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 5),
            (7, 2, 5),
            (10, 3, 7),
            (13, 4, 9),
        ] {
            let s = set(n);
            assert_eq!((s.f(), s.quorum()), (f, q), "n={n}");
            // Two quorums intersect in at least f+1 validators.
            assert!(2 * s.quorum() > n + s.f(), "n={n}");
        }
    }

    #[test]
    fn primary_rotates() {
        let s = set(4);
        assert_eq!(s.primary(ViewNumber(0)), ReplicaId(0));
        assert_eq!(s.primary(ViewNumber(5)), ReplicaId(1));
        assert_eq!(
            s.primary(ViewNumber(u64::MAX)),
            ReplicaId((u64::MAX % 4) as u16)
        );
    }

    #[test]
    fn ids_and_keys_agree() {
        let s = set(5);
        for id in s.ids() {
            assert_eq!(s.id_of(s.key(id).unwrap()), Some(id));
        }
        assert!(s.key(ReplicaId(5)).is_none());
        assert!(!s.contains(ReplicaId(5)));
    }
}
