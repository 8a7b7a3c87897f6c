//! stele-node: the validator daemon.
//!
//! Wiring, in the order data flows (DESIGN.md, "Data flow in a validator"): the HTTP API
//! ([`api`], served by [`http`] within its connection and time limits) and the QUIC transport ([`net`]) verify signatures off the engine thread,
//! through the verified-tx cache ([`cache`]); the engine thread ([`driver`]) admits txs,
//! runs the PBFT engine, persists before it sends, executes committed blocks over the
//! store and commits them. [`config`], [`datadir`] and [`testnet`] are what an operator
//! touches; [`metrics`] is what Prometheus scrapes.

pub mod api;
pub mod cache;
pub mod config;
pub mod datadir;
pub mod driver;
pub mod http;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod receipts;
pub mod run;
pub mod snapshot_file;
pub mod snapshot_sync;
pub mod testnet;
