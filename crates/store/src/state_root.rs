//! The state root over the store (issue 24): the tree over the bucket roots is kept in
//! memory, built by one scan at open; a commit marks the buckets it touched, and the root at a
//! checkpoint height rereads only those buckets (two key-range scans each).
//!
//! Rereading every bucket a checkpoint interval touched held the checkpoint block up for
//! hundreds of milliseconds at a million accounts, and every tx behind it waited. A
//! validator therefore runs [`Store::start_background`]: a thread that rereads the marked
//! buckets as blocks commit, so the checkpoint block rereads only what the last block or
//! two touched; and writes the snapshots kept at checkpoint heights, beside later commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use stele_crypto::{Digest, PublicKey, PUBLIC_KEY_LEN};
use stele_types::state_root::{self, bucket_of, Bucket};
use stele_types::{Account, Height, RecordKey, RecordValue, StateChanges};

use crate::error::StoreError;
use crate::keys::{ACCOUNTS, RECORDS};
use crate::store::{Store, SMALL_VALUE_LIMIT};

/// The roots of the non-empty buckets with the tree over them, and the buckets changed
/// since they were computed.
///
/// Invariant: a bucket not in `dirty` has its committed entries' root in `tree`. A commit
/// marks what it wrote after writing it, and the refresher takes a bucket out of `dirty`
/// before rereading it, so a write it might have missed marks the bucket again.
#[derive(Debug)]
pub(crate) struct StateBuckets {
    tree: state_root::BucketTree,
    dirty: BTreeSet<u16>,
    /// Buckets the background thread has reread (for tests and the bench).
    rereads: u64,
    /// The height of the last commit that marked buckets (read without the tip's lock,
    /// which a commit holds while it waits for the background thread).
    tip: Height,
    /// The tree `state_root_after` last computed and its root: a checkpoint block's
    /// snapshot keeps it (the live tree may have moved on by the time the block commits).
    computed: Option<(Digest, state_root::BucketTree)>,
}

impl Default for StateBuckets {
    fn default() -> Self {
        StateBuckets::new(state_root::BucketTree::new(&BTreeMap::new()))
    }
}

impl StateBuckets {
    fn new(tree: state_root::BucketTree) -> Self {
        StateBuckets {
            tree,
            dirty: BTreeSet::new(),
            rereads: 0,
            tip: Height(0),
            computed: None,
        }
    }
}

/// The tree over the bucket roots.
pub(crate) type Tree = state_root::BucketTree;

/// A snapshot the background thread keeps, from the commit of its height until it is
/// served (or failed).
#[derive(Debug)]
pub(crate) struct PendingSnapshot {
    height: Height,
    /// Taken by the background thread when it starts.
    tree: Option<Tree>,
    /// Its state is fixed (a RocksDB snapshot), so later commits no longer change what
    /// it holds and need not wait for the rest (writing it, registering it).
    captured: bool,
}

/// Most buckets one refresh step rereads while holding the refresh lock: a checkpoint's
/// root waits for at most one step.
const REFRESH_STEP: usize = 256;
/// Within this many blocks below a checkpoint height the background thread rereads the
/// marked buckets after every commit, so the checkpoint block's root rereads only what
/// the last block or two changed. Further below it lets them wait: a bucket a block
/// changes again and again (a busy account) is then reread once, not once per block.
/// Rereading after every block was a tenth of the validators' CPU at 2,000 tx/s from 64
/// accounts in `stele bench` (small blocks, the same buckets each time).
const REFRESH_LEAD: u64 = 8;
/// Marked buckets past which the background thread rereads them wherever the tip is, so
/// the work left for the blocks before a checkpoint stays bounded.
const REFRESH_EAGER: usize = 1024;
/// The longest the background thread sleeps without a commit to wake it.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Wakes the background thread after a commit.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    committed: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    pub(crate) fn notify(&self) {
        *self.committed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cond.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let guard = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let (mut woken, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |c| !*c)
            .unwrap_or_else(|e| e.into_inner());
        *woken = false;
    }
}

/// The buckets `changes` touch, with just their changed entries.
fn changed(changes: &StateChanges) -> BTreeMap<u16, Bucket> {
    state_root::buckets(&changes.accounts, &changes.records)
}

impl Store {
    pub(crate) fn lock_buckets(&self) -> MutexGuard<'_, StateBuckets> {
        // Entries are replaced whole; a panic while holding the lock leaves them right.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Computes every bucket's root from the store (at open).
    pub(crate) fn load_buckets(&self) -> Result<(), StoreError> {
        let mut roots = BTreeMap::new();
        let mut all: BTreeMap<u16, Bucket> = BTreeMap::new();
        self.scan_entries(ACCOUNTS, None, |k, v| {
            let (key, account) = self.account_entry(k, v)?;
            all.entry(bucket_of(&key))
                .or_default()
                .accounts
                .push((key, account));
            Ok(())
        })?;
        self.scan_entries(RECORDS, None, |k, v| {
            let (key, value) = self.record_entry(k, v)?;
            all.entry(bucket_of(&key.0))
                .or_default()
                .records
                .push((key, value));
            Ok(())
        })?;
        for (b, bucket) in all {
            roots.insert(b, bucket.root());
        }
        let _refresh = self.lock_refresh();
        *self.lock_buckets() = StateBuckets::new(state_root::BucketTree::new(&roots));
        Ok(())
    }

    /// Replaces the tree (a snapshot just installed: every bucket's root is in it).
    pub(crate) fn set_tree(&self, tree: state_root::BucketTree) {
        let _refresh = self.lock_refresh();
        *self.lock_buckets() = StateBuckets::new(tree);
    }

    /// The tree `state_root_after` computed, if its root is `root`.
    pub(crate) fn computed_tree(&self, root: &Digest) -> Option<state_root::BucketTree> {
        let mut b = self.lock_buckets();
        b.computed.take().filter(|(r, _)| r == root).map(|(_, t)| t)
    }

    fn lock_refresh(&self) -> MutexGuard<'_, ()> {
        self.refresh_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the buckets the block committed at `height` changed (after its write).
    pub(crate) fn mark_changed(&self, height: Height, changes: &StateChanges) {
        {
            let mut b = self.lock_buckets();
            b.tip = height;
            b.dirty.extend(changes.accounts.keys().map(bucket_of));
            b.dirty
                .extend(changes.records.keys().map(|(o, _)| bucket_of(o)));
        }
        self.wake.notify();
    }

    /// Starts the background thread (see the module doc). It holds the store only while
    /// it works: when the last other handle goes, it ends.
    pub fn start_background(self: &Arc<Self>) -> std::io::Result<()> {
        let store = Arc::downgrade(self);
        let wake = Arc::clone(&self.wake);
        std::thread::Builder::new()
            .name("state-root".into())
            .spawn(move || background(store, wake))?;
        self.background.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn lock_pending(&self) -> MutexGuard<'_, Option<PendingSnapshot>> {
        self.pending_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the snapshot of checkpoint height `h`, just committed: handed to the
    /// background thread when it runs (writing it is a pass over the state, beside the
    /// next blocks), else at once. If the one before is still being written, `h` is
    /// passed over: waiting would hold up every commit for the rest of that pass, and
    /// peers are served the snapshots kept before.
    pub(crate) fn snapshot_at(&self, h: Height, tree: Tree) -> Result<(), StoreError> {
        let due = self.snapshot_every().is_some_and(|e| h.0 % e == 0);
        // The flag is read under the pending lock, which a dying thread takes to clear it.
        let mut pending = self.lock_pending();
        if !due || !self.background.load(Ordering::SeqCst) {
            drop(pending);
            self.keep_snapshot(h, tree);
            return Ok(());
        }
        if let Some(before) = pending.as_ref() {
            let skipped = self.snapshots_skipped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                height = %h,
                writing = %before.height,
                skipped,
                "no snapshot at this height: the one before is still being written \
                 (a larger snapshot_every takes them less often)"
            );
            return Ok(());
        }
        *pending = Some(PendingSnapshot {
            height: h,
            tree: Some(tree),
            captured: false,
        });
        drop(pending);
        self.wake.notify();
        // Not holding the pending lock: `persist` takes it under the durable one.
        let _durable = self.durable_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.store_cert_if_stable(h)
    }

    /// Waits until no snapshot is pending that is not captured yet: until then, a commit
    /// would change what the snapshot holds.
    pub(crate) fn wait_for_snapshot(&self) {
        drop(self.wait_pending(self.lock_pending(), |p| !p.captured));
    }

    /// Waits until no snapshot is pending at all, captured or not (a store about to
    /// replace its state must not have one registered after).
    pub(crate) fn wait_for_no_snapshot(&self) {
        drop(self.wait_pending(self.lock_pending(), |_| true));
    }

    /// Waits, holding `pending`'s lock between wake-ups, while a snapshot is pending
    /// for which `busy` holds.
    fn wait_pending<'a>(
        &'a self,
        pending: MutexGuard<'a, Option<PendingSnapshot>>,
        busy: impl Fn(&PendingSnapshot) -> bool,
    ) -> MutexGuard<'a, Option<PendingSnapshot>> {
        self.snapshot_kept
            .wait_while(pending, |p| p.as_ref().is_some_and(&busy))
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the pending snapshot if it is the one of `h` (failed), waking who waits.
    pub(crate) fn end_pending(&self, h: Height) {
        let mut pending = self.lock_pending();
        if pending.as_ref().is_some_and(|p| p.height == h) {
            *pending = None;
        }
        drop(pending);
        self.snapshot_kept.notify_all();
    }

    /// The height of the snapshot still pending (captured or not), if one is.
    pub(crate) fn pending_snapshot_height(&self) -> Option<Height> {
        self.lock_pending().as_ref().map(|p| p.height)
    }

    /// Keeps the pending snapshot, if any. Commits wait until its state is captured;
    /// writing and registering it goes on beside them.
    fn keep_pending_snapshot(&self) {
        let Some((h, tree)) = self
            .lock_pending()
            .as_mut()
            .and_then(|p| Some((p.height, p.tree.take()?)))
        else {
            return;
        };
        /// Clears the pending snapshot even if keeping it panics: commits wait for it. On
        /// a panic the thread is marked dead under the same lock, so the next snapshot
        /// height's commit keeps its snapshot inline instead of handing it to no one.
        struct Done<'a>(&'a Store);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut pending = self.0.lock_pending();
                if std::thread::panicking() {
                    self.0.background.store(false, Ordering::SeqCst);
                }
                *pending = None;
                drop(pending);
                self.0.snapshot_kept.notify_all();
            }
        }
        let _done = Done(self);
        #[cfg(test)]
        if tests::DIE_AT_NEXT_SNAPSHOT.swap(false, Ordering::SeqCst) {
            panic!("the test kills the background thread while it keeps a snapshot");
        }
        let captured = self.capture_snapshot(h);
        if let Some(p) = self.lock_pending().as_mut() {
            p.captured = true;
        }
        self.snapshot_kept.notify_all();
        if let Some(captured) = captured {
            self.finish_snapshot(h, tree, captured);
        }
    }

    /// Whether the background thread rereads the marked buckets now: near a checkpoint
    /// height, or when many are marked ([`REFRESH_LEAD`], [`REFRESH_EAGER`]).
    fn refresh_due(&self) -> bool {
        if self.checkpoint_interval == 0 {
            // No checkpoint, so no root is ever computed.
            return false;
        }
        let b = self.lock_buckets();
        b.dirty.len() >= REFRESH_EAGER || refresh_due_at(b.tip, self.checkpoint_interval)
    }

    /// Rereads up to [`REFRESH_STEP`] marked buckets; whether marked ones remain.
    pub(crate) fn refresh_step(&self) -> Result<bool, StoreError> {
        let _refresh = self.lock_refresh();
        let todo: Vec<u16> = {
            let mut b = self.lock_buckets();
            let todo: Vec<u16> = b.dirty.iter().take(REFRESH_STEP).copied().collect();
            for bucket in &todo {
                b.dirty.remove(bucket);
            }
            todo
        };
        let mut roots = Vec::with_capacity(todo.len());
        for bucket in &todo {
            match self.read_bucket(*bucket) {
                Ok(entries) => roots.push((*bucket, (!entries.is_empty()).then(|| entries.root()))),
                Err(e) => {
                    // Not reread: marked again, so its stale root is never trusted.
                    self.lock_buckets().dirty.extend(todo.iter().copied());
                    return Err(e);
                }
            }
        }
        let mut b = self.lock_buckets();
        b.rereads += roots.len() as u64;
        for (bucket, root) in roots {
            // Marked again while it was read: a commit may have come after the read.
            if !b.dirty.contains(&bucket) {
                b.tree.set(bucket, root);
            }
        }
        Ok(!b.dirty.is_empty())
    }

    /// The state root with `changes` (a block executed but not yet committed) applied
    /// over the committed state.
    pub fn state_root_after(&self, changes: &StateChanges) -> Result<Digest, StoreError> {
        let _refresh = self.lock_refresh();
        let mut b = self.lock_buckets();
        let pending = changed(changes);
        let todo: BTreeSet<u16> = b.dirty.iter().chain(pending.keys()).copied().collect();
        let mut fresh = BTreeMap::new();
        for bucket in todo {
            let mut entries = self.read_bucket(bucket)?;
            if let Some(c) = pending.get(&bucket) {
                overlay(&mut entries, c);
            }
            fresh.insert(bucket, entries);
        }
        for (bucket, entries) in fresh {
            let root = (!entries.is_empty()).then(|| entries.root());
            b.tree.set(bucket, root);
        }
        // `changes` are not committed yet: their buckets are read again next time, so a
        // block executed but never committed cannot leave a wrong root behind.
        b.dirty = pending.keys().copied().collect();
        let root = b.tree.root();
        b.computed = Some((root, b.tree.clone()));
        Ok(root)
    }

    /// One bucket's committed entries, in key order.
    fn read_bucket(&self, bucket: u16) -> Result<Bucket, StoreError> {
        let mut out = Bucket::default();
        let prefix = bucket.to_be_bytes();
        self.scan_entries(ACCOUNTS, Some(prefix), |k, v| {
            out.accounts.push(self.account_entry(k, v)?);
            Ok(())
        })?;
        self.scan_entries(RECORDS, Some(prefix), |k, v| {
            out.records.push(self.record_entry(k, v)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Every entry of `cf` (whose keys start with an owner's key) in key order, or only
    /// those whose key starts with `prefix`.
    fn scan_entries(
        &self,
        cf: &'static str,
        prefix: Option<[u8; 2]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        match prefix {
            Some(p) => it.seek(p),
            None => it.seek_to_first(),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if prefix.is_some_and(|p| !k.starts_with(&p)) {
                break;
            }
            f(k, v)?;
            it.next();
        }
        it.status()
            .map_err(|e| self.rocks("scan a state bucket", cf, e))
    }

    pub(crate) fn account_entry(
        &self,
        k: &[u8],
        v: &[u8],
    ) -> Result<(PublicKey, Account), StoreError> {
        let key: [u8; PUBLIC_KEY_LEN] = k
            .try_into()
            .map_err(|_| self.corrupt(ACCOUNTS, k, "key is not a public key".into()))?;
        let account: Account = self.decode_value(ACCOUNTS, k, v, SMALL_VALUE_LIMIT)?;
        Ok((PublicKey(key), account))
    }

    pub(crate) fn record_entry(
        &self,
        k: &[u8],
        v: &[u8],
    ) -> Result<((PublicKey, RecordKey), RecordValue), StoreError> {
        let bad = |why: &str| self.corrupt(RECORDS, k, why.into());
        if k.len() <= PUBLIC_KEY_LEN {
            return Err(bad("key is shorter than an owner and a record key"));
        }
        let (owner, key) = k.split_at(PUBLIC_KEY_LEN);
        let owner: [u8; PUBLIC_KEY_LEN] = owner.try_into().map_err(|_| bad("owner"))?;
        let key = RecordKey::new(key.to_vec()).map_err(|_| bad("record key too long"))?;
        let value: RecordValue = self.decode_value(RECORDS, k, v, SMALL_VALUE_LIMIT)?;
        Ok(((PublicKey(owner), key), value))
    }
}

/// The background thread's loop: keep a snapshot handed over, reread marked buckets,
/// sleep until the next commit.
fn background(store: Weak<Store>, wake: Arc<Wake>) {
    /// If the thread dies (a panic), snapshots go back to being kept inline and nothing
    /// is left pending for a commit to wait on.
    struct Exit(Weak<Store>);
    impl Drop for Exit {
        fn drop(&mut self) {
            if let Some(s) = self.0.upgrade() {
                let mut pending = s.lock_pending();
                s.background.store(false, Ordering::SeqCst);
                *pending = None;
                drop(pending);
                s.snapshot_kept.notify_all();
            }
        }
    }
    let _exit = Exit(store.clone());
    loop {
        let Some(s) = store.upgrade() else {
            return;
        };
        s.keep_pending_snapshot();
        let more = match if s.refresh_due() {
            s.refresh_step()
        } else {
            Ok(false)
        } {
            Ok(more) => more,
            Err(e) => {
                // The checkpoint's own root rereads what is still marked, and reports it.
                tracing::warn!(error = %e, "rereading state buckets in the background failed");
                false
            }
        };
        drop(s);
        if !more {
            wake.wait(IDLE_WAIT);
        }
    }
}

/// Whether a tip at `tip` is within [`REFRESH_LEAD`] blocks below the next multiple of
/// `every` (no state roots at all when it is 0).
fn refresh_due_at(tip: Height, every: u64) -> bool {
    if every == 0 {
        return false;
    }
    let to_next = every - tip.0 % every;
    to_next <= REFRESH_LEAD
}

/// `entries` (committed, in key order) with `changes` of the same bucket applied.
fn overlay(entries: &mut Bucket, changes: &Bucket) {
    let mut accounts: BTreeMap<PublicKey, Account> = entries.accounts.drain(..).collect();
    accounts.extend(changes.accounts.iter().copied());
    entries.accounts = accounts.into_iter().collect();
    let mut records: BTreeMap<(PublicKey, RecordKey), RecordValue> =
        entries.records.drain(..).collect();
    records.extend(changes.records.iter().cloned());
    entries.records = records.into_iter().collect();
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    use stele_crypto::ChainId;
    use stele_types::{Block, CommitCertificate, Genesis, GenesisAccount, Height, ViewNumber};

    use super::*;
    use crate::{GenesisState, SnapshotConfig, StoreConfig};

    #[test]
    fn the_background_rereads_only_near_a_checkpoint_or_when_many_buckets_wait() {
        // Interval 128: due from 120 up to 127, and at none of the multiples.
        let due: Vec<u64> = (0..300)
            .filter(|&h| refresh_due_at(Height(h), 128))
            .collect();
        let want: Vec<u64> = (120..128).chain(248..256).collect();
        assert_eq!(due, want);
        assert!(!refresh_due_at(Height(5), 0));
        assert!(
            (0..20).all(|h| refresh_due_at(Height(h), 4)),
            "interval below the lead"
        );
    }

    /// One account changed in every block, far below a checkpoint: its bucket waits,
    /// and is reread once when the checkpoint comes near (before, once per block). The
    /// checkpoint's root is the one computed from the whole store.
    #[test]
    fn a_bucket_changed_in_every_block_is_reread_once_before_the_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PublicKey([7; 32]);
        let mut g = Genesis {
            chain_id: ChainId::new("t").expect("chain id"),
            genesis_time_ms: 0,
            validators: vec![],
            accounts: vec![GenesisAccount {
                key,
                balance: stele_types::Amount(1_000),
            }],
            params: Default::default(),
        };
        g.params.checkpoint_interval = 64;
        let initial = GenesisState {
            changes: stele_ledger::genesis_changes(&g),
            state_digest: stele_ledger::genesis_state_digest(&g),
        };
        let config = StoreConfig {
            sync: false,
            ..StoreConfig::default()
        };
        let s =
            Arc::new(Store::open(&dir.path().join("db"), &g, &initial, &config).expect("opens"));
        s.start_background().expect("starts");
        let commit = |h: u64| {
            let b = Block::new(Height(h), h, vec![]);
            let mut changes = StateChanges::default();
            changes.accounts.insert(
                key,
                Account {
                    balance: stele_types::Amount(h),
                    nonce: stele_types::Nonce(h),
                },
            );
            let cert = CommitCertificate {
                view: ViewNumber(0),
                height: b.height(),
                digest: b.digest(),
                commits: vec![],
            };
            s.commit_block(&b, &cert, &[], &changes, Digest([h as u8; 32]), None)
                .expect("commits");
        };
        for h in 1..=40 {
            commit(h);
        }
        // Woken by each commit, the thread found nothing due (it sleeps 200 ms at most).
        std::thread::sleep(IDLE_WAIT * 2);
        {
            let b = s.lock_buckets();
            assert_eq!(b.rereads, 0, "rereads far below the checkpoint");
            assert_eq!(b.dirty.len(), 1);
        }
        for h in 41..=57 {
            commit(h);
        }
        // Height 57 is 7 below 64: due.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.lock_buckets().dirty.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rereads = {
            let b = s.lock_buckets();
            assert!(b.dirty.is_empty(), "not reread near the checkpoint");
            b.rereads
        };
        // After block 56, 8 below 64, and maybe after 57 again.
        assert!((1..=2).contains(&rereads), "{rereads} rereads");
        let root = s.state_root_after(&StateChanges::default()).expect("root");
        s.load_buckets().expect("all buckets from the store");
        assert_eq!(
            s.state_root_after(&StateChanges::default()).expect("root"),
            root
        );
    }

    /// Snapshots taken under this directory stop once their state is captured, before
    /// it is written, until it is cleared (per directory: tests run beside each other).
    static HOLD_AFTER_CAPTURE: std::sync::Mutex<Option<std::path::PathBuf>> =
        std::sync::Mutex::new(None);

    pub(crate) fn hold_after_capture(path: &std::path::Path) {
        let held = |p: &std::path::Path| {
            HOLD_AFTER_CAPTURE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|dir| p.starts_with(dir))
        };
        while held(path) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub(crate) fn die_in_register(path: &std::path::Path) {
        let mut die = DIE_IN_REGISTER.lock().unwrap_or_else(|e| e.into_inner());
        if die.as_ref().is_some_and(|dir| path.starts_with(dir)) {
            *die = None;
            drop(die);
            panic!("the test kills the background thread while it registers a snapshot");
        }
    }

    /// The next snapshot written under this directory fails once its files are written.
    static FAIL_WRITE: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);

    pub(crate) fn fail_write(path: &std::path::Path) -> bool {
        let mut fail = FAIL_WRITE.lock().unwrap_or_else(|e| e.into_inner());
        let now = fail.as_ref().is_some_and(|dir| path.starts_with(dir));
        if now {
            *fail = None;
        }
        now
    }

    /// The background thread panics registering the next snapshot under this directory.
    static DIE_IN_REGISTER: std::sync::Mutex<Option<std::path::PathBuf>> =
        std::sync::Mutex::new(None);

    /// Opens a store in `dir/db` whose genesis funds `key`, with checkpoints every 2
    /// heights and a snapshot at each (in `dir/snapshots`).
    pub(crate) fn open_test_store(
        dir: &std::path::Path,
        key: PublicKey,
    ) -> (Result<Store, StoreError>, Genesis) {
        let mut g = Genesis {
            chain_id: ChainId::new("t").expect("chain id"),
            genesis_time_ms: 0,
            validators: vec![],
            accounts: vec![GenesisAccount {
                key,
                balance: stele_types::Amount(1_000),
            }],
            params: Default::default(),
        };
        g.params.checkpoint_interval = 2;
        let initial = GenesisState {
            changes: stele_ledger::genesis_changes(&g),
            state_digest: stele_ledger::genesis_state_digest(&g),
        };
        let config = StoreConfig {
            sync: false,
            snapshots: Some(SnapshotConfig {
                dir: dir.join("snapshots"),
                every: 2,
                kept: 2,
            }),
            ..StoreConfig::default()
        };
        (Store::open(&dir.join("db"), &g, &initial, &config), g)
    }

    /// Polls `done` until it holds, failing the test after 30 s.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "not within 30 s: {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn store_with_snapshots(dir: &std::path::Path, key: PublicKey) -> (Arc<Store>, Genesis) {
        let (s, g) = open_test_store(dir, key);
        (Arc::new(s.expect("opens")), g)
    }

    fn commit(store: &Store, g: &Genesis, b: &Block) {
        let e = stele_ledger::execute(b, store, &g.params).expect("executes");
        let cert = CommitCertificate {
            view: ViewNumber(0),
            height: b.height(),
            digest: b.digest(),
            commits: vec![],
        };
        store
            .commit_block(
                b,
                &cert,
                &e.results,
                &e.changes,
                e.state_digest,
                e.opening.as_ref(),
            )
            .expect("commits");
    }

    /// The next block commits once the snapshot's state is captured, while the
    /// background thread still writes and registers it; the snapshot holds the state of
    /// its own height all the same.
    #[test]
    fn commits_go_on_once_a_snapshot_is_captured_and_it_keeps_its_own_height() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PublicKey([7; 32]);
        let (s, g) = store_with_snapshots(dir.path(), key);
        s.start_background().expect("starts");
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = Some(dir.path().join("snapshots"));
        for h in 1..=2 {
            commit(&s, &g, &Block::new(Height(h), h, vec![]));
        }
        // Block 3 changes the account: its nonce and a record (signatures are not
        // execution's business).
        let put = stele_crypto::Signed {
            value: stele_types::TxBody {
                sender: key,
                nonce: stele_types::Nonce(0),
                op: stele_types::Op::Put {
                    key: stele_types::tx::RecordKey::new(b"k".to_vec()).expect("key"),
                    value: stele_types::tx::RecordValue::new(b"v".to_vec()).expect("value"),
                },
            },
            signature: stele_crypto::Signature([0; 64]),
        };
        let (done, finished) = std::sync::mpsc::channel();
        let (store, genesis) = (Arc::clone(&s), g.clone());
        std::thread::spawn(move || {
            commit(&store, &genesis, &Block::new(Height(3), 3, vec![put]));
            let _ = done.send(());
        });
        let committed = finished.recv_timeout(Duration::from_secs(30));
        assert!(s.keeps_snapshot(Height(2)), "still being kept counts");
        // The tip is past it, and no snapshot is kept yet: pruning stops at its block.
        assert_eq!(s.prune_below(Height(3)).expect("prunes"), Height(2));
        assert!(s.block(Height(2)).expect("reads").is_some());
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = None;
        committed.expect("block 3 commits while the snapshot of 2 is still to be written");
        wait_until("the snapshot of 2 is registered", || {
            s.snapshot_heights().contains(&Height(2))
        });
        let chunk = match s
            .snapshot_chunk(
                Height(2),
                stele_types::snapshot::ChunkRange::new(0, 16).expect("all"),
            )
            .expect("reads")
        {
            crate::ChunkAnswer::Chunk(c) => c,
            other => panic!("the snapshot of 2 is kept: {other:?}"),
        };
        let (accounts, records): (Vec<_>, Vec<_>) = chunk
            .buckets
            .iter()
            .map(|(_, b)| (b.accounts.clone(), b.records.clone()))
            .unzip();
        let accounts: Vec<_> = accounts.into_iter().flatten().collect();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].0, key);
        assert_eq!(
            accounts[0].1.nonce,
            stele_types::Nonce(0),
            "height 2's nonce"
        );
        assert!(records.iter().all(Vec::is_empty), "no record at height 2");
        let live = s.account_of(&key).expect("reads").expect("exists");
        assert_eq!(live.nonce, stele_types::Nonce(1), "block 3 committed");
    }

    /// While snapshot 2 is still being written and registered, the next snapshot height
    /// (4) commits without waiting for it and is passed over; when the thread then dies
    /// registering 2, nothing is left pending, and later snapshots are kept inline.
    #[test]
    fn a_snapshot_height_reached_while_one_is_written_is_passed_over_and_nothing_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, g) = store_with_snapshots(dir.path(), PublicKey([7; 32]));
        s.start_background().expect("starts");
        let snapshots = dir.path().join("snapshots");
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = Some(snapshots.clone());
        *DIE_IN_REGISTER.lock().expect("die") = Some(snapshots);
        let (done, finished) = std::sync::mpsc::channel();
        let (go, gone) = std::sync::mpsc::channel::<()>();
        let (store, genesis) = (Arc::clone(&s), g.clone());
        std::thread::spawn(move || {
            for h in 1..=6 {
                if h == 5 && gone.recv().is_err() {
                    return;
                }
                commit(&store, &genesis, &Block::new(Height(h), h, vec![]));
                let _ = done.send(h);
            }
        });
        for want in 1..=4 {
            let h = finished
                .recv_timeout(Duration::from_secs(30))
                .expect("commits while snapshot 2 is held");
            assert_eq!(h, want);
        }
        assert_eq!(s.pending_snapshot_height(), Some(Height(2)));
        assert_eq!(s.snapshots_skipped(), 1, "height 4 passed over");
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = None;
        wait_until("the thread dies registering 2", || {
            !s.background.load(Ordering::SeqCst)
        });
        assert_eq!(s.pending_snapshot_height(), None, "nothing left pending");
        go.send(()).expect("the committer waits");
        for want in 5..=6 {
            let h = finished
                .recv_timeout(Duration::from_secs(30))
                .expect("commits go on after the thread died");
            assert_eq!(h, want);
        }
        assert_eq!(s.snapshot_heights(), vec![Height(6)], "6 kept inline");
    }

    /// A crash while a snapshot is written leaves its directory under another name
    /// than a height's; the next open removes it and keeps the snapshots written whole.
    #[test]
    fn a_snapshot_left_half_written_by_a_crash_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PublicKey([7; 32]);
        {
            let (s, g) = store_with_snapshots(dir.path(), key);
            for h in 1..=3 {
                commit(&s, &g, &Block::new(Height(h), h, vec![]));
            }
        }
        let half = dir.path().join("snapshots").join("4.writing");
        std::fs::create_dir_all(&half).expect("mkdir");
        std::fs::write(half.join("000004.sst"), b"half a table").expect("writes");
        let (s, _) = store_with_snapshots(dir.path(), key);
        assert!(!half.exists(), "the half-written snapshot is gone");
        assert_eq!(s.snapshot_heights(), vec![Height(2)]);
        assert!(matches!(
            s.snapshot_chunk(
                Height(2),
                stele_types::snapshot::ChunkRange::new(0, 16).expect("all")
            )
            .expect("reads"),
            crate::ChunkAnswer::Chunk(_)
        ));
    }

    /// A snapshot whose write fails (a full disk, say) leaves neither its files nor the
    /// certificate `persist` stored for it while it was pending, which pruning would
    /// never remove (it sees only kept snapshots); the chain and the next snapshot go on.
    #[test]
    fn a_snapshot_that_fails_to_write_leaves_no_files_and_no_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, g) = store_with_snapshots(dir.path(), PublicKey([7; 32]));
        s.start_background().expect("starts");
        let snapshots = dir.path().join("snapshots");
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = Some(snapshots.clone());
        *FAIL_WRITE.lock().expect("fail") = Some(snapshots.clone());
        for h in 1..=2 {
            commit(&s, &g, &Block::new(Height(h), h, vec![]));
        }
        let digest = s
            .state_digest(Height(2))
            .expect("reads")
            .expect("committed");
        s.persist_stable_checkpoint(&stele_types::CheckpointCertificate {
            height: Height(2),
            state_digest: digest,
            signatures: vec![],
        })
        .expect("persists");
        let cert = crate::keys::snapshot_cert_key(Height(2));
        assert!(
            s.get_raw(crate::keys::META, &cert)
                .expect("reads")
                .is_some(),
            "stored while pending"
        );
        *HOLD_AFTER_CAPTURE.lock().expect("hold") = None;
        wait_until("the failed snapshot is no longer pending", || {
            s.pending_snapshot_height().is_none()
        });
        assert_eq!(s.snapshot_heights(), Vec::<Height>::new());
        assert_eq!(s.get_raw(crate::keys::META, &cert).expect("reads"), None);
        assert!(!snapshots.join("2").exists());
        assert!(!snapshots.join("2.writing").exists());
        for h in 3..=4 {
            commit(&s, &g, &Block::new(Height(h), h, vec![]));
        }
        s.wait_for_no_snapshot();
        assert_eq!(s.snapshot_heights(), vec![Height(4)]);
    }

    /// The table files of the live store.
    fn live_tables(s: &Store) -> usize {
        s.db.live_files().expect("lists the live files").len()
    }

    /// Keeping a snapshot flushes nothing in the live store: a flush fsyncs a table per
    /// column family (tens of milliseconds), and the next commit of every validator,
    /// all at the same checkpoint height, waited on it (issue 23's p99 at 5,000 tx/s).
    #[test]
    fn keeping_a_snapshot_flushes_nothing_in_the_live_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = PublicKey([7; 32]);
        let (s, g) = store_with_snapshots(dir.path(), key);
        s.start_background().expect("starts");
        let before = live_tables(&s);
        for h in 1..=6 {
            commit(&s, &g, &Block::new(Height(h), h, vec![]));
            // Else the next snapshot height may come while this one is written, and be
            // passed over.
            s.wait_for_no_snapshot();
        }
        assert_eq!(
            s.snapshot_heights(),
            vec![Height(2), Height(4), Height(6)],
            "none certified yet: all kept"
        );
        assert_eq!(live_tables(&s), before, "a snapshot flushed the live store");
        // Each holds its own height's state.
        for h in [2u64, 4, 6] {
            let chunk = match s
                .snapshot_chunk(
                    Height(h),
                    stele_types::snapshot::ChunkRange::new(0, 16).expect("all"),
                )
                .expect("reads")
            {
                crate::ChunkAnswer::Chunk(c) => c,
                other => panic!("the snapshot of {h} is kept: {other:?}"),
            };
            let accounts: Vec<_> = chunk
                .buckets
                .iter()
                .flat_map(|(_, b)| b.accounts.clone())
                .collect();
            assert_eq!(accounts.len(), 1, "height {h}");
        }
    }

    /// Makes the background thread panic at the next snapshot it keeps.
    pub(crate) static DIE_AT_NEXT_SNAPSHOT: AtomicBool = AtomicBool::new(false);

    /// Commits wait for the snapshot the background thread keeps; if that thread dies
    /// keeping one, no commit may wait for good, and later snapshots are kept inline.
    #[test]
    fn a_background_thread_that_dies_leaves_no_commit_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, g) = store_with_snapshots(dir.path(), PublicKey([7; 32]));
        s.start_background().expect("starts");
        DIE_AT_NEXT_SNAPSHOT.store(true, Ordering::SeqCst);
        let (done, finished) = std::sync::mpsc::channel();
        let store = Arc::clone(&s);
        std::thread::spawn(move || {
            for h in 1..=6 {
                commit(&store, &g, &Block::new(Height(h), h, vec![]));
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("six commits within 30 s: none waits for the dead thread's snapshot");
        assert!(
            !s.background.load(Ordering::SeqCst),
            "the thread is known dead"
        );
        assert!(
            s.snapshot_heights().contains(&Height(6)),
            "{:?}",
            s.snapshot_heights()
        );
    }
}
