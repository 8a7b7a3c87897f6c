//! Store benchmarks: synced commits of 1,000-tx blocks (blocks/s and tx/s), execution
//! over the store, durable consensus writes (synced), block reads by height, and the
//! state root over a million accounts.
//!
//! Every commit here is a real `fsync` of the WAL unless the name says "unsynced", so
//! the figures are the disk's as much as the code's.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use stele_crypto::{ChainId, Digest, PublicKey, Signature, Signed};
use stele_ledger::{execute, genesis_changes, genesis_state_digest};
use stele_store::{ChunkAnswer, GenesisState, SnapshotConfig, Store, StoreConfig};
use stele_types::snapshot::{ChunkRange, SnapshotChunk, DEFAULT_CHUNK_BITS};
use stele_types::{
    Account, Amount, Block, CheckpointCertificate, CommitCertificate, DurableEntry, Genesis,
    GenesisAccount, Height, Nonce, Op, Params, PrePrepare, Prepare, RecordKey, RecordValue,
    ReplicaId, StateChanges, StateError, StateView, Transaction, TxBody, TxHash, TxLocation,
    ViewNumber,
};

const TXS: usize = 1000;

fn key(i: usize) -> PublicKey {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PublicKey(k)
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: ChainId::new("bench").expect("valid chain id"),
        genesis_time_ms: 0,
        validators: vec![],
        accounts: (0..TXS)
            .map(|i| GenesisAccount {
                key: key(i),
                balance: Amount(1_000_000_000),
            })
            .collect(),
        params: Params::default(),
    }
}

fn open(dir: &std::path::Path, sync: bool) -> Store {
    let g = genesis();
    let initial = GenesisState {
        changes: genesis_changes(&g),
        state_digest: genesis_state_digest(&g),
    };
    let config = StoreConfig {
        sync,
        ..StoreConfig::default()
    };
    Store::open(dir, &g, &initial, &config).expect("opens")
}

/// The block at `height`: every sender pays the next one, with nonce height − 1.
fn block(height: Height) -> Block {
    let txs: Vec<Transaction> = (0..TXS)
        .map(|i| Signed {
            value: TxBody {
                sender: key(i),
                nonce: Nonce(height.0 - 1),
                op: Op::Transfer {
                    to: key((i + 1) % TXS),
                    amount: Amount(1),
                },
            },
            signature: Signature([1; 64]),
        })
        .collect();
    Block::new(height, height.0, txs)
}

fn cert(b: &Block) -> CommitCertificate {
    CommitCertificate {
        view: ViewNumber(0),
        height: b.height(),
        digest: b.digest(),
        commits: vec![],
    }
}

fn bench_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("store commit");
    g.throughput(Throughput::Elements(TXS as u64));
    g.sample_size(20);
    for sync in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path(), sync);
        let params = Params::default();
        let name = if sync { "synced" } else { "unsynced" };
        g.bench_function(BenchmarkId::new("1000-tx block", name), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let blk = block(store.latest_height().next());
                    let e = execute(&blk, &store, &params).expect("executes");
                    let start = Instant::now();
                    store
                        .commit_block(
                            &blk,
                            &cert(&blk),
                            &e.results,
                            &e.changes,
                            e.state_digest,
                            e.opening.as_ref(),
                        )
                        .expect("commits");
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("store execute");
    g.throughput(Throughput::Elements(TXS as u64));
    g.sample_size(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), true);
    let blk = block(Height(1));
    g.bench_function("execute 1000-tx block over the store", |b| {
        b.iter(|| execute(&blk, &store, &Params::default()).expect("executes"))
    });
    g.finish();
}

fn bench_durable(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), true);
    let mut g = c.benchmark_group("store durable (synced)");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    let prepare = |h: u64, body: Block| DurableEntry::PrepareSent {
        pre_prepare: Signed {
            value: PrePrepare {
                view: ViewNumber(0),
                height: Height(h),
                digest: body.digest(),
            },
            signature: Signature([2; 64]),
        },
        prepare: Signed {
            value: Prepare {
                view: ViewNumber(0),
                height: Height(h),
                digest: body.digest(),
                replica: ReplicaId(1),
            },
            signature: Signature([3; 64]),
        },
        body,
    };
    let mut h = 0u64;
    g.bench_function("persist VIEW-CHANGE view", |b| {
        b.iter(|| {
            h += 1;
            store
                .persist(&[DurableEntry::ViewChangeSent {
                    view: ViewNumber(h),
                }])
                .expect("persists")
        })
    });
    let big = block(Height(1));
    g.bench_function("persist PREPARE with a 1000-tx body", |b| {
        b.iter(|| {
            h += 1;
            store.persist(&[prepare(h, big.clone())]).expect("persists")
        })
    });
    g.finish();
}

fn bench_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path(), false);
    let params = Params::default();
    const BLOCKS: u64 = 64;
    for _ in 0..BLOCKS {
        let blk = block(store.latest_height().next());
        let e = execute(&blk, &store, &params).expect("executes");
        store
            .commit_block(
                &blk,
                &cert(&blk),
                &e.results,
                &e.changes,
                e.state_digest,
                e.opening.as_ref(),
            )
            .expect("commits");
    }
    store.flush().expect("flushes");
    let mut g = c.benchmark_group("store read");
    g.throughput(Throughput::Elements(1));
    let mut h = 0u64;
    g.bench_function("1000-tx block by height", |b| {
        b.iter(|| {
            h = h % BLOCKS + 1;
            store.block(Height(h)).expect("reads").expect("present")
        })
    });
    let digest: Digest = block(Height(7)).digest();
    g.bench_function("1000-tx block by digest", |b| {
        b.iter(|| {
            store
                .block_by_digest(&digest)
                .expect("reads")
                .expect("present")
        })
    });
    g.finish();
}

/// The state root (issue 24) over 1,000,000 accounts: opening the store (which scans
/// every account into the root's buckets), and the root at a checkpoint after a block's
/// worth and after ten blocks' worth of changed accounts.
fn bench_state_root(c: &mut Criterion) {
    const ACCOUNTS: usize = 1_000_000;
    let g = Genesis {
        accounts: (0..ACCOUNTS)
            .map(|i| GenesisAccount {
                key: key(i),
                balance: Amount(1_000),
            })
            .collect(),
        ..genesis()
    };
    let initial = GenesisState {
        changes: genesis_changes(&g),
        state_digest: genesis_state_digest(&g),
    };
    let config = StoreConfig {
        sync: false,
        ..StoreConfig::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    drop(Store::open(dir.path(), &g, &initial, &config).expect("creates"));
    let started = Instant::now();
    let store = Store::open(dir.path(), &g, &initial, &config).expect("opens");
    eprintln!(
        "store state root: reopening with {ACCOUNTS} accounts (full check, bucket scan) took {:?}",
        started.elapsed()
    );
    let mut group = c.benchmark_group("store state root, 1,000,000 accounts");
    group.sample_size(10);
    for changed in [2_000usize, 20_000] {
        let changes = StateChanges {
            accounts: (0..changed)
                .map(|i| {
                    let a = Account {
                        balance: Amount(7),
                        nonce: Nonce(1),
                    };
                    (key(i * 37 % ACCOUNTS), a)
                })
                .collect(),
            records: Default::default(),
        };
        group.bench_function(format!("root after {changed} changed accounts"), |b| {
            b.iter(|| store.state_root_after(&changes).expect("reads"))
        });
    }
    group.finish();
}

/// Issue 24's sync figures over 1,000,000 accounts, one-shot and printed (run with
/// `STELE_BENCH_SNAPSHOT=1`; about a minute): building them by replaying 500 blocks of
/// 2,000 new-account transfers (execute and commit, unsynced; no signature checks, no
/// network), the checkpoint block's commit with the snapshot taken, then serving every
/// chunk, verifying each, and installing them into a new store.
fn bench_snapshot(_c: &mut Criterion) {
    if std::env::var_os("STELE_BENCH_SNAPSHOT").is_none() {
        return;
    }
    const BLOCKS: u64 = 500;
    const PER_BLOCK: usize = 2 * TXS;
    let mut g = genesis();
    g.params.checkpoint_interval = BLOCKS;
    let initial = GenesisState {
        changes: genesis_changes(&g),
        state_digest: genesis_state_digest(&g),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = StoreConfig {
        sync: false,
        snapshots: Some(SnapshotConfig {
            dir: dir.path().join("snapshots"),
            every: BLOCKS,
            kept: 1,
        }),
        ..StoreConfig::default()
    };
    let a = Store::open(&dir.path().join("a"), &g, &initial, &config).expect("opens");
    let amount = g.params.min_new_account.0.max(1);
    let started = Instant::now();
    let mut last = (Duration::ZERO, Duration::ZERO);
    for h in 1..=BLOCKS {
        let txs: Vec<Transaction> = (0..PER_BLOCK)
            .map(|i| Signed {
                value: TxBody {
                    sender: key(i % TXS),
                    nonce: Nonce((h - 1) * 2 + (i / TXS) as u64),
                    op: Op::Transfer {
                        to: key(TXS + (h as usize - 1) * PER_BLOCK + i),
                        amount: Amount(amount),
                    },
                },
                signature: Signature([1; 64]),
            })
            .collect();
        let b = Block::new(Height(h), h, txs);
        let t = Instant::now();
        let e = execute(&b, &a, &g.params).expect("executes");
        let executed = t.elapsed();
        a.commit_block(
            &b,
            &cert(&b),
            &e.results,
            &e.changes,
            e.state_digest,
            e.opening.as_ref(),
        )
        .expect("commits");
        last = (executed, t.elapsed() - executed);
    }
    let replay = started.elapsed();
    let h = Height(BLOCKS);
    a.persist_stable_checkpoint(&CheckpointCertificate {
        height: h,
        state_digest: a.state_digest(h).expect("reads").expect("committed"),
        signatures: vec![],
    })
    .expect("persists");
    let manifest = a.snapshot_manifest().expect("reads").expect("kept");
    let root = manifest.opening.state_root;
    let t = Instant::now();
    let chunks: Vec<SnapshotChunk> = ChunkRange::all(DEFAULT_CHUNK_BITS)
        .into_iter()
        .map(|r| match a.snapshot_chunk(h, r).expect("reads") {
            ChunkAnswer::Chunk(c) => c,
            other => panic!("{r}: {other:?}"),
        })
        .collect();
    let served = t.elapsed();
    let bytes: usize = chunks
        .iter()
        .map(|c| stele_types::codec::encode(c).len())
        .sum();
    let t = Instant::now();
    for c in &chunks {
        c.verify(h, c.range, &root).expect("verifies");
    }
    let verified = t.elapsed();
    let entries: usize = chunks.iter().map(SnapshotChunk::entries).sum();
    let b = Store::open(
        &dir.path().join("b"),
        &g,
        &initial,
        &StoreConfig {
            sync: false,
            ..StoreConfig::default()
        },
    )
    .expect("opens");
    let t = Instant::now();
    b.install_snapshot(&manifest, &chunks).expect("installs");
    let installed = t.elapsed();
    assert_eq!(
        b.state_root_after(&StateChanges::default()).expect("reads"),
        root
    );
    eprintln!(
        "snapshot, {entries} accounts: replaying {BLOCKS} blocks of {PER_BLOCK} new accounts took \
         {replay:?} (the checkpoint block: executing it with the root over every account changed \
         since the last checkpoint {:?}, committing it with the snapshot taken {:?}); serving {} chunks \
         ({bytes} bytes) {served:?}, verifying them {verified:?}, installing {installed:?}",
        last.0,
        last.1,
        chunks.len()
    );
}

/// The ledger as the store holds it, but with no state root: what execution cost before
/// snapshots (issue 24), the baseline of [`bench_checkpoint_latency`].
struct NoRoot<'a>(&'a Store);

impl StateView for NoRoot<'_> {
    fn account(&self, key: &PublicKey) -> Result<Option<Account>, StateError> {
        self.0.account(key)
    }
    fn record(
        &self,
        owner: &PublicKey,
        key: &RecordKey,
    ) -> Result<Option<RecordValue>, StateError> {
        self.0.record(owner, key)
    }
    fn tx_location(&self, hash: &TxHash) -> Result<Option<TxLocation>, StateError> {
        self.0.tx_location(hash)
    }
    fn nonce_tx(&self, sender: &PublicKey, nonce: Nonce) -> Result<Option<TxHash>, StateError> {
        self.0.nonce_tx(sender, nonce)
    }
    fn last_state(&self) -> Result<(Height, Digest), StateError> {
        self.0.last_state()
    }
    fn state_root(&self, _: &StateChanges) -> Result<Digest, StateError> {
        Ok(Digest::ZERO)
    }
}

/// Percentile `p` (0–100) of sorted `xs`.
fn percentile(xs: &[Duration], p: usize) -> Duration {
    xs[(xs.len() - 1) * p / 100]
}

/// Issue 24's "computing the root must not stall commits", one-shot and printed (run
/// with `STELE_BENCH_CHECKPOINT=1`; a few minutes). One validator's execute-and-commit
/// path over 1,000,000 accounts, synced, with `config/testnet.toml`'s checkpoint interval
/// (128), block cap (2,000) and batch delay (20 ms): transfers between random accounts
/// arrive at `STELE_BENCH_RATE` tx/s (default 5,000); a block is cut every 20 ms (sooner
/// when 2,000 txs wait, later while the one before still commits) and a tx's latency is
/// from its arrival to its block's commit. Consensus itself is not in it.
/// Run twice on fresh stores: with the state root and a snapshot at every checkpoint, and
/// without either (execution told the root is zero, no snapshots kept).
fn bench_checkpoint_latency(_c: &mut Criterion) {
    if std::env::var_os("STELE_BENCH_CHECKPOINT").is_none() {
        return;
    }
    const ACCOUNTS: usize = 1_000_000;
    const INTERVAL: u64 = 128;
    const MAX_BLOCK: usize = 2_000;
    const BLOCK_EVERY: Duration = Duration::from_millis(20);
    let rate: f64 = std::env::var("STELE_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5_000.0);
    let total: usize = std::env::var("STELE_BENCH_TXS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200_000);
    let mut g = Genesis {
        accounts: (0..ACCOUNTS)
            .map(|i| GenesisAccount {
                key: key(i),
                balance: Amount(1_000_000),
            })
            .collect(),
        ..genesis()
    };
    g.params.checkpoint_interval = INTERVAL;
    let initial = GenesisState {
        changes: genesis_changes(&g),
        state_digest: genesis_state_digest(&g),
    };
    for with_root in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig {
            sync: true,
            snapshots: with_root.then(|| SnapshotConfig {
                dir: dir.path().join("snapshots"),
                every: INTERVAL,
                kept: 2,
            }),
            ..StoreConfig::default()
        };
        let store = std::sync::Arc::new(
            Store::open(&dir.path().join("db"), &g, &initial, &config).expect("opens"),
        );
        if with_root {
            // As a validator runs it.
            store.start_background().expect("starts");
        }
        // A fixed LCG: both runs send the same txs at the same times.
        let mut seed = 0x5eed_u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        let mut nonces = vec![0u64; ACCOUNTS];
        let mut latencies = Vec::with_capacity(total);
        let mut checkpoint_blocks = Vec::new();
        let mut checkpoint_split = (Duration::ZERO, Duration::ZERO);
        let mut other_blocks = Vec::new();
        let mut sent = 0usize;
        let arrival = |i: usize| Duration::from_secs_f64(i as f64 / rate);
        let mut last_cut = Duration::ZERO;
        // Real time, idle gaps included: the background thread gets the idle time a
        // validator would give it.
        let start = Instant::now();
        while sent < total {
            // A block is cut every `BLOCK_EVERY`, or as soon as a full one waits, and
            // never before the one before it committed.
            let full = arrival((sent + MAX_BLOCK - 1).min(total - 1));
            let cut = (last_cut + BLOCK_EVERY)
                .min(full)
                .max(arrival(sent))
                .max(start.elapsed());
            std::thread::sleep(cut.saturating_sub(start.elapsed()));
            last_cut = cut;
            let mut n = 0;
            while sent + n < total && n < MAX_BLOCK && arrival(sent + n) <= cut {
                n += 1;
            }
            let h = store.latest_height().next();
            let txs: Vec<Transaction> = (0..n)
                .map(|_| {
                    let from = next() % ACCOUNTS;
                    let nonce = nonces[from];
                    nonces[from] += 1;
                    Signed {
                        value: TxBody {
                            sender: key(from),
                            nonce: Nonce(nonce),
                            op: Op::Transfer {
                                to: key(next() % ACCOUNTS),
                                amount: Amount(1),
                            },
                        },
                        signature: Signature([1; 64]),
                    }
                })
                .collect();
            let b = Block::new(h, h.0, txs);
            let t = Instant::now();
            let e = if with_root {
                execute(&b, &*store, &g.params)
            } else {
                execute(&b, &NoRoot(&store), &g.params)
            }
            .expect("executes");
            let executed = t.elapsed();
            let opening = if with_root { e.opening.as_ref() } else { None };
            store
                .commit_block(
                    &b,
                    &cert(&b),
                    &e.results,
                    &e.changes,
                    e.state_digest,
                    opening,
                )
                .expect("commits");
            let took = t.elapsed();
            let clock = start.elapsed();
            if h.0 % INTERVAL == 0 {
                checkpoint_blocks.push(took);
                checkpoint_split.0 += executed;
                checkpoint_split.1 += took - executed;
                store
                    .persist_stable_checkpoint(&CheckpointCertificate {
                        height: h,
                        state_digest: e.state_digest,
                        signatures: vec![],
                    })
                    .expect("persists");
            } else {
                other_blocks.push(took);
            }
            latencies.extend((sent..sent + n).map(|i| clock - arrival(i)));
            sent += n;
        }
        let writes = store.snapshot_writes();
        latencies.sort();
        other_blocks.sort();
        let blocks = other_blocks.len() + checkpoint_blocks.len();
        let slowest = checkpoint_blocks.iter().max().copied().unwrap_or_default();
        let count = checkpoint_blocks.len().max(1) as u32;
        let mean = checkpoint_blocks.iter().sum::<Duration>() / count;
        eprintln!(
            "checkpoint latency, {ACCOUNTS} accounts, {total} txs at {rate} tx/s, {}: {blocks} \
             blocks in {:?}; tx latency p50 {:?} p90 {:?} p99 {:?} max {:?}; blocks p50 {:?} \
             p99 {:?}; the {} checkpoint blocks mean {mean:?} (executing {:?}, committing {:?}) \
             max {slowest:?}; {} snapshots written, mean {:?} max {:?}; heights passed over \
             (the one before still being written) {}",
            if with_root {
                "state root and snapshots"
            } else {
                "no state root, no snapshots"
            },
            start.elapsed(),
            percentile(&latencies, 50),
            percentile(&latencies, 90),
            percentile(&latencies, 99),
            latencies.last().copied().unwrap_or_default(),
            percentile(&other_blocks, 50),
            percentile(&other_blocks, 99),
            checkpoint_blocks.len(),
            checkpoint_split.0 / count,
            checkpoint_split.1 / count,
            writes.count,
            writes.total / (writes.count.max(1) as u32),
            writes.max,
            store.snapshots_skipped(),
        );
    }
}

criterion_group!(
    benches,
    bench_commit,
    bench_durable,
    bench_reads,
    bench_state_root,
    bench_snapshot,
    bench_checkpoint_latency
);
criterion_main!(benches);
