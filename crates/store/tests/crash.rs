//! Crash test with real processes: committed means durable, across SIGKILL.
//!
//! This test binary is its own child. Run plainly (as `cargo test` does) it is the
//! parent; run with `--child DIR SEED` it opens the store in DIR and commits blocks of real
//! ledger executions in a loop, printing `ack H` on stdout only after the synced
//! `commit_block` of height H returned. The parent kills the child with SIGKILL
//! [`KILLS`] times, each after a random number of acknowledgements (sometimes none: a
//! kill during recovery), reads every line the child managed to print, then reopens
//! the store itself and checks that `open` accepts it (tip, certificates, digest index,
//! and a full read of every entry) and that every acknowledged height is there with its
//! certificate. At the end it replays the whole chain from genesis in memory and checks
//! every state digest and account against the store.
//!
//! `harness = false` (Cargo.toml): the parent/child switch needs its own `main`.
//! `STELE_CRASH_SEED=N` replays one run of kill moments.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stele_ledger::{execute, MemState};
use stele_types::{Height, StateView};

/// How many times the child is killed.
const KILLS: usize = 50;
/// Txs per block the child commits.
const BLOCK_TXS: usize = 50;
/// Longest the parent waits for one line from the child before declaring it hung.
const LINE_DEADLINE: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let dir = args.get(i + 1).expect("--child needs a directory");
        let seed = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(0);
        child(Path::new(dir), seed);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list`: one test, named like libtest would. Nextest also asks
        // `--list --ignored` and skips whatever that lists: this test is not ignored.
        if !args.iter().any(|a| a == "--ignored") {
            println!("crash_kill_and_reopen: test");
        }
        return;
    }
    parent();
    println!("test crash_kill_and_reopen ... ok");
}

/// Commits blocks forever, acknowledging each after its synced commit returned.
fn child(dir: &Path, seed: u64) {
    let store = match open(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("child: open failed: {e}");
            std::process::exit(2);
        }
    };
    let mut out = std::io::stdout().lock();
    let start = store.latest_height();
    writeln!(out, "open {}", start.0).unwrap();
    out.flush().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    loop {
        let txs = random_txs(&store, &mut rng, BLOCK_TXS);
        let (block, _) = commit_next(&store, txs);
        writeln!(out, "ack {}", block.height().0).unwrap();
        out.flush().unwrap();
    }
}

/// One line from the child, or `None` at EOF; panics after [`LINE_DEADLINE`].
fn next_line(lines: &mpsc::Receiver<Option<String>>) -> Option<String> {
    lines
        .recv_timeout(LINE_DEADLINE)
        .unwrap_or_else(|_| panic!("child printed nothing for {LINE_DEADLINE:?}"))
}

fn parent() {
    let seed = std::env::var("STELE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5751e);
    println!("crash test: seed {seed} (STELE_CRASH_SEED={seed} replays the kill moments)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = Height(0);
    let mut kills_during_open = 0;

    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .arg("--child")
            .arg(dir.path())
            .arg(rng.gen::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Some(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(None);
        });

        // A tenth of the kills land while the child is still opening (WAL replay and
        // the full check); the rest after 0..=5 acknowledged commits.
        let during_open = rng.gen_bool(0.1);
        let wanted = rng.gen_range(0..=5u64);
        let mut seen_acks = 0;
        if !during_open {
            while seen_acks < wanted {
                match next_line(&lines) {
                    Some(l) => {
                        record(&l, &mut acked, round);
                        if l.starts_with("ack ") {
                            seen_acks += 1;
                        }
                    }
                    None => panic!("child exited before being killed (round {round})"),
                }
            }
        } else {
            kills_during_open += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Whatever the child printed before it died was acknowledged too.
        while let Some(l) = next_line(&lines) {
            record(&l, &mut acked, round);
        }
        reader.join().unwrap();

        let store = open(dir.path()).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        let tip = store.latest_height();
        assert!(
            tip >= acked,
            "round {round}: tip {tip} below acknowledged {acked}"
        );
        for h in 1..=acked.0 {
            let b = store
                .block(Height(h))
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged height {h} lost"));
            assert_eq!(
                store.certificate(Height(h)).unwrap().unwrap().digest,
                b.digest()
            );
        }
        // The tip itself may be one the child committed but did not get to print.
        acked = acked.max(tip);
    }
    assert!(
        acked.0 >= KILLS as u64,
        "too few commits to mean anything: {acked}"
    );

    // Replay the chain from genesis in memory: same digest at every height, same state.
    let store = open(dir.path()).unwrap();
    let mut mem = MemState::genesis(&genesis());
    for h in 1..=store.latest_height().0 {
        let block = store.block(Height(h)).unwrap().unwrap();
        let e = execute(&block, &mem, &params()).unwrap();
        assert_eq!(
            Some(e.state_digest),
            store.state_digest(Height(h)).unwrap(),
            "height {h}"
        );
        mem.apply(&block, &e);
    }
    for (k, a) in mem.accounts() {
        assert_eq!(store.account(k).unwrap().as_ref(), Some(a));
    }
    println!(
        "crash test: {KILLS} kills ({kills_during_open} during open), {} blocks, every \
         acknowledged height present",
        store.latest_height()
    );
}

/// Notes an `open H` or `ack H` line, checking acks come in order.
fn record(line: &str, acked: &mut Height, round: usize) {
    let (kind, h) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("child said {line:?}"));
    let h = Height(h.parse().unwrap());
    match kind {
        "open" => assert!(
            h >= *acked,
            "round {round}: child reopened at {h}, below acknowledged {acked}"
        ),
        "ack" => {
            assert!(h > *acked, "round {round}: ack {h} after {acked}");
            *acked = h;
        }
        _ => panic!("child said {line:?}"),
    }
}
