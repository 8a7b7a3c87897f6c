//! Bounded shared state between the HTTP API, the network path and the engine thread:
//! the verified-tx cache and the waiters for final outcomes.
//!
//! The cache is how each tx is verified once per validator: a tx reaching us by HTTP,
//! relay and inside a block is checked the first time only (its hash covers its
//! signature). It also keeps the bodies of txs that never enter the tx index (the loser
//! of a double spend), so their `stale_nonce` receipt can still be made.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use stele_consensus::KnownTxs;
use stele_crypto::{PublicKey, Verified};
use stele_types::{Nonce, TxBody, TxHash};
use tokio::sync::Notify;

/// Most verified txs remembered.
pub const VERIFIED_CACHE_CAP: usize = 200_000;
/// Most outstanding `?wait=true` waiters; more answer at once without waiting.
pub const MAX_WAITERS: usize = 100_000;

#[derive(Debug, Default)]
struct Fifo {
    map: HashMap<TxHash, Verified<TxBody>>,
    order: VecDeque<TxHash>,
}

/// Txs whose signature this validator verified, oldest forgotten first; and the txs
/// it is verifying (or admitting) right now.
///
/// The second set is what makes "each tx verified once" hold under concurrency: a tx
/// reaches a validator by HTTP and by up to n − 1 relays within milliseconds, and with
/// only a done cache every copy that arrived before the first was admitted was checked
/// again (1.2 checks per tx per validator in `stele bench`). A relayed copy of a tx that
/// is verified or held is dropped before its signature is checked: the path holding it
/// admits it.
///
/// A proposal's txs are checked on the consensus path, which does not queue behind tx
/// work; a relay being checked right then holds some of them, and the proposal waits for
/// that check ([`VerifiedTxs::wait_for_relays`]) rather than make it again: without the
/// wait, backups checked 1.07–1.12 signatures per committed tx in the closed-loop bench.
#[derive(Debug)]
pub struct VerifiedTxs {
    inner: Mutex<Fifo>,
    cap: usize,
    /// Hashes held by some path, with how many paths of each kind hold each.
    held: Mutex<HashMap<TxHash, Holders>>,
    /// Rung when a relay's hold ends while someone waits for it.
    relay_done: Condvar,
    /// Threads in [`VerifiedTxs::wait_for_relays`]: a hold ends without a system call
    /// when nobody waits.
    waiting: AtomicUsize,
}

#[derive(Debug, Default, Clone, Copy)]
struct Holders {
    /// Clients' requests (their jobs may still be queued).
    clients: u32,
    /// Relays (claimed inside a running job: their check is under way).
    relays: u32,
}

/// Hashes held in a [`VerifiedTxs`] until this is dropped.
#[derive(Debug)]
pub struct Hold {
    cache: Arc<VerifiedTxs>,
    hashes: Vec<TxHash>,
    relay: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut held = self.cache.lock_held();
        for h in &self.hashes {
            if let Some(n) = held.get_mut(h) {
                let count = if self.relay {
                    &mut n.relays
                } else {
                    &mut n.clients
                };
                *count = count.saturating_sub(1);
                if n.clients == 0 && n.relays == 0 {
                    held.remove(h);
                }
            }
        }
        // Read under the lock a waiter checks and counts itself under: no wake-up lost.
        if self.relay && self.cache.waiting.load(Ordering::Relaxed) > 0 {
            self.cache.relay_done.notify_all();
        }
    }
}

impl VerifiedTxs {
    pub fn new(cap: usize) -> VerifiedTxs {
        assert!(cap > 0);
        VerifiedTxs {
            inner: Mutex::new(Fifo::default()),
            cap,
            held: Mutex::new(HashMap::new()),
            relay_done: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<TxHash, Holders>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `hashes` (a client's txs, which must get a verdict even when another path
    /// holds them) until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, hashes: Vec<TxHash>) -> Hold {
        let mut held = self.lock_held();
        for h in &hashes {
            held.entry(*h).or_default().clients += 1;
        }
        drop(held);
        Hold {
            cache: self.clone(),
            hashes,
            relay: false,
        }
    }

    /// Waits, at most `timeout`, until no relay holds any of `hashes`; whether none
    /// does. A relay's hold is taken inside its running job and ends when its txs are
    /// cached (or refused), so the wait is that job's remainder.
    pub fn wait_for_relays(&self, hashes: &[TxHash], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut held = self.lock_held();
        loop {
            if !hashes
                .iter()
                .any(|h| held.get(h).is_some_and(|n| n.relays > 0))
            {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.waiting.fetch_add(1, Ordering::Relaxed);
            held = self
                .relay_done
                .wait_timeout(held, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Of `items` (hash, anything), keeps those neither verified nor held by another
    /// path, and holds them until the returned guard is dropped.
    pub fn claim_new<T>(self: &Arc<Self>, items: Vec<(TxHash, T)>) -> (Vec<(TxHash, T)>, Hold) {
        let done = self.lock();
        let mut held = self.lock_held();
        let mut kept = Vec::with_capacity(items.len());
        let mut hashes = Vec::with_capacity(items.len());
        for (h, t) in items {
            if done.map.contains_key(&h) || held.contains_key(&h) {
                continue;
            }
            held.insert(
                h,
                Holders {
                    clients: 0,
                    relays: 1,
                },
            );
            hashes.push(h);
            kept.push((h, t));
        }
        drop(held);
        drop(done);
        (
            kept,
            Hold {
                cache: self.clone(),
                hashes,
                relay: true,
            },
        )
    }

    /// Threads waiting in [`VerifiedTxs::wait_for_relays`].
    #[cfg(test)]
    pub fn relay_waiters(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How many hashes are held now.
    pub fn held_len(&self) -> usize {
        self.lock_held().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fifo> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers verified txs.
    pub fn insert_all(&self, txs: impl IntoIterator<Item = (TxHash, Verified<TxBody>)>) {
        let mut f = self.lock();
        for (h, tx) in txs {
            if f.map.insert(h, tx).is_none() {
                f.order.push_back(h);
            }
            while f.order.len() > self.cap {
                if let Some(old) = f.order.pop_front() {
                    f.map.remove(&old);
                }
            }
        }
        debug_assert!(f.map.len() <= self.cap && f.map.len() == f.order.len());
    }

    pub fn get(&self, h: &TxHash) -> Option<Verified<TxBody>> {
        self.lock().map.get(h).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl KnownTxs for VerifiedTxs {
    fn verified(&self, hash: &TxHash) -> Option<Verified<TxBody>> {
        self.get(hash)
    }
}

/// Per (sender, nonce): how many wait, and what wakes them.
type WaitMap = HashMap<(PublicKey, Nonce), (usize, std::sync::Arc<Notify>)>;

/// Most `?wait=true` requests waiting on one (sender, nonce): more than this many copies
/// of one tx waiting help nobody, and each holds a connection.
pub const MAX_WAITERS_PER_TX: usize = 64;

#[derive(Debug, Default)]
struct WaitState {
    map: WaitMap,
    /// Waiters over all keys.
    total: usize,
}

/// Waiters for the moment a (sender, nonce) gets used by a committed tx: that is when a
/// tx with that nonce gets its final outcome (applied, or `stale_nonce`).
///
/// Bounded per key and in total; a waiter holds its key and hash only, never the body.
#[derive(Debug, Default)]
pub struct Waiters {
    inner: Mutex<WaitState>,
}

impl Waiters {
    /// A handle to wait on, or `None` when too many wait already, on this key or in all.
    pub fn register(&self, sender: PublicKey, nonce: Nonce) -> Option<std::sync::Arc<Notify>> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *guard;
        if w.total >= MAX_WAITERS {
            return None;
        }
        let e = w
            .map
            .entry((sender, nonce))
            .or_insert_with(|| (0, std::sync::Arc::new(Notify::new())));
        if e.0 >= MAX_WAITERS_PER_TX {
            return None;
        }
        e.0 += 1;
        w.total += 1;
        Some(e.1.clone())
    }

    /// Done waiting (answered or timed out).
    pub fn unregister(&self, sender: PublicKey, nonce: Nonce) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *guard;
        if let Some(e) = w.map.get_mut(&(sender, nonce)) {
            debug_assert!(e.0 > 0 && w.total > 0);
            e.0 = e.0.saturating_sub(1);
            w.total = w.total.saturating_sub(1);
            if e.0 == 0 {
                w.map.remove(&(sender, nonce));
            }
        }
    }

    /// A committed block used these nonces: wake whoever waits on them.
    pub fn notify_used(&self, used: impl IntoIterator<Item = (PublicKey, Nonce)>) {
        let w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let m = &w.map;
        if m.is_empty() {
            return;
        }
        for k in used {
            if let Some((_, n)) = m.get(&k) {
                n.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_crypto::{ChainBinding, ChainId, Digest, Ed25519, KeyPair};
    use stele_types::{tx::sign_tx, tx_hash, Amount, Op};

    fn verified(i: u64) -> (TxHash, Verified<TxBody>) {
        let k = KeyPair::from_seed([1; 32]);
        let chain = ChainBinding::new(ChainId::new("t").expect("valid"), Digest::ZERO);
        let tx = sign_tx(
            TxBody {
                sender: k.public(),
                nonce: Nonce(i),
                op: Op::Transfer {
                    to: KeyPair::from_seed([2; 32]).public(),
                    amount: Amount(1),
                },
            },
            &chain,
            &k,
        );
        let h = tx_hash(&tx);
        (h, tx.verify(&chain, &k.public(), &Ed25519).expect("valid"))
    }

    /// A relayed copy of a tx that is verified, or held by a client's request or
    /// another relay, is not claimed (so not checked again); a hold ends with its guard.
    #[test]
    fn a_tx_verified_or_held_elsewhere_is_not_claimed_again() {
        let c = Arc::new(VerifiedTxs::new(16));
        let (h0, v0) = verified(0);
        let (h1, _) = verified(1);
        let (h2, _) = verified(2);
        let (h3, _) = verified(3);
        c.insert_all([(h0, v0)]);
        let client = c.hold(vec![h1]);
        let (kept, relay) = c.claim_new(vec![(h0, 'a'), (h1, 'b'), (h2, 'c')]);
        assert_eq!(
            kept,
            vec![(h2, 'c')],
            "verified and client-held copies are dropped"
        );
        let (again, _other) = c.claim_new(vec![(h2, 'c'), (h3, 'd')]);
        assert_eq!(
            again,
            vec![(h3, 'd')],
            "a tx another relay is checking is dropped"
        );
        assert_eq!(c.held_len(), 3);
        drop(client);
        drop(relay);
        assert_eq!(c.held_len(), 1);
        let (later, _g) = c.claim_new(vec![(h1, 'b'), (h2, 'c')]);
        assert_eq!(later.len(), 2, "released holds can be claimed again");
        // Two holders of one hash: it stays held until both are done.
        let (h4, _) = verified(4);
        let a = c.hold(vec![h4]);
        let b = c.hold(vec![h4]);
        drop(a);
        assert!(c.claim_new(vec![(h4, ())]).0.is_empty());
        drop(b);
        assert_eq!(c.claim_new(vec![(h4, ())]).0.len(), 1);
    }

    #[test]
    fn cache_forgets_oldest_beyond_its_cap() {
        let c = VerifiedTxs::new(3);
        let txs: Vec<_> = (0..5).map(verified).collect();
        c.insert_all(txs.clone());
        assert_eq!(c.len(), 3);
        assert!(c.get(&txs[0].0).is_none());
        assert!(c.get(&txs[1].0).is_none());
        assert!(c.get(&txs[4].0).is_some());
    }

    #[test]
    fn waiters_are_bounded_and_released() {
        let w = Waiters::default();
        let k = KeyPair::from_seed([3; 32]).public();
        let a = w.register(k, Nonce(0)).expect("room");
        let b = w.register(k, Nonce(0)).expect("same key shares");
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        w.unregister(k, Nonce(0));
        w.unregister(k, Nonce(0));
        assert!(w.inner.lock().expect("lock").map.is_empty());
        assert_eq!(w.inner.lock().expect("lock").total, 0);
    }

    #[test]
    fn waiters_on_one_tx_are_capped_and_others_still_wait() {
        let w = Waiters::default();
        let k = KeyPair::from_seed([3; 32]).public();
        let held: Vec<_> = (0..MAX_WAITERS_PER_TX)
            .map(|_| w.register(k, Nonce(0)).expect("room"))
            .collect();
        assert!(w.register(k, Nonce(0)).is_none(), "one tx past its cap");
        assert!(w.register(k, Nonce(1)).is_some(), "another tx still waits");
        w.unregister(k, Nonce(0));
        assert!(
            w.register(k, Nonce(0)).is_some(),
            "room again after one left"
        );
        assert_eq!(held.len(), MAX_WAITERS_PER_TX);
    }
}
