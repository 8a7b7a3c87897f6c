//! The gate of a recovering (wiped) replica (DESIGN.md, "Recovery of a wiped validator").
//!
//! A replica that lost its disk may have voted before; it does not know what. Until it is
//! past every vote it might have signed, it sends only STATUS, fetches, CHECKPOINT and
//! the committed blocks it serves. From q signed STATUS replies it takes c_r (the highest
//! stable checkpoint claimed) and m (the highest view); it votes again only once it holds
//! a stable checkpoint above c_r + L (no height it could have voted on is still open) and
//! is active in a view above m (no view it could have voted in is still current).
//!
//! Sans-IO like the engine: the driver feeds it STATUS messages and asks it about sends.

use std::collections::BTreeMap;

use stele_types::{Height, Message, ReplicaId, Status, ViewNumber};

/// The recovery gate; `done()` once the replica may vote again.
#[derive(Debug, Clone)]
pub struct RecoveryGate {
    quorum: usize,
    window: u64,
    own: ReplicaId,
    replies: BTreeMap<ReplicaId, (ViewNumber, Height)>,
    /// (c_r, m), fixed once q replies are in.
    bounds: Option<(Height, ViewNumber)>,
    done: bool,
}

impl RecoveryGate {
    /// A gate for replica `own` in a set with quorum `quorum` and window L.
    pub fn new(own: ReplicaId, quorum: usize, window: u64) -> RecoveryGate {
        assert!(quorum >= 1 && window >= 1);
        RecoveryGate {
            quorum,
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

    /// (c_r, m) once q replies were seen.
    pub fn bounds(&self) -> Option<(Height, ViewNumber)> {
        self.bounds
    }

    /// A verified STATUS from a peer.
    pub fn observe_status(&mut self, s: &Status) {
        if self.bounds.is_some() || s.replica == self.own {
            return;
        }
        self.replies
            .insert(s.replica, (s.view, s.stable_checkpoint));
        if self.replies.len() >= self.quorum {
            // The highest claims: a peer lying high only delays recovery (liveness of
            // this one replica); the honest ones among q bound what we could have signed.
            let c_r = self
                .replies
                .values()
                .map(|(_, c)| *c)
                .max()
                .unwrap_or(Height(0));
            let m = self
                .replies
                .values()
                .map(|(v, _)| *v)
                .max()
                .unwrap_or(ViewNumber(0));
            self.bounds = Some((c_r, m));
        }
    }

    /// Re-evaluates with the engine's state: stable checkpoint, view, active.
    pub fn update(&mut self, low: Height, view: ViewNumber, active: bool) {
        if self.done {
            return;
        }
        if let Some((c_r, m)) = self.bounds {
            if low.0 > c_r.0.saturating_add(self.window) && active && view > m {
                self.done = true;
            }
        }
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
        let mut g = RecoveryGate::new(ReplicaId(3), 3, 8);
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
        assert_eq!(g.bounds(), Some((Height(16), ViewNumber(3))));
        g.update(Height(24), ViewNumber(4), true);
        assert!(!g.done(), "24 is not above 16 + 8");
        g.update(Height(32), ViewNumber(3), true);
        assert!(!g.done(), "view 3 is not above m = 3");
        g.update(Height(32), ViewNumber(4), false);
        assert!(!g.done(), "inactive");
        g.update(Height(32), ViewNumber(4), true);
        assert!(g.done());
        assert!(g.allows(&relay));
    }
}
