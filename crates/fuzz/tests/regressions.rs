//! Inputs stele-fuzz found, each kept as a test: the decoder's heap stays within the
//! bound the fuzzer states for it.

use stele_fuzz::alloc::{self, Counting};
use stele_fuzz::corpus;
use stele_fuzz::targets::CODEC_BOUND;
use stele_types::api::decode_submit_body;
use stele_types::{codec, max_frame_len, Message};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Decodes `input` as a validator's frame payload; returns the heap peak.
fn frame_peak(input: &[u8]) -> usize {
    let limit = max_frame_len(&corpus::genesis());
    let (decoded, peak) = alloc::measure(|| codec::decode::<Message>(input, limit));
    assert!(decoded.is_err(), "the input is truncated");
    peak
}

#[test]
fn a_record_key_longer_than_its_input_is_refused_without_allocating_it() {
    assert!(alloc::installed());
    // One tx (sender, nonce, a Put) whose record key announces 32 MiB, followed by 10
    // bytes of it. (Found when a tx still began with its chain id's length.)
    let claim = (32u64 << 20).to_le_bytes();
    let tx = [
        [0x11u8; 32].as_slice(),
        &5u64.to_le_bytes(),
        &1u32.to_le_bytes(),
        &claim,
        b"stele-fuzz",
    ]
    .concat();

    let body = [1u64.to_le_bytes().as_slice(), &tx].concat();
    let (parsed, peak) = alloc::measure(|| decode_submit_body(&body, true));
    assert!(parsed.is_err());
    let bound = CODEC_BOUND.for_len(body.len());
    assert!(
        peak <= bound,
        "binary POST /txs body of {} bytes: peak {peak} bytes, bound {bound}",
        body.len()
    );

    // The same tx in a relay frame (Message::Relay is variant 12).
    let frame = [12u32.to_le_bytes().as_slice(), &1u64.to_le_bytes(), &tx].concat();
    let peak = frame_peak(&frame);
    let bound = CODEC_BOUND.for_len(frame.len());
    assert!(
        peak <= bound,
        "relay frame of {} bytes: peak {peak} bytes, bound {bound}",
        frame.len()
    );
}

#[test]
fn sequence_lengths_the_input_lacks_are_not_preallocated() {
    assert!(alloc::installed());
    let huge = (1u64 << 40).to_le_bytes();

    // FETCH-BODIES (variant 8) announcing 2^40 wanted bodies, and none of them.
    let fetch = [8u32.to_le_bytes().as_slice(), &huge].concat();

    // A signed NEW-VIEW (variant 6) with three nested sequences open at once, each
    // announcing 2^40 elements: view_changes, its first VIEW-CHANGE's prepared
    // certificates, and the first certificate's PREPAREs.
    let mut new_view = 6u32.to_le_bytes().to_vec();
    new_view.extend_from_slice(&3u64.to_le_bytes()); // view
    new_view.extend_from_slice(&huge); // view_changes
    new_view.extend_from_slice(&3u64.to_le_bytes()); // new_view
    new_view.extend_from_slice(&1u16.to_le_bytes()); // replica
    new_view.push(0); // checkpoint: None
    new_view.extend_from_slice(&huge); // prepared
    new_view.extend_from_slice(&2u64.to_le_bytes()); // pre_prepare.view
    new_view.extend_from_slice(&5u64.to_le_bytes()); // pre_prepare.height
    new_view.extend_from_slice(&[0xd1; 32]); // pre_prepare.digest
    new_view.extend_from_slice(&[0x51; 64]); // pre_prepare's signature
    new_view.extend_from_slice(&huge); // prepares

    for (what, frame) in [("fetch_bodies", &fetch), ("new_view", &new_view)] {
        let peak = frame_peak(frame);
        let bound = CODEC_BOUND.for_len(frame.len());
        assert!(
            peak <= bound,
            "{what} frame of {} bytes: peak {peak} bytes, bound {bound}",
            frame.len()
        );
    }

    // A binary POST /txs body announcing the most txs a batch may hold, and none.
    let body = 4096u64.to_le_bytes();
    let (parsed, peak) = alloc::measure(|| decode_submit_body(&body, true));
    assert!(parsed.is_err());
    let bound = CODEC_BOUND.for_len(body.len());
    assert!(
        peak <= bound,
        "binary POST /txs body announcing 4,096 txs in 8 bytes: peak {peak} bytes, bound {bound}"
    );
}
