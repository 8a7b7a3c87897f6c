//! Wire framing: each stream opens with one class byte, then carries frames of a
//! big-endian u32 length followed by that many payload bytes.
//!
//! The length is checked against the hard maximum (`max_frame_len(&genesis)`) before a
//! single payload byte is buffered, and the buffer only grows with bytes that actually
//! arrived, so a peer cannot make us allocate ahead of its input. A bad frame is an
//! error for the caller to count and to close the connection on; nothing here panics.

use bytes::{Buf, Bytes, BytesMut};

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// A frame that breaks the framing rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes announced, the maximum is {max}")]
    Oversized { len: usize, max: usize },
    #[error("frame of 0 bytes announced, expected at least 1")]
    Empty,
    #[error("stream ended inside a frame: expected {expected} more bytes, found {found}")]
    Truncated { expected: usize, found: usize },
}

/// The header announcing a payload of `len` bytes; the caller has checked `len`
/// against the frame limit, which is below `u32::MAX`.
pub fn header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!(u32::try_from(len).is_ok());
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// Splits a byte stream into frames of at most `max` bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max: usize,
}

impl FrameDecoder {
    /// A decoder for frames of at most `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max,
        }
    }

    /// Appends received bytes. Call only after [`FrameDecoder::next_frame`] returned
    /// `Ok(None)`: the buffer then never holds more than one frame plus one chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the framing
    /// error (the stream is then unusable).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(head) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(head);
        let len = u32::from_be_bytes(h) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::Oversized { len, max: self.max });
        }
        if self.buf.len() < HEADER_LEN + len {
            // Grow towards the announced length only as bytes arrive.
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let expected = match self.buf.get(..HEADER_LEN) {
            Some(head) => {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(head);
                HEADER_LEN + u32::from_be_bytes(h) as usize
            }
            None => HEADER_LEN,
        };
        Err(FrameError::Truncated {
            expected,
            found: self.buf.len(),
        })
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(frames: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&header(f.len()));
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn frames_split_across_any_chunking_come_out_whole() {
        let bytes = wire(&[b"hello", b"x", &[9u8; 300]]);
        for chunk in [1, 2, 3, 7, 64, 1000] {
            let mut d = FrameDecoder::new(300);
            let mut out = Vec::new();
            for c in bytes.chunks(chunk) {
                d.feed(c);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f);
                }
            }
            assert!(d.finish().is_ok());
            assert_eq!(out.len(), 3, "chunk {chunk}");
            assert_eq!(&out[0][..], b"hello");
            assert_eq!(&out[2][..], &[9u8; 300][..]);
        }
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        let mut d = FrameDecoder::new(100);
        d.feed(&header(101));
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Oversized { len: 101, max: 100 })
        );
        let mut d = FrameDecoder::new(100);
        d.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::Oversized { .. })));
        // Nothing was reserved for the announced payload.
        assert_eq!(d.buffered(), HEADER_LEN);
    }

    #[test]
    fn empty_frame_is_refused() {
        let mut d = FrameDecoder::new(100);
        d.feed(&header(0));
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        let mut d = FrameDecoder::new(100);
        d.feed(&wire(&[b"abc"])[..5]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated {
                expected: 7,
                found: 5
            })
        );
        let mut d = FrameDecoder::new(100);
        d.feed(&[0, 0]);
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }
}
