//! Bounded shared state between the HTTP API, the network path and the engine thread:
//! the verified-tx cache and the waiters for final outcomes.
//!
//! The cache is how each tx is verified once per validator: a tx reaching us by HTTP,
//! relay and inside a block is checked the first time only (its hash covers its
//! signature). It also keeps the bodies of txs that never enter the tx index (the loser
//! of a double spend), so their `stale_nonce` receipt can still be made.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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

/// Txs whose signature this validator verified, oldest forgotten first.
#[derive(Debug)]
pub struct VerifiedTxs {
    inner: Mutex<Fifo>,
    cap: usize,
}

impl VerifiedTxs {
    pub fn new(cap: usize) -> VerifiedTxs {
        assert!(cap > 0);
        VerifiedTxs {
            inner: Mutex::new(Fifo::default()),
            cap,
        }
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
                chain_id: chain.id().clone(),
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
