//! Ed25519 key pairs, public keys as they appear in genesis and on the wire, and
//! private key files (PKCS#8 PEM, written as OpenSSL writes them).
//!
//! A private key file is written mode 0600 and refused when group- or
//! world-readable, owned by another user, a symlink or not a regular file: a validator
//! key that leaks, or is swapped, lets someone vote in its name. Every buffer that holds
//! secret bytes on the way in or out is wiped when dropped.

use std::fmt;
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use pkcs8::der::pem::{self, LineEnding};
use pkcs8::der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::sign::{Signature, Signer};

/// Length in bytes of a [`PublicKey`].
pub const PUBLIC_KEY_LEN: usize = 32;

/// The OID of Ed25519 keys (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// The PEM label of an unencrypted PKCS#8 key (RFC 7468).
const PEM_LABEL: &str = "PRIVATE KEY";

/// The length of an Ed25519 PKCS#8 v1 key in DER: version, algorithm and the seed.
const V1_DER_LEN: usize = 48;

/// The largest key file read. An Ed25519 key's PEM is about 120 bytes; a larger file is
/// not a key, and is refused before it is read.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

// The secret inside a SigningKey is wiped on drop only with ed25519-dalek's "zeroize"
// feature; this stops compiling if the feature is ever dropped from the workspace.
const _: fn() = || {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<SigningKey>();
};

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
    ///
    /// Every transfer's recipient is checked, so this compares against the few encodings
    /// of small-order points (at most 32) instead of decompressing the key: the
    /// decompression and cofactor multiplication were a tenth of a validator's CPU.
    pub fn is_small_order(&self) -> bool {
        small_order_encodings().contains(&self.0)
    }

    /// The definition [`PublicKey::is_small_order`] is built from and tested against.
    fn decodes_to_small_order(bytes: &[u8; PUBLIC_KEY_LEN]) -> bool {
        curve25519_dalek::edwards::CompressedEdwardsY(*bytes)
            .decompress()
            .is_some_and(|p| p.is_small_order())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Every 32-byte string that decodes, as ZIP-215 decodes, to a point of small order.
///
/// Decoding takes the low 255 bits as y (reduced mod p, so y and y + p name one point)
/// and the top bit as the sign of x. An encoding of a small-order point P therefore has
/// y ∈ {y_P, y_P + p} (y_P + 2p does not fit in 255 bits) and either sign bit: four
/// candidates for each of the eight points. The candidates that really decode to a
/// small-order point are kept, so the list is exact, not an approximation.
fn small_order_encodings() -> &'static [[u8; PUBLIC_KEY_LEN]] {
    static LIST: std::sync::OnceLock<Vec<[u8; PUBLIC_KEY_LEN]>> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        // p = 2^255 − 19, little-endian.
        let mut p = [0xffu8; PUBLIC_KEY_LEN];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut out = Vec::new();
        for point in curve25519_dalek::constants::EIGHT_TORSION {
            let canonical = point.compress().0;
            let mut y = canonical;
            y[31] &= 0x7f;
            let mut ys = vec![y];
            // y + p, when it stays below 2^255.
            let mut sum = [0u8; PUBLIC_KEY_LEN];
            let mut carry = 0u16;
            for i in 0..PUBLIC_KEY_LEN {
                let s = u16::from(y[i]) + u16::from(p[i]) + carry;
                sum[i] = s as u8;
                carry = s >> 8;
            }
            if carry == 0 && sum[31] & 0x80 == 0 {
                ys.push(sum);
            }
            for y in ys {
                for sign in [0u8, 0x80] {
                    let mut e = y;
                    e[31] |= sign;
                    if PublicKey::decodes_to_small_order(&e) && !out.contains(&e) {
                        out.push(e);
                    }
                }
            }
        }
        out
    })
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
            crate::fixed_bytes::serialize(&self.0, s)
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            crate::fixed_bytes::deserialize(d, "a public key").map(PublicKey)
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
    #[error(
        "key file {path} is a symbolic link: give the path of the key file itself, so that \
         whoever can change the link cannot choose the key"
    )]
    Symlink { path: PathBuf },
    #[error("key file {path} is a {kind}, not a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error(
        "key file {path} is owned by uid {owner}, but this process runs as uid {euid}: a \
         private key must belong to the user who uses it"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("key file {path} is {len} bytes, more than any key file ({MAX_KEY_FILE_LEN} bytes)")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("key file {path} is not a PKCS#8 PEM private key: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("key file {path} holds a key of algorithm {found}, expected Ed25519 ({ED25519_OID})")]
    WrongKeyType { path: PathBuf, found: String },
    #[error(
        "key file {path} embeds public key {claimed}, which does not match its private key \
         (whose public key is {derived}): the file is damaged or was put together by hand"
    )]
    PublicKeyMismatch {
        path: PathBuf,
        claimed: String,
        derived: PublicKey,
    },
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
        // Not through `to_bytes`: that would leave an unwiped copy of the seed.
        KeyPair {
            signing: self.signing.clone(),
            public: self.public,
        }
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
        let seed = Zeroizing::new(seed);
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

    /// The key as PKCS#8 v1 PEM (RFC 8410: version 0, no embedded public key), byte
    /// for byte what `openssl genpkey -algorithm ed25519` writes. OpenSSL 3.0 and
    /// Python's `cryptography` refuse an Ed25519 key in v2 form, with the public key.
    pub fn to_pem(&self) -> Zeroizing<String> {
        // CurvePrivateKey ::= OCTET STRING (the seed), itself inside privateKey.
        let mut curve_key = Zeroizing::new([0u8; 2 + 32]);
        curve_key[..2].copy_from_slice(&[0x04, 0x20]);
        curve_key[2..].copy_from_slice(self.signing.as_bytes());
        // No public key: PrivateKeyInfo then encodes version 0 (v1).
        let info = PrivateKeyInfo::new(
            AlgorithmIdentifierRef {
                oid: ED25519_OID,
                parameters: None,
            },
            &curve_key[..],
        );
        let mut der_buf = Zeroizing::new([0u8; V1_DER_LEN]);
        // Encoding fixed-size fields into a buffer of their exact length cannot fail; a
        // failure here is a bug in this function or in der, not bad input.
        let der = info
            .encode_to_slice(&mut der_buf[..])
            .expect("PKCS#8 v1 encoding of an Ed25519 key");
        assert_eq!(der.len(), V1_DER_LEN, "Ed25519 PKCS#8 v1 DER length");
        let pem = pem::encode_string(PEM_LABEL, LineEnding::LF, der)
            .expect("PEM encoding of 48 bytes of DER");
        let pem = Zeroizing::new(pem);
        debug_assert!(
            KeyPair::from_pem(&pem, Path::new("to_pem")).is_ok_and(|k| k.public == self.public)
        );
        pem
    }

    /// Parses PKCS#8 PEM text, v1 (what OpenSSL and [`KeyPair::to_pem`] write) or v2
    /// (with the public key, RFC 5958; what Stele wrote before issue 22). A v2 key's
    /// embedded public key must match its private key. `path` only names the source in
    /// errors.
    pub fn from_pem(pem: &str, path: &Path) -> Result<KeyPair, KeyError> {
        let pem_err = |reason: String| KeyError::Pem {
            path: path.to_path_buf(),
            reason,
        };
        // The DER is decoded into one buffer of ours, wiped on drop whichever way this
        // returns (der's own `from_pem` drops unwiped copies on its error paths). The
        // decoded DER is always shorter than its PEM text.
        let mut der_buf = Zeroizing::new(vec![0u8; pem.len()]);
        let (label, der) =
            pem::decode(pem.as_bytes(), &mut der_buf).map_err(|e| pem_err(e.to_string()))?;
        if label != PEM_LABEL {
            return Err(pem_err(format!(
                "PEM label is {label:?}, expected {PEM_LABEL:?}"
            )));
        }
        // PrivateKeyInfo checks the version against the presence of a public key.
        let info = PrivateKeyInfo::from_der(der).map_err(|e| pem_err(e.to_string()))?;
        if info.algorithm.oid != ED25519_OID {
            return Err(KeyError::WrongKeyType {
                path: path.to_path_buf(),
                found: info.algorithm.oid.to_string(),
            });
        }
        if info.algorithm.parameters.is_some() {
            return Err(pem_err(
                "Ed25519 keys have no algorithm parameters (RFC 8410), found some".into(),
            ));
        }
        let seed: &[u8; 32] = info
            .private_key
            .strip_prefix(&[0x04, 0x20])
            .and_then(|seed| seed.try_into().ok())
            .ok_or_else(|| {
                pem_err(format!(
                    "expected the private key as a 32-byte OCTET STRING (34 bytes), found {} \
                     bytes",
                    info.private_key.len()
                ))
            })?;
        let signing = SigningKey::from_bytes(seed);
        if let Some(claimed) = info.public_key {
            let derived = signing.verifying_key().to_bytes();
            if claimed != derived {
                return Err(KeyError::PublicKeyMismatch {
                    path: path.to_path_buf(),
                    claimed: hex::encode(&claimed[..claimed.len().min(64)]),
                    derived: PublicKey(derived),
                });
            }
        }
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

    /// Reads a key file written by [`KeyPair::save`] or `openssl genpkey -algorithm
    /// ed25519` (PKCS#8 v1), or an older Stele key file (v2); see [`KeyPair::from_pem`].
    ///
    /// The path is opened once and every check is made on the open file, so what is
    /// checked is what is read: no window in which the path can be swapped.
    pub fn load(path: &Path) -> Result<KeyPair, KeyError> {
        let file = open_key_file(path)?;
        let text = read_key_file(file, path)?;
        let text = std::str::from_utf8(&text).map_err(|e| KeyError::Pem {
            path: path.to_path_buf(),
            reason: format!("not UTF-8 text ({e})"),
        })?;
        KeyPair::from_pem(text, path)
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

/// Opens `path` for reading without following a symlink or waiting on a FIFO, and checks
/// the open file: a regular file, ours, not readable by group or others, small.
fn open_key_file(path: &Path) -> Result<File, KeyError> {
    // O_NOFOLLOW: a symlink as the last component fails with ELOOP instead of being
    // followed. O_NONBLOCK: opening a FIFO returns at once (to be refused by its type)
    // instead of waiting for a writer; reads of a regular file ignore it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => KeyError::Symlink {
                path: path.to_path_buf(),
            },
            _ => KeyError::Read {
                path: path.to_path_buf(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_key_file(&meta, rustix::process::geteuid().as_raw(), path)?;
    Ok(file)
}

/// What a key file must be, judged from the open file's metadata.
fn check_key_file(meta: &Metadata, euid: u32, path: &Path) -> Result<(), KeyError> {
    let file_type = meta.file_type();
    if !file_type.is_file() {
        return Err(KeyError::NotRegularFile {
            path: path.to_path_buf(),
            kind: file_kind(file_type),
        });
    }
    // Root reads any file whatever its mode, so the owner is checked, not only the mode.
    if meta.uid() != euid {
        return Err(KeyError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    Ok(())
}

fn file_kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Reads the whole (checked) file into one buffer that is wiped on drop.
fn read_key_file(file: File, path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    // Room for one byte past the bound, allocated once: the buffer never grows, so no
    // reallocation leaves an unwiped copy of the secret behind, and a file that grew
    // since its metadata was read is caught by its length.
    let cap = MAX_KEY_FILE_LEN + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(cap as usize));
    let allocated = buf.capacity();
    file.take(cap)
        .read_to_end(&mut buf)
        .map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
            len: buf.len() as u64,
        });
    }
    debug_assert_eq!(buf.capacity(), allocated, "the key buffer was reallocated");
    Ok(buf)
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_small_order_list_agrees_with_decompression() {
        let list = small_order_encodings();
        // 8 canonical points; y = 0 and y = 1 also have a y + p encoding; and each
        // with either sign bit (x = 0 decodes with both).
        assert!(
            list.len() >= 8 && list.len() <= 32,
            "{} encodings",
            list.len()
        );
        for e in list {
            assert!(PublicKey::decodes_to_small_order(e));
            assert!(PublicKey(*e).is_small_order());
        }
        // Every neighbour of a listed encoding (one bit flipped), and random keys, get
        // the verdict decompression gives.
        let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(215);
        let mut probes: Vec<[u8; PUBLIC_KEY_LEN]> = Vec::new();
        for e in list {
            for bit in 0..256 {
                let mut x = *e;
                x[bit / 8] ^= 1 << (bit % 8);
                probes.push(x);
            }
        }
        for _ in 0..20_000 {
            let mut x = [0u8; PUBLIC_KEY_LEN];
            rand::RngCore::fill_bytes(&mut rng, &mut x);
            probes.push(x);
        }
        for x in probes {
            assert_eq!(
                PublicKey(x).is_small_order(),
                PublicKey::decodes_to_small_order(&x),
                "{}",
                hex::encode(x)
            );
        }
        // A real key is not small-order.
        let k = KeyPair::generate();
        assert!(!k.public().is_small_order());
    }

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
    fn key_file_is_checked_against_the_effective_uid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        KeyPair::generate().save(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert!(check_key_file(&meta, meta.uid(), &path).is_ok());
        let other = meta.uid().wrapping_add(1);
        let err = check_key_file(&meta, other, &path).unwrap_err();
        assert!(
            matches!(err, KeyError::Owner { owner, euid, .. } if owner == meta.uid() && euid == other),
            "{err}"
        );
    }

    #[test]
    fn oversized_key_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let mut text = KeyPair::generate().to_pem().to_string();
        text.push_str(&"\n".repeat(MAX_KEY_FILE_LEN as usize));
        write_mode(&path, &text, 0o600);
        let err = KeyPair::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::TooLarge { len, .. } if len == text.len() as u64),
            "{err}"
        );
        // A file of exactly the bound is read: whatever the PEM parser makes of it, it is
        // not refused for its size.
        let at_bound = &text[..MAX_KEY_FILE_LEN as usize];
        fs::remove_file(&path).unwrap();
        write_mode(&path, at_bound, 0o600);
        assert!(!matches!(
            KeyPair::load(&path),
            Err(KeyError::TooLarge { .. })
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
