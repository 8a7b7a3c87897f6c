//! `POST /txs` bodies: what parsing one costs, measured with the counting allocator.

use stele_fuzz::alloc::{self, Counting};
use stele_types::api::MAX_SUBMIT_BODY;
use stele_types::Transaction;

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

// The parser crates/node/src/api.rs used before issue 22, copied: serde buffers an
// untagged enum's whole input as `Content` before it tries the first variant.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Transaction>),
    One(Box<Transaction>),
}

fn parse_before(bytes: &[u8]) -> Result<Vec<Transaction>, String> {
    match serde_json::from_slice::<OneOrMany>(bytes) {
        Ok(OneOrMany::Many(v)) => Ok(v),
        Ok(OneOrMany::One(t)) => Ok(vec![*t]),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
#[ignore = "issue 22: reproduces the untagged JSON buffering of POST /txs; fixed in the next commit"]
fn an_8_mib_json_array_of_zeros_parses_within_the_bound() {
    assert!(
        alloc::installed(),
        "the counting allocator is not installed"
    );
    let body = zeros_array(MAX_SUBMIT_BODY);
    assert!(body.len() <= MAX_SUBMIT_BODY && body.len() > MAX_SUBMIT_BODY - 4);
    let (parsed, peak) = alloc::measure(|| parse_before(&body));
    assert!(parsed.is_err(), "zeros are not txs");
    assert!(
        peak <= PARSE_BOUND,
        "parsing a {} byte body peaked at {} MiB of heap, the bound is {} MiB",
        body.len(),
        peak >> 20,
        PARSE_BOUND >> 20
    );
}
