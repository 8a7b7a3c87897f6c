//! Safety rule 3 as a checker: what one validator signed, and whether a new message
//! contradicts it. The simulator runs it on every message an honest replica sends
//! (crashes and wipes included); the power-loss tests run it over what a real validator
//! sent across its power cuts.

use std::collections::HashMap;

use stele_types::{Digest, Height, Message, ReplicaId, ValidatorSet, ViewNumber};

/// A message that contradicts one the same validator sent before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contradiction {
    /// Two digests for one PRE-PREPARE, PREPARE or COMMIT slot.
    TwoDigests {
        kind: &'static str,
        view: ViewNumber,
        height: Height,
        first: Digest,
        second: Digest,
    },
    /// A PREPARE or COMMIT in a view below one it sent a VIEW-CHANGE (or NEW-VIEW) for.
    VoteInLeftView { view: ViewNumber, left: ViewNumber },
    /// Two state digests in CHECKPOINTs for one height.
    TwoCheckpoints {
        height: Height,
        first: Digest,
        second: Digest,
    },
}

impl std::fmt::Display for Contradiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contradiction::TwoDigests {
                kind,
                view,
                height,
                first,
                second,
            } => write!(
                f,
                "signed {kind} ({view}, {height}) for {first} and {second}"
            ),
            Contradiction::VoteInLeftView { view, left } => {
                write!(f, "voted in {view} after VIEW-CHANGE({left})")
            }
            Contradiction::TwoCheckpoints {
                height,
                first,
                second,
            } => write!(f, "signed CHECKPOINT({height}) for {first} and {second}"),
        }
    }
}

/// Everything one validator signed that binds it.
#[derive(Clone, Debug, Default)]
pub struct SignedHistory {
    /// (kind, view, height) → digest; kind 0 PRE-PREPARE, 1 PREPARE, 2 COMMIT.
    votes: HashMap<(u8, ViewNumber, Height), Digest>,
    checkpoints: HashMap<Height, Digest>,
    /// The highest view it sent a VIEW-CHANGE for: it has left every view below.
    left_below: ViewNumber,
    recorded: u64,
}

const KINDS: [&str; 3] = ["PRE-PREPARE", "PREPARE", "COMMIT"];

impl SignedHistory {
    /// Records `m` if validator `me` signed it (anything else is ignored) and returns
    /// every contradiction with what it signed before.
    pub fn record(&mut self, me: ReplicaId, vs: &ValidatorSet, m: &Message) -> Vec<Contradiction> {
        let mut found = Vec::new();
        let votes: Vec<(u8, ViewNumber, Height, Digest)> = match m {
            Message::Proposal(p) if vs.primary(p.pre_prepare.view) == me => {
                vec![(
                    0,
                    p.pre_prepare.view,
                    p.pre_prepare.height,
                    p.pre_prepare.digest,
                )]
            }
            Message::NewView(nv) if vs.primary(nv.view) == me => {
                // Its own VIEW-CHANGE is in V: it has left the views below.
                self.left_below = self.left_below.max(nv.view);
                nv.pre_prepares
                    .iter()
                    .map(|p| (0, p.view, p.height, p.digest))
                    .collect()
            }
            Message::Prepare(p) if p.replica == me => vec![(1, p.view, p.height, p.digest)],
            Message::Commit(c) if c.replica == me => vec![(2, c.view, c.height, c.digest)],
            Message::ViewChange(vc) if vc.replica == me => {
                self.left_below = self.left_below.max(vc.new_view);
                self.recorded += 1;
                return found;
            }
            Message::Checkpoint(c) if c.replica == me => {
                self.recorded += 1;
                if let Some(&first) = self.checkpoints.get(&c.height) {
                    if first != c.state_digest {
                        found.push(Contradiction::TwoCheckpoints {
                            height: c.height,
                            first,
                            second: c.state_digest,
                        });
                    }
                } else {
                    self.checkpoints.insert(c.height, c.state_digest);
                }
                return found;
            }
            _ => return found,
        };
        self.recorded += 1;
        for (kind, view, height, digest) in votes {
            // A new primary re-proposes lower views' requests in its NEW-VIEW, in the
            // new view: only votes are bound by the views it left.
            if view < self.left_below && kind != 0 {
                found.push(Contradiction::VoteInLeftView {
                    view,
                    left: self.left_below,
                });
            }
            match self.votes.get(&(kind, view, height)) {
                Some(&first) if first != digest => found.push(Contradiction::TwoDigests {
                    kind: KINDS[kind as usize],
                    view,
                    height,
                    first,
                    second: digest,
                }),
                Some(_) => {}
                None => {
                    self.votes.insert((kind, view, height), digest);
                }
            }
        }
        found
    }

    /// How many of its own signed messages it has recorded.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// The highest view it has left.
    pub fn left_below(&self) -> ViewNumber {
        self.left_below
    }
}
