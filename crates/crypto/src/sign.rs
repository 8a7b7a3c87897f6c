//! Domain-separated signatures and the types that keep unverified data out of the core.
//!
//! Every signature covers (chain id, message-kind tag, canonical bytes): a PREPARE never
//! verifies as a COMMIT, a transaction, or on another chain. One validity rule holds on
//! every path, Ed25519 `verify_strict`; batch verification is only a faster way to reach
//! the same verdict. Signing and verifying go through the [`Signer`] and [`Scheme`]
//! traits so the simulator can swap in a cheap keyed stand-in.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{OnceLock, RwLock};

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::Scalar;
use ed25519_dalek::VerifyingKey;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys::PublicKey;

/// Length in bytes of a [`Signature`].
pub const SIGNATURE_LEN: usize = 64;

/// Longest chain id accepted.
pub const MAX_CHAIN_ID_LEN: usize = 64;

/// Prefix of every signed message: a signature made by Stele can never be replayed
/// into another protocol that signs raw bytes with the same key.
const SIGNING_PREFIX: &[u8] = b"stele/sig/v1";

/// Why a signature did not verify. Both variants are bad input, never a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public key is not a valid Ed25519 point")]
    BadPublicKey,
    #[error("signature does not verify")]
    Invalid,
}

/// A 64-byte signature (Ed25519 in the product).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return s.serialize_str(&hex::encode(self.0));
        }
        // A fixed-size tuple: no length prefix, so exactly one encoding.
        let mut t = s.serialize_tuple(SIGNATURE_LEN)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <Cow<'de, str>>::deserialize(d)?;
            let mut out = [0u8; SIGNATURE_LEN];
            hex::decode_to_slice(s.as_ref(), &mut out)
                .map_err(|_| de::Error::custom("expected a signature as 128 hex digits"))?;
            return Ok(Signature(out));
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; SIGNATURE_LEN];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(SIGNATURE_LEN, V)
    }
}

/// The chain a validator set runs: part of every signed message.
///
/// 1 to 64 characters from `[a-z0-9._-]`, so it is safe in file names, logs and URLs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId(String);

/// A chain id that breaks the rule above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain id must be 1 to {MAX_CHAIN_ID_LEN} characters of [a-z0-9._-], found {found:?}")]
pub struct ChainIdError {
    found: String,
}

impl ChainId {
    /// Checks and wraps a chain id.
    pub fn new(s: &str) -> Result<ChainId, ChainIdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CHAIN_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(ChainId(s.to_owned()))
        } else {
            Err(ChainIdError {
                found: s.chars().take(MAX_CHAIN_ID_LEN + 8).collect(),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.0)
    }
}

impl Serialize for ChainId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChainId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowed where the format allows: a hostile length prefix is checked against
        // the input before anything is allocated.
        let s = <Cow<'de, str>>::deserialize(d)?;
        ChainId::new(&s).map_err(de::Error::custom)
    }
}

/// The exact bytes a signature covers: prefix, chain id, kind tag, payload, each
/// length-prefixed.
pub fn signing_message(chain: &ChainId, domain: &str, payload: &[u8]) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(SIGNING_PREFIX.len() + chain.0.len() + domain.len() + payload.len() + 8);
    m.extend_from_slice(SIGNING_PREFIX);
    for part in [chain.0.as_bytes(), domain.as_bytes()] {
        // Both are short (chain ids ≤ 64 bytes, tags are constants).
        m.push(part.len() as u8);
        m.extend_from_slice(part);
    }
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

/// Verifies signatures. [`Ed25519`] in the product.
pub trait Scheme: Send + Sync + fmt::Debug {
    /// The one validity rule.
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError>;

    /// The same verdicts as calling [`Scheme::verify`] on each item, possibly faster.
    fn verify_batch(
        &self,
        items: &[(&PublicKey, &[u8], &Signature)],
    ) -> Vec<Result<(), SignatureError>> {
        items.iter().map(|(k, m, s)| self.verify(k, m, s)).collect()
    }
}

/// Makes signatures. [`crate::KeyPair`] in the product.
pub trait Signer: Send + Sync {
    /// The key that verifies this signer's signatures.
    fn public_key(&self) -> PublicKey;
    /// Signs `message` as is; callers go through [`Signed::sign`] for domain separation.
    fn sign_raw(&self, message: &[u8]) -> Signature;
}

/// Ed25519 with `verify_strict` semantics on every path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519;

impl Ed25519 {
    /// Whether an item may go into a batch: everything `verify_strict` rejects without
    /// doing the group equation is rejected here too, and a non-canonical R (which a
    /// batch would accept, since it decompresses R instead of comparing encodings) is
    /// sent to the single path. R is never decompressed here: a batch does that anyway,
    /// and an R that does not decompress fails the batch and then the single path.
    fn batchable(key: &PublicKey, sig: &Signature) -> Result<Option<VerifyingKey>, SignatureError> {
        let vk = verifying_key(key)?;
        if vk.is_weak() {
            return Err(SignatureError::Invalid);
        }
        let mut s = [0u8; 32];
        s.copy_from_slice(&sig.0[32..]);
        if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
            return Err(SignatureError::Invalid);
        }
        let mut r = [0u8; 32];
        r.copy_from_slice(&sig.0[..32]);
        if small_order_encodings().contains(&r) {
            return Err(SignatureError::Invalid);
        }
        if !is_canonical_y(&r) {
            return Ok(None);
        }
        Ok(Some(vk))
    }
}

/// Most decompressed keys remembered; past it the cache starts over.
const KEY_CACHE_CAP: usize = 1 << 16;

/// The decompressed form of `key`. Decompressing a point costs about as much as a sixth
/// of a verification, and the same few thousand senders and the validators sign
/// everything, so the points are kept (the profile of a loaded primary showed 10 % of
/// its time in decompression). A key that does not decompress is not kept.
fn verifying_key(key: &PublicKey) -> Result<VerifyingKey, SignatureError> {
    static CACHE: OnceLock<RwLock<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(HashMap::new()));
    if let Some(vk) = cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key.as_bytes())
    {
        return Ok(*vk);
    }
    let vk = VerifyingKey::from_bytes(key.as_bytes()).map_err(|_| SignatureError::BadPublicKey)?;
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    if w.len() >= KEY_CACHE_CAP {
        w.clear();
    }
    w.insert(*key.as_bytes(), vk);
    Ok(vk)
}

/// Whether the y coordinate of an encoded point (sign bit aside) is below p = 2^255 − 19.
fn is_canonical_y(enc: &[u8; 32]) -> bool {
    let top = enc[31] & 0x7f;
    !(top == 0x7f && enc[1..31].iter().all(|&b| b == 0xff) && enc[0] >= 0xed)
}

/// Every 32-byte string that decompresses to a point of small order: the eight torsion
/// points, with non-canonical y and sign-bit variants. Computed once; checking R against
/// it costs a few comparisons instead of a decompression.
fn small_order_encodings() -> &'static [[u8; 32]] {
    static SET: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut out: Vec<[u8; 32]> = Vec::new();
        for t in EIGHT_TORSION.iter() {
            let c = t.compress().to_bytes();
            let mut candidates = vec![c];
            // y + p, when that still fits in 255 bits (y < 19).
            let mut y_plus_p = c;
            let mut carry = 0u16;
            let p: [u8; 32] = {
                let mut p = [0xffu8; 32];
                p[0] = 0xed;
                p[31] = 0x7f;
                p
            };
            y_plus_p[31] &= 0x7f;
            for (b, pb) in y_plus_p.iter_mut().zip(p.iter()) {
                let v = *b as u16 + *pb as u16 + carry;
                *b = v as u8;
                carry = v >> 8;
            }
            if carry == 0 && y_plus_p[31] & 0x80 == 0 {
                y_plus_p[31] |= c[31] & 0x80;
                candidates.push(y_plus_p);
            }
            for cand in candidates {
                for sign in [0u8, 0x80] {
                    let mut e = cand;
                    e[31] = (e[31] & 0x7f) | sign;
                    let small = CompressedEdwardsY(e)
                        .decompress()
                        .is_some_and(|pt| pt.is_small_order());
                    if small && !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
        }
        out
    })
}

impl Scheme for Ed25519 {
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        let vk = verifying_key(key)?;
        vk.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .map_err(|_| SignatureError::Invalid)
    }

    fn verify_batch(
        &self,
        items: &[(&PublicKey, &[u8], &Signature)],
    ) -> Vec<Result<(), SignatureError>> {
        let mut out: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
        let mut batch_idx = Vec::with_capacity(items.len());
        let mut msgs = Vec::with_capacity(items.len());
        let mut sigs = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        for (i, (k, m, s)) in items.iter().enumerate() {
            match Ed25519::batchable(k, s) {
                Ok(Some(vk)) => {
                    out.push(Ok(()));
                    batch_idx.push(i);
                    msgs.push(*m);
                    sigs.push(ed25519_dalek::Signature::from_bytes(&s.0));
                    keys.push(vk);
                }
                Ok(None) => out.push(self.verify(k, m, s)),
                Err(e) => out.push(Err(e)),
            }
        }
        let batch_ok = match batch_idx.len() {
            0 => true,
            1 => false, // a batch of one is slower than the single path
            _ => ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok(),
        };
        if !batch_ok {
            // Find the bad items one by one; the verdict is always verify_strict's.
            for &i in &batch_idx {
                let (k, m, s) = items[i];
                out[i] = self.verify(k, m, s);
            }
        }
        debug_assert_eq!(out.len(), items.len());
        out
    }
}

/// A value with a kind tag and canonical bytes: what a signature covers.
pub trait Signable {
    /// The message-kind tag; distinct for every kind of signed message.
    const DOMAIN: &'static str;
    /// The canonical encoding of the value (stele-types' codec).
    fn signing_bytes(&self) -> Vec<u8>;
}

/// A value with a signature that has not been checked: what travels and is stored.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Signed<T> {
    pub value: T,
    pub signature: Signature,
}

impl<T> Deref for Signed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Anything that carries a signature over a [`Signable`] payload.
pub trait SignedMessage {
    /// The signed payload's type.
    type Payload: Signable;
    /// The payload.
    fn payload(&self) -> &Self::Payload;
    /// The signature over it.
    fn signature(&self) -> &Signature;
}

impl<T: Signable> SignedMessage for Signed<T> {
    type Payload = T;
    fn payload(&self) -> &T {
        &self.value
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
}

impl<T: Signable> Signed<T> {
    /// Signs `value` for `chain`.
    pub fn sign(value: T, chain: &ChainId, signer: &dyn Signer) -> Signed<T> {
        let signature = signer.sign_raw(&signing_message(chain, T::DOMAIN, &value.signing_bytes()));
        Signed { value, signature }
    }

    /// The bytes the signature covers.
    pub fn message(&self, chain: &ChainId) -> Vec<u8> {
        signing_message(chain, T::DOMAIN, &self.value.signing_bytes())
    }

    /// Checks the signature against `key`; the only way to a [`Verified`].
    pub fn verify(
        self,
        chain: &ChainId,
        key: &PublicKey,
        scheme: &dyn Scheme,
    ) -> Result<Verified<T>, SignatureError> {
        scheme.verify(key, &self.message(chain), &self.signature)?;
        Ok(Verified(self))
    }

    /// Checks many at once, each against its key; the verdicts are those of [`Signed::verify`].
    pub fn verify_batch(
        items: Vec<(Signed<T>, PublicKey)>,
        chain: &ChainId,
        scheme: &dyn Scheme,
    ) -> Vec<Result<Verified<T>, SignatureError>> {
        let msgs: Vec<Vec<u8>> = items.iter().map(|(s, _)| s.message(chain)).collect();
        let refs: Vec<(&PublicKey, &[u8], &Signature)> = items
            .iter()
            .zip(&msgs)
            .map(|((s, k), m)| (k, m.as_slice(), &s.signature))
            .collect();
        let verdicts = scheme.verify_batch(&refs);
        debug_assert_eq!(verdicts.len(), items.len());
        items
            .into_iter()
            .zip(verdicts)
            .map(|((s, _), v)| v.map(|()| Verified(s)))
            .collect()
    }
}

/// A [`Signed`] value whose signature was checked. There is no other constructor.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Verified<T>(Signed<T>);

impl<T> Verified<T> {
    /// The signed form, to forward or store.
    pub fn signed(&self) -> &Signed<T> {
        &self.0
    }

    /// Gives the signed form back.
    pub fn into_signed(self) -> Signed<T> {
        self.0
    }

    /// The signature that was checked.
    pub fn signature(&self) -> &Signature {
        &self.0.signature
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: Serialize> Serialize for Verified<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;

    #[test]
    fn small_order_set_holds_every_torsion_encoding_and_nothing_else() {
        let set = small_order_encodings();
        // 8 canonical encodings, plus non-canonical and sign variants of the few with small y.
        assert!(set.len() > 8, "{}", set.len());
        for t in EIGHT_TORSION.iter() {
            assert!(set.contains(&t.compress().to_bytes()));
        }
        for e in set {
            assert!(CompressedEdwardsY(*e)
                .decompress()
                .is_some_and(|p| p.is_small_order()));
        }
        let mut p = ED25519_BASEPOINT_POINT;
        for _ in 0..64 {
            assert!(!set.contains(&p.compress().to_bytes()));
            p += ED25519_BASEPOINT_POINT;
        }
    }

    #[test]
    fn canonical_y_boundary() {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(!is_canonical_y(&p));
        p[0] = 0xec;
        assert!(is_canonical_y(&p));
        p[31] = 0xff; // sign bit does not matter
        assert!(is_canonical_y(&p));
    }
}
