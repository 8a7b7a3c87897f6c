//! Frames received from peers on their way to the node: one channel per class, taken
//! consensus first, and the byte budgets that bound what waits in them.
//!
//! A reader whose budget is full stops reading; QUIC flow control then stops the peer.

use std::sync::Arc;

use bytes::Bytes;
use stele_types::ReplicaId;
use tokio::sync::{mpsc, Semaphore};

use crate::FrameClass;

/// A frame from a peer, stamped when its last byte was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundFrame {
    /// The authenticated sender.
    pub from: ReplicaId,
    /// The stream it came on.
    pub class: FrameClass,
    /// Wall-clock unix milliseconds when it was read, before any queueing.
    pub arrival_unix_ms: u64,
    /// The payload (at most `max_frame_len(&genesis)` bytes, never empty).
    pub frame: Bytes,
}

/// The receiving end of the transport: every authenticated inbound frame.
///
/// Consensus frames are always taken first; relay and bulk take turns. Taking a frame
/// frees its bytes from the inbound budget, which lets the readers read on.
#[derive(Debug)]
pub struct Inbound {
    rx: [mpsc::Receiver<InboundFrame>; 3],
    budgets: [Arc<Semaphore>; 3],
    relay_first: bool,
}

impl Inbound {
    pub(crate) fn new(
        rx: [mpsc::Receiver<InboundFrame>; 3],
        budgets: [Arc<Semaphore>; 3],
    ) -> Inbound {
        Inbound {
            rx,
            budgets,
            relay_first: true,
        }
    }

    /// The next frame; `None` once the transport has shut down.
    pub async fn recv(&mut self) -> Option<InboundFrame> {
        let [consensus, relay, bulk] = &mut self.rx;
        let frame = if self.relay_first {
            tokio::select! {
                biased;
                Some(f) = consensus.recv() => Some(f),
                Some(f) = relay.recv() => Some(f),
                Some(f) = bulk.recv() => Some(f),
                else => None,
            }
        } else {
            tokio::select! {
                biased;
                Some(f) = consensus.recv() => Some(f),
                Some(f) = bulk.recv() => Some(f),
                Some(f) = relay.recv() => Some(f),
                else => None,
            }
        };
        self.relay_first = !self.relay_first;
        self.release(frame.as_ref());
        frame
    }

    /// The next frame if one is waiting, consensus first.
    pub fn try_recv(&mut self) -> Option<InboundFrame> {
        let frame = self.rx.iter_mut().find_map(|rx| rx.try_recv().ok());
        self.release(frame.as_ref());
        frame
    }

    /// Frames waiting, by class.
    pub fn pending(&self) -> [usize; 3] {
        std::array::from_fn(|i| self.rx[i].len())
    }

    fn release(&self, frame: Option<&InboundFrame>) {
        if let Some(f) = frame {
            self.budgets[f.class.index()].add_permits(f.frame.len());
        }
    }
}
