//! The store's one error type. Every variant says what was expected, what was found and
//! where (directory, column family, key or height), so an operator can act on it.

use std::path::PathBuf;

use stele_crypto::Digest;
use stele_types::Height;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB itself failed: I/O, or corruption it detected (checksums, a WAL record in
    /// the middle of the log, a missing file).
    #[error("RocksDB failed to {op} in {path}: {source}")]
    Rocks {
        op: String,
        path: PathBuf,
        source: rocksdb::Error,
    },
    /// A stored value does not decode or contradicts its key.
    #[error("corrupt entry in column family `{cf}` at key {key} in {path}: {problem}")]
    Corrupt {
        cf: &'static str,
        key: String,
        path: PathBuf,
        problem: String,
    },
    /// The entries disagree with each other (a half-written or damaged database).
    #[error("inconsistent database in {path}: {problem}")]
    Inconsistent { path: PathBuf, problem: String },
    /// The database was written in another store format (by another version of Stele).
    #[error(
        "database in {path} is in store format {found}, this build reads format {expected} \
         (the encodings differ; format 1 is every database written before formats were \
         marked): move the data directory aside and start this validator with --recover, \
         and it fetches the chain from its peers; a testnet whose every store is in the old \
         format starts again from `stele-node testnet init` into a new directory (for \
         `make testnet`: remove `testnet/`)"
    )]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The database was initialised for another genesis.
    #[error(
        "database in {path} belongs to another chain: its state digest at height 0 is {found}, \
         this genesis gives {expected}"
    )]
    WrongGenesis {
        path: PathBuf,
        expected: Digest,
        found: Digest,
    },
    /// The genesis state passed to `open` does not describe the genesis passed with it.
    #[error("genesis state does not match the genesis file: {0}")]
    BadGenesisState(String),
    /// A block was committed out of order.
    #[error("commit of height {found} refused: the next height to commit is {expected}")]
    OutOfOrder { expected: Height, found: Height },
    /// The certificate does not certify the block being committed.
    #[error(
        "commit certificate for height {cert_height} digest {cert_digest} does not certify \
         the block at height {block_height} with digest {block_digest}"
    )]
    CertificateMismatch {
        cert_height: Height,
        cert_digest: Digest,
        block_height: Height,
        block_digest: Digest,
    },
    /// The results do not go with the block's txs.
    #[error("block at height {height} has {txs} txs but {results} results were given")]
    ResultCount {
        height: Height,
        txs: usize,
        results: usize,
    },
    /// A stable checkpoint below the one already stored.
    #[error("stable checkpoint at height {found} refused: one at height {stored} is stored")]
    CheckpointRegression { stored: Height, found: Height },
}
