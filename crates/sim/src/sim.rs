//! The simulation loop, the fault model and the checkers.
//!
//! Each replica runs the real engine over the real ledger (`stele_ledger::execute` over a
//! `MemState`, admission and classification by `stele_ledger::admit`/`classify`, as the
//! node does). Byzantine replicas run the honest engine and pass what it sends through
//! `stele_consensus::byzantine`, the behaviours the node's test build plays too.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_consensus::byzantine::{self, Behaviour, Collusion};
use stele_consensus::history::{Contradiction, SignedHistory};
use stele_consensus::{
    group_commit, Action, ChainState, Config, Engine, FrameVerdicts, Halt, Inbound, KnownTxs,
    RecoveryGate, Step, TxClass, TxOutcome, Verifier,
};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{
    ChainId, Digest, Ed25519, KeyPair, PublicKey, Scheme, Signed, Signer, Verified,
};
use stele_ledger::{admit, classify_in_flight, genesis_state_digest, Admission, Class, MemState};
use stele_types::durable::DurableKey;
use stele_types::genesis::{GenesisAccount, Params};
use stele_types::tx::sign_tx;
use stele_types::{
    codec, max_frame_len, tx_hash, Amount, Block, Checkpoint, Commit, CommittedBlock, DurableEntry,
    Genesis, Height, Message, NewView, Nonce, Op, Prepare, ReplicaId, StateView, Transaction,
    TxBody, TxHash, ValidatorInfo, ValidatorSet, ViewNumber,
};

const GENESIS_MS: u64 = 1_700_000_000_000;

type Keys = Vec<Arc<dyn Signer>>;

/// Every client account's genesis balance (supply = clients × this, conserved).
const CLIENT_BALANCE: u64 = 1_000_000;

/// Messages of some kinds on some links dropped for a while: the scripted histories'
/// scalpel (partitions are the axe). Like every fault, it stops at `quiet_at`.
#[derive(Debug, Clone, Default)]
pub struct DropRule {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Senders it applies to (empty: any).
    pub senders: Vec<usize>,
    /// Receivers it applies to (empty: any).
    pub receivers: Vec<usize>,
    /// `Message::kind` labels it applies to (empty: any).
    pub kinds: Vec<&'static str>,
    /// Only messages of this view (PRE-PREPARE, PREPARE, COMMIT, VIEW-CHANGE, NEW-VIEW).
    pub view: Option<u64>,
    /// Instead of dropping the matching messages, hold them and deliver them all at this
    /// time, in the order they were sent: a stalled link that flushes its queue at once,
    /// so that the receiver takes them as one burst.
    pub hold_until: Option<u64>,
}

impl DropRule {
    fn drops(&self, now: u64, from: usize, to: usize, m: &Message) -> bool {
        let view = match m {
            Message::Proposal(p) => Some(p.pre_prepare.view),
            Message::Prepare(p) => Some(p.view),
            Message::Commit(c) => Some(c.view),
            Message::ViewChange(vc) => Some(vc.new_view),
            Message::NewView(nv) => Some(nv.view),
            _ => None,
        };
        now >= self.from_ms
            && now < self.to_ms
            && (self.senders.is_empty() || self.senders.contains(&from))
            && (self.receivers.is_empty() || self.receivers.contains(&to))
            && (self.kinds.is_empty() || self.kinds.contains(&m.kind()))
            && self.view.is_none_or(|v| view == Some(ViewNumber(v)))
    }
}

/// The named scenarios of `tests/crash_order.rs` (for their replay command).
const CRASH_ORDER_TESTS: &[&str] = &[
    "new_view_burst_then_crash_after_its_send",
    "new_view_burst_crash_at_every_step",
];

/// Where in a replica's drain a [`StepCrash`] strikes. A drain runs as the node runs it:
/// the step list of `stele_consensus::group_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Right after the step that sends a message of this kind (`Message::kind`).
    AfterSend(&'static str),
    /// After this many steps of a drain that has more.
    AfterSteps(usize),
    /// Inside a grouped write of more than this many records: only the first ones are
    /// durable (a torn set of writes), and nothing after it runs.
    Torn(usize),
}

/// A crash inside the node's group-commit step list: the first drain of `replica` at or
/// after `from_ms` (and before `quiet_at`) that reaches `at` stops there, and the replica
/// restarts `down` ms later from what was durable by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCrash {
    pub replica: usize,
    pub from_ms: u64,
    pub at: CrashPoint,
    pub down: u64,
}

/// A client tx at a fixed time to fixed replicas (scripted load; no retries).
#[derive(Debug, Clone)]
pub struct ScriptedTx {
    pub at: u64,
    pub client: usize,
    pub nonce: u64,
    pub targets: Vec<usize>,
}

/// A fault outside the fault model, injected on purpose so that one checker must fail:
/// the tests in `tests/checkers.rs` show with it that each checker bites. Test-only:
/// `Scenario::random` never draws one, and with `Scenario::sabotage` at `None` (every
/// scenario but those tests) it costs one test of an `Option` where it would act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// At time 0, every replica is handed a validly signed tx of client 0 (nonce 0) that
    /// no client submitted, as if a replica made txs up (validity).
    UnsubmittedTx,
    /// Whenever `replica` restarts, it is restored from its chain without the last
    /// `blocks` committed blocks, as if the store lost them (durability).
    RestartLosesBlocks { replica: usize, blocks: u64 },
    /// Whenever `replica` restarts, its VIEW-CHANGE and NEW-VIEW records are gone: it
    /// comes back active in view 0 whatever views it left (no vote in a left view).
    RestartLosesViewChanges { replica: usize },
    /// Each commit certificate `replica` delivers has its first COMMIT signature broken
    /// (certificates).
    BrokenCommitSignature { replica: usize },
    /// Next to each of its own votes of this `Message::kind` ("prepare", "commit",
    /// "checkpoint"), honest `replica` signs and sends a second one for another digest
    /// (no equivocation; checkpoint equivocation).
    SecondVote { replica: usize, kind: &'static str },
    /// `replica` signs its CHECKPOINTs over a wrong state digest, the same one each time
    /// (checkpoint equivocation: two honest replicas' digests for a height).
    WrongCheckpointDigest { replica: usize },
    /// Every message sent from this time on is lost, for good (liveness).
    Blackout { from_ms: u64 },
}

/// The digest `Sabotage::SecondVote` and `WrongCheckpointDigest` sign instead.
fn sabotage_digest() -> Digest {
    Digest::of(b"stele-sim/sabotage")
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The named scenario test it belongs to (`random`: the seed campaign).
    pub name: &'static str,
    pub seed: u64,
    pub n: usize,
    pub real_crypto: bool,
    pub loss: f64,
    pub dup: f64,
    pub max_delay: u64,
    /// Faults stop at this virtual time (ms); liveness is judged after it.
    pub quiet_at: u64,
    /// (at, replica, down for) crash-restarts before `quiet_at`.
    pub crashes: Vec<(u64, usize, u64)>,
    /// Crashes between two steps of a drain, or inside a grouped write.
    pub step_crashes: Vec<StepCrash>,
    /// 0: a replica drains its engine after every input. Otherwise the inputs that reach a
    /// replica within this many ms are handled as one burst and drained once, as the
    /// node's loop takes a burst of inputs before it drives: one drain then holds the
    /// actions of many inputs.
    pub burst_ms: u64,
    /// (from, to, group) partitions: the group is cut from the rest.
    pub partitions: Vec<(u64, u64, Vec<usize>)>,
    /// Crash every replica at this time and restart them all 500 ms later.
    pub whole_crash: Option<u64>,
    pub clients: usize,
    pub txs_per_client: usize,
    /// Also submit gapped txs and same-nonce pairs.
    pub tricky_txs: bool,
    /// Byzantine replicas (they share one `Collusion`: their back channel).
    pub byzantine: Vec<(usize, Behaviour)>,
    /// A fault injected so that one checker must fail (`tests/checkers.rs` only).
    pub sabotage: Option<Sabotage>,
    /// (at, replica, down for): the replica loses its disk (durable state and chain) and
    /// restarts recovering, behind a `RecoveryGate`, as `stele-node run --recover` does.
    pub wipes: Vec<(u64, usize, u64)>,
    /// Scripted message drops.
    pub drops: Vec<DropRule>,
    /// Scripted load; when non-empty it replaces the clients' generated load.
    pub script: Vec<ScriptedTx>,
    /// The clients' load is spread over this many ms (default: until 3 s after
    /// `quiet_at`).
    pub load_for: Option<u64>,
    /// Verification time per signature, in µs (0: free). Each replica verifies its
    /// inbound messages one at a time, as a node's workers do: a message waits until the
    /// ones before it are verified. Real nodes are CPU-bound under load; with this the
    /// simulator sees what that does to the protocol (queues, retransmission storms).
    pub verify_us: u64,
    /// (at, replica, offset ms): from `at` on, the replica's clock is this far from real
    /// time (beyond the skew bound, or jumping forward and back). Steps are kept as given:
    /// a fault that must end carries a step back to a small offset.
    pub clock_steps: Vec<(u64, usize, i64)>,
    /// (from, to, loss): bursts of loss, long runs of drops on every link.
    pub bursts: Vec<(u64, u64, f64)>,
    /// Share of messages held back longer than the skew bound.
    pub long_delay: f64,
    /// The faults never stop: loss, duplication and long delays go on past `quiet_at`,
    /// and only safety is checked (no liveness, no heights-after-quiet budget).
    pub endless: bool,
    /// The test file (`crates/sim/tests/NAME.rs`) of a named scenario, for its replay
    /// command.
    pub test_file: &'static str,
    pub params: Params,
}

impl Scenario {
    /// A calm run: no faults.
    pub fn calm(seed: u64, n: usize) -> Scenario {
        Scenario::named("calm_four_replicas_commit_everything", seed, n)
    }

    /// A calm run of the named scenario test `name`, which it replays.
    pub fn named(name: &'static str, seed: u64, n: usize) -> Scenario {
        Scenario {
            name,
            seed,
            n,
            real_crypto: false,
            loss: 0.0,
            dup: 0.0,
            max_delay: 20,
            quiet_at: 0,
            crashes: vec![],
            step_crashes: vec![],
            burst_ms: 0,
            partitions: vec![],
            whole_crash: None,
            clients: 4,
            txs_per_client: 20,
            tricky_txs: false,
            byzantine: vec![],
            sabotage: None,
            wipes: vec![],
            drops: vec![],
            script: vec![],
            load_for: None,
            verify_us: 0,
            clock_steps: vec![],
            bursts: vec![],
            long_delay: 0.0,
            endless: false,
            test_file: "scenarios",
            params: sim_params(),
        }
    }

    /// Client `c`'s account key in this scenario.
    pub fn client_key(&self, c: usize) -> PublicKey {
        if self.real_crypto {
            KeyPair::from_seed(seed(2, c)).public()
        } else {
            MacSigner::new(seed(2, c)).public_key()
        }
    }

    /// A primary that censors client `c`.
    pub fn censor(&self, c: usize) -> Behaviour {
        Behaviour::Censor {
            victim: self.client_key(c),
        }
    }

    /// The seed's random mix of faults.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_e1e5);
        let n = [4, 4, 4, 5, 7, 10][rng.gen_range(0..6)];
        let f = (n - 1) / 3;
        let mut s = Scenario::named("random", seed, n);
        // Real ed25519 on a share of the seeds (one in ten with n ≤ 5): what it checks
        // (keys, domain separation, strict and batch verification) does not depend on n,
        // and at n = 7 or 10 it costs seconds a seed; the keyed stand-in covers those.
        s.real_crypto = seed % 10 == 0 && n <= 5;
        s.quiet_at = rng.gen_range(2_000..8_000);
        s.loss = [0.0, 0.0, 0.05, 0.2][rng.gen_range(0..4)];
        s.dup = [0.0, 0.05, 0.2][rng.gen_range(0..3)];
        s.max_delay = [10, 30, 100][rng.gen_range(0..3)];
        s.tricky_txs = rng.gen_bool(0.5);
        s.clients = rng.gen_range(2..6);
        s.txs_per_client = rng.gen_range(5..30);
        // Draws added later come from their own stream, so that older fields of a seed
        // (and the regression seeds named for them) stay what they were.
        let mut more = ChaCha8Rng::seed_from_u64(seed ^ 0x0b5e_55ed_d15c);
        let mut byz = 0;
        if rng.gen_bool(0.3) {
            let mut b = [
                Behaviour::Silent,
                Behaviour::Equivocate,
                Behaviour::BadVotes,
            ][rng.gen_range(0..3)];
            if more.gen_bool(0.4) {
                b = if more.gen_bool(0.5) {
                    Behaviour::BadNewView
                } else {
                    s.censor(more.gen_range(0..s.clients))
                };
            }
            s.byzantine.push((rng.gen_range(0..n), b));
            byz = 1;
        }
        // Crashes of honest replicas; at most f − byz down at once keeps liveness promised
        // after healing (they all restart before quiet_at anyway).
        for _ in 0..rng.gen_range(0..4) {
            let at = rng.gen_range(0..s.quiet_at);
            let r = rng.gen_range(0..n);
            if s.byzantine.iter().any(|(b, _)| *b == r) || f <= byz {
                continue;
            }
            let down = rng
                .gen_range(100..3_000)
                .min(s.quiet_at.saturating_sub(at) + 1);
            s.crashes.push((at, r, down));
        }
        for _ in 0..rng.gen_range(0..3) {
            let from = rng.gen_range(0..s.quiet_at);
            let to = (from + rng.gen_range(200..4_000)).min(s.quiet_at);
            let size = if rng.gen_bool(0.5) { 1 } else { n / 2 };
            let mut group: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                group.swap(i, rng.gen_range(0..=i));
            }
            group.truncate(size);
            s.partitions.push((from, to, group));
        }
        if rng.gen_bool(0.1) {
            s.whole_crash = Some(rng.gen_range(0..s.quiet_at));
        }
        // A wiped disk: the replica recovers and counts against f until it is done, so
        // only where Byzantine plus recovering stays within f.
        if byz < f && more.gen_bool(0.15) {
            let r = loop {
                let r = more.gen_range(0..n);
                if !s.byzantine.iter().any(|(b, _)| *b == r) {
                    break r;
                }
            };
            let at = more.gen_range(300..s.quiet_at.max(301));
            let down = more.gen_range(100..1_500);
            s.wipes.push((at, r, down));
        }
        // Bursts and crashes inside a drain's step list; their own stream again. Such a
        // crash is a restart within 2 s, like the crashes above: not counted against f.
        let mut steps = ChaCha8Rng::seed_from_u64(seed ^ 0x57e9_c4a5_0b05);
        s.burst_ms = [0, 0, 1, 3, 10][steps.gen_range(0..5)];
        if byz < f && steps.gen_bool(0.3) {
            for _ in 0..steps.gen_range(1..3) {
                let r = steps.gen_range(0..n);
                if s.byzantine.iter().any(|(b, _)| *b == r) {
                    continue;
                }
                let at = match steps.gen_range(0..3) {
                    0 => CrashPoint::AfterSteps(steps.gen_range(1..5)),
                    1 => CrashPoint::Torn(steps.gen_range(1..4)),
                    _ => CrashPoint::AfterSend(
                        ["view_change", "new_view", "prepare", "commit", "proposal"]
                            [steps.gen_range(0..5)],
                    ),
                };
                s.step_crashes.push(StepCrash {
                    replica: r,
                    from_ms: steps.gen_range(0..s.quiet_at),
                    at,
                    down: steps.gen_range(100..2_000),
                });
            }
        }
        s.adversary(seed);
        s.wear(seed);
        s
    }

    /// Issue 22's floods, from a fourth stream so that every field above stays what it
    /// was for a seed: on some seeds with a Byzantine replica, one of them floods fetches
    /// or evidence instead of the behaviour drawn for it.
    fn wear(&mut self, seed: u64) {
        let mut w = ChaCha8Rng::seed_from_u64(seed ^ 0x0f10_0d5e_a7e5);
        if self.byzantine.is_empty() || !w.gen_bool(0.1) {
            return;
        }
        let i = w.gen_range(0..self.byzantine.len());
        self.byzantine[i].1 = if w.gen_bool(0.5) {
            Behaviour::FloodFetches
        } else {
            Behaviour::FloodEvidence
        };
    }

    /// The draws issue 21 added to `random`, from a third stream so that every field
    /// above stays what it was for a seed: more Byzantine replicas (up to f at n = 7 and
    /// 10, each with its own behaviour; one at n ≤ 5, as before), clock faults, bursts
    /// of loss, delays beyond the skew bound, and faults that never stop. Byzantine
    /// replicas, recovering ones and clocks still wrong after `quiet_at` stay within f
    /// where liveness is promised.
    fn adversary(&mut self, seed: u64) {
        let mut adv = ChaCha8Rng::seed_from_u64(seed ^ 0xad5e_c0de_f00d);
        let n = self.n;
        let f = (n - 1) / 3;
        let cap = if n >= 7 { f } else { 1 };
        let mut used = self.byzantine.len() + self.wipes.len();
        let is_free = |s: &Scenario, r: usize| {
            !s.byzantine.iter().any(|(b, _)| *b == r) && !s.wipes.iter().any(|w| w.1 == r)
        };
        // More liars: at n ≥ 7 on most seeds, at n ≤ 5 where there was none.
        if adv.gen_bool(if n >= 7 { 0.7 } else { 0.25 }) {
            // Half the time as many as f allows: the attack issue 21's traces need.
            let want = if adv.gen_bool(0.5) {
                cap
            } else {
                adv.gen_range(1..=cap)
            };
            while self.byzantine.len() < want && used < f {
                let r = adv.gen_range(0..n);
                if !is_free(self, r) {
                    continue;
                }
                let b = self.any_behaviour(&mut adv);
                self.byzantine.push((r, b));
                used += 1;
            }
        }
        // The faults never stop on some seeds: only safety is checked there.
        self.endless = adv.gen_bool(0.08);
        // A clock beyond the skew bound, or jumping forward and back.
        if adv.gen_bool(0.25) {
            let r = adv.gen_range(0..n);
            let skew = self.params.clock_skew_ms as i64;
            let far = adv.gen_range(skew + 1..3 * skew) * if adv.gen_bool(0.5) { 1 } else { -1 };
            let healthy = adv.gen_range(-50..50);
            // Counted against f if it stays wrong after quiet_at.
            let lasting = self.endless || (is_free(self, r) && used < f && adv.gen_bool(0.5));
            if adv.gen_bool(0.5) {
                self.clock_steps.push((0, r, far));
            } else {
                for _ in 0..adv.gen_range(1..4) {
                    let at = adv.gen_range(0..self.quiet_at);
                    let jump = adv.gen_range(-3 * skew..3 * skew);
                    self.clock_steps.push((at, r, jump));
                }
                self.clock_steps.sort();
            }
            if lasting {
                used += usize::from(!self.byzantine.iter().any(|(b, _)| *b == r));
            } else {
                self.clock_steps.push((self.quiet_at, r, healthy));
            }
        }
        // Bursts: long runs of drops on every link.
        for _ in 0..adv.gen_range(0..3) {
            if adv.gen_bool(0.5) {
                continue;
            }
            let from = adv.gen_range(0..self.quiet_at);
            let to = (from + adv.gen_range(300..3_000)).min(self.quiet_at);
            self.bursts
                .push((from, to, [0.6, 0.9, 1.0][adv.gen_range(0..3)]));
        }
        if adv.gen_bool(0.2) {
            self.long_delay = [0.002, 0.01, 0.05][adv.gen_range(0..3)];
        }
        debug_assert!(self.byzantine.len() <= cap);
        debug_assert!(self.endless || used <= f);
    }

    /// Any behaviour the random campaign plays, each with its own parameters.
    fn any_behaviour(&self, adv: &mut ChaCha8Rng) -> Behaviour {
        let peers = adv.gen_range(0..(1u64 << self.n));
        match adv.gen_range(0..13) {
            0 => Behaviour::Silent,
            1 => Behaviour::Equivocate,
            2 => Behaviour::BadVotes,
            3 => Behaviour::BadNewView,
            4 => self.censor(adv.gen_range(0..self.clients)),
            5 => Behaviour::Accomplice,
            6 => Behaviour::LyingStatus,
            7 => Behaviour::ProposeToSome { peers },
            8 => Behaviour::Redate {
                shift_ms: adv.gen_range(-3_000..self.params.clock_skew_ms as i64),
            },
            9 => Behaviour::WithholdCheckpoints,
            10 => Behaviour::StaleViewChange,
            11 => Behaviour::BadTransfer,
            _ => Behaviour::SendToSome { peers },
        }
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        match self.name {
            "random" => format!(
                "SIM_SEED={} cargo test -p stele-sim --test seeds replay -- --nocapture",
                self.seed
            ),
            "calm_four_replicas_commit_everything"
            | "agreement_checker_catches_f_plus_one_colluders" => format!(
                "SIM_TRACE=1 cargo test -p stele-sim --test seeds {} -- --nocapture (seed {})",
                self.name, self.seed
            ),
            name if CRASH_ORDER_TESTS.contains(&name) => format!(
                "SIM_TRACE=1 cargo test -p stele-sim --test crash_order {name} -- --exact --nocapture (seed {})",
                self.seed
            ),
            name => format!(
                "SIM_TRACE=1 cargo test -p stele-sim --test {} {name} -- --exact --nocapture (seed {})",
                self.test_file, self.seed
            ),
        }
    }
}

/// Protocol parameters small enough that checkpoints, watermarks and view changes all
/// happen within a few simulated seconds.
pub fn sim_params() -> Params {
    Params {
        checkpoint_interval: 8,
        window: 16,
        max_block_txs: 50,
        max_block_bytes: 64 * 1024,
        max_batch_delay_ms: 10,
        max_in_flight: 4,
        view_timeout_ms: 1000,
        max_view_timeout_ms: 8000,
        clock_skew_ms: 5000,
        nonce_window: 64,
        max_pending_per_sender: 64,
        mempool_size: 10_000,
        gapped_ttl_ms: 30_000,
        min_new_account: Amount(1),
        relay_batch_txs: 64,
        transfer_batch_blocks: 8,
    }
}

/// Which checker a [`Violation`] comes from: what a test that breaks the cluster on
/// purpose matches on (`tests/checkers.rs`), rather than on the wording of `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    /// Checker 1: honest replicas commit one block per height, reach one state after it
    /// and never halt on a divergence.
    Agreement,
    /// Checker 2: committed txs were submitted and validly signed, are applied at most
    /// once, and transfers conserve the supply.
    Validity,
    /// A restarted replica resumes at least at the height it had committed.
    Durability,
    /// Checker 4: no honest identity signs two digests for one (kind, view, height).
    NoEquivocation,
    /// Checker 4: no honest replica votes in a view below one it sent a VIEW-CHANGE for.
    NoVoteInLeftView,
    /// Checker 5: logs, buffers and queues within their bounds.
    BoundedMemory,
    /// Checker 6: after the faults stop, every contiguous client tx is applied everywhere.
    Liveness,
    /// Checker 7: every certificate an honest replica persists or acts on verifies.
    Certificates,
    /// Checker 8: no honest replica signs two CHECKPOINTs with different state digests
    /// for one height, and honest replicas' CHECKPOINTs for a height agree.
    CheckpointEquivocation,
    /// Safety rule 3: an honest replica's own vote, VIEW-CHANGE or NEW-VIEW is in its
    /// durable state before it leaves.
    DurableBeforeSend,
    /// The run itself went on for too many steps.
    BoundedRun,
    /// A rule this list does not name (yet): a test expecting a named checker fails on it.
    Other,
}

impl Check {
    /// The checker a rule belongs to (a rule is its checker's name, perhaps with a
    /// qualifier in parentheses).
    pub fn of(rule: &str) -> Check {
        const CHECKS: [(&str, Check); 11] = [
            ("agreement", Check::Agreement),
            ("validity", Check::Validity),
            ("durability", Check::Durability),
            ("no equivocation", Check::NoEquivocation),
            ("no vote in a left view", Check::NoVoteInLeftView),
            ("bounded memory", Check::BoundedMemory),
            ("liveness", Check::Liveness),
            ("certificates", Check::Certificates),
            ("checkpoint equivocation", Check::CheckpointEquivocation),
            ("durable before send", Check::DurableBeforeSend),
            ("bounded run", Check::BoundedRun),
        ];
        CHECKS
            .iter()
            .find(|(name, _)| {
                rule.strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(" ("))
            })
            .map_or(Check::Other, |(_, c)| *c)
    }
}

/// A broken rule, with the seed that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: u64,
    /// The checker that found it (`Check::of(rule)`).
    pub check: Check,
    pub rule: &'static str,
    pub detail: String,
    pub replay: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} at {} ms: {}: {}\n  replay: {}",
            self.seed, self.at_ms, self.rule, self.detail, self.replay
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub heights: u64,
    pub view_changes: u64,
    pub messages: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub evidence: u64,
    pub applied_txs: usize,
    pub heights_after_quiet_with_client_tx: u64,
    /// When the first height carrying client txs committed after `quiet_at` (ms).
    pub first_client_height_after_quiet_ms: Option<u64>,
    /// Wiped replicas whose recovery gate opened (they vote again), in order.
    pub recovered: Vec<usize>,
    /// PRE-PREPAREs, PREPAREs and COMMITs sent by wiped replicas after their gate opened.
    pub votes_after_recovery: u64,
    /// Messages a recovery gate held back.
    pub held_by_recovery: u64,
    /// NEW-VIEWs sent by honest primaries whose V holds, for one height, prepared
    /// certificates from two views for two digests.
    pub new_views_with_conflicting_certificates: u64,
    /// Heights whose committed block is dated no later than the non-null block before
    /// it (DESIGN.md's normal case makes each later); null blocks do not count.
    pub non_monotonic_timestamps: u64,
    /// How far, at most, a committed block's timestamp was ahead of the clock of the
    /// first honest replica to execute it (ms).
    pub max_timestamp_lead_ms: u64,
    /// The most bytes an honest replica answered one peer's fetches with in one interval
    /// of T, charged as the engine charges them (a block of a state-transfer batch at its
    /// largest encoding, bodies as encoded); and as the answers actually encode.
    pub max_served_per_peer_interval: u64,
    pub max_served_encoded_per_peer_interval: u64,
    /// The engine's serving budget: bytes per peer and interval of T.
    pub serve_budget: u64,
    /// Evidence an honest replica reported for a slot (height, view, replica, kind) it
    /// had already reported since it last started.
    pub evidence_repeats: u64,
}

enum Event {
    Net {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    /// A message whose (simulated) verification ended (`Scenario::verify_us`).
    Verified {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Submit {
        client: usize,
        nonce: u64,
        copy: u8,
        /// Scripted targets (no retries); `None`: q random replicas, retried.
        targets: Option<Vec<usize>>,
    },
    Crash {
        r: usize,
        down: u64,
    },
    Wipe {
        r: usize,
        down: u64,
    },
    Restart {
        r: usize,
    },
    /// The end of a burst: drain replica r's engine (`Scenario::burst_ms`).
    Drive {
        r: usize,
    },
    Clock {
        r: usize,
        offset: i64,
    },
}

/// A contiguous-nonce client tx that must be applied: the tx or its same-nonce twin.
struct Expected {
    client: usize,
    nonce: u64,
    tx: TxHash,
    twin: TxHash,
    /// When it was first submitted.
    submitted: Option<u64>,
}

/// `Submit::copy`: the tx itself, a same-nonce twin, a retry of the tx, a gapped tx.
const COPY_TX: u8 = 0;
const COPY_TWIN: u8 = 1;
const COPY_RETRY: u8 = 2;
const COPY_GAPPED: u8 = 3;

struct Queued {
    at: u64,
    seq: u64,
    ev: Event,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Replica {
    engine: Option<Engine>,
    signer: Arc<dyn Signer>,
    durable: BTreeMap<Vec<u8>, DurableEntry>,
    chain: Vec<CommittedBlock>,
    digests: Vec<Digest>,
    ledger: MemState,
    byz: Option<Behaviour>,
    clock_offset: i64,
    /// What this identity ever signed (checkers 4 and 8), across crashes and wipes.
    history: SignedHistory,
    /// Set while a wiped replica recovers; kept across crashes (the node must restart a
    /// replica that crashed while recovering with `--recover` again).
    gate: Option<RecoveryGate>,
    /// Whether it was wiped and its gate has opened since.
    recovered: bool,
    /// Txs whose signatures it verified (memory: lost in a crash).
    cache: TxCache,
    /// Until when (virtual µs) its verification is busy (`Scenario::verify_us`): one
    /// queue for relayed txs and one for the rest, as the node's workers are split.
    busy_until_us: [u64; 2],
    /// Its verdicts on heavy frames (`FrameVerdicts`, as the node keeps them): lost in a
    /// crash.
    verdicts: FrameVerdicts,
    /// The evidence slots it reported since it last started.
    evidence: HashSet<(Height, ViewNumber, ReplicaId, &'static str)>,
    /// Digests of the heavy frames it verified (`Scenario::verify_us`'s cost model): a
    /// re-sent VIEW-CHANGE or NEW-VIEW, good or bad, costs nothing the second time.
    frames: VecDeque<Digest>,
    /// Inputs handed to the engine since its last drain (`Scenario::burst_ms`): a drain
    /// is scheduled.
    drive_due: bool,
}

/// A replica's verified-tx cache, as the node keeps one (bounded; cleared when full).
#[derive(Debug, Default)]
struct TxCache(HashMap<TxHash, Verified<TxBody>>);

impl TxCache {
    const CAP: usize = 50_000;

    fn insert_all(&mut self, txs: Vec<Verified<TxBody>>) {
        if self.0.len() + txs.len() > TxCache::CAP {
            self.0.clear();
        }
        self.0
            .extend(txs.into_iter().map(|t| (tx_hash(t.signed()), t)));
    }
}

impl KnownTxs for TxCache {
    fn verified(&self, hash: &TxHash) -> Option<Verified<TxBody>> {
        self.0.get(hash).cloned()
    }
}

struct Sim {
    sc: Scenario,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    genesis: Genesis,
    vs: ValidatorSet,
    scheme: Arc<dyn Scheme>,
    replicas: Vec<Replica>,
    client_keys: Vec<Arc<dyn Signer>>,
    submitted: HashSet<TxHash>,
    /// The first honest commit at each height.
    agreed: BTreeMap<Height, Digest>,
    /// The state digest after each height, from the first honest replica to execute it.
    agreed_state: BTreeMap<Height, Digest>,
    /// The contiguous-nonce txs that must be applied (checker 6).
    expected: Vec<Expected>,
    /// (client, nonce) → index in `expected`.
    expected_at: HashMap<(usize, u64), usize>,
    /// The run ends here: after the last liveness deadline.
    end_ms: u64,
    /// Height → (replica, state digest) of the first honest CHECKPOINT for it: checker 8.
    agreed_checkpoints: BTreeMap<Height, (usize, Digest)>,
    out: Outcome,
    frame_limit: usize,
    violation: Option<Violation>,
    quiet_heights: HashSet<u64>,
    next_done_check: u64,
    /// What the Byzantine replicas share (their back channel).
    collusion: Collusion,
    /// The engines' serving rule: (interval ms, budget bytes, what a block is charged).
    serve: (u64, u64, u64),
    /// (server, peer) → (interval, charged, encoded) bytes of the answers it got there.
    served: HashMap<(usize, usize), (u64, u64, u64)>,
    /// The scenario's crashes inside a drain, and whether each struck yet.
    step_crashes: Vec<(StepCrash, bool)>,
    /// `SIM_TRACE=1` prints commits and view changes.
    trace: bool,
}

fn chain_id() -> ChainId {
    ChainId::new("stele-sim").expect("valid chain id")
}

/// Runs one scenario to its end; `Err` names the first broken rule.
pub fn run(sc: &Scenario) -> Result<Outcome, Violation> {
    let mut sim = Sim::new(sc.clone());
    sim.run();
    match sim.violation {
        Some(v) => Err(v),
        None => Ok(sim.out),
    }
}

impl Sim {
    fn new(sc: Scenario) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(sc.seed);
        let n = sc.n;
        let (signers, client_keys, scheme): (Keys, Keys, Arc<dyn Scheme>) = if sc.real_crypto {
            let v: Vec<Arc<dyn Signer>> = (0..n)
                .map(|i| Arc::new(KeyPair::from_seed(seed(1, i))) as Arc<dyn Signer>)
                .collect();
            let c: Vec<Arc<dyn Signer>> = (0..sc.clients)
                .map(|i| Arc::new(KeyPair::from_seed(seed(2, i))) as Arc<dyn Signer>)
                .collect();
            (v, c, Arc::new(Ed25519))
        } else {
            let v: Vec<MacSigner> = (0..n).map(|i| MacSigner::new(seed(1, i))).collect();
            let c: Vec<MacSigner> = (0..sc.clients)
                .map(|i| MacSigner::new(seed(2, i)))
                .collect();
            let scheme = MacScheme::new(v.iter().chain(c.iter()));
            (
                v.into_iter()
                    .map(|s| Arc::new(s) as Arc<dyn Signer>)
                    .collect(),
                c.into_iter()
                    .map(|s| Arc::new(s) as Arc<dyn Signer>)
                    .collect(),
                Arc::new(scheme),
            )
        };
        let genesis = Genesis {
            chain_id: chain_id(),
            genesis_time_ms: GENESIS_MS,
            validators: signers
                .iter()
                .enumerate()
                .map(|(i, s)| ValidatorInfo {
                    key: s.public_key(),
                    p2p_addr: format!("10.0.0.{i}:7000"),
                    api_addr: format!("10.0.0.{i}:8000"),
                })
                .collect(),
            accounts: client_keys
                .iter()
                .map(|k| GenesisAccount {
                    key: k.public_key(),
                    balance: Amount(CLIENT_BALANCE),
                })
                .collect(),
            params: sc.params.clone(),
        };
        if let Err((field, problem)) = genesis.validate() {
            panic!("simulator genesis invalid: {field}: {problem}");
        }
        let ledger = MemState::genesis(&genesis);
        debug_assert_eq!(
            ledger.last_state(),
            Ok((Height(0), genesis_state_digest(&genesis)))
        );
        let replicas = signers
            .into_iter()
            .enumerate()
            .map(|(i, signer)| Replica {
                engine: None,
                signer,
                durable: BTreeMap::new(),
                chain: Vec::new(),
                digests: vec![genesis_state_digest(&genesis)],
                ledger: ledger.clone(),
                byz: sc.byzantine.iter().find(|(b, _)| *b == i).map(|(_, k)| *k),
                clock_offset: rng.gen_range(-50..50),
                history: SignedHistory::default(),
                gate: None,
                recovered: false,
                cache: TxCache::default(),
                busy_until_us: [0; 2],
                frames: VecDeque::new(),
                verdicts: FrameVerdicts::default(),
                evidence: HashSet::new(),
                drive_due: false,
            })
            .collect();
        let frame_limit = max_frame_len(&genesis);
        let mut sim = Sim {
            sc,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            vs: genesis.validator_set(),
            genesis,
            scheme,
            replicas,
            client_keys,
            submitted: HashSet::new(),
            agreed: BTreeMap::new(),
            agreed_state: BTreeMap::new(),
            expected: Vec::new(),
            expected_at: HashMap::new(),
            end_ms: 0,
            agreed_checkpoints: BTreeMap::new(),
            out: Outcome::default(),
            frame_limit,
            violation: None,
            quiet_heights: HashSet::new(),
            next_done_check: 0,
            collusion: Collusion::new(),
            serve: (1, 0, 0),
            served: HashMap::new(),
            step_crashes: Vec::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
        };
        sim.step_crashes = sim.sc.step_crashes.iter().map(|c| (*c, false)).collect();
        for r in 0..n {
            let _ = sim.start(r);
            if let Some(e) = &sim.replicas[r].engine {
                sim.serve = e.serve_budget();
                sim.out.serve_budget = sim.serve.1;
            }
        }
        sim.schedule_load();
        sim.schedule_faults();
        sim
    }

    fn end(&self) -> u64 {
        self.end_ms.max(self.sc.quiet_at + self.liveness_bound())
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    /// Liveness is promised this long after a tx was submitted (or after the faults
    /// stopped, if later): 4·T_max + 10 s.
    fn liveness_bound(&self) -> u64 {
        4 * self.sc.params.max_view_timeout_ms + 10_000
    }

    /// A contiguous-nonce tx first submitted at `at` must be applied.
    fn expect(&mut self, client: usize, nonce: u64, at: u64) {
        let tx = tx_hash(&self.client_tx(client, nonce, COPY_TX));
        let twin = tx_hash(&self.client_tx(client, nonce, COPY_TWIN));
        self.expected_at
            .insert((client, nonce), self.expected.len());
        self.expected.push(Expected {
            client,
            nonce,
            tx,
            twin,
            submitted: None,
        });
        let deadline = at.max(self.sc.quiet_at) + self.liveness_bound();
        self.end_ms = self.end_ms.max(deadline);
    }

    fn schedule_load(&mut self) {
        if !self.sc.script.is_empty() {
            for t in self.sc.script.clone() {
                self.expect(t.client, t.nonce, t.at);
                self.push(
                    t.at,
                    Event::Submit {
                        client: t.client,
                        nonce: t.nonce,
                        copy: COPY_TX,
                        targets: Some(t.targets),
                    },
                );
            }
            return;
        }
        // Clients send contiguous nonces, spread over the run; more after quiet_at so
        // that progress after the faults is visible.
        let horizon = self.sc.load_for.unwrap_or(self.sc.quiet_at + 3_000);
        for c in 0..self.sc.clients {
            let total = self.sc.txs_per_client + 30;
            for k in 0..total {
                let at = (k as u64 * horizon) / total as u64 + self.rng.gen_range(0..40);
                self.expect(c, k as u64, at);
                self.push(
                    at,
                    Event::Submit {
                        client: c,
                        nonce: k as u64,
                        copy: COPY_TX,
                        targets: None,
                    },
                );
                if self.sc.tricky_txs && self.rng.gen_bool(0.1) {
                    // A same-nonce twin, or a resend of the same tx.
                    let t = at + self.rng.gen_range(0..50);
                    self.push(
                        t,
                        Event::Submit {
                            client: c,
                            nonce: k as u64,
                            copy: COPY_TWIN,
                            targets: None,
                        },
                    );
                }
            }
            if self.sc.tricky_txs {
                // A gapped tx that never becomes executable (nonce `total` never comes),
                // within G so that admission takes it: it must never cause a view change.
                let t = self.rng.gen_range(0..horizon);
                self.push(
                    t,
                    Event::Submit {
                        client: c,
                        nonce: total as u64 + 1,
                        copy: COPY_GAPPED,
                        targets: None,
                    },
                );
            }
        }
    }

    fn schedule_faults(&mut self) {
        for (at, r, down) in self.sc.crashes.clone() {
            self.push(at, Event::Crash { r, down });
        }
        if let Some(at) = self.sc.whole_crash {
            for r in 0..self.sc.n {
                self.push(at, Event::Crash { r, down: 500 });
            }
        }
        for (at, r, down) in self.sc.wipes.clone() {
            self.push(at, Event::Wipe { r, down });
        }
        if self.sc.sabotage == Some(Sabotage::UnsubmittedTx) {
            // Nonce 0 at amount 3 is none of the client's own copies (1 and 2), and it is
            // handed over before any of them: it is what gets committed.
            let k = &self.client_keys[0];
            let tx = sign_tx(
                TxBody {
                    sender: k.public_key(),
                    nonce: Nonce(0),
                    op: Op::Transfer {
                        to: self.client_keys[1 % self.client_keys.len()].public_key(),
                        amount: Amount(3),
                    },
                },
                self.vs.chain(),
                k.as_ref(),
            );
            for r in 0..self.sc.n {
                self.admit(r, tx.clone(), true);
            }
        }
        for (at, r, offset) in self.sc.clock_steps.clone() {
            self.push(at, Event::Clock { r, offset });
        }
    }

    fn unix(&self, r: usize) -> u64 {
        (GENESIS_MS + self.now).saturating_add_signed(self.replicas[r].clock_offset)
    }

    fn f(&self) -> usize {
        (self.sc.n - 1) / 3
    }

    fn honest(&self, r: usize) -> bool {
        self.replicas[r].byz.is_none()
    }

    fn violate(&mut self, rule: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                seed: self.sc.seed,
                at_ms: self.now,
                check: Check::of(rule),
                rule,
                detail,
                replay: self.sc.replay_command(),
            });
        }
    }

    fn config(&self, r: usize) -> Config {
        Config {
            id: ReplicaId(r as u16),
            genesis: self.genesis.clone(),
            signer: self.replicas[r].signer.clone(),
            genesis_state: self.replicas[r].digests[0],
        }
    }

    /// Starts (or restarts) replica r from its durable state and committed chain only;
    /// returns the height it restored (before its first drain, which may crash it).
    fn start(&mut self, r: usize) -> Height {
        let rep = &self.replicas[r];
        let low = rep
            .durable
            .values()
            .filter_map(|e| match e {
                DurableEntry::StableCheckpoint(c) => Some(c.height),
                _ => None,
            })
            .max()
            .unwrap_or(Height(0));
        let k = self.sc.params.checkpoint_interval;
        let mut chain = ChainState {
            executed: Height(rep.chain.len() as u64),
            state_digest: *rep.digests.last().expect("genesis digest"),
            recent: rep
                .chain
                .iter()
                .filter(|cb| cb.block.height() > low)
                .cloned()
                .collect(),
            checkpoint_digests: rep
                .digests
                .iter()
                .enumerate()
                .filter(|(h, _)| *h as u64 >= low.0 && *h as u64 % k == 0)
                .map(|(h, d)| (Height(h as u64), *d))
                .collect(),
        };
        let mut durable: Vec<DurableEntry> = rep.durable.values().cloned().collect();
        if let Some(s) = self.sc.sabotage {
            self.sabotage_restart(s, r, &mut chain, &mut durable);
        }
        let engine = Engine::restore(self.config(r), durable, chain, self.now);
        let restored = engine.delivered();
        self.replicas[r].engine = Some(engine);
        self.drive(r);
        restored
    }

    fn run(&mut self) {
        let end = self.end();
        let mut steps: u64 = 0;
        loop {
            if self.violation.is_some() {
                return;
            }
            let next_ev = self.queue.peek().map(|Reverse(q)| q.at);
            let next_timer = self
                .replicas
                .iter()
                .enumerate()
                .filter_map(|(i, rep)| {
                    rep.engine
                        .as_ref()
                        .and_then(|e| e.next_deadline())
                        .map(|t| (t, i))
                })
                .min();
            let (t, timer_of) = match (next_ev, next_timer) {
                (None, None) => break,
                (Some(e), Some((t, i))) if t < e => (t, Some(i)),
                (Some(e), _) => (e, None),
                (None, Some((t, i))) => (t, Some(i)),
            };
            if t > end {
                break;
            }
            if t >= self.next_done_check {
                self.next_done_check = t + 1_000;
                if let Err(detail) = self.overdue(t) {
                    self.now = t;
                    self.violate("liveness", detail);
                    return;
                }
                let load_done = self.expected.iter().all(|e| e.submitted.is_some());
                if load_done && t > self.sc.quiet_at + 3_100 && self.all_applied().is_ok() {
                    break;
                }
            }
            self.now = self.now.max(t);
            steps += 1;
            if steps > 5_000_000 {
                self.violate("bounded run", "more than 5M steps".into());
                return;
            }
            match timer_of {
                Some(r) => {
                    let (now, unix) = (self.now, self.unix(r));
                    if let Some(e) = self.replicas[r].engine.as_mut() {
                        e.on_tick(now, unix);
                    }
                    self.drive(r);
                }
                None => {
                    let Some(Reverse(q)) = self.queue.pop() else {
                        break;
                    };
                    self.event(q.ev);
                }
            }
            self.check_bounds();
        }
        self.check_liveness();
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Net { from, to, bytes } => {
                if self.sc.verify_us > 0 {
                    // Verified one at a time, after the messages before it: it reaches
                    // the engine when its verification ends.
                    let msg = codec::decode::<Message>(&bytes, self.frame_limit).ok();
                    let cost = match &msg {
                        Some(m) if !self.seen_frame(to, m, &bytes) => {
                            self.verify_cost(to, m) * self.sc.verify_us
                        }
                        _ => 0,
                    };
                    let queue = usize::from(matches!(msg, Some(Message::Relay(_))));
                    let busy = &mut self.replicas[to].busy_until_us[queue];
                    let start = (*busy).max(self.now * 1000);
                    *busy = start + cost;
                    self.push(
                        (start + cost).div_ceil(1000),
                        Event::Verified { from, to, bytes },
                    );
                    return;
                }
                self.deliver(from, to, bytes)
            }
            Event::Verified { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Submit {
                client,
                nonce,
                copy,
                targets,
            } => self.submit(client, nonce, copy, targets),
            Event::Crash { r, down } => self.crash(r, down),
            Event::Drive { r } => {
                if self.replicas[r].drive_due {
                    self.drive(r);
                }
            }
            Event::Wipe { r, down } => {
                // The disk is gone: durable consensus state, chain and ledger. What it
                // signed before stays in checker 4's books (`history`).
                let was_up = self.replicas[r].engine.take().is_some();
                let rep = &mut self.replicas[r];
                rep.drive_due = false;
                rep.cache = TxCache::default();
                rep.frames.clear();
                rep.verdicts = FrameVerdicts::default();
                rep.evidence.clear();
                rep.durable.clear();
                rep.chain.clear();
                rep.digests.truncate(1);
                rep.ledger = MemState::genesis(&self.genesis);
                rep.gate = Some(RecoveryGate::new(
                    ReplicaId(r as u16),
                    self.vs.quorum(),
                    self.vs.f(),
                    self.sc.params.window,
                ));
                rep.recovered = false;
                if self.trace {
                    eprintln!("{:>6} ms  r{r} wiped", self.now);
                }
                if was_up {
                    self.push(self.now + down, Event::Restart { r });
                }
            }
            Event::Clock { r, offset } => {
                if self.trace {
                    eprintln!("{:>6} ms  r{r} clock offset {offset} ms", self.now);
                }
                self.replicas[r].clock_offset = offset;
            }
            Event::Restart { r } => {
                if self.replicas[r].engine.is_none() {
                    let before = self.replicas[r].chain.len();
                    let after = self.start(r).0 as usize;
                    if after < before {
                        self.violate(
                            "durability",
                            format!(
                                "replica {r} restarted at height {after}, had committed {before}"
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Replica r loses its memory (engine, caches, undrained actions) and restarts
    /// `down` ms later from its durable record and chain.
    fn crash(&mut self, r: usize, down: u64) {
        let rep = &mut self.replicas[r];
        rep.cache = TxCache::default();
        rep.frames.clear();
        rep.verdicts = FrameVerdicts::default();
        rep.evidence.clear();
        rep.drive_due = false;
        if rep.engine.take().is_some() {
            if self.trace {
                eprintln!("{:>6} ms  r{r} crashed", self.now);
            }
            self.push(self.now + down, Event::Restart { r });
        }
    }

    /// After an input to replica r: drain now, or at the end of its burst.
    fn input_done(&mut self, r: usize) {
        if self.sc.burst_ms == 0 {
            return self.drive(r);
        }
        if !self.replicas[r].drive_due {
            self.replicas[r].drive_due = true;
            self.push(self.now + self.sc.burst_ms - 1, Event::Drive { r });
        }
    }

    fn client_tx(&self, client: usize, nonce: u64, copy: u8) -> Transaction {
        let k = &self.client_keys[client];
        let to = self.client_keys[(client + 1) % self.client_keys.len()].public_key();
        let amount = if copy == COPY_TWIN { 2 } else { 1 };
        sign_tx(
            TxBody {
                sender: k.public_key(),
                nonce: Nonce(nonce),
                op: Op::Transfer {
                    to,
                    amount: Amount(amount),
                },
            },
            self.vs.chain(),
            k.as_ref(),
        )
    }

    fn submit(&mut self, client: usize, nonce: u64, copy: u8, targets: Option<Vec<usize>>) {
        let tx = self.client_tx(client, nonce, copy);
        let h = tx_hash(&tx);
        self.submitted.insert(h);
        if copy == COPY_TX {
            if let Some(&i) = self.expected_at.get(&(client, nonce)) {
                self.expected[i].submitted.get_or_insert(self.now);
            }
        }
        let scripted = targets.is_some();
        // The client library sends to q validators; if the tx is not applied within a few
        // seconds it asks again (as `stele submit` does when receipts stay missing).
        let targets = targets.unwrap_or_else(|| {
            let q = self.sc.n - self.f();
            let mut targets: Vec<usize> = (0..self.sc.n).collect();
            for i in (1..targets.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                targets.swap(i, j);
            }
            targets.truncate(q);
            targets
        });
        for r in targets {
            self.admit(r, tx.clone(), true);
        }
        if scripted {
            return;
        }
        if copy == COPY_TX {
            self.push(
                self.now + 3_000,
                Event::Submit {
                    client,
                    nonce,
                    copy: COPY_RETRY,
                    targets: None,
                },
            );
        }
        if copy == COPY_RETRY {
            // A retry: stop once every honest replica applied it.
            let done = (0..self.sc.n)
                .filter(|r| self.honest(*r))
                .all(|r| self.applied(r, &h));
            if !done && self.now < self.end() {
                self.push(
                    self.now + 3_000,
                    Event::Submit {
                        client,
                        nonce,
                        copy: COPY_RETRY,
                        targets: None,
                    },
                );
            }
        }
    }

    /// Whether replica r's ledger applied the tx.
    fn applied(&self, r: usize, h: &TxHash) -> bool {
        matches!(self.replicas[r].ledger.tx_location(h), Ok(Some(_)))
    }

    /// The node's admission path: verify, admit and classify against executed state with
    /// `stele_ledger::admit` (as the node's driver does), hand over.
    fn admit(&mut self, r: usize, tx: Transaction, from_client: bool) {
        let Some(engine) = self.replicas[r].engine.as_ref() else {
            return;
        };
        let hash = tx_hash(&tx);
        if engine.has_pending(&hash) || self.applied(r, &hash) {
            return;
        }
        let verifier = Verifier {
            validators: &self.vs,
            genesis: &self.genesis,
            scheme: self.scheme.as_ref(),
            known: Some(&self.replicas[r].cache),
        };
        let Ok(mut v) = verifier.check_txs(std::slice::from_ref(&tx)) else {
            return;
        };
        let Some(verified) = v.pop() else { return };
        self.replicas[r].cache.insert_all(vec![verified.clone()]);
        let Some(engine) = self.replicas[r].engine.as_ref() else {
            return;
        };
        let account = self.replicas[r]
            .ledger
            .account(&tx.sender)
            .expect("MemState reads cannot fail");
        let ctx = Admission {
            account,
            next_nonce: account.map_or(Nonce(0), |a| {
                engine.pending().next_nonce(&tx.sender, a.nonce)
            }),
            sender_pending: engine.pending().of_sender(&tx.sender).len(),
            mempool_len: engine.pending().len(),
        };
        let class = match admit(tx.nonce, &ctx, &self.sc.params) {
            Ok(Class::Executable) => TxClass::Executable,
            Ok(_) => TxClass::Gapped,
            Err(_) => return,
        };
        let (now, unix) = (self.now, self.unix(r));
        if let Some(e) = self.replicas[r].engine.as_mut() {
            e.on_request(now, unix, hash, verified, class, from_client);
        }
        self.input_done(r);
    }

    fn send(&mut self, from: usize, to: usize, msg: &Message) {
        if from == to {
            return;
        }
        if let Some(Sabotage::Blackout { from_ms }) = self.sc.sabotage {
            if self.now >= from_ms {
                return;
            }
        }
        let quiet = self.now >= self.sc.quiet_at && !self.sc.endless;
        if !quiet {
            for (a, b, group) in &self.sc.partitions {
                if self.now >= *a && self.now < *b && (group.contains(&from) != group.contains(&to))
                {
                    return;
                }
            }
            if let Some(d) = self
                .sc
                .drops
                .iter()
                .find(|d| d.drops(self.now, from, to, msg))
            {
                if let Some(at) = d.hold_until {
                    let bytes = codec::encode(msg);
                    self.out.messages += 1;
                    self.push(at, Event::Net { from, to, bytes });
                }
                return;
            }
            if self.rng.gen_bool(self.sc.loss) {
                return;
            }
            let now = self.now;
            if let Some((_, _, loss)) = self
                .sc
                .bursts
                .iter()
                .find(|(a, b, _)| now >= *a && now < *b)
            {
                if self.rng.gen_bool(*loss) {
                    return;
                }
            }
        }
        let bytes = codec::encode(msg);
        self.out.messages += 1;
        let copies = if !quiet && self.rng.gen_bool(self.sc.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = 1 + self.rng.gen_range(0..self.sc.max_delay.max(1));
            // Drawn only when set, so that seeds without long delays keep their streams.
            if !quiet && self.sc.long_delay > 0.0 && self.rng.gen_bool(self.sc.long_delay) {
                let skew = self.sc.params.clock_skew_ms;
                delay += self.rng.gen_range(skew..2 * skew);
            }
            self.push(
                self.now + delay,
                Event::Net {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    /// Whether replica `to` verified these very bytes before (heavy kinds only, the
    /// node's last 32); remembers them otherwise.
    fn seen_frame(&mut self, to: usize, msg: &Message, bytes: &[u8]) -> bool {
        let heavy = matches!(
            msg,
            Message::ViewChange(_) | Message::NewView(_) | Message::CheckpointCertificate(_)
        );
        if !heavy {
            return false;
        }
        let d = Digest::of(bytes);
        let frames = &mut self.replicas[to].frames;
        if frames.contains(&d) {
            return true;
        }
        frames.push_back(d);
        if frames.len() > 32 {
            frames.pop_front();
        }
        false
    }

    /// Signatures replica `to` verifies for a message (txs it verified before are free).
    fn verify_cost(&self, to: usize, msg: &Message) -> u64 {
        let cache = &self.replicas[to].cache.0;
        let txs = |txs: &[Transaction]| {
            txs.iter()
                .filter(|t| !cache.contains_key(&tx_hash(t)))
                .count() as u64
        };
        let vc = |vc: &stele_types::ViewChange| {
            1 + vc
                .checkpoint
                .as_ref()
                .map_or(0, |c| c.signatures.len() as u64)
                + vc.prepared
                    .iter()
                    .map(|c| 1 + c.prepares.len() as u64)
                    .sum::<u64>()
        };
        match msg {
            Message::Proposal(p) => 1 + txs(&p.body.txs),
            Message::Prepare(_)
            | Message::Commit(_)
            | Message::Checkpoint(_)
            | Message::Status(_) => 1,
            Message::CheckpointCertificate(c) => c.signatures.len() as u64,
            Message::ViewChange(v) => vc(v),
            Message::NewView(nv) => {
                1 + nv.view_changes.iter().map(|v| vc(v)).sum::<u64>()
                    + nv.pre_prepares.len() as u64
            }
            Message::Bodies(b) => b.blocks.iter().map(|b| txs(&b.txs)).sum(),
            Message::Blocks(b) => b
                .blocks
                .iter()
                .map(|cb| cb.certificate.commits.len() as u64 + txs(&cb.block.txs))
                .sum(),
            Message::Relay(r) => txs(&r.txs),
            Message::FetchBodies(_) | Message::FetchBlocks(_) => 0,
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.replicas[to].engine.is_none() {
            return;
        }
        let msg: Message = match codec::decode(&bytes, self.frame_limit) {
            Ok(m) => m,
            Err(_) => {
                *self.out.rejected.entry("decode").or_default() += 1;
                return;
            }
        };
        let cache = &self.replicas[to].cache;
        let verifier = Verifier {
            validators: &self.vs,
            genesis: &self.genesis,
            scheme: self.scheme.as_ref(),
            known: Some(cache),
        };
        // As the node does: the txs inside a message are verified (and cached) first, so
        // that each tx is verified once per validator; but only once the message passed
        // the checks that need no signature (sender, size), which `verify` refuses it on.
        let txs: &[Transaction] = match &msg {
            Message::Proposal(p) => &p.body.txs,
            Message::Relay(r) => &r.txs,
            _ => &[],
        };
        let fresh = if txs.is_empty() || verifier.precheck(ReplicaId(from as u16), &msg).is_err() {
            None
        } else {
            verifier.check_txs(txs).ok()
        };
        let verdicts = &self.replicas[to].verdicts;
        let verified = verifier.verify_remembered(ReplicaId(from as u16), msg, verdicts);
        if let Some(v) = fresh {
            self.replicas[to].cache.insert_all(v);
        }
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                *self.out.rejected.entry(e.label()).or_default() += 1;
                return;
            }
        };
        match verified.inbound() {
            Inbound::Relay(txs) => {
                // A recovering node takes no relayed txs (its state is not yet its own).
                if self.replicas[to].gate.is_none() {
                    for tx in txs.clone() {
                        self.admit(to, tx.into_signed(), false);
                    }
                }
                return;
            }
            Inbound::Status(st) => {
                if let Some(g) = self.replicas[to].gate.as_mut() {
                    g.observe_status(st);
                }
            }
            _ => {}
        }
        let (now, unix) = (self.now, self.unix(to));
        if let Some(e) = self.replicas[to].engine.as_mut() {
            e.on_message(now, unix, ReplicaId(from as u16), unix, verified);
        }
        self.input_done(to);
    }

    /// Drains and performs replica r's actions until none are left, each drain as the
    /// node carries it out: the step list of `group_commit`. A `StepCrash` may stop it
    /// between two steps or inside a grouped write.
    fn drive(&mut self, r: usize) {
        self.replicas[r].drive_due = false;
        loop {
            let Some(actions) = self.replicas[r].engine.as_mut().map(Engine::drain) else {
                return;
            };
            if actions.is_empty() {
                return;
            }
            let steps = group_commit(actions);
            let total = steps.len();
            for (i, step) in steps.into_iter().enumerate() {
                match self.strike(r, i, total, &step) {
                    None => self.run_step(r, step),
                    Some((CrashPoint::AfterSend(_), down)) => {
                        self.run_step(r, step);
                        return self.crash(r, down);
                    }
                    Some((CrashPoint::AfterSteps(_), down)) => return self.crash(r, down),
                    Some((CrashPoint::Torn(keep), down)) => {
                        if let Step::Records(mut entries) = step {
                            entries.truncate(keep);
                            self.write_records(r, entries);
                        }
                        return self.crash(r, down);
                    }
                }
                if self.replicas[r].engine.is_none() {
                    return;
                }
            }
            self.update_gate(r);
        }
    }

    /// Whether a scenario's `StepCrash` strikes replica r at step `i` of a drain of
    /// `total` steps; it strikes once.
    fn strike(
        &mut self,
        r: usize,
        i: usize,
        total: usize,
        step: &Step,
    ) -> Option<(CrashPoint, u64)> {
        let now = self.now;
        if now >= self.sc.quiet_at {
            return None;
        }
        let hit = self.step_crashes.iter_mut().find(|(c, struck)| {
            !*struck
                && c.replica == r
                && c.from_ms <= now
                && match (c.at, step) {
                    (CrashPoint::AfterSteps(k), _) => k > 0 && k == i && k < total,
                    (CrashPoint::Torn(k), Step::Records(e)) => e.len() > k,
                    (
                        CrashPoint::AfterSend(kind),
                        Step::Do(Action::Send(_, m) | Action::Broadcast(m)),
                    ) => m.kind() == kind,
                    _ => false,
                }
        })?;
        hit.1 = true;
        // Faults stop at quiet_at: it is back by then, as a crash-restart would be.
        let (at, down) = (hit.0.at, hit.0.down.min(self.sc.quiet_at - now + 1));
        if self.trace {
            eprintln!("{now:>6} ms  r{r} crashes at step {i} of {total}: {at:?}");
        }
        Some((at, down))
    }

    fn run_step(&mut self, r: usize, step: Step) {
        match step {
            Step::Records(entries) => self.write_records(r, entries),
            Step::Do(a) => self.perform(r, a),
        }
    }

    /// One grouped write of consensus records.
    fn write_records(&mut self, r: usize, entries: Vec<DurableEntry>) {
        for e in entries {
            if let DurableEntry::Prepared(c) = &e {
                let checked = c.verify(&self.vs, self.scheme.as_ref());
                self.check_certificate(r, "prepared", c.height(), checked);
            }
            self.replicas[r].durable.insert(e.key().to_bytes(), e);
        }
    }

    /// After each drain, as the node does: the gate looks at the engine's state.
    fn update_gate(&mut self, r: usize) {
        let rep = &mut self.replicas[r];
        let (Some(g), Some(e)) = (rep.gate.as_mut(), rep.engine.as_mut()) else {
            return;
        };
        g.update(e.low_watermark(), e.view(), e.is_active());
        e.set_following(!g.done());
        if g.done() {
            if self.trace {
                eprintln!(
                    "{:>6} ms  r{r} recovered: bounds {:?}, low {}, view {}",
                    self.now,
                    g.bounds(),
                    e.low_watermark(),
                    e.view()
                );
            }
            rep.gate = None;
            rep.recovered = true;
            self.out.recovered.push(r);
        }
    }

    /// What leaves replica r for `to` (`None`: everyone): held back by a recovery gate,
    /// checked (checker 4) if honest, transformed if Byzantine.
    fn send_from(&mut self, r: usize, to: Option<usize>, m: Message) {
        let (m, second) = match self.sc.sabotage {
            Some(s) => self.sabotage_send(s, r, m),
            None => (m, None),
        };
        if let Some(g) = &self.replicas[r].gate {
            if !g.allows(&m) {
                self.out.held_by_recovery += 1;
                return;
            }
        }
        self.check_signed(r, &m);
        self.check_checkpoint(r, &m);
        if self.replicas[r].recovered
            && matches!(
                m,
                Message::Proposal(_) | Message::Prepare(_) | Message::Commit(_)
            )
        {
            self.out.votes_after_recovery += 1;
        }
        if let Message::NewView(nv) = &m {
            if self.honest(r) && conflicting_certificates(nv) {
                self.out.new_views_with_conflicting_certificates += 1;
            }
        }
        match self.replicas[r].byz {
            None => match to {
                Some(to) => self.send(r, to, &m),
                None => {
                    for to in 0..self.sc.n {
                        self.send(r, to, &m);
                    }
                }
            },
            Some(b) => self.byzantine_send(r, b, to, m),
        }
        if let Some(second) = second {
            self.send_from(r, to, second);
        }
    }

    fn perform(&mut self, r: usize, a: Action) {
        match a {
            // `group_commit` makes every Persist part of a `Step::Records`.
            Action::Persist(entries) => self.write_records(r, entries),
            Action::PersistCheckpoint(c) => {
                let checked = c.verify(&self.vs, self.scheme.as_ref());
                self.check_certificate(r, "checkpoint", c.height, checked);
                let rep = &mut self.replicas[r];
                rep.durable.retain(|k, _| {
                    let tag = k.first().copied().unwrap_or(0);
                    !(DurableKey::GC_TAGS.contains(&tag)
                        && k.as_slice() < DurableKey::gc_bound(tag, c.height).as_slice())
                });
                let e = DurableEntry::StableCheckpoint(c);
                rep.durable.insert(e.key().to_bytes(), e);
            }
            Action::Send(to, m) => {
                if let Message::Bodies(b) = &m {
                    let bytes: usize = b.blocks.iter().map(codec::encoded_len).sum();
                    self.record_served(r, to.index(), bytes as u64, codec::encoded_len(&m));
                }
                self.send_from(r, Some(to.index()), m)
            }
            Action::Broadcast(m) => self.send_from(r, None, m),
            Action::Deliver {
                block,
                mut certificate,
            } => {
                if self.sc.sabotage == Some(Sabotage::BrokenCommitSignature { replica: r }) {
                    if let Some(c) = certificate.commits.first_mut() {
                        c.signature.0[0] ^= 1;
                    }
                }
                let checked = certificate
                    .verify(&self.vs, self.scheme.as_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        block
                            .check_matches(certificate.height, &certificate.digest)
                            .map_err(|e| e.to_string())
                    });
                self.check_certificate(r, "commit", certificate.height, checked);
                self.execute(r, block, certificate)
            }
            Action::ServeBlocks {
                to,
                from,
                to_height,
            } => {
                let rep = &self.replicas[r];
                let blocks: Vec<CommittedBlock> = (from.0..=to_height.0)
                    .filter_map(|h| rep.chain.get((h as usize).checked_sub(1)?).cloned())
                    .collect();
                if !blocks.is_empty() {
                    let charged = blocks.len() as u64 * self.serve.2;
                    let m = Engine::blocks_batch(blocks);
                    self.record_served(r, to.index(), charged, codec::encoded_len(&m));
                    self.send_from(r, Some(to.index()), m);
                }
            }
            Action::Evidence(e) => {
                self.out.evidence += 1;
                if self.honest(r) && !self.replicas[r].evidence.insert(e.slot()) {
                    self.out.evidence_repeats += 1;
                }
            }
            Action::Rejected { reason, .. } => {
                *self.out.rejected.entry(reason.label()).or_default() += 1
            }
            Action::Halt(h) => {
                if self.honest(r) {
                    let detail = match h {
                        Halt::Divergence {
                            height,
                            ours,
                            stable,
                        } => format!("replica {r} diverged at {height}: {ours} vs {stable}"),
                        Halt::ConflictingNewView {
                            height,
                            executed,
                            proposed,
                        } => {
                            format!("replica {r}: NEW-VIEW re-proposes {proposed} at executed {height} ({executed})")
                        }
                    };
                    self.violate("agreement (halt)", detail);
                }
            }
            Action::ViewChanged { active, view } => {
                if self.trace {
                    eprintln!("{:>6} ms  r{r} view {view} active {active}", self.now);
                }
                if !active {
                    self.out.view_changes += 1;
                }
            }
        }
    }

    /// Honest replica r answered `to`'s fetch: `charged` bytes as the engine charges them,
    /// `encoded` as sent. Kept per interval of T (the engines' `now`; with
    /// `Scenario::burst_ms` a drain may fall in the interval after its input's).
    fn record_served(&mut self, r: usize, to: usize, charged: u64, encoded: usize) {
        if !self.honest(r) {
            return;
        }
        let interval = self.now / self.serve.0.max(1);
        let e = self.served.entry((r, to)).or_insert((interval, 0, 0));
        if e.0 != interval {
            *e = (interval, 0, 0);
        }
        e.1 += charged;
        e.2 += encoded as u64;
        let o = &mut self.out;
        o.max_served_per_peer_interval = o.max_served_per_peer_interval.max(e.1);
        o.max_served_encoded_per_peer_interval = o.max_served_encoded_per_peer_interval.max(e.2);
    }

    /// Executes a delivered block on replica r's ledger, with checkers 1 (agreement, on
    /// blocks and on the state after them) and 2 (validity: submitted, validly signed,
    /// applied at most once, supply conserved).
    fn execute(&mut self, r: usize, block: Block, certificate: stele_types::CommitCertificate) {
        // Once a rule is broken the run's verdict is known. A replica whose block broke
        // agreement did not append it, so a later delivery in the same drain would trip
        // the height-order assertion below instead of reporting the violation (seen in
        // `agreement_checker_bites` once the batch delay adapted to load).
        if self.violation.is_some() {
            return;
        }
        let h = block.height();
        let d = block.digest();
        if self.trace {
            eprintln!(
                "{:>6} ms  r{r} commits {h} {d:?} ({} txs) in view {}",
                self.now,
                block.txs.len(),
                certificate.view
            );
        }
        if self.honest(r) {
            match self.agreed.get(&h) {
                Some(prev) if *prev != d => {
                    self.violate(
                        "agreement",
                        format!("replica {r} committed {d} at {h}, another honest replica {prev}"),
                    );
                    return;
                }
                Some(_) => {}
                None => {
                    self.agreed.insert(h, d);
                    self.out.heights = self.out.heights.max(h.0);
                    self.observe_timestamp(r, &block);
                    // Validity, once per height (every honest commit there is this block).
                    for tx in &block.txs {
                        if !self.submitted.contains(&tx_hash(tx)) {
                            self.violate(
                                "validity",
                                format!("replica {r} committed a tx no client submitted at {h}"),
                            );
                        }
                        let signed =
                            tx.clone()
                                .verify(self.vs.chain(), &tx.sender, self.scheme.as_ref());
                        if signed.is_err() {
                            self.violate(
                                "validity",
                                format!("replica {r} committed a badly signed tx at {h}"),
                            );
                        }
                    }
                }
            }
        }
        let params = self.sc.params.clone();
        let rep = &mut self.replicas[r];
        assert_eq!(
            rep.chain.len() as u64 + 1,
            h.0,
            "deliveries are in height order"
        );
        let exec = match stele_ledger::execute(&block, &rep.ledger, &params) {
            Ok(e) => e,
            Err(e) => panic!("replica {r}: the simulator delivered out of order: {e}"),
        };
        // Applied at most once: an applied tx (and its sender's nonce) must be new to the
        // indexes, which are write-once.
        for (i, _) in exec.applied() {
            let tx = &block.txs[i];
            let reads = (
                rep.ledger.tx_location(&exec.tx_hashes[i]),
                rep.ledger.nonce_tx(&tx.sender, tx.nonce),
            );
            if !matches!(reads, (Ok(None), Ok(None))) {
                let detail = format!(
                    "replica {r} applied tx {} (nonce {} of {:?}) again at {h}",
                    exec.tx_hashes[i], tx.nonce, tx.sender
                );
                self.violate("validity (applied twice)", detail);
                return;
            }
        }
        let applied_client_tx = exec.applied().next().is_some();
        rep.ledger.apply(&block, &exec);
        let digest = exec.state_digest;
        rep.digests.push(digest);
        let senders: HashSet<PublicKey> = block.txs.iter().map(|t| t.sender).collect();
        rep.chain.push(CommittedBlock { block, certificate });
        let supply = rep.ledger.total_supply();
        let honest = rep.byz.is_none();
        if self.now >= self.sc.quiet_at && applied_client_tx && rep.byz.is_none() {
            self.quiet_heights.insert(h.0);
            let first = &mut self.out.first_client_height_after_quiet_ms;
            first.get_or_insert(self.now);
        }
        // Supply is conserved by transfers.
        let want = self.sc.clients as u128 * u128::from(CLIENT_BALANCE);
        if supply != want {
            self.violate(
                "validity (supply)",
                format!("replica {r} supply {supply} after {h}, genesis had {want}"),
            );
        }
        if honest {
            match self.agreed_state.get(&h) {
                Some(prev) if *prev != digest => {
                    let detail = format!(
                        "replica {r} reached state {digest} after {h}, another honest replica {prev}"
                    );
                    self.violate("agreement (state)", detail);
                    return;
                }
                Some(_) => {}
                None => {
                    self.agreed_state.insert(h, digest);
                }
            }
        }
        let rep = &mut self.replicas[r];
        let Some(engine) = rep.engine.as_mut() else {
            return;
        };
        // Reclassification as the node does it: applied, or `classify` against the
        // sender's next nonce in executed state plus blocks in flight (dead txs leave).
        let ledger = &rep.ledger;
        let pending = engine.pending();
        let outcomes: Vec<(TxHash, TxOutcome)> = engine
            .pending_of(&senders)
            .into_iter()
            .map(|(hash, sender, nonce)| {
                let o = if matches!(ledger.tx_location(&hash), Ok(Some(_))) {
                    TxOutcome::Applied
                } else {
                    match ledger.account(&sender) {
                        Ok(Some(a)) => {
                            match classify_in_flight(
                                a.nonce,
                                pending.next_nonce(&sender, a.nonce),
                                nonce,
                            ) {
                                Class::Executable => TxOutcome::Reclassified(TxClass::Executable),
                                Class::Gapped => TxOutcome::Reclassified(TxClass::Gapped),
                                Class::Dead => TxOutcome::Dropped,
                            }
                        }
                        _ => TxOutcome::Dropped,
                    }
                };
                (hash, o)
            })
            .collect();
        engine.on_executed(self.now, h, digest, &outcomes);
    }

    /// Records how a newly committed block's timestamp relates to the chain before it
    /// and to replica r's clock (`Outcome::non_monotonic_timestamps`, `max_timestamp_lead_ms`).
    fn observe_timestamp(&mut self, r: usize, block: &Block) {
        if block.is_null() {
            return;
        }
        let ts = block.header.timestamp_ms;
        let before = self.replicas[r]
            .chain
            .iter()
            .rev()
            .find(|cb| !cb.block.is_null())
            .map(|cb| cb.block.header.timestamp_ms);
        if before.is_some_and(|b| ts <= b) {
            self.out.non_monotonic_timestamps += 1;
        }
        let lead = ts.saturating_sub(self.unix(r));
        self.out.max_timestamp_lead_ms = self.out.max_timestamp_lead_ms.max(lead);
    }

    /// Checker 7: every certificate an honest replica persists or acts on verifies
    /// against the validator set (q distinct signers, q−1 backups for a prepared one,
    /// matching the block it certifies).
    fn check_certificate<E: fmt::Display>(
        &mut self,
        r: usize,
        kind: &str,
        height: Height,
        checked: Result<(), E>,
    ) {
        if let (true, Err(e)) = (self.honest(r), checked) {
            self.violate(
                "certificates",
                format!(
                    "replica {r} holds a {kind} certificate at {height} that does not verify: {e}"
                ),
            );
        }
    }

    /// Checker 3: what an honest replica sends of its own is durable first (DESIGN.md,
    /// "Durability before sending"): the record a restart rebuilds it from is already in
    /// its durable state when the message leaves, whatever the drain's grouping.
    fn check_durable(&mut self, r: usize, m: &Message) {
        let me = ReplicaId(r as u16);
        let durable = &self.replicas[r].durable;
        let get = |k: DurableKey| durable.get(&k.to_bytes());
        let nv_view = match get(DurableKey::NewViewAccepted) {
            Some(DurableEntry::NewViewAccepted(nv)) => Some(nv.view),
            _ => None,
        };
        let missing = match m {
            Message::ViewChange(vc) if vc.replica == me => match get(DurableKey::ViewChangeSent) {
                Some(DurableEntry::ViewChangeSent { view }) if *view >= vc.new_view => None,
                _ => Some(format!("VIEW-CHANGE({})", vc.new_view)),
            },
            Message::NewView(nv) if self.vs.primary(nv.view) == me => {
                (nv_view < Some(nv.view)).then(|| format!("NEW-VIEW({})", nv.view))
            }
            Message::Proposal(p) if self.vs.primary(p.pre_prepare.view) == me => {
                let (view, height) = (p.pre_prepare.view, p.pre_prepare.height);
                let fresh = get(DurableKey::PrePrepareSent { height, view }).is_some();
                let in_o = match get(DurableKey::NewViewAccepted) {
                    Some(DurableEntry::NewViewAccepted(nv)) => nv
                        .pre_prepares
                        .iter()
                        .any(|x| x.value == p.pre_prepare.value),
                    _ => false,
                };
                (!fresh && !in_o).then(|| format!("PRE-PREPARE({view}, {height})"))
            }
            Message::Prepare(p) if p.replica == me => {
                let key = DurableKey::PrepareSent {
                    height: p.height,
                    view: p.view,
                };
                get(key)
                    .is_none()
                    .then(|| format!("PREPARE({}, {})", p.view, p.height))
            }
            Message::Commit(c) if c.replica == me => {
                match get(DurableKey::Prepared { height: c.height }) {
                    Some(DurableEntry::Prepared(pc)) if pc.view() >= c.view => None,
                    _ => Some(format!("COMMIT({}, {})", c.view, c.height)),
                }
            }
            _ => None,
        };
        if let Some(what) = missing {
            self.violate(
                "durable before send",
                format!("replica {r} sent {what} before its record was durable"),
            );
        }
    }

    /// Checkers 4 and 8 (one identity): no honest identity signs two digests for one
    /// (kind, view, height) or two state digests for one CHECKPOINT height, nor votes in
    /// a view below one it sent a VIEW-CHANGE for (`stele_consensus::history`, which the
    /// power-loss tests run over a real validator's messages too).
    fn check_signed(&mut self, r: usize, m: &Message) {
        if !self.honest(r) {
            return;
        }
        self.check_durable(r, m);
        let me = ReplicaId(r as u16);
        let found = self.replicas[r].history.record(me, &self.vs, m);
        for c in found {
            let check = match c {
                Contradiction::TwoDigests { .. } => "no equivocation",
                Contradiction::VoteInLeftView { .. } => "no vote in a left view",
                Contradiction::TwoCheckpoints { .. } => "checkpoint equivocation",
            };
            self.violate(check, format!("replica {r} {c}"));
        }
    }

    /// A Byzantine replica's engine runs honestly; `stele_consensus::byzantine` says what
    /// leaves it instead (the colluders share `self.collusion`). A BadVotes replica also
    /// sends frames that do not decode: garbage below the message layer.
    fn byzantine_send(&mut self, r: usize, b: Behaviour, to: Option<usize>, m: Message) {
        let me = ReplicaId(r as u16);
        let signer = self.replicas[r].signer.clone();
        let trace = match (&m, self.trace) {
            (Message::Proposal(p), true) => Some((p.pre_prepare.view, p.pre_prepare.height)),
            _ => None,
        };
        let out = byzantine::outgoing_colluding(
            &b,
            &mut self.collusion,
            me,
            signer.as_ref(),
            &self.vs,
            to.map(|t| ReplicaId(t as u16)),
            m,
        );
        if let Some((view, height)) = trace {
            if let Some((x, y)) = self.collusion.split(view, height) {
                eprintln!(
                    "{:>6} ms  r{r} equivocates at ({view}, {height}): {x:?} / {y:?}",
                    self.now
                );
            }
        }
        for (to, msg) in out {
            self.send(r, to.index(), &msg);
        }
        if b == Behaviour::BadVotes {
            let garbage: Vec<u8> = (0..self.rng.gen_range(1..64))
                .map(|_| self.rng.gen())
                .collect();
            for to in 0..self.sc.n {
                if to != r {
                    self.push(
                        self.now + 1,
                        Event::Net {
                            from: r,
                            to,
                            bytes: garbage.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Checker 8: no honest replica signs CHECKPOINTs with two state digests for one
    /// height, and honest replicas' CHECKPOINTs for a height carry one digest (a
    /// divergent state would otherwise show only when a certificate fails to form).
    fn check_checkpoint(&mut self, r: usize, m: &Message) {
        let Message::Checkpoint(c) = m else { return };
        if !self.honest(r) || c.replica != ReplicaId(r as u16) {
            return;
        }
        let (height, digest) = (c.height, c.state_digest);
        match self.agreed_checkpoints.get(&height) {
            Some(&(other, prev)) if prev != digest => self.violate(
                "checkpoint equivocation (two honest digests)",
                format!(
                    "replica {r} signed CHECKPOINT({height}) for {digest}, honest replica {other} for {prev}"
                ),
            ),
            Some(_) => {}
            None => {
                self.agreed_checkpoints.insert(height, (r, digest));
            }
        }
    }

    /// `Sabotage` on what replica r sends: the message to send instead of `m`, and one
    /// to send after it.
    fn sabotage_send(&self, s: Sabotage, r: usize, m: Message) -> (Message, Option<Message>) {
        match s {
            Sabotage::SecondVote { replica, kind } if replica == r && m.kind() == kind => {
                let second = self.resigned(r, &m);
                (m, second)
            }
            Sabotage::WrongCheckpointDigest { replica } if replica == r => {
                match (&m, self.resigned(r, &m)) {
                    (Message::Checkpoint(_), Some(wrong)) => (wrong, None),
                    _ => (m, None),
                }
            }
            _ => (m, None),
        }
    }

    /// Replica r's own PREPARE, COMMIT or CHECKPOINT `m` signed again over
    /// `sabotage_digest()`; `None` for other messages and for one that already is.
    fn resigned(&self, r: usize, m: &Message) -> Option<Message> {
        let me = ReplicaId(r as u16);
        let d = sabotage_digest();
        let signer = self.replicas[r].signer.as_ref();
        let chain = self.vs.chain();
        match m {
            Message::Prepare(p) if p.replica == me && p.digest != d => {
                let v = Prepare {
                    digest: d,
                    ..p.value.clone()
                };
                Some(Message::Prepare(Signed::sign(v, chain, signer)))
            }
            Message::Commit(c) if c.replica == me && c.digest != d => {
                let v = Commit {
                    digest: d,
                    ..c.value.clone()
                };
                Some(Message::Commit(Signed::sign(v, chain, signer)))
            }
            Message::Checkpoint(c) if c.replica == me && c.state_digest != d => {
                let v = Checkpoint {
                    state_digest: d,
                    ..c.value.clone()
                };
                Some(Message::Checkpoint(Signed::sign(v, chain, signer)))
            }
            _ => None,
        }
    }

    /// `Sabotage` on a restart of replica r: what it is restored from, damaged.
    fn sabotage_restart(
        &self,
        s: Sabotage,
        r: usize,
        chain: &mut ChainState,
        durable: &mut Vec<DurableEntry>,
    ) {
        match s {
            Sabotage::RestartLosesBlocks { replica, blocks } if replica == r => {
                let top = Height(chain.executed.0.saturating_sub(blocks));
                chain.executed = top;
                chain.state_digest = self.replicas[r].digests[top.0 as usize];
                chain.recent.retain(|cb| cb.block.height() <= top);
                chain.checkpoint_digests.retain(|(h, _)| *h <= top);
            }
            Sabotage::RestartLosesViewChanges { replica } if replica == r => {
                durable.retain(|e| {
                    !matches!(
                        e,
                        DurableEntry::ViewChangeSent { .. } | DurableEntry::NewViewAccepted(_)
                    )
                });
            }
            _ => {}
        }
    }

    /// Checker 5: logs, buffers and queues within their bounds.
    fn check_bounds(&mut self) {
        for r in 0..self.sc.n {
            let Some(e) = self.replicas[r].engine.as_ref() else {
                continue;
            };
            let (slots, prepared, ckpts, buffered) = e.footprint();
            let l = e.window() as usize;
            let cap = e.buffer_cap() * self.sc.n;
            if slots > l
                || prepared > l
                || ckpts > l
                || buffered > cap
                || e.pending().len() > 10_000
            {
                let detail = format!("replica {r}: slots {slots} prepared {prepared} checkpoints {ckpts} buffered {buffered}");
                self.violate("bounded memory", detail);
            }
        }
    }

    /// Checker 6: after the faults stop, every honest replica reaches the same height,
    /// every contiguous client tx is applied everywhere, and later heights carry client txs.
    fn check_liveness(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let byz = self.sc.byzantine.len();
        if byz > self.f() || self.sc.endless {
            return;
        }
        if let Err(detail) = self.all_applied() {
            self.violate("liveness", detail);
            return;
        }
        let honest: Vec<usize> = (0..self.sc.n).filter(|r| self.honest(*r)).collect();
        self.out.applied_txs = self.replicas[honest[0]].ledger.applied_count();
        self.out.heights_after_quiet_with_client_tx = self.quiet_heights.len() as u64;
        // The budget after the faults stop: client load went on past quiet_at, so the
        // healed cluster must have committed heights carrying it, the first of them
        // within the liveness bound.
        let load_after_quiet = self
            .expected
            .iter()
            .any(|e| e.submitted.is_some_and(|t| t >= self.sc.quiet_at));
        let first = self.out.first_client_height_after_quiet_ms;
        if load_after_quiet
            && (self.quiet_heights.is_empty()
                || first.is_none_or(|t| t > self.sc.quiet_at + self.liveness_bound()))
        {
            self.violate(
                "liveness (heights after the faults stop)",
                format!(
                    "{} heights with client txs after quiet_at {} ms, the first at {first:?} ms (budget {} ms)",
                    self.quiet_heights.len(),
                    self.sc.quiet_at,
                    self.liveness_bound()
                ),
            );
        }
    }
}

impl Sim {
    /// Checker 6 on the way: a contiguous tx submitted at t (to q replicas, so held by
    /// f+1 honest ones) must be applied at every honest replica by
    /// max(t, quiet_at) + 4·T_max + 10 s, whatever the Byzantine replicas go on doing.
    fn overdue(&self, now: u64) -> Result<(), String> {
        if self.sc.byzantine.len() > self.f() || self.sc.endless {
            return Ok(());
        }
        let bound = self.liveness_bound();
        let honest: Vec<usize> = (0..self.sc.n).filter(|r| self.honest(*r)).collect();
        for e in &self.expected {
            let Some(at) = e.submitted else { continue };
            let deadline = at.max(self.sc.quiet_at) + bound;
            if deadline > now {
                continue;
            }
            if let Some(r) = honest
                .iter()
                .find(|r| !self.applied(**r, &e.tx) && !self.applied(**r, &e.twin))
            {
                return Err(format!(
                    "replica {r} did not apply nonce {} of client {} (submitted at {at} ms) by {deadline} ms",
                    e.nonce, e.client
                ));
            }
        }
        Ok(())
    }

    /// Whether every honest replica applied every contiguous client tx (or its twin).
    fn all_applied(&self) -> Result<(), String> {
        let honest: Vec<usize> = (0..self.sc.n).filter(|r| self.honest(*r)).collect();
        for &Expected {
            client: c,
            nonce,
            tx,
            twin,
            ..
        } in &self.expected
        {
            for &r in &honest {
                if !self.applied(r, &tx) && !self.applied(r, &twin) {
                    return Err(format!(
                        "replica {r} never applied nonce {nonce} of client {c} (height {}, view {:?}{})",
                        self.replicas[r].chain.len(),
                        self.replicas[r].engine.as_ref().map(|e| (e.view(), e.is_active())),
                        if self.replicas[r].gate.is_some() { ", recovering" } else { "" },
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether V holds, for one height, prepared certificates from two views for two digests
/// (the history in which O must take the higher view).
fn conflicting_certificates(nv: &NewView) -> bool {
    let mut seen: BTreeMap<Height, (ViewNumber, Digest)> = BTreeMap::new();
    nv.view_changes.iter().flat_map(|vc| &vc.prepared).any(|c| {
        match seen.insert(c.height(), (c.view(), c.digest())) {
            Some((v, d)) => v != c.view() && d != c.digest(),
            None => false,
        }
    })
}

fn seed(kind: u8, i: usize) -> [u8; 32] {
    let mut s = [kind; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}
