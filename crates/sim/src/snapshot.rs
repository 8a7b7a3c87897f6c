//! Snapshot sync under faults (issue 24): the sans-IO [`SnapshotSync`] the node runs,
//! driven over a simulated network (latency, loss, crashed peers) against peers of which
//! up to all but one may be Byzantine in any of several ways. Deterministic per seed.
//!
//! The checker: a sync that completes holds exactly the honest state at that height
//! (every bucket, every entry), whatever the faulty peers sent; with at least one honest
//! peer that stays reachable it completes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_consensus::snapshot::{FetchFailure, Outcome, Request, SnapshotSync, SyncConfig};
use stele_crypto::{Digest, PublicKey};
use stele_types::snapshot::{ChunkRange, SnapshotChunk};
use stele_types::state_root::{self, Bucket, BucketTree};
use stele_types::{codec, Account, Amount, Height, Nonce, RecordKey, RecordValue};

/// The height the snapshot is at.
const HEIGHT: Height = Height(1024);

/// How a peer serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Serves the true chunks, over a lossy, slow link.
    Honest,
    /// Changes one balance in each chunk it sends.
    Liar,
    /// Serves another state's chunks with valid proofs for that state's root.
    OtherState,
    /// Swaps two sibling hashes in each proof.
    WrongProof,
    /// Sends the true chunk of another range.
    WrongRange,
    /// Never answers.
    Silent,
    /// Has no snapshot at this height (its checkpoint moved on, or never came).
    Stale,
    /// Calls every chunk too large.
    TooLarge,
    /// Answers the true chunk half the time and withholds the rest.
    Flaky,
}

const FAULTY: [Peer; 8] = [
    Peer::Liar,
    Peer::OtherState,
    Peer::WrongProof,
    Peer::WrongRange,
    Peer::Silent,
    Peer::Stale,
    Peer::TooLarge,
    Peer::Flaky,
];

/// A state and its tree: what a peer serves.
#[derive(Debug)]
pub struct Served {
    pub buckets: BTreeMap<u16, Bucket>,
    tree: BucketTree,
}

impl Served {
    /// A random state: accounts spread over all buckets, some crowded, some records.
    pub fn random(rng: &mut ChaCha8Rng, accounts: usize) -> Served {
        let mut acc = BTreeMap::new();
        let mut rec = BTreeMap::new();
        for _ in 0..accounts {
            let mut k: [u8; 32] = rng.gen();
            if rng.gen_bool(0.2) {
                // Crowd some buckets, so chunks differ in size.
                k[0] = 0x42;
                k[1] = rng.gen_range(0..64);
            }
            let key = PublicKey(k);
            acc.insert(
                key,
                Account {
                    balance: Amount(rng.gen_range(0..1_000_000)),
                    nonce: Nonce(rng.gen_range(0..50)),
                },
            );
            if rng.gen_bool(0.1) {
                rec.insert(
                    (key, RecordKey::new(vec![rng.gen()]).expect("short")),
                    RecordValue::new(rng.gen::<[u8; 8]>().to_vec()).expect("short"),
                );
            }
        }
        let buckets = state_root::buckets(&acc, &rec);
        let roots = buckets.iter().map(|(b, x)| (*b, x.root())).collect();
        Served {
            buckets,
            tree: BucketTree::new(&roots),
        }
    }

    pub fn root(&self) -> Digest {
        self.tree.root()
    }

    fn chunk(&self, range: ChunkRange) -> SnapshotChunk {
        SnapshotChunk::of(HEIGHT, range, &self.buckets, &self.tree).expect("valid range")
    }
}

/// One seed's setup.
#[derive(Debug, Clone)]
pub struct Setup {
    pub peers: Vec<Peer>,
    /// Per peer: one-way latency range (ms) and the chance an answer is lost.
    pub latency_ms: Vec<(u64, u64)>,
    pub loss: Vec<f64>,
    /// Honest peers that are down from the start until this time (ms).
    pub down_until: Vec<u64>,
    /// Largest chunk (encoded bytes) a peer sends before saying "too large".
    pub max_bytes: usize,
    pub accounts: usize,
}

impl Setup {
    /// A random setup with `honest` honest peers among `n`.
    pub fn random(rng: &mut ChaCha8Rng, n: usize, honest: usize) -> Setup {
        let mut peers: Vec<Peer> = (0..n)
            .map(|i| {
                if i < honest {
                    Peer::Honest
                } else {
                    FAULTY[rng.gen_range(0..FAULTY.len())]
                }
            })
            .collect();
        // Deterministic shuffle, so the honest ones are not always asked first.
        for i in (1..peers.len()).rev() {
            let j = rng.gen_range(0..=i);
            peers.swap(i, j);
        }
        Setup {
            latency_ms: (0..n)
                .map(|_| {
                    let lo = rng.gen_range(1..50);
                    (lo, lo + rng.gen_range(0..400))
                })
                .collect(),
            loss: (0..n).map(|_| rng.gen_range(0.0..0.3)).collect(),
            down_until: (0..n)
                .map(|_| {
                    if rng.gen_bool(0.3) {
                        rng.gen_range(0..30_000)
                    } else {
                        0
                    }
                })
                .collect(),
            max_bytes: rng.gen_range(8_000..60_000),
            accounts: rng.gen_range(0..4_000),
            peers,
        }
    }
}

/// What a run ended with.
#[derive(Debug)]
pub struct SyncRun {
    /// The state installed, if the sync completed.
    pub installed: Option<BTreeMap<u16, Bucket>>,
    pub honest: BTreeMap<u16, Bucket>,
    pub bad_chunks: u64,
    pub stalls: u64,
    pub elapsed_ms: u64,
    /// Whether an honest peer was ever judged faulty (it must never be).
    pub honest_judged_faulty: bool,
}

/// Runs one sync of `setup` from `seed`'s state over the simulated network.
pub fn run_sync(seed: u64, setup: &Setup) -> SyncRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let honest = Served::random(&mut rng, setup.accounts);
    let other = Served::random(&mut rng, setup.accounts.max(1));
    let mut sync = SnapshotSync::new(
        HEIGHT,
        honest.root(),
        0..setup.peers.len(),
        SyncConfig {
            timeout_ms: 2_000,
            give_up_ms: 40_000,
            max_chunk_bytes: setup.max_bytes,
            ..SyncConfig::default()
        },
    );
    // (arrival time, seq) → answer
    type Arrival = (usize, ChunkRange, Result<SnapshotChunk, FetchFailure>);
    // (The wire size of an answer is its encoding's.)
    let mut queue: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut arrivals: BTreeMap<(u64, u64), Arrival> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = 0u64;
    let mut flaky_turn = 0u64;
    let mut send = |now: u64,
                    reqs: Vec<Request<usize>>,
                    rng: &mut ChaCha8Rng,
                    queue: &mut BinaryHeap<Reverse<(u64, u64)>>,
                    arrivals: &mut BTreeMap<(u64, u64), Arrival>| {
        for r in reqs {
            let p = r.peer;
            let (lo, hi) = setup.latency_ms[p];
            let at = now + rng.gen_range(lo..=hi) * 2;
            let down = now < setup.down_until[p];
            let lost = rng.gen_bool(setup.loss[p]);
            let true_chunk = honest.chunk(r.range);
            let answer = match setup.peers[p] {
                _ if down || lost => continue,
                Peer::Honest | Peer::Flaky | Peer::TooLarge
                    if codec::encode(&true_chunk).len() > setup.max_bytes =>
                {
                    Err(FetchFailure::TooLarge)
                }
                Peer::Honest => Ok(true_chunk),
                Peer::Liar => {
                    let mut c = true_chunk;
                    match c.buckets.first_mut() {
                        Some((_, b)) if !b.accounts.is_empty() => b.accounts[0].1.balance.0 ^= 1,
                        // Nothing to change: invent an entry.
                        _ => c.buckets.push((r.range.first, other_bucket(r.range.first))),
                    }
                    Ok(c)
                }
                Peer::OtherState => Ok(other.chunk(r.range)),
                Peer::WrongProof => {
                    let mut c = true_chunk;
                    if c.proof.len() >= 2 {
                        c.proof.swap(0, 1);
                    } else if let Some(d) = c.proof.first_mut() {
                        *d = Digest::of(b"forged");
                    } else {
                        c.proof.push(Digest::of(b"extra"));
                    }
                    Ok(c)
                }
                Peer::WrongRange => {
                    let shifted = ChunkRange::new(
                        r.range.first.wrapping_add(1u16 << r.range.bits.min(15)),
                        r.range.bits,
                    )
                    .filter(|s| *s != r.range && r.range.bits < 16);
                    match shifted {
                        Some(s) => Ok(honest.chunk(s)),
                        None => Err(FetchFailure::Transport("no other range".into())),
                    }
                }
                Peer::Silent => continue,
                Peer::Stale => Err(FetchFailure::Unavailable),
                Peer::TooLarge => Err(FetchFailure::TooLarge),
                Peer::Flaky => {
                    flaky_turn += 1;
                    if flaky_turn % 2 == 0 {
                        continue;
                    }
                    Ok(true_chunk)
                }
            };
            seq += 1;
            queue.push(Reverse((at, seq)));
            arrivals.insert((at, seq), (p, r.range, answer));
        }
    };
    let first = sync.requests(now);
    send(now, first, &mut rng, &mut queue, &mut arrivals);
    let mut next_tick = 500;
    let outcome = loop {
        if let Some(o) = sync.outcome() {
            break o;
        }
        let next_arrival = queue.peek().map(|Reverse((at, _))| *at);
        let (t, is_tick) = match next_arrival {
            Some(a) if a < next_tick => (a, false),
            _ => (next_tick, true),
        };
        now = t;
        assert!(
            now < 3_600_000,
            "seed {seed}: the sync neither completed nor gave up in an hour: {:?} {:?} {setup:?}",
            sync.progress(),
            sync.peers().collect::<Vec<_>>()
        );
        let reqs = if is_tick {
            next_tick += 500;
            sync.tick(now)
        } else {
            let Reverse(key) = queue.pop().expect("peeked");
            let (p, range, answer) = arrivals.remove(&key).expect("queued");
            let bytes = answer.as_ref().map_or(0, |c| codec::encode(c).len() as u64);
            sync.on_answer(now, p, range, answer, bytes)
        };
        for e in sync.take_events() {
            if std::env::var("SNAPDBG").is_ok() {
                eprintln!("{now} {e:?} {:?}", sync.progress());
            }
        }
        send(now, reqs, &mut rng, &mut queue, &mut arrivals);
    };
    let p = sync.progress();
    let honest_judged_faulty = sync.peers().any(|(id, state, _, _)| {
        setup.peers[id] == Peer::Honest && state == stele_consensus::snapshot::PeerState::Faulty
    });
    let installed = match outcome {
        Outcome::Complete(chunks) => {
            assert!(stele_consensus::snapshot::covers_every_bucket(&chunks));
            Some(
                chunks
                    .into_iter()
                    .flat_map(|c| c.buckets)
                    .collect::<BTreeMap<u16, Bucket>>(),
            )
        }
        Outcome::NoPeers => None,
    };
    SyncRun {
        installed,
        honest: honest.buckets,
        bad_chunks: p.bad_chunks,
        stalls: p.stalls,
        elapsed_ms: now,
        honest_judged_faulty,
    }
}

fn other_bucket(b: u16) -> Bucket {
    let mut k = [7u8; 32];
    k[..2].copy_from_slice(&b.to_be_bytes());
    Bucket {
        accounts: vec![(PublicKey(k), Account::default())],
        records: Vec::new(),
    }
}
