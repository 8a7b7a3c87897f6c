//! The one binary codec: bincode 2 behind this module and nowhere else.
//!
//! Fixed-width little-endian integers, so every value has exactly one encoding and
//! hashes are stable across nodes and releases. Decoding takes an explicit size limit,
//! rejects over-limit input before touching it, rejects trailing bytes, and never
//! allocates ahead of the input: byte strings are borrowed from the input before they
//! are copied, and sequences grow as their elements actually arrive ([`grown_vec`] on
//! every sequence field).

use std::fmt;
use std::marker::PhantomData;

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// No input larger than this is ever decoded, whatever limit a caller asks for.
pub const MAX_DECODE_LEN: usize = 64 << 20;

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_DECODE_LEN>>;

fn config() -> Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DECODE_LEN>()
}

/// Why bytes did not decode. Always bad input, never a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{what}: {len} bytes exceed the limit of {limit}")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("{what}: malformed: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what}: {extra} trailing bytes after a complete value")]
    Trailing { what: &'static str, extra: usize },
}

fn short_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// The canonical encoding of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Every Stele type has a fixed shape (no maps with fallible keys, no unsized
    // sequences), so encoding into memory cannot fail; if it does, our type is wrong.
    bincode::serde::encode_to_vec(value, config()).expect("Stele types always encode")
}

/// Length of the canonical encoding of `value`, counted without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .expect("Stele types always encode");
    size.bytes_written
}

/// `f` of the canonical encoding of `value`, built in a buffer this thread keeps: for
/// bytes needed only for a moment, such as a tx's hash. A fresh `Vec` per tx cost three
/// quarters of `tx_hash` in allocation and regrowth (`benches/benches/codec.rs`).
pub fn with_encoding<T: Serialize + ?Sized, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    // Kept between calls only up to this size: one huge value must not pin its buffer.
    const KEEP: usize = 64 << 10;
    BUF.with(|cell| {
        // `f` may itself encode something: that inner call gets a buffer of its own.
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return f(&encode(value));
        };
        buf.clear();
        bincode::serde::encode_into_std_write(value, &mut *buf, config())
            .expect("Stele types always encode");
        let out = f(&buf);
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        out
    })
}

/// Decodes exactly one `T` from `bytes`, which must not be longer than `limit`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    let what = short_name::<T>();
    let limit = limit.min(MAX_DECODE_LEN);
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            what,
            len: bytes.len(),
            limit,
        });
    }
    let (value, used) =
        bincode::serde::borrow_decode_from_slice::<T, _>(bytes, config()).map_err(|e| {
            CodecError::Malformed {
                what,
                reason: e.to_string(),
            }
        })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            what,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Deserialises a `Vec` that grows as its elements arrive: put
/// `#[serde(deserialize_with = "crate::codec::grown_vec")]` on every sequence field that
/// a peer or a client can send. serde's own `Vec` reserves room for the length the input
/// announces, up to 1 MiB, before reading one element: 1 MiB per nested sequence from
/// a frame of a few bytes.
pub fn grown_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Grown<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Grown<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Grown(PhantomData))
}

/// The element count a sequence's encoding announces in its first bytes, if there are
/// enough of them: lets a caller refuse an oversized batch before decoding any element.
pub fn announced_len(bytes: &[u8]) -> Option<u64> {
    bincode::serde::borrow_decode_from_slice::<u64, _>(bytes, config())
        .ok()
        .map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_have_fixed_width() {
        assert_eq!(encode(&1u64).len(), 8);
        assert_eq!(encode(&u64::MAX).len(), 8);
    }

    #[test]
    fn the_reused_buffer_and_the_length_count_agree_with_encode() {
        let values: Vec<Vec<u64>> = vec![vec![], vec![7], (0..20_000).collect(), vec![1, 2]];
        for v in &values {
            assert_eq!(encoded_len(v), encode(v).len());
            assert_eq!(with_encoding(v, <[u8]>::to_vec), encode(v));
            // An encoding inside another's callback uses its own buffer.
            let nested = with_encoding(v, |outer| {
                (outer.to_vec(), with_encoding(&values[1], <[u8]>::to_vec))
            });
            assert_eq!(nested, (encode(v), encode(&values[1])));
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = encode(&5u64);
        b.push(0);
        assert!(matches!(
            decode::<u64>(&b, 100),
            Err(CodecError::Trailing { extra: 1, .. })
        ));
    }

    #[test]
    fn over_limit_input_is_rejected_before_decoding() {
        let b = encode(&5u64);
        assert!(matches!(
            decode::<u64>(&b, 7),
            Err(CodecError::TooLarge {
                len: 8,
                limit: 7,
                ..
            })
        ));
    }

    #[test]
    fn huge_sequence_claims_fail_without_allocating() {
        // A length prefix claiming 2^40 elements followed by nothing: if the decoder
        // allocated ahead of the input, this would abort the test process.
        let mut b = (1u64 << 40).to_le_bytes().to_vec();
        b.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode::<Vec<u64>>(&b, 1 << 20),
            Err(CodecError::Malformed { .. })
        ));
        assert!(matches!(
            decode::<crate::BoundedBytes<64>>(&b, 1 << 20),
            Err(CodecError::Malformed { .. })
        ));
        assert!(decode::<stele_crypto::ChainId>(&b, 1 << 20).is_err());
    }
}
