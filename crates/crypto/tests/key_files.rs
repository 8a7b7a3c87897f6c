//! Private key files as an operator meets them: what `load` refuses (links, FIFOs,
//! directories, another user's file) and the PKCS#8 form other tools read and write.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use stele_crypto::KeyPair;

fn write_key(path: &Path) -> KeyPair {
    let k = KeyPair::generate();
    k.save(path).unwrap();
    k
}

#[test]
fn symlink_to_a_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.pem");
    write_key(&target);
    let link = dir.path().join("link.pem");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // Whoever can replace a link in the key's directory chooses which key signs.
    match KeyPair::load(&link) {
        Ok(k) => panic!(
            "loaded key {} through symlink {}",
            k.public(),
            link.display()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("symbolic link"), "{msg}");
            assert!(msg.contains("link.pem"), "{msg}");
        }
    }
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("k.pem");
    let made = Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    let (tx, rx) = mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let outcome = KeyPair::load(&path)
            .map(|k| k.public())
            .map_err(|e| e.to_string());
        let _ = tx.send(outcome);
    });
    // A generous deadline: refusing a FIFO takes one open and one fstat.
    let result = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r,
        Err(_) => {
            // Unblock the reader (a writer that closes at once gives it EOF), then fail.
            let _ = fs::OpenOptions::new().write(true).open(&fifo);
            panic!(
                "KeyPair::load blocked for 10 s on the FIFO {}",
                fifo.display()
            );
        }
    };
    let msg = result.unwrap_err();
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(msg.contains("FIFO"), "{msg}");
}

#[test]
fn directory_is_refused_as_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("k.pem");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    let msg = KeyPair::load(&sub).unwrap_err().to_string();
    assert!(msg.contains("not a regular file"), "{msg}");
    assert!(msg.contains("directory"), "{msg}");
    assert!(msg.contains("k.pem"), "{msg}");
}

#[test]
fn key_file_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    write_key(&path);
    let me = fs::metadata(&path).unwrap().uid();
    let foreign = if me == 0 {
        // Root can give the file away (and could read it regardless of its mode).
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        path.clone()
    } else {
        // Anyone else cannot: use a file root owns, which the owner check meets first.
        Path::new("/etc/passwd").to_path_buf()
    };
    assert_ne!(fs::metadata(&foreign).unwrap().uid(), me);
    let msg = KeyPair::load(&foreign).unwrap_err().to_string();
    assert!(msg.contains("owned by uid"), "{msg}");
    assert!(msg.contains(&format!("uid {me}")), "{msg}");
}

// `openssl genpkey -algorithm ed25519`: PKCS#8 v1 (version 0, no public key), and the
// public key `openssl pkey -pubout` derives from it.
const OPENSSL_V1_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEII55lF74ZCnqRRwACeQp/+Wy38cOzGt7fkGX9Izh3eNu
-----END PRIVATE KEY-----
";
const OPENSSL_V1_PUBLIC: &str = "58ef9dff707de41d7764f9207f81940bf4a25c433b8d871b8e8ad71d5d7b9363";

// The seed [42; 32] as OpenSSL and Python's `cryptography` write it (v1)...
const SEED42_V1_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEICoqKioqKioqKioqKioqKioqKioqKioqKioqKioqKioq
-----END PRIVATE KEY-----
";
// ...and as Stele wrote it before issue 22 (v2, RFC 5958: version 1 and the public key
// as [1] IMPLICIT BIT STRING). Files like this exist and must keep loading.
const SEED42_V2_PEM: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEICoqKioqKioqKioqKioqKioqKioqKioqKioqKioqKioq
gSEAGX9rI+FshTLGq8g4+s1ep4m+DHaykgM0A5v6iz02jWE=
-----END PRIVATE KEY-----
";
// The same v2 file with the public key of seed [43; 32] in place of its own.
const SEED42_V2_WRONG_PUBLIC_PEM: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEICoqKioqKioqKioqKioqKioqKioqKioqKioqKioqKioq
gSEARQigeqlBcH8+stuUyIl6gLLBGXR2tt4hOsJz332GxP8=
-----END PRIVATE KEY-----
";

/// The DER inside a PEM key, with its version and whether it embeds a public key.
fn pkcs8_shape(pem: &str) -> (u8, bool) {
    let (label, doc) = pkcs8::SecretDocument::from_pem(pem).unwrap();
    assert_eq!(label, "PRIVATE KEY");
    let der = doc.as_bytes();
    // SEQUENCE { INTEGER version, ... }: the version is the INTEGER's one content byte.
    assert_eq!(der[0], 0x30, "not a SEQUENCE: {der:02x?}");
    assert_eq!(
        &der[2..4],
        &[0x02, 0x01],
        "version is not a one-byte INTEGER"
    );
    let info: pkcs8::PrivateKeyInfo<'_> = doc.decode_msg().unwrap();
    (der[4], info.public_key.is_some())
}

/// `openssl` if it runs here; tests that use it say loudly when it does not.
fn openssl() -> Option<Command> {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("!!! openssl not found: the OpenSSL half of this test was SKIPPED !!!");
    }
    ok.then(|| Command::new("openssl"))
}

#[test]
fn written_keys_are_pkcs8_v1_as_openssl_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    write_key(&path);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(pkcs8_shape(&text), (0, false), "version, has public key");
    // Byte for byte what OpenSSL and Python's `cryptography` write for the same seed.
    let pem = KeyPair::from_seed([42; 32]).to_pem();
    assert_eq!(pem.as_str(), SEED42_V1_PEM);
}

#[test]
fn openssl_reads_a_saved_key_and_derives_its_public_key() {
    let Some(_) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let k = write_key(&path);
    let out = openssl()
        .unwrap()
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl pkey -in {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // SubjectPublicKeyInfo DER: the raw key is its last 32 bytes.
    let spki = out.stdout;
    assert_eq!(spki.len(), 44, "{spki:02x?}");
    assert_eq!(&spki[12..], k.public().as_bytes());
}

#[test]
fn openssl_genpkey_key_loads() {
    let k = KeyPair::from_pem(OPENSSL_V1_PEM, Path::new("fixture.pem")).unwrap();
    assert_eq!(k.public().to_string(), OPENSSL_V1_PUBLIC);
    assert_eq!(
        KeyPair::from_pem(SEED42_V1_PEM, Path::new("fixture.pem"))
            .unwrap()
            .public(),
        KeyPair::from_seed([42; 32]).public()
    );
    // And a fresh one from the openssl here, through a file as an operator would.
    let Some(mut cmd) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.pem");
    let status = cmd
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let spki = openssl()
        .unwrap()
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(spki.len(), 44, "{spki:02x?}");
    assert_eq!(
        KeyPair::load(&path).unwrap().public().as_bytes(),
        &spki[12..]
    );
}

#[test]
fn v2_key_with_its_public_key_loads() {
    assert_eq!(pkcs8_shape(SEED42_V2_PEM), (1, true));
    let k = KeyPair::from_pem(SEED42_V2_PEM, Path::new("v2.pem")).unwrap();
    assert_eq!(k.public(), KeyPair::from_seed([42; 32]).public());
}

#[test]
fn v2_key_whose_public_key_does_not_match_is_refused() {
    assert_eq!(pkcs8_shape(SEED42_V2_WRONG_PUBLIC_PEM), (1, true));
    let err = KeyPair::from_pem(SEED42_V2_WRONG_PUBLIC_PEM, Path::new("v2.pem")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("v2.pem"), "{msg}");
    assert!(
        msg.contains("public key") && msg.contains("does not match"),
        "{msg}"
    );
    // It names the key the file claims, so an operator can see which one it is.
    let claimed = "4508a07aa941707f3eb2db94c8897a80b2c1197476b6de213ac273df7d86c4ff";
    assert!(msg.contains(claimed), "{msg}");
}

proptest::proptest! {
    // A key file is input: whatever DER sits inside the PEM armour, parsing returns an
    // error or a key, never panics; and a key that parses writes back as v1.
    #[test]
    fn any_der_in_a_pem_never_panics(der in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
        let pem = pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::der::pem::LineEnding::LF, &der).unwrap();
        if let Ok(k) = KeyPair::from_pem(&pem, Path::new("p.pem")) {
            proptest::prop_assert_eq!(pkcs8_shape(&k.to_pem()), (0, false));
        }
    }

    // Mutations of a valid v2 file: one byte changed anywhere in its DER.
    #[test]
    fn mutated_v2_key_never_panics(at in 0usize..83, byte in proptest::num::u8::ANY) {
        let (_, doc) = pkcs8::SecretDocument::from_pem(SEED42_V2_PEM).unwrap();
        let mut der = doc.as_bytes().to_vec();
        let at = at % der.len();
        der[at] = byte;
        let pem = pkcs8::der::pem::encode_string("PRIVATE KEY", pkcs8::der::pem::LineEnding::LF, &der).unwrap();
        let _ = KeyPair::from_pem(&pem, Path::new("p.pem"));
    }
}
