//! A cheap deterministic keyed signature for the simulator: SHA-256 under a secret seed.
//!
//! Forgery is still detected (a signature verifies only if made with the seed behind the
//! public key), at a hundredth of Ed25519's cost. Behind the `sim-scheme` feature: the node
//! never builds it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::{Digest, PublicKey, Scheme, Signature, SignatureError, Signer, SIGNATURE_LEN};

/// A signer of the keyed stand-in.
#[derive(Clone, Debug)]
pub struct MacSigner {
    seed: [u8; 32],
    public: PublicKey,
}

impl MacSigner {
    /// The signer for a seed; its public key is derived from the seed.
    pub fn new(seed: [u8; 32]) -> MacSigner {
        let public = PublicKey(Digest::of_parts("stele/sim/pk", &[&seed]).0);
        MacSigner { seed, public }
    }

    fn mac(seed: &[u8; 32], message: &[u8]) -> Signature {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig[..32].copy_from_slice(&Digest::of_parts("stele/sim/sig", &[seed, message]).0);
        Signature(sig)
    }
}

impl Signer for MacSigner {
    fn public_key(&self) -> PublicKey {
        self.public
    }
    fn sign_raw(&self, message: &[u8]) -> Signature {
        MacSigner::mac(&self.seed, message)
    }
}

/// The verifier of the keyed stand-in: it knows every registered signer's seed.
#[derive(Clone, Debug, Default)]
pub struct MacScheme {
    seeds: Arc<HashMap<PublicKey, [u8; 32]>>,
}

impl MacScheme {
    /// A scheme that verifies the given signers (and nobody else).
    pub fn new<'a>(signers: impl IntoIterator<Item = &'a MacSigner>) -> MacScheme {
        MacScheme {
            seeds: Arc::new(signers.into_iter().map(|s| (s.public, s.seed)).collect()),
        }
    }
}

impl Scheme for MacScheme {
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        let seed = self.seeds.get(key).ok_or(SignatureError::BadPublicKey)?;
        if MacSigner::mac(seed, message) == *sig {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }
}
