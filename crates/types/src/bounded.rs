//! Byte strings with a hard maximum length in their type.
//!
//! Decoding borrows the bytes from the input and checks the bound before copying, so a
//! hostile length prefix costs nothing. Hex in JSON.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most `N` bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedBytes<const N: usize>(Vec<u8>);

/// More bytes than the bound allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes exceed the maximum of {max}")]
pub struct TooLong {
    pub len: usize,
    pub max: usize,
}

impl<const N: usize> BoundedBytes<N> {
    /// The largest length allowed.
    pub const MAX: usize = N;

    /// Wraps `bytes` if they fit.
    pub fn new(bytes: Vec<u8>) -> Result<Self, TooLong> {
        if bytes.len() > N {
            return Err(TooLong {
                len: bytes.len(),
                max: N,
            });
        }
        Ok(BoundedBytes(bytes))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> TryFrom<&[u8]> for BoundedBytes<N> {
    type Error = TooLong;
    fn try_from(b: &[u8]) -> Result<Self, TooLong> {
        BoundedBytes::new(b.to_vec())
    }
}

impl<const N: usize> fmt::Debug for BoundedBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.len() <= 40 => write!(f, "{s:?}"),
            _ => write!(
                f,
                "0x{}…({} bytes)",
                hex::encode(&self.0[..self.0.len().min(8)]),
                self.0.len()
            ),
        }
    }
}

impl<const N: usize> Serialize for BoundedBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de, const N: usize> Deserialize<'de> for BoundedBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <Cow<'de, str>>::deserialize(d)?;
            if s.len() > 2 * N {
                return Err(de::Error::custom(TooLong {
                    len: s.len() / 2,
                    max: N,
                }));
            }
            let b = hex::decode(s.as_ref()).map_err(|_| de::Error::custom("expected hex bytes"))?;
            return BoundedBytes::new(b).map_err(de::Error::custom);
        }
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = BoundedBytes<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {N} bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                BoundedBytes::try_from(v).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() == N {
                        return Err(de::Error::custom(TooLong { len: N + 1, max: N }));
                    }
                    out.push(b);
                }
                Ok(BoundedBytes(out))
            }
        }
        d.deserialize_bytes(V::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn bound_is_enforced_on_construction_and_decoding() {
        assert!(BoundedBytes::<3>::new(vec![1, 2, 3]).is_ok());
        assert!(BoundedBytes::<3>::new(vec![1, 2, 3, 4]).is_err());
        let four = encode(&BoundedBytes::<4>::new(vec![1, 2, 3, 4]).unwrap());
        assert!(decode::<BoundedBytes<3>>(&four, 100).is_err());
        assert_eq!(
            decode::<BoundedBytes<4>>(&four, 100).unwrap().as_slice(),
            &[1, 2, 3, 4]
        );
    }

    #[test]
    fn json_is_hex() {
        let b = BoundedBytes::<8>::new(b"hi".to_vec()).unwrap();
        let j = serde_json::to_string(&b).unwrap();
        assert_eq!(j, "\"6869\"");
        assert_eq!(serde_json::from_str::<BoundedBytes<8>>(&j).unwrap(), b);
        assert!(serde_json::from_str::<BoundedBytes<1>>(&j).is_err());
    }
}
