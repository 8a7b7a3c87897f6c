//! Validator traffic in: frames from the transport are decoded (size-bounded), counted,
//! verified on worker threads off the engine thread, and handed to the engine.
//!
//! Each peer's frames go to one worker, so a peer's messages reach the engine in the
//! order they arrived. Tx signatures are verified once per validator: a tx in the
//! verified cache is not checked again when it comes back inside a block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use stele_consensus::{Inbound, KnownTxs, Verifier};
use stele_crypto::{Ed25519, Verified};
use stele_transport::InboundFrame;
use stele_types::{codec, max_frame_len, tx_hash, Genesis, Message, TxBody, TxHash, ValidatorSet};
use tracing::debug;

use crate::cache::{VerifiedFrames, VerifiedTxs};
use crate::driver::Input;
use crate::metrics::Metrics;

/// Frames waiting for each verification worker.
pub const WORKER_QUEUE: usize = 4096;

/// The cache as the verifier sees it, counting the txs it had to verify.
#[derive(Debug)]
pub struct Counting<'a> {
    pub cache: &'a VerifiedTxs,
    pub misses: AtomicU64,
}

impl KnownTxs for Counting<'_> {
    fn verified(&self, hash: &TxHash) -> Option<Verified<TxBody>> {
        let v = self.cache.get(hash);
        if v.is_none() {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        v
    }
}

/// Verifies client txs (HTTP) against the cache, records the time and count, and caches
/// the good ones: one verdict per tx (None: bad signature), each signature checked once.
/// `validators` is `genesis`'s set, made once by the caller: it hashes the whole genesis.
pub fn verify_client_txs(
    genesis: &Genesis,
    validators: &ValidatorSet,
    cache: &VerifiedTxs,
    metrics: &Metrics,
    txs: &[stele_types::Transaction],
) -> Vec<Option<Verified<TxBody>>> {
    let counting = Counting {
        cache,
        misses: AtomicU64::new(0),
    };
    let verifier = Verifier {
        validators,
        genesis,
        scheme: &Ed25519,
        known: Some(&counting),
    };
    let t0 = Instant::now();
    let verdicts: Vec<Option<Verified<TxBody>>> = verifier
        .check_txs_each(txs)
        .into_iter()
        .map(Result::ok)
        .collect();
    record(metrics, &counting, t0);
    cache.insert_all(
        verdicts
            .iter()
            .flatten()
            .map(|t| (tx_hash(t.signed()), t.clone())),
    );
    verdicts
}

fn record(metrics: &Metrics, counting: &Counting<'_>, t0: Instant) {
    let n = counting.misses.load(Ordering::Relaxed);
    if n > 0 {
        metrics.sig_verify.observe(t0.elapsed().as_secs_f64());
        metrics.sig_verified.inc_by(n);
    }
}

/// Decodes, counts and dispatches frames to the workers (runs on the tokio runtime).
///
/// Relayed txs go to a worker of their own. A burst of client txs means thousands of
/// signatures to check; queued with the consensus messages, the votes and view-change
/// messages behind them waited seconds, and timers fired on replicas that were only
/// behind in their own queue. Relays need no order with the rest: the engine admits
/// them like client txs.
pub async fn inbound_loop(
    mut inbound: stele_transport::Inbound,
    workers: Vec<SyncSender<(InboundFrame, Message)>>,
    relays: SyncSender<(InboundFrame, Message)>,
    genesis: Genesis,
    metrics: Metrics,
) {
    let limit = max_frame_len(&genesis);
    while let Some(f) = inbound.recv().await {
        let msg: Message = match codec::decode(&f.frame, limit) {
            Ok(m) => m,
            Err(e) => {
                debug!(peer = %f.from, error = %e, "undecodable frame");
                metrics.reject_message("decode");
                continue;
            }
        };
        metrics
            .messages_received
            .with_label_values(&[msg.kind()])
            .inc();
        let tx = if matches!(msg, Message::Relay(_)) {
            &relays
        } else {
            let w = f.from.index() % workers.len().max(1);
            let Some(tx) = workers.get(w) else { return };
            tx
        };
        // Blocking here would stall the runtime; a full worker queue means the engine
        // is behind, and the engine's retransmission repairs what is dropped.
        match tx.try_send((f, msg)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => metrics.reject_message("inbound_full"),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

/// One verification worker: verifies each message and passes it to the engine thread,
/// waiting when the engine's queue is full (backpressure, not loss).
pub fn worker(
    rx: Receiver<(InboundFrame, Message)>,
    engine: SyncSender<Input>,
    genesis: Genesis,
    cache: Arc<VerifiedTxs>,
    frames: Arc<VerifiedFrames>,
    metrics: Metrics,
) {
    let vs = genesis.validator_set();
    while let Ok((f, msg)) = rx.recv() {
        let counting = Counting {
            cache: &cache,
            misses: AtomicU64::new(0),
        };
        let verifier = Verifier {
            validators: &vs,
            genesis: &genesis,
            scheme: &Ed25519,
            known: Some(&counting),
        };
        let t0 = Instant::now();
        // Txs inside a message are verified (and cached) first, so the message's own
        // check finds them in the cache and each tx is verified once.
        let txs: &[stele_types::Transaction] = match &msg {
            Message::Proposal(p) => &p.body.txs,
            Message::Relay(r) => &r.txs,
            _ => &[],
        };
        if !txs.is_empty() {
            if let Ok(v) = verifier.check_txs(txs) {
                cache.insert_all(v.into_iter().map(|t| (tx_hash(t.signed()), t)));
            }
        }
        let heavy = VerifiedFrames::keeps(&msg)
            .then(|| stele_crypto::Digest::of_parts("stele/frame", &[&f.frame]));
        let known = heavy.as_ref().and_then(|d| frames.get(d));
        let verified = match known {
            Some(v) => Ok(v),
            None => verifier.verify(f.from, msg),
        };
        record(&metrics, &counting, t0);
        if let (Some(d), Ok(v)) = (heavy, &verified) {
            frames.insert(d, v.clone());
        }
        let v = match verified {
            Ok(v) => v,
            Err(e) => {
                debug!(peer = %f.from, reason = e.label(), error = %e, "message rejected");
                metrics.reject_message(e.label());
                continue;
            }
        };
        let input = match v.inbound() {
            Inbound::Relay(_) => match v.into_inbound() {
                Inbound::Relay(txs) => Input::Relay { txs },
                _ => continue,
            },
            _ => Input::Message {
                from: f.from,
                arrival_unix_ms: f.arrival_unix_ms,
                msg: v,
            },
        };
        if engine.send(input).is_err() {
            return;
        }
    }
}
