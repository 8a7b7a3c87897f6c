//! stele-transport: QUIC between validators, with pinned keys, mutual TLS, bounded
//! frames and bounded queues.
//!
//! The node hands this crate opaque byte frames tagged with a [`FrameClass`]; the
//! transport authenticates every peer against the genesis validator set during the
//! TLS handshake, stamps every inbound frame with its arrival time before any queueing,
//! and keeps consensus traffic ahead of relay and bulk traffic in both directions.
//! Module map: [`identity`] (certificates and verifiers), [`frame`] (wire framing),
//! [`queue`] (per-peer outbound queues), [`inbound`] (received frames and their
//! budgets), `admission` (who may hold an inbound handshake slot), [`metrics`],
//! [`fault`] (test hook), [`transport`] (endpoints, connections, the public handle).

mod admission;
pub mod fault;
pub mod frame;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod queue;
pub mod testkit;
pub mod transport;

pub use fault::Faults;
pub use frame::FrameError;
pub use identity::IdentityError;
pub use inbound::{Inbound, InboundFrame};
pub use metrics::{Metrics, MetricsSnapshot, RejectReason};
pub use queue::{QueueLimits, QueueStats};
pub use transport::{
    PeerEvent, SendError, SendOutcome, Transport, TransportConfig, TransportError, Tuning,
};

/// ALPN protocol id: a peer speaking anything else fails the handshake. Its number is
/// the wire format's version, raised whenever a message's encoding changes, so that
/// validators of two formats refuse each other at the handshake, naming the protocol,
/// instead of connecting and then refusing each other's every frame as malformed (as a
/// faulty peer's).
/// - 1: the first.
/// - 2: a tx without its chain id (1218815).
pub const ALPN: &[u8] = b"stele/2";

/// The class of a frame decides its queue, its stream and its priority.
///
/// Consensus frames (every message for which `Message::is_consensus()` holds) never
/// wait behind relay or bulk frames; when a peer's queue is full, relay and bulk
/// frames are dropped first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameClass {
    /// PRE-PREPARE, PREPARE, COMMIT, CHECKPOINT, VIEW-CHANGE, NEW-VIEW, STATUS, fetches.
    Consensus = 0,
    /// Batched tx relay.
    Relay = 1,
    /// State transfer and block bodies.
    Bulk = 2,
}

impl FrameClass {
    /// Every class, in index order (the order of every per-class array in this crate).
    pub const ALL: [FrameClass; 3] = [FrameClass::Consensus, FrameClass::Relay, FrameClass::Bulk];

    /// Index into per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameClass::Consensus => "consensus",
            FrameClass::Relay => "relay",
            FrameClass::Bulk => "bulk",
        }
    }

    /// The byte that opens each stream and names its class on the wire.
    pub(crate) fn tag(self) -> u8 {
        self as u8
    }

    /// The class named by a stream's opening byte, if any.
    pub(crate) fn from_tag(tag: u8) -> Option<FrameClass> {
        FrameClass::ALL.get(usize::from(tag)).copied()
    }
}

impl std::fmt::Display for FrameClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
