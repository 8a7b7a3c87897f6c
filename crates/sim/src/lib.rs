//! stele-sim: a deterministic, single-threaded simulator that runs the real PBFT engine
//! under faults and checks the safety rules on every step.
//!
//! One seed fixes everything: network delays, loss, duplication, reordering, partitions,
//! crashes and restarts from durable state only, client load. Messages go through the
//! real codec and the real verifier, blocks through the real ledger (`stele-ledger`), and
//! Byzantine replicas play `stele_consensus::byzantine`. A failing seed prints the
//! command that replays it.

mod sim;
pub mod snapshot;

pub use sim::{
    run, sim_params, Check, CrashPoint, DropRule, Outcome, Sabotage, Scenario, ScriptedTx,
    StepCrash, Violation,
};
pub use stele_consensus::byzantine::Behaviour;
