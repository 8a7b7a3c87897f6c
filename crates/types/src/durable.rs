//! The durable consensus record: what the engine asks to persist before it sends, and
//! rebuilds itself from after a restart. Defined here so the store need not know the
//! engine.
//!
//! Keys sort by kind, then height, then view, so discarding the log at or below a stable
//! checkpoint is one range delete per kind.

use serde::{Deserialize, Serialize};
use stele_crypto::Signed;

use crate::block::Block;
use crate::certs::{CheckpointCertificate, PreparedCertificate};
use crate::ids::{Height, ViewNumber};
use crate::messages::{NewView, PrePrepare, Prepare};

/// One durable consensus fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DurableEntry {
    /// A PRE-PREPARE this replica sent as primary, with the body.
    PrePrepareSent {
        pre_prepare: Signed<PrePrepare>,
        body: Block,
    },
    /// A PREPARE this replica sent, with the PRE-PREPARE it answers and the body (kept
    /// until the height executes or falls below a stable checkpoint, and served to peers).
    PrepareSent {
        pre_prepare: Signed<PrePrepare>,
        prepare: Signed<Prepare>,
        body: Block,
    },
    /// The highest-view prepared certificate for a height, written before the COMMIT.
    Prepared(PreparedCertificate),
    /// The view of the latest VIEW-CHANGE this replica sent.
    ViewChangeSent { view: ViewNumber },
    /// The latest NEW-VIEW this replica accepted.
    NewViewAccepted(Signed<NewView>),
    /// The stable checkpoint; written in one batch with the log's garbage collection.
    StableCheckpoint(CheckpointCertificate),
}

/// Where a [`DurableEntry`] is kept; a later entry with the same key replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DurableKey {
    PrePrepareSent { height: Height, view: ViewNumber },
    PrepareSent { height: Height, view: ViewNumber },
    Prepared { height: Height },
    ViewChangeSent,
    NewViewAccepted,
    StableCheckpoint,
}

impl DurableKey {
    /// Kinds whose entries are discarded at or below a stable checkpoint.
    pub const GC_TAGS: [u8; 3] = [1, 2, 3];

    /// A one-byte kind tag.
    pub fn tag(&self) -> u8 {
        match self {
            DurableKey::PrePrepareSent { .. } => 1,
            DurableKey::PrepareSent { .. } => 2,
            DurableKey::Prepared { .. } => 3,
            DurableKey::ViewChangeSent => 4,
            DurableKey::NewViewAccepted => 5,
            DurableKey::StableCheckpoint => 6,
        }
    }

    /// Sortable bytes: tag, then big-endian height and view.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.tag()];
        match *self {
            DurableKey::PrePrepareSent { height, view }
            | DurableKey::PrepareSent { height, view } => {
                out.extend_from_slice(&height.0.to_be_bytes());
                out.extend_from_slice(&view.0.to_be_bytes());
            }
            DurableKey::Prepared { height } => out.extend_from_slice(&height.0.to_be_bytes()),
            DurableKey::ViewChangeSent
            | DurableKey::NewViewAccepted
            | DurableKey::StableCheckpoint => {}
        }
        out
    }

    /// The first key of kind `tag` above `height`: a range delete of
    /// `[tag] .. gc_bound(tag, h)` discards every entry of that kind at or below `h`.
    pub fn gc_bound(tag: u8, height: Height) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&height.0.saturating_add(1).to_be_bytes());
        out
    }
}

impl DurableEntry {
    /// Its key.
    pub fn key(&self) -> DurableKey {
        match self {
            DurableEntry::PrePrepareSent { pre_prepare, .. } => DurableKey::PrePrepareSent {
                height: pre_prepare.height,
                view: pre_prepare.view,
            },
            DurableEntry::PrepareSent { prepare, .. } => DurableKey::PrepareSent {
                height: prepare.height,
                view: prepare.view,
            },
            DurableEntry::Prepared(c) => DurableKey::Prepared { height: c.height() },
            DurableEntry::ViewChangeSent { .. } => DurableKey::ViewChangeSent,
            DurableEntry::NewViewAccepted(_) => DurableKey::NewViewAccepted,
            DurableEntry::StableCheckpoint(_) => DurableKey::StableCheckpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_kind_then_height_then_view() {
        let a = DurableKey::PrepareSent {
            height: Height(2),
            view: ViewNumber(9),
        }
        .to_bytes();
        let b = DurableKey::PrepareSent {
            height: Height(3),
            view: ViewNumber(0),
        }
        .to_bytes();
        let c = DurableKey::Prepared { height: Height(0) }.to_bytes();
        assert!(a < b && b < c);
    }

    #[test]
    fn gc_bound_covers_exactly_the_heights_at_or_below() {
        let bound = DurableKey::gc_bound(2, Height(5));
        let at = DurableKey::PrepareSent {
            height: Height(5),
            view: ViewNumber(u64::MAX),
        }
        .to_bytes();
        let above = DurableKey::PrepareSent {
            height: Height(6),
            view: ViewNumber(0),
        }
        .to_bytes();
        assert!(at < bound && bound <= above);
    }
}
