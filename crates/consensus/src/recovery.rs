//! The gate of a recovering (wiped) replica (DESIGN.md, "Recovery of a wiped validator").
//!
//! A replica that lost its disk may have voted before; it does not know what. Until it is
//! past every vote it might have signed, it sends only STATUS, fetches, CHECKPOINT and
//! the committed blocks it serves. From q signed STATUS replies it takes c_r and m; it
//! votes again only once it holds a stable checkpoint above c_r + L (no height it could
//! have voted on is still open) and is active in a view above m (no view it could have
//! voted in is still current).
//!
//! A STATUS proves nothing, and a Byzantine peer may claim `u64::MAX` for everything:
//! neither bound may be a claim only a liar reached, or the gate never opens. m is the
//! (f+1)-th highest view claimed (at least one honest replica is there). c_r is the
//! highest checkpoint this replica holds a valid proof for (its stable checkpoint, every
//! certificate verified), taken once that reaches the (f+1)-th highest checkpoint claimed:
//! an honest peer claiming it answers our STATUS with its certificate.
//!
//! Sans-IO like the engine: the driver feeds it STATUS messages and asks it about sends.

use std::collections::BTreeMap;

use stele_types::{Height, Message, ReplicaId, Status, ViewNumber};

/// The recovery gate; `done()` once the replica may vote again.
#[derive(Debug, Clone)]
pub struct RecoveryGate {
    quorum: usize,
    f: usize,
    window: u64,
    own: ReplicaId,
    /// Each peer's latest claims: (view, stable checkpoint).
    replies: BTreeMap<ReplicaId, (ViewNumber, Height)>,
    /// (c_r, m): set once q replies are in and a proof reaches the (f+1)-th highest
    /// checkpoint claimed; c_r then rises to every claim a proof reaches.
    bounds: Option<(Height, ViewNumber)>,
    done: bool,
}

impl RecoveryGate {
    /// A gate for replica `own` in a set with quorum `quorum`, fault bound `f` and window L.
    pub fn new(own: ReplicaId, quorum: usize, f: usize, window: u64) -> RecoveryGate {
        assert!(quorum >= 1 && window >= 1);
        assert!(f < quorum, "f = {f} must be below the quorum {quorum}");
        RecoveryGate {
            quorum,
            f,
            window,
            own,
            replies: BTreeMap::new(),
            bounds: None,
            done: false,
        }
    }

    /// Whether the replica may vote again.
    pub fn done(&self) -> bool {
        self.done
    }

    /// (c_r, m) once fixed.
    pub fn bounds(&self) -> Option<(Height, ViewNumber)> {
        self.bounds
    }

    /// A verified STATUS from a peer: its claims, kept until the bounds are fixed.
    pub fn observe_status(&mut self, s: &Status) {
        if self.bounds.is_some() || s.replica == self.own {
            return;
        }
        self.replies
            .insert(s.replica, (s.view, s.stable_checkpoint));
    }

    /// The (f+1)-th highest view and checkpoint claimed, once q peers replied: each is
    /// at or below the claim of an honest replica, whatever f liars say.
    fn honest_claims(&self) -> Option<(Height, ViewNumber)> {
        if self.replies.len() < self.quorum {
            return None;
        }
        let mut views: Vec<ViewNumber> = self.replies.values().map(|(v, _)| *v).collect();
        let mut checkpoints: Vec<Height> = self.replies.values().map(|(_, c)| *c).collect();
        views.sort_unstable_by(|a, b| b.cmp(a));
        checkpoints.sort_unstable_by(|a, b| b.cmp(a));
        debug_assert!(self.f < views.len());
        Some((checkpoints[self.f], views[self.f]))
    }

    /// Re-evaluates with the engine's state: stable checkpoint (the highest it holds a
    /// valid proof for), view, active.
    pub fn update(&mut self, low: Height, view: ViewNumber, active: bool) {
        if self.done {
            return;
        }
        if self.bounds.is_none() {
            if let Some((checkpoint, m)) = self.honest_claims() {
                if low >= checkpoint {
                    self.bounds = Some((low, m));
                }
            }
        }
        // An honest peer among the top f claims may hold a checkpoint above the one we
        // fixed c_r at, its certificate still on the way: once we hold a proof at least
        // that high (low reached the claim), c_r rises to it. A liar's unreachable claim
        // never counts; a reachable one only delays this replica.
        if let Some((c_r, m)) = self.bounds {
            let proven = self
                .replies
                .values()
                .map(|(_, c)| *c)
                .filter(|c| *c <= low)
                .max()
                .unwrap_or(c_r);
            self.bounds = Some((c_r.max(proven), m));
        }
        if let Some((c_r, m)) = self.bounds {
            if low.0 > c_r.0.saturating_add(self.window) && active && view > m {
                self.done = true;
            }
        }
        debug_assert!(!self.done || self.bounds.is_some());
    }

    /// Whether `m` may be sent now.
    pub fn allows(&self, m: &Message) -> bool {
        self.done
            || matches!(
                m,
                Message::Status(_)
                    | Message::FetchBodies(_)
                    | Message::FetchBlocks(_)
                    | Message::Checkpoint(_)
                    | Message::CheckpointCertificate(_)
                    | Message::Bodies(_)
                    | Message::Blocks(_)
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_types::{FetchBlocks, TxRelay};

    fn status(r: u16, view: u64, cp: u64) -> Status {
        Status {
            replica: ReplicaId(r),
            view: ViewNumber(view),
            active: true,
            executed: Height(cp + 3),
            stable_checkpoint: Height(cp),
        }
    }

    #[test]
    fn votes_only_past_c_r_plus_l_and_above_m() {
        // n = 4: q = 3, f = 1.
        let mut g = RecoveryGate::new(ReplicaId(3), 3, 1, 8);
        let fetch = Message::FetchBlocks(FetchBlocks {
            from: Height(1),
            to: Height(2),
        });
        let relay = Message::Relay(TxRelay { txs: vec![] });
        assert!(g.allows(&fetch));
        assert!(!g.allows(&relay));
        g.observe_status(&status(0, 2, 16));
        g.observe_status(&status(1, 3, 8));
        g.update(Height(100), ViewNumber(10), true);
        assert!(!g.done(), "only two replies");
        g.observe_status(&status(3, 99, 99)); // our own, ignored
        g.observe_status(&status(2, 1, 4));
        // The second highest claims are checkpoint 8 and view 2; no proof of 8 yet.
        g.update(Height(0), ViewNumber(0), true);
        assert_eq!(g.bounds(), None, "c_r waits for a proof");
        // A certificate for 16 arrived (the engine's stable checkpoint): c_r = 16.
        g.update(Height(16), ViewNumber(0), true);
        assert_eq!(g.bounds(), Some((Height(16), ViewNumber(2))));
        g.update(Height(24), ViewNumber(4), true);
        assert!(!g.done(), "24 is not above 16 + 8");
        g.update(Height(32), ViewNumber(2), true);
        assert!(!g.done(), "view 2 is not above m = 2");
        g.update(Height(32), ViewNumber(3), false);
        assert!(!g.done(), "inactive");
        g.update(Height(32), ViewNumber(3), true);
        assert!(g.done());
        assert!(g.allows(&relay));
    }

    #[test]
    fn a_lying_status_cannot_lock_the_gate() {
        // n = 7: q = 5, f = 2; the recovering replica counts against f, so one liar.
        let mut g = RecoveryGate::new(ReplicaId(3), 5, 2, 16);
        g.observe_status(&status(6, u64::MAX, u64::MAX - 3));
        for r in [0, 1, 2, 4] {
            g.observe_status(&status(r, 4, 32));
        }
        g.update(Height(32), ViewNumber(4), true);
        assert_eq!(g.bounds(), Some((Height(32), ViewNumber(4))));
        g.update(Height(56), ViewNumber(5), true);
        assert!(g.done(), "past 32 + 16 and active above view 4");
    }

    #[test]
    fn c_r_rises_to_an_honest_claim_whose_proof_comes_late() {
        // n = 4: one honest peer is at checkpoint 40, the others (one may lie) at 8.
        let mut g = RecoveryGate::new(ReplicaId(3), 3, 1, 16);
        g.observe_status(&status(0, 2, 40));
        g.observe_status(&status(1, 2, 8));
        g.observe_status(&status(2, 2, 8));
        g.update(Height(8), ViewNumber(3), true);
        assert_eq!(g.bounds(), Some((Height(8), ViewNumber(2))));
        // The certificate for 40 arrives: we may have voted up to 40 + 16 before the wipe.
        g.update(Height(40), ViewNumber(3), true);
        assert_eq!(g.bounds(), Some((Height(40), ViewNumber(2))));
        assert!(!g.done(), "40 is not above 40 + 16");
        g.update(Height(56), ViewNumber(3), true);
        assert!(!g.done(), "56 is not above 40 + 16");
        g.update(Height(64), ViewNumber(3), true);
        assert!(g.done());
    }

    #[test]
    fn c_r_is_the_proven_checkpoint_not_a_claim() {
        let mut g = RecoveryGate::new(ReplicaId(0), 3, 1, 8);
        for r in 1..4 {
            g.observe_status(&status(r, 1, 16));
        }
        g.update(Height(8), ViewNumber(1), true);
        assert_eq!(g.bounds(), None, "claims of 16 with a proof only of 8");
        // The proof that arrives may be above every claim (the cluster moved on): c_r
        // is what was proven.
        g.update(Height(24), ViewNumber(1), true);
        assert_eq!(g.bounds(), Some((Height(24), ViewNumber(1))));
        g.update(Height(32), ViewNumber(2), true);
        assert!(!g.done(), "32 is not above 24 + 8");
        g.update(Height(40), ViewNumber(2), true);
        assert!(g.done());
    }
}
