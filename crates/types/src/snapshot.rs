//! Snapshot chunks (issue 24): the state at a checkpoint height, in pieces a syncing
//! validator checks one at a time against the state root, so no peer is trusted.
//!
//! A chunk is every entry of an aligned run of 2^bits buckets ([`ChunkRange`]). Such a run
//! is one subtree of the tree over the bucket roots (`state_root`), so a chunk carries
//! one audit path: the verifier hashes the entries into bucket roots, the bucket roots
//! into the subtree's root, and folds that up the path to the state root that a
//! checkpoint certificate proves ([`crate::state_root::StateOpening::verify`]).
//!
//! A single bucket can outgrow a chunk (keys are cheap to grind into one bucket, and an
//! owner may hold many records), so a bucket too large is served in pieces
//! ([`BucketPiece`]): aligned runs of 2^bits of its leaves, each a subtree of the
//! bucket's own tree with its audit path, plus the bucket's path to the state root.
//! A bucket's root hashes in its entry count ([`state_root::bucket_root`]), so the
//! first piece proves how many pieces there are.

use std::fmt;

use serde::{Deserialize, Serialize};
use stele_crypto::{merkle, Digest};

use crate::block::Block;
use crate::certs::{CheckpointCertificate, CommitCertificate};
use crate::exec::TxResult;
use crate::ids::Height;
use crate::messages::results_leaf;
use crate::state_root::{self, Bucket, StateOpening, BUCKET_BITS};
use crate::validators::ValidatorSet;
use stele_crypto::Scheme;

/// How many buckets a chunk spans unless a server asks for smaller ones: 2^8 buckets,
/// 256 chunks. At a million accounts that is about 200 KB a chunk.
pub const DEFAULT_CHUNK_BITS: u8 = 8;

/// The largest chunk a server sends; a larger one is answered "too large", and the
/// asker splits the range in two.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// log2 of the most leaves a piece of one bucket holds: 2,048 entries, at most about
/// 2.3 MB even when every one is a record of the largest size, so a piece always fits in
/// a chunk and is never "too large".
pub const MAX_PIECE_BITS: u8 = 11;

/// Whether `ranges` cover all 65,536 buckets, each exactly once.
pub fn tiles_every_bucket(ranges: impl IntoIterator<Item = ChunkRange>) -> bool {
    let mut ranges: Vec<ChunkRange> = ranges.into_iter().collect();
    ranges.sort();
    let mut next = 0u32;
    for r in ranges {
        if u32::from(r.first) != next {
            return false;
        }
        next = u32::from(r.last()) + 1;
    }
    next == 1 << BUCKET_BITS
}

/// An aligned run of 2^bits buckets starting at `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkRange {
    pub first: u16,
    pub bits: u8,
}

impl ChunkRange {
    /// The range, if `first` is aligned to 2^bits and bits ≤ 16.
    pub fn new(first: u16, bits: u8) -> Option<ChunkRange> {
        (u32::from(bits) <= BUCKET_BITS && u32::from(first) % (1u32 << bits) == 0)
            .then_some(ChunkRange { first, bits })
    }

    /// Every bucket in chunks of 2^bits (bits capped at 16).
    pub fn all(bits: u8) -> Vec<ChunkRange> {
        let bits = bits.min(BUCKET_BITS as u8);
        (0u32..1 << (BUCKET_BITS - u32::from(bits)))
            .map(|i| ChunkRange {
                first: (i << bits) as u16,
                bits,
            })
            .collect()
    }

    /// Whether it is well formed (what [`ChunkRange::new`] checks).
    pub fn is_valid(&self) -> bool {
        ChunkRange::new(self.first, self.bits).is_some()
    }

    /// The last bucket in it.
    pub fn last(&self) -> u16 {
        (u32::from(self.first) + (1u32 << self.bits.min(16)) - 1) as u16
    }

    pub fn contains(&self, bucket: u16) -> bool {
        (self.first..=self.last()).contains(&bucket)
    }

    /// Its two halves; `None` for a single bucket.
    pub fn split(&self) -> Option<(ChunkRange, ChunkRange)> {
        let bits = self.bits.checked_sub(1)?;
        let second = (u32::from(self.first) + (1u32 << bits)) as u16;
        Some((
            ChunkRange {
                first: self.first,
                bits,
            },
            ChunkRange {
                first: second,
                bits,
            },
        ))
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buckets {:04x}..={:04x}", self.first, self.last())
    }
}

/// Leaves `index·2^bits ..` of one bucket (the last piece may hold fewer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PieceId {
    pub bucket: u16,
    pub bits: u8,
    pub index: u32,
}

impl PieceId {
    /// Whether a server serves it: at most 2^[`MAX_PIECE_BITS`] leaves.
    pub fn is_valid(&self) -> bool {
        self.bits <= MAX_PIECE_BITS
    }

    /// How many pieces of 2^`bits` leaves a bucket of `leaves` entries has (an empty
    /// bucket has one, empty).
    pub fn count(leaves: u64, bits: u8) -> u64 {
        leaves.div_ceil(1 << bits.min(MAX_PIECE_BITS)).max(1)
    }
}

impl fmt::Display for PieceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "piece {} (2^{} entries) of bucket {:04x}",
            self.index, self.bits, self.bucket
        )
    }
}

/// What one snapshot request asks for: a run of buckets, or a piece of one bucket too
/// large for a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Part {
    Range(ChunkRange),
    Piece(PieceId),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Range(r) => r.fmt(f),
            Part::Piece(p) => p.fmt(f),
        }
    }
}

/// Piece `piece` of one bucket at a checkpoint height: its entries, the audit path of
/// their subtree within the bucket's tree, and the bucket's audit path to the state
/// root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketPiece {
    pub height: Height,
    pub piece: PieceId,
    /// How many entries the whole bucket holds (its root commits to the number).
    pub leaves: u64,
    /// The piece's entries: a run of the bucket's accounts-then-records.
    pub entries: Bucket,
    /// The piece's siblings within the bucket's tree, lowest first.
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub path: Vec<Digest>,
    /// The bucket's siblings in the tree over the buckets, lowest first (16).
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub proof: Vec<Digest>,
}

impl BucketPiece {
    /// The piece `id` of `bucket`'s entries (proved with the tree over the buckets'
    /// roots): what the simulator and tests serve. `None` past the last piece.
    pub fn of(
        height: Height,
        id: PieceId,
        bucket: &Bucket,
        tree: &state_root::BucketTree,
    ) -> Option<BucketPiece> {
        let leaves = bucket.leaves();
        let size = 1usize << id.bits;
        let count = PieceId::count(bucket.len(), id.bits);
        if !id.is_valid() || u64::from(id.index) >= count {
            return None;
        }
        let nodes: Vec<Digest> = if leaves.is_empty() {
            Vec::new()
        } else {
            leaves.chunks(size).map(merkle::root).collect()
        };
        let path = if nodes.is_empty() {
            Vec::new()
        } else {
            merkle::Tree::from_leaf_hashes(nodes)
                .prove(id.index as usize)?
                .path
        };
        let start = id.index as usize * size;
        let end = (start + size).min(leaves.len());
        let na = bucket.accounts.len();
        let entries = Bucket {
            accounts: bucket.accounts[start.min(na)..end.min(na)].to_vec(),
            records: bucket.records[start.max(na) - na..end.max(na) - na].to_vec(),
        };
        Some(BucketPiece {
            height,
            piece: id,
            leaves: bucket.len(),
            entries,
            path,
            proof: tree.prove(0, id.bucket)?,
        })
    }

    /// How many entries it holds.
    pub fn entries(&self) -> usize {
        self.entries.len() as usize
    }

    /// Checks it is exactly piece `id` at `height` of the state whose root is
    /// `state_root`, structure first, as [`SnapshotChunk::verify`] does.
    pub fn verify(
        &self,
        height: Height,
        id: PieceId,
        state_root: &Digest,
    ) -> Result<(), ChunkError> {
        same_height(height, self.height)?;
        if self.piece != id || !id.is_valid() {
            return Err(ChunkError::Piece {
                expected: id,
                got: self.piece,
            });
        }
        let count = PieceId::count(self.leaves, id.bits);
        let first = u64::from(id.index) << id.bits;
        let expected = self.leaves.saturating_sub(first).min(1 << id.bits);
        if u64::from(id.index) >= count || self.entries.len() != expected {
            return Err(ChunkError::PieceLength {
                piece: id,
                leaves: self.leaves,
                got: self.entries.len(),
            });
        }
        if self.proof.len() != BUCKET_BITS as usize {
            return Err(ChunkError::ProofLength {
                bits: 0,
                expected: BUCKET_BITS as usize,
                got: self.proof.len(),
            });
        }
        if !self.entries.is_sorted_in(id.bucket) {
            return Err(ChunkError::Entry { bucket: id.bucket });
        }
        let entries_root = if self.leaves == 0 {
            self.path.is_empty().then(merkle::empty_root)
        } else {
            merkle::fold_path(
                u64::from(id.index),
                count,
                merkle::root(&self.entries.leaves()),
                &self.path,
            )
        };
        let Some(entries_root) = entries_root else {
            return Err(ChunkError::PiecePath {
                piece: id,
                hashes: self.path.len(),
            });
        };
        let leaf =
            merkle::leaf_hash(state_root::bucket_root(self.leaves, &entries_root).as_bytes());
        let got = state_root::fold_path(0, id.bucket, leaf, &self.proof);
        if got != *state_root {
            return Err(ChunkError::Root {
                expected: *state_root,
                got,
            });
        }
        Ok(())
    }

    /// The chunk of the single bucket these pieces make up: every piece of it, verified
    /// against the same root, in any order. `None` unless they are exactly its pieces.
    pub fn assemble(mut pieces: Vec<BucketPiece>) -> Option<SnapshotChunk> {
        pieces.sort_by_key(|p| p.piece.index);
        let first = pieces.first()?;
        let (height, id, leaves, proof) =
            (first.height, first.piece, first.leaves, first.proof.clone());
        let whole = pieces.len() as u64 == PieceId::count(leaves, id.bits)
            && pieces.iter().enumerate().all(|(i, p)| {
                p.height == height
                    && p.leaves == leaves
                    && p.piece
                        == PieceId {
                            index: i as u32,
                            ..id
                        }
            });
        if !whole {
            return None;
        }
        let mut bucket = Bucket::default();
        for p in pieces {
            bucket.accounts.extend(p.entries.accounts);
            bucket.records.extend(p.entries.records);
        }
        Some(SnapshotChunk {
            height,
            range: ChunkRange {
                first: id.bucket,
                bits: 0,
            },
            buckets: if bucket.is_empty() {
                Vec::new()
            } else {
                vec![(id.bucket, bucket)]
            },
            proof,
        })
    }
}

fn same_height(expected: Height, got: Height) -> Result<(), ChunkError> {
    if got == expected {
        Ok(())
    } else {
        Err(ChunkError::Height { expected, got })
    }
}

/// Every entry of a range of buckets at a checkpoint height, with the audit path of
/// their subtree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub height: Height,
    pub range: ChunkRange,
    /// The non-empty buckets, in bucket order.
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub buckets: Vec<(u16, Bucket)>,
    /// The subtree's siblings from its height up to the root, lowest first.
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub proof: Vec<Digest>,
}

/// Why a chunk is refused. Every one means the peer that sent it is faulty (or answered
/// another question).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("the chunk is for height {got}, {expected} was asked for")]
    Height { expected: Height, got: Height },
    #[error("the chunk holds {got}, {expected} was asked for")]
    Range {
        expected: ChunkRange,
        got: ChunkRange,
    },
    #[error("bucket {bucket:04x} is outside the chunk, repeated, out of order or empty")]
    Bucket { bucket: u16 },
    #[error("bucket {bucket:04x} holds an entry of another bucket or entries out of key order")]
    Entry { bucket: u16 },
    #[error("the proof has {got} hashes, a chunk of 2^{bits} buckets needs {expected}")]
    ProofLength {
        bits: u8,
        expected: usize,
        got: usize,
    },
    #[error("the piece is {got}, {expected} was asked for")]
    Piece { expected: PieceId, got: PieceId },
    #[error("{piece} of a bucket of {leaves} entries holds {got}")]
    PieceLength {
        piece: PieceId,
        leaves: u64,
        got: u64,
    },
    #[error("a chunk was sent for a piece, or a piece for a chunk")]
    Kind,
    #[error("a path of {hashes} hashes cannot lead up from {piece}")]
    PiecePath { piece: PieceId, hashes: usize },
    #[error("the chunk proves state root {got}, the checkpoint's is {expected}")]
    Root { expected: Digest, got: Digest },
}

impl SnapshotChunk {
    /// The chunk of `range` of a whole state held in memory (`buckets` by bucket, and
    /// the tree over their roots): what the simulator and tests serve.
    pub fn of(
        height: Height,
        range: ChunkRange,
        buckets: &std::collections::BTreeMap<u16, Bucket>,
        tree: &state_root::BucketTree,
    ) -> Option<SnapshotChunk> {
        Some(SnapshotChunk {
            height,
            range,
            buckets: buckets
                .range(range.first..=range.last())
                .map(|(b, x)| (*b, x.clone()))
                .collect(),
            proof: tree.prove(u32::from(range.bits), range.first)?,
        })
    }

    /// How many accounts and records it holds.
    pub fn entries(&self) -> usize {
        self.buckets
            .iter()
            .map(|(_, b)| b.accounts.len() + b.records.len())
            .sum()
    }

    /// Checks it is exactly the entries of `range` at `height` in the state whose root is
    /// `state_root`. Structure is checked before anything is hashed, so nothing a peer
    /// sends reaches a debug assertion.
    pub fn verify(
        &self,
        height: Height,
        range: ChunkRange,
        state_root: &Digest,
    ) -> Result<(), ChunkError> {
        same_height(height, self.height)?;
        if self.range != range || !range.is_valid() {
            return Err(ChunkError::Range {
                expected: range,
                got: self.range,
            });
        }
        let expected = (BUCKET_BITS - u32::from(range.bits)) as usize;
        if self.proof.len() != expected {
            return Err(ChunkError::ProofLength {
                bits: range.bits,
                expected,
                got: self.proof.len(),
            });
        }
        let mut previous: Option<u16> = None;
        let mut roots = Vec::with_capacity(self.buckets.len());
        for (b, bucket) in &self.buckets {
            if !range.contains(*b) || previous.is_some_and(|p| p >= *b) || bucket.is_empty() {
                return Err(ChunkError::Bucket { bucket: *b });
            }
            previous = Some(*b);
            if !bucket.is_sorted_in(*b) {
                return Err(ChunkError::Entry { bucket: *b });
            }
            roots.push((*b, bucket.root()));
        }
        let subtree = state_root::subtree_root(u32::from(range.bits), range.first, &roots);
        let got = state_root::fold_path(u32::from(range.bits), range.first, subtree, &self.proof);
        if got != *state_root {
            return Err(ChunkError::Root {
                expected: *state_root,
                got,
            });
        }
        Ok(())
    }
}

/// What a validator serves about its snapshot at a stable checkpoint: enough for anyone
/// holding the genesis file to trust its state root and start a chain at that height.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// q CHECKPOINTs over the height's state digest.
    pub checkpoint: CheckpointCertificate,
    /// What that digest hashes, the state root among it.
    pub opening: StateOpening,
    /// The block at that height and its commit certificate: the chain continues from
    /// it.
    pub block: Block,
    pub commit: CommitCertificate,
    /// The block's tx results, so receipts can be proven at that height too.
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub results: Vec<TxResult>,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Opening(#[from] state_root::OpeningError),
    #[error("the block is at height {block}, the checkpoint at {checkpoint}")]
    Height { checkpoint: Height, block: Height },
    #[error("the block's digest {block} is not the opening's {opening}")]
    Block { opening: Digest, block: Digest },
    #[error("the commit certificate is for block {digest} at height {height}")]
    CommitFor { height: Height, digest: Digest },
    #[error("{results} results for a block of {txs} txs, or their root is not the opening's")]
    Results { txs: usize, results: usize },
    #[error("the block's commit certificate does not verify: {0}")]
    Commit(crate::certs::CertError),
}

impl SnapshotManifest {
    /// The height and state root, if the checkpoint certificate verifies against
    /// `validators`, the opening hashes to its digest, and the block is the one the
    /// opening names, certified.
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        scheme: &dyn Scheme,
    ) -> Result<(Height, Digest), ManifestError> {
        let root = self.opening.verify(&self.checkpoint, validators, scheme)?;
        let h = self.checkpoint.height;
        if self.block.height() != h {
            return Err(ManifestError::Height {
                checkpoint: h,
                block: self.block.height(),
            });
        }
        let digest = self.block.digest();
        if digest != self.opening.block_digest {
            return Err(ManifestError::Block {
                opening: self.opening.block_digest,
                block: digest,
            });
        }
        if self.commit.height != h || self.commit.digest != digest {
            return Err(ManifestError::CommitFor {
                height: self.commit.height,
                digest: self.commit.digest,
            });
        }
        let leaves: Vec<Vec<u8>> = self
            .block
            .tx_hashes()
            .iter()
            .zip(&self.results)
            .map(|(hash, r)| results_leaf(hash, *r))
            .collect();
        if self.results.len() != self.block.txs.len()
            || merkle::root(&leaves) != self.opening.results_root
        {
            return Err(ManifestError::Results {
                txs: self.block.txs.len(),
                results: self.results.len(),
            });
        }
        self.commit
            .verify(validators, scheme)
            .map_err(ManifestError::Commit)?;
        Ok((h, root))
    }
}

/// A whole snapshot in one file (`stele-node snapshot export`, `stele-node init
/// --snapshot`): the manifest and every chunk, each checked again when read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub manifest: SnapshotManifest,
    #[serde(deserialize_with = "crate::codec::grown_vec")]
    pub chunks: Vec<SnapshotChunk>,
}

/// Why a snapshot file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("its manifest does not verify against this genesis: {0}")]
    Manifest(#[from] ManifestError),
    #[error("chunk {index} ({range}): {error}")]
    Chunk {
        index: usize,
        range: ChunkRange,
        error: ChunkError,
    },
    #[error("its chunks do not cover every bucket exactly once")]
    Coverage,
}

impl SnapshotFile {
    /// The height and state root, if the manifest verifies against `validators` and the
    /// chunks are exactly the state under its root.
    pub fn verify(
        &self,
        validators: &ValidatorSet,
        scheme: &dyn Scheme,
    ) -> Result<(Height, Digest), SnapshotFileError> {
        let (h, root) = self.manifest.verify(validators, scheme)?;
        for (index, c) in self.chunks.iter().enumerate() {
            c.verify(h, c.range, &root)
                .map_err(|error| SnapshotFileError::Chunk {
                    index,
                    range: c.range,
                    error,
                })?;
        }
        if !tiles_every_bucket(self.chunks.iter().map(|c| c.range)) {
            return Err(SnapshotFileError::Coverage);
        }
        Ok((h, root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Account;
    use crate::ids::{Amount, Nonce};
    use crate::tx::{RecordKey, RecordValue};
    use std::collections::BTreeMap;
    use stele_crypto::PublicKey;

    fn key(b0: u8, b1: u8, rest: u8) -> PublicKey {
        let mut k = [rest; 32];
        k[0] = b0;
        k[1] = b1;
        PublicKey(k)
    }

    /// A state over a few hundred buckets, its bucket tree, and the server's chunk.
    struct State {
        buckets: BTreeMap<u16, Bucket>,
        tree: state_root::BucketTree,
    }

    impl State {
        fn new() -> State {
            let mut accounts = BTreeMap::new();
            let mut records = BTreeMap::new();
            for i in 0u32..600 {
                let k = key((i % 32) as u8, (i * 13 % 256) as u8, (i % 5) as u8);
                accounts.insert(
                    k,
                    Account {
                        balance: Amount(u64::from(i)),
                        nonce: Nonce(u64::from(i % 3)),
                    },
                );
                if i % 9 == 0 {
                    records.insert(
                        (k, RecordKey::new(vec![i as u8]).unwrap()),
                        RecordValue::new(vec![1, 2, 3]).unwrap(),
                    );
                }
            }
            let buckets = state_root::buckets(&accounts, &records);
            let roots = buckets.iter().map(|(b, x)| (*b, x.root())).collect();
            State {
                buckets,
                tree: state_root::BucketTree::new(&roots),
            }
        }

        fn chunk(&self, range: ChunkRange) -> SnapshotChunk {
            SnapshotChunk::of(Height(128), range, &self.buckets, &self.tree).unwrap()
        }
    }

    #[test]
    fn every_chunk_of_every_size_verifies_and_together_they_hold_the_whole_state() {
        let s = State::new();
        let root = s.tree.root();
        for bits in [0u8, 3, 8, 12, 16] {
            let mut entries = 0;
            for range in ChunkRange::all(bits) {
                if bits == 0 && range.first % 97 != 0 {
                    continue; // 65,536 single buckets: a sample is enough
                }
                let c = s.chunk(range);
                c.verify(Height(128), range, &root).unwrap();
                entries += c.entries();
            }
            if bits > 0 {
                let all: usize = s
                    .buckets
                    .values()
                    .map(|b| b.accounts.len() + b.records.len())
                    .sum();
                assert_eq!(entries, all, "bits {bits}");
            }
        }
        let (a, b) = ChunkRange::new(256, 8).unwrap().split().unwrap();
        assert_eq!((a.first, a.bits, b.first, b.bits), (256, 7, 384, 7));
        assert!(ChunkRange::new(3, 1).is_none());
        assert!(ChunkRange::new(0, 17).is_none());
        assert_eq!(ChunkRange::all(16).len(), 1);
        assert_eq!(ChunkRange::new(0, 16).unwrap().last(), u16::MAX);
    }

    #[test]
    fn a_changed_missing_added_or_misplaced_entry_or_a_wrong_proof_is_refused() {
        let s = State::new();
        let root = s.tree.root();
        let range = ChunkRange::new(7 << 8, 8).unwrap();
        let good = s.chunk(range);
        assert!(good.buckets.len() > 2, "the test needs a populated chunk");
        good.verify(Height(128), range, &root).unwrap();
        let refused = |c: &SnapshotChunk| c.verify(Height(128), range, &root).unwrap_err();

        let mut c = good.clone();
        c.buckets[0].1.accounts[0].1.balance = Amount(1 << 40);
        assert!(matches!(refused(&c), ChunkError::Root { .. }));
        let mut c = good.clone();
        c.buckets.pop();
        assert!(matches!(refused(&c), ChunkError::Root { .. }));
        let mut c = good.clone();
        let [b0, b1] = c.buckets[1].0.to_be_bytes();
        c.buckets[1]
            .1
            .accounts
            .push((key(b0, b1, 255), Account::default()));
        assert!(matches!(refused(&c), ChunkError::Root { .. }));
        // An entry moved into another bucket of the same chunk.
        let mut c = good.clone();
        let moved = c.buckets[0].1.accounts.remove(0);
        c.buckets[1].1.accounts.insert(0, moved);
        assert!(matches!(refused(&c), ChunkError::Entry { .. }));
        let mut c = good.clone();
        c.buckets.swap(0, 1);
        assert!(matches!(refused(&c), ChunkError::Bucket { .. }));
        let mut c = good.clone();
        c.buckets
            .push((0, s.buckets.values().next().unwrap().clone()));
        assert!(matches!(refused(&c), ChunkError::Bucket { .. }));
        let mut c = good.clone();
        c.buckets[0].1 = Bucket::default();
        assert!(matches!(refused(&c), ChunkError::Bucket { .. }));
        let mut c = good.clone();
        c.buckets[0].1.accounts.reverse();
        if c.buckets[0].1.accounts.len() > 1 {
            assert!(matches!(refused(&c), ChunkError::Entry { .. }));
        }
        let mut c = good.clone();
        c.proof[3] = Digest::of(b"forged");
        assert!(matches!(refused(&c), ChunkError::Root { .. }));
        let mut c = good.clone();
        c.proof.pop();
        assert!(matches!(refused(&c), ChunkError::ProofLength { .. }));
        // Another range's true chunk, or the right one at another height.
        let other = s.chunk(ChunkRange::new(8 << 8, 8).unwrap());
        assert!(matches!(refused(&other), ChunkError::Range { .. }));
        let mut c = good.clone();
        c.height = Height(256);
        assert!(matches!(refused(&c), ChunkError::Height { .. }));
        // The honest chunk against another root.
        assert!(matches!(
            good.verify(Height(128), range, &Digest::of(b"other")),
            Err(ChunkError::Root { .. })
        ));
    }

    /// A bucket of `accounts` accounts and `records` records, the state holding it
    /// beside the usual spread, and that state's tree.
    fn crowded(accounts: u32, records: u32) -> (Bucket, state_root::BucketTree) {
        let s = State::new();
        let mut b = Bucket::default();
        for i in 0..accounts.max(records) {
            let mut k = [5u8; 32];
            k[..2].copy_from_slice(&0x1234u16.to_be_bytes());
            k[2..6].copy_from_slice(&i.to_be_bytes());
            if i < accounts {
                b.accounts.push((PublicKey(k), Account::default()));
            }
            if i < records {
                b.records.push((
                    (PublicKey(k), RecordKey::new(vec![1]).unwrap()),
                    RecordValue::new(vec![i as u8]).unwrap(),
                ));
            }
        }
        let mut buckets = s.buckets.clone();
        if !b.is_empty() {
            buckets.insert(0x1234, b.clone());
        }
        let roots = buckets.iter().map(|(k, x)| (*k, x.root())).collect();
        (b, state_root::BucketTree::new(&roots))
    }

    #[test]
    fn every_piece_of_a_bucket_verifies_and_they_reassemble_into_its_chunk() {
        for (accounts, records, bits) in [
            (100, 0, 3),
            (37, 29, 2),
            (64, 64, 4),
            (1, 0, 0),
            (0, 5, 11),
            (0, 0, 5),
        ] {
            let (bucket, tree) = crowded(accounts, records);
            let root = tree.root();
            let n = u64::from(accounts + records);
            let count = PieceId::count(n, bits);
            let mut pieces = Vec::new();
            for index in 0..count as u32 {
                let id = PieceId {
                    bucket: 0x1234,
                    bits,
                    index,
                };
                let p = BucketPiece::of(Height(128), id, &bucket, &tree).unwrap();
                p.verify(Height(128), id, &root)
                    .unwrap_or_else(|e| panic!("{accounts}+{records} by 2^{bits}: {id}: {e}"));
                pieces.push(p);
            }
            let past = PieceId {
                bucket: 0x1234,
                bits,
                index: count as u32,
            };
            assert!(BucketPiece::of(Height(128), past, &bucket, &tree).is_none());
            pieces.reverse();
            let whole = BucketPiece::assemble(pieces).unwrap();
            whole
                .verify(Height(128), ChunkRange::new(0x1234, 0).unwrap(), &root)
                .unwrap();
            assert_eq!(whole.entries() as u64, n);
        }
    }

    #[test]
    fn a_piece_with_a_changed_entry_count_path_or_position_is_refused() {
        let (bucket, tree) = crowded(37, 29);
        let root = tree.root();
        let id = PieceId {
            bucket: 0x1234,
            bits: 3,
            index: 2,
        };
        let good = BucketPiece::of(Height(128), id, &bucket, &tree).unwrap();
        let refused = |p: &BucketPiece| p.verify(Height(128), id, &root).unwrap_err();
        // Another bucket size with the same pieces up to this one: the count is bound.
        for leaves in [65, 67, 72, 80, 128] {
            let mut p = good.clone();
            p.leaves = leaves;
            assert!(matches!(refused(&p), ChunkError::Root { .. }), "{leaves}");
        }
        let mut p = good.clone();
        p.leaves = 17;
        assert!(matches!(refused(&p), ChunkError::PieceLength { .. }));
        let mut p = good.clone();
        p.entries.accounts.pop();
        assert!(matches!(refused(&p), ChunkError::PieceLength { .. }));
        let mut p = good.clone();
        p.entries.accounts[0].1.nonce = Nonce(9);
        assert!(matches!(refused(&p), ChunkError::Root { .. }));
        let mut p = good.clone();
        p.entries.accounts.swap(0, 1);
        assert!(matches!(refused(&p), ChunkError::Entry { .. }));
        let mut p = good.clone();
        p.path.push(Digest::of(b"extra"));
        assert!(matches!(
            refused(&p),
            ChunkError::Root { .. } | ChunkError::PiecePath { .. }
        ));
        let mut p = good.clone();
        p.proof.pop();
        assert!(matches!(refused(&p), ChunkError::ProofLength { .. }));
        // The true next piece, or this one answered for another.
        let next = PieceId { index: 3, ..id };
        let p = BucketPiece::of(Height(128), next, &bucket, &tree).unwrap();
        assert!(matches!(refused(&p), ChunkError::Piece { .. }));
        let mut p = good.clone();
        p.piece = next;
        assert!(matches!(
            p.verify(Height(128), next, &root),
            Err(ChunkError::Root { .. })
        ));
        // Pieces that are not all of one bucket's do not assemble.
        let first = BucketPiece::of(Height(128), PieceId { index: 0, ..id }, &bucket, &tree);
        assert!(BucketPiece::assemble(vec![first.clone().unwrap(), good.clone()]).is_none());
    }

    #[test]
    fn a_chunk_round_trips_through_the_codec() {
        let s = State::new();
        let c = s.chunk(ChunkRange::new(0, 10).unwrap());
        let back: SnapshotChunk =
            crate::codec::decode(&crate::codec::encode(&c), MAX_CHUNK_BYTES).unwrap();
        assert_eq!(back, c);
    }
}
