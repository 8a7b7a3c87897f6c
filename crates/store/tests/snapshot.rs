//! Snapshots through the store's API (issue 24): the state kept at the latest checkpoint
//! heights and served in chunks that verify against the state root while the store
//! moves on, and a new store started from those chunks that continues the same chain.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stele_ledger::{execute, MemState};
use stele_store::{ChunkAnswer, PieceAnswer, SnapshotConfig, Store, StoreConfig};
use stele_types::snapshot::{
    BucketPiece, ChunkRange, PieceId, SnapshotChunk, SnapshotManifest, MAX_CHUNK_BYTES,
    MAX_PIECE_BITS,
};
use stele_types::{Block, CheckpointCertificate, Height, Params, StateView};

fn params3() -> Params {
    Params {
        checkpoint_interval: 3,
        ..params()
    }
}

fn genesis3() -> stele_types::Genesis {
    let mut g = genesis();
    g.params = params3();
    g
}

fn open_kept(dir: &std::path::Path) -> Store {
    open_kept_with(dir, &genesis3())
}

/// Executes and commits the next block of random txs over `s`, and over `mem` alike.
fn step(s: &Store, mem: &mut MemState, rng: &mut ChaCha8Rng) -> Block {
    let h = s.latest_height().next();
    let mut txs = random_txs(s, rng, 20);
    let a = sender(1);
    let n = s.account_of(&a).unwrap().unwrap().nonce.0;
    txs.insert(0, put(a, n, format!("k{h}").as_bytes(), b"v"));
    let block = Block::new(h, 1_700_000_000_000 + h.0, txs);
    let e = execute(&block, s, &params3()).unwrap();
    commit(s, &block, &e);
    let me = execute(&block, &*mem, &params3()).unwrap();
    mem.apply(&block, &me);
    block
}

fn stable(s: &Store, h: u64) {
    s.persist_stable_checkpoint(&CheckpointCertificate {
        height: Height(h),
        state_digest: s.state_digest(Height(h)).unwrap().unwrap(),
        signatures: vec![],
    })
    .unwrap();
}

fn all_chunks(s: &Store, m: &SnapshotManifest) -> Vec<SnapshotChunk> {
    let h = m.checkpoint.height;
    ChunkRange::all(8)
        .into_iter()
        .map(|r| match s.snapshot_chunk(h, r).unwrap() {
            ChunkAnswer::Chunk(c) => {
                c.verify(h, r, &m.opening.state_root).unwrap();
                c
            }
            other => panic!("{r}: {other:?}"),
        })
        .collect()
}

#[test]
fn a_snapshot_is_kept_at_checkpoints_served_while_the_store_moves_on_and_installs_into_a_new_store()
{
    let dir = tempfile::tempdir().unwrap();
    let g = genesis3();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut mem = MemState::genesis(&g);
    let a = open_kept(dir.path());
    let mut blocks = Vec::new();
    let mut at9 = None;
    for _ in 0..9 {
        blocks.push(step(&a, &mut mem, &mut rng));
        if a.latest_height() == Height(9) {
            at9 = Some(mem.clone());
        }
    }
    let at9 = at9.unwrap();
    let on_disk = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Every checkpoint height is kept until one is stable; nothing is served before.
    assert_eq!(a.snapshot_heights(), vec![Height(3), Height(6), Height(9)]);
    assert_eq!(a.snapshot_manifest().unwrap(), None);
    // Then those below the stable one go, files and all.
    stable(&a, 6);
    assert_eq!(a.snapshot_heights(), vec![Height(6), Height(9)]);
    assert_eq!(on_disk(), ["6", "9"]);
    assert_eq!(
        a.snapshot_manifest().unwrap().unwrap().checkpoint.height,
        Height(6)
    );
    stable(&a, 9);
    assert_eq!(a.snapshot_heights(), vec![Height(9)]);
    assert_eq!(on_disk(), ["9"]);
    let manifest = a.snapshot_manifest().unwrap().unwrap();
    assert_eq!(manifest.checkpoint.height, Height(9));
    assert_eq!(
        manifest.opening.state_root,
        at9.state_root(&Default::default()).unwrap()
    );

    // Two more blocks: the chunks still hold height 9's state.
    blocks.push(step(&a, &mut mem, &mut rng));
    blocks.push(step(&a, &mut mem, &mut rng));
    let chunks = all_chunks(&a, &manifest);
    let entries: usize = chunks.iter().map(SnapshotChunk::entries).sum();
    assert_eq!(entries, at9.accounts().count() + at9.records().count());
    assert!(at9.records().count() > 0);

    // A refused install writes nothing.
    let bdir = tempfile::tempdir().unwrap();
    let b = open_kept(bdir.path());
    let mut short = chunks.clone();
    short.remove(17);
    assert!(b.install_snapshot(&manifest, &short).is_err());
    let mut forged = chunks.clone();
    let c = forged.iter_mut().find(|c| !c.buckets.is_empty()).unwrap();
    c.buckets[0].1.accounts[0].1.balance.0 += 1;
    assert!(b.install_snapshot(&manifest, &forged).is_err());
    assert!(
        a.install_snapshot(&manifest, &chunks).is_err(),
        "not below the snapshot"
    );
    assert_eq!(b.latest_height(), Height(0));
    assert_eq!(
        b.state_root_after(&Default::default()).unwrap(),
        MemState::genesis(&g)
            .state_root(&Default::default())
            .unwrap()
    );

    // Read first, so b keeps the accounts at their genesis values in memory: the
    // install must not leave them there.
    for (k, _) in at9.accounts() {
        b.account_of(k).unwrap();
    }
    b.install_snapshot(&manifest, &chunks).unwrap();
    assert_eq!(b.tip(), (Height(9), manifest.checkpoint.state_digest));
    assert_eq!(b.horizon().unwrap(), Height(9));
    assert_eq!(b.block(Height(5)).unwrap(), None);
    assert_eq!(
        b.stable_checkpoint().unwrap(),
        Some(manifest.checkpoint.clone())
    );
    for (k, acct) in at9.accounts() {
        assert_eq!(b.account_of(k).unwrap().as_ref(), Some(acct));
    }
    assert_eq!(
        b.state_root_after(&Default::default()).unwrap(),
        manifest.opening.state_root
    );
    // It continues the same chain: blocks 10 and 11 give A's state digests, and
    // receipts at the installed height can still be proven.
    for block in &blocks[9..] {
        let e = execute(block, &b, &params3()).unwrap();
        assert_eq!(
            Some(e.state_digest),
            a.state_digest(block.height()).unwrap()
        );
        b.commit_block(
            block,
            &cert(block),
            &e.results,
            &e.changes,
            e.state_digest,
            e.opening.as_ref(),
        )
        .unwrap();
    }
    assert_eq!(b.results(Height(9)).unwrap(), a.results(Height(9)).unwrap());
    // The installed block's applied txs are in the indexes, as on A.
    let applied: Vec<_> = blocks[8]
        .txs
        .iter()
        .filter(|t| matches!(a.final_leaf(t), Ok(Some(l)) if l.height == Height(9)))
        .collect();
    assert!(!applied.is_empty());
    for t in applied {
        assert_eq!(b.final_leaf(t).unwrap(), a.final_leaf(t).unwrap());
    }
    drop(b);
    // It reopens, with the full check, as a chain from height 9.
    let b = open_kept(bdir.path());
    assert_eq!(b.tip(), a.tip());
    assert_eq!(b.horizon().unwrap(), Height(9));

    // After a restart A still serves the same chunks (the tree rebuilt from its files).
    drop(a);
    let a = open_kept(dir.path());
    assert_eq!(a.snapshot_heights(), vec![Height(9)]);
    assert_eq!(all_chunks(&a, &manifest), chunks);
    assert_eq!(
        a.snapshot_chunk(Height(3), ChunkRange::all(8)[0]).unwrap(),
        ChunkAnswer::Unavailable
    );
}

/// Pruning removes the blocks below the horizon with everything indexed by them, keeps
/// a kept snapshot's block, and the store reopens (full check) as a chain from there.
#[test]
fn pruning_removes_blocks_and_their_index_entries_below_the_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis3();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut mem = MemState::genesis(&g);
    let s = open_kept(dir.path());
    let blocks: Vec<Block> = (0..20).map(|_| step(&s, &mut mem, &mut rng)).collect();
    // Every checkpoint height is kept until one is certified: pruning stops below the
    // lowest kept snapshot (height 3).
    assert_eq!(s.prune_below(Height(10)).unwrap(), Height(3));
    stable(&s, 18);
    assert_eq!(s.snapshot_heights(), vec![Height(18)]);
    let applied = |b: &Block| -> Vec<stele_types::Transaction> {
        b.txs
            .iter()
            .filter(|t| matches!(s.final_leaf(t), Ok(Some(l)) if l.height == b.height()))
            .cloned()
            .collect()
    };
    let old = applied(&blocks[4]); // height 5
    let kept = applied(&blocks[15]); // height 16
    assert!(!old.is_empty() && !kept.is_empty());
    assert_eq!(s.prune_below(Height(12)).unwrap(), Height(12));
    assert_eq!(s.horizon().unwrap(), Height(12));
    for h in 1..12 {
        assert_eq!(s.block(Height(h)).unwrap(), None, "height {h}");
        assert_eq!(s.certificate(Height(h)).unwrap(), None);
        assert_eq!(s.results(Height(h)).unwrap(), None);
    }
    assert_eq!(s.block_by_digest(&blocks[4].digest()).unwrap(), None);
    for t in &old {
        assert_eq!(s.final_leaf(t).unwrap(), None, "pruned from the indexes");
    }
    for t in &kept {
        assert!(s.final_leaf(t).unwrap().is_some());
    }
    assert!(s.block(Height(12)).unwrap().is_some());
    // The state is whole: the next block executes to the same digest as in memory.
    let next = step(&s, &mut mem, &mut rng);
    assert_eq!(
        s.state_digest(next.height()).unwrap(),
        Some(mem.last_state().unwrap().1)
    );
    // Never past the kept snapshot, and never down again.
    assert_eq!(s.prune_below(Height(25)).unwrap(), Height(18));
    assert_eq!(s.prune_below(Height(5)).unwrap(), Height(18));
    drop(s);
    let s = open_kept(dir.path());
    assert_eq!(s.horizon().unwrap(), Height(18));
    assert_eq!(s.latest_height(), Height(21));
}

/// A store far behind (its peers pruned what it would replay) jumps to a snapshot over
/// its own data: its old chain and the snapshots it kept of it go, its consensus record
/// keeps the views it left but drops the votes at or below the new stable checkpoint,
/// and it continues the chain and reopens with the full check as a chain from there.
#[test]
fn a_store_far_behind_jumps_to_a_snapshot_keeping_the_views_it_left() {
    use stele_types::{DurableEntry, Signature, Signed, ViewNumber};
    let g = genesis3();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut mem = MemState::genesis(&g);
    let adir = tempfile::tempdir().unwrap();
    let a = open_kept(adir.path());
    let blocks: Vec<Block> = (0..11).map(|_| step(&a, &mut mem, &mut rng)).collect();
    stable(&a, 9);
    let manifest = a.snapshot_manifest().unwrap().unwrap();
    assert_eq!(manifest.checkpoint.height, Height(9));
    let chunks = all_chunks(&a, &manifest);

    // B followed the same chain to height 4 (a stable checkpoint and a kept snapshot at
    // 3), with a PREPARE it sent at 5 and the view it left on disk.
    let bdir = tempfile::tempdir().unwrap();
    let b = open_kept(bdir.path());
    let commit = |s: &Store, block: &Block| {
        let e = execute(block, s, &params3()).unwrap();
        s.commit_block(
            block,
            &cert(block),
            &e.results,
            &e.changes,
            e.state_digest,
            e.opening.as_ref(),
        )
        .unwrap();
    };
    for block in &blocks[..4] {
        commit(&b, block);
    }
    stable(&b, 3);
    let pp = Signed {
        value: stele_types::PrePrepare {
            view: ViewNumber(2),
            height: Height(5),
            digest: blocks[4].digest(),
        },
        signature: Signature([7; 64]),
    };
    let vote = DurableEntry::PrepareSent {
        prepare: Signed {
            value: stele_types::Prepare {
                view: ViewNumber(2),
                height: Height(5),
                digest: blocks[4].digest(),
                replica: stele_types::ReplicaId(1),
            },
            signature: Signature([8; 64]),
        },
        pre_prepare: pp,
        body: blocks[4].clone(),
    };
    let left = DurableEntry::ViewChangeSent {
        view: ViewNumber(3),
    };
    b.persist(&[vote.clone(), left.clone()]).unwrap();
    assert_eq!(b.snapshot_heights(), vec![Height(3)]);

    b.install_snapshot(&manifest, &chunks).unwrap();
    assert_eq!(b.tip(), (Height(9), manifest.checkpoint.state_digest));
    assert_eq!(b.horizon().unwrap(), Height(9));
    for h in 1..9 {
        assert_eq!(b.block(Height(h)).unwrap(), None, "block {h}");
        assert_eq!(b.certificate(Height(h)).unwrap(), None, "certificate {h}");
    }
    assert!(b.snapshot_heights().is_empty());
    assert!(!bdir.path().join("snapshots/3").exists());
    let durable = b.durable_entries().unwrap();
    assert!(durable.contains(&left), "{durable:?}");
    assert!(!durable.contains(&vote), "{durable:?}");
    assert_eq!(
        b.stable_checkpoint().unwrap(),
        Some(manifest.checkpoint.clone())
    );
    // Not again, nor backwards.
    assert!(b.install_snapshot(&manifest, &chunks).is_err());
    // It continues the same chain and reopens as a chain from height 9.
    for block in &blocks[9..] {
        commit(&b, block);
        assert_eq!(
            b.state_digest(block.height()).unwrap(),
            a.state_digest(block.height()).unwrap()
        );
    }
    drop(b);
    let b = open_kept(bdir.path());
    assert_eq!(b.tip(), a.tip());
    assert_eq!(b.horizon().unwrap(), Height(9));
    assert!(b.durable_entries().unwrap().contains(&left));
}

/// Every chunk of the snapshot `m`, splitting a range the store calls too large and
/// fetching a single bucket too large in pieces of 2^bits entries, each verified.
/// Returns the chunks and how many pieces it took.
fn fetch_all(s: &Store, m: &SnapshotManifest, bits: u8) -> (Vec<SnapshotChunk>, usize) {
    let h = m.checkpoint.height;
    let root = m.opening.state_root;
    let mut todo = ChunkRange::all(8);
    let (mut chunks, mut pieces) = (Vec::new(), 0);
    while let Some(r) = todo.pop() {
        match s.snapshot_chunk(h, r).unwrap() {
            ChunkAnswer::Chunk(c) => {
                c.verify(h, r, &root).unwrap();
                chunks.push(c);
            }
            ChunkAnswer::TooLarge => match r.split() {
                Some((a, b)) => todo.extend([a, b]),
                None => {
                    let mut got = Vec::new();
                    for index in 0.. {
                        let id = PieceId {
                            bucket: r.first,
                            bits,
                            index,
                        };
                        match s.snapshot_piece(h, id).unwrap() {
                            PieceAnswer::Piece(p) => {
                                p.verify(h, id, &root).unwrap();
                                assert!(
                                    stele_types::codec::encode(&p).len() <= MAX_CHUNK_BYTES,
                                    "a piece fits in a chunk"
                                );
                                got.push(p);
                            }
                            PieceAnswer::NoSuchPiece => break,
                            PieceAnswer::Unavailable => panic!("{id}: unavailable"),
                        }
                    }
                    pieces += got.len();
                    let c = BucketPiece::assemble(got).unwrap();
                    c.verify(h, r, &root).unwrap();
                    chunks.push(c);
                }
            },
            ChunkAnswer::Unavailable => panic!("{r}: unavailable"),
        }
    }
    (chunks, pieces)
}

/// `genesis3` with `n` more accounts ground into bucket `bucket`.
fn crowded_genesis(bucket: u16, n: u32) -> stele_types::Genesis {
    let mut g = genesis3();
    g.accounts.extend((0..n).map(|i| {
        let mut k = [3u8; 32];
        k[..2].copy_from_slice(&bucket.to_be_bytes());
        k[2..6].copy_from_slice(&i.to_be_bytes());
        stele_types::GenesisAccount {
            key: stele_crypto::PublicKey(k),
            balance: stele_types::Amount(100),
        }
    }));
    g
}

/// A store of `g` in `dir` keeping a snapshot every 3 heights.
fn open_kept_with(dir: &std::path::Path, g: &stele_types::Genesis) -> Store {
    open_with(
        &dir.join("db"),
        g,
        &StoreConfig {
            snapshots: Some(SnapshotConfig {
                dir: dir.join("snapshots"),
                every: 3,
                kept: 1,
            }),
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

#[test]
fn a_bucket_larger_than_a_chunk_is_served_in_pieces_and_installs() {
    // 90,000 keys ground into bucket 0007 (4.5 MB, past the 4 MiB chunk): before pieces
    // its only answer was "too large", so no validator could ever sync this state.
    const CROWDED: u32 = 90_000;
    let dir = tempfile::tempdir().unwrap();
    let g = crowded_genesis(7, CROWDED);
    let open = |d: &std::path::Path| open_kept_with(d, &g);
    let a = open(dir.path());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut mem = MemState::genesis(&g);
    for _ in 0..3 {
        step(&a, &mut mem, &mut rng);
    }
    stable(&a, 3);
    let m = a.snapshot_manifest().unwrap().unwrap();
    let bucket7 = ChunkRange::new(7, 0).unwrap();
    assert_eq!(
        a.snapshot_chunk(Height(3), bucket7).unwrap(),
        ChunkAnswer::TooLarge
    );
    let (chunks, pieces) = fetch_all(&a, &m, MAX_PIECE_BITS);
    assert_eq!(pieces, (CROWDED as usize).div_ceil(1 << MAX_PIECE_BITS));
    // Past the last piece, or pieces larger than served: no such piece.
    let past = PieceId {
        bucket: 7,
        bits: MAX_PIECE_BITS,
        index: pieces as u32,
    };
    assert_eq!(
        a.snapshot_piece(Height(3), past).unwrap(),
        PieceAnswer::NoSuchPiece
    );
    for bits in [MAX_PIECE_BITS + 1, stele_store::MIN_SERVED_PIECE_BITS - 1] {
        let other = PieceId {
            bits,
            index: 0,
            ..past
        };
        assert_eq!(
            a.snapshot_piece(Height(3), other).unwrap(),
            PieceAnswer::NoSuchPiece,
            "pieces of 2^{bits} are not served"
        );
    }
    let entries: usize = chunks.iter().map(SnapshotChunk::entries).sum();
    assert_eq!(entries, mem.accounts().count() + mem.records().count());

    let bdir = tempfile::tempdir().unwrap();
    let b = open(bdir.path());
    b.install_snapshot(&m, &chunks).unwrap();
    assert_eq!(b.tip(), a.tip());
    assert_eq!(
        b.state_root_after(&Default::default()).unwrap(),
        m.opening.state_root
    );
    assert_eq!(
        m.opening.state_root,
        mem.state_root(&Default::default()).unwrap()
    );

    // After a restart (tree and piece index rebuilt), smaller pieces, the same state.
    drop(a);
    let a = open(dir.path());
    let (again, pieces) = fetch_all(&a, &m, 9);
    assert_eq!(pieces, (CROWDED as usize).div_ceil(1 << 9));
    let sorted = |mut c: Vec<SnapshotChunk>| {
        c.sort_by_key(|c| c.range);
        c
    };
    assert_eq!(sorted(again), sorted(chunks));
}

#[test]
fn a_kept_snapshot_whose_files_do_not_hash_to_its_root_is_removed_not_served() {
    // As after an upgrade that changed how the state root is computed, or damage: a
    // snapshot whose entries no longer give its certified root. Every peer would refuse
    // every chunk of it, so it must not be offered.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut mem = MemState::genesis(&genesis3());
    let a = open_kept(dir.path());
    for _ in 0..6 {
        step(&a, &mut mem, &mut rng);
    }
    stable(&a, 3);
    stable(&a, 6);
    assert_eq!(a.snapshot_heights(), vec![Height(6)]);
    drop(a);
    // Served intact after a restart (the tree rebuilt from the files matches).
    let a = open_kept(dir.path());
    let m = a.snapshot_manifest().unwrap().unwrap();
    assert_eq!(m.checkpoint.height, Height(6));
    assert!(matches!(
        a.snapshot_chunk(Height(6), ChunkRange::all(0)[0]).unwrap(),
        ChunkAnswer::Chunk(_)
    ));
    drop(a);

    let snap = dir.path().join("snapshots").join("6");
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &snap).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &snap, cfs).unwrap();
        let accounts = db.cf_handle("accounts").unwrap();
        let (k, v) = db
            .iterator_cf(accounts, rocksdb::IteratorMode::Start)
            .next()
            .unwrap()
            .unwrap();
        let mut v = v.to_vec();
        *v.last_mut().unwrap() ^= 1;
        db.put_cf(accounts, k, v).unwrap();
    }
    let a = open_kept(dir.path());
    assert_eq!(
        a.snapshot_heights(),
        vec![Height(6)],
        "not checked until asked"
    );
    assert_eq!(a.snapshot_manifest().unwrap(), None);
    assert_eq!(a.snapshot_heights(), Vec::<Height>::new());
    assert!(!snap.exists(), "its files are gone");
    assert_eq!(
        a.snapshot_chunk(Height(6), ChunkRange::all(0)[0]).unwrap(),
        ChunkAnswer::Unavailable
    );
    // The next snapshot height is kept and served as usual.
    for _ in 0..3 {
        step(&a, &mut mem, &mut rng);
    }
    stable(&a, 9);
    assert_eq!(
        a.snapshot_manifest().unwrap().unwrap().checkpoint.height,
        Height(9)
    );
}

#[test]
fn a_chunk_is_called_too_large_only_when_its_encoding_is() {
    // A syncing validator judges a peer faulty when the halves (or pieces) of a range it
    // called too large add up to less than the limit, so the server must never call a
    // chunk too large that fits. 80,000 accounts in one bucket encode to about 3.8 MB.
    let dir = tempfile::tempdir().unwrap();
    let g = crowded_genesis(9, 80_000);
    let a = open_kept_with(dir.path(), &g);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut mem = MemState::genesis(&g);
    for _ in 0..3 {
        step(&a, &mut mem, &mut rng);
    }
    stable(&a, 3);
    let m = a.snapshot_manifest().unwrap().unwrap();
    // The chunk of buckets 0000..=00ff holds bucket 0009 and a few genesis accounts.
    match a.snapshot_chunk(Height(3), ChunkRange::all(8)[0]).unwrap() {
        ChunkAnswer::Chunk(c) => {
            c.verify(Height(3), c.range, &m.opening.state_root).unwrap();
            let len = stele_types::codec::encoded_len(&c);
            assert!((3_800_000..=MAX_CHUNK_BYTES).contains(&len), "{len} bytes");
        }
        other => panic!("a chunk that fits was answered {other:?}"),
    }
}
