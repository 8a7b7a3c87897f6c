//! stele-store: a validator's disk, on RocksDB.
//!
//! Committed blocks with their certificates and state digests, the ledger state
//! (accounts, records, the write-once tx and nonce indexes) and the durable consensus
//! state the engine persists before it sends. One synced `WriteBatch` per committed
//! block, one per consensus persist; `open` refuses a corrupt, half-written or foreign
//! database with an error naming what is wrong rather than serve a shorter chain.

mod account_cache;
mod durable;
mod error;
mod keys;
mod prune;
mod snapshot;
mod state_root;
mod store;
mod verify;

pub use error::StoreError;
pub use keys::COLUMN_FAMILIES;
pub use snapshot::{ChunkAnswer, PieceAnswer, SnapshotWrites, MIN_SERVED_PIECE_BITS};
pub use store::{FinalLeaf, GenesisState, SnapshotConfig, Store, StoreConfig, STORE_FORMAT};
