//! The store: opening (with its consistency check), committing blocks, and every read.
//!
//! A committed block is one synced `WriteBatch`: the block with its state digest, its
//! digest index entry, its certificate, the tx and nonce index entries of its applied
//! txs, and the new values of every account and record it changed. Nothing of a block
//! is visible before all of it is, and `commit_block` returns only after the WAL is
//! synced (unless the config turns sync off, which gives up durability).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode,
    IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use stele_crypto::{Digest, PublicKey, DIGEST_LEN, PUBLIC_KEY_LEN};
use stele_types::codec::{self, MAX_DECODE_LEN};
use stele_types::state_root::StateOpening;
use stele_types::{
    tx_hash, Account, Block, CommitCertificate, Genesis, Height, Nonce, RecordKey, RecordValue,
    StateChanges, StateError, StateView, Transaction, TxHash, TxLocation, TxResult,
};

use crate::account_cache::{AccountCache, Lookup, ACCOUNT_CACHE_CAP};
use crate::error::StoreError;
use crate::keys::{self, *};

/// Distinguishes evidence recorded within one millisecond.
static EVIDENCE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Decode limits for values read back (a corrupt length is refused, never allocated).
pub(crate) const SMALL_VALUE_LIMIT: usize = 4096;
pub(crate) const CERT_LIMIT: usize = 1 << 20;

/// How the store writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Sync the WAL to disk before `commit_block` and `persist` return (default: on).
    /// Turning it off gives up durability: a crash of the machine may lose committed
    /// blocks and votes already sent, which breaks safety rules 3 and 4. For benchmarks
    /// only.
    pub sync: bool,
    /// At open, read back every entry of every column family, so a checksum error
    /// anywhere is found before the store serves anything, and check that heights,
    /// certificates and the digest index agree (default: on). Costs one sequential read
    /// of the database per start.
    pub verify_on_open: bool,
    /// Whether and where to keep the state at checkpoint heights, to serve to syncing
    /// validators (`snapshot.rs`; default: none kept).
    pub snapshots: Option<SnapshotConfig>,
}

/// Which snapshots a store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// Their directory (one RocksDB of the accounts and records per height inside).
    pub dir: PathBuf,
    /// Keep the state at heights that are a multiple of this (a multiple of the
    /// checkpoint interval, so a checkpoint certificate covers each).
    pub every: u64,
    /// How many snapshots with a stable checkpoint certificate to keep (at least 1).
    /// More gives a slow sync longer before its snapshot is dropped.
    pub kept: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            sync: true,
            verify_on_open: true,
            snapshots: None,
        }
    }
}

/// The state at height 0, as stele-ledger computes it (`genesis_changes` and
/// `genesis_state_digest`); the store writes it into a fresh database and identifies the
/// chain by its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenesisState {
    pub changes: StateChanges,
    pub state_digest: Digest,
}

/// Where a tx's final outcome is proven: the leaf (`leaf_tx`, `leaf_result`) at `index`
/// of the results root at `height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalLeaf {
    pub height: Height,
    pub index: u32,
    /// The tx itself, or for `stale_nonce` the tx that used its nonce.
    pub leaf_tx: TxHash,
    /// The leaf's result, an applied one.
    pub leaf_result: TxResult,
    /// The asked tx's outcome: `leaf_result`, or `stale_nonce`.
    pub outcome: TxResult,
}

/// The latest committed height and the state digest after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub height: Height,
    pub state_digest: Digest,
}

/// A validator's RocksDB database.
pub struct Store {
    pub(crate) db: DB,
    pub(crate) path: PathBuf,
    pub(crate) write_opts: WriteOptions,
    /// Also serialises commits, so the height check and the write are one step.
    pub(crate) tip: Mutex<Tip>,
    /// Serialises `persist`, so a checkpoint's regression check and its write are one
    /// step.
    pub(crate) durable_lock: Mutex<()>,
    /// The state root's buckets (`state_root.rs`).
    pub(crate) buckets: Mutex<crate::state_root::StateBuckets>,
    /// Held while bucket roots are recomputed from the store, so a refresh step and a
    /// checkpoint's root never interleave.
    pub(crate) refresh_lock: Mutex<()>,
    /// Wakes the background thread after a commit.
    pub(crate) wake: Arc<crate::state_root::Wake>,
    /// The snapshot the background thread is still to keep, with its tree; the next
    /// commit waits until its state is captured (`state_root.rs`).
    pub(crate) pending_snapshot: Mutex<Option<crate::state_root::PendingSnapshot>>,
    pub(crate) snapshot_kept: std::sync::Condvar,
    /// Whether the background thread runs: without it, snapshots are kept inline.
    pub(crate) background: std::sync::atomic::AtomicBool,
    /// Snapshot heights passed over because the one before was still being written.
    pub(crate) snapshots_skipped: std::sync::atomic::AtomicU64,
    /// How long writing the snapshots took.
    pub(crate) snapshot_writes: Mutex<crate::snapshot::SnapshotWrites>,
    /// The snapshots kept to serve.
    pub(crate) snapshots: Mutex<crate::snapshot::Snapshots>,
    /// Accounts read recently, updated by every write (`account_cache.rs`).
    pub(crate) accounts: AccountCache,
    /// The genesis's checkpoint interval: state roots are computed at its multiples.
    pub(crate) checkpoint_interval: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("tip", &*self.lock_tip())
            .finish_non_exhaustive()
    }
}

/// The encoding of what the store holds. A database written in another format is
/// refused at open with an error that says so, rather than read as damaged.
/// - 1: until 1218815, when a tx carried its chain id (no marker was written then).
/// - 2: a tx without its chain id.
pub const STORE_FORMAT: u32 = 2;

/// Most table files RocksDB keeps open (its default is unlimited).
pub const MAX_OPEN_FILES: i32 = 512;

pub(crate) fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // Checks at open and on reads; a corrupt file is an error, never silently skipped.
    o.set_paranoid_checks(true);
    // A bounded share of the process's descriptors: the rest serve HTTP and QUIC, and a
    // flood of connections must not leave RocksDB unable to open a table file.
    o.set_max_open_files(MAX_OPEN_FILES);
    // A torn last WAL record (the write a crash interrupted, never acknowledged) is
    // dropped; corruption anywhere before it is an error. The default, point-in-time
    // recovery, would silently stop at the first bad record and open a shorter chain.
    o.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    // All families flush together, so after a crash no family's SSTs run ahead of
    // another's: every block's batch is either wholly in SSTs or replayed from the WAL.
    o.set_atomic_flush(true);
    o.set_compression_type(DBCompressionType::Lz4);
    // RocksDB's own log of flushes and compactions (`LOG`) grows without end by default:
    // the pruning soak found 14.5 MB of it in a 24 MB store after 17,000 blocks, most of
    // the disk a pruned validator uses. Rolled at 1 MiB (about 1,000 blocks' worth),
    // four old files kept: at most 5 MiB.
    o.set_max_log_file_size(1 << 20);
    o.set_keep_log_file_num(4);
    o
}

fn cf_options(name: &str) -> Options {
    let mut o = db_options();
    // Point lookups that mostly miss (is this tx applied? does this key have an
    // account?) are answered by the bloom filter without reading a data block.
    if matches!(
        name,
        TX_INDEX | NONCE_INDEX | ACCOUNTS | BLOCK_INDEX | RECORDS
    ) {
        let mut t = BlockBasedOptions::default();
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
    }
    o
}

/// Opens (or creates) a RocksDB with the column families `families` and the store's
/// options: the store's own database (all of them), or a snapshot's while it is written.
pub(crate) fn open_rocks(
    path: &Path,
    options: &Options,
    families: &[&str],
) -> Result<DB, rocksdb::Error> {
    let descriptors = families
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
    DB::open_cf_descriptors(options, path, descriptors)
}

impl Store {
    /// Opens (or creates) the database in `path` for `genesis`.
    ///
    /// A fresh database gets the genesis state in one synced write. An existing one must
    /// belong to the same genesis, and its last block, that block's certificate, its
    /// digest index entry and its state digest must agree (with
    /// [`StoreConfig::verify_on_open`], every entry is read and checked). Anything else
    /// is an error naming the problem; the store never opens a damaged database as a
    /// shorter chain.
    pub fn open(
        path: &Path,
        genesis: &Genesis,
        initial: &GenesisState,
        config: &StoreConfig,
    ) -> Result<Store, StoreError> {
        check_genesis_state(genesis, initial)?;
        let db = open_rocks(path, &db_options(), &COLUMN_FAMILIES).map_err(|source| {
            let op = if source.kind() == rocksdb::ErrorKind::Corruption {
                "open the database (a WAL or SST file is damaged; a validator restarts from an \
                 empty data directory with --recover and fetches its chain from its peers)"
            } else {
                "open the database"
            };
            StoreError::Rocks {
                op: op.into(),
                path: path.to_owned(),
                source,
            }
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync);
        let mut store = Store {
            db,
            path: path.to_owned(),
            write_opts,
            tip: Mutex::new(Tip {
                height: Height(0),
                state_digest: initial.state_digest,
            }),
            durable_lock: Mutex::new(()),
            buckets: Mutex::new(Default::default()),
            refresh_lock: Mutex::new(()),
            wake: Arc::default(),
            pending_snapshot: Mutex::new(None),
            snapshot_kept: std::sync::Condvar::new(),
            background: Default::default(),
            snapshots_skipped: Default::default(),
            snapshot_writes: Default::default(),
            snapshots: Mutex::new(Default::default()),
            accounts: AccountCache::new(ACCOUNT_CACHE_CAP),
            checkpoint_interval: genesis.params.checkpoint_interval,
        };
        let tip = match store.get_block_entry(Height(0))? {
            None => {
                store.initialise(genesis, initial)?;
                Tip {
                    height: Height(0),
                    state_digest: initial.state_digest,
                }
            }
            Some((found, _)) if found != initial.state_digest => {
                return Err(StoreError::WrongGenesis {
                    path: path.to_owned(),
                    expected: initial.state_digest,
                    found,
                })
            }
            Some(_) => {
                store.check_format()?;
                store.check_tip()?
            }
        };
        if config.verify_on_open {
            store.verify_all(tip)?;
        }
        store.load_buckets()?;
        if let Some(c) = &config.snapshots {
            store.open_snapshots(c, tip.height)?;
        }
        *store.tip.get_mut().unwrap_or_else(|e| e.into_inner()) = tip;
        debug_assert_eq!(store.last_state_unchecked(), (tip.height, tip.state_digest));
        Ok(store)
    }

    /// Refuses a database written in another [`STORE_FORMAT`].
    fn check_format(&self) -> Result<(), StoreError> {
        let found = match self.get_raw(META, FORMAT_KEY)? {
            None => None,
            Some(v) => Some(
                <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| {
                        self.corrupt(META, FORMAT_KEY, "the format is not four bytes".into())
                    })?,
            ),
        };
        if found == Some(STORE_FORMAT) {
            return Ok(());
        }
        Err(StoreError::Format {
            path: self.path.clone(),
            found: found.unwrap_or(1),
            expected: STORE_FORMAT,
        })
    }

    /// Writes the genesis entry and state into an empty database, synced.
    fn initialise(&self, genesis: &Genesis, initial: &GenesisState) -> Result<(), StoreError> {
        for name in COLUMN_FAMILIES {
            if let Some(item) = self
                .db
                .iterator_cf(self.cf(name), IteratorMode::Start)
                .next()
            {
                let (key, _) = item.map_err(|e| self.rocks("scan", name, e))?;
                return Err(StoreError::Inconsistent {
                    path: self.path.clone(),
                    problem: format!(
                        "no genesis entry at height 0 in `blocks`, yet `{name}` holds key {}",
                        keys::show(&key)
                    ),
                });
            }
        }
        let genesis_block = Block::new(Height(0), genesis.genesis_time_ms, Vec::new());
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(BLOCKS),
            height_key(Height(0)),
            codec::encode(&(initial.state_digest, &genesis_block)),
        );
        self.put_changes(&mut batch, &initial.changes);
        batch.put_cf(self.cf(META), FORMAT_KEY, STORE_FORMAT.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| self.rocks("write the genesis state", BLOCKS, e))
    }

    /// Commits `block` at the next height: the block with `state_digest`, its
    /// certificate, the tx and nonce index entries of its applied txs (write-once) and
    /// `changes`, in one synced write. Returns only once it is durable.
    pub fn commit_block(
        &self,
        block: &Block,
        certificate: &CommitCertificate,
        results: &[TxResult],
        changes: &StateChanges,
        state_digest: Digest,
        opening: Option<&StateOpening>,
    ) -> Result<(), StoreError> {
        let mut tip = self.lock_tip();
        // The snapshot of the height below must hold exactly its state.
        self.wait_for_snapshot();
        let height = block.height();
        if height != tip.height.next() || tip.height.0 == u64::MAX {
            return Err(StoreError::OutOfOrder {
                expected: tip.height.next(),
                found: height,
            });
        }
        let block_digest = block.digest();
        if certificate.height != height || certificate.digest != block_digest {
            return Err(StoreError::CertificateMismatch {
                cert_height: certificate.height,
                cert_digest: certificate.digest,
                block_height: height,
                block_digest,
            });
        }
        if results.len() != block.txs.len() {
            return Err(StoreError::ResultCount {
                height,
                txs: block.txs.len(),
                results: results.len(),
            });
        }
        debug_assert!(
            block.matches(height, &certificate.digest),
            "the node commits only bodies that match their certificate"
        );

        let mut batch = WriteBatch::default();
        let key = height_key(height);
        batch.put_cf(self.cf(BLOCKS), key, codec::encode(&(state_digest, block)));
        batch.put_cf(self.cf(BLOCK_INDEX), block_digest.as_bytes(), key);
        batch.put_cf(self.cf(CERTS), key, codec::encode(certificate));
        batch.put_cf(self.cf(RESULTS), key, codec::encode(&results));
        if let Some(o) = opening {
            if o.height != height || o.digest() != state_digest {
                return Err(StoreError::Inconsistent {
                    path: self.path.clone(),
                    problem: format!(
                        "the opening given for height {height} is for height {} and hashes to {}, \
                         not to the state digest {state_digest}",
                        o.height,
                        o.digest()
                    ),
                });
            }
            batch.put_cf(self.cf(OPENINGS), key, codec::encode(o));
        }
        self.put_indexes(&mut batch, height, block, results);
        self.put_changes(&mut batch, changes);
        let written = self.db.write_opt(batch, &self.write_opts);
        if let Err(e) = written {
            // Whatever part of the write a failure left behind, nothing cached may
            // contradict it.
            self.accounts.replaced();
            return Err(self.rocks(&format!("commit block {height}"), BLOCKS, e));
        }
        self.accounts.wrote(&changes.accounts);
        *tip = Tip {
            height,
            state_digest,
        };
        self.mark_changed(height, changes);
        if let Some(o) = opening {
            // Still holding the tip, and the next commit waits for a snapshot the
            // background thread takes: no later height commits before the state is kept.
            let tree = self.computed_tree(&o.state_root);
            debug_assert!(
                tree.is_some(),
                "the root execution computed is the last one"
            );
            if let Some(tree) = tree {
                self.snapshot_at(height, tree)?;
            }
        }
        Ok(())
    }

    /// The tx and nonce index entries of a block's applied txs (write-once).
    pub(crate) fn put_indexes(
        &self,
        batch: &mut WriteBatch,
        height: Height,
        block: &Block,
        results: &[TxResult],
    ) {
        let applied: Vec<(usize, &Transaction, &TxResult, TxHash)> = block
            .txs
            .with_hashes()
            .zip(results)
            .enumerate()
            .filter(|(_, (_, r))| r.is_applied())
            .map(|(i, ((tx, hash), r))| (i, tx, r, hash))
            .collect();
        #[cfg(debug_assertions)]
        self.assert_indexes_unwritten(&applied);
        for (index, tx, result, hash) in applied {
            let location = TxLocation {
                height,
                index: u32::try_from(index).unwrap_or(u32::MAX),
                result: *result,
            };
            batch.put_cf(self.cf(TX_INDEX), hash.as_bytes(), codec::encode(&location));
            batch.put_cf(
                self.cf(NONCE_INDEX),
                nonce_key(&tx.sender, tx.nonce),
                hash.as_bytes(),
            );
        }
    }

    /// The tx and nonce indexes are write-once: no tx a block applies is in either yet.
    /// One batched read of each index per block: two point reads per tx were 4 % of a
    /// validator's CPU in the closed-loop bench (the build `make testnet` runs).
    #[cfg(debug_assertions)]
    fn assert_indexes_unwritten(&self, applied: &[(usize, &Transaction, &TxResult, TxHash)]) {
        let hashes = applied.iter().map(|(_, _, _, h)| h.as_bytes());
        let found = self
            .db
            .batched_multi_get_cf(self.cf(TX_INDEX), hashes, false);
        for ((_, _, _, hash), r) in applied.iter().zip(found) {
            assert!(
                matches!(r, Ok(None)),
                "tx {hash} applied twice: the tx index is write-once"
            );
        }
        let keys: Vec<[u8; PUBLIC_KEY_LEN + 8]> = applied
            .iter()
            .map(|(_, tx, _, _)| nonce_key(&tx.sender, tx.nonce))
            .collect();
        let found = self
            .db
            .batched_multi_get_cf(self.cf(NONCE_INDEX), &keys, false);
        for ((_, tx, _, _), r) in applied.iter().zip(found) {
            assert!(
                matches!(r, Ok(None)),
                "nonce {} of {} used twice: the nonce index is write-once",
                tx.nonce,
                tx.sender
            );
        }
    }

    fn put_changes(&self, batch: &mut WriteBatch, changes: &StateChanges) {
        for (key, account) in &changes.accounts {
            batch.put_cf(self.cf(ACCOUNTS), key.as_bytes(), codec::encode(account));
        }
        for ((owner, key), value) in &changes.records {
            batch.put_cf(
                self.cf(RECORDS),
                record_key(owner, key),
                codec::encode(value),
            );
        }
    }

    /// Records Byzantine evidence (a description of the signed messages that prove it),
    /// keyed by the wall-clock time it was seen and a counter, synced like consensus
    /// state. The evidence family is append-only; operators read it with
    /// [`Store::evidence`].
    pub fn record_evidence(&self, description: &str) -> Result<(), StoreError> {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let seq = EVIDENCE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut key = unix_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let bytes = description.as_bytes();
        let value = &bytes[..bytes.len().min(SMALL_VALUE_LIMIT)];
        self.db
            .put_cf_opt(self.cf(EVIDENCE), key, value, &self.write_opts)
            .map_err(|e| self.rocks("record evidence", EVIDENCE, e))
    }

    /// Every recorded piece of evidence, oldest first: (unix ms, description).
    pub fn evidence(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(EVIDENCE), IteratorMode::Start) {
            let (key, value) = item.map_err(|e| self.rocks("scan", EVIDENCE, e))?;
            let ms = key
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            out.push((ms, String::from_utf8_lossy(&value).into_owned()));
        }
        Ok(out)
    }

    /// Forces every memtable into SST files (tests, and an orderly shutdown that wants
    /// a short WAL replay next time). Committed data is durable without it.
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&ColumnFamily> = COLUMN_FAMILIES.iter().map(|n| self.cf(n)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| self.rocks("flush", BLOCKS, e))
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // ---- reads ----

    /// The latest committed height (0 before the first block).
    pub fn latest_height(&self) -> Height {
        self.lock_tip().height
    }

    /// The latest committed height and the state digest after it.
    pub fn tip(&self) -> (Height, Digest) {
        self.last_state_unchecked()
    }

    /// The block at `height` (`None` for height 0, which is genesis, not a block).
    pub fn block(&self, height: Height) -> Result<Option<Block>, StoreError> {
        if height == Height(0) {
            return Ok(None);
        }
        Ok(self.get_block_entry(height)?.map(|(_, b)| b))
    }

    /// The state digest after `height` (height 0: the genesis state digest).
    pub fn state_digest(&self, height: Height) -> Result<Option<Digest>, StoreError> {
        Ok(self.get_block_entry(height)?.map(|(d, _)| d))
    }

    /// The block with digest `digest`, and its height.
    pub fn block_by_digest(&self, digest: &Digest) -> Result<Option<(Height, Block)>, StoreError> {
        let Some(raw) = self.get_raw(BLOCK_INDEX, digest.as_bytes())? else {
            return Ok(None);
        };
        let height = parse_height(&raw).ok_or_else(|| {
            self.corrupt(
                BLOCK_INDEX,
                digest.as_bytes(),
                format!("expected an 8-byte height, found {} bytes", raw.len()),
            )
        })?;
        match self.block(height)? {
            Some(b) if b.digest() == *digest => Ok(Some((height, b))),
            Some(b) => Err(self.corrupt(
                BLOCK_INDEX,
                digest.as_bytes(),
                format!(
                    "names height {height}, whose block has digest {}",
                    b.digest()
                ),
            )),
            None => Err(self.corrupt(
                BLOCK_INDEX,
                digest.as_bytes(),
                format!("names height {height}, which holds no block"),
            )),
        }
    }

    /// The commit certificate of `height`.
    pub fn certificate(&self, height: Height) -> Result<Option<CommitCertificate>, StoreError> {
        let key = height_key(height);
        let cert: Option<CommitCertificate> = self.get_decoded(CERTS, &key, CERT_LIMIT)?;
        match cert {
            Some(c) if c.height != height => Err(self.corrupt(
                CERTS,
                &key,
                format!("certificate is for height {}", c.height),
            )),
            other => Ok(other),
        }
    }

    /// The applied tx `hash`, with where it was applied and its result.
    pub fn tx(&self, hash: &TxHash) -> Result<Option<(Transaction, TxLocation)>, StoreError> {
        let Some(location) = self.tx_location_checked(hash)? else {
            return Ok(None);
        };
        let block = self.block(location.height)?.ok_or_else(|| {
            self.corrupt(
                TX_INDEX,
                hash.as_bytes(),
                format!("names height {}, which holds no block", location.height),
            )
        })?;
        let tx = block.txs.get(location.index as usize).ok_or_else(|| {
            self.corrupt(
                TX_INDEX,
                hash.as_bytes(),
                format!(
                    "names index {} of height {}, which has {} txs",
                    location.index,
                    location.height,
                    block.txs.len()
                ),
            )
        })?;
        if tx_hash(tx) != *hash {
            return Err(self.corrupt(
                TX_INDEX,
                hash.as_bytes(),
                format!(
                    "names index {} of height {}, which holds another tx",
                    location.index, location.height
                ),
            ));
        }
        Ok(Some((tx.clone(), location)))
    }

    /// The account of `key`.
    pub fn account_of(&self, key: &PublicKey) -> Result<Option<Account>, StoreError> {
        let epoch = match self.accounts.get(key) {
            Lookup::Hit(a) => return Ok(a),
            Lookup::Miss(epoch) => epoch,
        };
        let account = self.get_decoded(ACCOUNTS, key.as_bytes(), SMALL_VALUE_LIMIT)?;
        self.accounts.fill(key, account, epoch);
        Ok(account)
    }

    /// The record `key` of `owner`.
    pub fn record_of(
        &self,
        owner: &PublicKey,
        key: &RecordKey,
    ) -> Result<Option<RecordValue>, StoreError> {
        self.get_decoded(RECORDS, &record_key(owner, key), SMALL_VALUE_LIMIT)
    }

    /// Where the applied tx `hash` is.
    pub fn tx_location_checked(&self, hash: &TxHash) -> Result<Option<TxLocation>, StoreError> {
        self.get_decoded(TX_INDEX, hash.as_bytes(), SMALL_VALUE_LIMIT)
    }

    /// The applied tx that used `nonce` of `sender`.
    pub fn nonce_tx_checked(
        &self,
        sender: &PublicKey,
        nonce: Nonce,
    ) -> Result<Option<TxHash>, StoreError> {
        let key = nonce_key(sender, nonce);
        let Some(raw) = self.get_raw(NONCE_INDEX, &key)? else {
            return Ok(None);
        };
        let bytes: [u8; DIGEST_LEN] = raw.as_slice().try_into().map_err(|_| {
            self.corrupt(
                NONCE_INDEX,
                &key,
                format!(
                    "expected a {DIGEST_LEN}-byte tx hash, found {} bytes",
                    raw.len()
                ),
            )
        })?;
        Ok(Some(Digest(bytes)))
    }

    /// Where the final outcome of `tx` is proven: its own leaf if it was applied, or
    /// the leaf of the tx that used its nonce (`stale_nonce`). `None` while it has no
    /// final outcome (never included, or only as `nonce_gap` or `duplicate`).
    pub fn final_leaf(&self, tx: &Transaction) -> Result<Option<FinalLeaf>, StoreError> {
        self.final_leaf_of(&tx_hash(tx), &tx.sender, tx.nonce)
    }

    /// [`Store::final_leaf`] by the tx's hash, sender and nonce: what a waiter keeps in
    /// place of the tx's body.
    pub fn final_leaf_of(
        &self,
        hash: &TxHash,
        sender: &PublicKey,
        nonce: Nonce,
    ) -> Result<Option<FinalLeaf>, StoreError> {
        let hash = *hash;
        let (leaf_tx, location) = if let Some(l) = self.tx_location_checked(&hash)? {
            (hash, l)
        } else if let Some(other) = self.nonce_tx_checked(sender, nonce)? {
            // When `other == hash` its block committed between the two reads (one batch
            // writes both indexes, but these are two reads): the tx index has it now.
            let key = nonce_key(sender, nonce);
            let l = self.tx_location_checked(&other)?.ok_or_else(|| {
                self.corrupt(
                    NONCE_INDEX,
                    &key,
                    format!("names tx {other}, which is not in the tx index"),
                )
            })?;
            (other, l)
        } else {
            return Ok(None);
        };
        debug_assert!(location.result.is_applied());
        Ok(Some(FinalLeaf {
            height: location.height,
            index: location.index,
            leaf_tx,
            leaf_result: location.result,
            outcome: if leaf_tx == hash {
                location.result
            } else {
                TxResult::StaleNonce
            },
        }))
    }

    /// The opening of the state digest at checkpoint height `height` (`None` elsewhere).
    pub fn state_opening(&self, height: Height) -> Result<Option<StateOpening>, StoreError> {
        self.get_decoded(OPENINGS, &height_key(height), SMALL_VALUE_LIMIT)
    }

    /// Every tx's result at `height`, in block order (`None` above the tip and at 0).
    pub fn results(&self, height: Height) -> Result<Option<Vec<TxResult>>, StoreError> {
        self.get_decoded(RESULTS, &height_key(height), MAX_DECODE_LEN)
    }

    // ---- internals shared with durable.rs and verify.rs ----

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Every family in COLUMN_FAMILIES is created by `open`, so a missing one is a
        // bug here, not a property of the data on disk.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} is opened with the database"))
    }

    pub(crate) fn lock_tip(&self) -> MutexGuard<'_, Tip> {
        // A panic while holding the lock cannot leave the tip half-updated (it is
        // replaced whole after a successful write), so a poisoned lock is still right.
        self.tip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_state_unchecked(&self) -> (Height, Digest) {
        let t = self.lock_tip();
        (t.height, t.state_digest)
    }

    pub(crate) fn rocks(&self, op: &str, cf: &str, source: rocksdb::Error) -> StoreError {
        StoreError::Rocks {
            op: format!("{op} (column family `{cf}`)"),
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn corrupt(&self, cf: &'static str, key: &[u8], problem: String) -> StoreError {
        StoreError::Corrupt {
            cf,
            key: keys::show(key),
            path: self.path.clone(),
            problem,
        }
    }

    pub(crate) fn get_raw(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(cf), key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.rocks(&format!("read key {}", keys::show(key)), cf, e))
    }

    pub(crate) fn decode_value<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
        value: &[u8],
        limit: usize,
    ) -> Result<T, StoreError> {
        codec::decode(value, limit).map_err(|e| self.corrupt(cf, key, e.to_string()))
    }

    fn get_decoded<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
        limit: usize,
    ) -> Result<Option<T>, StoreError> {
        let Some(pinned) = self
            .db
            .get_pinned_cf(self.cf(cf), key)
            .map_err(|e| self.rocks(&format!("read key {}", keys::show(key)), cf, e))?
        else {
            return Ok(None);
        };
        self.decode_value(cf, key, &pinned, limit).map(Some)
    }

    /// The `blocks` entry at `height`: (state digest after it, block), its header height
    /// checked against the key.
    pub(crate) fn get_block_entry(
        &self,
        height: Height,
    ) -> Result<Option<(Digest, Block)>, StoreError> {
        let key = height_key(height);
        let entry: Option<(Digest, Block)> = self.get_decoded(BLOCKS, &key, MAX_DECODE_LEN)?;
        match entry {
            Some((_, b)) if b.height() != height => Err(self.corrupt(
                BLOCKS,
                &key,
                format!("block header says height {}", b.height()),
            )),
            other => Ok(other),
        }
    }
}

/// The genesis state must be exactly the genesis accounts with nonce 0 and no records.
fn check_genesis_state(genesis: &Genesis, initial: &GenesisState) -> Result<(), StoreError> {
    if !initial.changes.records.is_empty() {
        return Err(StoreError::BadGenesisState(format!(
            "{} records, genesis has none",
            initial.changes.records.len()
        )));
    }
    if initial.changes.accounts.len() != genesis.accounts.len() {
        return Err(StoreError::BadGenesisState(format!(
            "{} accounts, the genesis file lists {}",
            initial.changes.accounts.len(),
            genesis.accounts.len()
        )));
    }
    for a in &genesis.accounts {
        let expected = Account {
            balance: a.balance,
            nonce: Nonce(0),
        };
        let found = initial.changes.accounts.get(&a.key);
        if found != Some(&expected) {
            return Err(StoreError::BadGenesisState(format!(
                "account {} is {found:?}, the genesis file gives {expected:?}",
                a.key
            )));
        }
    }
    Ok(())
}

/// The store as the state the ledger executes over. A read error becomes a
/// `StateError`, which stops execution rather than guess.
impl StateView for Store {
    fn account(&self, key: &PublicKey) -> Result<Option<Account>, StateError> {
        self.account_of(key).map_err(state_error)
    }

    fn record(
        &self,
        owner: &PublicKey,
        key: &RecordKey,
    ) -> Result<Option<RecordValue>, StateError> {
        self.record_of(owner, key).map_err(state_error)
    }

    fn tx_location(&self, hash: &TxHash) -> Result<Option<TxLocation>, StateError> {
        self.tx_location_checked(hash).map_err(state_error)
    }

    fn nonce_tx(&self, sender: &PublicKey, nonce: Nonce) -> Result<Option<TxHash>, StateError> {
        self.nonce_tx_checked(sender, nonce).map_err(state_error)
    }

    fn last_state(&self) -> Result<(Height, Digest), StateError> {
        Ok(self.last_state_unchecked())
    }

    fn state_root(&self, changes: &StateChanges) -> Result<Digest, StateError> {
        self.state_root_after(changes).map_err(state_error)
    }
}

fn state_error(e: StoreError) -> StateError {
    StateError(e.to_string())
}

#[cfg(test)]
mod tests {
    use stele_crypto::PublicKey;

    use super::*;
    use crate::state_root::tests::open_test_store;

    /// A database written before the format was marked (a tx then named its chain), or
    /// in a format this build does not read, is refused with an error that names the
    /// formats and the way out, not read as damaged.
    #[test]
    fn a_database_in_another_format_is_refused_with_an_error_that_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PublicKey([7; 32]);
        drop(
            open_test_store(dir.path(), key)
                .0
                .expect("a fresh store opens"),
        );
        let mut s = open_test_store(dir.path(), key).0.expect("and opens again");
        assert_eq!(
            s.get_raw(META, FORMAT_KEY).expect("reads"),
            Some(STORE_FORMAT.to_be_bytes().to_vec())
        );
        for (marker, found) in [(None, 1), (Some(7u32), 7)] {
            match marker {
                None => s.db.delete_cf(s.cf(META), FORMAT_KEY),
                Some(m) => s.db.put_cf(s.cf(META), FORMAT_KEY, m.to_be_bytes()),
            }
            .expect("writes");
            drop(s);
            let Err(err) = open_test_store(dir.path(), key).0 else {
                panic!("format {found} is refused");
            };
            assert!(
                matches!(err, StoreError::Format { found: f, expected: STORE_FORMAT, .. } if f == found),
                "{err:?}"
            );
            assert!(err.to_string().contains("--recover"), "{err}");
            // Put back, to try the next marker.
            let raw = rocksdb::DB::open_cf(&db_options(), dir.path().join("db"), COLUMN_FAMILIES)
                .expect("raw open");
            raw.put_cf(
                raw.cf_handle(META).expect("meta"),
                FORMAT_KEY,
                STORE_FORMAT.to_be_bytes(),
            )
            .expect("writes");
            drop(raw);
            s = open_test_store(dir.path(), key)
                .0
                .expect("opens once marked again");
        }
    }
}
