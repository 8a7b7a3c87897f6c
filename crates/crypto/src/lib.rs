//! stele-crypto: the cryptographic ground every other Stele crate stands on.
//!
//! It owns the digest type, validator and account keys (with their PEM files),
//! domain-separated signing behind a small [`Scheme`] trait, the [`Signed`] /
//! [`Verified`] pair that keeps unchecked data out of the engine, and RFC 6962
//! style Merkle trees. Nothing here knows about blocks or consensus.

mod digest;
mod fixed_bytes;
mod keys;
pub mod merkle;
mod sign;
#[cfg(feature = "sim-scheme")]
pub mod sim;

pub use digest::{Digest, DigestParseError, Hasher, DIGEST_LEN};
pub use keys::{KeyError, KeyPair, PublicKey, PUBLIC_KEY_LEN};
pub use sign::{
    signing_message, verify_time, BatchItem, ChainBinding, ChainId, ChainIdError, Ed25519, Scheme,
    Signable, Signature, SignatureError, Signed, SignedMessage, Signer, Verified, MAX_CHAIN_ID_LEN,
    SIGNATURE_LEN,
};
