//! stele-types: the vocabulary every Stele crate shares.
//!
//! Transactions, blocks, the execution vocabulary (`TxResult`, `StateChanges`,
//! `StateView`), consensus messages and their certificates, the durable consensus
//! record, the genesis file with the validator set, a validator's node.toml, and the one
//! binary codec. Types here check their own well-formedness; protocol decisions live in
//! stele-consensus.

pub mod api;
pub mod block;
pub mod bounded;
pub mod certs;
pub mod codec;
pub mod durable;
pub mod exec;
pub mod genesis;
pub mod ids;
pub mod messages;
pub mod node_config;
pub mod proc;
pub mod snapshot;
pub mod state_root;
pub mod tx;
pub mod validators;

pub use block::{Block, BlockError, BlockHeader, Txs};
pub use bounded::BoundedBytes;
pub use certs::{
    CertError, CheckpointCertificate, CommitCertificate, PreparedCertificate, SignatureEntry,
};
pub use codec::CodecError;
pub use durable::{DurableEntry, DurableKey};
pub use exec::{Account, StateChanges, StateError, StateView, TxLocation, TxResult};
pub use genesis::{max_frame_len, Genesis, GenesisAccount, GenesisError, Params};
pub use ids::{Amount, Height, Nonce, ReplicaId, ViewNumber};
pub use messages::{
    results_leaf, BlockBatch, BlockReceipt, Bodies, Checkpoint, Commit, CommittedBlock,
    FetchBlocks, FetchBodies, Message, NewView, PrePrepare, Prepare, Proposal, Receipt,
    ReplicaSigned, Status, TxRelay, ViewChange,
};
pub use stele_crypto::{ChainBinding, ChainId, Digest, PublicKey, Signature, Signed, Verified};
pub use tx::{tx_hash, Op, RecordKey, RecordValue, Transaction, TxBody, TxError, TxHash};
pub use validators::{AuthError, ValidatorInfo, ValidatorSet};
