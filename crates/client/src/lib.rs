//! stele-client: everything a Stele user or test needs to talk to a network.
//!
//! [`Client`] knows the genesis and the node URLs and makes one typed call per HTTP
//! endpoint; `submit` signs txs, sends them to several validators and waits for f+1
//! matching signed receipts (`quorum`); `verify` checks a block file, its commit
//! certificate, a tx's Merkle proof and receipts offline, with only the genesis file.
//! The `stele` binary (src/main.rs) is a thin CLI over this library.

pub mod bench;
pub mod client;
pub mod error;
pub mod quorum;
pub mod submit;
pub mod verify;

pub use client::{
    testnet_account_key, testnet_genesis, Client, ClientConfig, Encoding, Node, SubmitBody,
};
pub use error::ClientError;
pub use quorum::{confirm, Confirmed, Outcome, ReceiptChecker, ReceiptError, ReceiptTally, TxId};
pub use submit::{split_batches, Batch, TxQuery};
pub use verify::{verify_block, verify_certified, Verdict, VerifyError};
