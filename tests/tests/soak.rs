//! The long soak, outside `make test` (about ten minutes): `make soak`.
//!
//! Four validators with a small `retain_blocks` take `STELE_SOAK_TXS` (default
//! 1,000,000) txs from `stele bench` at `STELE_SOAK_RATE` tx/s (default 2,000). Every
//! 15 s the test records each data directory's size on disk (`du`, snapshots included)
//! and the height, and prints them as `SOAK` lines (the README's curve). It then checks
//! that the disk stopped growing, that every validator answers `410 pruned` below its
//! horizon, that every retained block verifies against its commit certificate, and that
//! a validator restarted on the pruned directory passes the store's full check at open,
//! catches up and agrees.

use std::path::Path;
use std::time::{Duration, Instant};

use stele_tests::chain::{max_height, metric, same_height, verify_blocks};
use stele_tests::{bin, http, wait_connected, Testnet};
use stele_types::api::ApiError;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes on disk under `dir`.
fn du(dir: &Path) -> u64 {
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(dir)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a size")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about ten minutes: `make soak`"]
async fn a_million_txs_with_small_retain_blocks_keep_the_disk_bounded() {
    let txs = env_or("STELE_SOAK_TXS", 1_000_000);
    let rate = env_or("STELE_SOAK_RATE", 2_000);
    let retain = env_or("STELE_SOAK_RETAIN", 1_000);
    // The chain parameters of config/testnet.toml.
    let mut net = Testnet::init(
        4,
        64,
        "checkpoint_interval = 128\nwindow = 256\nmax_block_txs = 2000\nmax_batch_delay_ms = 20\n\
         view_timeout_ms = 2000\nmax_view_timeout_ms = 16000",
    )
    .expect("testnet init");
    for i in 0..4 {
        net.configure(i, "retain_blocks", &retain.to_string())
            .expect("node.toml");
    }
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");

    let mut bench = tokio::process::Command::new(bin("stele"))
        .arg("bench")
        .arg("--testnet")
        .arg(net.net_dir())
        .args(["--txs", &txs.to_string(), "--rate", &rate.to_string()])
        .args(["--accounts", "64", "--ceiling-secs", "0.5", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("stele bench");
    let start = Instant::now();
    // (seconds, height, bytes per validator)
    let mut curve: Vec<(f64, u64, Vec<u64>)> = Vec::new();
    let out = loop {
        tokio::select! {
            out = bench.wait() => break out.expect("stele bench runs"),
            _ = tokio::time::sleep(Duration::from_secs(15)) => {
                let h = max_height(&net, &[0, 1, 2, 3]).await;
                let sizes: Vec<u64> = (0..4).map(|i| du(&net.node_dir(i).join("data"))).collect();
                let t = start.elapsed().as_secs_f64();
                println!(
                    "SOAK t={t:.0}s height={h} MB={}",
                    sizes.iter().map(|s| format!("{:.1}", *s as f64 / 1e6)).collect::<Vec<_>>().join(",")
                );
                curve.push((t, h, sizes));
            }
        }
    };
    assert!(out.success(), "stele bench failed: {out}");
    let mut stdout = Vec::new();
    if let Some(mut s) = bench.stdout.take() {
        use tokio::io::AsyncReadExt;
        s.read_to_end(&mut stdout).await.expect("bench output");
    }
    let report: serde_json::Value = serde_json::from_slice(&stdout).expect("bench JSON");
    let report = report.as_array().and_then(|a| a.last()).unwrap_or(&report);
    assert_eq!(
        report["counts"]["ok"].as_u64(),
        Some(txs),
        "every tx confirmed ok: {report}"
    );
    println!(
        "SOAK bench: {} tx/s, latency p50 {} ms, p99 {} ms",
        report["throughput"], report["latency_ms"]["p50"], report["latency_ms"]["p99"]
    );

    // The disk stopped growing: over the second half of the run (the chain about
    // doubles), no validator's directory grows past 1.5 × its size at the half-way
    // mark. Keeping every block, it would double.
    assert!(curve.len() >= 8, "too few samples: {}", curve.len());
    let half = curve.len() / 2;
    for i in 0..4 {
        let mid = curve[half].2[i];
        let late = curve[half..].iter().map(|c| c.2[i]).max().expect("samples");
        assert!(
            (late as f64) < 1.5 * mid as f64,
            "validator {i} grew from {mid} to {late} bytes while height went {} → {}",
            curve[half].1,
            curve.last().expect("samples").1
        );
    }

    let top = max_height(&net, &[0, 1, 2, 3]).await;
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(120)).await;
    let vs = net.genesis.validator_set();
    for i in 0..4 {
        let url = net.url(i);
        let horizon = metric(&url, "stele_store_horizon_height").await as u64;
        // The prune target: `retain` below the stable checkpoint (at most L = 256 below
        // the tip), held back at most 8 L for a peer that lags.
        assert!(
            horizon > 1 && horizon + retain + 9 * 256 >= h.0,
            "validator {i}: horizon {horizon}, tip {h}"
        );
        let r = http()
            .get(format!("{url}/blocks/{}", horizon - 1))
            .send()
            .await
            .expect("GET below the horizon");
        assert_eq!(r.status().as_u16(), 410, "validator {i}");
        let e: ApiError = r.json().await.expect("a JSON reason");
        assert_eq!(e.reason, "pruned");
        if i == 0 {
            // The chain from the horizon up verifies from the retained certificates.
            verify_blocks(&url, &vs, horizon..=h.0).await;
            println!(
                "SOAK blocks {horizon}..={h} on validator 0 verify against their certificates"
            );
        }
    }

    // A restart on the pruned directory: the full check at open accepts it.
    net.stop(0);
    net.start(0).expect("restart");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("validator 0 reconnects");
    same_height(&net, &[0, 1, 2, 3], h.0, Duration::from_secs(120)).await;
}

/// Issue 24: a validator added from its key alone after `STELE_JOIN_BLOCKS` (default
/// 100,000) blocks catches up by snapshot: three validators with `retain_blocks = 1000`
/// commit one tx per block under load; the fourth, never started before, then starts on
/// an empty data directory while the load goes on, installs their snapshot, fetches the
/// blocks above it, agrees and votes. Prints `JOIN` lines: the chain's pace and how long
/// the fourth took. `make join-soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes: `make join-soak`"]
async fn a_validator_added_after_100000_blocks_catches_up_by_snapshot() {
    use stele_tests::chain::{client_of, Load};
    let blocks = env_or("STELE_JOIN_BLOCKS", 100_000);
    let mut net = Testnet::init(
        4,
        8,
        "checkpoint_interval = 128\nwindow = 256\nmax_block_txs = 1\nmax_batch_delay_ms = 1\n\
         view_timeout_ms = 2000\nmax_view_timeout_ms = 16000",
    )
    .expect("testnet init");
    for i in 0..4 {
        net.configure(i, "retain_blocks", "1000")
            .expect("node.toml");
    }
    for i in 0..3 {
        net.start(i).expect("start");
    }
    wait_connected(&net, &[0, 1, 2], Duration::from_secs(60))
        .await
        .expect("three validators connect");
    // Not validator 3: it is paused or not started yet.
    let c = client_of(&net, &[0, 1, 2]);
    let load = Load::start(&net, &c, 0..7, 7, 20, None);
    let start = Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(15)).await;
        let h = max_height(&net, &[0, 1, 2]).await;
        let t = start.elapsed().as_secs_f64();
        println!(
            "JOIN t={t:.0}s height={h} blocks/s={:.0}",
            (h - last) as f64 / 15.0
        );
        last = h;
        if h >= blocks {
            break;
        }
    }
    let joined = Instant::now();
    net.start(3).expect("start the new validator");
    let top = max_height(&net, &[0, 1, 2]).await;
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(600)).await;
    let took = joined.elapsed();
    let installed = metric(&net.url(3), "stele_snapshot_installed_height").await as u64;
    println!(
        "JOIN validator 3 started at height {top}, installed the snapshot at {installed}, \
         agreed at {h} after {took:?}"
    );
    assert!(
        installed + 8 * 256 >= top && installed <= h.0,
        "installed {installed}, peers at {top}, agreed at {h}"
    );
    // It votes: its vote counter moves while the load goes on.
    let votes = metric(&net.url(3), "stele_votes_sent_total").await;
    let voting = Instant::now();
    while metric(&net.url(3), "stele_votes_sent_total").await <= votes {
        assert!(
            voting.elapsed() < Duration::from_secs(120),
            "validator 3 sent no vote in 120 s\n{}",
            net.log_tail(3)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "JOIN validator 3 voted {:?} after it agreed",
        voting.elapsed()
    );
    load.stop().await;
}
