//! Snapshots (issue 24): the state at the latest checkpoint heights, kept to serve to
//! syncing validators, and the installation of a verified one into a new store.
//!
//! Right after a checkpoint height commits, the store takes a RocksDB checkpoint of
//! itself (hard links to its table files, after a flush) into `<snapshots>/<height>`,
//! and keeps the tree over the bucket roots of that height in memory for the chunks'
//! proofs. The two latest are kept: the newest may not be stable yet when a peer asks,
//! the one before is. They survive a restart (the tree is rebuilt from the files on the
//! first chunk asked for).
//!
//! Installing writes every entry, the block at that height with its certificate,
//! results and opening, the checkpoint certificate and the horizon in one synced
//! batch: after a crash the store is either still at genesis or wholly at the snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};

use rocksdb::{Options, WriteBatch, DB};
use stele_crypto::PUBLIC_KEY_LEN;
use stele_types::codec;
use stele_types::snapshot::{ChunkRange, SnapshotChunk, SnapshotManifest, MAX_CHUNK_BYTES};
use stele_types::state_root::{self, bucket_of, Bucket, BucketTree};
use stele_types::{DurableEntry, DurableKey, Height};

use crate::error::StoreError;
use crate::keys::*;
use crate::store::Store;

/// Snapshots kept: the latest checkpoint height's and the one before.
pub const KEPT_SNAPSHOTS: usize = 2;

/// One kept snapshot: a read-only RocksDB over its own hard-linked files.
struct Kept {
    db: Arc<DB>,
    tree: Option<Arc<BucketTree>>,
}

/// The snapshots a store keeps.
#[derive(Default)]
pub(crate) struct Snapshots {
    dir: Option<PathBuf>,
    kept: BTreeMap<Height, Kept>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("dir", &self.dir)
            .field("heights", &self.kept.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A chunk request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkAnswer {
    Chunk(SnapshotChunk),
    /// More than [`MAX_CHUNK_BYTES`]: ask for the halves.
    TooLarge,
    /// No snapshot is kept at that height.
    Unavailable,
}

fn read_only(path: &Path) -> Result<DB, rocksdb::Error> {
    let mut o = Options::default();
    o.set_paranoid_checks(true);
    o.set_max_open_files(64);
    DB::open_cf_for_read_only(&o, path, COLUMN_FAMILIES, false)
}

impl Store {
    fn lock_snapshots(&self) -> MutexGuard<'_, Snapshots> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the snapshots kept in `dir` (at open): the latest [`KEPT_SNAPSHOTS`] at or
    /// below the tip; anything else there (older ones, one a crash left half made) is
    /// removed.
    pub(crate) fn open_snapshots(&self, dir: &Path, tip: Height) -> Result<(), StoreError> {
        let io = |e: std::io::Error, what: &str| StoreError::Inconsistent {
            path: dir.to_owned(),
            problem: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e, "creating the snapshots directory"))?;
        let mut found: BTreeMap<Height, PathBuf> = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(e, "listing snapshots"))? {
            let entry = entry.map_err(|e| io(e, "listing snapshots"))?;
            let path = entry.path();
            match entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(h) if Height(h) <= tip => {
                    found.insert(Height(h), path);
                }
                _ => std::fs::remove_dir_all(&path)
                    .map_err(|e| io(e, "removing a stale snapshot"))?,
            }
        }
        while found.len() > KEPT_SNAPSHOTS {
            let (_, path) = found.pop_first().expect("more than KEPT_SNAPSHOTS");
            std::fs::remove_dir_all(&path).map_err(|e| io(e, "removing an old snapshot"))?;
        }
        let mut s = self.lock_snapshots();
        s.dir = Some(dir.to_owned());
        for (h, path) in found {
            let db = read_only(&path).map_err(|source| StoreError::Rocks {
                op: format!("open the snapshot at height {h}"),
                path: path.clone(),
                source,
            })?;
            s.kept.insert(
                h,
                Kept {
                    db: Arc::new(db),
                    tree: None,
                },
            );
        }
        Ok(())
    }

    /// Keeps the state just committed at checkpoint height `h` (called by `commit_block`
    /// before the next height can commit), and drops the oldest beyond
    /// [`KEPT_SNAPSHOTS`].
    pub(crate) fn keep_snapshot(&self, h: Height, tree: BucketTree) -> Result<(), StoreError> {
        let mut s = self.lock_snapshots();
        let Some(dir) = s.dir.clone() else {
            return Ok(());
        };
        let path = dir.join(h.0.to_string());
        let fail = |op: &str, source: rocksdb::Error| StoreError::Rocks {
            op: op.into(),
            path: path.clone(),
            source,
        };
        if path.exists() {
            // Left by a crash between the checkpoint and this height's commit: the store
            // would not have reopened at this height otherwise, so it is another state.
            s.kept.remove(&h);
            std::fs::remove_dir_all(&path).map_err(|e| StoreError::Inconsistent {
                path: path.clone(),
                problem: format!("removing a leftover snapshot: {e}"),
            })?;
        }
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&path))
            .map_err(|e| fail("take a checkpoint of the store", e))?;
        let db = read_only(&path).map_err(|e| fail("open the snapshot just taken", e))?;
        s.kept.insert(
            h,
            Kept {
                db: Arc::new(db),
                tree: Some(Arc::new(tree)),
            },
        );
        while s.kept.len() > KEPT_SNAPSHOTS {
            let (old, kept) = s.kept.pop_first().expect("more than KEPT_SNAPSHOTS");
            drop(kept);
            let old_path = dir.join(old.0.to_string());
            std::fs::remove_dir_all(&old_path).map_err(|e| StoreError::Inconsistent {
                path: old_path,
                problem: format!("removing an old snapshot: {e}"),
            })?;
        }
        Ok(())
    }

    /// The heights of the snapshots kept, oldest first.
    pub fn snapshot_heights(&self) -> Vec<Height> {
        self.lock_snapshots().kept.keys().copied().collect()
    }

    /// What a syncing validator needs to trust the latest snapshot this store can serve:
    /// the stable checkpoint certificate, if a snapshot is kept at its height.
    pub fn snapshot_manifest(&self) -> Result<Option<SnapshotManifest>, StoreError> {
        let Some(checkpoint) = self.stable_checkpoint()? else {
            return Ok(None);
        };
        let h = checkpoint.height;
        if !self.lock_snapshots().kept.contains_key(&h) {
            return Ok(None);
        }
        let (Some(opening), Some(block), Some(commit), Some(results)) = (
            self.state_opening(h)?,
            self.block(h)?,
            self.certificate(h)?,
            self.results(h)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(SnapshotManifest {
            checkpoint,
            opening,
            block,
            commit,
            results,
        }))
    }

    /// The chunk of `range` of the snapshot at `h`.
    pub fn snapshot_chunk(&self, h: Height, range: ChunkRange) -> Result<ChunkAnswer, StoreError> {
        if !range.is_valid() {
            return Ok(ChunkAnswer::Unavailable);
        }
        let (db, tree) = {
            let s = self.lock_snapshots();
            let Some(k) = s.kept.get(&h) else {
                return Ok(ChunkAnswer::Unavailable);
            };
            (k.db.clone(), k.tree.clone())
        };
        let tree = match tree {
            Some(t) => t,
            None => {
                // Reopened after a restart: one scan rebuilds the tree.
                let t = Arc::new(self.snapshot_tree(&db)?);
                if let Some(k) = self.lock_snapshots().kept.get_mut(&h) {
                    k.tree = Some(t.clone());
                }
                t
            }
        };
        let mut buckets: BTreeMap<u16, Bucket> = BTreeMap::new();
        let mut bytes = 0usize;
        let mut too_large = false;
        self.scan_snapshot(&db, ACCOUNTS, Some(range), |k, v| {
            let (key, account) = self.account_entry(k, v)?;
            bytes += k.len() + v.len() + 8;
            too_large |= bytes > MAX_CHUNK_BYTES;
            if !too_large {
                buckets
                    .entry(bucket_of(&key))
                    .or_default()
                    .accounts
                    .push((key, account));
            }
            Ok(!too_large)
        })?;
        if !too_large {
            self.scan_snapshot(&db, RECORDS, Some(range), |k, v| {
                let (key, value) = self.record_entry(k, v)?;
                bytes += k.len() + v.len() + 8;
                too_large |= bytes > MAX_CHUNK_BYTES;
                if !too_large {
                    buckets
                        .entry(bucket_of(&key.0))
                        .or_default()
                        .records
                        .push((key, value));
                }
                Ok(!too_large)
            })?;
        }
        if too_large {
            return Ok(ChunkAnswer::TooLarge);
        }
        let proof = tree
            .prove(u32::from(range.bits), range.first)
            .expect("a valid range has a proof");
        Ok(ChunkAnswer::Chunk(SnapshotChunk {
            height: h,
            range,
            buckets: buckets.into_iter().collect(),
            proof,
        }))
    }

    fn snapshot_tree(&self, db: &DB) -> Result<BucketTree, StoreError> {
        let mut all: BTreeMap<u16, Bucket> = BTreeMap::new();
        self.scan_snapshot(db, ACCOUNTS, None, |k, v| {
            let (key, account) = self.account_entry(k, v)?;
            all.entry(bucket_of(&key))
                .or_default()
                .accounts
                .push((key, account));
            Ok(true)
        })?;
        self.scan_snapshot(db, RECORDS, None, |k, v| {
            let (key, value) = self.record_entry(k, v)?;
            all.entry(bucket_of(&key.0))
                .or_default()
                .records
                .push((key, value));
            Ok(true)
        })?;
        let roots = all.into_iter().map(|(b, x)| (b, x.root())).collect();
        Ok(BucketTree::new(&roots))
    }

    /// Every entry of `cf` in the snapshot `db` within `range` (or all), in key order,
    /// until `f` says stop.
    fn scan_snapshot(
        &self,
        db: &DB,
        cf: &'static str,
        range: Option<ChunkRange>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let handle = db.cf_handle(cf).ok_or_else(|| StoreError::Inconsistent {
            path: self.path.clone(),
            problem: format!("a snapshot lacks column family `{cf}`"),
        })?;
        let mut it = db.raw_iterator_cf(handle);
        match range {
            Some(r) => it.seek(r.first.to_be_bytes()),
            None => it.seek_to_first(),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if let Some(r) = range {
                if k.len() < 2 || !r.contains(u16::from_be_bytes([k[0], k[1]])) {
                    break;
                }
            }
            if !f(k, v)? {
                return Ok(());
            }
            it.next();
        }
        it.status()
            .map_err(|e| self.rocks("read a snapshot", cf, e))
    }

    /// The lowest height above genesis whose block this store holds: 1, unless it
    /// started from a snapshot (or, later, pruned).
    pub fn horizon(&self) -> Result<Height, StoreError> {
        match self.get_raw(META, HORIZON_KEY)? {
            None => Ok(Height(1)),
            Some(v) => parse_height(&v).ok_or_else(|| {
                self.corrupt(META, HORIZON_KEY, "the horizon is not a height".into())
            }),
        }
    }

    /// Installs a snapshot into a store at genesis: `manifest` and `chunks` must already
    /// be verified against the genesis validators (the caller did, chunk by chunk). The
    /// store checks again that the chunks tile every bucket and hash to the opening's
    /// state root, then writes everything in one synced batch.
    pub fn install_snapshot(
        &self,
        manifest: &SnapshotManifest,
        chunks: &[SnapshotChunk],
    ) -> Result<(), StoreError> {
        let mut tip = self.lock_tip();
        let h = manifest.checkpoint.height;
        let refuse = |problem: String| StoreError::Inconsistent {
            path: self.path.clone(),
            problem,
        };
        if tip.height != Height(0) {
            return Err(refuse(format!(
                "a snapshot installs only into a store at genesis; this one is at height {}",
                tip.height
            )));
        }
        if h == Height(0)
            || manifest.opening.height != h
            || manifest.block.height() != h
            || manifest.opening.digest() != manifest.checkpoint.state_digest
            || manifest.block.digest() != manifest.opening.block_digest
            || manifest.commit.digest != manifest.opening.block_digest
            || manifest.results.len() != manifest.block.txs.len()
        {
            return Err(refuse(format!(
                "the snapshot manifest at height {h} does not hold together"
            )));
        }
        let mut roots = BTreeMap::new();
        let mut ranges: Vec<ChunkRange> = Vec::with_capacity(chunks.len());
        for c in chunks {
            if c.height != h {
                return Err(refuse(format!(
                    "a chunk of height {} in a snapshot of {h}",
                    c.height
                )));
            }
            ranges.push(c.range);
            for (b, bucket) in &c.buckets {
                if !c.range.contains(*b) || roots.insert(*b, bucket.root()).is_some() {
                    return Err(refuse(format!(
                        "bucket {b:04x} is outside its chunk or twice"
                    )));
                }
            }
        }
        ranges.sort();
        let mut next = 0u32;
        for r in &ranges {
            if u32::from(r.first) != next {
                return Err(refuse(format!(
                    "the chunks do not cover buckets from {next:04x}"
                )));
            }
            next = u32::from(r.last()) + 1;
        }
        if next != 1 << state_root::BUCKET_BITS {
            return Err(refuse(format!("the chunks end at bucket {next:04x}")));
        }
        let tree = BucketTree::new(&roots);
        if tree.root() != manifest.opening.state_root {
            return Err(refuse(format!(
                "the chunks hash to state root {}, the checkpoint's is {}",
                tree.root(),
                manifest.opening.state_root
            )));
        }

        let mut batch = WriteBatch::default();
        // Genesis accounts are replaced by the snapshot's (a key above every account and
        // record key bounds both families).
        let end = [0xffu8; PUBLIC_KEY_LEN + stele_types::tx::MAX_RECORD_KEY_LEN + 1];
        batch.delete_range_cf(self.cf(ACCOUNTS), &[][..], &end[..]);
        batch.delete_range_cf(self.cf(RECORDS), &[][..], &end[..]);
        for c in chunks {
            for (_, bucket) in &c.buckets {
                for (key, account) in &bucket.accounts {
                    batch.put_cf(self.cf(ACCOUNTS), key.as_bytes(), codec::encode(account));
                }
                for ((owner, key), value) in &bucket.records {
                    batch.put_cf(
                        self.cf(RECORDS),
                        record_key(owner, key),
                        codec::encode(value),
                    );
                }
            }
        }
        let key = height_key(h);
        let state_digest = manifest.checkpoint.state_digest;
        batch.put_cf(
            self.cf(BLOCKS),
            key,
            codec::encode(&(state_digest, &manifest.block)),
        );
        batch.put_cf(
            self.cf(BLOCK_INDEX),
            manifest.opening.block_digest.as_bytes(),
            key,
        );
        batch.put_cf(self.cf(CERTS), key, codec::encode(&manifest.commit));
        batch.put_cf(self.cf(RESULTS), key, codec::encode(&manifest.results));
        batch.put_cf(self.cf(OPENINGS), key, codec::encode(&manifest.opening));
        batch.put_cf(self.cf(META), HORIZON_KEY, key);
        let stable = DurableEntry::StableCheckpoint(manifest.checkpoint.clone());
        batch.put_cf(
            self.cf(CONSENSUS),
            DurableKey::StableCheckpoint.to_bytes(),
            codec::encode(&stable),
        );
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.rocks(&format!("install the snapshot at height {h}"), BLOCKS, e))?;
        *tip = crate::store::Tip {
            height: h,
            state_digest,
        };
        drop(tip);
        self.set_tree(tree);
        Ok(())
    }
}
