//! Accounts in memory in front of RocksDB (issue 23).
//!
//! Every tx reads its sender's account about four times per validator: the HTTP path's
//! cheap checks, admission, execution and the transfer's balance pair. Each was a
//! RocksDB `get` through the memtable skip list: about 3 % of a loaded validator's CPU
//! in the closed-loop profile. The same few accounts are read again and again, so they
//! are kept, with the answer "no such account" too (a sender without one is refused
//! for the cost of a lookup).
//!
//! The cache never answers anything RocksDB would not answer at the same moment:
//! - a commit writes RocksDB first, then updates the cached accounts it changed;
//! - a snapshot install writes RocksDB first, then empties the cache;
//! - a reader that missed fills the cache only if no write finished while it read
//!   RocksDB (an epoch counts the writes): otherwise a value read before a commit
//!   could be cached after the commit updated it, and stay stale.
//!
//! Bounded: past [`ACCOUNT_CACHE_CAP`] entries it starts over, so a flood of unknown
//! keys costs reads, never memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use stele_crypto::PublicKey;
use stele_types::Account;

/// Most accounts (or known absences) kept: about 100 bytes each.
pub const ACCOUNT_CACHE_CAP: usize = 1 << 18;

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<PublicKey, Option<Account>>,
    /// Writes finished since the store opened.
    epoch: u64,
}

#[derive(Debug)]
pub(crate) struct AccountCache {
    inner: Mutex<Inner>,
    cap: usize,
}

/// What a lookup found: the cached answer, or the epoch a fill must quote.
pub(crate) enum Lookup {
    Hit(Option<Account>),
    Miss(u64),
}

impl AccountCache {
    pub(crate) fn new(cap: usize) -> AccountCache {
        assert!(cap > 0);
        AccountCache {
            inner: Mutex::new(Inner::default()),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement under the lock leaves the map and epoch consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &PublicKey) -> Lookup {
        let c = self.lock();
        match c.map.get(key) {
            Some(a) => Lookup::Hit(*a),
            None => Lookup::Miss(c.epoch),
        }
    }

    /// Keeps `value`, read from RocksDB after [`AccountCache::get`] answered
    /// `Miss(epoch)`, unless a write finished since.
    pub(crate) fn fill(&self, key: &PublicKey, value: Option<Account>, epoch: u64) {
        let mut c = self.lock();
        if c.epoch != epoch {
            return;
        }
        if c.map.len() >= self.cap {
            c.map.clear();
        }
        c.map.insert(*key, value);
    }

    /// After a write of `changed` accounts reached RocksDB.
    pub(crate) fn wrote<'a>(
        &self,
        changed: impl IntoIterator<Item = (&'a PublicKey, &'a Account)>,
    ) {
        let mut c = self.lock();
        c.epoch += 1;
        for (k, a) in changed {
            // Only accounts already kept are updated: a commit does not fill the cache
            // past its bound, and a key not kept is read from RocksDB when asked.
            if let Some(v) = c.map.get_mut(k) {
                *v = Some(*a);
            }
        }
    }

    /// After a write that replaced the accounts wholesale (a snapshot install).
    pub(crate) fn replaced(&self) {
        let mut c = self.lock();
        c.epoch += 1;
        c.map.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use stele_types::{Amount, Nonce};

    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn account(balance: u64, nonce: u64) -> Account {
        Account {
            balance: Amount(balance),
            nonce: Nonce(nonce),
        }
    }

    fn miss(c: &AccountCache, k: &PublicKey) -> u64 {
        match c.get(k) {
            Lookup::Miss(e) => e,
            Lookup::Hit(a) => panic!("expected a miss, found {a:?}"),
        }
    }

    fn hit(c: &AccountCache, k: &PublicKey) -> Option<Account> {
        match c.get(k) {
            Lookup::Hit(a) => a,
            Lookup::Miss(_) => panic!("expected a hit"),
        }
    }

    #[test]
    fn a_value_read_before_a_write_is_not_kept_after_it() {
        let c = AccountCache::new(16);
        let (a, b) = (key(1), key(2));
        // A reader misses and reads the old value from RocksDB; a commit changing the
        // account finishes meanwhile; the old value must not be kept.
        let e = miss(&c, &a);
        c.wrote([(&a, &account(5, 1))]);
        c.fill(&a, Some(account(10, 0)), e);
        let e = miss(&c, &a);
        c.fill(&a, Some(account(5, 1)), e);
        assert_eq!(hit(&c, &a), Some(account(5, 1)));
        // A kept account follows commits, absences included.
        let e = miss(&c, &b);
        c.fill(&b, None, e);
        assert_eq!(hit(&c, &b), None);
        c.wrote([(&a, &account(4, 2)), (&b, &account(1, 0))]);
        assert_eq!(hit(&c, &a), Some(account(4, 2)));
        assert_eq!(hit(&c, &b), Some(account(1, 0)));
        // A commit does not add accounts nobody asked for.
        c.wrote([(&key(3), &account(1, 0))]);
        miss(&c, &key(3));
    }

    #[test]
    fn an_install_empties_it_and_it_stays_bounded() {
        let c = AccountCache::new(4);
        for b in 0..10 {
            let e = miss(&c, &key(b));
            c.fill(&key(b), Some(account(u64::from(b), 0)), e);
            assert!(c.len() <= 4, "{} kept", c.len());
        }
        assert_eq!(hit(&c, &key(9)), Some(account(9, 0)));
        let e = miss(&c, &key(0));
        c.replaced();
        c.fill(&key(0), Some(account(0, 0)), e);
        assert_eq!(
            c.len(),
            0,
            "an install empties it, and a read from before is dropped"
        );
        miss(&c, &key(9));
    }
}
