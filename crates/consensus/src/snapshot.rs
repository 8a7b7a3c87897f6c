//! Snapshot sync, sans IO (issue 24): fetches every chunk of the state at one checkpoint
//! height from several peers at once, verifies each against the state root, and moves
//! away from a peer that sends a bad chunk or stalls. The node drives it over HTTP and
//! the simulator over its own network; neither trusts any peer, since a chunk is kept
//! only once it verifies against a root the caller proved from a checkpoint certificate
//! ([`stele_types::snapshot::SnapshotManifest::verify`]).
//!
//! The machine holds no clock and sends nothing: each call returns the requests to make
//! now, and [`SnapshotSync::tick`] turns requests older than the timeout into stalls.
//! A peer that sends a bad chunk is never asked again; one that stalls or fails is asked
//! again after a growing backoff, since it may be the one honest peer behind a bad link.
//! With no chunk verified for [`SyncConfig::give_up_ms`] the sync gives up.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use stele_crypto::Digest;
use stele_types::snapshot::{
    BucketPiece, ChunkError, ChunkRange, Part, PieceId, SnapshotChunk, MAX_CHUNK_BYTES,
    MAX_PIECE_BITS,
};
use stele_types::Height;

/// "Too large" answers of one peer acted on before the first of them is checked.
const MAX_CLAIMS: usize = 2;

/// How a fetch of one range from one peer ended, other than with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    /// The peer holds no snapshot at this height (it never had one, or it moved on).
    Unavailable,
    /// The chunk would be larger than the peer sends: ask for the two halves (a single
    /// bucket: its pieces). A piece is never too large.
    TooLarge,
    /// The connection failed or the answer did not decode.
    Transport(String),
}

/// One request to make: `part` from `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<P> {
    pub peer: P,
    pub part: Part,
}

/// A peer's answer to a request: a chunk for a range, a piece for a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Chunk(SnapshotChunk),
    Piece(BucketPiece),
}

/// What the machine thinks of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Asked for chunks.
    Serving,
    /// Sent a chunk that does not verify: never asked again.
    Faulty,
    /// Has no snapshot at this height: not asked again.
    Dropped,
}

#[derive(Debug)]
struct Peer {
    state: PeerState,
    in_flight: BTreeMap<Part, u64>,
    /// Transport failures and stalls in a row; a chunk that verifies resets it.
    failures: u32,
    /// Not asked before this time (ms): it failed, and waits longer each time in a row.
    backoff_until: u64,
    chunks: u64,
    bytes: u64,
}

/// Progress, for metrics, `stele status` and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub chunks_done: u64,
    /// Chunks (and pieces) still to fetch or in flight (splitting a range adds one, the
    /// first piece of a bucket those after it).
    pub chunks_left: u64,
    pub entries: u64,
    pub bytes: u64,
    pub peers_serving: u64,
    pub bad_chunks: u64,
    pub stalls: u64,
    /// Pieces of buckets too large for a chunk, verified (also counted as chunks).
    pub pieces_done: u64,
}

/// Something the caller logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A chunk did not verify: the peer is never asked again.
    Faulty {
        peer: P,
        part: Part,
        error: ChunkError,
    },
    /// No answer within the timeout: the part went back in the queue.
    Stalled { peer: P, part: Part },
    /// The peer has no snapshot at this height.
    Unavailable { peer: P },
    /// The peer called a range too large that turned out to fit, or a piece too large
    /// (a piece always fits): never asked again.
    FalseTooLarge { peer: P, part: Part, bytes: u64 },
    /// The request failed (connection, decoding); the peer waits `backoff_ms`.
    Failed {
        peer: P,
        part: Part,
        error: String,
        backoff_ms: u64,
    },
}

/// How the sync ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every bucket's chunk verified: the whole state at the height.
    Complete(Vec<SnapshotChunk>),
    /// No peer is left that could serve what is missing: the caller falls back to
    /// another height or to block replay.
    NoPeers,
}

/// Tuning; the defaults suit four validators on one machine and a WAN alike.
#[derive(Debug, Clone, Copy)]
pub struct SyncConfig {
    /// Chunks asked of one peer at once.
    pub per_peer: usize,
    /// A request unanswered this long is a stall: the range goes to another peer.
    pub timeout_ms: u64,
    /// With no chunk verified for this long, the sync gives up (`NoPeers`) and the
    /// caller falls back. A peer that stalls or fails is never dropped for it, only
    /// asked again after a backoff (the timeout, doubling per failure in a row, up to 4
    /// times it): it may be the one honest peer behind a bad link.
    pub give_up_ms: u64,
    /// The size of the first ranges asked for.
    pub chunk_bits: u8,
    /// The largest chunk a peer sends ([`MAX_CHUNK_BYTES`]); a range a peer calls too
    /// large whose halves add up to less was not.
    pub max_chunk_bytes: usize,
    /// log2 of the entries per piece asked of a bucket too large for one chunk (at most
    /// [`MAX_PIECE_BITS`]).
    pub piece_bits: u8,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            per_peer: 4,
            timeout_ms: 10_000,
            give_up_ms: 200_000,
            chunk_bits: stele_types::snapshot::DEFAULT_CHUNK_BITS,
            max_chunk_bytes: MAX_CHUNK_BYTES,
            piece_bits: MAX_PIECE_BITS,
        }
    }
}

/// The verified pieces of one bucket too large for a chunk.
#[derive(Debug)]
struct Pieces {
    leaves: u64,
    got: BTreeMap<u32, BucketPiece>,
    /// Their wire size in all, to check the claim that the bucket was too large.
    bytes: u64,
}

/// Fetches the snapshot at `height` whose state root is `root`.
#[derive(Debug)]
pub struct SnapshotSync<P: Ord + Copy + Debug> {
    height: Height,
    root: Digest,
    config: SyncConfig,
    peers: BTreeMap<P, Peer>,
    todo: VecDeque<Part>,
    done: BTreeMap<ChunkRange, SnapshotChunk>,
    /// Buckets too large for a chunk, fetched in pieces: the verified pieces so far.
    pieces: BTreeMap<u16, Pieces>,
    progress: Progress,
    events: Vec<Event<P>>,
    /// Ranges a peer called too large (split on its word), and which peer.
    claims: BTreeMap<ChunkRange, P>,
    /// The wire size of each verified chunk, to check those claims.
    sizes: BTreeMap<ChunkRange, u64>,
    /// When a chunk last verified (or the sync began).
    last_progress: Option<u64>,
    gave_up: bool,
    /// `outcome` returned the chunks.
    handed_over: bool,
    /// Rotates the first peer tried, so load spreads and one slow peer is not always
    /// asked first.
    turn: usize,
}

impl<P: Ord + Copy + Debug> SnapshotSync<P> {
    /// A sync of the state at `height` with root `root` from `peers`.
    pub fn new(
        height: Height,
        root: Digest,
        peers: impl IntoIterator<Item = P>,
        config: SyncConfig,
    ) -> Self {
        let todo: VecDeque<_> = ChunkRange::all(config.chunk_bits)
            .into_iter()
            .map(Part::Range)
            .collect();
        let peers = peers
            .into_iter()
            .map(|p| {
                (
                    p,
                    Peer {
                        state: PeerState::Serving,
                        in_flight: BTreeMap::new(),
                        failures: 0,
                        backoff_until: 0,
                        chunks: 0,
                        bytes: 0,
                    },
                )
            })
            .collect();
        SnapshotSync {
            height,
            root,
            config,
            peers,
            progress: Progress {
                chunks_left: todo.len() as u64,
                ..Progress::default()
            },
            todo,
            done: BTreeMap::new(),
            pieces: BTreeMap::new(),
            events: Vec::new(),
            claims: BTreeMap::new(),
            sizes: BTreeMap::new(),
            last_progress: None,
            gave_up: false,
            handed_over: false,
            turn: 0,
        }
    }

    pub fn height(&self) -> Height {
        self.height
    }

    pub fn root(&self) -> Digest {
        self.root
    }

    pub fn progress(&self) -> Progress {
        Progress {
            peers_serving: self
                .peers
                .values()
                .filter(|p| p.state == PeerState::Serving)
                .count() as u64,
            ..self.progress
        }
    }

    /// What happened to peers since the last call, for the log.
    pub fn take_events(&mut self) -> Vec<Event<P>> {
        std::mem::take(&mut self.events)
    }

    /// Each peer's state and the chunks and bytes it delivered.
    pub fn peers(&self) -> impl Iterator<Item = (P, PeerState, u64, u64)> + '_ {
        self.peers
            .iter()
            .map(|(id, p)| (*id, p.state, p.chunks, p.bytes))
    }

    /// The requests to make now: pending ranges handed to serving peers with room,
    /// spread over them in turn.
    pub fn requests(&mut self, now: u64) -> Vec<Request<P>> {
        // Every range still to fetch is in exactly one place: the queue or one peer's
        // requests (a range in two would be fetched, and counted, twice).
        debug_assert_eq!(
            self.progress.chunks_left,
            (self.todo.len()
                + self
                    .peers
                    .values()
                    .map(|p| p.in_flight.len())
                    .sum::<usize>()) as u64
        );
        self.last_progress.get_or_insert(now);
        let mut out = Vec::new();
        let mut ids: Vec<P> = self.peers.keys().copied().collect();
        if ids.is_empty() {
            return out;
        }
        // Peers that deliver first: fewest failures in a row, then most chunks; ties in
        // turn. A silent peer sinks to the back as its failures grow, and one honest peer
        // behind a lossy link keeps most of the work.
        let turn = self.turn % ids.len();
        ids.rotate_left(turn);
        ids.sort_by_key(|id| {
            let p = &self.peers[id];
            (p.failures, std::cmp::Reverse(p.chunks))
        });
        'fill: while !self.todo.is_empty() {
            let mut gave = false;
            for &id in &ids {
                let peer = self.peers.get_mut(&id).expect("listed above");
                let room = self.config.per_peer;
                if peer.state != PeerState::Serving
                    || peer.in_flight.len() >= room
                    || now < peer.backoff_until
                {
                    continue;
                }
                let Some(part) = self.todo.pop_front() else {
                    break 'fill;
                };
                peer.in_flight.insert(part, now);
                out.push(Request { peer: id, part });
                gave = true;
            }
            self.turn = self.turn.wrapping_add(1);
            if !gave {
                break;
            }
        }
        out
    }

    /// A peer's answer for `part`. Answers nobody asked for (a part not in flight at that
    /// peer, a late answer after a stall moved the part) are ignored.
    pub fn on_answer(
        &mut self,
        now: u64,
        from: P,
        part: Part,
        answer: Result<Fetched, FetchFailure>,
        bytes: u64,
    ) -> Vec<Request<P>> {
        let Some(peer) = self.peers.get_mut(&from) else {
            return self.requests(now);
        };
        if peer.in_flight.remove(&part).is_none() {
            return self.requests(now);
        }
        match (part, answer) {
            (Part::Range(range), Ok(Fetched::Chunk(chunk))) => {
                match chunk.verify(self.height, range, &self.root) {
                    Ok(()) => {
                        self.delivered(now, from, chunk.entries(), bytes);
                        debug_assert!(!self.done.contains_key(&range));
                        self.done.insert(range, chunk);
                        self.sizes.insert(range, bytes);
                        self.check_claims(range);
                    }
                    Err(e) => self.faulty(from, part, e),
                }
            }
            (Part::Piece(id), Ok(Fetched::Piece(piece))) => {
                match piece.verify(self.height, id, &self.root) {
                    Ok(()) => {
                        self.delivered(now, from, piece.entries(), bytes);
                        self.add_piece(piece, bytes);
                    }
                    Err(e) => self.faulty(from, part, e),
                }
            }
            (_, Ok(_)) => self.faulty(from, part, ChunkError::Kind),
            (Part::Range(range), Err(FetchFailure::TooLarge)) => {
                // Believed for now, checked once the halves (or a single bucket's pieces)
                // arrive: a faulty peer calling everything too large is caught at its
                // first lie, and until its claims are checked it may have only a few
                // outstanding, so it cannot split the state into 65,536 requests first.
                // (Claims nested in each other are checked together, bottom up: only
                // claims elsewhere count.)
                let unchecked = self
                    .claims
                    .iter()
                    .filter(|(r, p)| **p == from && !r.contains(range.first))
                    .count();
                if unchecked >= MAX_CLAIMS {
                    self.failed(
                        now,
                        from,
                        part,
                        "too large, with earlier claims unchecked".into(),
                    );
                } else {
                    self.claims.entry(range).or_insert(from);
                    match range.split() {
                        Some((a, b)) => {
                            self.todo.push_front(Part::Range(b));
                            self.todo.push_front(Part::Range(a));
                            self.progress.chunks_left += 1;
                        }
                        // One bucket: its first piece says how many there are.
                        None => self.todo.push_front(Part::Piece(PieceId {
                            bucket: range.first,
                            bits: self.config.piece_bits.min(MAX_PIECE_BITS),
                            index: 0,
                        })),
                    }
                }
            }
            (Part::Piece(_), Err(FetchFailure::TooLarge)) => {
                self.events.push(Event::FalseTooLarge {
                    peer: from,
                    part,
                    bytes: 0,
                });
                self.judge_faulty(from);
                self.todo.push_front(part);
            }
            (_, Err(FetchFailure::Unavailable)) => {
                peer.state = PeerState::Dropped;
                self.events.push(Event::Unavailable { peer: from });
                self.release(from);
                self.todo.push_front(part);
            }
            (_, Err(FetchFailure::Transport(e))) => self.failed(now, from, part, e),
        }
        self.requests(now)
    }

    /// Counts a verified chunk or piece.
    fn delivered(&mut self, now: u64, from: P, entries: usize, bytes: u64) {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.failures = 0;
            peer.backoff_until = 0;
            peer.chunks += 1;
            peer.bytes += bytes;
        }
        self.last_progress = Some(now);
        self.progress.chunks_done += 1;
        self.progress.chunks_left -= 1;
        self.progress.entries += entries as u64;
        self.progress.bytes += bytes;
    }

    /// Keeps a verified piece; the first of its bucket queues the rest, the last makes
    /// the bucket's chunk.
    fn add_piece(&mut self, piece: BucketPiece, bytes: u64) {
        let id = piece.piece;
        let count = PieceId::count(piece.leaves, id.bits);
        let set = self.pieces.entry(id.bucket).or_insert_with(|| Pieces {
            leaves: piece.leaves,
            got: BTreeMap::new(),
            bytes: 0,
        });
        // The bucket's root commits to its entry count, so every verified piece agrees.
        debug_assert_eq!(set.leaves, piece.leaves);
        debug_assert!(!set.got.contains_key(&id.index));
        if set.got.is_empty() {
            debug_assert_eq!(id.index, 0, "only the first piece is asked blind");
            for index in 1..count {
                self.todo.push_back(Part::Piece(PieceId {
                    index: index as u32,
                    ..id
                }));
            }
            self.progress.chunks_left += count - 1;
        }
        self.progress.pieces_done += 1;
        set.got.insert(id.index, piece);
        set.bytes += bytes;
        if set.got.len() as u64 == count {
            let set = self.pieces.remove(&id.bucket).expect("just added to");
            let chunk = BucketPiece::assemble(set.got.into_values().collect())
                .expect("every piece of the bucket, each verified against the root");
            let range = chunk.range;
            debug_assert!(chunk.verify(self.height, range, &self.root).is_ok());
            self.done.insert(range, chunk);
            self.sizes.insert(range, set.bytes);
            self.check_claims(range);
        }
    }

    /// Turns requests older than the timeout into stalls: the range goes back in the
    /// queue for another peer.
    pub fn tick(&mut self, now: u64) -> Vec<Request<P>> {
        let timeout = self.config.timeout_ms;
        if now.saturating_sub(*self.last_progress.get_or_insert(now)) >= self.config.give_up_ms {
            self.gave_up = true;
        }
        let stalled: Vec<(P, Part)> = self
            .peers
            .iter()
            .flat_map(|(id, p)| {
                p.in_flight
                    .iter()
                    .filter(move |(_, at)| now.saturating_sub(**at) >= timeout)
                    .map(move |(r, _)| (*id, *r))
            })
            .collect();
        let mut backed_off = std::collections::BTreeSet::new();
        for (id, part) in stalled {
            // A peer dropped by an earlier stall in this loop already handed the rest of
            // its parts back.
            if self
                .peers
                .get_mut(&id)
                .and_then(|p| p.in_flight.remove(&part))
                .is_none()
            {
                continue;
            }
            self.progress.stalls += 1;
            self.events.push(Event::Stalled { peer: id, part });
            // Several requests stalling at once are one failure of the link.
            if backed_off.insert(id) {
                self.backoff(now, id);
            }
            self.todo.push_back(part);
        }
        self.requests(now)
    }

    /// How it ended, once it has: every chunk verified, or nothing left to ask. The
    /// chunks are handed over once; later calls return `None`.
    pub fn outcome(&mut self) -> Option<Outcome> {
        if self.handed_over {
            return None;
        }
        if self.todo.is_empty() && self.peers.values().all(|p| p.in_flight.is_empty()) {
            self.handed_over = true;
            let chunks = std::mem::take(&mut self.done)
                .into_values()
                .collect::<Vec<_>>();
            debug_assert!(self.pieces.is_empty());
            debug_assert!(covers_every_bucket(&chunks));
            return Some(Outcome::Complete(chunks));
        }
        let serving = self
            .peers
            .values()
            .any(|p| p.state == PeerState::Serving || !p.in_flight.is_empty());
        (!serving || self.gave_up).then_some(Outcome::NoPeers)
    }

    /// Once every chunk inside a range some peer called too large has arrived: if they
    /// add up to no more than the limit, the range was not too large, and that peer lied.
    fn check_claims(&mut self, arrived: ChunkRange) {
        let covering: Vec<(ChunkRange, P)> = self
            .claims
            .iter()
            .filter(|(r, _)| r.contains(arrived.first))
            .map(|(r, p)| (*r, *p))
            .collect();
        for (r, claimant) in covering {
            let inside: Vec<(&ChunkRange, &u64)> = self
                .sizes
                .range(
                    ChunkRange {
                        first: r.first,
                        bits: 0,
                    }..,
                )
                .take_while(|(c, _)| c.first <= r.last())
                .filter(|(c, _)| r.contains(c.first))
                .collect();
            let covered: u64 = inside.iter().map(|(c, _)| 1u64 << c.bits).sum();
            if covered < 1u64 << r.bits {
                continue;
            }
            self.claims.remove(&r);
            // The halves carry one more proof hash each and their own framing: whole,
            // the range encodes to no more than their sum.
            let total: u64 = inside.iter().map(|(_, b)| **b).sum();
            if total.saturating_add(64) <= self.config.max_chunk_bytes as u64 {
                self.events.push(Event::FalseTooLarge {
                    peer: claimant,
                    part: Part::Range(r),
                    bytes: total,
                });
                self.judge_faulty(claimant);
            }
        }
    }

    /// Never asks `peer` again, and hands back what it had in flight.
    fn judge_faulty(&mut self, peer: P) {
        self.progress.bad_chunks += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.state = PeerState::Faulty;
        }
        self.release(peer);
    }

    fn faulty(&mut self, from: P, part: Part, error: ChunkError) {
        self.events.push(Event::Faulty {
            peer: from,
            part,
            error,
        });
        self.judge_faulty(from);
        self.todo.push_front(part);
    }

    fn failed(&mut self, now: u64, from: P, part: Part, error: String) {
        let backoff_ms = self.backoff(now, from);
        self.events.push(Event::Failed {
            peer: from,
            part,
            error,
            backoff_ms,
        });
        self.todo.push_back(part);
    }

    /// Counts a failure in a row and makes the peer wait; returns how long.
    fn backoff(&mut self, now: u64, from: P) -> u64 {
        let timeout = self.config.timeout_ms;
        let Some(p) = self.peers.get_mut(&from) else {
            return 0;
        };
        p.failures = p.failures.saturating_add(1);
        let wait = timeout.saturating_mul(1 << (p.failures - 1).min(2));
        p.backoff_until = now.saturating_add(wait);
        wait
    }

    /// Hands everything a peer still had in flight back to the queue.
    fn release(&mut self, from: P) {
        if let Some(p) = self.peers.get_mut(&from) {
            for (r, _) in std::mem::take(&mut p.in_flight) {
                self.todo.push_front(r);
            }
        }
    }
}

/// Whether the chunks' ranges tile all 65,536 buckets exactly once.
pub fn covers_every_bucket(chunks: &[SnapshotChunk]) -> bool {
    stele_types::snapshot::tiles_every_bucket(chunks.iter().map(|c| c.range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use stele_crypto::PublicKey;
    #[allow(unused_imports)]
    use stele_types::snapshot::PieceId;
    use stele_types::state_root::{self, Bucket, BucketTree};
    use stele_types::{Account, Amount, Nonce};

    struct Server {
        buckets: BTreeMap<u16, Bucket>,
        tree: BucketTree,
    }

    impl Server {
        fn new(seed: u8) -> Server {
            let mut accounts = BTreeMap::new();
            for i in 0u32..3000 {
                let mut k = [seed; 32];
                k[..4].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_be_bytes());
                accounts.insert(
                    PublicKey(k),
                    Account {
                        balance: Amount(u64::from(i)),
                        nonce: Nonce(1),
                    },
                );
            }
            let buckets = state_root::buckets(&accounts, &BTreeMap::new());
            let roots = buckets.iter().map(|(b, x)| (*b, x.root())).collect();
            Server {
                buckets,
                tree: BucketTree::new(&roots),
            }
        }

        fn chunk(&self, range: ChunkRange) -> SnapshotChunk {
            SnapshotChunk::of(Height(64), range, &self.buckets, &self.tree).unwrap()
        }

        fn piece(&self, id: PieceId) -> BucketPiece {
            let empty = Bucket::default();
            let b = self.buckets.get(&id.bucket).unwrap_or(&empty);
            BucketPiece::of(Height(64), id, b, &self.tree).unwrap()
        }

        /// The honest answer: a chunk, or a piece.
        fn answer(&self, part: Part) -> Fetched {
            match part {
                Part::Range(r) => Fetched::Chunk(self.chunk(r)),
                Part::Piece(id) => Fetched::Piece(self.piece(id)),
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Honest,
        /// Changes a balance in every chunk it sends.
        Liar,
        /// Never answers.
        Silent,
        /// Has no snapshot at this height.
        Stale,
        /// Serves another state (its own, valid proofs for another root).
        OtherState,
        /// Says every chunk is too large.
        TooLarge,
    }

    /// Runs a sync against peers of the given kinds; answers arrive one tick later.
    fn run(kinds: &[Kind]) -> (Option<Vec<SnapshotChunk>>, Progress) {
        let honest = Server::new(1);
        let other = Server::new(2);
        let mut sync = SnapshotSync::new(
            Height(64),
            honest.tree.root(),
            0..kinds.len(),
            SyncConfig {
                timeout_ms: 50,
                give_up_ms: 5_000,
                ..SyncConfig::default()
            },
        );
        let outcome = drive(&mut sync, |r| {
            let answer = match kinds[r.peer] {
                Kind::Honest => Ok(honest.answer(r.part)),
                Kind::Liar => {
                    let mut f = honest.answer(r.part);
                    if let Fetched::Chunk(c) = &mut f {
                        if let Some((_, b)) = c.buckets.first_mut() {
                            b.accounts[0].1.balance = Amount(7);
                        }
                    }
                    Ok(f)
                }
                Kind::Silent => return None,
                Kind::Stale => Err(FetchFailure::Unavailable),
                Kind::OtherState => Ok(other.answer(r.part)),
                Kind::TooLarge => Err(FetchFailure::TooLarge),
            };
            Some((answer, 100))
        });
        match outcome {
            Outcome::Complete(c) => (Some(c), sync.progress()),
            Outcome::NoPeers => (None, sync.progress()),
        }
    }

    /// Runs `sync` to its end, one tick per round; `answer` gives each request's answer
    /// and its wire size, arriving in the next round, or `None` for no answer at all.
    fn drive<P: Ord + Copy + Debug>(
        sync: &mut SnapshotSync<P>,
        mut answer: impl FnMut(&Request<P>) -> Option<(Result<Fetched, FetchFailure>, u64)>,
    ) -> Outcome {
        let mut queue = sync.requests(0);
        for now in 1..100_000 {
            if let Some(o) = sync.outcome() {
                return o;
            }
            let mut next = sync.tick(now);
            for r in std::mem::take(&mut queue) {
                if let Some((a, bytes)) = answer(&r) {
                    next.extend(sync.on_answer(now, r.peer, r.part, a, bytes));
                }
            }
            queue = next;
        }
        panic!("the sync neither completed nor gave up");
    }

    fn assert_whole(chunks: &[SnapshotChunk]) {
        let honest = Server::new(1);
        assert!(covers_every_bucket(chunks));
        let got: BTreeMap<u16, Bucket> = chunks
            .iter()
            .flat_map(|c| c.buckets.iter().cloned())
            .collect();
        assert_eq!(got, honest.buckets);
    }

    #[test]
    fn honest_peers_deliver_the_whole_state() {
        let (chunks, p) = run(&[Kind::Honest, Kind::Honest, Kind::Honest]);
        assert_whole(&chunks.unwrap());
        assert_eq!(p.chunks_done, 256);
        assert_eq!(p.chunks_left, 0);
        assert_eq!(p.entries, 3000);
    }

    #[test]
    fn one_honest_peer_among_liars_stallers_and_stale_peers_is_enough() {
        for kinds in [
            vec![Kind::Liar, Kind::Honest, Kind::Silent, Kind::Stale],
            vec![Kind::OtherState, Kind::Silent, Kind::Honest],
            vec![Kind::TooLarge, Kind::Honest, Kind::Liar],
            vec![Kind::Silent, Kind::Silent, Kind::Silent, Kind::Honest],
        ] {
            let (chunks, p) = run(&kinds);
            assert_whole(&chunks.unwrap());
            if kinds.contains(&Kind::Liar) || kinds.contains(&Kind::OtherState) {
                assert!(p.bad_chunks >= 1);
            }
            if kinds.contains(&Kind::Silent) {
                assert!(p.stalls >= 1);
            }
        }
    }

    #[test]
    fn with_no_honest_peer_it_gives_up_and_installs_nothing() {
        for kinds in [
            vec![Kind::Liar, Kind::Silent, Kind::Stale],
            vec![Kind::OtherState],
            vec![Kind::TooLarge, Kind::Stale],
            vec![],
        ] {
            let (chunks, _) = run(&kinds);
            assert!(chunks.is_none(), "{} peers", kinds.len());
        }
    }

    #[test]
    fn a_peer_calling_everything_too_large_is_caught_and_splits_little() {
        let honest = Server::new(1);
        let mut sync = SnapshotSync::new(
            Height(64),
            honest.tree.root(),
            [0usize, 1],
            SyncConfig::default(),
        );
        let outcome = drive(&mut sync, |r| {
            let answer = if r.peer == 0 {
                Err(FetchFailure::TooLarge)
            } else {
                Ok(honest.answer(r.part))
            };
            let bytes = answer.as_ref().map_or(0, wire_size);
            Some((answer, bytes))
        });
        let Outcome::Complete(chunks) = outcome else {
            panic!("the honest peer serves everything");
        };
        assert_whole(&chunks);
        assert!(sync.outcome().is_none(), "handed over once");
        let events = sync.take_events();
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::FalseTooLarge { peer: 0, .. })));
        assert!(sync
            .peers()
            .any(|(id, state, _, _)| id == 0 && state == PeerState::Faulty));
        // At most two unchecked claims, each split down at most 16 levels and then to
        // one piece.
        let p = sync.progress();
        assert!(p.chunks_done <= 256 + 2 * 17, "{p:?}");
    }

    #[test]
    fn a_range_too_large_is_split_and_its_halves_cover_it() {
        let honest = Server::new(1);
        let mut sync =
            SnapshotSync::new(Height(64), honest.tree.root(), [0u8], SyncConfig::default());
        let first = sync.requests(0);
        assert_eq!(first.len(), 4);
        let r = first[0].part;
        let Part::Range(range) = r else {
            panic!("ranges first")
        };
        let next = sync.on_answer(1, 0, r, Err(FetchFailure::TooLarge), 0);
        let (a, b) = range.split().unwrap();
        assert_eq!(
            next.iter().map(|q| q.part).collect::<Vec<_>>(),
            vec![Part::Range(a)],
            "one slot freed, the first half goes in it"
        );
        assert_eq!(sync.progress().chunks_left, 257);
        // An answer for a range never asked of that peer is ignored.
        let before = sync.progress();
        sync.on_answer(2, 0, Part::Range(b), Ok(honest.answer(Part::Range(b))), 9);
        assert_eq!(sync.progress(), before);
    }

    fn wire_size(f: &Fetched) -> u64 {
        match f {
            Fetched::Chunk(c) => stele_types::codec::encode(c).len() as u64,
            Fetched::Piece(p) => stele_types::codec::encode(p).len() as u64,
        }
    }

    /// A state with `crowded` accounts (every fifth with a record) ground into bucket
    /// 0007 beside a few elsewhere, served by peers that call a chunk past `max` bytes
    /// too large (peer 0 in the way `first` says); returns the outcome and the sync.
    fn run_big(
        crowded: u32,
        max: usize,
        first: Option<Kind>,
    ) -> (Outcome, SnapshotSync<u8>, BTreeMap<u16, Bucket>) {
        let mut accounts = BTreeMap::new();
        let mut records = BTreeMap::new();
        for i in 0u32..crowded + 40 {
            let mut k = [9u8; 32];
            let b: u16 = if i < crowded {
                7
            } else {
                ((i - crowded + 1) * 0x400) as u16
            };
            k[..2].copy_from_slice(&b.to_be_bytes());
            k[2..6].copy_from_slice(&i.to_be_bytes());
            accounts.insert(
                PublicKey(k),
                Account {
                    balance: Amount(1),
                    nonce: Nonce(1),
                },
            );
            if i % 5 == 0 {
                records.insert(
                    (
                        PublicKey(k),
                        stele_types::RecordKey::new(vec![1; 8]).unwrap(),
                    ),
                    stele_types::RecordValue::new(vec![2; 40]).unwrap(),
                );
            }
        }
        let buckets = state_root::buckets(&accounts, &records);
        let roots = buckets.iter().map(|(b, x)| (*b, x.root())).collect();
        let server = Server {
            buckets: buckets.clone(),
            tree: BucketTree::new(&roots),
        };
        let mut sync = SnapshotSync::new(
            Height(64),
            server.tree.root(),
            [0u8, 1],
            SyncConfig {
                max_chunk_bytes: max,
                timeout_ms: 50,
                give_up_ms: 5_000,
                piece_bits: 7,
                ..SyncConfig::default()
            },
        );
        let outcome = drive(&mut sync, |r| {
            let honest = server.answer(r.part);
            let bytes = wire_size(&honest);
            let answer = match (r.peer, first, honest) {
                (0, Some(Kind::TooLarge), _) => Err(FetchFailure::TooLarge),
                (0, Some(Kind::Liar), Fetched::Piece(mut p)) => {
                    p.leaves += 1;
                    Ok(Fetched::Piece(p))
                }
                (_, _, Fetched::Chunk(_)) if bytes > max as u64 => Err(FetchFailure::TooLarge),
                (_, _, f) => Ok(f),
            };
            Some((answer, bytes))
        });
        (outcome, sync, buckets)
    }

    #[test]
    fn a_bucket_larger_than_a_chunk_is_fetched_in_pieces_and_reassembled() {
        // 3,000 accounts and 600 records in one bucket: about 200 KB, ten times the
        // largest chunk; in pieces of 128 entries. (Before pieces, this sync gave up:
        // the one bucket could only ever be answered "too large".)
        let (outcome, sync, buckets) = run_big(3_000, 20_000, None);
        let Outcome::Complete(chunks) = outcome else {
            panic!("the honest peers cannot serve bucket 0007");
        };
        let got: BTreeMap<u16, Bucket> = chunks.into_iter().flat_map(|c| c.buckets).collect();
        assert_eq!(got, buckets);
        let p = sync.progress();
        assert_eq!(p.pieces_done, 3_600u64.div_ceil(128), "{p:?}");
        assert_eq!(p.bad_chunks, 0);
    }

    #[test]
    fn a_piece_lying_about_its_bucket_or_a_bucket_falsely_too_large_is_caught() {
        // Peer 0 claims its pieces belong to a bucket one entry larger.
        let (outcome, mut sync, buckets) = run_big(3_000, 20_000, Some(Kind::Liar));
        let Outcome::Complete(chunks) = outcome else {
            panic!("peer 1 is honest");
        };
        let got: BTreeMap<u16, Bucket> = chunks.into_iter().flat_map(|c| c.buckets).collect();
        assert_eq!(got, buckets);
        assert!(sync.take_events().iter().any(|e| matches!(
            e,
            Event::Faulty {
                peer: 0,
                part: Part::Piece(_),
                ..
            }
        )));
        // Peer 0 calls everything too large; bucket 0007 (about 1 KB here) fits.
        let (outcome, mut sync, buckets) = run_big(20, 20_000, Some(Kind::TooLarge));
        let Outcome::Complete(chunks) = outcome else {
            panic!("peer 1 is honest");
        };
        let got: BTreeMap<u16, Bucket> = chunks.into_iter().flat_map(|c| c.buckets).collect();
        assert_eq!(got, buckets);
        assert!(sync
            .take_events()
            .iter()
            .any(|e| matches!(e, Event::FalseTooLarge { peer: 0, .. })));
        assert!(sync
            .peers()
            .any(|(id, state, _, _)| id == 0 && state == PeerState::Faulty));
    }
}
