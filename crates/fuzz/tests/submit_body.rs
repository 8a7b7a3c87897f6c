//! `POST /txs` bodies: what parsing one costs, measured with the counting allocator.

use stele_crypto::{PublicKey, Signature, Signed};
use stele_fuzz::alloc::{self, Counting};
use stele_types::api::{decode_submit_body, SubmitBodyError, MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY};
use stele_types::tx::{RecordKey, RecordValue, MAX_RECORD_KEY_LEN, MAX_RECORD_VALUE_LEN};
use stele_types::{codec, Nonce, Op, Transaction, TxBody};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most heap one `POST /txs` body may cost to parse, beyond the body itself: twice the
/// body bound. The largest legitimate batch (4,096 largest txs) needs less than 8 MiB.
const PARSE_BOUND: usize = 2 * MAX_SUBMIT_BODY;

/// A JSON array of zeros, as long as a body may be.
fn zeros_array(len: usize) -> Vec<u8> {
    let mut b = b"[0".to_vec();
    while b.len() + 3 <= len {
        b.extend_from_slice(b",0");
    }
    b.push(b']');
    b
}

#[test]
fn an_8_mib_json_array_of_zeros_parses_within_the_bound() {
    assert!(
        alloc::installed(),
        "the counting allocator is not installed"
    );
    let body = zeros_array(MAX_SUBMIT_BODY);
    assert!(body.len() <= MAX_SUBMIT_BODY && body.len() > MAX_SUBMIT_BODY - 4);
    let (parsed, peak) = alloc::measure(|| decode_submit_body(&body, false));
    eprintln!("{} bytes of [0,0,...]: peak {} KiB", body.len(), peak >> 10);
    assert!(
        matches!(parsed, Err(SubmitBodyError::Json(_))),
        "zeros are not txs: {parsed:?}"
    );
    assert!(
        peak <= PARSE_BOUND,
        "parsing a {} byte body peaked at {} MiB of heap, the bound is {} MiB",
        body.len(),
        peak >> 20,
        PARSE_BOUND >> 20
    );
}

/// The largest tx a client can send: longest key and value.
fn largest_tx(nonce: u64) -> Transaction {
    Signed {
        value: TxBody {
            sender: PublicKey([1; 32]),
            nonce: Nonce(nonce),
            op: Op::Put {
                key: RecordKey::new(vec![0xab; MAX_RECORD_KEY_LEN]).expect("fits"),
                value: RecordValue::new(vec![0xcd; MAX_RECORD_VALUE_LEN]).expect("fits"),
            },
        },
        // The parser does not check signatures.
        signature: Signature([7; 64]),
    }
}

#[test]
fn the_largest_legitimate_batches_parse_within_the_bound() {
    assert!(
        alloc::installed(),
        "the counting allocator is not installed"
    );
    let txs: Vec<Transaction> = (0..MAX_SUBMIT_BATCH as u64).map(largest_tx).collect();
    let binary = codec::encode(&txs);
    assert!(binary.len() <= MAX_SUBMIT_BODY);
    // As many as JSON's hex leaves room for in one body (the last tx has the longest nonce).
    let per_tx = serde_json::to_vec(&txs[MAX_SUBMIT_BATCH - 1])
        .expect("serialises")
        .len()
        + 1;
    let json = serde_json::to_vec(&txs[..MAX_SUBMIT_BODY / per_tx]).expect("serialises");
    assert!(json.len() <= MAX_SUBMIT_BODY);
    for (body, is_binary) in [(&binary, true), (&json, false)] {
        let (parsed, peak) = alloc::measure(|| decode_submit_body(body, is_binary));
        let n = parsed.map(|t| t.len()).expect("valid batch");
        eprintln!(
            "{n} txs, {} bytes (binary: {is_binary}): peak {} KiB",
            body.len(),
            peak >> 10
        );
        assert!(
            peak <= PARSE_BOUND,
            "{n} txs in {} bytes (binary: {is_binary}) peaked at {} MiB, the bound is {} MiB",
            body.len(),
            peak >> 20,
            PARSE_BOUND >> 20
        );
    }
}
