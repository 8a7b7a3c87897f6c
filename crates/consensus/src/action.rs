//! What the engine asks its driver to do, and the one timer table.

use stele_types::{
    Block, CheckpointCertificate, CommitCertificate, Digest, DurableEntry, Height, Message,
    ReplicaId, ViewNumber,
};

use crate::verify::Reject;

/// Byzantine behaviour seen and proven by signed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two PRE-PREPAREs for one (view, height) with different digests, both signed by the primary.
    EquivocatingPrimary {
        primary: ReplicaId,
        view: ViewNumber,
        height: Height,
        digests: (Digest, Digest),
    },
    /// Two votes of one kind for one (view, height) with different digests from one replica.
    ConflictingVotes {
        replica: ReplicaId,
        kind: &'static str,
        view: ViewNumber,
        height: Height,
    },
}

impl Evidence {
    /// The metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::EquivocatingPrimary { .. } => "equivocating_primary",
            Evidence::ConflictingVotes { .. } => "conflicting_votes",
        }
    }

    /// Every label, for metrics created at start.
    pub const KINDS: [&'static str; 2] = ["equivocating_primary", "conflicting_votes"];

    /// What it proves something about: (height, view, the faulty replica, what it
    /// signed twice). More evidence about the same slot proves nothing new.
    pub fn slot(&self) -> (Height, ViewNumber, ReplicaId, &'static str) {
        match self {
            Evidence::EquivocatingPrimary {
                primary,
                view,
                height,
                ..
            } => (*height, *view, *primary, "pre_prepare"),
            Evidence::ConflictingVotes {
                replica,
                kind,
                view,
                height,
            } => (*height, *view, *replica, kind),
        }
    }
}

/// Why the engine stopped: safety can no longer be promised by this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// Our state digest at a height differs from the stable checkpoint's.
    Divergence {
        height: Height,
        ours: Digest,
        stable: Digest,
    },
    /// A NEW-VIEW re-proposes a different block at a height we executed: more than f faulty.
    ConflictingNewView {
        height: Height,
        executed: Digest,
        proposed: Digest,
    },
}

/// An output of the engine, drained by the caller in order.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write these durably (synced) before performing any later action in the drain.
    Persist(Vec<DurableEntry>),
    /// Write the stable checkpoint certificate and discard the consensus log at or below
    /// its height, in one synced write, before any later action.
    PersistCheckpoint(CheckpointCertificate),
    /// Send to one peer.
    Send(ReplicaId, Message),
    /// Send to every other validator.
    Broadcast(Message),
    /// Committed block `block.height()`, in height order, with its proof: execute it and
    /// report with `on_executed`.
    Deliver {
        block: Block,
        certificate: CommitCertificate,
    },
    /// Send the peer committed blocks `from..=to` with certificates, read from the store
    /// (the engine keeps only its window).
    ServeBlocks {
        to: ReplicaId,
        from: Height,
        to_height: Height,
    },
    /// Byzantine behaviour to record.
    Evidence(Evidence),
    /// A refused message, to count.
    Rejected { from: ReplicaId, reason: Reject },
    /// Safety is lost here: stop, tell the operator.
    Halt(Halt),
    /// The view changed (for metrics and logs).
    ViewChanged { view: ViewNumber, active: bool },
}

/// The engine's timers; at most one deadline each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// The view-change timer: request tracking while active, NEW-VIEW wait while changing.
    ViewChange,
    /// Re-broadcast our VIEW-CHANGE while inactive.
    ViewChangeResend,
    /// The primary's batch delay.
    BatchFlush,
    /// Periodic STATUS.
    Status,
}
