//! Corruption test: flip bytes in the database's files (WAL and SST) and reopen.
//!
//! A pristine database is built once: blocks 1..=20 flushed into SST files, blocks
//! 21..=30 only in the WAL, every one acknowledged (its synced commit returned). Each
//! trial copies it, flips one byte at a random offset of one file, and opens the copy.
//! `open` must either refuse with an error (never a panic), or recover a consistent
//! prefix; after every successful open the test reads back every acknowledged height and
//! checks block, certificate and state digest against what was committed.
//!
//! What a flip inside the very last WAL record guarantees: a flip there can look exactly
//! like a torn write (a crash in the middle of the final append, e.g. a length field
//! now running past the end of the file), which `TolerateCorruptedTailRecords` drops by
//! design. From the disk alone no store can tell the two apart, so then the guarantee
//! is a consistent prefix holding every acknowledged height except possibly the last
//! one, never a half-applied block; the validator fetches that block back from its peers
//! by state transfer (DESIGN.md, "Store"). A flip anywhere before the last record is
//! refused, and a flip in an SST is found by the checksums of the full read at open.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_crypto::Digest;
use stele_store::Store;
use stele_types::{Block, Height};

const FLUSHED: u64 = 20;
const ACKED: u64 = 30;
const TRIALS_PER_KIND: usize = 60;

struct Pristine {
    dir: tempfile::TempDir,
    blocks: Vec<(Block, Digest)>,
    /// The WAL file and the byte range of its last record (the commit of `ACKED`).
    wal: PathBuf,
    last_record: std::ops::Range<u64>,
}

fn build() -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut blocks = Vec::new();
    let mut commit = |s: &Store, rng: &mut ChaCha8Rng| {
        let txs = random_txs(s, rng, 30);
        let (b, e) = commit_next(s, txs);
        blocks.push((b, e.state_digest));
    };
    for _ in 0..FLUSHED {
        commit(&s, &mut rng);
    }
    s.flush().unwrap();
    for _ in FLUSHED + 1..ACKED {
        commit(&s, &mut rng);
    }
    let wal = files(dir.path(), "log")
        .into_iter()
        .max()
        .expect("a live WAL file");
    let before = std::fs::metadata(&wal).unwrap().len();
    commit(&s, &mut rng);
    let after = std::fs::metadata(&wal).unwrap().len();
    assert!(after > before, "the last commit went to {}", wal.display());
    drop(s);
    Pristine {
        dir,
        blocks,
        wal,
        last_record: before..after,
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

#[derive(Debug, Default)]
struct Tally {
    refused: usize,
    recovered_whole: usize,
    recovered_without_last: usize,
}

/// Flips one byte of `file` (a name inside the pristine directory) at `offset`, opens,
/// and checks the outcome.
fn trial(p: &Pristine, file: &Path, offset: u64, mask: u8, tally: &mut Tally) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(p.dir.path(), copy.path());
    let target = copy.path().join(file.file_name().unwrap());
    flip(&target, offset, mask);
    let in_last_record = file == p.wal && p.last_record.contains(&offset);
    let what = format!("{} at {offset} ^ {mask:#04x}", file.display());

    let store = match open(copy.path()) {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&copy.path().display().to_string()),
                "{what}: the error must name the database: {msg}"
            );
            tally.refused += 1;
            return;
        }
        Ok(s) => s,
    };
    let tip = store.latest_height();
    let must_hold = if in_last_record { ACKED - 1 } else { ACKED };
    assert!(
        tip.0 >= must_hold,
        "{what}: opened a chain ending at {tip}, acknowledged up to {ACKED}"
    );
    for (block, state_digest) in p.blocks.iter().take(tip.0 as usize) {
        let h = block.height();
        assert_eq!(
            store.block(h).unwrap().as_ref(),
            Some(block),
            "{what}: height {h}"
        );
        assert_eq!(
            store.certificate(h).unwrap().unwrap(),
            cert(block),
            "{what}: {h}"
        );
        assert_eq!(
            store.state_digest(h).unwrap(),
            Some(*state_digest),
            "{what}: {h}"
        );
    }
    if tip.0 == ACKED {
        tally.recovered_whole += 1;
    } else {
        tally.recovered_without_last += 1;
    }
}

#[test]
fn flipped_bytes_in_wal_and_sst_are_refused_or_recover_every_acknowledged_height() {
    let p = build();
    let ssts = files(p.dir.path(), "sst");
    assert!(!ssts.is_empty(), "the flush wrote SST files");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut tally = Tally::default();
    let wal_len = std::fs::metadata(&p.wal).unwrap().len();
    for _ in 0..TRIALS_PER_KIND {
        let mask = 1u8 << rng.gen_range(0..8);
        trial(&p, &p.wal, rng.gen_range(0..wal_len), mask, &mut tally);
        let sst = &ssts[rng.gen_range(0..ssts.len())];
        let len = std::fs::metadata(sst).unwrap().len();
        trial(&p, sst, rng.gen_range(0..len), mask, &mut tally);
    }
    // The last record's header (checksum, length, type) and its first bytes: the flips
    // that look most like a torn write.
    for offset in p.last_record.start..(p.last_record.start + 16).min(p.last_record.end) {
        trial(&p, &p.wal, offset, 0x80, &mut tally);
    }
    println!("{tally:?}");
    assert!(tally.refused > 0, "no flip was ever detected: {tally:?}");
}

#[test]
fn an_untouched_copy_opens_whole() {
    let p = build();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(p.dir.path(), copy.path());
    let s = open(copy.path()).unwrap();
    assert_eq!(s.latest_height(), Height(ACKED));
    assert_eq!(s.state_digest(Height(ACKED)).unwrap(), Some(p.blocks[29].1));
}
