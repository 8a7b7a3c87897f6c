//! Fixed-size byte arrays (keys, signatures, digests) in binary formats.
//!
//! Serde has no fixed-size byte string: an array is a tuple of its elements, so each
//! byte of a key went through the format one call at a time. Every tx carries a key and
//! a signature and is encoded for its hash, its size, the wire and the disk, and those
//! per-byte calls were about 6 % of a validator's CPU in the closed-loop profile
//! (`bincode ... Encode for u8` and `SerializeTuple::serialize_element`).
//!
//! Here the array is a tuple of little-endian `u64` words instead. In Stele's codec
//! (bincode with fixed-width little-endian integers, `stele_types::codec`) a word is its
//! eight bytes in order, so the encoding is exactly the array's bytes, as before: no
//! hash, signature or stored value changes (`codec` tests pin this), only the number of
//! calls, by eight.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

const WORD: usize = 8;

/// `bytes` as `N / 8` little-endian `u64` words.
pub(crate) fn serialize<S: Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    const { assert!(N % WORD == 0) };
    let mut t = s.serialize_tuple(N / WORD)?;
    for w in bytes.chunks_exact(WORD) {
        let mut word = [0u8; WORD];
        word.copy_from_slice(w);
        t.serialize_element(&u64::from_le_bytes(word))?;
    }
    t.end()
}

/// The inverse of [`serialize`]; `what` names the value in errors.
pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
    what: &'static str,
) -> Result<[u8; N], D::Error> {
    const { assert!(N % WORD == 0) };
    struct V<const N: usize>(&'static str);
    impl<'de, const N: usize> Visitor<'de> for V<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} of {N} bytes", self.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, w) in out.chunks_exact_mut(WORD).enumerate() {
                let word: u64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i * WORD, &self))?;
                w.copy_from_slice(&word.to_le_bytes());
            }
            Ok(out)
        }
    }
    d.deserialize_tuple(N / WORD, V::<N>(what))
}
