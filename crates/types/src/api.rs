//! The validator's HTTP API as JSON: what `stele-node` serves and the `stele` client reads.
//!
//! One set of types on both sides, so the node and the client cannot drift apart. Paths:
//! `GET /status`, `/blocks/{height}`, `/txs/{hash}`, `/accounts/{key}`, `/metrics`,
//! `/health`, `/ready`; `POST /txs` (one tx or a JSON array, or the codec encoding of a
//! `Vec<Transaction>` with `content-type: application/octet-stream`; `?wait=true` waits
//! for the final outcome). Every 4xx carries an [`ApiError`].

use serde::{Deserialize, Serialize};
use stele_crypto::{ChainId, Digest, PublicKey, Signed};

use crate::block::Block;
use crate::certs::CommitCertificate;
use crate::exec::TxResult;
use crate::ids::{Amount, Height, Nonce, ReplicaId, ViewNumber};
use crate::messages::Receipt;
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
    /// This validator's signed receipt, for a final outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Signed<Receipt>>,
    /// The tx itself, when this validator holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<Transaction>,
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
            tx: None,
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
    /// snake_case, e.g. `bad_signature`, `wrong_chain`, `unknown_sender`, `nonce_too_far`,
    /// `sender_quota`, `mempool_full`, `malformed`, `too_large`, `not_found`.
    pub reason: String,
    pub error: String,
    /// For a batch: the index of the tx that was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
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

    #[test]
    fn only_applied_and_stale_nonce_are_final() {
        assert!(TxStatus::Applied.is_final());
        assert!(TxStatus::StaleNonce.is_final());
        assert!(!TxStatus::Pending.is_final());
        assert!(!TxStatus::Gapped.is_final());
        assert!(!TxStatus::Unknown.is_final());
    }
}
