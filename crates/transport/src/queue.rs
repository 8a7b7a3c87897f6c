//! Per-peer outbound queues, one per frame class, bounded in frames and bytes.
//!
//! A slow or silent peer can hold at most `QueueLimits` worth of frames here; past
//! that, new frames are dropped and counted (the engine's STATUS retransmission
//! repairs what is lost). Each class has its own caps, so a relay or bulk flood cannot
//! fill the room kept for consensus; and when the peer's total is reached a consensus
//! frame evicts queued bulk, then relay, frames (newest first), never the reverse.
//! Pure data structure: the transport wraps it in a mutex and wakes writers.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::FrameClass;

/// Bounds of one peer's outbound queues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most frames queued per class (indexed by [`FrameClass::index`]).
    pub frames: [usize; 3],
    /// Most payload bytes queued per class; each must hold one largest frame.
    pub bytes: [usize; 3],
    /// Most payload bytes queued for one peer, all classes together; must hold one
    /// largest frame.
    pub total_bytes: usize,
}

impl QueueLimits {
    /// Defaults for a chain whose largest frame is `max_frame` bytes: room for one
    /// largest frame per class plus some slack, and many small consensus frames.
    pub fn for_frame_len(max_frame: usize) -> QueueLimits {
        let slack = 4 << 20;
        QueueLimits {
            frames: [4096, 4096, 64],
            bytes: [max_frame + slack; 3],
            total_bytes: max_frame + 2 * slack,
        }
    }

    /// Checks that every cap admits at least one largest frame; the error names the
    /// field, what was expected and what was found.
    pub fn check(&self, max_frame: usize) -> Result<(), String> {
        for class in FrameClass::ALL {
            let i = class.index();
            if self.frames[i] == 0 {
                return Err(format!("queue.frames[{class}] must be at least 1, found 0"));
            }
            if self.bytes[i] < max_frame {
                return Err(format!(
                    "queue.bytes[{class}] must hold one largest frame ({max_frame} bytes), found {}",
                    self.bytes[i]
                ));
            }
        }
        if self.total_bytes < max_frame {
            return Err(format!(
                "queue.total_bytes must hold one largest frame ({max_frame} bytes), found {}",
                self.total_bytes
            ));
        }
        Ok(())
    }
}

/// What one peer's queues hold now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames queued, by class.
    pub frames: [usize; 3],
    /// Payload bytes queued, by class.
    pub bytes: [usize; 3],
}

impl QueueStats {
    /// Payload bytes queued, all classes.
    pub fn total_bytes(&self) -> usize {
        self.bytes.iter().sum()
    }
}

/// The result of offering a frame to a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Whether the offered frame was queued (else it was dropped).
    pub queued: bool,
    /// Frames of each class evicted to make room for it.
    pub evicted: [u64; 3],
}

/// The queues of one peer.
#[derive(Debug, Default)]
pub(crate) struct OutQueues {
    queues: [VecDeque<Bytes>; 3],
    bytes: [usize; 3],
}

impl OutQueues {
    fn total(&self) -> usize {
        self.bytes.iter().sum()
    }

    /// Offers `frame` of `class`; the caller has checked it is at most the frame limit,
    /// which `limits` admits (see [`QueueLimits::check`]).
    pub fn push(&mut self, class: FrameClass, frame: Bytes, limits: &QueueLimits) -> Pushed {
        let c = class.index();
        let len = frame.len();
        let mut evicted = [0u64; 3];
        let dropped = |evicted| Pushed {
            queued: false,
            evicted,
        };
        if self.queues[c].len() >= limits.frames[c] || self.bytes[c] + len > limits.bytes[c] {
            return dropped(evicted);
        }
        if self.total() + len > limits.total_bytes {
            if class != FrameClass::Consensus {
                return dropped(evicted);
            }
            // Evict only if that suffices: never lose bulk frames for nothing.
            let evictable =
                self.bytes[FrameClass::Bulk.index()] + self.bytes[FrameClass::Relay.index()];
            if self.total() - evictable + len > limits.total_bytes {
                return dropped(evicted);
            }
            for victim in [FrameClass::Bulk, FrameClass::Relay] {
                let v = victim.index();
                while self.total() + len > limits.total_bytes {
                    let Some(f) = self.queues[v].pop_back() else {
                        break;
                    };
                    self.bytes[v] -= f.len();
                    evicted[v] += 1;
                }
            }
        }
        self.bytes[c] += len;
        self.queues[c].push_back(frame);
        debug_assert!(self.total() <= limits.total_bytes);
        debug_assert!(self.queues[c].len() <= limits.frames[c]);
        Pushed {
            queued: true,
            evicted,
        }
    }

    /// Moves up to `max_frames` frames (and about `max_bytes`, at least one frame) of
    /// `class` into `out`, oldest first.
    pub fn pop_batch(
        &mut self,
        class: FrameClass,
        max_frames: usize,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
    ) {
        let c = class.index();
        let mut taken = 0usize;
        while out.len() < max_frames {
            let Some(next) = self.queues[c].front() else {
                break;
            };
            if !out.is_empty() && taken + next.len() > max_bytes {
                break;
            }
            let Some(f) = self.queues[c].pop_front() else {
                break;
            };
            taken += f.len();
            self.bytes[c] -= f.len();
            out.push(f);
        }
    }

    /// What is queued now.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            frames: std::array::from_fn(|i| self.queues[i].len()),
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueueLimits {
        QueueLimits {
            frames: [4, 4, 4],
            bytes: [400, 400, 400],
            total_bytes: 500,
        }
    }

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn class_frame_cap_drops_new_frames() {
        let mut q = OutQueues::default();
        for _ in 0..4 {
            assert!(q.push(FrameClass::Relay, frame(10), &limits()).queued);
        }
        let p = q.push(FrameClass::Relay, frame(10), &limits());
        assert!(!p.queued);
        assert_eq!(q.stats().frames, [0, 4, 0]);
    }

    #[test]
    fn consensus_evicts_bulk_then_relay_when_the_peer_total_is_full() {
        let mut q = OutQueues::default();
        assert!(q.push(FrameClass::Bulk, frame(300), &limits()).queued);
        assert!(q.push(FrameClass::Relay, frame(150), &limits()).queued);
        // Relay and bulk cannot evict anything: the total is the limit.
        assert!(!q.push(FrameClass::Relay, frame(100), &limits()).queued);
        let p = q.push(FrameClass::Consensus, frame(100), &limits());
        assert_eq!(
            p,
            Pushed {
                queued: true,
                evicted: [0, 0, 1]
            }
        );
        assert_eq!(q.stats().bytes, [100, 150, 0]);
        let p = q.push(FrameClass::Consensus, frame(300), &limits());
        assert_eq!(
            p,
            Pushed {
                queued: true,
                evicted: [0, 1, 0]
            }
        );
        assert_eq!(q.stats().bytes, [400, 0, 0]);
        // Nothing left to evict: the consensus frame itself is dropped.
        assert!(!q.push(FrameClass::Consensus, frame(100), &limits()).queued);
    }

    #[test]
    fn consensus_does_not_evict_when_eviction_would_not_make_room() {
        let mut q = OutQueues::default();
        let l = QueueLimits {
            frames: [8, 8, 8],
            bytes: [600, 500, 500],
            total_bytes: 500,
        };
        assert!(q.push(FrameClass::Consensus, frame(450), &l).queued);
        assert!(q.push(FrameClass::Bulk, frame(50), &l).queued);
        let p = q.push(FrameClass::Consensus, frame(100), &l);
        assert_eq!(
            p,
            Pushed {
                queued: false,
                evicted: [0, 0, 0]
            }
        );
        assert_eq!(q.stats().frames, [1, 0, 1]);
    }

    #[test]
    fn pop_batch_is_fifo_and_bounded() {
        let mut q = OutQueues::default();
        for i in 0..4u8 {
            q.push(FrameClass::Consensus, Bytes::from(vec![i; 50]), &limits());
        }
        let mut out = Vec::new();
        q.pop_batch(FrameClass::Consensus, 10, 120, &mut out);
        assert_eq!(out.iter().map(|f| f[0]).collect::<Vec<_>>(), vec![0, 1]);
        out.clear();
        // A frame larger than max_bytes still goes out alone.
        q.pop_batch(FrameClass::Consensus, 10, 1, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(q.stats().frames, [1, 0, 0]);
        assert_eq!(q.stats().bytes, [50, 0, 0]);
    }

    #[test]
    fn limits_must_hold_one_largest_frame() {
        assert!(QueueLimits::for_frame_len(1 << 20).check(1 << 20).is_ok());
        let err = limits().check(450).unwrap_err();
        assert!(err.contains("queue.bytes[consensus]"), "{err}");
        let mut l = limits();
        l.frames[2] = 0;
        assert!(l.check(10).unwrap_err().contains("queue.frames[bulk]"));
    }
}
