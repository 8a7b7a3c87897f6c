//! The simulation loop, the fault model and the checkers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_consensus::{Action, ChainState, Config, Engine, Halt, TxClass, TxOutcome, Verifier};
use stele_crypto::sim::{MacScheme, MacSigner};
use stele_crypto::{ChainId, Digest, Ed25519, KeyPair, PublicKey, Scheme, Signed, Signer};
use stele_types::durable::DurableKey;
use stele_types::genesis::{GenesisAccount, Params};
use stele_types::tx::sign_tx;
use stele_types::{
    codec, max_frame_len, tx_hash, Amount, Block, CommittedBlock, DurableEntry, Genesis, Height,
    Message, Nonce, Op, PrePrepare, Proposal, ReplicaId, Transaction, TxBody, TxHash,
    ValidatorInfo, ValidatorSet, ViewNumber,
};

use crate::ledger::MiniLedger;

const GENESIS_MS: u64 = 1_700_000_000_000;

type Keys = Vec<Arc<dyn Signer>>;

/// A Byzantine behaviour of one replica, played by the harness with that replica's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byzantine {
    /// Says nothing at all.
    Silent,
    /// As primary, sends block X to some backups and block Y to the others.
    Equivocate,
    /// Sends PREPAREs and COMMITs for random digests, plus garbage frames.
    BadVotes,
    /// As the new primary, sends a NEW-VIEW whose O differs from what V implies.
    BadNewView,
    /// Signs PREPARE and COMMIT for every proposal it sees, conflicting or not: with an
    /// equivocating primary this is f+1 colluders, beyond what PBFT tolerates.
    Accomplice,
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
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
    /// (from, to, group) partitions: the group is cut from the rest.
    pub partitions: Vec<(u64, u64, Vec<usize>)>,
    /// Crash every replica at this time and restart them all 500 ms later.
    pub whole_crash: Option<u64>,
    pub clients: usize,
    pub txs_per_client: usize,
    /// Also submit gapped txs and same-nonce pairs.
    pub tricky_txs: bool,
    pub byzantine: Vec<(usize, Byzantine)>,
    pub params: Params,
}

impl Scenario {
    /// A calm run: no faults.
    pub fn calm(seed: u64, n: usize) -> Scenario {
        Scenario {
            seed,
            n,
            real_crypto: false,
            loss: 0.0,
            dup: 0.0,
            max_delay: 20,
            quiet_at: 0,
            crashes: vec![],
            partitions: vec![],
            whole_crash: None,
            clients: 4,
            txs_per_client: 20,
            tricky_txs: false,
            byzantine: vec![],
            params: sim_params(),
        }
    }

    /// The seed's random mix of faults.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_e1e5);
        let n = [4, 4, 4, 5, 7, 10][rng.gen_range(0..6)];
        let f = (n - 1) / 3;
        let mut s = Scenario::calm(seed, n);
        s.real_crypto = seed % 10 == 0;
        s.quiet_at = rng.gen_range(2_000..8_000);
        s.loss = [0.0, 0.0, 0.05, 0.2][rng.gen_range(0..4)];
        s.dup = [0.0, 0.05, 0.2][rng.gen_range(0..3)];
        s.max_delay = [10, 30, 100][rng.gen_range(0..3)];
        s.tricky_txs = rng.gen_bool(0.5);
        s.clients = rng.gen_range(2..6);
        s.txs_per_client = rng.gen_range(5..30);
        let mut byz = 0;
        if rng.gen_bool(0.3) {
            let b = [
                Byzantine::Silent,
                Byzantine::Equivocate,
                Byzantine::BadVotes,
            ][rng.gen_range(0..3)];
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
        s
    }

    /// The command that replays this seed.
    pub fn replay_command(&self) -> String {
        format!(
            "SIM_SEED={} cargo test -p stele-sim --test seeds replay -- --nocapture",
            self.seed
        )
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

/// A broken rule, with the seed that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub at_ms: u64,
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
}

enum Event {
    Net {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Submit {
        client: usize,
        nonce: u64,
        copy: u8,
    },
    Crash {
        r: usize,
        down: u64,
    },
    Restart {
        r: usize,
    },
}

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
    ledger: MiniLedger,
    byz: Option<Byzantine>,
    clock_offset: i64,
    /// Highest VIEW-CHANGE view this identity ever sent (checker 4).
    max_vc_sent: ViewNumber,
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
    /// (replica, kind, view, height) → digest signed: checker 4.
    votes: HashMap<(usize, u8, ViewNumber, Height), Digest>,
    out: Outcome,
    frame_limit: usize,
    violation: Option<Violation>,
    quiet_heights: HashSet<u64>,
    next_done_check: u64,
    /// Equivocated (view, height) → (digest sent to even ids, digest sent to odd ids).
    split: HashMap<(ViewNumber, Height), (Digest, Digest)>,
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
                    balance: Amount(1_000_000),
                })
                .collect(),
            params: sc.params.clone(),
        };
        if let Err((field, problem)) = genesis.validate() {
            panic!("simulator genesis invalid: {field}: {problem}");
        }
        let ledger = MiniLedger::genesis(&genesis);
        let replicas = signers
            .into_iter()
            .enumerate()
            .map(|(i, signer)| Replica {
                engine: None,
                signer,
                durable: BTreeMap::new(),
                chain: Vec::new(),
                digests: vec![ledger.digest],
                ledger: ledger.clone(),
                byz: sc.byzantine.iter().find(|(b, _)| *b == i).map(|(_, k)| *k),
                clock_offset: rng.gen_range(-50..50),
                max_vc_sent: ViewNumber(0),
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
            votes: HashMap::new(),
            out: Outcome::default(),
            frame_limit,
            violation: None,
            quiet_heights: HashSet::new(),
            next_done_check: 0,
            split: HashMap::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
        };
        for r in 0..n {
            sim.start(r);
        }
        sim.schedule_load();
        sim.schedule_faults();
        sim
    }

    fn end(&self) -> u64 {
        self.sc.quiet_at + 4 * self.sc.params.max_view_timeout_ms + 10_000
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_load(&mut self) {
        // Clients send contiguous nonces, spread over the run; more after quiet_at so
        // that progress after the faults is visible.
        let horizon = self.sc.quiet_at + 3_000;
        for c in 0..self.sc.clients {
            let total = self.sc.txs_per_client + 30;
            for k in 0..total {
                let at = (k as u64 * horizon) / total as u64 + self.rng.gen_range(0..40);
                self.push(
                    at,
                    Event::Submit {
                        client: c,
                        nonce: k as u64,
                        copy: 0,
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
                            copy: 1,
                        },
                    );
                }
            }
            if self.sc.tricky_txs {
                // A gapped tx far ahead that never becomes executable.
                let t = self.rng.gen_range(0..horizon);
                self.push(
                    t,
                    Event::Submit {
                        client: c,
                        nonce: 1_000 + c as u64,
                        copy: 0,
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

    /// Starts (or restarts) replica r from its durable state and committed chain only.
    fn start(&mut self, r: usize) {
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
        let chain = ChainState {
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
        let durable: Vec<DurableEntry> = rep.durable.values().cloned().collect();
        let engine = Engine::restore(self.config(r), durable, chain, self.now);
        self.replicas[r].engine = Some(engine);
        self.drive(r);
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
                if t > self.sc.quiet_at + 3_100 && self.all_applied().is_ok() {
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
            Event::Net { from, to, bytes } => self.deliver(from, to, bytes),
            Event::Submit {
                client,
                nonce,
                copy,
            } => self.submit(client, nonce, copy),
            Event::Crash { r, down } => {
                if self.replicas[r].engine.take().is_some() {
                    self.push(self.now + down, Event::Restart { r });
                }
            }
            Event::Restart { r } => {
                if self.replicas[r].engine.is_none() {
                    let before = self.replicas[r].chain.len();
                    self.start(r);
                    let after = self.replicas[r]
                        .engine
                        .as_ref()
                        .map_or(0, |e| e.delivered().0 as usize);
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

    fn client_tx(&self, client: usize, nonce: u64, copy: u8) -> Transaction {
        let k = &self.client_keys[client];
        let to = self.client_keys[(client + 1) % self.client_keys.len()].public_key();
        let amount = if copy == 1 { 2 } else { 1 };
        sign_tx(
            TxBody {
                chain_id: chain_id(),
                sender: k.public_key(),
                nonce: Nonce(nonce),
                op: Op::Transfer {
                    to,
                    amount: Amount(amount),
                },
            },
            k.as_ref(),
        )
    }

    fn submit(&mut self, client: usize, nonce: u64, copy: u8) {
        let tx = self.client_tx(client, nonce, copy);
        let h = tx_hash(&tx);
        self.submitted.insert(h);
        // The client library sends to q validators; if the tx is not applied within a few
        // seconds it asks again (as `stele submit` does when receipts stay missing).
        let q = self.sc.n - self.f();
        let mut targets: Vec<usize> = (0..self.sc.n).collect();
        for i in (1..targets.len()).rev() {
            let j = self.rng.gen_range(0..=i);
            targets.swap(i, j);
        }
        targets.truncate(q);
        for r in targets {
            self.admit(r, tx.clone(), true);
        }
        if nonce < 1_000 && copy == 0 {
            self.push(
                self.now + 3_000,
                Event::Submit {
                    client,
                    nonce,
                    copy: 2,
                },
            );
        }
        if copy == 2 {
            // A retry: stop once every honest replica applied it.
            let done = (0..self.sc.n)
                .filter(|r| self.honest(*r))
                .all(|r| self.replicas[r].ledger.applied.contains_key(&h));
            if !done && self.now < self.end() {
                self.push(
                    self.now + 3_000,
                    Event::Submit {
                        client,
                        nonce,
                        copy: 2,
                    },
                );
            }
        }
    }

    /// The node's admission path: verify, classify against executed state, hand over.
    fn admit(&mut self, r: usize, tx: Transaction, from_client: bool) {
        if self.replicas[r].engine.is_none() {
            return;
        }
        let verifier = Verifier {
            validators: &self.vs,
            genesis: &self.genesis,
            scheme: self.scheme.as_ref(),
        };
        let Ok(mut v) = verifier.check_txs(std::slice::from_ref(&tx)) else {
            return;
        };
        let Some(verified) = v.pop() else { return };
        let rep = &self.replicas[r];
        if rep.ledger.applied.contains_key(&tx_hash(&tx)) {
            return;
        }
        let Some(next) = rep.ledger.nonce_of(&tx.sender) else {
            return;
        };
        let g = self.sc.params.nonce_window;
        let class = if tx.nonce == next {
            TxClass::Executable
        } else if tx.nonce > next && tx.nonce.0 < next.0 + g {
            TxClass::Gapped
        } else {
            return;
        };
        let (now, unix) = (self.now, self.unix(r));
        if let Some(e) = self.replicas[r].engine.as_mut() {
            e.on_request(now, unix, verified, class, from_client);
        }
        self.drive(r);
    }

    fn send(&mut self, from: usize, to: usize, msg: &Message) {
        if from == to {
            return;
        }
        let quiet = self.now >= self.sc.quiet_at;
        if !quiet {
            for (a, b, group) in &self.sc.partitions {
                if self.now >= *a && self.now < *b && (group.contains(&from) != group.contains(&to))
                {
                    return;
                }
            }
            if self.rng.gen_bool(self.sc.loss) {
                return;
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
            let delay = 1 + self.rng.gen_range(0..self.sc.max_delay.max(1));
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
        let verifier = Verifier {
            validators: &self.vs,
            genesis: &self.genesis,
            scheme: self.scheme.as_ref(),
        };
        let verified = match verifier.verify(ReplicaId(from as u16), msg) {
            Ok(v) => v,
            Err(e) => {
                *self.out.rejected.entry(e.label()).or_default() += 1;
                return;
            }
        };
        if let stele_consensus::Inbound::Relay(txs) = verified.inbound() {
            for tx in txs.clone() {
                self.admit(to, tx.into_signed(), false);
            }
            return;
        }
        let (now, unix) = (self.now, self.unix(to));
        if let Some(e) = self.replicas[to].engine.as_mut() {
            e.on_message(now, unix, ReplicaId(from as u16), unix, verified);
        }
        self.drive(to);
    }

    /// Drains and performs replica r's actions until none are left.
    fn drive(&mut self, r: usize) {
        loop {
            let Some(actions) = self.replicas[r].engine.as_mut().map(Engine::drain) else {
                return;
            };
            if actions.is_empty() {
                return;
            }
            for a in actions {
                self.perform(r, a);
            }
        }
    }

    fn perform(&mut self, r: usize, a: Action) {
        let n = self.sc.n;
        match a {
            Action::Persist(entries) => {
                for e in entries {
                    self.replicas[r].durable.insert(e.key().to_bytes(), e);
                }
            }
            Action::PersistCheckpoint(c) => {
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
                self.check_signed(r, &m);
                if self.byzantine_filter(r, &m) {
                    self.send(r, to.index(), &m);
                }
            }
            Action::Broadcast(m) => {
                self.check_signed(r, &m);
                if self.byzantine_filter(r, &m) {
                    for to in 0..n {
                        self.send(r, to, &m);
                    }
                }
            }
            Action::Deliver { block, certificate } => self.execute(r, block, certificate),
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
                    let m = Engine::blocks_batch(blocks);
                    self.send(r, to.index(), &m);
                }
            }
            Action::Evidence(_) => self.out.evidence += 1,
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

    fn execute(&mut self, r: usize, block: Block, certificate: stele_types::CommitCertificate) {
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
                }
            }
            for tx in &block.txs {
                if !self.submitted.contains(&tx_hash(tx)) {
                    self.violate(
                        "validity",
                        format!("replica {r} committed a tx no client submitted at {h}"),
                    );
                }
            }
        }
        let rep = &mut self.replicas[r];
        assert_eq!(
            rep.chain.len() as u64 + 1,
            h.0,
            "deliveries are in height order"
        );
        let results = rep.ledger.execute(&block);
        let applied_client_tx = results.iter().any(|r| r.is_applied());
        rep.digests.push(rep.ledger.digest);
        let senders = MiniLedger::senders(&block);
        rep.chain.push(CommittedBlock { block, certificate });
        if self.now >= self.sc.quiet_at && applied_client_tx {
            self.quiet_heights.insert(h.0);
        }
        let digest = rep.ledger.digest;
        let Some(engine) = rep.engine.as_mut() else {
            return;
        };
        let outcomes: Vec<(TxHash, TxOutcome)> = engine
            .pending_of(&senders)
            .into_iter()
            .map(|(hash, sender, nonce)| {
                let o = if rep.ledger.applied.contains_key(&hash) {
                    TxOutcome::Applied
                } else {
                    match rep.ledger.nonce_of(&sender) {
                        Some(next) if nonce == next => TxOutcome::Reclassified(TxClass::Executable),
                        Some(next) if nonce > next => TxOutcome::Reclassified(TxClass::Gapped),
                        _ => TxOutcome::Dropped,
                    }
                };
                (hash, o)
            })
            .collect();
        engine.on_executed(self.now, h, digest, &outcomes);
        // Supply is conserved by transfers.
        let supply = rep.ledger.supply();
        if supply != self.sc.clients as u128 * 1_000_000 {
            self.violate("validity (supply)", format!("replica {r} supply {supply}"));
        }
    }

    /// Checker 4: no honest identity signs two digests for one (kind, view, height), nor
    /// votes in a view below one it sent a VIEW-CHANGE for.
    fn check_signed(&mut self, r: usize, m: &Message) {
        if !self.honest(r) {
            return;
        }
        let me = ReplicaId(r as u16);
        let votes: Vec<(u8, ViewNumber, Height, Digest)> = match m {
            Message::Proposal(p) if self.vs.primary(p.pre_prepare.view) == me => {
                vec![(
                    0,
                    p.pre_prepare.view,
                    p.pre_prepare.height,
                    p.pre_prepare.digest,
                )]
            }
            Message::NewView(nv) if self.vs.primary(nv.view) == me => nv
                .pre_prepares
                .iter()
                .map(|p| (0, p.view, p.height, p.digest))
                .collect(),
            Message::Prepare(p) if p.replica == me => vec![(1, p.view, p.height, p.digest)],
            Message::Commit(c) if c.replica == me => vec![(2, c.view, c.height, c.digest)],
            Message::ViewChange(vc) if vc.replica == me => {
                let rep = &mut self.replicas[r];
                rep.max_vc_sent = rep.max_vc_sent.max(vc.new_view);
                vec![]
            }
            _ => vec![],
        };
        for (kind, view, height, digest) in votes {
            if view < self.replicas[r].max_vc_sent && kind != 0 {
                self.violate(
                    "no vote in a left view",
                    format!(
                        "replica {r} voted in {view} after VIEW-CHANGE({})",
                        self.replicas[r].max_vc_sent
                    ),
                );
            }
            match self.votes.insert((r, kind, view, height), digest) {
                Some(prev) if prev != digest => {
                    self.violate("no equivocation", format!("replica {r} signed kind {kind} ({view}, {height}) for {prev} and {digest}"));
                }
                _ => {}
            }
        }
    }

    /// A Byzantine replica's engine runs honestly; the harness changes what leaves it.
    /// Returns whether to send the message as is.
    fn byzantine_filter(&mut self, r: usize, m: &Message) -> bool {
        let Some(b) = self.replicas[r].byz else {
            return true;
        };
        if self.fan_out_split_votes(r, m) {
            return false;
        }
        match b {
            Byzantine::Silent => false,
            Byzantine::Equivocate => {
                if let Message::Proposal(p) = m {
                    // Send the real block to half, a conflicting one to the others.
                    let mut other = p.body.clone();
                    other.txs.pop();
                    let other = Block::new(
                        other.header.height,
                        other.header.timestamp_ms + 1,
                        other.txs,
                    );
                    let pp = Signed::sign(
                        PrePrepare {
                            view: p.pre_prepare.view,
                            height: p.pre_prepare.height,
                            digest: other.digest(),
                        },
                        &chain_id(),
                        self.replicas[r].signer.as_ref(),
                    );
                    let (view, height, x) = (
                        p.pre_prepare.view,
                        p.pre_prepare.height,
                        p.pre_prepare.digest,
                    );
                    if self.trace {
                        eprintln!(
                            "{:>6} ms  r{r} equivocates at {height}: {x:?} / {:?}",
                            self.now,
                            other.digest()
                        );
                    }
                    self.split.insert((view, height), (x, other.digest()));
                    let twin = Message::Proposal(Proposal {
                        pre_prepare: pp,
                        body: other,
                    });
                    for to in 0..self.sc.n {
                        let msg = if to % 2 == 0 { m } else { &twin };
                        self.send(r, to, msg);
                        if !self.honest(to) {
                            // Fellow colluders see both.
                            let other = if to % 2 == 0 { &twin } else { m };
                            self.send(r, to, other);
                        }
                    }
                    return false;
                }
                true
            }
            // Votes at equivocated heights are fanned out above; the rest as the engine says.
            Byzantine::Accomplice => true,
            Byzantine::BadNewView => {
                if let Message::NewView(nv) = m {
                    let signer = self.replicas[r].signer.clone();
                    let mut bad = nv.value.clone();
                    let h = bad
                        .pre_prepares
                        .last()
                        .map_or(Height(1), |p| p.height.next());
                    // One entry more than V implies, for a block nobody prepared.
                    bad.pre_prepares.push(Signed::sign(
                        PrePrepare {
                            view: bad.view,
                            height: h,
                            digest: Digest::of(b"forged"),
                        },
                        &chain_id(),
                        signer.as_ref(),
                    ));
                    let forged = Message::NewView(Signed::sign(bad, &chain_id(), signer.as_ref()));
                    for to in 0..self.sc.n {
                        self.send(r, to, &forged);
                    }
                    return false;
                }
                // It does not retransmit its real NEW-VIEW either.
                true
            }
            Byzantine::BadVotes => {
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
                if let Message::Commit(c) = m {
                    let mut bad = c.value.clone();
                    bad.digest = Digest::of(&self.rng.gen::<[u8; 8]>());
                    let s = Signed::sign(bad, &chain_id(), self.replicas[r].signer.as_ref());
                    for to in 0..self.sc.n {
                        self.send(r, to, &Message::Commit(s.clone()));
                    }
                    return false;
                }
                true
            }
        }
    }

    /// Colluders vote, at an equivocated (view, height), for X towards the replicas that
    /// got X and for Y towards those that got Y. Returns whether it took the message.
    fn fan_out_split_votes(&mut self, r: usize, m: &Message) -> bool {
        let (kind, view, height, digest) = match m {
            Message::Prepare(p) => (1, p.view, p.height, p.digest),
            Message::Commit(c) => (2, c.view, c.height, c.digest),
            _ => return false,
        };
        let Some((x, y)) = self.split.get(&(view, height)).copied() else {
            return false;
        };
        let me = ReplicaId(r as u16);
        let signer = self.replicas[r].signer.clone();
        for to in 0..self.sc.n {
            let want = if to % 2 == 0 { x } else { y };
            let msg = if want == digest {
                m.clone()
            } else if kind == 1 {
                Message::Prepare(Signed::sign(
                    stele_types::Prepare {
                        view,
                        height,
                        digest: want,
                        replica: me,
                    },
                    &chain_id(),
                    signer.as_ref(),
                ))
            } else {
                Message::Commit(Signed::sign(
                    stele_types::Commit {
                        view,
                        height,
                        digest: want,
                        replica: me,
                    },
                    &chain_id(),
                    signer.as_ref(),
                ))
            };
            self.send(r, to, &msg);
        }
        true
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
        if byz > self.f() {
            return;
        }
        if let Err(detail) = self.all_applied() {
            self.violate("liveness", detail);
            return;
        }
        let honest: Vec<usize> = (0..self.sc.n).filter(|r| self.honest(*r)).collect();
        self.out.applied_txs = self.replicas[honest[0]].ledger.applied.len();
        self.out.heights_after_quiet_with_client_tx = self.quiet_heights.len() as u64;
    }
}

impl Sim {
    /// Whether every honest replica applied every contiguous client tx (or its twin).
    fn all_applied(&self) -> Result<(), String> {
        let honest: Vec<usize> = (0..self.sc.n).filter(|r| self.honest(*r)).collect();
        for c in 0..self.sc.clients {
            let total = self.sc.txs_per_client + 30;
            for nonce in 0..total as u64 {
                let tx = tx_hash(&self.client_tx(c, nonce, 0));
                let twin = tx_hash(&self.client_tx(c, nonce, 1));
                for &r in &honest {
                    let l = &self.replicas[r].ledger;
                    if !l.applied.contains_key(&tx) && !l.applied.contains_key(&twin) {
                        return Err(format!(
                            "replica {r} never applied nonce {nonce} of client {c} (height {}, view {:?})",
                            self.replicas[r].chain.len(),
                            self.replicas[r].engine.as_ref().map(|e| (e.view(), e.is_active()))
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn seed(kind: u8, i: usize) -> [u8; 32] {
    let mut s = [kind; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

#[allow(dead_code)]
fn _assert_public_key_is_copy(k: PublicKey) -> PublicKey {
    k
}
