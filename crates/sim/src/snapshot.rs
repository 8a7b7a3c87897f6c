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
use stele_consensus::snapshot::{
    FetchFailure, Fetched, Outcome, Request, SnapshotSync, SyncConfig,
};
use stele_crypto::{Digest, PublicKey};
use stele_types::snapshot::{BucketPiece, ChunkRange, Part, PieceId, SnapshotChunk};
use stele_types::state_root::{self, Bucket, BucketTree};
use stele_types::{codec, Account, Amount, Height, Nonce, RecordKey, RecordValue};

/// The height the snapshot is at.
const HEIGHT: Height = Height(1024);

/// The bucket keys are ground into.
const HUGE_BUCKET: u16 = 0x4242;

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
    /// A random state: accounts spread over all buckets, some crowded, some records, and
    /// `huge` more accounts (some with records) in one bucket, as keys ground into it.
    pub fn random(rng: &mut ChaCha8Rng, accounts: usize, huge: usize) -> Served {
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
        for _ in 0..huge {
            let mut k: [u8; 32] = rng.gen();
            k[..2].copy_from_slice(&HUGE_BUCKET.to_be_bytes());
            let key = PublicKey(k);
            acc.insert(key, Account::default());
            if rng.gen_bool(0.2) {
                rec.insert(
                    (key, RecordKey::new(vec![rng.gen(); 16]).expect("short")),
                    RecordValue::new(vec![rng.gen(); 64]).expect("short"),
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

    fn piece(&self, id: PieceId) -> Option<BucketPiece> {
        let empty = Bucket::default();
        let bucket = self.buckets.get(&id.bucket).unwrap_or(&empty);
        BucketPiece::of(HEIGHT, id, bucket, &self.tree)
    }

    /// What an honest server of this state answers: a chunk, "too large" past
    /// `max_bytes`, or a piece (never too large).
    fn answer(&self, part: Part, max_bytes: usize) -> Result<Fetched, FetchFailure> {
        match part {
            Part::Range(range) => {
                let c = self.chunk(range);
                if codec::encode(&c).len() > max_bytes {
                    Err(FetchFailure::TooLarge)
                } else {
                    Ok(Fetched::Chunk(c))
                }
            }
            Part::Piece(id) => self
                .piece(id)
                .map(Fetched::Piece)
                .ok_or_else(|| FetchFailure::Transport("no such piece".into())),
        }
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
    /// Accounts ground into one bucket, beyond any chunk (0: none).
    pub huge: usize,
    /// Entries per piece asked of such a bucket: 2^piece_bits.
    pub piece_bits: u8,
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
            huge: if rng.gen_bool(0.5) {
                rng.gen_range(1_300..4_000)
            } else {
                0
            },
            piece_bits: rng.gen_range(3..=11),
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
    /// Pieces of the bucket too large for a chunk, verified.
    pub pieces: u64,
    pub elapsed_ms: u64,
    /// Whether an honest peer was ever judged faulty (it must never be).
    pub honest_judged_faulty: bool,
}

/// Runs one sync of `setup` from `seed`'s state over the simulated network.
pub fn run_sync(seed: u64, setup: &Setup) -> SyncRun {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let honest = Served::random(&mut rng, setup.accounts, setup.huge);
    let other = Served::random(&mut rng, setup.accounts.max(1), setup.huge);
    let mut sync = SnapshotSync::new(
        HEIGHT,
        honest.root(),
        0..setup.peers.len(),
        SyncConfig {
            timeout_ms: 2_000,
            give_up_ms: 40_000,
            max_chunk_bytes: setup.max_bytes,
            piece_bits: setup.piece_bits,
            ..SyncConfig::default()
        },
    );
    // (arrival time, seq) → answer
    type Arrival = (usize, Part, Result<Fetched, FetchFailure>);
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
            let answer = match setup.peers[p] {
                _ if down || lost => continue,
                Peer::Silent => continue,
                Peer::Stale => Err(FetchFailure::Unavailable),
                Peer::Flaky => {
                    flaky_turn += 1;
                    if flaky_turn % 2 == 0 {
                        continue;
                    }
                    honest.answer(r.part, setup.max_bytes)
                }
                Peer::Honest => honest.answer(r.part, setup.max_bytes),
                Peer::TooLarge => Err(FetchFailure::TooLarge),
                Peer::OtherState => other.answer(r.part, setup.max_bytes),
                Peer::Liar => honest.answer(r.part, setup.max_bytes).map(|f| match f {
                    Fetched::Chunk(mut c) => {
                        match c.buckets.first_mut() {
                            Some((_, b)) if !b.accounts.is_empty() => {
                                b.accounts[0].1.balance.0 ^= 1
                            }
                            // Nothing to change: invent an entry.
                            _ => c.buckets.push((c.range.first, other_bucket(c.range.first))),
                        }
                        Fetched::Chunk(c)
                    }
                    Fetched::Piece(mut piece) => {
                        match piece.entries.accounts.first_mut() {
                            Some((_, a)) => a.balance.0 ^= 1,
                            // Lies about the bucket's size instead.
                            None => piece.leaves += 1,
                        }
                        Fetched::Piece(piece)
                    }
                }),
                Peer::WrongProof => honest.answer(r.part, setup.max_bytes).map(|f| {
                    let forge = |path: &mut Vec<Digest>| {
                        if path.len() >= 2 && path[0] != path[1] {
                            path.swap(0, 1);
                        } else if let Some(d) = path.first_mut() {
                            *d = Digest::of(b"forged");
                        } else {
                            path.push(Digest::of(b"extra"));
                        }
                    };
                    match f {
                        Fetched::Chunk(mut c) => {
                            forge(&mut c.proof);
                            Fetched::Chunk(c)
                        }
                        Fetched::Piece(mut piece) => {
                            if piece.path.is_empty() {
                                forge(&mut piece.proof);
                            } else {
                                forge(&mut piece.path);
                            }
                            Fetched::Piece(piece)
                        }
                    }
                }),
                Peer::WrongRange => match r.part {
                    Part::Range(range) => ChunkRange::new(
                        range.first.wrapping_add(1u16 << range.bits.min(15)),
                        range.bits,
                    )
                    .filter(|s| *s != range && range.bits < 16)
                    .map(|s| Fetched::Chunk(honest.chunk(s)))
                    .ok_or_else(|| FetchFailure::Transport("no other range".into())),
                    // The next piece of the bucket, or the first of the next bucket.
                    Part::Piece(id) => honest
                        .piece(PieceId {
                            index: id.index + 1,
                            ..id
                        })
                        .or_else(|| {
                            honest.piece(PieceId {
                                bucket: id.bucket.wrapping_add(1),
                                index: 0,
                                ..id
                            })
                        })
                        .map(Fetched::Piece)
                        .ok_or_else(|| FetchFailure::Transport("no other piece".into())),
                },
            };
            seq += 1;
            queue.push(Reverse((at, seq)));
            arrivals.insert((at, seq), (p, r.part, answer));
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
            let (p, part, answer) = arrivals.remove(&key).expect("queued");
            let bytes = match &answer {
                Ok(Fetched::Chunk(c)) => codec::encode(c).len() as u64,
                Ok(Fetched::Piece(piece)) => codec::encode(piece).len() as u64,
                Err(_) => 0,
            };
            sync.on_answer(now, p, part, answer, bytes)
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
        pieces: p.pieces_done,
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
