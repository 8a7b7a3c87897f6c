//! The state root over the store (issue 24): the tree over the bucket roots is kept in
//! memory, built by one scan at open; a commit marks the buckets it touched, and the root at a
//! checkpoint height rereads only those buckets (two key-range scans each).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;

use stele_crypto::{Digest, PublicKey, PUBLIC_KEY_LEN};
use stele_types::state_root::{self, bucket_of, Bucket};
use stele_types::{Account, RecordKey, RecordValue, StateChanges};

use crate::error::StoreError;
use crate::keys::{ACCOUNTS, RECORDS};
use crate::store::{Store, SMALL_VALUE_LIMIT};

/// The roots of the non-empty buckets with the tree over them, and the buckets changed
/// since they were computed.
#[derive(Debug)]
pub(crate) struct StateBuckets {
    tree: state_root::BucketTree,
    dirty: BTreeSet<u16>,
}

impl Default for StateBuckets {
    fn default() -> Self {
        StateBuckets {
            tree: state_root::BucketTree::new(&BTreeMap::new()),
            dirty: BTreeSet::new(),
        }
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
        *self.lock_buckets() = StateBuckets {
            tree: state_root::BucketTree::new(&roots),
            dirty: BTreeSet::new(),
        };
        Ok(())
    }

    /// Replaces the tree (a snapshot just installed: every bucket's root is in it).
    pub(crate) fn set_tree(&self, tree: state_root::BucketTree) {
        *self.lock_buckets() = StateBuckets {
            tree,
            dirty: BTreeSet::new(),
        };
    }

    /// The tree as of the last committed checkpoint height (right after its commit).
    pub(crate) fn tree_now(&self) -> state_root::BucketTree {
        self.lock_buckets().tree.clone()
    }

    /// Marks the buckets a committed block changed.
    pub(crate) fn mark_changed(&self, changes: &StateChanges) {
        let mut b = self.lock_buckets();
        b.dirty.extend(changes.accounts.keys().map(bucket_of));
        b.dirty
            .extend(changes.records.keys().map(|(o, _)| bucket_of(o)));
    }

    /// The state root with `changes` (a block executed but not yet committed) applied
    /// over the committed state.
    pub fn state_root_after(&self, changes: &StateChanges) -> Result<Digest, StoreError> {
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
        Ok(b.tree.root())
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
