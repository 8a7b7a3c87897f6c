//! stele-ledger: the replicated state machine, deterministic and pure (no I/O).
//!
//! [`execute`] runs a committed block over any [`StateView`](stele_types::StateView)
//! (the store in the node, [`MemState`] in the simulator) and returns per-tx results, the
//! state changes and the chained state digest that checkpoints sign. [`admission`] holds
//! the pure mempool rules (G, P, executable / gapped / dead) the node and the simulator
//! share, so both decide the same way.

pub mod admission;
pub mod execute;
pub mod state;

pub use admission::{admit, classify, classify_in_flight, must_evict, Admission, Class, Refusal};
pub use execute::{
    checkpoint_state_digest, execute, genesis_state_digest, results_root, results_tree,
    state_digest, ExecError, Execution,
};
pub use state::{genesis_changes, MemState};
