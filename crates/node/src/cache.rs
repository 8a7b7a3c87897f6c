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

/// Waiters for the moment a (sender, nonce) gets used by a committed tx: that is when a
/// tx with that nonce gets its final outcome (applied, or `stale_nonce`).
#[derive(Debug, Default)]
pub struct Waiters {
    inner: Mutex<WaitMap>,
}

impl Waiters {
    /// A handle to wait on, or `None` when too many wait already.
    pub fn register(&self, sender: PublicKey, nonce: Nonce) -> Option<std::sync::Arc<Notify>> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_WAITERS && !m.contains_key(&(sender, nonce)) {
            return None;
        }
        let e = m
            .entry((sender, nonce))
            .or_insert_with(|| (0, std::sync::Arc::new(Notify::new())));
        e.0 += 1;
        Some(e.1.clone())
    }

    /// Done waiting (answered or timed out).
    pub fn unregister(&self, sender: PublicKey, nonce: Nonce) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = m.get_mut(&(sender, nonce)) {
            e.0 = e.0.saturating_sub(1);
            if e.0 == 0 {
                m.remove(&(sender, nonce));
            }
        }
    }

    /// A committed block used these nonces: wake whoever waits on them.
    pub fn notify_used(&self, used: impl IntoIterator<Item = (PublicKey, Nonce)>) {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
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
        assert!(w.inner.lock().expect("lock").is_empty());
    }
}

/// Most verified VIEW-CHANGE, NEW-VIEW and checkpoint-certificate frames remembered.
pub const VERIFIED_FRAMES_CAP: usize = 32;

/// Heavy consensus messages already verified here, by the digest of their frame.
///
/// A VIEW-CHANGE with a full window carries hundreds of signatures, and it comes again
/// every T/2 while its sender is inactive (DESIGN.md: re-broadcast), as do NEW-VIEWs in
/// STATUS answers. Verifying each copy anew starved the verification workers under
/// load: the messages that would end a view change queued behind copies of themselves.
/// The same bytes verify the same way (the validator set is fixed), so a copy is handed
/// on as the first was. Only kinds whose check does not depend on the sending peer are
/// kept.
#[derive(Debug, Default)]
pub struct VerifiedFrames {
    inner: Mutex<VecDeque<(stele_crypto::Digest, stele_consensus::VerifiedMessage)>>,
}

impl VerifiedFrames {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, VecDeque<(stele_crypto::Digest, stele_consensus::VerifiedMessage)>>
    {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether frames of this message kind are remembered.
    pub fn keeps(msg: &stele_types::Message) -> bool {
        matches!(
            msg,
            stele_types::Message::ViewChange(_)
                | stele_types::Message::NewView(_)
                | stele_types::Message::CheckpointCertificate(_)
        )
    }

    /// The verified message of a frame with this digest, if one was verified here.
    pub fn get(&self, frame: &stele_crypto::Digest) -> Option<stele_consensus::VerifiedMessage> {
        self.lock()
            .iter()
            .find(|(d, _)| d == frame)
            .map(|(_, m)| m.clone())
    }

    /// Remembers a verified frame, forgetting the oldest past the cap.
    pub fn insert(&self, frame: stele_crypto::Digest, msg: stele_consensus::VerifiedMessage) {
        let mut q = self.lock();
        if q.iter().any(|(d, _)| *d == frame) {
            return;
        }
        q.push_back((frame, msg));
        while q.len() > VERIFIED_FRAMES_CAP {
            q.pop_front();
        }
    }
}
