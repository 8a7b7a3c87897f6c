//! Domain-separated signatures and the types that keep unverified data out of the core.
//!
//! Every signature covers (chain id, genesis digest, message-kind tag, canonical bytes): a
//! PREPARE never verifies as a COMMIT, a transaction, or on another chain, not even on a
//! new chain that reuses an old one's id. One validity rule holds on
//! every path, Ed25519 under ZIP-215; batch verification is only a faster way to reach
//! the same verdict. Signing and verifying go through the [`Signer`] and [`Scheme`]
//! traits so the simulator can swap in a cheap keyed stand-in.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use curve25519_dalek::Scalar;
use ed25519_consensus::{VerificationKey, VerificationKeyBytes};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DIGEST_LEN};
use crate::keys::PublicKey;

/// Length in bytes of a [`Signature`].
pub const SIGNATURE_LEN: usize = 64;

/// Longest chain id accepted.
pub const MAX_CHAIN_ID_LEN: usize = 64;

/// Prefix of every signed message: a signature made by Stele can never be replayed
/// into another protocol that signs raw bytes with the same key. v2 added the genesis
/// digest; nothing signed under v1 verifies under v2.
const SIGNING_PREFIX: &[u8] = b"stele/sig/v2";

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
        crate::fixed_bytes::serialize(&self.0, s)
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
        crate::fixed_bytes::deserialize(d, "a signature").map(Signature)
    }
}

/// The name of the chain a validator set runs. Transactions carry it; signatures cover
/// it with the genesis digest (see [`ChainBinding`]), since an id can be reused.
///
/// 1 to 64 characters from `[a-z0-9._-]`, so it is safe in file names, logs and URLs.
///
/// Held inline, not as a `String`: every tx carries one, so a heap string meant one
/// allocation per tx decoded and per tx cloned. Bytes past `len` are always zero, so the
/// derived equality, hash and order are those of the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainId {
    bytes: [u8; MAX_CHAIN_ID_LEN],
    len: u8,
}

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
            let mut bytes = [0; MAX_CHAIN_ID_LEN];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Ok(ChainId {
                bytes,
                len: s.len() as u8,
            })
        } else {
            Err(ChainIdError {
                found: s.chars().take(MAX_CHAIN_ID_LEN + 8).collect(),
            })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // `new` admits ASCII only, so any prefix of the bytes is UTF-8.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("a chain id is ASCII")
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainId({})", self.as_str())
    }
}

impl Serialize for ChainId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChainId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ChainId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a chain id of 1 to {MAX_CHAIN_ID_LEN} characters")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ChainId, E> {
                ChainId::new(s).map_err(E::custom)
            }
        }
        // A str, borrowed from the input where the format allows, so a hostile length
        // prefix is checked against the input before anything is allocated. Not a
        // `Cow<str>`: serde always decodes that as an owned String, which the codec
        // allocates at its announced length (up to 64 MiB) before reading it.
        d.deserialize_str(V)
    }
}

/// The one chain a signature is bound to: its id and the digest of its genesis.
///
/// The id alone does not name a chain: a testnet written again, or a chain restarted
/// from a new genesis, may reuse it, often with the same validator and account keys.
/// The genesis digest covers everything the chain started from, so nothing signed for
/// one genesis verifies under another. Derived once from the genesis
/// (`Genesis::chain_binding` in stele-types) and held by everyone who signs or verifies.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChainBinding {
    id: ChainId,
    genesis: Digest,
}

impl ChainBinding {
    /// The chain `id` that started from the genesis whose digest is `genesis`.
    pub fn new(id: ChainId, genesis: Digest) -> ChainBinding {
        ChainBinding { id, genesis }
    }

    /// The chain id, as transactions carry it.
    pub fn id(&self) -> &ChainId {
        &self.id
    }

    /// The digest of the chain's genesis.
    pub fn genesis(&self) -> &Digest {
        &self.genesis
    }
}

impl fmt::Display for ChainBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (genesis {})", self.id, self.genesis)
    }
}

impl fmt::Debug for ChainBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainBinding({}, {:?})", self.id, self.genesis)
    }
}

/// The exact bytes a signature covers: prefix, chain id (length-prefixed), genesis
/// digest (32 bytes), kind tag (length-prefixed), payload (u32 length, little-endian).
pub fn signing_message(chain: &ChainBinding, domain: &str, payload: &[u8]) -> Vec<u8> {
    let id = chain.id.as_str().as_bytes();
    let mut m = Vec::with_capacity(
        SIGNING_PREFIX.len() + id.len() + DIGEST_LEN + domain.len() + payload.len() + 8,
    );
    m.extend_from_slice(SIGNING_PREFIX);
    // One length byte each: chain ids are at most 64 bytes, tags are short constants.
    debug_assert!(id.len() <= MAX_CHAIN_ID_LEN && domain.len() <= usize::from(u8::MAX));
    m.push(id.len() as u8);
    m.extend_from_slice(id);
    // Fixed length, so no prefix: the kind tag's length byte cannot be read as digest.
    m.extend_from_slice(chain.genesis.as_bytes());
    m.push(domain.len() as u8);
    m.extend_from_slice(domain.as_bytes());
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

    /// [`Scheme::verify_batch`]'s verdicts for each group, possibly checked as one batch
    /// (larger batches cost less per signature). A bad item costs its own group the
    /// slow path, not the other groups: they are then checked one batch each.
    fn verify_groups(&self, groups: &[&[BatchItem<'_>]]) -> Vec<Vec<Result<(), SignatureError>>> {
        groups.iter().map(|g| self.verify_batch(g)).collect()
    }
}

/// A key, the message it signed and the signature, for [`Scheme::verify_batch`].
pub type BatchItem<'a> = (&'a PublicKey, &'a [u8], &'a Signature);

/// Makes signatures. [`crate::KeyPair`] in the product.
pub trait Signer: Send + Sync {
    /// The key that verifies this signer's signatures.
    fn public_key(&self) -> PublicKey;
    /// Signs `message` as is; callers go through [`Signed::sign`] for domain separation.
    fn sign_raw(&self, message: &[u8]) -> Signature;
}

/// Ed25519 under ZIP-215 on every path, through `ed25519-consensus`: the cofactored
/// equation, s < l, and any A and R encoding that decompresses (y may be ≥ p). The
/// batch equation is the cofactored one too, with weights from the OS RNG, so a batch
/// accepts exactly when every item alone does: no signature can be built that one
/// path accepts and the other refuses, whatever else shares its batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519;

/// Most decompressed keys remembered; past it the cache starts over.
const KEY_CACHE_CAP: usize = 1 << 16;

/// The decompressed form of `key`. Decompressing a point costs about as much as a sixth
/// of a verification, and the same few thousand senders and the validators sign
/// everything, so the points are kept (the profile of a loaded primary showed 10 % of
/// its time in decompression). A key that does not decompress is not kept.
fn verification_key(key: &PublicKey) -> Result<VerificationKey, SignatureError> {
    static CACHE: OnceLock<RwLock<HashMap<[u8; 32], VerificationKey>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(HashMap::new()));
    if let Some(vk) = cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key.as_bytes())
    {
        return Ok(*vk);
    }
    let vk =
        VerificationKey::try_from(*key.as_bytes()).map_err(|_| SignatureError::BadPublicKey)?;
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    if w.len() >= KEY_CACHE_CAP {
        w.clear();
    }
    w.insert(*key.as_bytes(), vk);
    Ok(vk)
}

/// Whether s is below the group order l, as ZIP-215 requires. Checked before an item
/// joins a batch, so that a malleated s costs its sender one refusal, not a batch.
fn s_is_canonical(sig: &Signature) -> bool {
    let mut s = [0u8; 32];
    s.copy_from_slice(&sig.0[32..]);
    Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_some()
}

/// CPU nanoseconds this process has spent in ed25519 verification (single and batch).
static VERIFY_NANOS: AtomicU64 = AtomicU64::new(0);

/// CPU time this process has spent verifying ed25519 signatures, summed over its
/// threads: a node exports it so `stele bench` can show what share of a validator's CPU
/// the signature checks take. It is the calling thread's CPU clock, not the wall clock:
/// on a busy machine a thread is often descheduled inside a batch, and wall time said
/// 80 % where CPU time said a third. Two clock reads per call (about a microsecond),
/// against tens of microseconds per signature.
pub fn verify_time() -> std::time::Duration {
    std::time::Duration::from_nanos(VERIFY_NANOS.load(Ordering::Relaxed))
}

fn thread_cpu_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn count_verify_time(since: u64) {
    VERIFY_NANOS.fetch_add(thread_cpu_nanos().saturating_sub(since), Ordering::Relaxed);
}

impl Ed25519 {
    fn verify_one(key: &PublicKey, message: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let vk = verification_key(key)?;
        vk.verify(&ed25519_consensus::Signature::from(sig.0), message)
            .map_err(|_| SignatureError::Invalid)
    }
}

impl Scheme for Ed25519 {
    fn verify(
        &self,
        key: &PublicKey,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        let t0 = thread_cpu_nanos();
        let out = Ed25519::verify_one(key, message, sig);
        count_verify_time(t0);
        out
    }

    fn verify_batch(
        &self,
        items: &[(&PublicKey, &[u8], &Signature)],
    ) -> Vec<Result<(), SignatureError>> {
        let t0 = thread_cpu_nanos();
        let out = Ed25519::verify_many(items);
        count_verify_time(t0);
        out
    }

    fn verify_groups(&self, groups: &[&[BatchItem<'_>]]) -> Vec<Vec<Result<(), SignatureError>>> {
        let t0 = thread_cpu_nanos();
        let all: Vec<BatchItem<'_>> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let out = match Ed25519::try_batch(&all) {
            (verdicts, _, true) => {
                let mut rest = verdicts.into_iter();
                groups
                    .iter()
                    .map(|g| rest.by_ref().take(g.len()).collect())
                    .collect()
            }
            // Some item is bad: each group alone, so only the bad one's group goes
            // through the single path.
            (_, _, false) => groups.iter().map(|g| Ed25519::verify_many(g)).collect(),
        };
        count_verify_time(t0);
        out
    }
}

impl Ed25519 {
    fn verify_many(items: &[(&PublicKey, &[u8], &Signature)]) -> Vec<Result<(), SignatureError>> {
        let (mut out, batched, ok) = Ed25519::try_batch(items);
        if !ok {
            // Find the bad items one by one; the single path's verdict is the rule.
            for i in batched {
                let (k, m, s) = items[i];
                out[i] = Ed25519::verify_one(k, m, s);
            }
        }
        out
    }

    /// One verdict per item and `true` when they are final: items refused before the
    /// batch equation are refused alone, with the single path's error, and the rest
    /// passed it. `false` when the equation failed: some item among the ones named
    /// (those that reached it, `Ok` so far) is bad.
    fn try_batch(items: &[BatchItem<'_>]) -> (Vec<Result<(), SignatureError>>, Vec<usize>, bool) {
        let mut out: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
        let mut batch_idx = Vec::with_capacity(items.len());
        let mut batch = ed25519_consensus::batch::Verifier::new();
        for (i, (k, m, s)) in items.iter().enumerate() {
            // Items that fail before the group equation are refused alone, with the
            // single path's error: they cannot poison the batch for the others.
            if let Err(e) = verification_key(k) {
                out.push(Err(e));
                continue;
            }
            if !s_is_canonical(s) {
                out.push(Err(SignatureError::Invalid));
                continue;
            }
            out.push(Ok(()));
            batch_idx.push(i);
            batch.queue((
                VerificationKeyBytes::from(*k.as_bytes()),
                ed25519_consensus::Signature::from(s.0),
                *m,
            ));
        }
        let batch_ok = match batch_idx.len() {
            0 => true,
            // A batch of one is slower than the single path, whose verdict is final.
            1 => {
                let i = batch_idx[0];
                let (k, m, s) = items[i];
                out[i] = Ed25519::verify_one(k, m, s);
                return (out, Vec::new(), true);
            }
            _ => batch.verify(rand::rngs::OsRng).is_ok(),
        };
        debug_assert_eq!(out.len(), items.len());
        (out, batch_idx, batch_ok)
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
    pub fn sign(value: T, chain: &ChainBinding, signer: &dyn Signer) -> Signed<T> {
        let signature = signer.sign_raw(&signing_message(chain, T::DOMAIN, &value.signing_bytes()));
        Signed { value, signature }
    }

    /// The bytes the signature covers.
    pub fn message(&self, chain: &ChainBinding) -> Vec<u8> {
        signing_message(chain, T::DOMAIN, &self.value.signing_bytes())
    }

    /// Checks the signature against `key`; the only way to a [`Verified`].
    pub fn verify(
        self,
        chain: &ChainBinding,
        key: &PublicKey,
        scheme: &dyn Scheme,
    ) -> Result<Verified<T>, SignatureError> {
        scheme.verify(key, &self.message(chain), &self.signature)?;
        Ok(Verified(self))
    }

    /// Checks many at once, each against its key; the verdicts are those of [`Signed::verify`].
    pub fn verify_batch(
        items: Vec<(Signed<T>, PublicKey)>,
        chain: &ChainBinding,
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

    /// [`Signed::verify_batch`] for each group, through [`Scheme::verify_groups`]: one
    /// batch for all of them when every item is good.
    #[allow(clippy::type_complexity)]
    pub fn verify_groups(
        groups: Vec<Vec<(Signed<T>, PublicKey)>>,
        chain: &ChainBinding,
        scheme: &dyn Scheme,
    ) -> Vec<Vec<Result<Verified<T>, SignatureError>>> {
        let msgs: Vec<Vec<Vec<u8>>> = groups
            .iter()
            .map(|g| g.iter().map(|(s, _)| s.message(chain)).collect())
            .collect();
        let refs: Vec<Vec<BatchItem<'_>>> = groups
            .iter()
            .zip(&msgs)
            .map(|(g, ms)| {
                g.iter()
                    .zip(ms)
                    .map(|((s, k), m)| (k, m.as_slice(), &s.signature))
                    .collect()
            })
            .collect();
        let slices: Vec<&[BatchItem<'_>]> = refs.iter().map(Vec::as_slice).collect();
        let verdicts = scheme.verify_groups(&slices);
        debug_assert_eq!(verdicts.len(), groups.len());
        groups
            .into_iter()
            .zip(verdicts)
            .map(|(g, vs)| {
                debug_assert_eq!(g.len(), vs.len());
                g.into_iter()
                    .zip(vs)
                    .map(|((s, _), v)| v.map(|()| Verified(s)))
                    .collect()
            })
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
