//! Fault injection for tests: drop frames to or from chosen peers.
//!
//! The transport holds an `Option<Arc<Faults>>`; production passes `None`, so the
//! whole hook costs one branch per frame. Peers are bits in atomic masks (ids are
//! below `MAX_VALIDATORS` = 256), so flipping a partition never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};

use stele_types::validators::MAX_VALIDATORS;
use stele_types::ReplicaId;

const WORDS: usize = MAX_VALIDATORS.div_ceil(64);

/// Which peers' traffic is dropped, per direction.
#[derive(Debug, Default)]
pub struct Faults {
    to: [AtomicU64; WORDS],
    from: [AtomicU64; WORDS],
}

fn bit(peer: ReplicaId) -> Option<(usize, u64)> {
    let i = peer.index();
    (i < MAX_VALIDATORS).then(|| (i / 64, 1u64 << (i % 64)))
}

fn set(mask: &[AtomicU64; WORDS], peer: ReplicaId, on: bool) {
    if let Some((w, b)) = bit(peer) {
        if on {
            mask[w].fetch_or(b, Ordering::Relaxed);
        } else {
            mask[w].fetch_and(!b, Ordering::Relaxed);
        }
    }
}

fn get(mask: &[AtomicU64; WORDS], peer: ReplicaId) -> bool {
    bit(peer).is_some_and(|(w, b)| mask[w].load(Ordering::Relaxed) & b != 0)
}

impl Faults {
    /// No faults.
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Drop (or stop dropping) every frame we send to `peer`.
    pub fn drop_to(&self, peer: ReplicaId, on: bool) {
        set(&self.to, peer, on);
    }

    /// Drop (or stop dropping) every frame we receive from `peer`.
    pub fn drop_from(&self, peer: ReplicaId, on: bool) {
        set(&self.from, peer, on);
    }

    /// Both directions: a partition between us and `peer`.
    pub fn isolate(&self, peer: ReplicaId, on: bool) {
        self.drop_to(peer, on);
        self.drop_from(peer, on);
    }

    /// Heal every partition.
    pub fn heal_all(&self) {
        for w in self.to.iter().chain(self.from.iter()) {
            w.store(0, Ordering::Relaxed);
        }
    }

    /// Whether frames to `peer` are dropped.
    pub fn drops_to(&self, peer: ReplicaId) -> bool {
        get(&self.to, peer)
    }

    /// Whether frames from `peer` are dropped.
    pub fn drops_from(&self, peer: ReplicaId) -> bool {
        get(&self.from, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_per_peer_and_per_direction() {
        let f = Faults::new();
        f.drop_to(ReplicaId(3), true);
        f.drop_from(ReplicaId(200), true);
        assert!(f.drops_to(ReplicaId(3)));
        assert!(!f.drops_from(ReplicaId(3)));
        assert!(f.drops_from(ReplicaId(200)));
        assert!(!f.drops_to(ReplicaId(4)));
        // Out-of-range ids are never dropped and never panic.
        f.isolate(ReplicaId(u16::MAX), true);
        assert!(!f.drops_to(ReplicaId(u16::MAX)));
        f.heal_all();
        assert!(!f.drops_to(ReplicaId(3)) && !f.drops_from(ReplicaId(200)));
    }
}
