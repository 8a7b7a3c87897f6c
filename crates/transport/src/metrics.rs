//! Transport counters, read by the node's Prometheus exporter.
//!
//! Plain atomics: the transport increments them on its hot paths and the node copies
//! them out with [`Metrics::snapshot`]. Every labelled series is an array slot that
//! exists (at 0) from start, so dashboards never see "no data".

use std::sync::atomic::{AtomicU64, Ordering};

use crate::FrameClass;

/// Why a frame, a stream or a connection attempt was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// A frame whose length prefix exceeds `max_frame_len(&genesis)`.
    Oversized,
    /// A frame of length 0 (no message encodes to nothing).
    EmptyFrame,
    /// A stream that ended inside a frame.
    Truncated,
    /// A stream whose opening byte names no frame class.
    UnknownClass,
    /// A peer certificate whose key is not in the genesis validator set.
    UnknownKey,
    /// A peer certificate carrying our own key.
    SelfKey,
    /// A peer certificate that is not a well-formed Ed25519 certificate, or a chain.
    BadCertificate,
    /// The peer at a validator's address holds another validator's key.
    WrongPeer,
    /// A connection dialled against the "lower id dials" rule.
    WrongDirection,
    /// An incoming handshake refused because too many were already in progress.
    HandshakesBusy,
    /// An incoming handshake refused because its source already had its share in
    /// progress.
    SourceHandshakesBusy,
    /// An incoming handshake from a source no genesis validator lists, refused because
    /// such sources together already had their share in progress.
    StrangerHandshakesBusy,
    /// An incoming handshake abandoned because it was not done within the handshake
    /// timeout (a silent or very slow client held the slot until then).
    HandshakeTimeout,
}

impl RejectReason {
    /// Every reason, in index order.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Oversized,
        RejectReason::EmptyFrame,
        RejectReason::Truncated,
        RejectReason::UnknownClass,
        RejectReason::UnknownKey,
        RejectReason::SelfKey,
        RejectReason::BadCertificate,
        RejectReason::WrongPeer,
        RejectReason::WrongDirection,
        RejectReason::HandshakesBusy,
        RejectReason::SourceHandshakesBusy,
        RejectReason::StrangerHandshakesBusy,
        RejectReason::HandshakeTimeout,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized_frame",
            RejectReason::EmptyFrame => "empty_frame",
            RejectReason::Truncated => "truncated_frame",
            RejectReason::UnknownClass => "unknown_stream_class",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::SelfKey => "own_key",
            RejectReason::BadCertificate => "bad_certificate",
            RejectReason::WrongPeer => "wrong_peer",
            RejectReason::WrongDirection => "wrong_direction",
            RejectReason::HandshakesBusy => "handshakes_busy",
            RejectReason::SourceHandshakesBusy => "source_handshakes_busy",
            RejectReason::StrangerHandshakesBusy => "stranger_handshakes_busy",
            RejectReason::HandshakeTimeout => "handshake_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

type PerClass = [AtomicU64; 3];

/// The live counters of one transport.
#[derive(Debug, Default)]
pub struct Metrics {
    frames_out: PerClass,
    bytes_out: PerClass,
    frames_in: PerClass,
    bytes_in: PerClass,
    dropped_queue_full: PerClass,
    dropped_fault: PerClass,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    connections_established: AtomicU64,
    connect_failures: AtomicU64,
    peers_connected: AtomicU64,
    retries_sent: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Frames written to a stream, by class (index [`FrameClass::index`]).
    pub frames_out: [u64; 3],
    /// Payload bytes written, by class.
    pub bytes_out: [u64; 3],
    /// Frames read off the wire from authenticated peers, by class (counted before
    /// they wait for room in the inbound buffer; fault-hook drops excluded).
    pub frames_in: [u64; 3],
    /// Payload bytes received, by class.
    pub bytes_in: [u64; 3],
    /// Frames dropped because a peer's outbound queue was full (including frames
    /// evicted to make room for consensus frames), by class.
    pub dropped_queue_full: [u64; 3],
    /// Frames dropped by the fault hook, both directions, by class.
    pub dropped_fault: [u64; 3],
    /// Refusals by reason (index order of [`RejectReason::ALL`]).
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Authenticated connections set up since start.
    pub connections_established: u64,
    /// Dials or handshakes that failed (including refusals counted in `rejected`).
    pub connect_failures: u64,
    /// Peers with a live connection now.
    pub peers_connected: u64,
    /// Connection attempts from addresses not yet validated, answered with a stateless
    /// Retry (every honest dial gets one; a spoofed flood gets nothing else).
    pub retries_sent: u64,
}

impl MetricsSnapshot {
    /// Refusals for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }
}

fn load<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Ordering::Relaxed))
}

impl Metrics {
    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            frames_out: load(&self.frames_out),
            bytes_out: load(&self.bytes_out),
            frames_in: load(&self.frames_in),
            bytes_in: load(&self.bytes_in),
            dropped_queue_full: load(&self.dropped_queue_full),
            dropped_fault: load(&self.dropped_fault),
            rejected: load(&self.rejected),
            connections_established: self.connections_established.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            peers_connected: self.peers_connected.load(Ordering::Relaxed),
            retries_sent: self.retries_sent.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn sent(&self, class: FrameClass, frames: u64, bytes: u64) {
        self.frames_out[class.index()].fetch_add(frames, Ordering::Relaxed);
        self.bytes_out[class.index()].fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, class: FrameClass, bytes: usize) {
        self.frames_in[class.index()].fetch_add(1, Ordering::Relaxed);
        self.bytes_in[class.index()].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn dropped_full(&self, class: FrameClass, frames: u64) {
        self.dropped_queue_full[class.index()].fetch_add(frames, Ordering::Relaxed);
    }

    pub(crate) fn dropped_fault(&self, class: FrameClass) {
        self.dropped_fault[class.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_established(&self) {
        self.connections_established.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry_sent(&self) {
        self.retries_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_peers_connected(&self, n: usize) {
        self.peers_connected.store(n as u64, Ordering::Relaxed);
    }
}
