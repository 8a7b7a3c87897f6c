//! The engine's thread: the single owner of the PBFT engine, feeding it inputs and
//! carrying out its actions in order.
//!
//! A thin loop (STYLE.md): take inputs from bounded lanes (each peer's messages on its
//! own, taken in turn, so a flooding peer delays no one else's; txs and lookups on
//! another, so tx traffic cannot fill the lanes consensus waits in), tick the timers,
//! drain the actions. A `Persist` is written and synced before any send after it in the same
//! drain; a `Deliver` executes the block over the store and commits it in one synced
//! write before the engine hears `on_executed`. Admission and classification of client
//! txs happen here because the engine owns the pending set they are judged against.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stele_consensus::{
    group_commit, Action, Engine, Halt, Inbound, RecoveryGate, Step, TxClass, TxOutcome,
    VerifiedMessage,
};
use stele_crypto::{Digest, KeyPair, PublicKey, Verified};
use stele_ledger::{admit, Admission, Class, Refusal};
use stele_store::{Store, StoreError};
use stele_transport::{FrameClass, Transport};
use stele_types::api::{Admitted, StatusResponse};
use stele_types::{
    codec, Block, CommitCertificate, CommittedBlock, Genesis, Height, Message, Nonce, Params,
    ReplicaId, TxBody, TxHash, TxResult,
};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::cache::{VerifiedTxs, Waiters};
use crate::metrics::Metrics;
use crate::receipts::BlockReceipts;

/// Validator messages queued for the engine thread, per peer: a peer that floods fills
/// its own lane only, and the engine thread takes the lanes in turn, so the others'
/// messages never wait behind its backlog.
pub const PEER_QUEUE: usize = 4_096;
/// The engine thread's own inputs (the stop, the doorbell).
const CONTROL_QUEUE: usize = 64;
/// Tx inputs (client submissions and lookups, txs relayed by validators) queued for the
/// engine thread, apart from consensus inputs: a flood of txs fills this queue and is
/// refused (`overloaded`) while consensus messages still find room in theirs.
pub const TX_QUEUE: usize = 4_096;
/// Most validator messages handled before the timers are looked at again.
const INPUT_BURST: usize = 512;
/// Most tx inputs handled per turn of the loop: consensus inputs go first.
const TX_BURST: usize = 256;

/// The sending side of one lane into the engine thread (the tx lane, or a peer's). A
/// send rings the engine thread's doorbell (one [`Input::Wake`] in the control queue,
/// however many inputs wait), so an input is handled at once on an idle node, and no
/// lane can fill the queue the others' doorbells and the stop go through.
#[derive(Debug, Clone)]
pub struct Lane {
    queue: SyncSender<Input>,
    doorbell: SyncSender<Input>,
    rung: Arc<AtomicBool>,
}

/// The tx lane: client txs, lookups and relays.
pub type TxInputs = Lane;

impl Lane {
    /// Queues `input` unless the lane is full (client inputs: the caller refuses).
    pub fn try_send(&self, input: Input) -> Result<(), TxQueueError> {
        self.queue.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => TxQueueError::Full,
            TrySendError::Disconnected(_) => TxQueueError::Stopped,
        })?;
        self.ring();
        Ok(())
    }

    /// Queues `input`, waiting while the lane is full (validator messages and relays:
    /// backpressure on that peer's verification only).
    pub fn send(&self, input: Input) -> Result<(), TxQueueError> {
        self.queue.send(input).map_err(|_| TxQueueError::Stopped)?;
        self.ring();
        Ok(())
    }

    fn ring(&self) {
        // The engine thread clears `rung` before it drains the lanes: an input queued
        // after that drain began either is seen by it or finds `rung` clear and rings.
        if !self.rung.swap(true, Ordering::SeqCst) {
            // Full: the engine thread is busy and drains the lanes on its next turn.
            let _ = self.doorbell.try_send(Input::Wake);
        }
    }
}

/// Why an input was not queued (the input itself is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxQueueError {
    /// The lane is full: the engine thread is behind.
    Full,
    /// The engine thread has stopped.
    Stopped,
}

/// One lane per peer, indexed by validator id.
#[derive(Debug, Clone)]
pub struct PeerInputs {
    lanes: Vec<Lane>,
}

impl PeerInputs {
    /// Queues a verified message from `from`, waiting while that peer's lane is full.
    pub fn send(&self, from: ReplicaId, input: Input) -> Result<(), TxQueueError> {
        self.lanes
            .get(from.index())
            .ok_or(TxQueueError::Stopped)?
            .send(input)
    }
}

/// The engine thread's receiving side: its control queue, the peers' lanes and the tx
/// lane.
#[derive(Debug)]
pub struct Inputs {
    control: Receiver<Input>,
    peers: Vec<Receiver<Input>>,
    /// The lane the next drain starts at, so no peer is always served first.
    next_peer: usize,
    txs: Receiver<Input>,
    rung: Arc<AtomicBool>,
}

impl Inputs {
    /// The next input waiting in the tx lane, if any (tests).
    #[cfg(test)]
    pub(crate) fn try_recv_tx(&self) -> Option<Input> {
        self.txs.try_recv().ok()
    }

    /// The next input waiting in `from`'s lane, if any (tests).
    #[cfg(test)]
    pub(crate) fn try_recv_peer(&self, from: ReplicaId) -> Option<Input> {
        self.peers.get(from.index())?.try_recv().ok()
    }

    /// Handles up to [`INPUT_BURST`] validator messages, one from each non-empty lane in
    /// turn; true when inputs were left waiting.
    fn drain_peers(&mut self, mut handle: impl FnMut(Input) -> bool) -> bool {
        let n = self.peers.len();
        let mut handled = 0;
        loop {
            let mut any = false;
            for k in 0..n {
                let p = (self.next_peer + k) % n;
                if let Ok(input) = self.peers[p].try_recv() {
                    any = true;
                    handled += 1;
                    if !handle(input) || handled >= INPUT_BURST {
                        self.next_peer = (p + 1) % n;
                        return true;
                    }
                }
            }
            if !any {
                return false;
            }
        }
    }
}

/// The engine thread's queues for `n` validators: the control sender (the stop), the
/// peers' lanes (the verification pool), the tx lane (HTTP API, relays), and the engine
/// thread's side.
pub fn input_queues(n: usize) -> (SyncSender<Input>, PeerInputs, TxInputs, Inputs) {
    input_queues_sized(n, PEER_QUEUE, TX_QUEUE)
}

fn input_queues_sized(
    n: usize,
    peer: usize,
    txs: usize,
) -> (SyncSender<Input>, PeerInputs, TxInputs, Inputs) {
    let (ctx, crx) = sync_channel(CONTROL_QUEUE);
    let rung = Arc::new(AtomicBool::new(false));
    let lane = |size: usize| {
        let (tx, rx) = sync_channel(size);
        (
            Lane {
                queue: tx,
                doorbell: ctx.clone(),
                rung: rung.clone(),
            },
            rx,
        )
    };
    let (peer_lanes, peer_rx): (Vec<Lane>, Vec<Receiver<Input>>) =
        (0..n).map(|_| lane(peer)).unzip();
    let (tx_lane, trx) = lane(txs);
    (
        ctx,
        PeerInputs { lanes: peer_lanes },
        tx_lane,
        Inputs {
            control: crx,
            peers: peer_rx,
            next_peer: 0,
            txs: trx,
            rung,
        },
    )
}

/// What the engine thread is asked to do.
#[derive(Debug)]
pub enum Input {
    /// A verified message from a validator.
    Message {
        from: ReplicaId,
        arrival_unix_ms: u64,
        msg: VerifiedMessage,
    },
    /// Txs relayed by a validator, signatures verified.
    Relay {
        txs: Vec<(TxHash, Verified<TxBody>)>,
    },
    /// Txs submitted by a client, signatures verified; the reply says what admission made
    /// of each.
    Submit {
        txs: Vec<(TxHash, Verified<TxBody>)>,
        reply: oneshot::Sender<Vec<Result<Admitted, Refusal>>>,
    },
    /// Whether a tx is pending here, and how.
    Pending {
        hash: TxHash,
        reply: oneshot::Sender<Option<TxClass>>,
    },
    /// Stop after the current drain.
    Stop,
    /// Tx inputs are queued ([`TxInputs`]).
    Wake,
}

/// Why the engine thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// The engine halted: safety can no longer be promised (exit code 3).
    Halted(String),
    /// The store failed: the node cannot go on without risking what it signed.
    StoreFailed(String),
    /// Far behind every peer, which no longer keep the blocks it lacks, while a peer
    /// serves a verified snapshot above them: `stele-node run` starts again in the same
    /// process, and its start installs that snapshot.
    Resync { height: Height, snapshot: Height },
}

/// What the HTTP API reads of the engine thread's state.
#[derive(Debug)]
pub struct Shared {
    pub status: Mutex<StatusResponse>,
    /// Highest executed height any peer's STATUS claimed (for `/ready`).
    pub peer_height: Mutex<Height>,
}

/// Everything the engine thread owns or shares.
pub struct Driver {
    pub engine: Engine,
    pub store: Arc<Store>,
    pub transport: Transport,
    pub genesis: Genesis,
    pub key: Arc<KeyPair>,
    pub metrics: Metrics,
    pub waiters: Arc<Waiters>,
    /// Signed once per executed block, here; the API proves txs against them.
    pub receipts: Arc<BlockReceipts>,
    pub cache: Arc<VerifiedTxs>,
    pub shared: Arc<Shared>,
    pub recovery: Option<RecoveryGate>,
    /// Whether this process started (or resumed) a recovery: its votes are tracked
    /// against the gate's bounds for as long as it runs.
    pub recovered: bool,
    /// What this (test build of a) validator does instead of following the protocol.
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<stele_consensus::byzantine::Behaviour>,
    /// `--record-sent`: where every consensus message goes before it is sent.
    #[cfg(feature = "byzantine")]
    pub record_sent: Option<std::fs::File>,
    pub sync: bool,
    /// `retain_blocks` from node.toml: prune after each stable checkpoint.
    pub retain_blocks: Option<u64>,
    pub start: Instant,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Engine time: monotonic milliseconds since the process started.
pub fn now_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

struct Loop {
    d: Driver,
    params: Params,
    /// When each height's PRE-PREPARE was first seen here (commit latency), in window.
    proposed_at: BTreeMap<Height, Instant>,
    last_commit: Option<Instant>,
    /// The tip's block digest, read once per new height.
    tip_hash: Option<(Height, Digest)>,
    /// The state root of the latest checkpoint height executed, for `/status`.
    state_root: Option<stele_types::api::StateRootAt>,
    /// Each peer's latest claimed executed height (STATUS: unproven).
    peer_claims: BTreeMap<ReplicaId, Height>,
    exit: Option<Exit>,
}

impl Driver {
    /// Runs until stopped, halted, or the control channel closes.
    pub fn run(self, rx: Inputs) -> Exit {
        let params = self.genesis.params.clone();
        let mut l = Loop {
            d: self,
            params,
            proposed_at: BTreeMap::new(),
            last_commit: None,
            tip_hash: None,
            state_root: None,
            peer_claims: BTreeMap::new(),
            exit: None,
        };
        l.drive();
        l.publish();
        // Inputs left over after a full burst: do not sleep on the control queue.
        let mut backlog = false;
        let mut rx = rx;
        while l.exit.is_none() {
            let now = now_ms(l.d.start);
            let wait = if backlog {
                0
            } else {
                l.d.engine
                    .next_deadline()
                    .map_or(100, |t| t.saturating_sub(now))
                    .min(100)
            };
            match rx.control.recv_timeout(Duration::from_millis(wait)) {
                Ok(input) => {
                    l.handle(input);
                    while let Ok(input) = rx.control.try_recv() {
                        l.handle(input);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => l.exit = Some(Exit::Stopped),
            }
            rx.rung.store(false, Ordering::SeqCst);
            backlog = rx.drain_peers(|input| {
                l.handle(input);
                l.exit.is_none()
            });
            let mut txs_left = true;
            for _ in 0..TX_BURST {
                if l.exit.is_some() {
                    break;
                }
                match rx.txs.try_recv() {
                    Ok(input) => l.handle(input),
                    Err(_) => {
                        txs_left = false;
                        break;
                    }
                }
            }
            backlog |= txs_left;
            let (now, unix) = l.clock();
            l.d.engine.on_tick(now, unix);
            l.drive();
            l.publish();
        }
        l.exit.unwrap_or(Exit::Stopped)
    }
}

/// The (f+1)-th highest height the peers claim: an honest replica reached it, whatever
/// f liars say (one STATUS claiming `u64::MAX` must not keep `/ready` false for good).
/// Height 0 until f+1 peers have reported.
fn honest_claim(claims: &BTreeMap<ReplicaId, Height>, f: usize) -> Height {
    let mut hs: Vec<Height> = claims.values().copied().collect();
    hs.sort_unstable_by(|a, b| b.cmp(a));
    hs.get(f).copied().unwrap_or(Height(0))
}

/// [`Loop::prune_target`] over `peers` peers' claimed executed heights.
fn prune_target(
    stable: Height,
    keep: u64,
    window: u64,
    peers: usize,
    claims: &BTreeMap<ReplicaId, Height>,
) -> Height {
    let wanted = stable.0.saturating_sub(keep);
    let floor = wanted.saturating_sub(window.saturating_mul(8));
    let needed = if claims.len() >= peers {
        claims.values().min().map_or(0, |h| h.0.saturating_add(1))
    } else {
        floor
    };
    Height(wanted.min(needed.max(floor)))
}

impl Loop {
    fn clock(&self) -> (u64, u64) {
        (now_ms(self.d.start), stele_transport::unix_ms())
    }

    fn handle(&mut self, input: Input) {
        let (now, unix) = self.clock();
        match input {
            Input::Message {
                from,
                arrival_unix_ms,
                msg,
            } => {
                match msg.inbound() {
                    Inbound::Status(s) => {
                        self.peer_claims.insert(s.replica, s.executed);
                        let honest =
                            honest_claim(&self.peer_claims, self.d.engine.validators().f());
                        *self
                            .d
                            .shared
                            .peer_height
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = honest;
                        if let Some(g) = self.d.recovery.as_mut() {
                            g.observe_status(s);
                        }
                    }
                    Inbound::Proposal { pre_prepare, .. } => {
                        self.proposed_at
                            .entry(pre_prepare.height)
                            .or_insert_with(Instant::now);
                    }
                    Inbound::Blocks(b) => {
                        self.d.metrics.state_transfer_blocks.inc_by(b.len() as u64);
                    }
                    _ => {}
                }
                self.d
                    .engine
                    .on_message(now, unix, from, arrival_unix_ms, msg);
            }
            Input::Relay { txs } => {
                if self.d.recovery.as_ref().is_some_and(|g| !g.done()) {
                    return;
                }
                for (hash, tx) in txs {
                    // A relayed tx the sender's state refuses is simply not ours to keep.
                    let _ = self.admit(hash, tx, false, now, unix);
                }
            }
            Input::Submit { txs, reply } => {
                let out = txs
                    .into_iter()
                    .map(|(hash, tx)| self.admit(hash, tx, true, now, unix))
                    .collect();
                let _ = reply.send(out);
            }
            Input::Pending { hash, reply } => {
                let _ = reply.send(self.d.engine.pending().class_of(&hash));
            }
            Input::Stop => self.exit = Some(Exit::Stopped),
            Input::Wake => {}
        }
    }

    /// Admission and classification (DESIGN.md, "Requests") against executed state plus
    /// blocks in flight.
    fn admit(
        &mut self,
        hash: TxHash,
        tx: Verified<TxBody>,
        from_client: bool,
        now: u64,
        unix: u64,
    ) -> Result<Admitted, Refusal> {
        if self.d.engine.has_pending(&hash) {
            return Ok(Admitted::Known);
        }
        let store = self.d.store.clone();
        // No read of the tx index: an applied tx used its nonce, so it is refused as
        // `NonceUsed` below, and its own final leaf then answers it as known. That read
        // was one RocksDB get per admitted tx, nearly always finding nothing.
        let account = self.read(store.account_of(&tx.sender))?;
        let pending = self.d.engine.pending();
        let ctx = Admission {
            account,
            next_nonce: account.map_or(stele_types::Nonce(0), |a| {
                pending.next_nonce(&tx.sender, a.nonce)
            }),
            sender_pending: pending.of_sender(&tx.sender).len(),
            mempool_len: pending.len(),
        };
        let class = match admit(tx.nonce, &ctx, &self.params) {
            Ok(Class::Executable) => TxClass::Executable,
            Ok(_) => TxClass::Gapped,
            Err(Refusal::NonceUsed { .. })
                if self.read(store.final_leaf(tx.signed()))?.is_some() =>
            {
                // Its nonce is used: the outcome is final (stale_nonce), and asking for it
                // gets the receipt.
                return Ok(Admitted::Known);
            }
            Err(r) => return Err(r),
        };
        // Admitted txs only: a tx a client may ask about by hash until it is final.
        self.d.cache.insert_all([(hash, tx.clone())]);
        self.d
            .engine
            .on_request(now, unix, hash, tx, class, from_client);
        Ok(Admitted::Accepted)
    }

    /// A store read on the admission path; a failure refuses the tx as overload (the
    /// client retries) rather than guess.
    fn read<T>(&self, r: Result<T, StoreError>) -> Result<T, Refusal> {
        r.map_err(|e| {
            error!(error = %e, "store read during admission");
            Refusal::MempoolFull {
                len: 0,
                max: self.params.mempool_size,
            }
        })
    }

    /// Carries out the engine's actions until it has none left: group commit.
    ///
    /// The main loop hands the engine a burst of inputs and drives once after it, so a
    /// drain holds the actions of many inputs. Its consensus records (`Persist`) are
    /// written in one synced batch before its other actions, which then run in order:
    /// every send still follows the records it depends on (safety rule 3), and a record
    /// written earlier than needed is only earlier. Syncing each record on its own
    /// capped one-tx blocks near 60 a second. A stable checkpoint (which discards the
    /// log below it) stays where it was among the records. The step list is
    /// `stele_consensus::group_commit`, which the simulator runs (and crashes inside) too.
    fn drive(&mut self) {
        loop {
            let actions = self.d.engine.drain();
            if actions.is_empty() {
                return;
            }
            for step in group_commit(actions) {
                if self.exit.is_some() {
                    return;
                }
                match step {
                    Step::Records(entries) => match self.d.store.persist(&entries) {
                        Ok(()) => self.synced("consensus"),
                        Err(e) => self.fail_store("persisting consensus state", e),
                    },
                    Step::Do(a) => self.perform(a),
                }
            }
            if self.exit.is_some() {
                return;
            }
        }
    }

    /// Where pruning may go after a stable checkpoint at `stable`: `keep` blocks below
    /// it, but not past what a peer still needs (the lowest executed height the peers
    /// claim, every peer having claimed one), unless that is more than 8 L further back.
    /// A laggard within that catches up by state transfer; a peer lying low costs at
    /// most 8 L blocks of disk.
    fn prune_target(&self, stable: Height, keep: u64) -> Height {
        prune_target(
            stable,
            keep,
            self.params.window,
            self.d.engine.validators().n().saturating_sub(1),
            &self.peer_claims,
        )
    }

    /// Counts a synced write (`stele_store_synced_writes_total`); none with sync off.
    fn synced(&self, what: &str) {
        if self.d.sync {
            self.d
                .metrics
                .synced_writes
                .with_label_values(&[what])
                .inc();
        }
    }

    fn fail_store(&mut self, what: &str, e: StoreError) {
        error!(error = %e, "{what} failed; stopping: a validator that cannot write must not vote");
        self.exit = Some(Exit::StoreFailed(format!("{what}: {e}")));
    }

    fn perform(&mut self, a: Action) {
        match a {
            Action::Persist(entries) => match self.d.store.persist(&entries) {
                Ok(()) => self.synced("consensus"),
                Err(e) => self.fail_store("persisting consensus state", e),
            },
            Action::PersistCheckpoint(c) => {
                if let Err(e) = self.d.store.persist_stable_checkpoint(&c) {
                    return self.fail_store("persisting a stable checkpoint", e);
                }
                self.synced("checkpoint");
                if let Some(keep) = self.d.retain_blocks {
                    let target = self.prune_target(c.height, keep);
                    let before = self.d.store.horizon().ok();
                    match self.d.store.prune_below(target) {
                        Ok(h) => {
                            // Only a moved horizon was written (always synced).
                            if before != Some(h) {
                                self.d
                                    .metrics
                                    .synced_writes
                                    .with_label_values(&["prune"])
                                    .inc();
                            }
                            self.d.metrics.horizon.set(h.0 as i64)
                        }
                        Err(e) => self.fail_store("pruning old blocks", e),
                    }
                }
            }
            Action::Send(to, m) => self.send(Some(to), &m),
            Action::Broadcast(m) => {
                if let Message::Proposal(p) = &m {
                    self.proposed_at
                        .entry(p.pre_prepare.height)
                        .or_insert_with(Instant::now);
                }
                self.send(None, &m)
            }
            Action::Deliver { block, certificate } => self.deliver(block, certificate),
            Action::ServeBlocks {
                to,
                from,
                to_height,
            } => self.serve_blocks(to, from, to_height),
            Action::Evidence(e) => {
                warn!(evidence = ?e, "Byzantine behaviour proven by signed messages");
                self.d.metrics.evidence.with_label_values(&[e.kind()]).inc();
                match self.d.store.record_evidence(&format!("{e:?}")) {
                    Ok(()) => self.synced("evidence"),
                    Err(err) => self.fail_store("recording evidence", err),
                }
            }
            Action::Rejected { from, reason } => {
                tracing::debug!(peer = %from, %reason, "message rejected");
                self.d.metrics.reject_message(reason.label());
            }
            Action::Halt(h) => {
                let detail = match h {
                    Halt::Divergence {
                        height,
                        ours,
                        stable,
                    } => format!(
                        "state digest at height {height} is {ours}, the stable checkpoint says {stable}"
                    ),
                    Halt::ConflictingNewView {
                        height,
                        executed,
                        proposed,
                    } => format!(
                        "a NEW-VIEW re-proposes {proposed} at height {height}, where this validator executed {executed}: more than f validators are faulty"
                    ),
                };
                error!(
                    "HALTED: {detail}. This validator stops voting. Wipe its data directory and \
                     restart it with --recover to fetch the chain from its peers."
                );
                self.exit = Some(Exit::Halted(detail));
            }
            Action::ViewChanged { view, active } => {
                info!(view = view.0, active, "view");
                if !active {
                    self.d.metrics.view_changes.inc();
                }
            }
        }
    }

    fn send(&mut self, to: Option<ReplicaId>, m: &Message) {
        if let Some(g) = &self.d.recovery {
            if !g.allows(m) {
                return;
            }
        }
        self.d.metrics.sent(m, self.d.recovered);
        #[cfg(feature = "byzantine")]
        if let Some(b) = &self.d.byzantine {
            let out = stele_consensus::byzantine::outgoing(
                b,
                self.d.engine.id(),
                &*self.d.key,
                self.d.engine.validators(),
                to,
                m.clone(),
            );
            for (peer, m) in out {
                self.transmit(Some(peer), &m);
            }
            return;
        }
        self.transmit(to, m);
    }

    fn transmit(&mut self, to: Option<ReplicaId>, m: &Message) {
        let class = match m {
            Message::Relay(_) => FrameClass::Relay,
            Message::Bodies(_) | Message::Blocks(_) => FrameClass::Bulk,
            _ => FrameClass::Consensus,
        };
        let bytes = Bytes::from(codec::encode(m));
        #[cfg(feature = "byzantine")]
        self.record_sent(m, &bytes);
        let r = match to {
            Some(peer) => self.d.transport.send(peer, class, bytes).map(|_| ()),
            None => self.d.transport.broadcast(class, bytes).map(|_| ()),
        };
        if let Err(e) = r {
            // Our own message does not fit the wire: a bug, but not one to stop for (the
            // engine repairs lost messages).
            error!(error = %e, kind = m.kind(), "cannot send");
        }
    }

    /// One write per message, unbuffered, so a SIGKILL right after the send still
    /// finds it in the file (the page cache keeps it; the file is not on the disk the
    /// power-loss tests cut).
    #[cfg(feature = "byzantine")]
    fn record_sent(&mut self, m: &Message, bytes: &[u8]) {
        use std::io::Write;
        let signed = matches!(
            m,
            Message::Proposal(_)
                | Message::Prepare(_)
                | Message::Commit(_)
                | Message::Checkpoint(_)
                | Message::ViewChange(_)
                | Message::NewView(_)
        );
        if let (true, Some(f)) = (signed, self.d.record_sent.as_mut()) {
            let mut frame = (bytes.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(bytes);
            if let Err(e) = f.write_all(&frame) {
                error!(error = %e, "--record-sent: cannot write");
            }
        }
    }

    fn serve_blocks(&mut self, to: ReplicaId, from: Height, to_height: Height) {
        let last = to_height
            .0
            .min(
                from.0
                    .saturating_add(self.d.engine.transfer_batch().saturating_sub(1)),
            )
            .min(self.d.store.latest_height().0);
        let mut blocks = Vec::new();
        for h in from.0.max(1)..=last {
            let h = Height(h);
            match (self.d.store.block(h), self.d.store.certificate(h)) {
                (Ok(Some(block)), Ok(Some(certificate))) => {
                    blocks.push(CommittedBlock { block, certificate })
                }
                (Err(e), _) | (_, Err(e)) => return self.fail_store("reading blocks to serve", e),
                _ => break,
            }
        }
        if !blocks.is_empty() {
            self.send(Some(to), &Engine::blocks_batch(blocks));
        }
    }

    fn deliver(&mut self, block: Block, certificate: CommitCertificate) {
        let h = block.height();
        let t0 = Instant::now();
        let exec = match stele_ledger::execute(&block, &*self.d.store, &self.params) {
            Ok(x) => x,
            Err(e) => {
                error!(height = h.0, error = %e, "cannot execute a committed block; stopping");
                self.exit = Some(Exit::StoreFailed(format!("executing height {h}: {e}")));
                return;
            }
        };
        let took = t0.elapsed().as_secs_f64();
        if exec.opening.is_some() {
            self.d.metrics.execute_checkpoint.observe(took);
        } else {
            self.d.metrics.execute.observe(took);
        }
        if let Err(e) = self.d.store.commit_block(
            &block,
            &certificate,
            &exec.results,
            &exec.changes,
            exec.state_digest,
            exec.opening.as_ref(),
        ) {
            return self.fail_store("committing a block", e);
        }
        self.synced("block");
        if let Some(root) = exec.state_root() {
            self.state_root = Some(stele_types::api::StateRootAt { height: h, root });
            tracing::debug!(height = h.0, %root, "state root at a checkpoint height");
        }
        // Signed before any waiter hears of the block, so its answer finds the receipt.
        self.d
            .receipts
            .executed(h, exec.block_digest, exec.state_digest, exec.results_tree);
        let m = &self.d.metrics;
        m.store_commit.observe(t0.elapsed().as_secs_f64());
        m.blocks_committed.inc();
        m.block_txs.observe(block.txs.len() as f64);
        let applied = exec.results.iter().filter(|r| r.is_applied()).count();
        m.txs_committed.inc_by(applied as u64);
        let now_i = Instant::now();
        if let Some(prev) = self.last_commit.replace(now_i) {
            m.block_interval.observe((now_i - prev).as_secs_f64());
        }
        if let Some(at) = self.proposed_at.remove(&h) {
            m.commit_latency.observe(at.elapsed().as_secs_f64());
        }
        self.proposed_at = self.proposed_at.split_off(&h);
        if !block.txs.is_empty() {
            tracing::debug!(height = h.0, txs = block.txs.len(), applied, "committed");
        }
        // Whoever waits for one of these nonces now has a final outcome.
        self.d.waiters.notify_used(
            block
                .txs
                .iter()
                .zip(&exec.results)
                .filter(|(_, r)| r.is_applied())
                .map(|(t, _)| (t.sender, t.nonce)),
        );
        let outcomes = self.outcomes(&block, &exec.results);
        let (now, _) = self.clock();
        self.d
            .engine
            .on_executed(now, h, exec.state_digest, &outcomes);
    }

    /// What execution meant for the pending txs of the senders a block touched.
    ///
    /// Decided from each sender's executed nonce alone, with no read per pending tx: a
    /// tx applied (in this block or any before) has a nonce below its sender's, so it is
    /// dead and leaves the mempool like an applied one. Reading each pending tx's
    /// location instead cost the engine thread one RocksDB get per pending tx of every
    /// sender a block touched: about 40 per committed tx under `stele bench`.
    fn outcomes(&self, block: &Block, results: &[TxResult]) -> Vec<(TxHash, TxOutcome)> {
        let senders: HashSet<_> = block.txs.iter().map(|t| t.sender).collect();
        // Only for the check below: what this block applied.
        let applied_here: HashSet<(PublicKey, Nonce)> = block
            .txs
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_applied())
            .map(|(t, _)| (t.sender, t.nonce))
            .collect();
        let mut accounts = std::collections::HashMap::new();
        self.d
            .engine
            .pending_of(&senders)
            .into_iter()
            .map(|(hash, sender, nonce)| {
                let next = *accounts.entry(sender).or_insert_with(|| {
                    self.d.store.account_of(&sender).ok().flatten().map(|a| {
                        (
                            a.nonce,
                            self.d.engine.pending().next_nonce(&sender, a.nonce),
                        )
                    })
                });
                let class = next.map(|(executed, in_flight)| {
                    stele_ledger::classify_in_flight(executed, in_flight, nonce)
                });
                let o = match class {
                    Some(Class::Executable) => TxOutcome::Reclassified(TxClass::Executable),
                    Some(Class::Gapped) => TxOutcome::Reclassified(TxClass::Gapped),
                    // Applied (here or before), or its nonce used by another tx: gone
                    // from the mempool either way.
                    Some(Class::Dead) | None => TxOutcome::Dropped,
                };
                // Applied here means its sender's nonce moved past it.
                debug_assert!(
                    !applied_here.contains(&(sender, nonce)) || class == Some(Class::Dead),
                    "a tx applied at height {} is still classified {class:?}",
                    block.height().0
                );
                (hash, o)
            })
            .collect()
    }

    /// Publishes the state the API and the metrics show.
    fn publish(&mut self) {
        if let Some(g) = self.d.recovery.as_mut() {
            let e = &mut self.d.engine;
            g.update(e.low_watermark(), e.view(), e.is_active());
            e.set_following(!g.done());
            if let Some((c_r, m)) = g.bounds() {
                if self.d.metrics.recovery_bound_view.get() < 0 {
                    let window = self.d.genesis.params.window;
                    info!(
                        c_r = c_r.0,
                        window,
                        m = m.0,
                        "recovery bounds from q STATUS replies: no vote at a height <= c_r + L or in a view <= m"
                    );
                    let h = c_r.0.saturating_add(window);
                    self.d
                        .metrics
                        .recovery_bound_height
                        .set(i64::try_from(h).unwrap_or(i64::MAX));
                    self.d
                        .metrics
                        .recovery_bound_view
                        .set(i64::try_from(m.0).unwrap_or(i64::MAX));
                }
            }
            if g.done() {
                info!(
                    low = self.d.engine.low_watermark().0,
                    view = self.d.engine.view().0,
                    "recovery complete: past c_r + L and active in a view above m; voting again"
                );
                self.d.recovery = None;
            }
        }
        let e = &self.d.engine;
        let (height, state_digest) = self.d.store.tip();
        let block_hash = match self.tip_hash {
            Some((h, d)) if h == height => d,
            _ => {
                let d = match self.d.store.block(height) {
                    Ok(Some(b)) => b.digest(),
                    _ => Block::null_digest(height),
                };
                self.tip_hash = Some((height, d));
                d
            }
        };
        let m = &self.d.metrics;
        m.height.set(height.0 as i64);
        m.view.set(e.view().0 as i64);
        m.active.set(i64::from(e.is_active()));
        m.mempool.set(e.pending().len() as i64);
        let status = StatusResponse {
            validator: e.id(),
            chain_id: self.d.genesis.chain_id.clone(),
            genesis: *e.validators().chain().genesis(),
            height,
            view: e.view(),
            active: e.is_active(),
            block_hash,
            state_digest,
            stable_checkpoint: e.low_watermark(),
            peers_connected: 0,
            sync: self.d.sync,
            recovering: self.d.recovery.is_some(),
            mempool_txs: e.pending().len() as u64,
            state_root: self.state_root,
            // The engine runs once any snapshot sync is over.
            snapshot_sync: None,
        };
        *self
            .d
            .shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_what_a_lagging_peer_needs_but_not_for_a_liar_claiming_zero() {
        let claims = |hs: &[u64]| -> BTreeMap<ReplicaId, Height> {
            hs.iter()
                .enumerate()
                .map(|(i, h)| (ReplicaId(i as u16), Height(*h)))
                .collect()
        };
        // All caught up: keep 16 below the stable checkpoint.
        assert_eq!(
            prune_target(Height(1000), 16, 32, 3, &claims(&[1000, 1001, 999])),
            Height(984)
        );
        // A laggard at 900 still gets blocks from 901.
        assert_eq!(
            prune_target(Height(1000), 16, 32, 3, &claims(&[1000, 900, 999])),
            Height(901)
        );
        // One claiming 0 holds pruning back 8 L at most.
        assert_eq!(
            prune_target(Height(1000), 16, 32, 3, &claims(&[1000, 0, 999])),
            Height(728)
        );
        // Before every peer has claimed a height: the same bound.
        assert_eq!(
            prune_target(Height(1000), 16, 32, 3, &claims(&[1000])),
            Height(728)
        );
        assert_eq!(
            prune_target(Height(10), 16, 32, 3, &claims(&[10, 10, 10])),
            Height(0)
        );
    }

    #[test]
    fn one_lying_status_does_not_set_the_peer_height() {
        // n = 4, f = 1: a liar claims u64::MAX, the honest peers 10 and 12.
        let mut claims = BTreeMap::new();
        claims.insert(ReplicaId(3), Height(u64::MAX));
        assert_eq!(
            honest_claim(&claims, 1),
            Height(0),
            "one claim proves nothing"
        );
        claims.insert(ReplicaId(1), Height(10));
        claims.insert(ReplicaId(2), Height(12));
        assert_eq!(honest_claim(&claims, 1), Height(12));
    }

    fn lookup() -> Input {
        let (reply, _rx) = oneshot::channel();
        Input::Pending {
            hash: Digest::ZERO,
            reply,
        }
    }

    #[test]
    fn tx_traffic_cannot_fill_the_control_queue() {
        let (control, _peers, txs, rx) = input_queues_sized(4, 4, 16);
        let mut queued = 0;
        while txs.try_send(lookup()).is_ok() {
            queued += 1;
            assert!(queued <= 16, "the tx queue is bounded");
        }
        assert_eq!(queued, 16);
        // Sixteen txs rang the doorbell once: the stop still finds room.
        control
            .try_send(Input::Stop)
            .expect("room for the stop under a tx flood");
        assert!(matches!(rx.control.try_recv(), Ok(Input::Wake)));
        assert!(matches!(rx.control.try_recv(), Ok(Input::Stop)));
    }

    fn stop() -> Input {
        Input::Stop
    }

    #[test]
    fn a_flooding_peer_fills_its_own_lane_and_the_others_are_taken_in_turn() {
        let (_control, peers, _txs, mut rx) = input_queues_sized(4, 8, 16);
        // Peer 1 floods: its lane takes 8, then refuses (the sender would wait).
        let mut flood = 0;
        while peers.lanes[1].try_send(lookup()).is_ok() {
            flood += 1;
            assert!(flood <= 8, "a lane is bounded");
        }
        assert_eq!(flood, 8);
        assert_eq!(peers.lanes[1].try_send(lookup()), Err(TxQueueError::Full));
        // Peers 0 and 2 still get in, and the drain takes one of each in turn: the
        // honest messages are among the first three, not behind the eight.
        peers.send(ReplicaId(0), stop()).expect("room");
        peers.send(ReplicaId(2), stop()).expect("room");
        let mut order = Vec::new();
        let left = rx.drain_peers(|input| {
            order.push(matches!(input, Input::Stop));
            true
        });
        assert!(!left);
        assert_eq!(order.len(), 10);
        assert_eq!(order.iter().take(3).filter(|s| **s).count(), 2, "{order:?}");
        assert_eq!(
            peers.send(ReplicaId(9), stop()),
            Err(TxQueueError::Stopped),
            "no lane for an unknown id"
        );
    }

    #[test]
    fn a_tx_queued_after_a_drain_rings_again() {
        let (_control, _peers, txs, rx) = input_queues_sized(4, 4, 16);
        txs.try_send(lookup()).expect("room");
        assert!(matches!(rx.control.try_recv(), Ok(Input::Wake)));
        // The engine thread's turn: clear the bell, then drain.
        rx.rung.store(false, Ordering::SeqCst);
        while rx.txs.try_recv().is_ok() {}
        txs.try_send(lookup()).expect("room");
        assert!(
            matches!(rx.control.try_recv(), Ok(Input::Wake)),
            "a tx after the drain wakes the engine thread"
        );
        assert!(rx.txs.try_recv().is_ok());
    }
}
