//! Frames received from peers on their way to the node: one channel per class, taken
//! consensus first, and the budget that bounds what each peer has waiting in them.
//!
//! The budget is per peer, all classes together: a peer names the class of every stream
//! it opens, so budgets per class let one peer take the room of every class, and room
//! shared by all peers let one peer keep the others out. Part of each peer's bytes is
//! kept for its consensus frames, so its own relay and bulk traffic cannot hold them
//! back. A reader whose peer is at its budget stops reading; QUIC flow control then
//! stops the peer.

use bytes::Bytes;
use stele_types::ReplicaId;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};

use crate::FrameClass;

/// How much of one peer's traffic may wait for the node, as [`crate::Tuning`] sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerLimits {
    /// Frames, all classes.
    pub frames: usize,
    /// Payload bytes, all classes.
    pub bytes: usize,
    /// Of `bytes`, those only consensus frames may use.
    pub consensus_reserve: usize,
}

/// What one peer has waiting for the node, as permits still free.
#[derive(Debug)]
pub(crate) struct PeerBudget {
    frames: Semaphore,
    bytes: Semaphore,
    /// Bytes relay and bulk frames may use: `bytes` less the consensus reserve.
    non_consensus: Semaphore,
}

/// The room one frame takes until the node receives it; dropped unused, it is freed.
#[derive(Debug)]
pub(crate) struct Room<'a> {
    permits: [Option<SemaphorePermit<'a>>; 3],
}

impl Room<'_> {
    /// The frame is in the channel: its room is now freed by [`Inbound`] when the node
    /// takes it.
    pub fn hand_over(self) {
        for p in self.permits.into_iter().flatten() {
            p.forget();
        }
    }
}

impl PeerBudget {
    pub fn new(limits: PeerLimits) -> PeerBudget {
        debug_assert!(limits.consensus_reserve < limits.bytes);
        PeerBudget {
            frames: Semaphore::new(limits.frames),
            bytes: Semaphore::new(limits.bytes),
            non_consensus: Semaphore::new(limits.bytes - limits.consensus_reserve),
        }
    }

    /// Waits for room for one frame of `len` bytes (at most the frame limit, which the
    /// limits admit); `None` once the budget is closed (shutdown).
    ///
    /// Acquired in one order (frames, relay and bulk bytes, all bytes), and the last is
    /// held only by frames in the channels, which the node drains: no reader waits on
    /// another reader for ever.
    pub async fn room(&self, class: FrameClass, len: usize) -> Option<Room<'_>> {
        let cost = u32::try_from(len).ok()?;
        let frames = self.frames.acquire().await.ok()?;
        let non_consensus = match class {
            FrameClass::Consensus => None,
            FrameClass::Relay | FrameClass::Bulk => {
                Some(self.non_consensus.acquire_many(cost).await.ok()?)
            }
        };
        let bytes = self.bytes.acquire_many(cost).await.ok()?;
        Some(Room {
            permits: [Some(frames), non_consensus, Some(bytes)],
        })
    }

    /// Frees the room of a frame the node has taken.
    fn release(&self, class: FrameClass, len: usize) {
        self.frames.add_permits(1);
        self.bytes.add_permits(len);
        if class != FrameClass::Consensus {
            self.non_consensus.add_permits(len);
        }
    }

    /// Wakes every waiting reader with `None`.
    pub fn close(&self) {
        self.frames.close();
        self.bytes.close();
        self.non_consensus.close();
    }
}

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
/// frees its room in its sender's budget, which lets that sender's readers read on.
#[derive(Debug)]
pub struct Inbound {
    rx: [mpsc::Receiver<InboundFrame>; 3],
    /// Indexed by replica id.
    budgets: std::sync::Arc<[PeerBudget]>,
    relay_first: bool,
}

impl Inbound {
    pub(crate) fn new(
        rx: [mpsc::Receiver<InboundFrame>; 3],
        budgets: std::sync::Arc<[PeerBudget]>,
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
            // Only authenticated peers' frames come here, so the id has a budget.
            if let Some(b) = self.budgets.get(f.from.index()) {
                b.release(f.class, f.frame.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: PeerLimits = PeerLimits {
        frames: 8,
        bytes: 100,
        consensus_reserve: 40,
    };

    async fn room_now(b: &PeerBudget, class: FrameClass, len: usize) -> Option<Room<'_>> {
        tokio::time::timeout(Duration::from_millis(20), b.room(class, len))
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn relay_and_bulk_together_stop_at_the_budget_less_the_reserve() {
        let b = PeerBudget::new(LIMITS);
        room_now(&b, FrameClass::Relay, 30)
            .await
            .unwrap()
            .hand_over();
        room_now(&b, FrameClass::Bulk, 30)
            .await
            .unwrap()
            .hand_over();
        assert!(room_now(&b, FrameClass::Bulk, 1).await.is_none());
        assert!(room_now(&b, FrameClass::Relay, 1).await.is_none());
        // The reserve is the consensus frames', and so is what relay and bulk left.
        room_now(&b, FrameClass::Consensus, 40)
            .await
            .unwrap()
            .hand_over();
        assert!(room_now(&b, FrameClass::Consensus, 1).await.is_none());
        b.release(FrameClass::Bulk, 30);
        room_now(&b, FrameClass::Consensus, 30)
            .await
            .unwrap()
            .hand_over();
    }

    #[tokio::test]
    async fn consensus_frames_may_fill_the_whole_budget() {
        let b = PeerBudget::new(LIMITS);
        room_now(&b, FrameClass::Consensus, 100)
            .await
            .unwrap()
            .hand_over();
        assert!(room_now(&b, FrameClass::Relay, 1).await.is_none());
        b.release(FrameClass::Consensus, 100);
        room_now(&b, FrameClass::Relay, 60)
            .await
            .unwrap()
            .hand_over();
    }

    #[tokio::test]
    async fn the_frame_cap_binds_small_frames_and_unused_room_is_freed() {
        let b = PeerBudget::new(LIMITS);
        let held: Vec<Room<'_>> = rooms(&b, 8).await;
        assert!(room_now(&b, FrameClass::Consensus, 1).await.is_none());
        drop(held);
        // Dropped without hand-over (the connection closed first): all freed.
        assert!(room_now(&b, FrameClass::Consensus, 100).await.is_some());
    }

    async fn rooms(b: &PeerBudget, n: usize) -> Vec<Room<'_>> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(room_now(b, FrameClass::Consensus, 1).await.unwrap());
        }
        v
    }

    #[tokio::test]
    async fn a_closed_budget_wakes_its_waiters_with_none() {
        let b = PeerBudget::new(LIMITS);
        room_now(&b, FrameClass::Consensus, 100)
            .await
            .unwrap()
            .hand_over();
        let (waited, ()) = tokio::join!(b.room(FrameClass::Consensus, 1), async {
            tokio::task::yield_now().await;
            b.close();
        });
        assert!(waited.is_none());
    }
}
