//! Consensus messages as they travel between validators, and the client receipts.
//!
//! Votes carry digests, never bodies; a PRE-PREPARE signs (v, n, d) and its block body
//! travels beside it in a [`Proposal`]. Each signed kind has its own domain tag, so a
//! signature can never be moved from one kind to another.

use serde::{Deserialize, Serialize};
use stele_crypto::{Digest, Signable, Signed};

use crate::block::Block;
use crate::certs::{CheckpointCertificate, CommitCertificate, PreparedCertificate};
use crate::codec;
use crate::exec::TxResult;
use crate::ids::{Height, ReplicaId, ViewNumber};
use crate::tx::{Transaction, TxHash};
use crate::validators::ValidatorSet;

/// A message whose signer is determined by its content (and the validator set).
pub trait ReplicaSigned {
    /// The replica whose key must have signed it.
    fn signer(&self, validators: &ValidatorSet) -> ReplicaId;
}

macro_rules! signable {
    ($t:ty, $tag:literal) => {
        impl Signable for $t {
            const DOMAIN: &'static str = $tag;
            fn signing_bytes(&self) -> Vec<u8> {
                codec::encode(self)
            }
        }
    };
}

/// PRE-PREPARE(v, n, d), signed by primary(v).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: ViewNumber,
    pub height: Height,
    pub digest: Digest,
}
signable!(PrePrepare, "stele/pre-prepare");
impl ReplicaSigned for PrePrepare {
    fn signer(&self, vs: &ValidatorSet) -> ReplicaId {
        vs.primary(self.view)
    }
}

/// PREPARE(v, n, d) from a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub view: ViewNumber,
    pub height: Height,
    pub digest: Digest,
    pub replica: ReplicaId,
}
signable!(Prepare, "stele/prepare");

/// COMMIT(v, n, d).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub view: ViewNumber,
    pub height: Height,
    pub digest: Digest,
    pub replica: ReplicaId,
}
signable!(Commit, "stele/commit");

/// CHECKPOINT(n, state digest): no view, so replicas that executed a height in
/// different views still agree on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub height: Height,
    pub state_digest: Digest,
    pub replica: ReplicaId,
}
signable!(Checkpoint, "stele/checkpoint");

/// VIEW-CHANGE(w): the sender's stable checkpoint with its proof (`None` at genesis)
/// and, for every height above it, the prepared certificate of the highest view in which
/// the sender prepared that height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub new_view: ViewNumber,
    pub replica: ReplicaId,
    pub checkpoint: Option<CheckpointCertificate>,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub prepared: Vec<PreparedCertificate>,
}
signable!(ViewChange, "stele/view-change");

impl ViewChange {
    /// Height of the stable checkpoint it carries (0 = genesis).
    pub fn checkpoint_height(&self) -> Height {
        self.checkpoint.as_ref().map_or(Height(0), |c| c.height)
    }
}

/// NEW-VIEW(w, V, O), signed by primary(w). Each entry of O is a standalone signed
/// PRE-PREPARE, so a certificate built on it verifies without the NEW-VIEW.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    pub view: ViewNumber,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub view_changes: Vec<Signed<ViewChange>>,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub pre_prepares: Vec<Signed<PrePrepare>>,
}
signable!(NewView, "stele/new-view");
impl ReplicaSigned for NewView {
    fn signer(&self, vs: &ValidatorSet) -> ReplicaId {
        vs.primary(self.view)
    }
}

/// STATUS: the periodic signed summary that drives retransmission and catch-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub replica: ReplicaId,
    pub view: ViewNumber,
    pub active: bool,
    pub executed: Height,
    pub stable_checkpoint: Height,
}
signable!(Status, "stele/status");

/// A validator's signed statement of what executing one block produced. It signs one
/// per executed block, whatever the number of txs in it; a tx's [`Receipt`] is this plus
/// a Merkle path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockReceipt {
    pub replica: ReplicaId,
    pub height: Height,
    pub block_digest: Digest,
    /// Merkle root over the block's [`results_leaf`]s, in block order.
    pub results_root: Digest,
    /// The state digest after the block, which covers `results_root`.
    pub state_digest: Digest,
}
signable!(BlockReceipt, "stele/block-receipt");

/// A results-root leaf: the codec encoding of (tx hash, result). Every tx of a block
/// has one, whatever its result.
pub fn results_leaf(hash: &TxHash, result: TxResult) -> Vec<u8> {
    codec::encode(&(hash, result))
}

/// One validator's receipt for a tx's final outcome: its signed block receipt and the
/// Merkle proof that leaf (`tx_hash`, `result`) sits at `proof.index` under the block's
/// results root. For `stale_nonce` the leaf is the tx that used the nonce, whose body
/// travels beside the receipt, so the client checks sender and nonce itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub block: Signed<BlockReceipt>,
    pub tx_hash: TxHash,
    /// The leaf's result: always an applied one, since only those are final.
    pub result: TxResult,
    pub proof: stele_crypto::merkle::Proof,
}

impl Receipt {
    /// The validator whose block receipt this is.
    pub fn replica(&self) -> ReplicaId {
        self.block.replica
    }

    /// Whether the proof shows the leaf under the block receipt's results root (the
    /// signature is not checked here).
    pub fn proves_leaf(&self) -> bool {
        self.proof.verify(
            &self.block.results_root,
            &results_leaf(&self.tx_hash, self.result),
        )
    }
}

macro_rules! signed_by_field {
    ($($t:ty),*) => {$(
        impl ReplicaSigned for $t {
            fn signer(&self, _: &ValidatorSet) -> ReplicaId {
                self.replica
            }
        }
    )*};
}
signed_by_field!(
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    Status,
    BlockReceipt
);

/// A PRE-PREPARE with its block body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub pre_prepare: Signed<PrePrepare>,
    pub body: Block,
}

/// Ask for block bodies by (height, digest): NEW-VIEW entries and prepared digests
/// whose body this replica lacks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBodies {
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub wanted: Vec<(Height, Digest)>,
}

/// Block bodies answering a [`FetchBodies`]; each is checked to match before use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bodies {
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub blocks: Vec<Block>,
}

/// Ask for committed blocks with their certificates (state transfer), `from..=to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBlocks {
    pub from: Height,
    pub to: Height,
}

/// A committed block with the q COMMITs that prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlock {
    pub block: Block,
    pub certificate: CommitCertificate,
}

/// State-transfer batch: consecutive committed blocks, each to be verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockBatch {
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub blocks: Vec<CommittedBlock>,
}

/// Client transactions relayed between validators, in batches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRelay {
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub txs: Vec<Transaction>,
}

/// Everything one validator sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Proposal(Proposal),
    Prepare(Signed<Prepare>),
    Commit(Signed<Commit>),
    Checkpoint(Signed<Checkpoint>),
    CheckpointCertificate(CheckpointCertificate),
    ViewChange(Signed<ViewChange>),
    NewView(Signed<NewView>),
    Status(Signed<Status>),
    FetchBodies(FetchBodies),
    Bodies(Bodies),
    FetchBlocks(FetchBlocks),
    Blocks(BlockBatch),
    Relay(TxRelay),
}

impl Message {
    /// Every kind label, for metrics created at start.
    pub const KINDS: [&'static str; 13] = [
        "proposal",
        "prepare",
        "commit",
        "checkpoint",
        "checkpoint_certificate",
        "view_change",
        "new_view",
        "status",
        "fetch_bodies",
        "bodies",
        "fetch_blocks",
        "blocks",
        "relay",
    ];

    /// This message's kind label.
    pub fn kind(&self) -> &'static str {
        let i = match self {
            Message::Proposal(_) => 0,
            Message::Prepare(_) => 1,
            Message::Commit(_) => 2,
            Message::Checkpoint(_) => 3,
            Message::CheckpointCertificate(_) => 4,
            Message::ViewChange(_) => 5,
            Message::NewView(_) => 6,
            Message::Status(_) => 7,
            Message::FetchBodies(_) => 8,
            Message::Bodies(_) => 9,
            Message::FetchBlocks(_) => 10,
            Message::Blocks(_) => 11,
            Message::Relay(_) => 12,
        };
        Message::KINDS[i]
    }

    /// Whether it is consensus traffic, which never waits behind bulk traffic
    /// (state transfer, bodies, tx relay).
    pub fn is_consensus(&self) -> bool {
        !matches!(
            self,
            Message::Bodies(_) | Message::Blocks(_) | Message::Relay(_)
        )
    }
}
