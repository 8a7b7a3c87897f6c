//! Snapshots (issue 24): the state at the latest checkpoint heights, kept to serve to
//! syncing validators, and the installation of a verified one into a new store.
//!
//! Right after a checkpoint height commits, the store fixes its state with a RocksDB
//! snapshot (a sequence number: no flush, no file), and the background thread writes the
//! accounts and records as they were then into a new RocksDB in `<snapshots>/<height>`
//! while later blocks commit; it keeps the tree over the bucket roots of that height in
//! memory for the chunks' proofs. Kept: the latest one at or below the stable checkpoint (what a peer can
//! verify now) and every one above it (what becomes verifiable next); execution runs at
//! most L = 2K past the stable checkpoint, so that is at most three. They survive a
//! restart (the tree is rebuilt from the files on the first chunk asked for).
//!
//! Installing writes every entry, the block at that height with its certificate,
//! results and opening, the checkpoint certificate and the horizon in one synced
//! batch: after a crash the store is either still at genesis or wholly at the snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard};

use rocksdb::{Options, WriteBatch, DB};
use stele_crypto::PUBLIC_KEY_LEN;
use stele_crypto::{merkle, Digest};
use stele_types::codec;
use stele_types::snapshot::{
    BucketPiece, ChunkRange, PieceId, SnapshotChunk, SnapshotManifest, MAX_CHUNK_BYTES,
};
use stele_types::state_root::{account_leaf, bucket_of, record_leaf, Bucket, BucketTree};
use stele_types::{CheckpointCertificate, DurableEntry, DurableKey, Height};

use crate::error::StoreError;
use crate::keys::*;
use crate::store::{SnapshotConfig, Store, CERT_LIMIT};

/// One kept snapshot: a read-only RocksDB over its own files.
struct Kept {
    db: Arc<DB>,
    tree: Option<Arc<BucketTree>>,
    /// Buckets asked for in pieces lately, least recently asked first: where each piece
    /// starts and the tree over the pieces' roots, so a piece costs a read of its own
    /// entries and a path read out of that tree, not a pass over the whole bucket.
    pieces: Vec<((u16, u8), Arc<PieceIndex>)>,
}

/// Buckets whose piece index a snapshot keeps at once (a few syncing validators at a
/// time each fetch one such bucket's pieces in turn).
const PIECE_INDEXES: usize = 8;

/// The smallest pieces served: 2^6 entries. Smaller ones would only make a peer's index
/// of a large bucket (a key per piece) and its requests cost more.
pub const MIN_SERVED_PIECE_BITS: u8 = 6;

/// One bucket of a snapshot cut into pieces of 2^bits entries.
#[derive(Debug)]
struct PieceIndex {
    leaves: u64,
    /// The tree over the pieces' roots (none for an empty bucket).
    tree: Option<merkle::Tree>,
    /// Per piece: the family and key it starts at.
    starts: Vec<(&'static str, Vec<u8>)>,
}

/// The snapshots a store keeps.
#[derive(Default)]
pub(crate) struct Snapshots {
    config: Option<SnapshotConfig>,
    kept: BTreeMap<Height, Kept>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("config", &self.config)
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

/// What a store answers for a piece of a bucket.
#[derive(Debug, PartialEq, Eq)]
pub enum PieceAnswer {
    Piece(BucketPiece),
    /// Past the bucket's last piece, or pieces larger than served.
    NoSuchPiece,
    /// No snapshot is kept at that height.
    Unavailable,
}

/// The column families a snapshot holds: all it serves.
const SNAPSHOT_FAMILIES: [&str; 2] = [ACCOUNTS, RECORDS];

/// Opens a snapshot's accounts and records (a snapshot kept before 64f3e28, a checkpoint
/// of the whole store, has the other families too; read-only, they need not be named).
fn read_only(path: &Path) -> Result<DB, rocksdb::Error> {
    let mut o = Options::default();
    o.set_paranoid_checks(true);
    o.set_max_open_files(64);
    DB::open_cf_for_read_only(&o, path, SNAPSHOT_FAMILIES, false)
}

/// The state fixed at a snapshot height, still to be written ([`Store::write_snapshot`]).
pub(crate) struct Captured<'a> {
    height: Height,
    dir: PathBuf,
    state: rocksdb::SnapshotWithThreadMode<'a, DB>,
}

/// How long writing the snapshots took, since the store opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotWrites {
    pub count: u64,
    pub total: std::time::Duration,
    pub max: std::time::Duration,
    pub last: std::time::Duration,
}

/// How much of a snapshot is written at once.
const SNAPSHOT_BATCH_BYTES: usize = 4 << 20;

/// Syncs every file in `dir` and then `dir` itself.
fn sync_dir_and_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// Removes a snapshot directory so that a crash at any moment leaves either the whole
/// snapshot or nothing that looks like one. Deleting its files in place could stop
/// halfway and leave a directory with a height's name whose MANIFEST names files that
/// are gone: the next start would then refuse to open the store (the power-loss test
/// found exactly that). So it is first renamed out of the heights' names, the rename
/// made durable, and only then emptied; `open_snapshots` removes any such leftover.
fn remove(path: &Path) -> Result<(), StoreError> {
    let fail = |what: &str, e: std::io::Error| StoreError::Inconsistent {
        path: path.to_owned(),
        problem: format!("removing a snapshot: {what}: {e}"),
    };
    let is_snapshot = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.parse::<u64>().is_ok());
    let doomed = if is_snapshot {
        let doomed = path.with_extension("removing");
        std::fs::rename(path, &doomed).map_err(|e| fail("renaming it aside", e))?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail("syncing its directory", e))?;
        }
        doomed
    } else {
        path.to_owned()
    };
    if doomed.is_dir() {
        for entry in std::fs::read_dir(&doomed).map_err(|e| fail("listing it", e))? {
            #[cfg(test)]
            if crash::now() {
                return Ok(());
            }
            let entry = entry.map_err(|e| fail("listing it", e))?;
            let p = entry.path();
            let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| fail("deleting a file", e))?;
        }
        std::fs::remove_dir(&doomed).map_err(|e| fail("deleting it", e))
    } else {
        std::fs::remove_file(&doomed).map_err(|e| fail("deleting it", e))
    }
}

/// A simulated crash in the middle of [`remove`], for its test.
#[cfg(test)]
mod crash {
    use std::cell::Cell;

    thread_local! {
        static AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// The next removal stops (as if the process died) after `n` deletions.
    pub(super) fn after(n: usize) {
        AFTER.with(|a| a.set(Some(n)));
    }

    pub(super) fn reset() {
        AFTER.with(|a| a.set(None));
    }

    pub(super) fn now() -> bool {
        AFTER.with(|a| match a.get() {
            Some(0) => {
                a.set(None);
                true
            }
            Some(n) => {
                a.set(Some(n - 1));
                false
            }
            None => false,
        })
    }
}

impl Store {
    fn lock_snapshots(&self) -> MutexGuard<'_, Snapshots> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the snapshots kept in the configured directory (at open): those at or below
    /// the tip that [`Store::prune_snapshots`] keeps; anything else there (one a crash
    /// left half made, one above a tip a crash lost) is removed.
    pub(crate) fn open_snapshots(
        &self,
        config: &SnapshotConfig,
        tip: Height,
    ) -> Result<(), StoreError> {
        let dir = &config.dir;
        let io = |e: std::io::Error, what: &str| StoreError::Inconsistent {
            path: dir.to_owned(),
            problem: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e, "creating the snapshots directory"))?;
        let mut s = self.lock_snapshots();
        s.config = Some(config.clone());
        for entry in std::fs::read_dir(dir).map_err(|e| io(e, "listing snapshots"))? {
            let entry = entry.map_err(|e| io(e, "listing snapshots"))?;
            let path = entry.path();
            match entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
            {
                Some(h) if Height(h) <= tip => {
                    let db = read_only(&path).map_err(|source| StoreError::Rocks {
                        op: format!("open the snapshot at height {h}"),
                        path: path.clone(),
                        source,
                    })?;
                    s.kept.insert(
                        Height(h),
                        Kept {
                            db: Arc::new(db),
                            tree: None,
                            pieces: Vec::new(),
                        },
                    );
                }
                _ => remove(&path)?,
            }
        }
        self.prune_snapshots(&mut s)
    }

    /// Keeps the state just committed at checkpoint height `h`, if it is a snapshot
    /// height (called by `commit_block` before the next height can commit).
    pub(crate) fn keep_snapshot(&self, h: Height, tree: BucketTree) {
        if let Some(captured) = self.capture_snapshot(h) {
            self.finish_snapshot(h, tree, captured);
        }
    }

    /// Writes and registers a captured snapshot. A failure (a full disk, say) is logged
    /// and leaves nothing behind: the block is already committed, the chain goes on, and
    /// peers are served the snapshots kept before.
    pub(crate) fn finish_snapshot(&self, h: Height, tree: BucketTree, captured: Captured<'_>) {
        let kept = self
            .write_snapshot(captured)
            .and_then(|path| self.register_snapshot(h, tree, &path));
        if let Err(e) = kept {
            tracing::warn!(height = %h, error = %e, "keeping a snapshot failed");
            if let Err(e) = self.forget_snapshot(h) {
                tracing::warn!(height = %h, error = %e, "removing a snapshot that failed");
            }
        }
    }

    /// Removes what a snapshot of `h` that failed before it was kept left behind: its
    /// directory under either name, and the certificate `persist` stored for it while
    /// it was pending (else it would stay for good: pruning sees only kept ones).
    fn forget_snapshot(&self, h: Height) -> Result<(), StoreError> {
        // Held throughout: `persist` cannot store the certificate between its deletion
        // and the end of pending below.
        let _durable = self.durable_lock.lock().unwrap_or_else(|e| e.into_inner());
        let removed = self.remove_unkept_snapshot(h);
        // No longer pending, so `persist` stores no certificate for it after this.
        self.end_pending(h);
        removed
    }

    /// Deletes the certificate and the directories of a snapshot of `h` that is not
    /// kept (with `persist`'s lock held).
    fn remove_unkept_snapshot(&self, h: Height) -> Result<(), StoreError> {
        let s = self.lock_snapshots();
        let Some(config) = s.config.clone().filter(|_| !s.kept.contains_key(&h)) else {
            return Ok(());
        };
        drop(s);
        self.db
            .delete_cf_opt(self.cf(META), snapshot_cert_key(h), &self.write_opts)
            .map_err(|e| self.rocks("drop a failed snapshot's certificate", META, e))?;
        for dir in [
            config.dir.join(h.0.to_string()),
            config.dir.join(format!("{}.writing", h.0)),
        ] {
            if dir.exists() {
                remove(&dir)?;
            }
        }
        Ok(())
    }

    /// Stores the stable checkpoint's certificate as the snapshot's if it is at `h`
    /// (it came before `h` committed here, so `persist` did not see `h` kept).
    pub(crate) fn store_cert_if_stable(&self, h: Height) -> Result<(), StoreError> {
        if let Some(c) = self.stable_checkpoint()?.filter(|c| c.height == h) {
            self.db
                .put_cf_opt(
                    self.cf(META),
                    snapshot_cert_key(h),
                    codec::encode(&c),
                    &self.write_opts,
                )
                .map_err(|e| self.rocks("store a snapshot's certificate", META, e))?;
        }
        Ok(())
    }

    /// The first step of keeping a snapshot: the state just committed at `h`, fixed by a
    /// RocksDB snapshot, if `h` is a snapshot height. Once it returns, later commits no
    /// longer change what it reads. It takes no flush and no file: a RocksDB checkpoint
    /// flushed every column family first (a synced table each), and the next commit of
    /// every validator, all at the same height, waited tens of milliseconds on it.
    pub(crate) fn capture_snapshot(&self, h: Height) -> Option<Captured<'_>> {
        let config = self.lock_snapshots().config.clone()?;
        if config.every == 0 || h.0 % config.every != 0 {
            return None;
        }
        Some(Captured {
            height: h,
            dir: config.dir,
            state: self.db.snapshot(),
        })
    }

    /// The second step, beside later commits: writes the captured accounts and records
    /// (all a snapshot serves) into a new RocksDB in the snapshot's directory. It is
    /// written under another name and renamed when complete and durable, so a crash
    /// leaves the whole snapshot or nothing that looks like one. Returns its directory.
    ///
    /// The cost is one pass over the state, in the background; when a pass takes longer
    /// than a snapshot interval, `snapshot_at` passes over the heights that come meanwhile.
    pub(crate) fn write_snapshot(&self, c: Captured<'_>) -> Result<PathBuf, StoreError> {
        let started = std::time::Instant::now();
        let path = c.dir.join(c.height.0.to_string());
        #[cfg(test)]
        crate::state_root::tests::hold_after_capture(&path);
        let writing = c.dir.join(format!("{}.writing", c.height.0));
        if path.exists() {
            // Left by a crash after it was written but before this height's commit was
            // durable: it may hold another state.
            drop(self.lock_snapshots().kept.remove(&c.height));
            remove(&path)?;
        }
        if writing.exists() {
            remove(&writing)?;
        }
        // On failure, `finish_snapshot` removes what is half written.
        self.fill_snapshot(&c.state, &writing)?;
        // Read: later versions of the state may go at the next compaction.
        drop(c.state);
        #[cfg(test)]
        if crate::state_root::tests::fail_write(&path) {
            return Err(StoreError::Inconsistent {
                path: writing,
                problem: "the test fails this snapshot's write".into(),
            });
        }
        let io = |what: &str, e: std::io::Error| StoreError::Inconsistent {
            path: writing.clone(),
            problem: format!("writing a snapshot: {what}: {e}"),
        };
        sync_dir_and_files(&writing).map_err(|e| io("syncing its files", e))?;
        std::fs::rename(&writing, &path).map_err(|e| io("renaming it to its height", e))?;
        std::fs::File::open(&c.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the snapshots directory", e))?;
        let took = started.elapsed();
        let mut w = self
            .snapshot_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        w.count += 1;
        w.total += took;
        w.max = w.max.max(took);
        w.last = took;
        Ok(path)
    }

    /// Writes the accounts and records `state` reads into a new RocksDB at `writing`,
    /// flushed (so durable without a WAL) and closed.
    fn fill_snapshot(
        &self,
        state: &rocksdb::SnapshotWithThreadMode<'_, DB>,
        writing: &Path,
    ) -> Result<(), StoreError> {
        let rocks = |op: &str, source: rocksdb::Error| StoreError::Rocks {
            op: op.into(),
            path: writing.to_owned(),
            source,
        };
        let mut options = crate::store::db_options();
        // Its tables are synced a MiB at a time as they are written, not in one fsync at
        // the end: a large one would hold the live store's WAL syncs (every commit's)
        // behind it on the same disk.
        options.set_bytes_per_sync(1 << 20);
        // Only the families it serves: creating each is a synced manifest write.
        let out = crate::store::open_rocks(writing, &options, &SNAPSHOT_FAMILIES)
            .map_err(|e| rocks("create a snapshot", e))?;
        let mut unlogged = rocksdb::WriteOptions::default();
        // Durable by the flush below, before the rename makes it a snapshot.
        unlogged.disable_wal(true);
        for cf in SNAPSHOT_FAMILIES {
            let to = out.cf_handle(cf).ok_or_else(|| StoreError::Inconsistent {
                path: writing.to_owned(),
                problem: format!("a new snapshot lacks column family `{cf}`"),
            })?;
            let mut read = rocksdb::ReadOptions::default();
            // One pass over the whole state: it would push the live store's hot blocks
            // out of the block cache.
            read.fill_cache(false);
            let mut it = state.raw_iterator_cf_opt(self.cf(cf), read);
            it.seek_to_first();
            let mut batch = WriteBatch::default();
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                batch.put_cf(to, k, v);
                if batch.size_in_bytes() >= SNAPSHOT_BATCH_BYTES {
                    out.write_opt(std::mem::take(&mut batch), &unlogged)
                        .map_err(|e| rocks("write a snapshot", e))?;
                }
                it.next();
            }
            it.status()
                .map_err(|e| self.rocks("read the state for a snapshot", cf, e))?;
            out.write_opt(batch, &unlogged)
                .map_err(|e| rocks("write a snapshot", e))?;
        }
        for cf in SNAPSHOT_FAMILIES {
            if let Some(h) = out.cf_handle(cf) {
                out.flush_cf(h).map_err(|e| rocks("flush a snapshot", e))?;
            }
        }
        drop(out);
        Ok(())
    }

    /// The last step: opens the snapshot written at `path` and serves it as the snapshot
    /// of `h`, with its certificate if `h` is already stable. Commits may go on meanwhile.
    pub(crate) fn register_snapshot(
        &self,
        h: Height,
        tree: BucketTree,
        path: &Path,
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        crate::state_root::tests::die_in_register(path);
        let db = read_only(path).map_err(|e| StoreError::Rocks {
            op: "open the snapshot just taken".into(),
            path: path.to_path_buf(),
            source: e,
        })?;
        // With `persist`'s lock: a stable certificate for `h` is either already stored
        // (and stored again below) or persisted after this, seeing `h` kept.
        let _durable = self.durable_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.lock_snapshots();
        s.kept.insert(
            h,
            Kept {
                db: Arc::new(db),
                tree: Some(Arc::new(tree)),
                pieces: Vec::new(),
            },
        );
        // Already stable (the others' CHECKPOINTs came before this height executed here):
        // its certificate is stored now, as `persist` would have.
        self.store_cert_if_stable(h)?;
        self.prune_snapshots(&mut s)
    }

    /// Every how many heights a snapshot is taken, if any are.
    pub(crate) fn snapshot_every(&self) -> Option<u64> {
        let s = self.lock_snapshots();
        s.config.as_ref().map(|c| c.every).filter(|e| *e > 0)
    }

    /// How long writing the snapshots took, since the store opened.
    pub fn snapshot_writes(&self) -> SnapshotWrites {
        *self
            .snapshot_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Snapshot heights passed over because the one before was still being written.
    pub fn snapshots_skipped(&self) -> u64 {
        self.snapshots_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a snapshot is kept at `h` (so `persist` stores its certificate).
    pub(crate) fn keeps_snapshot(&self, h: Height) -> bool {
        // One still being taken counts: `keep_snapshot` may have checked for a stable
        // certificate before this one was persisted.
        self.pending_snapshot_height() == Some(h) || self.lock_snapshots().kept.contains_key(&h)
    }

    /// [`Store::prune_snapshots`], after a new stable checkpoint.
    pub(crate) fn prune_kept_snapshots(&self) -> Result<(), StoreError> {
        let mut s = self.lock_snapshots();
        self.prune_snapshots(&mut s)
    }

    /// Keeps the `kept` latest snapshots that have a checkpoint certificate (what peers
    /// can verify) and every one above them (whose certificate is still to come: at most
    /// L / `every` + 1, since execution runs at most L past the stable checkpoint);
    /// drops the rest with their certificates.
    fn prune_snapshots(&self, s: &mut Snapshots) -> Result<(), StoreError> {
        let Some(config) = s.config.clone() else {
            return Ok(());
        };
        let certified: Vec<Height> = s
            .kept
            .keys()
            .copied()
            .filter(|h| matches!(self.get_raw(META, &snapshot_cert_key(*h)), Ok(Some(_))))
            .collect();
        let Some(floor) = certified.iter().rev().nth(config.kept.max(1) - 1).copied() else {
            return Ok(());
        };
        let old: Vec<Height> = s.kept.range(..floor).map(|(h, _)| *h).collect();
        for h in old {
            // The read-only handle closes before its files go; the certificate goes
            // first, so a crash never leaves a certificate for a snapshot it removed.
            drop(s.kept.remove(&h));
            self.db
                .delete_cf_opt(self.cf(META), snapshot_cert_key(h), &self.write_opts)
                .map_err(|e| self.rocks("drop a snapshot's certificate", META, e))?;
            remove(&config.dir.join(h.0.to_string()))?;
        }
        Ok(())
    }

    /// The heights of the snapshots kept, oldest first.
    pub fn snapshot_heights(&self) -> Vec<Height> {
        self.lock_snapshots().kept.keys().copied().collect()
    }

    /// What a syncing validator needs to trust the latest snapshot this store serves:
    /// the highest kept one with its stable checkpoint certificate.
    pub fn snapshot_manifest(&self) -> Result<Option<SnapshotManifest>, StoreError> {
        let heights: Vec<Height> = self.lock_snapshots().kept.keys().rev().copied().collect();
        for h in heights {
            let Some(raw) = self.get_raw(META, &snapshot_cert_key(h))? else {
                continue;
            };
            // Checked against its root once after a restart (one scan of its files).
            if self.kept_snapshot(h)?.is_none() {
                continue;
            }
            let checkpoint: CheckpointCertificate =
                self.decode_value(META, &snapshot_cert_key(h), &raw, CERT_LIMIT)?;
            let (Some(opening), Some(block), Some(commit), Some(results)) = (
                self.state_opening(h)?,
                self.block(h)?,
                self.certificate(h)?,
                self.results(h)?,
            ) else {
                continue;
            };
            return Ok(Some(SnapshotManifest {
                checkpoint,
                opening,
                block,
                commit,
                results,
            }));
        }
        Ok(None)
    }

    /// The chunk of `range` of the snapshot at `h`.
    pub fn snapshot_chunk(&self, h: Height, range: ChunkRange) -> Result<ChunkAnswer, StoreError> {
        if !range.is_valid() {
            return Ok(ChunkAnswer::Unavailable);
        }
        let Some((db, tree)) = self.kept_snapshot(h)? else {
            return Ok(ChunkAnswer::Unavailable);
        };
        let mut buckets: BTreeMap<u16, Bucket> = BTreeMap::new();
        let mut bytes = 0usize;
        let mut too_large = false;
        self.scan_snapshot(&db, ACCOUNTS, Some(range), |k, v| {
            let (key, account) = self.account_entry(k, v)?;
            // On the wire: the key and the encoded account, as stored.
            bytes += k.len() + v.len();
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
                // On the wire: the owner, the record key with its length, the value.
                bytes += k.len() + 8 + v.len();
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
        let chunk = SnapshotChunk {
            height: h,
            range,
            buckets: buckets.into_iter().collect(),
            proof,
        };
        // `bytes` counts the entries alone, never more than their encoding, so the scan
        // stops early only for a chunk that cannot fit; the whole encoding decides. A
        // peer's claim is checked by adding up the halves' sizes, and an estimate above
        // the encoding (accounts once counted 8 bytes too many) had honest validators
        // judged faulty for chunks of 3.6–4 MB.
        if codec::encoded_len(&chunk) > MAX_CHUNK_BYTES {
            return Ok(ChunkAnswer::TooLarge);
        }
        Ok(ChunkAnswer::Chunk(chunk))
    }

    /// The kept snapshot at `h` and its bucket tree (rebuilt by one scan after a restart).
    #[allow(clippy::type_complexity)]
    fn kept_snapshot(&self, h: Height) -> Result<Option<(Arc<DB>, Arc<BucketTree>)>, StoreError> {
        let (db, tree) = {
            let s = self.lock_snapshots();
            let Some(k) = s.kept.get(&h) else {
                return Ok(None);
            };
            (k.db.clone(), k.tree.clone())
        };
        let tree = match tree {
            Some(t) => t,
            None => {
                let t = Arc::new(self.snapshot_tree(&db)?);
                if self
                    .state_opening(h)?
                    .is_some_and(|o| o.state_root != t.root())
                {
                    // Its files do not hash to the root its checkpoint certifies (taken
                    // before the bucket root's format changed, or damaged): every peer
                    // would refuse each chunk of it, so it is not served at all.
                    tracing::warn!(
                        height = h.0,
                        root = %t.root(),
                        "a kept snapshot does not hash to its checkpoint's state root; removing it"
                    );
                    let dir = {
                        let mut s = self.lock_snapshots();
                        drop(s.kept.remove(&h));
                        s.config.as_ref().map(|c| c.dir.clone())
                    };
                    if let Some(dir) = dir {
                        remove(&dir.join(h.0.to_string()))?;
                    }
                    return Ok(None);
                }
                if let Some(k) = self.lock_snapshots().kept.get_mut(&h) {
                    k.tree = Some(t.clone());
                }
                t
            }
        };
        Ok(Some((db, tree)))
    }

    /// Piece `id` of a bucket of the snapshot at `h`: for a bucket too large for one
    /// chunk. Never larger than a chunk (at most 2^[`MAX_PIECE_BITS`] entries).
    ///
    /// [`MAX_PIECE_BITS`]: stele_types::snapshot::MAX_PIECE_BITS
    pub fn snapshot_piece(&self, h: Height, id: PieceId) -> Result<PieceAnswer, StoreError> {
        if !id.is_valid() || id.bits < MIN_SERVED_PIECE_BITS {
            return Ok(PieceAnswer::NoSuchPiece);
        }
        let Some((db, tree)) = self.kept_snapshot(h)? else {
            return Ok(PieceAnswer::Unavailable);
        };
        let key = (id.bucket, id.bits);
        let cached = self.lock_snapshots().kept.get_mut(&h).and_then(|k| {
            let at = k.pieces.iter().position(|(c, _)| *c == key)?;
            // Most recently asked last: evictions take the front.
            let entry = k.pieces.remove(at);
            let i = entry.1.clone();
            k.pieces.push(entry);
            Some(i)
        });
        let index = match cached {
            Some(i) => i,
            None => {
                let i = Arc::new(self.piece_index(&db, id.bucket, id.bits)?);
                if let Some(k) = self.lock_snapshots().kept.get_mut(&h) {
                    if k.pieces.len() >= PIECE_INDEXES {
                        k.pieces.remove(0);
                    }
                    k.pieces.push((key, i.clone()));
                }
                i
            }
        };
        let i = id.index as usize;
        if u64::from(id.index) >= PieceId::count(index.leaves, id.bits) {
            return Ok(PieceAnswer::NoSuchPiece);
        }
        let bucket = ChunkRange {
            first: id.bucket,
            bits: 0,
        };
        let mut entries = Bucket::default();
        let size = 1usize << id.bits;
        if let Some((cf, from)) = index.starts.get(i) {
            if *cf == ACCOUNTS {
                self.scan_from(&db, ACCOUNTS, from, bucket, |k, v| {
                    entries.accounts.push(self.account_entry(k, v)?);
                    Ok(entries.accounts.len() < size)
                })?;
            }
            let from: &[u8] = if *cf == RECORDS { from } else { &[] };
            if (entries.len() as usize) < size {
                self.scan_from(&db, RECORDS, from, bucket, |k, v| {
                    entries.records.push(self.record_entry(k, v)?);
                    Ok((entries.len() as usize) < size)
                })?;
            }
        }
        let path = index
            .tree
            .as_ref()
            .and_then(|t| t.prove(i))
            .map(|p| p.path)
            .unwrap_or_default();
        Ok(PieceAnswer::Piece(BucketPiece {
            height: h,
            piece: id,
            leaves: index.leaves,
            entries,
            path,
            proof: tree
                .prove(0, id.bucket)
                .expect("a single bucket has a proof"),
        }))
    }

    /// One scan of a bucket: where each piece of 2^bits entries starts and its root.
    fn piece_index(&self, db: &DB, b: u16, bits: u8) -> Result<PieceIndex, StoreError> {
        let size = 1usize << bits;
        let mut index = PieceIndex {
            leaves: 0,
            tree: None,
            starts: Vec::new(),
        };
        let mut nodes: Vec<Digest> = Vec::new();
        let mut group: Vec<Digest> = Vec::with_capacity(size);
        let bucket = ChunkRange { first: b, bits: 0 };
        for cf in [ACCOUNTS, RECORDS] {
            self.scan_from(db, cf, &[], bucket, |k, v| {
                let leaf = if cf == ACCOUNTS {
                    let (key, account) = self.account_entry(k, v)?;
                    account_leaf(&key, &account)
                } else {
                    let ((owner, key), value) = self.record_entry(k, v)?;
                    record_leaf(&owner, &key, &value)
                };
                if group.is_empty() {
                    index.starts.push((cf, k.to_vec()));
                }
                group.push(merkle::leaf_hash(&leaf));
                index.leaves += 1;
                if group.len() == size {
                    nodes.push(merkle::Tree::from_leaf_hashes(std::mem::take(&mut group)).root());
                }
                Ok(true)
            })?;
        }
        if !group.is_empty() {
            nodes.push(merkle::Tree::from_leaf_hashes(group).root());
        }
        index.tree = (!nodes.is_empty()).then(|| merkle::Tree::from_leaf_hashes(nodes));
        Ok(index)
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
        f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        match range {
            Some(r) => self.scan_from(db, cf, &r.first.to_be_bytes(), r, f),
            None => self.scan_from(db, cf, &[], ChunkRange::all(16)[0], f),
        }
    }

    /// Every entry of `cf` in the snapshot `db` from key `from` (at least the range's
    /// first bucket) to the end of `range`, in key order, until `f` says stop.
    fn scan_from(
        &self,
        db: &DB,
        cf: &'static str,
        from: &[u8],
        range: ChunkRange,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let handle = db.cf_handle(cf).ok_or_else(|| StoreError::Inconsistent {
            path: self.path.clone(),
            problem: format!("a snapshot lacks column family `{cf}`"),
        })?;
        let mut it = db.raw_iterator_cf(handle);
        let first = range.first.to_be_bytes();
        it.seek(if from > &first[..] { from } else { &first[..] });
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.len() < 2 || !range.contains(u16::from_be_bytes([k[0], k[1]])) {
                break;
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

    /// Installs a snapshot into a store at genesis, or into one below its height (a
    /// validator far behind jumps; see below): `manifest` and `chunks` must already
    /// be verified against the genesis validators (the caller did, chunk by chunk). The
    /// store checks again that the chunks tile every bucket and hash to the opening's
    /// state root, then writes everything in one synced batch.
    pub fn install_snapshot(
        &self,
        manifest: &SnapshotManifest,
        chunks: &[SnapshotChunk],
    ) -> Result<(), StoreError> {
        let mut tip = self.lock_tip();
        // A snapshot of the state being replaced, still registering, must not appear
        // among the kept ones after the jump (no commit can start another: the tip is
        // held).
        self.wait_for_no_snapshot();
        let h = manifest.checkpoint.height;
        let refuse = |problem: String| StoreError::Inconsistent {
            path: self.path.clone(),
            problem,
        };
        if tip.height >= h {
            return Err(refuse(format!(
                "a snapshot at height {h} installs only into a store below it; this one is at height {}",
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
        if !stele_types::snapshot::tiles_every_bucket(ranges) {
            return Err(refuse(
                "the chunks do not cover every bucket exactly once".into(),
            ));
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
        let jump = tip.height > Height(0);
        if jump {
            // The snapshots it kept of its old chain go first: a crash after this
            // leaves the old store without them, which is still a whole store.
            let mut kept = self.lock_snapshots();
            let dir = kept.config.as_ref().map(|c| c.dir.clone());
            let old: Vec<Height> = kept.kept.keys().copied().collect();
            for k in old {
                drop(kept.kept.remove(&k));
                if let Some(dir) = &dir {
                    remove(&dir.join(k.0.to_string()))?;
                }
            }
        }
        if jump {
            // A validator far behind jumps: its chain below the snapshot goes (the
            // peers pruned what lies between), with the snapshots it kept of it. Its
            // own consensus record stays, but for the votes at or below the new stable
            // checkpoint, which it can never be asked for again: the views it left
            // still bind it (safety rule 3), so it needs no recovery gate.
            self.delete_blocks(&mut batch, self.horizon()?, tip.height.next())?;
            batch.delete_range_cf(
                self.cf(META),
                snapshot_cert_key(Height(0)),
                snapshot_cert_key(Height(u64::MAX)),
            );
            batch.delete_cf(self.cf(META), snapshot_cert_key(Height(u64::MAX)));
            for tag in DurableKey::GC_TAGS {
                batch.delete_range_cf(self.cf(CONSENSUS), vec![tag], DurableKey::gc_bound(tag, h));
            }
        }
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
        // The installed block's own txs are found and proven like any later one's.
        self.put_indexes(&mut batch, h, &manifest.block, &manifest.results);
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
        let written = self.db.write_opt(batch, &opts);
        // Every account may have changed (and on a failure, any part of them).
        self.accounts.replaced();
        written
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash at any point of a snapshot's removal leaves no directory with a
    /// height's name, and the next removal of the leftover finishes the job. Deleting
    /// in place (what this replaced) left `64/` with its MANIFEST and CURRENT but not
    /// all its table files, and the store then refused to open.
    #[test]
    fn a_crash_while_removing_a_snapshot_never_leaves_a_partial_one() {
        for stop in 0..6 {
            let dir = tempfile::tempdir().expect("tempdir");
            let snap = dir.path().join("64");
            std::fs::create_dir(&snap).expect("mkdir");
            for f in [
                "CURRENT",
                "MANIFEST-000005",
                "000007.sst",
                "000009.sst",
                "OPTIONS-000011",
            ] {
                std::fs::write(snap.join(f), f).expect("write");
            }
            crash::after(stop);
            remove(&snap).expect("remove");
            crash::reset();
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| n.parse::<u64>().is_err()),
                "crash after {stop} deletions left {names:?}"
            );
            for n in &names {
                remove(&dir.path().join(n)).expect("remove the leftover");
            }
            assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        }
    }
}
