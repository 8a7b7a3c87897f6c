//! Column family names and key encodings.
//!
//! Heights and nonces are big-endian so RocksDB's byte order is numeric order: the last
//! key of `blocks` is the latest height, and a range of heights is a key range.

use stele_crypto::{PublicKey, PUBLIC_KEY_LEN};
use stele_types::{Height, Nonce, RecordKey};

/// height → (state digest after it, block). Height 0 holds the genesis entry.
pub const BLOCKS: &str = "blocks";
/// block digest → height.
pub const BLOCK_INDEX: &str = "block_index";
/// tx hash → (height, index, result), applied txs only, write-once.
pub const TX_INDEX: &str = "tx_index";
/// (sender, nonce) → tx hash, applied txs only, write-once.
pub const NONCE_INDEX: &str = "nonce_index";
/// height → commit certificate.
pub const CERTS: &str = "certs";
/// height → every tx's result in block order (the leaves of the results root, with the
/// block's tx hashes), so a receipt for any height can be proven.
pub const RESULTS: &str = "results";
/// checkpoint height → the state digest's opening there (its state root among it), so a
/// peer can prove a snapshot's root against the checkpoint certificate.
pub const OPENINGS: &str = "openings";
/// public key → account.
pub const ACCOUNTS: &str = "accounts";
/// (owner, record key) → record value.
pub const RECORDS: &str = "records";
/// `DurableKey` bytes → `DurableEntry`: the engine's durable state.
pub const CONSENSUS: &str = "consensus";
/// Byzantine evidence, written by the node.
pub const EVIDENCE: &str = "evidence";
/// Single facts about the store: [`HORIZON_KEY`], [`FORMAT_KEY`], and the checkpoint certificate of each
/// kept snapshot ([`snapshot_cert_key`]).
pub const META: &str = "meta";
/// → the lowest height above genesis whose block is kept (absent: 1). A store started
/// from a snapshot at height h holds blocks from h on.
pub const HORIZON_KEY: &[u8] = b"horizon";
/// In `meta`: the store format the database was written in ([`crate::STORE_FORMAT`]),
/// four bytes big-endian.
pub const FORMAT_KEY: &[u8] = b"format";

/// Every column family: DESIGN.md's "Store" list, with `results`, `openings` and `meta`
/// (RocksDB's own `default` family exists too and stays empty).
pub const COLUMN_FAMILIES: [&str; 12] = [
    BLOCKS,
    BLOCK_INDEX,
    TX_INDEX,
    NONCE_INDEX,
    CERTS,
    RESULTS,
    OPENINGS,
    ACCOUNTS,
    RECORDS,
    CONSENSUS,
    EVIDENCE,
    META,
];

/// → the stable checkpoint certificate at a kept snapshot's height.
pub fn snapshot_cert_key(h: Height) -> Vec<u8> {
    let mut k = b"snapshot-cert/".to_vec();
    k.extend_from_slice(&h.0.to_be_bytes());
    k
}

pub fn height_key(h: Height) -> [u8; 8] {
    h.0.to_be_bytes()
}

/// The height a `blocks` or `certs` key names, if it is one.
pub fn parse_height(key: &[u8]) -> Option<Height> {
    let bytes: [u8; 8] = key.try_into().ok()?;
    Some(Height(u64::from_be_bytes(bytes)))
}

pub fn nonce_key(sender: &PublicKey, nonce: Nonce) -> [u8; PUBLIC_KEY_LEN + 8] {
    let mut k = [0u8; PUBLIC_KEY_LEN + 8];
    k[..PUBLIC_KEY_LEN].copy_from_slice(sender.as_bytes());
    k[PUBLIC_KEY_LEN..].copy_from_slice(&nonce.0.to_be_bytes());
    k
}

/// Owner first (fixed length), so one owner's records are one key range.
pub fn record_key(owner: &PublicKey, key: &RecordKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(PUBLIC_KEY_LEN + key.len());
    k.extend_from_slice(owner.as_bytes());
    k.extend_from_slice(key.as_slice());
    k
}

/// A key for error messages: hex, shortened.
pub fn show(key: &[u8]) -> String {
    if key.len() <= 48 {
        hex::encode(key)
    } else {
        format!("{}…({} bytes)", hex::encode(&key[..48]), key.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_keys_sort_numerically_and_round_trip() {
        assert!(height_key(Height(255)) < height_key(Height(256)));
        assert_eq!(parse_height(&height_key(Height(77))), Some(Height(77)));
        assert_eq!(parse_height(&[1, 2, 3]), None);
    }

    #[test]
    fn nonce_keys_sort_by_sender_then_nonce() {
        let a = PublicKey([1; 32]);
        let b = PublicKey([2; 32]);
        assert!(nonce_key(&a, Nonce(u64::MAX)) < nonce_key(&b, Nonce(0)));
        assert!(nonce_key(&a, Nonce(255)) < nonce_key(&a, Nonce(256)));
    }
}
