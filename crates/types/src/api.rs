//! The validator's HTTP API as JSON: what `stele-node` serves and the `stele` client reads.
//!
//! One set of types on both sides, so the node and the client cannot drift apart. Paths:
//! `GET /status`, `/blocks/{height}`, `/txs/{hash}`, `/accounts/{key}`, `/metrics`,
//! `/health`, `/ready`; `POST /txs` (one tx or a JSON array, or the codec encoding of a
//! `Vec<Transaction>` with `content-type: application/octet-stream`; `?wait=true` waits
//! for the final outcome; `accept: application/octet-stream` asks for the answer as a
//! [`BinarySubmitResponse`]). Every 4xx carries an [`ApiError`]. [`decode_submit_body`]
//! parses a `POST /txs` body.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use stele_crypto::{merkle, ChainId, Digest, PublicKey, Signed};

use crate::block::Block;
use crate::certs::CommitCertificate;
use crate::codec::{self, CodecError};
use crate::exec::TxResult;
use crate::ids::{Amount, Height, Nonce, ReplicaId, ViewNumber};
use crate::messages::{BlockReceipt, Receipt};
use crate::tx::{Transaction, TxHash};

/// Most txs one `POST /txs` may carry.
pub const MAX_SUBMIT_BATCH: usize = 4096;
/// Largest `POST /txs` body, JSON or binary.
pub const MAX_SUBMIT_BODY: usize = 8 << 20;
/// The content type of a binary `POST /txs` body: `codec::encode(&Vec<Transaction>)`.
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// `GET /status`: the height and view this validator answers from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub validator: ReplicaId,
    pub chain_id: ChainId,
    /// Digest of the genesis this validator runs: with `chain_id`, what every signature on
    /// the chain is bound to. A client whose genesis file has another digest holds
    /// another chain's file, and nothing it signs verifies here.
    pub genesis: Digest,
    /// Highest executed (committed and applied) height.
    pub height: Height,
    pub view: ViewNumber,
    /// Whether it takes part in the current view (false while changing views).
    pub active: bool,
    /// Digest of the block at `height` (the null digest's constant at height 0).
    pub block_hash: Digest,
    /// State digest after `height`.
    pub state_digest: Digest,
    /// Low watermark: the latest stable checkpoint.
    pub stable_checkpoint: Height,
    pub peers_connected: u32,
    /// Whether commits are synced to disk (off gives up durability; benchmarks refuse it).
    pub sync: bool,
    /// Whether it is recovering a wiped data directory and does not vote yet.
    pub recovering: bool,
    pub mempool_txs: u64,
    /// The latest checkpoint height this validator executed since it started, and the
    /// state root there (a Merkle root over every account and record; the state digest
    /// at that height, which checkpoints sign, covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_root: Option<StateRootAt>,
    /// While this validator fetches a snapshot at start (issue 24): how far it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_sync: Option<SnapshotSyncStatus>,
}

/// A snapshot sync in progress, as `GET /status` and `stele status` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSyncStatus {
    /// The checkpoint height being fetched.
    pub height: Height,
    pub chunks_done: u64,
    pub chunks_left: u64,
    pub bytes: u64,
    /// Peers still asked.
    pub peers: u64,
    /// Seconds left at the rate so far, once a chunk arrived.
    pub eta_seconds: Option<u64>,
}

/// `GET /checkpoint`: this validator's latest stable checkpoint certificate and the
/// opening of the state digest it signs. `StateOpening::verify` turns the two into a
/// state root that only the genesis file's validators could have vouched for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointResponse {
    pub certificate: crate::certs::CheckpointCertificate,
    pub opening: crate::state_root::StateOpening,
}

/// A state root and the checkpoint height it is the state root of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRootAt {
    pub height: Height,
    pub root: Digest,
}

/// `GET /blocks/{height}`: a committed block with the q COMMITs that prove it. `stele
/// verify` checks such a file offline against the genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResponse {
    pub height: Height,
    /// H(header).
    pub digest: Digest,
    pub block: Block,
    pub certificate: CommitCertificate,
    /// State digest after this block.
    pub state_digest: Digest,
}

/// Where a tx stands at one validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    /// Applied at a height; `result` says how. Final.
    Applied,
    /// Its nonce was used by another applied tx. Final.
    StaleNonce,
    /// Waiting in the mempool for its turn.
    Pending,
    /// Waiting in the mempool for the txs before its nonce.
    Gapped,
    /// Not known here.
    Unknown,
}

impl TxStatus {
    /// Whether the outcome is final, and so comes with a signed receipt.
    pub fn is_final(self) -> bool {
        matches!(self, TxStatus::Applied | TxStatus::StaleNonce)
    }
}

/// `GET /txs/{hash}`, and each entry of a `POST /txs?wait=true` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResponse {
    pub hash: TxHash,
    pub status: TxStatus,
    /// For a final outcome: where it was applied (for `stale_nonce`, where the tx that
    /// used the nonce was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<Height>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TxResult>,
    /// This validator's receipt, for a final outcome: its signed block receipt and the
    /// Merkle proof of the tx's leaf (for `stale_nonce`, of the leaf of `used_by`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// For `stale_nonce`: the tx that used the nonce, so the client checks that it has
    /// the same sender and nonce and hashes to the receipt's leaf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<Transaction>,
    /// The tx itself, when this validator holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<Transaction>,
    /// For `unknown`, when this validator keeps no history below this height (it started
    /// from a snapshot there): the tx may have been applied below it. Ask another
    /// validator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Height>,
}

impl TxResponse {
    /// A tx this validator knows nothing of.
    pub fn unknown(hash: TxHash) -> TxResponse {
        TxResponse {
            hash,
            status: TxStatus::Unknown,
            height: None,
            index: None,
            result: None,
            receipt: None,
            used_by: None,
            tx: None,
            horizon: None,
        }
    }
}

/// What became of one submitted tx at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admitted {
    /// New here, in the mempool (executable or gapped).
    Accepted,
    /// Already pending or already final here.
    Known,
    /// Refused (only inside a batch of more than one; a single tx's refusal is the
    /// answer's 4xx or 429): `SubmitEntry::error` says why.
    Refused,
}

/// `POST /txs` answer (202, or 200 with `?wait=true`): one entry per submitted tx, in
/// order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub txs: Vec<SubmitEntry>,
}

/// One submitted tx's hash and admission, and with `?wait=true` its final outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitEntry {
    pub hash: TxHash,
    pub admitted: Admitted,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TxResponse>,
    /// Why it was refused, with `Admitted::Refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// `POST /txs` answer in the binary codec, sent instead of [`SubmitResponse`] when the
/// request says `accept: application/octet-stream`: each signed block receipt once, not
/// once per tx, digests as bytes rather than hex, and nothing the client sent echoed.
/// [`BinarySubmitResponse::into_response`] gives back the JSON answer's value exactly.
///
/// No field is skipped when empty: the codec has no field names, so every field is
/// always encoded (which is why this is not [`SubmitResponse`] itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinarySubmitResponse {
    /// The distinct block receipts the outcomes below point into.
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub blocks: Vec<Signed<BlockReceipt>>,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub txs: Vec<BinarySubmitEntry>,
}

/// One entry of a [`BinarySubmitResponse`]: a [`SubmitEntry`] with its receipt's block
/// part as an index into `blocks`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinarySubmitEntry {
    pub hash: TxHash,
    pub admitted: Admitted,
    pub outcome: Option<BinaryOutcome>,
    /// `(reason, error, index, horizon)` of the [`ApiError`].
    pub error: Option<(String, String, Option<u64>, Option<Height>)>,
}

/// A final outcome in a [`BinarySubmitResponse`] (only final outcomes are sent there:
/// a `?wait` answer leaves the others out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryOutcome {
    pub status: TxStatus,
    pub height: Height,
    pub index: u32,
    pub result: TxResult,
    /// Index of the block receipt in `blocks`.
    pub block: u32,
    /// The receipt's leaf: this tx's hash, or for `stale_nonce` that of `used_by`.
    pub leaf_hash: TxHash,
    pub leaf_result: TxResult,
    pub proof_index: u64,
    pub proof_leaf_count: u64,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub proof_path: Vec<Digest>,
    pub used_by: Option<Transaction>,
}

/// Why a binary answer cannot be built from, or turned back into, a JSON one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryAnswerError {
    #[error("entry {entry}: an outcome without height, index, result and receipt is not final")]
    NotFinal { entry: usize },
    #[error("entry {entry}: points at block receipt {block}, the answer has {blocks}")]
    NoSuchBlock {
        entry: usize,
        block: u32,
        blocks: usize,
    },
}

impl BinarySubmitResponse {
    /// The binary form of `resp`. Every outcome in it must be final, with its receipt.
    pub fn from_response(resp: &SubmitResponse) -> Result<Self, BinaryAnswerError> {
        let mut blocks: Vec<Signed<BlockReceipt>> = Vec::new();
        let mut txs = Vec::with_capacity(resp.txs.len());
        for (entry, e) in resp.txs.iter().enumerate() {
            let outcome = match &e.outcome {
                None => None,
                Some(o) => {
                    let (Some(height), Some(index), Some(result), Some(receipt)) =
                        (o.height, o.index, o.result, &o.receipt)
                    else {
                        return Err(BinaryAnswerError::NotFinal { entry });
                    };
                    if !o.status.is_final() {
                        return Err(BinaryAnswerError::NotFinal { entry });
                    }
                    // A ?wait batch's outcomes fall in a few blocks, most often the last.
                    let block = match blocks.iter().rposition(|b| *b == receipt.block) {
                        Some(i) => i,
                        None => {
                            blocks.push(receipt.block.clone());
                            blocks.len() - 1
                        }
                    };
                    Some(BinaryOutcome {
                        status: o.status,
                        height,
                        index,
                        result,
                        block: block as u32,
                        leaf_hash: receipt.tx_hash,
                        leaf_result: receipt.result,
                        proof_index: receipt.proof.index,
                        proof_leaf_count: receipt.proof.leaf_count,
                        proof_path: receipt.proof.path.clone(),
                        used_by: o.used_by.clone(),
                    })
                }
            };
            txs.push(BinarySubmitEntry {
                hash: e.hash,
                admitted: e.admitted,
                outcome,
                error: e.error.as_ref().map(|a| {
                    (
                        a.reason.clone(),
                        a.error.clone(),
                        a.index.map(|i| i as u64),
                        a.horizon,
                    )
                }),
            });
        }
        Ok(BinarySubmitResponse { blocks, txs })
    }

    /// The [`SubmitResponse`] this stands for.
    pub fn into_response(self) -> Result<SubmitResponse, BinaryAnswerError> {
        let blocks = self.blocks;
        let mut txs = Vec::with_capacity(self.txs.len());
        for (entry, e) in self.txs.into_iter().enumerate() {
            let outcome = match e.outcome {
                None => None,
                Some(o) => {
                    let block =
                        blocks
                            .get(o.block as usize)
                            .ok_or(BinaryAnswerError::NoSuchBlock {
                                entry,
                                block: o.block,
                                blocks: blocks.len(),
                            })?;
                    Some(TxResponse {
                        hash: e.hash,
                        status: o.status,
                        height: Some(o.height),
                        index: Some(o.index),
                        result: Some(o.result),
                        receipt: Some(Receipt {
                            block: block.clone(),
                            tx_hash: o.leaf_hash,
                            result: o.leaf_result,
                            proof: merkle::Proof {
                                index: o.proof_index,
                                leaf_count: o.proof_leaf_count,
                                path: o.proof_path,
                            },
                        }),
                        used_by: o.used_by,
                        tx: None,
                        horizon: None,
                    })
                }
            };
            txs.push(SubmitEntry {
                hash: e.hash,
                admitted: e.admitted,
                outcome,
                error: e.error.map(|(reason, error, index, horizon)| ApiError {
                    reason,
                    error,
                    index: index.and_then(|i| usize::try_from(i).ok()),
                    horizon,
                }),
            });
        }
        Ok(SubmitResponse { txs })
    }
}

/// `GET /accounts/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    pub key: PublicKey,
    pub balance: Amount,
    /// The next nonce this account must use.
    pub nonce: Nonce,
    /// The height this answer was read at.
    pub height: Height,
}

/// The body of every 4xx (and the rare 5xx): a stable machine-readable `reason` and a
/// sentence for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// snake_case, e.g. `bad_signature`, `unknown_sender`, `nonce_too_far`,
    /// `sender_quota`, `mempool_full`, `malformed`, `too_large`, `not_found`.
    pub reason: String,
    pub error: String,
    /// For a batch: the index of the tx that was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// For `pruned` (410): the lowest height above genesis this validator keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Height>,
}

/// Why a `POST /txs` body was refused. Always bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitBodyError {
    #[error("body of {len} bytes, the maximum is {MAX_SUBMIT_BODY}")]
    TooLarge { len: usize },
    #[error("expected a signed tx (a JSON object) or an array of them, found {found}")]
    NotTxOrArray { found: String },
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("malformed {BINARY_CONTENT_TYPE} body: {0}")]
    Binary(CodecError),
    #[error("a submission holds at most {MAX_SUBMIT_BATCH} txs, this one at least {at_least}")]
    TooMany { at_least: u64 },
    #[error("a submission holds 1..={MAX_SUBMIT_BATCH} txs, this one none")]
    Empty,
}

/// Parses a `POST /txs` body into 1..=[`MAX_SUBMIT_BATCH`] txs (signatures unchecked).
///
/// `binary`: the codec encoding of a `Vec<Transaction>` ([`BINARY_CONTENT_TYPE`]).
/// Otherwise JSON, told apart by its first non-space byte: `[` an array of txs, `{` one
/// tx. Nothing is buffered ahead of the txs themselves (a `#[serde(untagged)]` enum
/// would hold the whole document as serde `Content` first, 16 to 32 bytes per array
/// element), and an array stops at the first tx over the batch limit.
pub fn decode_submit_body(bytes: &[u8], binary: bool) -> Result<Vec<Transaction>, SubmitBodyError> {
    if bytes.len() > MAX_SUBMIT_BODY {
        return Err(SubmitBodyError::TooLarge { len: bytes.len() });
    }
    let txs = if binary {
        decode_binary(bytes)?
    } else {
        decode_json(bytes)?
    };
    if txs.is_empty() {
        return Err(SubmitBodyError::Empty);
    }
    debug_assert!(txs.len() <= MAX_SUBMIT_BATCH);
    Ok(txs)
}

fn decode_binary(bytes: &[u8]) -> Result<Vec<Transaction>, SubmitBodyError> {
    // The count comes first: refuse a batch that announces too many before decoding one.
    if let Some(n) = codec::announced_len(bytes) {
        if n > MAX_SUBMIT_BATCH as u64 {
            return Err(SubmitBodyError::TooMany { at_least: n });
        }
    }
    codec::decode::<Batch>(bytes, MAX_SUBMIT_BODY)
        .map(|b| b.0)
        .map_err(SubmitBodyError::Binary)
}

/// A binary batch, encoded as a plain `Vec<Transaction>`, grown as its txs arrive.
#[derive(Deserialize)]
struct Batch(#[serde(deserialize_with = "crate::codec::grown_vec")] Vec<Transaction>);

fn decode_json(bytes: &[u8]) -> Result<Vec<Transaction>, SubmitBodyError> {
    // JSON's four whitespace bytes, as serde_json skips them.
    let Some(&first) = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    else {
        return Err(SubmitBodyError::Empty);
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let over = Cell::new(false);
    let parsed = match first {
        b'[' => (&mut de).deserialize_seq(CappedTxs { over: &over }),
        b'{' => Transaction::deserialize(&mut de).map(|t| vec![t]),
        _ => {
            return Err(SubmitBodyError::NotTxOrArray {
                found: describe_byte(first),
            })
        }
    };
    parsed.and_then(|txs| de.end().map(|()| txs)).map_err(|e| {
        if over.get() {
            SubmitBodyError::TooMany {
                at_least: MAX_SUBMIT_BATCH as u64 + 1,
            }
        } else {
            SubmitBodyError::Json(e.to_string())
        }
    })
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("{:?}", char::from(b))
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// A JSON array of txs that fails at the first tx over [`MAX_SUBMIT_BATCH`]; `over`
/// tells that failure from a malformed one.
struct CappedTxs<'a> {
    over: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for CappedTxs<'_> {
    type Value = Vec<Transaction>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {MAX_SUBMIT_BATCH} signed txs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Grown as txs arrive, never from a size hint.
        let mut txs = Vec::new();
        while let Some(tx) = seq.next_element::<Transaction>()? {
            if txs.len() == MAX_SUBMIT_BATCH {
                self.over.set(true);
                return Err(de::Error::custom(format_args!(
                    "more than {MAX_SUBMIT_BATCH} txs"
                )));
            }
            txs.push(tx);
        }
        Ok(txs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tx_response_omits_outcome_fields() {
        let r = TxResponse::unknown(Digest::of(b"x"));
        let json = serde_json::to_string(&r).expect("serialises");
        assert!(json.contains("\"status\":\"unknown\""), "{json}");
        assert!(!json.contains("receipt"), "{json}");
        let back: TxResponse = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, r);
    }

    fn tx(nonce: u64) -> Transaction {
        // The parser never checks signatures; a fixed one keeps these tests fast.
        stele_crypto::Signed {
            value: crate::tx::TxBody {
                sender: PublicKey([1; 32]),
                nonce: Nonce(nonce),
                op: crate::tx::Op::Transfer {
                    to: PublicKey([2; 32]),
                    amount: Amount(5),
                },
            },
            signature: stele_crypto::Signature([7; 64]),
        }
    }

    fn json(v: &impl Serialize) -> Vec<u8> {
        serde_json::to_vec(v).expect("serialises")
    }

    #[test]
    fn one_json_tx_or_an_array_of_them_parses_after_leading_space() {
        let one = [b" \r\n\t".as_slice(), &json(&tx(0))].concat();
        assert_eq!(decode_submit_body(&one, false), Ok(vec![tx(0)]));
        let many = [b"\n".as_slice(), &json(&vec![tx(0), tx(1)]), b" \n"].concat();
        assert_eq!(decode_submit_body(&many, false), Ok(vec![tx(0), tx(1)]));
    }

    #[test]
    fn binary_batch_parses() {
        let b = codec::encode(&vec![tx(0), tx(1)]);
        assert_eq!(decode_submit_body(&b, true), Ok(vec![tx(0), tx(1)]));
    }

    #[test]
    fn empty_array_empty_body_and_empty_binary_batch_are_empty() {
        for body in [b"[]".as_slice(), b" [ ] ", b"", b" \n"] {
            assert_eq!(
                decode_submit_body(body, false),
                Err(SubmitBodyError::Empty),
                "{body:?}"
            );
        }
        let none: Vec<Transaction> = vec![];
        assert_eq!(
            decode_submit_body(&codec::encode(&none), true),
            Err(SubmitBodyError::Empty)
        );
    }

    #[test]
    fn json_array_over_the_batch_limit_is_too_many() {
        let at_limit: Vec<Transaction> = (0..MAX_SUBMIT_BATCH as u64).map(tx).collect();
        let parsed = decode_submit_body(&json(&at_limit), false).expect("at the limit");
        assert_eq!(parsed.len(), MAX_SUBMIT_BATCH);
        let over: Vec<Transaction> = (0..=MAX_SUBMIT_BATCH as u64).map(tx).collect();
        assert_eq!(
            decode_submit_body(&json(&over), false),
            Err(SubmitBodyError::TooMany {
                at_least: MAX_SUBMIT_BATCH as u64 + 1
            })
        );
    }

    #[test]
    fn binary_batch_announcing_too_many_is_refused_before_its_txs() {
        // The count alone, no txs after it: refused for the count, not for the truncation.
        let b = (MAX_SUBMIT_BATCH as u64 + 1).to_le_bytes();
        assert_eq!(
            decode_submit_body(&b, true),
            Err(SubmitBodyError::TooMany {
                at_least: MAX_SUBMIT_BATCH as u64 + 1
            })
        );
        let b = u64::MAX.to_le_bytes();
        assert!(matches!(
            decode_submit_body(&b, true),
            Err(SubmitBodyError::TooMany { .. })
        ));
        let b = 2u64.to_le_bytes();
        assert!(matches!(
            decode_submit_body(&b, true),
            Err(SubmitBodyError::Binary(_))
        ));
    }

    #[test]
    fn json_that_is_neither_object_nor_array_is_refused_by_its_first_byte() {
        for (body, found) in [
            (b"0".as_slice(), "'0'"),
            (b" \"tx\"", "'\"'"),
            (b"null", "'n'"),
            (b"\x00[]", "byte 0x00"),
        ] {
            match decode_submit_body(body, false) {
                Err(SubmitBodyError::NotTxOrArray { found: f }) => assert_eq!(f, found),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_or_trailing_json_keeps_serdes_message() {
        let trailing = [json(&tx(0)), b" x".to_vec()].concat();
        let Err(SubmitBodyError::Json(m)) = decode_submit_body(&trailing, false) else {
            panic!("trailing bytes accepted");
        };
        assert!(m.contains("trailing characters"), "{m}");
        let Err(SubmitBodyError::Json(m)) = decode_submit_body(b"[0]", false) else {
            panic!("a number accepted as a tx");
        };
        assert!(m.contains("invalid type"), "{m}");
        assert!(matches!(
            decode_submit_body(b"[{\"value\": 1", false),
            Err(SubmitBodyError::Json(_))
        ));
    }

    #[test]
    fn body_over_the_size_limit_is_too_large_in_either_form() {
        let b = vec![b' '; MAX_SUBMIT_BODY + 1];
        for binary in [false, true] {
            assert_eq!(
                decode_submit_body(&b, binary),
                Err(SubmitBodyError::TooLarge {
                    len: MAX_SUBMIT_BODY + 1
                })
            );
        }
    }

    #[test]
    fn only_applied_and_stale_nonce_are_final() {
        assert!(TxStatus::Applied.is_final());
        assert!(TxStatus::StaleNonce.is_final());
        assert!(!TxStatus::Pending.is_final());
        assert!(!TxStatus::Gapped.is_final());
        assert!(!TxStatus::Unknown.is_final());
    }

    fn block_receipt(height: u64) -> Signed<BlockReceipt> {
        Signed {
            value: BlockReceipt {
                replica: ReplicaId(2),
                height: Height(height),
                block_digest: Digest::of(&height.to_le_bytes()),
                results_root: Digest::of(b"results"),
                state_digest: Digest::of(b"state"),
            },
            signature: stele_crypto::Signature([height as u8; 64]),
        }
    }

    fn final_entry(t: &Transaction, height: u64, index: u32, stale: bool) -> SubmitEntry {
        let hash = crate::tx::tx_hash(t);
        let used_by = stale.then(|| tx(t.nonce.0 + 100));
        let leaf = used_by.as_ref().map_or(hash, crate::tx::tx_hash);
        let path: Vec<Digest> = (0..index + 1)
            .map(|i| Digest::of(&i.to_le_bytes()))
            .collect();
        SubmitEntry {
            hash,
            admitted: Admitted::Accepted,
            outcome: Some(TxResponse {
                hash,
                status: if stale {
                    TxStatus::StaleNonce
                } else {
                    TxStatus::Applied
                },
                height: Some(Height(height)),
                index: Some(index),
                result: Some(if stale {
                    TxResult::StaleNonce
                } else {
                    TxResult::Ok
                }),
                receipt: Some(Receipt {
                    block: block_receipt(height),
                    tx_hash: leaf,
                    result: TxResult::Ok,
                    proof: merkle::Proof {
                        index: u64::from(index),
                        leaf_count: 9,
                        path,
                    },
                }),
                used_by,
                tx: None,
                horizon: None,
            }),
            error: None,
        }
    }

    #[test]
    fn a_binary_answer_holds_each_block_receipt_once_and_gives_back_the_json_answer() {
        let txs: Vec<Transaction> = (0..6).map(tx).collect();
        let resp = SubmitResponse {
            txs: vec![
                final_entry(&txs[0], 7, 0, false),
                final_entry(&txs[1], 7, 1, false),
                final_entry(&txs[2], 8, 0, true),
                final_entry(&txs[3], 7, 2, false),
                // Admitted, not final within the wait: no outcome.
                SubmitEntry {
                    hash: crate::tx::tx_hash(&txs[4]),
                    admitted: Admitted::Known,
                    outcome: None,
                    error: None,
                },
                SubmitEntry {
                    hash: crate::tx::tx_hash(&txs[5]),
                    admitted: Admitted::Refused,
                    outcome: None,
                    error: Some(ApiError {
                        reason: "bad_signature".into(),
                        error: "signature does not verify".into(),
                        index: Some(5),
                        horizon: Some(Height(3)),
                    }),
                },
            ],
        };
        let bin = BinarySubmitResponse::from_response(&resp).expect("outcomes are final");
        assert_eq!(bin.blocks, vec![block_receipt(7), block_receipt(8)]);
        let bytes = codec::encode(&bin);
        let back: BinarySubmitResponse = codec::decode(&bytes, bytes.len()).expect("decodes");
        assert_eq!(back, bin);
        assert_eq!(back.into_response().expect("indexes in range"), resp);
        // And smaller than the JSON it stands for, which repeats each block receipt.
        assert!(bytes.len() * 2 < json(&resp).len(), "{} bytes", bytes.len());
    }

    #[test]
    fn a_binary_answer_is_built_only_from_final_outcomes_and_read_only_with_its_blocks() {
        let t = tx(1);
        let mut pending = final_entry(&t, 7, 0, false);
        if let Some(o) = pending.outcome.as_mut() {
            o.status = TxStatus::Pending;
        }
        let resp = SubmitResponse {
            txs: vec![final_entry(&t, 7, 0, false), pending],
        };
        assert_eq!(
            BinarySubmitResponse::from_response(&resp),
            Err(BinaryAnswerError::NotFinal { entry: 1 })
        );
        let mut bin = BinarySubmitResponse::from_response(&SubmitResponse {
            txs: vec![final_entry(&t, 7, 0, false)],
        })
        .expect("final");
        if let Some(o) = bin.txs[0].outcome.as_mut() {
            o.block = 1;
        }
        assert_eq!(
            bin.into_response(),
            Err(BinaryAnswerError::NoSuchBlock {
                entry: 0,
                block: 1,
                blocks: 1
            })
        );
    }
}
