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
