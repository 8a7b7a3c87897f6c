//! SHA-256 digests: block, transaction and state hashes all share this one type.
//!
//! Hex in text (`Display`/`FromStr`, JSON) and raw bytes in the binary codec, so a
//! digest looks the same in logs, the HTTP API and the genesis file.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Length in bytes of a [`Digest`].
pub const DIGEST_LEN: usize = 32;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; DIGEST_LEN]);

impl Digest {
    /// The all-zero digest; used only as "no previous state" at genesis.
    pub const ZERO: Digest = Digest([0; DIGEST_LEN]);

    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// SHA-256 over a domain tag and the given parts, each length-prefixed so that
    /// no two different part lists hash alike.
    pub fn of_parts(domain: &str, parts: &[&[u8]]) -> Digest {
        let mut h = Hasher::new(domain);
        for p in parts {
            h.update_prefixed(p);
        }
        h.finish()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Incremental SHA-256 that starts with a domain tag.
#[derive(Clone, Debug)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A hasher whose output can never collide with another domain's.
    pub fn new(domain: &str) -> Hasher {
        let mut h = Hasher(Sha256::new());
        h.update_prefixed(domain.as_bytes());
        h
    }

    /// Feeds raw bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// Feeds a length (u64 little-endian) and then the bytes.
    pub fn update_prefixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are plenty to tell digests apart in logs and test output.
        write!(f, "Digest({})", &self.to_hex()[..8])
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a digest as 64 hex digits, found {found:?}")]
pub struct DigestParseError {
    found: String,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; DIGEST_LEN];
        hex::decode_to_slice(s, &mut out).map_err(|_| DigestParseError {
            found: s.chars().take(80).collect(),
        })?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            crate::fixed_bytes::serialize(&self.0, s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            crate::fixed_bytes::deserialize(d, "a digest").map(Digest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let d = Digest::of(b"stele");
        let s = d.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<Digest>(), Ok(d));
        assert!("zz".parse::<Digest>().is_err());
        assert!(s[..62].parse::<Digest>().is_err());
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(
            Digest::of_parts("t", &[b"ab", b"c"]),
            Digest::of_parts("t", &[b"a", b"bc"])
        );
        assert_ne!(
            Digest::of_parts("t", &[b"a"]),
            Digest::of_parts("u", &[b"a"])
        );
    }

    #[test]
    fn json_uses_hex() {
        let d = Digest::of(b"x");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
    }
}
