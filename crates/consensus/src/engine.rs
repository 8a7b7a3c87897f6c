//! The PBFT replica: one struct, no I/O. Inputs are method calls carrying time; outputs
//! are [`Action`]s the caller drains in order (a `Persist` before any send after it).
//!
//! The log keeps, per height in the window (h, h + L], the PRE-PREPARE and votes of the
//! current view, the bodies known, and the commit certificate once committed. Prepared
//! certificates are kept across views (highest view per height) until a stable
//! checkpoint discards them. Everything is bounded by the window.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use stele_crypto::{Digest, Signature, Signed, Signer, Verified};
use stele_types::certs::SignatureEntry;
use stele_types::{
    codec, Block, BlockBatch, Bodies, Checkpoint, CheckpointCertificate, Commit, CommitCertificate,
    CommittedBlock, DurableEntry, FetchBlocks, FetchBodies, Genesis, Height, Message, NewView,
    Params, PrePrepare, Prepare, PreparedCertificate, Proposal, ReplicaId, Status, TxBody, TxHash,
    ValidatorSet, ViewChange, ViewNumber,
};

use crate::action::{Action, Evidence, Halt, Timer};
use crate::pending::{Pending, TxClass, TxOutcome};
use crate::verify::{Inbound, Reject, VerifiedMessage};
use crate::viewchange;

/// Most bodies kept per height for digests the slot does not need (see `Slot::keeps`);
/// more are ignored. A needed body is never refused: refusing the body of an accepted
/// PRE-PREPARE or a committed block stalls the height for good (issue 21).
const MAX_BODIES_PER_HEIGHT: usize = 4;

/// Evidence slots remembered per validator and window height (see
/// `Engine::evidence_seen`): a PRE-PREPARE, a PREPARE and a COMMIT for each of a few views.
const EVIDENCE_SLOTS_PER_PEER_HEIGHT: usize = 6;

/// What a peer's fetches cost this replica in the current serving interval.
#[derive(Debug, Default, Clone, Copy)]
struct Served {
    /// Which interval (`now / T`).
    interval: u64,
    /// Bytes answered to it in that interval (state-transfer blocks at their largest).
    bytes: u64,
}

/// What an engine needs to start.
#[derive(Clone)]
pub struct Config {
    pub id: ReplicaId,
    pub genesis: Genesis,
    pub signer: Arc<dyn Signer>,
    /// The state digest at height 0.
    pub genesis_state: Digest,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The committed chain as the store holds it, for a restart.
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    /// Last executed (= committed, the node executes as it delivers) height.
    pub executed: Height,
    /// State digest after `executed`.
    pub state_digest: Digest,
    /// The committed blocks above the stable checkpoint with their certificates.
    pub recent: Vec<CommittedBlock>,
    /// The state digests at checkpoint heights above the stable checkpoint.
    pub checkpoint_digests: Vec<(Height, Digest)>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The PRE-PREPARE accepted in the current view.
    pre_prepare: Option<Signed<PrePrepare>>,
    /// Whether that PRE-PREPARE came fresh (skew-checked) or on a NEW-VIEW's authority.
    bodies: BTreeMap<Digest, Block>,
    prepares: BTreeMap<ReplicaId, (Digest, Signature)>,
    commits: BTreeMap<ReplicaId, (Digest, Signature)>,
    sent_prepare: Option<Digest>,
    sent_commit: Option<Digest>,
    /// Digest this replica signed a PRE-PREPARE or PREPARE for, per view: never another.
    signed: BTreeMap<ViewNumber, Digest>,
    committed: Option<CommitCertificate>,
}

/// What a peer's STATUS messages showed, and when this replica last answered it with
/// each kind of retransmission: a STATUS comes every T/4, and answering each one in full
/// re-sends the same VIEW-CHANGE, NEW-VIEW and in-window votes many times over. Their
/// verification (hundreds of signatures for a VIEW-CHANGE with a full window) then
/// starves the receiver, and the messages that would end the view change wait behind
/// copies of themselves.
#[derive(Debug, Default)]
struct PeerStatus {
    /// The executed height it last reported, and since when it has reported it.
    executed: Height,
    executed_since: u64,
    /// When each answer last went to it (None: never).
    new_view: Option<(ViewNumber, u64)>,
    view_change: Option<(ViewNumber, u64)>,
    checkpoint: Option<(Height, u64)>,
    checkpoint_votes: Option<u64>,
    votes: Option<u64>,
    blocks: Option<u64>,
}

impl Slot {
    fn clear_view(&mut self) {
        self.pre_prepare = None;
        self.prepares.clear();
        self.commits.clear();
        self.sent_prepare = None;
        self.sent_commit = None;
    }

    /// Whether the body of `d` is needed here: the PRE-PREPARE accepted in the current
    /// view (fresh or a NEW-VIEW entry), the committed block, or a digest this replica
    /// signed in some view (its prepared certificates among them: it signs before it
    /// prepares). Those bodies are durable and served to peers; there is at most one per
    /// view this replica signed in, so they stay few without a cap.
    fn keeps(&self, d: &Digest) -> bool {
        self.pre_prepare.as_ref().is_some_and(|pp| pp.digest == *d)
            || self.committed.as_ref().is_some_and(|c| c.digest == *d)
            || self.signed.values().any(|s| s == d)
    }

    /// Adds a body. A needed one is always kept (set what needs it first); any other is
    /// kept only while fewer than `MAX_BODIES_PER_HEIGHT` unneeded ones are.
    fn add_body(&mut self, body: Block) {
        let d = body.digest();
        if self.bodies.contains_key(&d) {
            return;
        }
        if !self.keeps(&d) {
            let unneeded = self.bodies.keys().filter(|k| !self.keeps(k)).count();
            if unneeded >= MAX_BODIES_PER_HEIGHT {
                return;
            }
        }
        self.bodies.insert(d, body);
        debug_assert!(self.bodies.contains_key(&d));
    }
}

/// Counters the engine keeps for the driver's metrics.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub view_changes: u64,
    pub committed_heights: u64,
}

/// A PBFT replica.
pub struct Engine {
    id: ReplicaId,
    vs: ValidatorSet,
    params: Params,
    signer: Arc<dyn Signer>,

    view: ViewNumber,
    active: bool,
    halted: bool,
    /// Follows views without leading them (see [`Engine::set_following`]).
    following: bool,

    /// Low watermark h: the stable checkpoint.
    low: Height,
    stable: Option<CheckpointCertificate>,
    /// Highest height delivered (committed and handed to the executor, in order).
    delivered: Height,
    /// Highest height executed (reported by `on_executed`).
    executed: Height,
    /// Highest height ever committed by this replica (timer back-off rule).
    max_committed: Height,
    /// `max_committed` when this replica became active in its current view: a timer
    /// that fires before a higher height commits means the view change has not yet
    /// succeeded, and T doubles (Castro & Liskov §4.5.2).
    view_entry_committed: Height,
    /// Own state digests at checkpoint heights above h.
    own_checkpoints: BTreeMap<Height, Digest>,
    checkpoint_votes: BTreeMap<Height, BTreeMap<ReplicaId, (Digest, Signature)>>,

    slots: BTreeMap<Height, Slot>,
    /// Highest-view prepared certificate per height, kept across views.
    prepared: BTreeMap<Height, PreparedCertificate>,
    /// Latest VIEW-CHANGE per replica (outside the per-peer buffer).
    latest_vc: BTreeMap<ReplicaId, Verified<ViewChange>>,
    /// The (view, digest) of the PRE-PREPARE last accepted fresh from the primary at each
    /// height in the window. Slots forget theirs when a view change starts; this outlives
    /// that, so a VIEW-CHANGE proving the primary signed another block for the same
    /// (view, height) is caught: an equivocation split between replicas shows only there.
    pre_prepares_seen: BTreeMap<Height, (ViewNumber, Digest)>,
    /// The evidence slots (height, view, replica, kind) already reported, so that a
    /// peer signing one slot many ways draws one Evidence action, not one synced write
    /// per message. Heights in the window only (votes outside it are not looked at);
    /// pruned with the log at each stable checkpoint, and capped at `evidence_cap`, the
    /// lowest dropped first.
    evidence_seen: BTreeSet<(Height, ViewNumber, ReplicaId, &'static str)>,
    evidence_cap: usize,
    /// Latest accepted NEW-VIEW.
    new_view: Option<Signed<NewView>>,
    /// Per peer: its last STATUS and when it was last answered (retransmission pacing).
    peer_status: BTreeMap<ReplicaId, PeerStatus>,
    /// Our own latest VIEW-CHANGE.
    own_vc: Option<Signed<ViewChange>>,
    /// The view whose NEW-VIEW wait timer is running.
    nv_timer_view: Option<ViewNumber>,
    /// Current view-change timeout (doubles, capped, returns to base).
    timeout: u64,
    /// The request the timer follows.
    tracking: Option<TxHash>,

    /// Next height this primary proposes.
    next_height: Height,
    /// Highest timestamp of a non-null block delivered (not of proposals, which may never
    /// commit: see [`Engine::timestamp_bounds`]).
    max_timestamp: u64,
    pending: Pending,
    relay_buf: Vec<Signed<TxBody>>,
    /// The clocks of the last request admitted since the last drain: the proposal they
    /// may make waits for the drain, so an idle primary proposes a burst as one block.
    requests_since_drain: Option<(u64, u64)>,
    /// Messages for a future view or just above the window, per peer, bounded.
    buffer: BTreeMap<ReplicaId, VecDeque<(u64, Inbound)>>,
    buffer_cap: usize,
    /// The window advanced: the buffer is replayed once the current input is handled.
    replay_due: bool,
    /// Bodies wanted for O entries: height → digest.
    wanted: BTreeMap<Height, Digest>,
    /// State transfer in progress: up to which height, asked at what time.
    fetching: Option<(Height, u64)>,
    /// Per peer: what answering its fetches cost in the current interval of T. A peer
    /// asks as often as it likes, and each FetchBlocks is a store read and encode of up
    /// to a full batch: answers past `serve_budget` bytes in one interval are refused
    /// (`Reject::RateLimited`).
    served: BTreeMap<ReplicaId, Served>,
    /// Bytes per peer and interval of T (see [`serve_budget`]).
    serve_budget: u64,
    /// What one block of a state-transfer batch is charged: its largest encoding, since
    /// the blocks are read from the store, which the engine cannot see.
    serve_block_cost: u64,

    timers: BTreeMap<Timer, u64>,
    actions: Vec<Action>,
    stats: EngineStats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("id", &self.id)
            .field("view", &self.view)
            .field("active", &self.active)
            .field("low", &self.low)
            .field("delivered", &self.delivered)
            .field("executed", &self.executed)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A replica at genesis, active in view 0.
    pub fn new(config: Config, now: u64) -> Engine {
        Engine::restore(config, Vec::new(), ChainState::default(), now)
    }

    /// A replica rebuilt from its durable consensus record and committed chain: active
    /// again only in the view whose NEW-VIEW it accepted and had not left.
    pub fn restore(
        config: Config,
        durable: Vec<DurableEntry>,
        chain: ChainState,
        now: u64,
    ) -> Engine {
        let vs = config.genesis.validator_set();
        let params = config.genesis.params.clone();
        assert!(
            vs.contains(config.id),
            "own id {} is not in the validator set",
            config.id
        );
        assert_eq!(
            vs.key(config.id),
            Some(&config.signer.public_key()),
            "signer key is not validator {}'s genesis key",
            config.id
        );
        let mut e = Engine {
            id: config.id,
            pending: Pending::new(params.mempool_size as usize),
            buffer_cap: 3 * params.window as usize + 16,
            evidence_cap: EVIDENCE_SLOTS_PER_PEER_HEIGHT
                .saturating_mul(vs.n())
                .saturating_mul(params.window as usize),
            timeout: params.view_timeout_ms,
            vs,
            params,
            signer: config.signer,
            view: ViewNumber(0),
            active: true,
            halted: false,
            following: false,
            low: Height(0),
            stable: None,
            delivered: chain.executed,
            executed: chain.executed,
            max_committed: chain.executed,
            view_entry_committed: chain.executed,
            own_checkpoints: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            slots: BTreeMap::new(),
            prepared: BTreeMap::new(),
            latest_vc: BTreeMap::new(),
            pre_prepares_seen: BTreeMap::new(),
            evidence_seen: BTreeSet::new(),
            new_view: None,
            peer_status: BTreeMap::new(),
            own_vc: None,
            nv_timer_view: None,
            tracking: None,
            next_height: chain.executed.next(),
            max_timestamp: 0,
            relay_buf: Vec::new(),
            requests_since_drain: None,
            buffer: BTreeMap::new(),
            replay_due: false,
            wanted: BTreeMap::new(),
            fetching: None,
            served: BTreeMap::new(),
            serve_budget: 0,
            serve_block_cost: 0,
            timers: BTreeMap::new(),
            actions: Vec::new(),
            stats: EngineStats::default(),
        };
        (e.serve_block_cost, e.serve_budget) = serve_budget(&e.params, e.vs.n());
        e.own_checkpoints.insert(Height(0), config.genesis_state);
        for (h, d) in chain.checkpoint_digests {
            e.own_checkpoints.insert(h, d);
        }
        e.own_checkpoints.insert(chain.executed, chain.state_digest);
        let window_top = e.low_after(&durable).0.saturating_add(e.params.window);
        for cb in chain.recent {
            let h = cb.block.height();
            if h.0 > window_top {
                continue;
            }
            if !cb.block.is_null() {
                e.max_timestamp = e.max_timestamp.max(cb.block.header.timestamp_ms);
            }
            let slot = e.slots.entry(h).or_default();
            slot.committed = Some(cb.certificate);
            slot.add_body(cb.block);
        }
        let mut vc_view = ViewNumber(0);
        // The fresh PRE-PREPAREs it proposed or prepared, with its own PREPARE (none as
        // primary): back in their slots once the view it is active in is known.
        let mut accepted: Vec<(Signed<PrePrepare>, Option<Signed<Prepare>>)> = Vec::new();
        for entry in durable {
            match entry {
                DurableEntry::PrePrepareSent { pre_prepare, body } => {
                    let slot = e.slots.entry(pre_prepare.height).or_default();
                    slot.signed.insert(pre_prepare.view, pre_prepare.digest);
                    slot.add_body(body);
                    accepted.push((pre_prepare, None));
                }
                DurableEntry::PrepareSent {
                    pre_prepare,
                    prepare,
                    body,
                } => {
                    let slot = e.slots.entry(pre_prepare.height).or_default();
                    slot.signed.insert(pre_prepare.view, pre_prepare.digest);
                    slot.add_body(body);
                    accepted.push((pre_prepare, Some(prepare)));
                }
                DurableEntry::Prepared(c) => {
                    let keep = e
                        .prepared
                        .get(&c.height())
                        .is_none_or(|cur| cur.view() < c.view());
                    if keep {
                        e.prepared.insert(c.height(), c);
                    }
                }
                DurableEntry::ViewChangeSent { view } => vc_view = vc_view.max(view),
                DurableEntry::NewViewAccepted(nv) => {
                    if e.new_view.as_ref().is_none_or(|cur| cur.view < nv.view) {
                        e.new_view = Some(nv);
                    }
                }
                DurableEntry::StableCheckpoint(c) => {
                    if c.height > e.low {
                        e.low = c.height;
                        e.stable = Some(c);
                    }
                }
            }
        }
        let nv_view = e.new_view.as_ref().map_or(ViewNumber(0), |nv| nv.view);
        e.view = vc_view.max(nv_view);
        // Active in view 0 from genesis, in w > 0 only through an accepted NEW-VIEW(w)
        // that we have not left by sending a VIEW-CHANGE for a higher view.
        e.active = vc_view <= nv_view && (e.view == ViewNumber(0) || e.new_view.is_some());
        if e.active && e.view > ViewNumber(0) {
            // Our NEW-VIEW entries are our PRE-PREPAREs in this view.
            if let Some(nv) = e.new_view.clone() {
                let ours = e.vs.primary(nv.view) == e.id;
                for pp in nv.value.pre_prepares {
                    if pp.height > e.low {
                        let h = pp.height;
                        let slot = e.slots.entry(h).or_default();
                        if ours {
                            // O entries are PRE-PREPAREs this replica signed as primary
                            // (persisted with the NEW-VIEW, not as `PrePrepareSent`): the
                            // next fresh proposal goes above them, never at their height
                            // with another digest (simulator seed 645).
                            slot.signed.insert(pp.view, pp.digest);
                        }
                        let null = pp.digest == Block::null_digest(h);
                        slot.pre_prepare = Some(pp);
                        if null {
                            slot.add_body(Block::null(h));
                        }
                    }
                }
            }
        }
        if e.active {
            e.restore_accepted(accepted);
        }
        e.gc_below(e.low);
        // Our CHECKPOINT votes died with the crash: without our own, the honest replicas
        // left may be one short of q for good.
        e.count_own_checkpoint_votes(now);
        let highest_signed = e
            .slots
            .iter()
            .filter(|(_, s)| s.signed.contains_key(&e.view))
            .map(|(h, _)| *h)
            .next_back()
            .unwrap_or(Height(0));
        e.next_height = e.delivered.max(highest_signed).max(e.low).next();
        if !e.active {
            // Re-send our VIEW-CHANGE for the view we were changing to.
            e.send_view_change(e.view, now);
        }
        e.set_timer(Timer::Status, now + e.status_interval());
        debug_assert!(e.low <= e.delivered || e.delivered < e.low);
        e
    }

    /// Puts back the PRE-PREPAREs this replica accepted fresh in its current view (and
    /// its PREPARE, and the votes of a prepared certificate it holds there): without them
    /// a restarted primary could neither re-send its in-flight proposals nor count votes
    /// for them, and a restarted backup would take the primary's retransmission for a
    /// new proposal and refuse it as skewed once the skew bound has passed.
    fn restore_accepted(&mut self, accepted: Vec<(Signed<PrePrepare>, Option<Signed<Prepare>>)>) {
        debug_assert!(self.active);
        let view = self.view;
        let primary = self.primary();
        for (pp, prepare) in accepted {
            if pp.view != view || !self.in_window(pp.height) {
                continue;
            }
            let (h, d) = (pp.height, pp.digest);
            let slot = self.slots.entry(h).or_default();
            if slot.pre_prepare.as_ref().is_some_and(|cur| cur.digest != d) {
                // Its own signatures never name two digests at one (view, height).
                debug_assert!(false, "two accepted PRE-PREPAREs at ({view}, {h})");
                continue;
            }
            if let Some(p) = prepare {
                debug_assert_eq!(p.digest, d);
                slot.sent_prepare = Some(d);
                slot.prepares.insert(self.id, (d, p.signature));
            }
            slot.pre_prepare = Some(pp);
            if primary != self.id {
                self.pre_prepares_seen.insert(h, (view, d));
            }
        }
        for (h, c) in &self.prepared {
            if c.view() != view {
                continue;
            }
            let Some(slot) = self.slots.get_mut(h) else {
                continue;
            };
            if slot
                .pre_prepare
                .as_ref()
                .is_some_and(|pp| pp.digest == c.digest())
            {
                for entry in &c.prepares {
                    slot.prepares
                        .entry(entry.replica)
                        .or_insert((c.digest(), entry.signature));
                }
            }
        }
        debug_assert!(self.slots.values().all(|s| s
            .pre_prepare
            .as_ref()
            .is_none_or(|pp| s.signed.get(&pp.view).is_none_or(|d| *d == pp.digest))));
    }

    /// The stable checkpoint height a durable record holds.
    fn low_after(&self, durable: &[DurableEntry]) -> Height {
        durable
            .iter()
            .filter_map(|e| match e {
                DurableEntry::StableCheckpoint(c) => Some(c.height),
                _ => None,
            })
            .max()
            .unwrap_or(Height(0))
    }

    // ---- accessors ---------------------------------------------------------------

    /// This replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }
    /// The current view.
    pub fn view(&self) -> ViewNumber {
        self.view
    }
    /// While `on`, the replica moves to another view only on a valid NEW-VIEW: it does not
    /// start a view change when its timer fires, nor join one on f+1 VIEW-CHANGEs. For a
    /// recovering replica, whose VIEW-CHANGEs the recovery gate holds back: joining a view
    /// change it cannot vote in only lets its own timer carry it alone into a view the
    /// others never reach, where it waits for a NEW-VIEW that never comes. Following, it
    /// stays where the others are and becomes active with their next NEW-VIEW, which the
    /// gate needs (active in a view above m) to open.
    pub fn set_following(&mut self, on: bool) {
        self.following = on;
    }

    /// Whether it is active in its view.
    pub fn is_active(&self) -> bool {
        self.active
    }
    /// Whether it halted.
    pub fn is_halted(&self) -> bool {
        self.halted
    }
    /// The low watermark (stable checkpoint height).
    pub fn low_watermark(&self) -> Height {
        self.low
    }
    /// Highest delivered height.
    pub fn delivered(&self) -> Height {
        self.delivered
    }
    /// Highest executed height.
    pub fn executed(&self) -> Height {
        self.executed
    }
    /// Pending txs.
    pub fn pending(&self) -> &Pending {
        &self.pending
    }
    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.vs
    }
    /// Sizes of the bounded structures, for the simulator's memory checker:
    /// (slots, prepared certificates, checkpoint vote heights, buffered messages).
    pub fn footprint(&self) -> (usize, usize, usize, usize) {
        (
            self.slots.len(),
            self.prepared.len(),
            self.checkpoint_votes.len(),
            self.buffer.values().map(VecDeque::len).sum(),
        )
    }
    /// The bound on each of [`Engine::footprint`]'s log parts.
    pub fn window(&self) -> u64 {
        self.params.window
    }
    /// The per-peer buffer bound.
    pub fn buffer_cap(&self) -> usize {
        self.buffer_cap
    }
    /// The serving budget: (interval ms, bytes per peer and interval, what one block of a
    /// state-transfer batch is charged).
    pub fn serve_budget(&self) -> (u64, u64, u64) {
        (
            self.serve_interval(),
            self.serve_budget,
            self.serve_block_cost,
        )
    }
    /// Evidence slots remembered, and their bound.
    pub fn evidence_footprint(&self) -> (usize, usize) {
        (self.evidence_seen.len(), self.evidence_cap)
    }

    /// The earliest timer deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.values().min().copied()
    }

    /// Takes the actions produced so far, in order.
    ///
    /// A driver drains after each burst of inputs, and the requests admitted since the
    /// last drain are acted on here, as a burst. As primary, it proposes them: proposing
    /// at each request sent a burst's first tx alone whenever no block was in flight (a
    /// lone tx goes at once) and left the rest waiting for that block to execute. Then
    /// the client txs among them are relayed, after the rest, so a relay holds what
    /// arrived together and no tx waits for a timer before the primary can propose it.
    pub fn drain(&mut self) -> Vec<Action> {
        if let Some((now, unix_ms)) = self.requests_since_drain.take() {
            self.maybe_propose(now, unix_ms);
        }
        self.flush_relay();
        std::mem::take(&mut self.actions)
    }

    fn status_interval(&self) -> u64 {
        status_interval(&self.params)
    }

    fn serve_interval(&self) -> u64 {
        self.params.view_timeout_ms.max(1)
    }

    /// Bytes `to` may still be answered in the current interval.
    fn serve_allowance(&mut self, to: ReplicaId, now: u64) -> u64 {
        let interval = now / self.serve_interval();
        let s = self.served.entry(to).or_default();
        if s.interval != interval {
            *s = Served { interval, bytes: 0 };
        }
        self.serve_budget.saturating_sub(s.bytes)
    }

    /// Charges `bytes` of answers to `to`'s budget (within its allowance).
    fn charge(&mut self, to: ReplicaId, bytes: u64) {
        let s = self.served.entry(to).or_default();
        s.bytes = s.bytes.saturating_add(bytes);
        debug_assert!(s.bytes <= self.serve_budget);
    }

    /// Serves `to` the committed blocks `from..=to_height`, or as many of the first of
    /// them as its budget allows; false if none.
    fn serve_blocks(&mut self, now: u64, to: ReplicaId, from: Height, to_height: Height) -> bool {
        debug_assert!(from <= to_height);
        let wanted = to_height.0 - from.0 + 1;
        let blocks = wanted.min(self.serve_allowance(to, now) / self.serve_block_cost.max(1));
        if blocks == 0 {
            return false;
        }
        self.charge(to, blocks * self.serve_block_cost);
        self.actions.push(Action::ServeBlocks {
            to,
            from,
            to_height: Height(from.0 + blocks - 1),
        });
        true
    }

    fn set_timer(&mut self, t: Timer, at: u64) {
        self.timers.insert(t, at);
    }

    fn primary(&self) -> ReplicaId {
        self.vs.primary(self.view)
    }

    fn is_primary(&self) -> bool {
        self.primary() == self.id
    }

    fn sign<T: stele_crypto::Signable>(&self, v: T) -> Signed<T> {
        Signed::sign(v, self.vs.chain(), self.signer.as_ref())
    }

    fn reject(&mut self, from: ReplicaId, reason: Reject) {
        self.actions.push(Action::Rejected { from, reason });
    }

    /// Reports Byzantine behaviour once per slot it proves something about.
    fn evidence(&mut self, ev: Evidence) {
        let slot = ev.slot();
        if self.evidence_seen.contains(&slot) {
            return;
        }
        if self.evidence_seen.len() >= self.evidence_cap {
            self.evidence_seen.pop_first();
        }
        self.evidence_seen.insert(slot);
        self.actions.push(Action::Evidence(ev));
        debug_assert!(self.evidence_seen.len() <= self.evidence_cap);
    }

    fn in_window(&self, h: Height) -> bool {
        h > self.low && h.0 <= self.low.0.saturating_add(self.params.window)
    }

    // ---- requests ----------------------------------------------------------------

    /// A verified client tx, classified by the node's admission. `from_client` txs are
    /// relayed to the other validators in batches; relayed ones are not relayed again.
    /// A primary proposes it at the next [`Engine::drain`], with the rest of the burst.
    pub fn on_request(
        &mut self,
        now: u64,
        unix_ms: u64,
        hash: TxHash,
        tx: Verified<TxBody>,
        class: TxClass,
        from_client: bool,
    ) {
        if self.halted {
            return;
        }
        let signed = tx.signed().clone();
        if !self.pending.insert(hash, tx, class, now, self.executed) {
            return;
        }
        if from_client {
            self.relay_buf.push(signed);
            if self.relay_buf.len() >= self.params.relay_batch_txs as usize {
                self.flush_relay();
            }
        }
        self.update_tracking(now);
        self.requests_since_drain = Some((now, unix_ms));
    }

    fn flush_relay(&mut self) {
        if !self.relay_buf.is_empty() {
            let txs = std::mem::take(&mut self.relay_buf);
            self.actions
                .push(Action::Broadcast(Message::Relay(stele_types::TxRelay {
                    txs,
                })));
        }
    }

    /// Moves the view-change timer to the oldest tracked request, when the current one
    /// is no longer tracked (committed) or none was.
    fn update_tracking(&mut self, now: u64) {
        if !self.active {
            return;
        }
        if let Some(h) = self.tracking {
            if self.pending.is_tracked(&h) {
                return;
            }
        }
        match self.pending.oldest_tracked() {
            Some((h, since)) => {
                // Tracking of the next request begins now (a fresh T), or when it arrived
                // if that is later.
                let start = since.max(now);
                self.tracking = Some(h);
                self.set_timer(Timer::ViewChange, start + self.timeout);
            }
            None => {
                self.tracking = None;
                self.timers.remove(&Timer::ViewChange);
            }
        }
    }

    // ---- time --------------------------------------------------------------------

    /// Fires the timers due at `now`.
    pub fn on_tick(&mut self, now: u64, unix_ms: u64) {
        if self.halted {
            return;
        }
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, &t)| t <= now)
            .map(|(k, _)| *k)
            .collect();
        for t in due {
            self.timers.remove(&t);
            match t {
                Timer::ViewChange => self.on_view_timer(now),
                Timer::ViewChangeResend => {
                    if !self.active {
                        if let Some(vc) = self.own_vc.clone() {
                            self.actions
                                .push(Action::Broadcast(Message::ViewChange(vc)));
                        }
                        self.set_timer(Timer::ViewChangeResend, now + (self.timeout / 2).max(1));
                    }
                }
                Timer::BatchFlush => self.maybe_propose(now, unix_ms),
                Timer::Status => {
                    self.broadcast_status();
                    self.retry_fetches(now);
                    self.pending.expire_gapped(now, self.params.gapped_ttl_ms);
                    self.set_timer(Timer::Status, now + self.status_interval());
                }
            }
        }
        self.maybe_propose(now, unix_ms);
    }

    fn on_view_timer(&mut self, now: u64) {
        if self.following {
            // Checked again later: once the gate opens the timer is the replica's own.
            self.set_timer(Timer::ViewChange, now + self.timeout);
            return;
        }
        if self.active {
            // The tracked request did not commit within T. If nothing new committed
            // since a view change made this view, that change has not succeeded yet
            // (Castro & Liskov §4.5.2): the next attempt waits twice as long, as when
            // its NEW-VIEW had not come at all.
            if self.view > ViewNumber(0) && self.max_committed <= self.view_entry_committed {
                self.timeout =
                    (self.timeout.saturating_mul(2)).min(self.params.max_view_timeout_ms);
            }
            self.start_view_change(self.view.next(), now);
        } else {
            // No valid NEW-VIEW within the timeout: double it (capped) and move on.
            self.timeout = (self.timeout.saturating_mul(2)).min(self.params.max_view_timeout_ms);
            self.start_view_change(self.view.next(), now);
        }
    }

    fn broadcast_status(&mut self) {
        let s = self.sign(Status {
            replica: self.id,
            view: self.view,
            active: self.active,
            executed: self.executed,
            stable_checkpoint: self.low,
        });
        self.actions.push(Action::Broadcast(Message::Status(s)));
    }

    fn retry_fetches(&mut self, now: u64) {
        if !self.wanted.is_empty() {
            let wanted: Vec<(Height, Digest)> = self.wanted.iter().map(|(h, d)| (*h, *d)).collect();
            self.actions
                .push(Action::Broadcast(Message::FetchBodies(FetchBodies {
                    wanted,
                })));
        }
        if let Some((to, at)) = self.fetching {
            if self.delivered >= to {
                self.fetching = None;
            } else if now.saturating_sub(at) > self.params.view_timeout_ms {
                // The peer did not answer; ask again (another peer, round-robin).
                self.fetching = None;
                let peer = ReplicaId(((now / 1000) % self.vs.n() as u64) as u16);
                if peer != self.id {
                    self.request_blocks(peer, to, now);
                }
            }
        }
    }

    // ---- messages ----------------------------------------------------------------

    /// A verified message from `from`, which arrived at `arrival_unix_ms`.
    pub fn on_message(
        &mut self,
        now: u64,
        unix_ms: u64,
        from: ReplicaId,
        arrival_unix_ms: u64,
        msg: VerifiedMessage,
    ) {
        if self.halted || from == self.id || !self.vs.contains(from) {
            return;
        }
        self.handle(now, unix_ms, from, arrival_unix_ms, msg.0);
        self.replay_if_window_moved(now, unix_ms);
        self.maybe_propose(now, unix_ms);
    }

    fn handle(&mut self, now: u64, unix_ms: u64, from: ReplicaId, arrival: u64, m: Inbound) {
        match m {
            Inbound::Proposal { pre_prepare, body } => {
                self.on_proposal(now, from, arrival, pre_prepare, body)
            }
            Inbound::Prepare(p) => self.on_prepare(now, from, arrival, p),
            Inbound::Commit(c) => self.on_commit(now, from, arrival, c),
            Inbound::Checkpoint(c) => self.on_checkpoint(now, from, arrival, c),
            Inbound::CheckpointCertificate(c) => self.make_stable(c, now),
            Inbound::ViewChange(vc) => self.on_view_change(now, from, vc),
            Inbound::NewView(nv) => self.on_new_view(now, unix_ms, from, nv),
            Inbound::Status(s) => self.on_status(now, from, s),
            Inbound::FetchBodies(f) => self.on_fetch_bodies(now, from, f),
            Inbound::Bodies(b) => self.on_bodies(now, b),
            Inbound::FetchBlocks(f) => self.on_fetch_blocks(now, from, f),
            Inbound::Blocks(b) => self.on_blocks(now, b),
            // The node admits relayed txs and calls `on_request`.
            Inbound::Relay(_) => {}
        }
    }

    /// Keeps a message for later (future view or just above the window), bounded per peer.
    fn buffer(&mut self, from: ReplicaId, arrival: u64, m: Inbound) {
        let cap = self.buffer_cap;
        let q = self.buffer.entry(from).or_default();
        if q.len() >= cap {
            q.pop_front();
        }
        q.push_back((arrival, m));
        debug_assert!(q.len() <= cap);
    }

    /// Replays the buffer after the input that moved the window, not in the middle of it
    /// (a NEW-VIEW moves it before its O entries are in place). A replay may move the
    /// window again; each round needs a higher stable checkpoint, so this ends.
    fn replay_if_window_moved(&mut self, now: u64, unix_ms: u64) {
        while std::mem::take(&mut self.replay_due) && !self.halted {
            self.replay_buffer(now, unix_ms);
        }
    }

    fn replay_buffer(&mut self, now: u64, unix_ms: u64) {
        self.replay_due = false;
        let buffered = std::mem::take(&mut self.buffer);
        for (from, q) in buffered {
            for (arrival, m) in q {
                self.handle(now, unix_ms, from, arrival, m);
            }
        }
    }

    /// Common gate for PRE-PREPARE / PREPARE / COMMIT: Ok(true) act, Ok(false) buffered.
    fn vote_gate(
        &mut self,
        from: ReplicaId,
        arrival: u64,
        view: ViewNumber,
        height: Height,
        m: &Inbound,
    ) -> bool {
        if view < self.view {
            self.reject(from, Reject::WrongView(format!("{view} < {}", self.view)));
            return false;
        }
        if view > self.view || !self.active {
            self.buffer(from, arrival, m.clone());
            return false;
        }
        if height <= self.low {
            // Below the window: already stable; not an error from an honest laggard.
            return false;
        }
        if !self.in_window(height) {
            if height.0 <= self.low.0.saturating_add(2 * self.params.window) {
                self.buffer(from, arrival, m.clone());
            } else {
                self.reject(
                    from,
                    Reject::OutOfWindow(format!(
                        "{height} above {}+{}",
                        self.low, self.params.window
                    )),
                );
            }
            return false;
        }
        true
    }

    fn on_proposal(
        &mut self,
        now: u64,
        from: ReplicaId,
        arrival: u64,
        pp: Verified<PrePrepare>,
        body: Block,
    ) {
        let m = Inbound::Proposal {
            pre_prepare: pp.clone(),
            body: body.clone(),
        };
        if !self.vote_gate(from, arrival, pp.view, pp.height, &m) {
            return;
        }
        debug_assert!(
            body.matches(pp.height, &pp.digest),
            "verify checked the body"
        );
        let primary = self.primary();
        let slot = self.slots.entry(pp.height).or_default();
        if let Some(cur) = &slot.pre_prepare {
            if cur.digest != pp.digest {
                let ev = Evidence::EquivocatingPrimary {
                    primary,
                    view: pp.view,
                    height: pp.height,
                    digests: (cur.digest, pp.digest),
                };
                self.evidence(ev);
                self.reject(from, Reject::Equivocation(primary));
            } else {
                // A retransmission: make sure we have the body.
                slot.add_body(body);
                self.progress(pp.height, now);
            }
            return;
        }
        if self.id == primary {
            // We are the primary of this view; only our own PRE-PREPAREs exist.
            self.reject(from, Reject::Equivocation(primary));
            return;
        }
        let skew = self.params.clock_skew_ms;
        let ts = body.header.timestamp_ms;
        if ts.abs_diff(arrival) > skew {
            self.reject(
                from,
                Reject::Skew {
                    timestamp_ms: ts,
                    arrival_ms: arrival,
                },
            );
            return;
        }
        let (below, above) = self.timestamp_bounds(pp.height);
        if !body.is_null() && (ts <= below || ts >= above) {
            self.reject(
                from,
                Reject::Timestamp {
                    timestamp_ms: ts,
                    below,
                    above,
                },
            );
            return;
        }
        self.pre_prepares_seen
            .insert(pp.height, (pp.view, pp.digest));
        let slot = self.slots.entry(pp.height).or_default();
        slot.pre_prepare = Some(pp.signed().clone());
        slot.add_body(body);
        self.progress(pp.height, now);
    }

    fn on_prepare(&mut self, now: u64, from: ReplicaId, arrival: u64, p: Verified<Prepare>) {
        let m = Inbound::Prepare(p.clone());
        if !self.vote_gate(from, arrival, p.view, p.height, &m) {
            return;
        }
        if p.replica == self.primary() {
            self.reject(from, Reject::PrimaryPrepare(p.replica));
            return;
        }
        let slot = self.slots.entry(p.height).or_default();
        if let Some((d, _)) = slot.prepares.get(&p.replica) {
            if *d != p.digest {
                let ev = Evidence::ConflictingVotes {
                    replica: p.replica,
                    kind: "prepare",
                    view: p.view,
                    height: p.height,
                };
                self.evidence(ev);
            }
            self.reject(from, Reject::Duplicate(p.replica));
            return;
        }
        slot.prepares.insert(p.replica, (p.digest, *p.signature()));
        self.progress(p.height, now);
    }

    fn on_commit(&mut self, now: u64, from: ReplicaId, arrival: u64, c: Verified<Commit>) {
        let m = Inbound::Commit(c.clone());
        if !self.vote_gate(from, arrival, c.view, c.height, &m) {
            return;
        }
        let slot = self.slots.entry(c.height).or_default();
        if let Some((d, _)) = slot.commits.get(&c.replica) {
            if *d != c.digest {
                let ev = Evidence::ConflictingVotes {
                    replica: c.replica,
                    kind: "commit",
                    view: c.view,
                    height: c.height,
                };
                self.evidence(ev);
            }
            self.reject(from, Reject::Duplicate(c.replica));
            return;
        }
        slot.commits.insert(c.replica, (c.digest, *c.signature()));
        self.progress(c.height, now);
    }

    /// Drives one height forward as far as its messages allow.
    fn progress(&mut self, height: Height, now: u64) {
        if !self.active || !self.in_window(height) {
            return;
        }
        let view = self.view;
        let primary = self.primary();
        let q = self.vs.quorum();
        let id = self.id;
        let Some(slot) = self.slots.get_mut(&height) else {
            return;
        };
        let Some(pp) = slot.pre_prepare.clone() else {
            return;
        };
        let d = pp.digest;
        let Some(body) = slot.bodies.get(&d).cloned() else {
            self.wanted.insert(height, d);
            return;
        };
        // 1. PREPARE (backups), durable with the body before it is sent.
        if id != primary && slot.sent_prepare.is_none() {
            if slot.signed.get(&view).is_some_and(|s| *s != d) {
                // We signed another digest at (view, height) before a restart: never conflict.
                return;
            }
            let prepare = Signed::sign(
                Prepare {
                    view,
                    height,
                    digest: d,
                    replica: id,
                },
                self.vs.chain(),
                self.signer.as_ref(),
            );
            slot.signed.insert(view, d);
            slot.sent_prepare = Some(d);
            slot.prepares.insert(id, (d, prepare.signature));
            self.actions
                .push(Action::Persist(vec![DurableEntry::PrepareSent {
                    pre_prepare: pp.clone(),
                    prepare: prepare.clone(),
                    body: body.clone(),
                }]));
            self.actions
                .push(Action::Broadcast(Message::Prepare(prepare)));
        }
        // 2. Prepared: PRE-PREPARE + q−1 matching PREPAREs from distinct backups.
        let slot = self.slots.get_mut(&height).expect("slot exists");
        if slot.sent_commit.is_none() {
            let backups: Vec<SignatureEntry> = slot
                .prepares
                .iter()
                .filter(|(r, (pd, _))| **r != primary && *pd == d)
                .map(|(r, (_, s))| SignatureEntry {
                    replica: *r,
                    signature: *s,
                })
                .collect();
            if backups.len() + 1 < q {
                return;
            }
            let cert = PreparedCertificate {
                pre_prepare: pp.clone(),
                prepares: backups[..q - 1].to_vec(),
            };
            let commit = Signed::sign(
                Commit {
                    view,
                    height,
                    digest: d,
                    replica: id,
                },
                self.vs.chain(),
                self.signer.as_ref(),
            );
            slot.sent_commit = Some(d);
            slot.commits.insert(id, (d, commit.signature));
            debug_assert!(cert.prepares.iter().all(|e| e.replica != primary));
            let keep = self.prepared.get(&height).is_none_or(|c| c.view() <= view);
            if keep {
                self.prepared.insert(height, cert.clone());
            }
            self.actions
                .push(Action::Persist(vec![DurableEntry::Prepared(cert)]));
            self.actions
                .push(Action::Broadcast(Message::Commit(commit)));
        }
        // 3. Committed-local: prepared + q matching COMMITs.
        let slot = self.slots.get_mut(&height).expect("slot exists");
        if slot.committed.is_none() {
            let commits: Vec<SignatureEntry> = slot
                .commits
                .iter()
                .filter(|(_, (cd, _))| *cd == d)
                .map(|(r, (_, s))| SignatureEntry {
                    replica: *r,
                    signature: *s,
                })
                .collect();
            if commits.len() < q {
                return;
            }
            slot.committed = Some(CommitCertificate {
                view,
                height,
                digest: d,
                commits: commits[..q].to_vec(),
            });
            self.deliver_ready(now);
        }
    }

    /// Delivers committed heights in order.
    fn deliver_ready(&mut self, now: u64) {
        loop {
            let next = self.delivered.next();
            let Some(slot) = self.slots.get(&next) else {
                break;
            };
            let Some(cert) = slot.committed.clone() else {
                break;
            };
            let Some(body) = slot.bodies.get(&cert.digest).cloned() else {
                self.wanted.insert(next, cert.digest);
                break;
            };
            debug_assert!(body.matches(next, &cert.digest));
            self.delivered = next;
            self.wanted.remove(&next);
            if next > self.max_committed {
                // A height this replica never committed before: the timer returns to base.
                self.max_committed = next;
                self.timeout = self.params.view_timeout_ms;
            }
            self.stats.committed_heights += 1;
            self.pending.mark_committed(body.txs.with_hashes());
            if !body.is_null() {
                self.max_timestamp = self.max_timestamp.max(body.header.timestamp_ms);
            }
            self.actions.push(Action::Deliver {
                block: body,
                certificate: cert,
            });
        }
        if self.next_height <= self.delivered {
            self.next_height = self.delivered.next();
        }
        self.update_tracking(now);
    }

    /// The executor finished `height`: its state digest and what became of pending txs.
    pub fn on_executed(
        &mut self,
        now: u64,
        height: Height,
        state_digest: Digest,
        outcomes: &[(TxHash, TxOutcome)],
    ) {
        assert_eq!(
            height,
            self.executed.next(),
            "blocks execute strictly in height order"
        );
        assert!(
            height <= self.delivered,
            "executed a height that was not delivered"
        );
        self.executed = height;
        self.pending.apply_outcomes(outcomes, now, self.executed);
        if height.0 % self.params.checkpoint_interval == 0 {
            self.own_checkpoints.insert(height, state_digest);
            if let Some(stable) = self.stable.clone() {
                if stable.height == height {
                    self.check_divergence(&stable);
                }
            }
            if self.halted {
                return;
            }
            let c = self.sign(Checkpoint {
                height,
                state_digest,
                replica: self.id,
            });
            if self.in_window(height) {
                self.checkpoint_votes
                    .entry(height)
                    .or_default()
                    .insert(self.id, (state_digest, c.signature));
            }
            self.actions.push(Action::Broadcast(Message::Checkpoint(c)));
            self.try_stable(height, now);
            // Our own vote may have made it stable. The wall clock only travels on to a
            // NEW-VIEW's replay, where it is not read.
            self.replay_if_window_moved(now, 0);
        }
        self.update_tracking(now);
    }

    // ---- checkpoints -------------------------------------------------------------

    fn on_checkpoint(&mut self, now: u64, from: ReplicaId, arrival: u64, c: Verified<Checkpoint>) {
        if c.height <= self.low {
            return;
        }
        if c.height.0 % self.params.checkpoint_interval != 0 {
            self.reject(
                from,
                Reject::Malformed {
                    what: "CHECKPOINT",
                    why: format!("height {} not a multiple of K", c.height),
                },
            );
            return;
        }
        if !self.in_window(c.height) {
            if c.height.0 <= self.low.0.saturating_add(2 * self.params.window) {
                self.buffer(from, arrival, Inbound::Checkpoint(c));
            } else {
                self.reject(
                    from,
                    Reject::OutOfWindow(format!("checkpoint {}", c.height)),
                );
            }
            return;
        }
        let votes = self.checkpoint_votes.entry(c.height).or_default();
        if votes.contains_key(&c.replica) {
            return;
        }
        votes.insert(c.replica, (c.state_digest, *c.signature()));
        self.try_stable(c.height, now);
    }

    fn try_stable(&mut self, height: Height, now: u64) {
        let Some(votes) = self.checkpoint_votes.get(&height) else {
            return;
        };
        let mut by_digest: BTreeMap<Digest, Vec<SignatureEntry>> = BTreeMap::new();
        for (r, (d, s)) in votes {
            by_digest.entry(*d).or_default().push(SignatureEntry {
                replica: *r,
                signature: *s,
            });
        }
        let q = self.vs.quorum();
        if let Some((d, sigs)) = by_digest.into_iter().find(|(_, s)| s.len() >= q) {
            let cert = CheckpointCertificate {
                height,
                state_digest: d,
                signatures: sigs[..q].to_vec(),
            };
            self.make_stable(cert, now);
        }
    }

    fn check_divergence(&mut self, stable: &CheckpointCertificate) {
        if let Some(ours) = self.own_checkpoints.get(&stable.height) {
            if *ours != stable.state_digest {
                self.halted = true;
                self.actions.push(Action::Halt(Halt::Divergence {
                    height: stable.height,
                    ours: *ours,
                    stable: stable.state_digest,
                }));
            }
        }
    }

    /// A checkpoint certificate (ours or a peer's, verified): h moves to its height.
    fn make_stable(&mut self, cert: CheckpointCertificate, now: u64) {
        if cert.height <= self.low || self.halted {
            return;
        }
        if cert.height <= self.executed {
            self.check_divergence(&cert);
            if self.halted {
                return;
            }
        }
        self.actions.push(Action::PersistCheckpoint(cert.clone()));
        // Messages buffered just above the old window may now be in it (DESIGN.md:
        // replayed when the view changes and when the window advances).
        self.replay_due = true;
        self.low = cert.height;
        self.stable = Some(cert.clone());
        self.gc_below(cert.height);
        if self.next_height <= self.low {
            self.next_height = self.low.next();
        }
        if self.delivered < cert.height {
            // Behind a stable checkpoint: fetch the committed blocks up to it.
            let peer = cert
                .signatures
                .iter()
                .map(|e| e.replica)
                .find(|r| *r != self.id);
            if let Some(peer) = peer {
                self.request_blocks(peer, cert.height, now);
            }
        }
        // Checkpoints executed while above the old window now count our vote.
        self.count_own_checkpoint_votes(now);
        debug_assert!(self.slots.keys().all(|h| *h > self.low));
        debug_assert!(self.prepared.keys().all(|h| *h > self.low));
    }

    /// Our CHECKPOINT vote at `h`, from our own state digest there.
    fn own_checkpoint_vote(&self, h: Height) -> Option<Signed<Checkpoint>> {
        let k = self.params.checkpoint_interval;
        if h.0 == 0 || h.0 % k != 0 || h > self.executed {
            return None;
        }
        let d = self.own_checkpoints.get(&h)?;
        Some(self.sign(Checkpoint {
            height: h,
            state_digest: *d,
            replica: self.id,
        }))
    }

    /// Counts our own vote at every executed checkpoint height in the window that lacks
    /// it (after a restart, or for heights executed above an older window).
    fn count_own_checkpoint_votes(&mut self, now: u64) {
        if self.halted {
            return;
        }
        let heights: Vec<Height> = self
            .own_checkpoints
            .range(self.low.next()..)
            .map(|(h, _)| *h)
            .filter(|h| self.in_window(*h))
            .filter(|h| {
                self.checkpoint_votes
                    .get(h)
                    .is_none_or(|v| !v.contains_key(&self.id))
            })
            .collect();
        for h in heights {
            let Some(c) = self.own_checkpoint_vote(h) else {
                continue;
            };
            self.checkpoint_votes
                .entry(h)
                .or_default()
                .insert(self.id, (c.state_digest, c.signature));
            self.try_stable(h, now);
            if h <= self.low || self.halted {
                // It became stable (and the log moved on with it).
                break;
            }
        }
        debug_assert!(self.checkpoint_votes.keys().all(|h| *h > self.low));
    }

    /// Discards the log at or below `h` (committed blocks live on in the store).
    fn gc_below(&mut self, h: Height) {
        self.slots = self.slots.split_off(&h.next());
        self.pre_prepares_seen = self.pre_prepares_seen.split_off(&h.next());
        self.evidence_seen =
            self.evidence_seen
                .split_off(&(h.next(), ViewNumber(0), ReplicaId(0), ""));
        self.prepared = self.prepared.split_off(&h.next());
        self.checkpoint_votes = self.checkpoint_votes.split_off(&h.next());
        self.wanted = self.wanted.split_off(&h.next());
        // Keep our own digest at h itself (a stable checkpoint we may still compare).
        self.own_checkpoints = self.own_checkpoints.split_off(&h);
    }

    // ---- state transfer ----------------------------------------------------------

    fn request_blocks(&mut self, peer: ReplicaId, upto: Height, now: u64) {
        if self.fetching.is_some_and(|(to, _)| to >= upto) {
            return;
        }
        let from = self.delivered.next();
        if from > upto {
            return;
        }
        let to = Height(
            upto.0
                .min(from.0 + self.params.transfer_batch_blocks as u64 - 1),
        );
        self.fetching = Some((upto, now));
        self.actions.push(Action::Send(
            peer,
            Message::FetchBlocks(FetchBlocks { from, to }),
        ));
    }

    fn on_fetch_blocks(&mut self, now: u64, from: ReplicaId, f: FetchBlocks) {
        if f.from > f.to || f.from > self.delivered {
            return;
        }
        let to = Height(
            f.to.0
                .min(self.delivered.0)
                .min(f.from.0.saturating_add(self.transfer_batch() - 1)),
        );
        if !self.serve_blocks(now, from, f.from, to) {
            self.reject(
                from,
                Reject::RateLimited {
                    what: "FETCH-BLOCKS",
                },
            );
        }
    }

    fn on_blocks(&mut self, now: u64, blocks: Vec<CommittedBlock>) {
        let mut progressed = false;
        for cb in blocks {
            let h = cb.block.height();
            if h != self.delivered.next() {
                continue;
            }
            debug_assert!(cb.block.matches(h, &cb.certificate.digest));
            let slot = self.slots.entry(h).or_default();
            if let Some(c) = &slot.committed {
                if c.digest != cb.certificate.digest {
                    // Two valid commit certificates for different blocks at one height:
                    // more than f faulty. Stop rather than pick one.
                    self.halted = true;
                    self.actions.push(Action::Halt(Halt::ConflictingNewView {
                        height: h,
                        executed: c.digest,
                        proposed: cb.certificate.digest,
                    }));
                    return;
                }
            }
            slot.committed = Some(cb.certificate);
            slot.add_body(cb.block);
            self.deliver_ready(now);
            progressed = true;
            // Outside the window the log keeps nothing: the committed chain lives in the
            // store, and the log stays bounded by L however far behind we were.
            if !self.in_window(h) {
                self.slots.remove(&h);
            }
        }
        if progressed {
            if let Some((upto, _)) = self.fetching {
                self.fetching = None;
                if self.delivered < upto {
                    let peer = self.vs.ids().find(|r| *r != self.id).unwrap_or(self.id);
                    let _ = peer;
                    // Continue from whoever answered last time: ask round-robin.
                    let next_peer = ReplicaId(((self.delivered.0 / 7) % self.vs.n() as u64) as u16);
                    let target = if next_peer == self.id {
                        ReplicaId((self.id.0 + 1) % self.vs.n() as u16)
                    } else {
                        next_peer
                    };
                    self.request_blocks(target, upto, now);
                }
            }
        }
    }

    fn on_fetch_bodies(&mut self, now: u64, from: ReplicaId, f: FetchBodies) {
        let mut blocks = Vec::new();
        let mut bytes = 0u64;
        let batch = u64::from(self.params.max_block_bytes).saturating_mul(self.transfer_batch());
        let limit = batch.min(self.serve_allowance(from, now));
        let mut held = false;
        for (h, d) in f.wanted {
            if let Some(b) = self.slots.get(&h).and_then(|s| s.bodies.get(&d)) {
                held = true;
                let len = codec::encoded_len(b) as u64;
                if bytes + len > limit {
                    break;
                }
                bytes += len;
                blocks.push(b.clone());
            }
        }
        if !blocks.is_empty() {
            self.charge(from, bytes);
            self.actions
                .push(Action::Send(from, Message::Bodies(Bodies { blocks })));
        } else if held {
            self.reject(
                from,
                Reject::RateLimited {
                    what: "FETCH-BODIES",
                },
            );
        }
    }

    fn on_bodies(&mut self, now: u64, blocks: Vec<Block>) {
        for b in blocks {
            let h = b.height();
            let Some(d) = self.wanted.get(&h).copied() else {
                continue;
            };
            if !b.matches(h, &d) {
                continue;
            }
            self.wanted.remove(&h);
            self.slots.entry(h).or_default().add_body(b);
            self.progress(h, now);
            self.deliver_ready(now);
        }
    }

    // ---- status and retransmission -----------------------------------------------

    fn on_status(&mut self, now: u64, from: ReplicaId, s: Verified<Status>) {
        // Each kind of answer goes to a peer at most once per `pace` (T/2): a lost one is
        // repaired within T/2, and a peer sending STATUS every T/4 does not draw the same
        // VIEW-CHANGE or NEW-VIEW twice per interval.
        let pace = (self.params.view_timeout_ms / 2).max(1);
        let interval = self.status_interval();
        let p = self.peer_status.entry(from).or_default();
        if p.executed != s.executed || p.executed_since == 0 {
            p.executed = s.executed;
            p.executed_since = now.max(1);
        }
        // Stuck: it reported this executed height at least one STATUS interval ago. A
        // peer that keeps executing (the pipelined normal case) gets no retransmissions:
        // what it lacks is on its way.
        let stuck = now.saturating_sub(p.executed_since) >= interval;
        let due =
            |last: Option<u64>, every: u64| last.is_none_or(|t| now.saturating_sub(t) >= every);
        // Its view is behind ours, or equal while it is inactive and we are active:
        // it lacks our NEW-VIEW.
        if (s.view < self.view || (s.view == self.view && !s.active && self.active))
            && self.view > ViewNumber(0)
        {
            if let Some(nv) = self.new_view.clone() {
                let last = p.new_view.filter(|(v, _)| *v == nv.view).map(|(_, t)| t);
                if nv.view == self.view && due(last, pace) {
                    p.new_view = Some((nv.view, now));
                    self.actions.push(Action::Send(from, Message::NewView(nv)));
                }
            }
        }
        if !self.active {
            if let Some(vc) = self.own_vc.clone() {
                let last = p
                    .view_change
                    .filter(|(v, _)| *v == vc.new_view)
                    .map(|(_, t)| t);
                if due(last, pace) {
                    p.view_change = Some((vc.new_view, now));
                    self.actions
                        .push(Action::Send(from, Message::ViewChange(vc)));
                }
            }
        }
        if s.stable_checkpoint < self.low {
            if let Some(c) = self.stable.clone() {
                let last = p.checkpoint.filter(|(h, _)| *h == c.height).map(|(_, t)| t);
                if due(last, pace) {
                    p.checkpoint = Some((c.height, now));
                    self.actions
                        .push(Action::Send(from, Message::CheckpointCertificate(c)));
                }
            }
        }
        // Our CHECKPOINT votes above its stable checkpoint (above ours, the certificate
        // above covers the rest): a vote sent once and lost would otherwise leave that
        // checkpoint one vote short for good, and the window shut with it.
        let votes_from = s.stable_checkpoint.max(self.low).next();
        if self.own_checkpoints.range(votes_from..).next().is_some()
            && due(p.checkpoint_votes, pace)
        {
            let votes: Vec<Signed<Checkpoint>> = self
                .own_checkpoints
                .range(votes_from..)
                .filter_map(|(h, _)| self.own_checkpoint_vote(*h))
                .collect();
            if !votes.is_empty() {
                let p = self.peer_status.entry(from).or_default();
                p.checkpoint_votes = Some(now);
                for c in votes {
                    self.actions
                        .push(Action::Send(from, Message::Checkpoint(c)));
                }
            }
        }
        let p = self.peer_status.entry(from).or_default();
        // Blocks for a peer that stopped executing below our delivered height. One far
        // behind also asks for them itself (`request_blocks`).
        let blocks_due = s.executed < self.delivered && stuck && due(p.blocks, interval);
        if blocks_due {
            p.blocks = Some(now);
        }
        let votes_due = stuck && due(p.votes, interval);
        if votes_due {
            p.votes = Some(now);
        }
        if blocks_due {
            let to = Height(
                self.delivered
                    .0
                    .min(s.executed.0 + self.params.transfer_batch_blocks as u64),
            );
            // Paced above, and charged too: a STATUS that claims a low executed height
            // asks for blocks as a fetch does.
            if !self.serve_blocks(now, from, s.executed.next(), to) {
                self.reject(from, Reject::RateLimited { what: "STATUS" });
            }
        }
        if votes_due && s.view == self.view && s.active && self.active {
            // Our own votes for in-window heights it has not committed.
            let mut msgs = Vec::new();
            for (h, slot) in self.slots.range(s.executed.next()..) {
                if !self.in_window(*h) {
                    break;
                }
                if let (Some(pp), true) = (&slot.pre_prepare, self.is_primary()) {
                    if let Some(body) = slot.bodies.get(&pp.digest) {
                        msgs.push(Message::Proposal(Proposal {
                            pre_prepare: pp.clone(),
                            body: body.clone(),
                        }));
                    }
                }
                if let Some(d) = slot.sent_prepare {
                    if let Some((_, sig)) = slot.prepares.get(&self.id) {
                        msgs.push(Message::Prepare(Signed {
                            value: Prepare {
                                view: self.view,
                                height: *h,
                                digest: d,
                                replica: self.id,
                            },
                            signature: *sig,
                        }));
                    }
                }
                if let Some(d) = slot.sent_commit {
                    if let Some((_, sig)) = slot.commits.get(&self.id) {
                        msgs.push(Message::Commit(Signed {
                            value: Commit {
                                view: self.view,
                                height: *h,
                                digest: d,
                                replica: self.id,
                            },
                            signature: *sig,
                        }));
                    }
                }
            }
            for m in msgs {
                self.actions.push(Action::Send(from, m));
            }
        }
        // Peers ahead of us: catch up. A STATUS proves nothing, so one peer's claim is no
        // target (a liar claiming u64::MAX would pin it for good, and every real catch-up
        // with it): fetch up to the (f+1)-th highest executed height claimed, which an
        // honest replica reached, so the fetch ends.
        if self.fetching.is_none() {
            if let Some((target, peer)) = self.claimed_ahead() {
                let in_flight = self.params.max_in_flight as u64;
                if target.0 > self.delivered.0.saturating_add(in_flight) {
                    self.request_blocks(peer, target, now);
                }
            }
        }
        // A view claimed in a STATUS only makes us ask for that NEW-VIEW (via its status
        // reply above); it never moves our view.
    }

    /// The (f+1)-th highest executed height the peers' STATUS claim, with the peer to ask
    /// first: of those claiming at least that much, the one claiming least (a liar's
    /// claim is the highest). `None` before f+1 peers reported.
    fn claimed_ahead(&self) -> Option<(Height, ReplicaId)> {
        let mut claims: Vec<(Height, ReplicaId)> = self
            .peer_status
            .iter()
            .filter(|(r, _)| **r != self.id)
            .map(|(r, p)| (p.executed, *r))
            .collect();
        claims.sort_unstable_by(|a, b| b.cmp(a));
        let (target, _) = *claims.get(self.vs.f())?;
        let peer = claims
            .iter()
            .filter(|(h, _)| *h >= target)
            .min()
            .map(|(_, r)| *r)?;
        debug_assert!(peer != self.id);
        Some((target, peer))
    }

    // ---- view change -------------------------------------------------------------

    fn send_view_change(&mut self, w: ViewNumber, now: u64) {
        let prepared: Vec<PreparedCertificate> = self
            .prepared
            .range(self.low.next()..)
            .take_while(|(h, _)| h.0 <= self.low.0 + self.params.window)
            .filter(|(_, c)| c.view() < w)
            .map(|(_, c)| c.clone())
            .collect();
        let vc = self.sign(ViewChange {
            new_view: w,
            replica: self.id,
            checkpoint: self.stable.clone(),
            prepared,
        });
        self.own_vc = Some(vc.clone());
        // Our own VIEW-CHANGE counts toward the quorum for w.
        let verified = vc
            .clone()
            .verify(self.vs.chain(), &self.signer.public_key(), &SelfSigned);
        if let Ok(v) = verified {
            self.latest_vc.insert(self.id, v);
        }
        self.actions
            .push(Action::Persist(vec![DurableEntry::ViewChangeSent {
                view: w,
            }]));
        self.actions
            .push(Action::Broadcast(Message::ViewChange(vc)));
        self.set_timer(Timer::ViewChangeResend, now + (self.timeout / 2).max(1));
    }

    /// Leaves the current view for `w`: inactive until a valid NEW-VIEW(w).
    fn start_view_change(&mut self, w: ViewNumber, now: u64) {
        assert!(w > self.view || (w == self.view && !self.active));
        self.view = w;
        self.active = false;
        self.stats.view_changes += 1;
        self.tracking = None;
        self.timers.remove(&Timer::ViewChange);
        self.timers.remove(&Timer::BatchFlush);
        self.nv_timer_view = None;
        for slot in self.slots.values_mut() {
            slot.clear_view();
        }
        self.pending.clear_in_flight();
        self.send_view_change(w, now);
        self.actions.push(Action::ViewChanged {
            view: w,
            active: false,
        });
        self.after_view_change_input(now);
    }

    fn on_view_change(&mut self, now: u64, from: ReplicaId, vc: Verified<ViewChange>) {
        if vc.replica != from {
            // A VIEW-CHANGE relayed by someone else is fine (signatures prove it).
        }
        let r = vc.replica;
        let newer = self
            .latest_vc
            .get(&r)
            .is_none_or(|cur| cur.new_view < vc.new_view);
        if !newer {
            return;
        }
        self.check_equivocation(&vc);
        self.latest_vc.insert(r, vc);
        self.after_view_change_input(now);
    }

    /// Evidence from a VIEW-CHANGE's prepared certificates (each PRE-PREPARE in them was
    /// verified as the primary's) against the PRE-PREPAREs this replica accepted. Also
    /// run on the VIEW-CHANGEs inside a NEW-VIEW: the NEW-VIEW may arrive before the
    /// VIEW-CHANGE that would have shown the split, and accepting it ends the view.
    fn check_equivocation(&mut self, vc: &ViewChange) {
        for pc in &vc.prepared {
            let h = pc.height();
            if let Some(&(v, d)) = self.pre_prepares_seen.get(&h) {
                if v == pc.view() && d != pc.digest() {
                    self.pre_prepares_seen.remove(&h);
                    self.evidence(Evidence::EquivocatingPrimary {
                        primary: self.vs.primary(v),
                        view: v,
                        height: h,
                        digests: (d, pc.digest()),
                    });
                }
            }
        }
    }

    /// Reacts to the set of VIEW-CHANGEs held: join on f+1, start the NEW-VIEW timer on
    /// q, build the NEW-VIEW as the new primary.
    fn after_view_change_input(&mut self, now: u64) {
        // f+1 VIEW-CHANGEs for views above ours: join the smallest.
        let above: Vec<ViewNumber> = self
            .latest_vc
            .iter()
            .filter(|(r, vc)| **r != self.id && vc.new_view > self.view)
            .map(|(_, vc)| vc.new_view)
            .collect();
        if above.len() > self.vs.f() && !self.following {
            if let Some(w) = above.iter().min().copied() {
                self.start_view_change(w, now);
                return;
            }
        }
        if self.active {
            return;
        }
        let w = self.view;
        // The NEW-VIEW timer starts once q replicas have left the views below w: a
        // VIEW-CHANGE for a view above w counts too, as its sender went through w. Counting
        // only VIEW-CHANGEs for w exactly deadlocks when one replica timed out of w while
        // another missed its VIEW-CHANGE for w (it was restarting): each then holds
        // fewer than q for its own view, no timer runs, and fewer than f+1 are above.
        let left = self
            .latest_vc
            .values()
            .filter(|vc| vc.new_view >= w)
            .count();
        if left < self.vs.quorum() {
            return;
        }
        if self.nv_timer_view != Some(w) {
            self.nv_timer_view = Some(w);
            self.set_timer(Timer::ViewChange, now + self.timeout);
        }
        let holders: Vec<ReplicaId> = self
            .latest_vc
            .iter()
            .filter(|(_, vc)| vc.new_view == w)
            .map(|(r, _)| *r)
            .collect();
        if holders.len() < self.vs.quorum() {
            return;
        }
        if self.vs.primary(w) == self.id && self.new_view.as_ref().is_none_or(|nv| nv.view < w) {
            self.build_new_view(w, &holders, now);
        }
    }

    fn build_new_view(&mut self, w: ViewNumber, holders: &[ReplicaId], now: u64) {
        // V: our own first, then the lowest ids, q in all.
        let mut chosen: Vec<ReplicaId> = vec![self.id];
        chosen.extend(holders.iter().copied().filter(|r| *r != self.id));
        chosen.truncate(self.vs.quorum());
        let view_changes: Vec<Signed<ViewChange>> = chosen
            .iter()
            .filter_map(|r| self.latest_vc.get(r))
            .map(|v| v.signed().clone())
            .collect();
        debug_assert_eq!(view_changes.len(), self.vs.quorum());
        let refs: Vec<&ViewChange> = view_changes.iter().map(|s| &s.value).collect();
        let plan = viewchange::plan(&refs);
        let pre_prepares: Vec<Signed<PrePrepare>> = plan
            .entries
            .iter()
            .map(|(h, d)| {
                self.sign(PrePrepare {
                    view: w,
                    height: *h,
                    digest: *d,
                })
            })
            .collect();
        let nv = self.sign(NewView {
            view: w,
            view_changes,
            pre_prepares,
        });
        let verified = nv
            .clone()
            .verify(self.vs.chain(), &self.signer.public_key(), &SelfSigned);
        if let Ok(v) = verified {
            // Our NEW-VIEW leaves right after our own record of accepting it (safety rule
            // 3), ahead of the view's votes that accepting emits. Only that record counts:
            // a drain may also hold the record of an earlier NEW-VIEW (one accepted in the
            // same burst of inputs), and a send placed after that one could leave before
            // this view's records are synced.
            let start = self.actions.len();
            self.accept_new_view(now, 0, v, plan);
            let persisted = self.actions[start..].iter().position(|a| {
                matches!(a, Action::Persist(es) if es.iter().any(
                    |e| matches!(e, DurableEntry::NewViewAccepted(x) if x.view == w)))
            });
            // None: accepting halted (O conflicts with what we executed); nothing to send.
            if let Some(i) = persisted {
                self.actions
                    .insert(start + i + 1, Action::Broadcast(Message::NewView(nv)));
            }
            debug_assert!(persisted.is_some() || self.halted);
        }
    }

    fn on_new_view(&mut self, now: u64, unix_ms: u64, from: ReplicaId, nv: Verified<NewView>) {
        // Every VIEW-CHANGE in V was verified, whatever becomes of this NEW-VIEW.
        for vc in &nv.view_changes {
            self.check_equivocation(&vc.value);
        }
        let w = nv.view;
        if w < self.view || (w == self.view && self.active) {
            return;
        }
        let refs: Vec<&ViewChange> = nv.view_changes.iter().map(|s| &s.value).collect();
        let plan = viewchange::plan(&refs);
        let given: Vec<(Height, Digest)> = nv
            .pre_prepares
            .iter()
            .map(|p| (p.height, p.digest))
            .collect();
        if given != plan.entries {
            self.reject(
                from,
                Reject::BadNewView(format!(
                    "O has {} entries, V implies {}",
                    given.len(),
                    plan.entries.len()
                )),
            );
            return;
        }
        self.accept_new_view(now, unix_ms, nv, plan);
    }

    fn accept_new_view(
        &mut self,
        now: u64,
        unix_ms: u64,
        nv: Verified<NewView>,
        plan: viewchange::Plan,
    ) {
        let w = nv.view;
        // Entries at heights we already committed must name the block we committed.
        for (h, d) in &plan.entries {
            if *h <= self.low || *h > self.delivered {
                continue;
            }
            if let Some(c) = self.slots.get(h).and_then(|s| s.committed.as_ref()) {
                if c.digest != *d {
                    self.halted = true;
                    self.actions.push(Action::Halt(Halt::ConflictingNewView {
                        height: *h,
                        executed: c.digest,
                        proposed: *d,
                    }));
                    return;
                }
            }
        }
        // The stable checkpoint V proves is durable before the NEW-VIEW: after a restart h
        // comes only from the checkpoint record, and a NEW-VIEW record without it would
        // bring back O entries above the window (a crash between the two writes).
        if let Some(c) = plan.checkpoint.clone() {
            if c.height > self.low {
                self.make_stable(c, now);
                if self.halted {
                    return;
                }
            }
        }
        self.actions
            .push(Action::Persist(vec![DurableEntry::NewViewAccepted(
                nv.signed().clone(),
            )]));
        if w > self.view {
            self.stats.view_changes += 1;
        }
        self.view = w;
        self.active = true;
        self.view_entry_committed = self.max_committed;
        self.new_view = Some(nv.signed().clone());
        self.timers.remove(&Timer::ViewChangeResend);
        self.timers.remove(&Timer::ViewChange);
        self.nv_timer_view = None;
        self.tracking = None;
        for slot in self.slots.values_mut() {
            slot.clear_view();
        }
        self.pending.clear_in_flight();
        self.actions.push(Action::ViewChanged {
            view: w,
            active: true,
        });
        let mut max_s = self.low;
        for pp in nv.pre_prepares.iter() {
            if pp.height <= self.low {
                continue;
            }
            max_s = max_s.max(pp.height);
            let slot = self.slots.entry(pp.height).or_default();
            slot.pre_prepare = Some(pp.clone());
            if pp.digest == Block::null_digest(pp.height) && !slot.bodies.contains_key(&pp.digest) {
                slot.add_body(Block::null(pp.height));
            }
            // A height already delivered here never executes again: its txs are
            // committed (applied and gone, or pending again with a result such as
            // nonce_gap). Marked in flight, such a pending tx stayed in flight for the
            // whole view: no primary proposed it, every backup's timer tracked it
            // (seeds 100263, 101964, 102260).
            if pp.height > self.delivered {
                if let Some(b) = slot.bodies.get(&pp.digest) {
                    let hashes = b.txs.clone();
                    self.pending
                        .set_in_flight(hashes.hashes().iter().copied(), true);
                }
            }
        }
        self.next_height = max_s.max(self.delivered).next();
        let heights: Vec<Height> = nv
            .pre_prepares
            .iter()
            .map(|p| p.height)
            .filter(|h| *h > self.low)
            .collect();
        for h in heights {
            self.progress(h, now);
        }
        self.update_tracking(now);
        self.replay_buffer(now, unix_ms);
    }

    // ---- proposing ---------------------------------------------------------------

    fn maybe_propose(&mut self, now: u64, unix_ms: u64) {
        if !self.active || !self.is_primary() || self.halted {
            return;
        }
        loop {
            let n = self.next_height;
            if !self.in_window(n) {
                return;
            }
            if n.0.saturating_sub(self.delivered.0) > self.params.max_in_flight as u64 {
                return;
            }
            if !self.pending.has_proposable() {
                self.timers.remove(&Timer::BatchFlush);
                return;
            }
            // The timestamp follows the blocks below n: propose only once it knows them
            // all (bodies of NEW-VIEW entries fetched, state transfer done).
            let Some(below) = self.known_below(n) else {
                return;
            };
            // The batch delay adapts to load. With no block of ours in flight, waiting
            // only adds latency: a lone tx goes at once. While blocks are in flight, txs
            // gather until the pipeline drains, the block is full, or the oldest has
            // waited max_batch_delay_ms. The block is selected only once it is due.
            let max_txs = self.params.max_block_txs as usize;
            let idle = n == self.delivered.next();
            if !idle && self.pending.ready_len() < max_txs {
                let since = self.pending.oldest_proposable_since().unwrap_or(now);
                let due = since.saturating_add(self.params.max_batch_delay_ms);
                if now < due {
                    self.set_timer(Timer::BatchFlush, due);
                    return;
                }
            }
            let txs = self
                .pending
                .select(max_txs, self.params.max_block_bytes as usize);
            if txs.is_empty() {
                return;
            }
            self.timers.remove(&Timer::BatchFlush);
            let ts = unix_ms.max(below + 1);
            let body = Block::new(n, ts, txs);
            self.propose(n, body, now);
        }
    }

    /// The timestamps a fresh proposal at `n` must fall strictly between: after every
    /// non-null block below `n` that this replica knows, before every one above it. It
    /// knows the delivered blocks and, with their bodies, the committed ones and the
    /// PRE-PREPAREs accepted in the current view (those above `n` are the same primary's
    /// later proposals). A proposal from an earlier view that never committed does not
    /// count: nothing it would date could ever follow it (DESIGN.md, normal case).
    fn timestamp_bounds(&self, n: Height) -> (u64, u64) {
        let mut below = if self.delivered < n {
            self.max_timestamp
        } else {
            0
        };
        let mut above = u64::MAX;
        for (h, slot) in &self.slots {
            if *h == n {
                continue;
            }
            let digest = slot
                .committed
                .as_ref()
                .map(|c| c.digest)
                .or_else(|| slot.pre_prepare.as_ref().map(|pp| pp.digest));
            let Some(b) = digest.and_then(|d| slot.bodies.get(&d)) else {
                continue;
            };
            if b.is_null() {
                continue;
            }
            let ts = b.header.timestamp_ms;
            if *h < n {
                below = below.max(ts);
            } else {
                above = above.min(ts);
            }
        }
        (below, above)
    }

    /// As primary: the highest timestamp of a non-null block below `n`, once it knows
    /// every block below `n` (delivered, or its body held for the PRE-PREPARE it
    /// accepted or the certificate it holds); `None` while one is missing.
    fn known_below(&self, n: Height) -> Option<u64> {
        if self.delivered < self.low {
            return None;
        }
        let mut h = self.delivered.next();
        while h < n {
            let slot = self.slots.get(&h)?;
            let digest = slot
                .committed
                .as_ref()
                .map(|c| c.digest)
                .or_else(|| slot.pre_prepare.as_ref().map(|pp| pp.digest))?;
            slot.bodies.get(&digest)?;
            h = h.next();
        }
        let (below, _) = self.timestamp_bounds(n);
        Some(below)
    }

    fn propose(&mut self, n: Height, body: Block, now: u64) {
        debug_assert!(self.is_primary() && self.active);
        let view = self.view;
        let d = body.digest();
        let slot = self.slots.entry(n).or_default();
        assert!(
            slot.signed.get(&view).is_none_or(|s| *s == d),
            "never two PRE-PREPAREs for one (view, height)"
        );
        let pp = Signed::sign(
            PrePrepare {
                view,
                height: n,
                digest: d,
            },
            self.vs.chain(),
            self.signer.as_ref(),
        );
        slot.signed.insert(view, d);
        slot.pre_prepare = Some(pp.clone());
        slot.add_body(body.clone());
        self.pending
            .set_in_flight(body.txs.hashes().iter().copied(), true);
        self.next_height = n.next();
        self.actions
            .push(Action::Persist(vec![DurableEntry::PrePrepareSent {
                pre_prepare: pp.clone(),
                body: body.clone(),
            }]));
        self.actions
            .push(Action::Broadcast(Message::Proposal(Proposal {
                pre_prepare: pp,
                body,
            })));
        self.progress(n, now);
    }

    /// Heights this replica holds a commit certificate for but has not delivered, and
    /// other introspection for tests.
    pub fn committed_digest(&self, h: Height) -> Option<Digest> {
        self.slots
            .get(&h)
            .and_then(|s| s.committed.as_ref())
            .map(|c| c.digest)
    }

    /// Ids of replicas whose latest VIEW-CHANGE is for a view above ours.
    pub fn higher_view_changes(&self) -> BTreeSet<ReplicaId> {
        self.latest_vc
            .iter()
            .filter(|(_, v)| v.new_view > self.view)
            .map(|(r, _)| *r)
            .collect()
    }

    /// Whether the tx is pending here.
    pub fn has_pending(&self, h: &TxHash) -> bool {
        self.pending.contains(h)
    }

    /// Txs to reclassify after executing a block touching `senders`.
    pub fn pending_of(
        &self,
        senders: &HashSet<stele_crypto::PublicKey>,
    ) -> Vec<(TxHash, stele_crypto::PublicKey, stele_types::Nonce)> {
        senders
            .iter()
            .flat_map(|s| {
                self.pending
                    .of_sender(s)
                    .into_iter()
                    .map(move |(h, n)| (h, *s, n))
            })
            .collect()
    }

    /// Test and simulator hook: the tx class a relayed or restored tx gets.
    pub fn class_hint(&self) -> TxClass {
        TxClass::Executable
    }

    /// The state-transfer batch a driver serves for `ServeBlocks` must not exceed this.
    pub fn transfer_batch(&self) -> u64 {
        self.params.transfer_batch_blocks as u64
    }

    #[doc(hidden)]
    pub fn blocks_batch(blocks: Vec<CommittedBlock>) -> Message {
        Message::Blocks(BlockBatch { blocks })
    }
}

fn status_interval(p: &Params) -> u64 {
    (p.view_timeout_ms / 4).clamp(50, 1000)
}

/// (what one block of a state-transfer batch is charged, bytes each peer may be answered
/// per interval of T). A peer catching up must outrun the chain, which grows by at most
/// one block per `max_batch_delay_ms` (blocks fill by the batch delay long before they
/// fill by count: 2,000 txs in 20 ms is 100,000 tx/s): it may draw twice that in
/// state-transfer batches per T, even from one peer, plus the batches a STATUS every
/// T/4 may draw (a body fetch, blocks for a stuck peer): with the default parameters
/// 2·⌈2000/(20·16)⌉ + 2·4 = 22 batches of 16 blocks per 2 s. A block is charged at its
/// largest encoding (`max_block_bytes`, its header, a commit certificate of n
/// signatures): 22 × 16 × ~1 MiB per peer per T, of which real blocks use what they
/// hold.
fn serve_budget(p: &Params, n: usize) -> (u64, u64) {
    let t = p.view_timeout_ms.max(1);
    let batch = u64::from(p.transfer_batch_blocks).max(1);
    let batches = 2 * t.div_ceil(p.max_batch_delay_ms.max(1).saturating_mul(batch))
        + 2 * t.div_ceil(status_interval(p));
    let certificate = CommitCertificate {
        view: ViewNumber(0),
        height: Height(0),
        digest: Digest::ZERO,
        commits: vec![
            SignatureEntry {
                replica: ReplicaId(0),
                signature: Signature([0; 64]),
            };
            n
        ],
    };
    let block = u64::from(p.max_block_bytes)
        .saturating_add(codec::encoded_len(&Block::null(Height(0))) as u64)
        .saturating_add(codec::encoded_len(&certificate) as u64);
    let bytes = batches.saturating_mul(batch).saturating_mul(block);
    debug_assert!(bytes >= batch.saturating_mul(block));
    (block, bytes)
}

/// Verifies our own freshly made signatures: trivially valid, but going through
/// `Signed::verify` keeps `Verified` constructible only by checking.
#[derive(Debug)]
struct SelfSigned;

impl stele_crypto::Scheme for SelfSigned {
    fn verify(
        &self,
        _: &stele_crypto::PublicKey,
        _: &[u8],
        _: &Signature,
    ) -> Result<(), stele_crypto::SignatureError> {
        Ok(())
    }
}
