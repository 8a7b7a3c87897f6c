//! Ed25519 key pairs, public keys as they appear in genesis and on the wire, and
//! private key files (PKCS#8 PEM).
//!
//! A private key file is written mode 0600 and refused when group- or
//! world-readable: a validator key that leaks lets someone vote in its name.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use pkcs8::der::pem::LineEnding;
use pkcs8::{ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sign::{Signature, Signer};

/// Length in bytes of a [`PublicKey`].
pub const PUBLIC_KEY_LEN: usize = 32;

/// The OID of Ed25519 keys (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// An Ed25519 public key as 32 bytes. It is not checked to be a valid curve point
/// until a signature is verified against it: decoding stays total and cheap, and
/// verification rejects whatever ZIP-215 rejects. Where a key enters the ledger (genesis,
/// a transfer's recipient) [`PublicKey::is_small_order`] keys are refused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Whether the key decodes (as ZIP-215 decodes: y may be ≥ p) to a point of small
    /// order. ZIP-215 accepts a signature with s = 0 and a small-order R under such a key
    /// for every message, so anyone could sign for it: it must never hold funds or vote.
    pub fn is_small_order(&self) -> bool {
        curve25519_dalek::edwards::CompressedEdwardsY(self.0)
            .decompress()
            .is_some_and(|p| p.is_small_order())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..8])
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KeyError::PublicKeyHex {
            found: s.chars().take(80).collect(),
        })?;
        Ok(PublicKey(out))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; PUBLIC_KEY_LEN]>::deserialize(d).map(PublicKey)
        }
    }
}

/// What went wrong with a key or key file; each names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("expected a public key as 64 hex digits, found {found:?}")]
    PublicKeyHex { found: String },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: a private key must not be readable by group or \
         others; run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not a PKCS#8 PEM private key: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("key file {path} holds a key of algorithm {found}, expected Ed25519 ({ED25519_OID})")]
    WrongKeyType { path: PathBuf, found: String },
}

/// An Ed25519 signing key with its public key.
pub struct KeyPair {
    signing: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Clone for KeyPair {
    fn clone(&self) -> Self {
        KeyPair::from_seed(self.signing.to_bytes())
    }
}

impl KeyPair {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> KeyPair {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        KeyPair::from_signing(signing)
    }

    /// The key whose 32-byte secret seed is `seed` (tests and simulations).
    pub fn from_seed(seed: [u8; 32]) -> KeyPair {
        KeyPair::from_signing(SigningKey::from_bytes(&seed))
    }

    fn from_signing(signing: SigningKey) -> KeyPair {
        let public = PublicKey(signing.verifying_key().to_bytes());
        KeyPair { signing, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The key as PKCS#8 PEM text.
    pub fn to_pem(&self) -> zeroize::Zeroizing<String> {
        // Encoding a well-formed 32-byte key cannot fail; a failure here is a bug in
        // the pkcs8 crate, not bad input.
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding of an Ed25519 key")
    }

    /// Parses PKCS#8 PEM text; `path` only names the source in errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<KeyPair, KeyError> {
        let pem_err = |reason: String| KeyError::Pem {
            path: path.to_path_buf(),
            reason,
        };
        let (label, doc) = SecretDocument::from_pem(pem).map_err(|e| pem_err(e.to_string()))?;
        if label != "PRIVATE KEY" {
            return Err(pem_err(format!(
                "PEM label is {label:?}, expected \"PRIVATE KEY\""
            )));
        }
        let info: PrivateKeyInfo<'_> = doc.decode_msg().map_err(|e| pem_err(e.to_string()))?;
        if info.algorithm.oid != ED25519_OID {
            return Err(KeyError::WrongKeyType {
                path: path.to_path_buf(),
                found: info.algorithm.oid.to_string(),
            });
        }
        let signing =
            SigningKey::from_pkcs8_der(doc.as_bytes()).map_err(|e| pem_err(e.to_string()))?;
        Ok(KeyPair::from_signing(signing))
    }

    /// Writes the key to a new file with mode 0600; refuses to overwrite one.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        file.write_all(self.to_pem().as_bytes())
            .map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        Ok(())
    }

    /// Reads a key file written by [`KeyPair::save`] (or `openssl genpkey -algorithm ed25519`).
    pub fn load(path: &Path) -> Result<KeyPair, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = fs::metadata(path).map_err(read_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(read_err)?);
        KeyPair::from_pem(&text, path)
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl Signer for KeyPair {
    fn public_key(&self) -> PublicKey {
        self.public
    }

    fn sign_raw(&self, message: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature(self.signing_key().sign(message).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`: a valid PKCS#8
    // key of the wrong type.
    const P256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLayq0VUPx6zaON/r
qT5NWGSHRsDxIHV4DccJShTYS7ahRANCAARd5G8rR780GF7J1YIwp6iEIe98dZMc
THY6CyKHkd7HpgujNJ7YQDKyw6bUIOCwxPLk7Fbsg3SJYe3iSFaq3iI2
-----END PRIVATE KEY-----
";

    fn write_mode(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn saved_key_loads_back_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let k = KeyPair::generate();
        k.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(KeyPair::load(&path).unwrap().public(), k.public());
        // never overwritten
        assert!(matches!(
            KeyPair::generate().save(&path),
            Err(KeyError::Write { .. })
        ));
    }

    #[test]
    fn group_or_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_mode(&path, &KeyPair::generate().to_pem(), 0o644);
        let err = KeyPair::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            KeyPair::load(&path),
            Err(KeyError::Permissions { .. })
        ));
    }

    #[test]
    fn corrupt_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let good = KeyPair::generate().to_pem().to_string();
        // Four base64 characters fewer: still base64, but the DER inside is cut short.
        let body_start = good.find('\n').unwrap() + 1;
        let corrupt = format!("{}{}", &good[..body_start + 8], &good[body_start + 12..]);
        for text in ["not a key", corrupt.as_str(), &good[..good.len() / 2]] {
            fs::remove_file(&path).ok();
            write_mode(&path, text, 0o600);
            let err = KeyPair::load(&path).unwrap_err();
            assert!(matches!(err, KeyError::Pem { .. }), "{err}");
            assert!(err.to_string().contains("k.pem"));
        }
    }

    #[test]
    fn wrong_key_type_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.pem");
        write_mode(&path, P256_PEM, 0o600);
        let err = KeyPair::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err}");
        assert!(err.to_string().contains("1.2.840.10045.2.1"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = KeyPair::load(Path::new("/nonexistent/key.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/key.pem"));
    }

    #[test]
    fn public_key_hex_round_trips() {
        let k = KeyPair::from_seed([7; 32]).public();
        assert_eq!(k.to_string().parse::<PublicKey>().unwrap(), k);
        assert!("abc".parse::<PublicKey>().is_err());
        let j = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&j).unwrap(), k);
    }
}
