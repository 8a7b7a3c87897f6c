//! The store's behaviour through its public API: genesis, commits and reads, the
//! write-once indexes, receipts, durable consensus state with its garbage collection,
//! and `open` refusing foreign or inconsistent databases.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stele_crypto::{Digest, Signature, Signed};
use stele_ledger::{execute, MemState};
use stele_store::{SnapshotConfig, Store, StoreConfig, StoreError, COLUMN_FAMILIES};
use stele_types::{
    Block, CheckpointCertificate, DurableEntry, Height, NewView, PrePrepare, Prepare,
    PreparedCertificate, RecordKey, ReplicaId, StateView, TxResult, ViewNumber,
};

fn raw_db(dir: &std::path::Path) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    rocksdb::DB::open_cf(&opts, dir, COLUMN_FAMILIES).unwrap()
}

#[test]
fn a_fresh_database_holds_the_genesis_state_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let expected = genesis_state(&g).state_digest;
    {
        let s = open(dir.path()).unwrap();
        assert_eq!(s.tip(), (Height(0), expected));
        assert_eq!(
            s.account_of(&sender(3)).unwrap().unwrap().balance.0,
            BALANCE
        );
        assert_eq!(s.block(Height(0)).unwrap(), None);
        assert_eq!(s.state_digest(Height(0)).unwrap(), Some(expected));
    }
    let s = open(dir.path()).unwrap();
    assert_eq!(s.last_state().unwrap(), (Height(0), expected));
}

#[test]
fn a_database_of_another_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    let other = genesis_with_time(42);
    let err = open_with(dir.path(), &other, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::WrongGenesis { .. }), "{err}");
    assert!(err.to_string().contains("another chain"), "{err}");
}

#[test]
fn a_genesis_state_that_does_not_match_the_genesis_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let mut state = genesis_state(&g);
    state
        .changes
        .accounts
        .get_mut(&sender(0))
        .unwrap()
        .balance
        .0 += 1;
    let err = Store::open(dir.path(), &g, &state, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::BadGenesisState(_)), "{err}");
}

#[test]
fn store_backed_execution_matches_memory_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let mut mem = MemState::genesis(&g);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut blocks = Vec::new();
    {
        let s = open(dir.path()).unwrap();
        for i in 0..30 {
            let txs = if i % 7 == 3 {
                Vec::new()
            } else {
                random_txs(&s, &mut rng, 40)
            };
            let (block, e) = commit_next(&s, txs);
            let me = execute(&block, &mem, &params()).unwrap();
            assert_eq!(e, me, "height {}", block.height());
            mem.apply(&block, &me);
            blocks.push((block, e));
        }
        assert_eq!(s.last_state().unwrap(), mem.last_state().unwrap());
    }
    let s = open(dir.path()).unwrap();
    assert_eq!(s.last_state().unwrap(), mem.last_state().unwrap());
    for (k, a) in mem.accounts() {
        assert_eq!(s.account_of(k).unwrap().as_ref(), Some(a));
    }
    for ((owner, k), v) in mem.records() {
        assert_eq!(s.record_of(owner, k).unwrap().as_ref(), Some(v));
    }
    for (block, e) in &blocks {
        let h = block.height();
        assert_eq!(s.block(h).unwrap().as_ref(), Some(block));
        assert_eq!(
            s.block_by_digest(&block.digest()).unwrap(),
            Some((h, block.clone()))
        );
        assert_eq!(s.certificate(h).unwrap(), Some(cert(block)));
        assert_eq!(s.state_digest(h).unwrap(), Some(e.state_digest));
        for (i, hash) in e.tx_hashes.iter().enumerate() {
            if e.results[i].is_applied() {
                let (tx, loc) = s.tx(hash).unwrap().unwrap();
                assert_eq!(tx, block.txs[i]);
                assert_eq!(
                    (loc.height, loc.index, loc.result),
                    (h, i as u32, e.results[i])
                );
            }
        }
    }
    assert_eq!(s.block(Height(31)).unwrap(), None);
    assert_eq!(s.block_by_digest(&Digest([9; 32])).unwrap(), None);
}

#[test]
fn only_applied_txs_enter_the_tx_and_nonce_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let (a, b) = (sender(0), sender(1));
    let ok = pay(a, 0, b, 5);
    let poor = pay(b, 0, a, BALANCE + 100);
    let gap = pay(a, 5, b, 5);
    let unknown = pay(key(99), 0, a, 5);
    let (block, e) = commit_next(
        &s,
        vec![ok.clone(), poor.clone(), gap.clone(), unknown.clone()],
    );
    assert_eq!(
        e.results,
        vec![
            TxResult::Ok,
            TxResult::InsufficientFunds,
            TxResult::NonceGap,
            TxResult::UnknownSender
        ]
    );
    let h = block.tx_hashes();
    assert!(s.tx_location(&h[0]).unwrap().is_some());
    assert!(s.tx_location(&h[1]).unwrap().is_some());
    assert_eq!(s.tx_location(&h[2]).unwrap(), None);
    assert_eq!(s.tx_location(&h[3]).unwrap(), None);
    assert_eq!(s.nonce_tx(&a, stele_types::Nonce(0)).unwrap(), Some(h[0]));
    assert_eq!(s.nonce_tx(&b, stele_types::Nonce(0)).unwrap(), Some(h[1]));
    assert_eq!(s.nonce_tx(&a, stele_types::Nonce(5)).unwrap(), None);
    // Included again: its nonce is used, and the index keeps the first application.
    let (_, e2) = commit_next(&s, vec![ok]);
    assert_eq!(e2.results, vec![TxResult::StaleNonce]);
    assert_eq!(s.tx_location(&h[0]).unwrap().unwrap().height, Height(1));
}

/// The indexes are write-once, and the store checks it in the builds that keep debug
/// assertions (the tests', and the one `make testnet` runs): results that apply a tx a
/// second time are a bug upstream, never something to write over.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "applied twice: the tx index is write-once")]
fn results_applying_a_tx_again_trip_the_write_once_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let ok = pay(sender(0), 0, sender(1), 5);
    commit_next(&s, vec![pay(sender(2), 0, sender(1), 1), ok.clone()]);
    let b2 = Block::new(
        Height(2),
        1_000_000,
        vec![pay(sender(2), 1, sender(1), 1), ok],
    );
    let _ = s.commit_block(
        &b2,
        &cert(&b2),
        &[TxResult::Ok, TxResult::Ok],
        &Default::default(),
        Digest([1; 32]),
        None,
    );
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "used twice: the nonce index is write-once")]
fn results_applying_a_used_nonce_trip_the_write_once_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    commit_next(&s, vec![pay(sender(0), 0, sender(1), 5)]);
    // Another tx with the same sender and nonce.
    let b2 = Block::new(Height(2), 1_000_000, vec![pay(sender(0), 0, sender(1), 6)]);
    let _ = s.commit_block(
        &b2,
        &cert(&b2),
        &[TxResult::Ok],
        &Default::default(),
        Digest([1; 32]),
        None,
    );
}

#[test]
fn final_leaves_name_the_application_or_the_tx_that_used_the_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let a = sender(0);
    let winner = pay(a, 0, sender(1), 5);
    let loser = pay(a, 0, sender(2), 5);
    let gapped = pay(a, 3, sender(1), 5);
    commit_next(&s, vec![]);
    let (block, exec) = commit_next(&s, vec![winner.clone(), loser.clone(), gapped.clone()]);
    let winner_hash = stele_types::tx_hash(&winner);

    let r = s.final_leaf(&winner).unwrap().unwrap();
    assert_eq!(
        (r.height, r.index, r.leaf_tx, r.leaf_result, r.outcome),
        (Height(2), 0, winner_hash, TxResult::Ok, TxResult::Ok)
    );
    // The loser's outcome is shown by the winner's leaf.
    let stale = s.final_leaf(&loser).unwrap().unwrap();
    assert_eq!(
        (
            stale.height,
            stale.index,
            stale.leaf_tx,
            stale.leaf_result,
            stale.outcome
        ),
        (
            Height(2),
            0,
            winner_hash,
            TxResult::Ok,
            TxResult::StaleNonce
        )
    );
    assert_eq!(s.final_leaf(&gapped).unwrap(), None);
    assert_eq!(s.final_leaf(&pay(a, 9, sender(1), 1)).unwrap(), None);

    // Every tx's result is kept, in block order, so the results root can be rebuilt and
    // a receipt proven for any height, after a reopen too.
    assert_eq!(s.results(Height(2)).unwrap().unwrap(), exec.results);
    assert_eq!(s.results(Height(1)).unwrap().unwrap(), vec![]);
    assert_eq!(s.results(Height(3)).unwrap(), None);
    drop(s);
    let s = open(dir.path()).unwrap();
    assert_eq!(s.final_leaf(&winner).unwrap().unwrap(), r);
    assert_eq!(s.final_leaf(&loser).unwrap().unwrap(), stale);
    let results = s.results(Height(2)).unwrap().unwrap();
    assert_eq!(
        stele_ledger::results_root(block.tx_hashes(), &results),
        exec.results_root
    );
}

/// A receipt read while its block commits is either not there yet or whole: never a
/// false "corrupt entry". The tx index and the nonce index are written in one batch, but
/// a receipt reads them one after the other, and a commit in between once made a healthy
/// node log `corrupt entry in column family nonce_index` from the HTTP API.
#[test]
fn a_receipt_read_during_its_commit_is_absent_or_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let a = sender(0);
    let txs: Vec<_> = (0..300).map(|n| pay(a, n, sender(1), 1)).collect();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for tx in &txs {
                commit_next(&s, vec![tx.clone()]);
            }
        });
        for tx in &txs {
            loop {
                match s.final_leaf(tx) {
                    Ok(Some(r)) => {
                        assert_eq!(r.outcome, TxResult::Ok);
                        break;
                    }
                    Ok(None) => std::hint::spin_loop(),
                    Err(e) => panic!("receipt of nonce {}: {e}", tx.nonce),
                }
            }
        }
        writer.join().unwrap();
    });
}

#[test]
fn commits_out_of_order_or_with_a_foreign_certificate_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let before = s.tip();
    let b2 = Block::null(Height(2));
    let err = s
        .commit_block(
            &b2,
            &cert(&b2),
            &[],
            &Default::default(),
            Digest([1; 32]),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfOrder {
                expected: Height(1),
                found: Height(2)
            }
        ),
        "{err}"
    );
    let b1 = Block::new(Height(1), 5, vec![pay(sender(0), 0, sender(1), 1)]);
    let other = Block::null(Height(1));
    let err = s
        .commit_block(
            &b1,
            &cert(&other),
            &[TxResult::Ok],
            &Default::default(),
            Digest([1; 32]),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CertificateMismatch { .. }),
        "{err}"
    );
    let err = s
        .commit_block(
            &b1,
            &cert(&b1),
            &[],
            &Default::default(),
            Digest([1; 32]),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ResultCount {
                txs: 1,
                results: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.tip(), before);
    assert_eq!(s.block(Height(1)).unwrap(), None);
    assert_eq!(s.certificate(Height(1)).unwrap(), None);
}

fn pre_prepare(view: u64, height: u64) -> Signed<PrePrepare> {
    Signed {
        value: PrePrepare {
            view: ViewNumber(view),
            height: Height(height),
            digest: Block::null_digest(Height(height)),
        },
        signature: Signature([7; 64]),
    }
}

fn prepare_sent(view: u64, height: u64) -> DurableEntry {
    DurableEntry::PrepareSent {
        pre_prepare: pre_prepare(view, height),
        prepare: Signed {
            value: Prepare {
                view: ViewNumber(view),
                height: Height(height),
                digest: Block::null_digest(Height(height)),
                replica: ReplicaId(1),
            },
            signature: Signature([8; 64]),
        },
        body: Block::null(Height(height)),
    }
}

fn checkpoint(height: u64) -> CheckpointCertificate {
    CheckpointCertificate {
        height: Height(height),
        state_digest: Digest([height as u8; 32]),
        signatures: vec![],
    }
}

#[test]
fn durable_entries_reload_in_key_order_and_a_later_entry_replaces_its_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path()).unwrap();
        s.persist(&[DurableEntry::ViewChangeSent {
            view: ViewNumber(3),
        }])
        .unwrap();
        s.persist(&[prepare_sent(0, 7), prepare_sent(0, 5)])
            .unwrap();
        s.persist(&[DurableEntry::PrePrepareSent {
            pre_prepare: pre_prepare(1, 6),
            body: Block::null(Height(6)),
        }])
        .unwrap();
        s.persist(&[DurableEntry::ViewChangeSent {
            view: ViewNumber(4),
        }])
        .unwrap();
    }
    let s = open(dir.path()).unwrap();
    let loaded = s.durable_entries().unwrap();
    let keys: Vec<_> = loaded.iter().map(|e| e.key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(loaded.len(), 4);
    assert!(loaded.contains(&DurableEntry::ViewChangeSent {
        view: ViewNumber(4)
    }));
    assert!(!loaded.contains(&DurableEntry::ViewChangeSent {
        view: ViewNumber(3)
    }));
    assert_eq!(loaded[1], prepare_sent(0, 5));
}

#[test]
fn a_stable_checkpoint_discards_the_log_at_or_below_it_in_the_same_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let (block, _) = commit_next(&s, vec![pay(sender(0), 0, sender(1), 1)]);
    let prepared = |h: u64| {
        DurableEntry::Prepared(PreparedCertificate {
            pre_prepare: pre_prepare(0, h),
            prepares: vec![],
        })
    };
    let new_view = DurableEntry::NewViewAccepted(Signed {
        value: NewView {
            view: ViewNumber(1),
            view_changes: vec![],
            pre_prepares: vec![pre_prepare(1, 11)],
        },
        signature: Signature([1; 64]),
    });
    s.persist(&[
        prepare_sent(0, 9),
        prepare_sent(3, 10),
        prepare_sent(0, 11),
        prepared(10),
        prepared(11),
        DurableEntry::PrePrepareSent {
            pre_prepare: pre_prepare(0, 10),
            body: Block::null(Height(10)),
        },
        DurableEntry::ViewChangeSent {
            view: ViewNumber(1),
        },
        new_view.clone(),
    ])
    .unwrap();
    // A PREPARE below the checkpoint persisted in the same batch goes too.
    s.persist(&[
        prepare_sent(0, 4),
        DurableEntry::StableCheckpoint(checkpoint(10)),
    ])
    .unwrap();
    drop(s);
    let s = open(dir.path()).unwrap();
    let left = s.durable_entries().unwrap();
    assert_eq!(
        left,
        vec![
            prepare_sent(0, 11),
            prepared(11),
            DurableEntry::ViewChangeSent {
                view: ViewNumber(1)
            },
            new_view,
            DurableEntry::StableCheckpoint(checkpoint(10)),
        ]
    );
    assert_eq!(s.stable_checkpoint().unwrap(), Some(checkpoint(10)));
    // Committed blocks and certificates stay.
    assert_eq!(s.block(Height(1)).unwrap(), Some(block.clone()));
    assert_eq!(s.certificate(Height(1)).unwrap(), Some(cert(&block)));

    let err = s.persist_stable_checkpoint(&checkpoint(9)).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::CheckpointRegression {
                stored: Height(10),
                found: Height(9)
            }
        ),
        "{err}"
    );
    assert_eq!(s.stable_checkpoint().unwrap(), Some(checkpoint(10)));
    s.persist_stable_checkpoint(&checkpoint(12)).unwrap();
    assert_eq!(s.durable_entries().unwrap().len(), 3);
}

/// Commits a few blocks and closes the store; returns the directory.
fn small_chain() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..5 {
        let txs = random_txs(&s, &mut rng, 10);
        commit_next(&s, txs);
    }
    dir
}

#[test]
fn a_last_block_without_its_certificate_is_refused_at_open() {
    let dir = small_chain();
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("certs").unwrap(), Height(5).0.to_be_bytes())
            .unwrap();
    }
    let config = StoreConfig {
        verify_on_open: false,
        ..StoreConfig::default()
    };
    let err = open_with(dir.path(), &genesis(), &config).unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("height 5 has no commit certificate"),
        "{err}"
    );
}

#[test]
fn a_certificate_beyond_the_last_block_is_refused_at_open() {
    let dir = small_chain();
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("blocks").unwrap(), Height(5).0.to_be_bytes())
            .unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("last certificate is at height 5"),
        "{err}"
    );
}

#[test]
fn a_gap_in_the_chain_is_refused_at_open() {
    let dir = small_chain();
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("blocks").unwrap(), Height(2).0.to_be_bytes())
            .unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected height 2 next in `blocks`"),
        "{err}"
    );
}

#[test]
fn an_undecodable_entry_is_refused_at_open_naming_family_and_key() {
    let dir = small_chain();
    {
        let db = raw_db(dir.path());
        db.put_cf(
            db.cf_handle("accounts").unwrap(),
            sender(0).as_bytes(),
            [1, 2, 3],
        )
        .unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { cf: "accounts", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&sender(0).to_hex()), "{err}");
    // Without the full check too: open reads every account and record to build the
    // state root's buckets.
    let config = StoreConfig {
        verify_on_open: false,
        ..StoreConfig::default()
    };
    let err = open_with(dir.path(), &genesis(), &config).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { cf: "accounts", .. }),
        "{err}"
    );
}

#[test]
fn without_the_full_check_damage_is_found_on_the_read_that_meets_it() {
    let dir = small_chain();
    let hash = Digest::of(b"a tx hash");
    {
        let db = raw_db(dir.path());
        db.put_cf(
            db.cf_handle("tx_index").unwrap(),
            hash.as_bytes(),
            [1, 2, 3],
        )
        .unwrap();
    }
    let config = StoreConfig {
        verify_on_open: false,
        ..StoreConfig::default()
    };
    let s = open_with(dir.path(), &genesis(), &config).unwrap();
    assert!(matches!(
        s.tx_location_checked(&hash),
        Err(StoreError::Corrupt { cf: "tx_index", .. })
    ));
    assert!(s.tx_location(&hash).is_err());
    drop(s);
    assert!(matches!(
        open(dir.path()).unwrap_err(),
        StoreError::Corrupt { cf: "tx_index", .. }
    ));
}

#[test]
fn commits_with_sync_off_still_apply_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        sync: false,
        ..StoreConfig::default()
    };
    let s = open_with(dir.path(), &genesis(), &config).unwrap();
    let (_, e) = commit_next(&s, vec![put(sender(0), 0, b"k", b"v")]);
    assert_eq!(e.results, vec![TxResult::Ok]);
    let k = RecordKey::new(b"k".to_vec()).unwrap();
    assert_eq!(
        s.record_of(&sender(0), &k).unwrap().unwrap().as_slice(),
        b"v"
    );
}

/// The store's incremental state root (bucket roots kept in memory, only changed buckets
/// read again) is the one `MemState` computes from scratch, at every checkpoint height,
/// after a reopen too, records included.
#[test]
fn the_state_root_at_checkpoint_heights_matches_memory_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let p = stele_types::Params {
        checkpoint_interval: 3,
        ..params()
    };
    let mut mem = MemState::genesis(&g);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut roots = 0;
    let mut run = |s: &Store, mem: &mut MemState, rng: &mut ChaCha8Rng, i: u64| {
        let h = s.latest_height().next();
        let mut txs = random_txs(s, rng, 25);
        if i % 2 == 0 {
            let a = sender(0);
            let n = s.account_of(&a).unwrap().map_or(0, |x| x.nonce.0);
            txs.insert(0, put(a, n, format!("k{i}").as_bytes(), b"v"));
        }
        let block = Block::new(h, 1_700_000_000_000 + h.0, txs);
        let e = execute(&block, s, &p).unwrap();
        let me = execute(&block, &*mem, &p).unwrap();
        assert_eq!(e, me, "height {h}");
        assert_eq!(e.opening.is_some(), h.0 % 3 == 0);
        if e.opening.is_some() {
            roots += 1;
        }
        commit(s, &block, &e);
        mem.apply(&block, &me);
    };
    {
        let s = open(dir.path()).unwrap();
        for i in 0..20 {
            run(&s, &mut mem, &mut rng, i);
        }
    }
    let s = open(dir.path()).unwrap();
    for i in 20..26 {
        run(&s, &mut mem, &mut rng, i);
    }
    assert_eq!(roots, 8);
    assert!(mem.records().count() > 0);
    // The opening of each checkpoint height is kept and hashes to its state digest.
    for h in [3, 24] {
        let o = s.state_opening(Height(h)).unwrap().unwrap();
        assert_eq!(Some(o.digest()), s.state_digest(Height(h)).unwrap());
        assert_eq!(o.height, Height(h));
    }
    assert_eq!(s.state_opening(Height(4)).unwrap(), None);
    assert_eq!(
        s.state_root_after(&Default::default()).unwrap(),
        mem.state_root(&Default::default()).unwrap()
    );
}

/// Polls `done` until it holds, failing the test after 30 s.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 30 s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// With the background thread rereading changed buckets while blocks commit (as a
/// validator runs it), every checkpoint's root is still the one `MemState` computes from
/// scratch, and each snapshot height keeps its snapshot, with its certificate. Blocks
/// commit with short random pauses, so the thread's rereads and snapshots land before,
/// during and after commits.
#[test]
fn the_background_refresh_never_changes_a_checkpoint_root() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis();
    let p = stele_types::Params {
        checkpoint_interval: 3,
        ..params()
    };
    let config = StoreConfig {
        snapshots: Some(SnapshotConfig {
            dir: dir.path().join("snapshots"),
            every: 3,
            kept: 2,
        }),
        ..StoreConfig::default()
    };
    let s = std::sync::Arc::new(open_with(&dir.path().join("db"), &g, &config).unwrap());
    s.start_background().unwrap();
    let mut mem = MemState::genesis(&g);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut checked = 0;
    let mut awaiting = None;
    for i in 0..61u64 {
        let h = s.latest_height().next();
        let mut txs = random_txs(&*s, &mut rng, 25);
        if i % 2 == 0 {
            let a = sender(0);
            let n = s.account_of(&a).unwrap().map_or(0, |x| x.nonce.0);
            txs.insert(0, put(a, n, format!("k{i}").as_bytes(), b"v"));
        }
        let block = Block::new(h, 1_700_000_000_000 + h.0, txs);
        let pause = rand::Rng::gen_range(&mut rng, 0..3_000);
        std::thread::sleep(std::time::Duration::from_micros(pause));
        let e = execute(&block, &*s, &p).unwrap();
        let me = execute(&block, &mem, &p).unwrap();
        assert_eq!(e, me, "height {h}");
        // The thread keeps a snapshot beside the next blocks, which wait only until its
        // state is captured. A snapshot height reached while the one before is still
        // being written is passed over, so this waits (bounded: 30 s) for it first.
        if let (Some(k), true) = (awaiting, e.opening.is_some()) {
            wait_for(&format!("the snapshot at {k}"), || {
                s.snapshot_heights().contains(&k)
            });
            checked += 1;
        }
        commit(&s, &block, &e);
        mem.apply(&block, &me);
        if e.opening.is_some() {
            awaiting = Some(h);
            s.persist_stable_checkpoint(&stele_types::CheckpointCertificate {
                height: h,
                state_digest: e.state_digest,
                signatures: vec![],
            })
            .unwrap();
        }
    }
    assert_eq!(checked, 19);
    wait_for("the snapshot at 60", || {
        s.snapshot_heights().contains(&Height(60))
    });
    assert_eq!(s.snapshots_skipped(), 0);
    // Its certificate was persisted while the snapshot was still being taken.
    let m = s
        .snapshot_manifest()
        .unwrap()
        .expect("a certified snapshot");
    assert_eq!(m.checkpoint.height, Height(60));
    assert_eq!(
        s.state_root_after(&Default::default()).unwrap(),
        mem.state_root(&Default::default()).unwrap()
    );
}
