//! stele-consensus: the PBFT engine, sans-IO and deterministic.
//!
//! A plain struct driven by method calls that carry time ([`Engine::on_message`],
//! [`Engine::on_request`], [`Engine::on_tick`], [`Engine::on_executed`]); it answers with
//! [`Action`]s the caller drains in order and a [`Engine::next_deadline`]. The same engine
//! runs in the node and in the simulator. [`verify`] turns decoded messages into the
//! verified input the engine accepts, doing all cryptography off the engine's thread.
//! With the `byzantine` feature (tests only), the `byzantine` module holds the faulty
//! behaviours the simulator and a test build of the node play.

mod action;
#[cfg(feature = "byzantine")]
pub mod byzantine;
mod engine;
pub mod group;
pub mod history;
mod pending;
pub mod recovery;
pub mod snapshot;
pub mod verify;
pub mod viewchange;

pub use action::{Action, Evidence, Halt, Timer};
pub use engine::{ChainState, Config, Engine, EngineStats};
pub use group::{group_commit, Step};
pub use pending::{Pending, TxClass, TxOutcome};
pub use recovery::RecoveryGate;
pub use verify::{FrameVerdicts, Inbound, KnownTxs, Reject, VerifiedMessage, Verifier};
