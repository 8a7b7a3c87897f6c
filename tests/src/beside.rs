//! Honest throughput beside an attack, as a figure: with `STELE_ATTACK_BENCH_TXS=N` set
//! (`make attack-bench`), the attack tests run `stele bench` with N txs once before the
//! attack starts and once while it runs, and print both rates and their ratio. Without
//! it they measure nothing. A figure for the README, never an assertion: a timed bound
//! would fail on a loaded CI machine and prove nothing about the code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{bin, wait_connected, Testnet};

/// The accounts `stele bench` sends from: past the ones the tests' own load uses.
pub const FIRST_ACCOUNT: usize = 8;
/// How many accounts `stele bench` sends from.
pub const ACCOUNTS: usize = 32;
/// Funded accounts a testnet needs for the tests' load and the bench.
pub const TESTNET_ACCOUNTS: usize = FIRST_ACCOUNT + ACCOUNTS;

/// The bench's size, if benches beside attacks are asked for.
pub fn txs() -> Option<usize> {
    std::env::var("STELE_ATTACK_BENCH_TXS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
}

/// Committed tx/s of one `stele bench` closed-loop run on the testnet in `net_dir`, each
/// batch sent to every validator (so the attacked one is always among them).
pub async fn rate(net_dir: &Path, txs: usize) -> anyhow::Result<f64> {
    let out = tokio::process::Command::new(bin("stele"))
        .arg("bench")
        .arg("--testnet")
        .arg(net_dir)
        .args(["--txs", &txs.to_string(), "--fanout", "4"])
        .args(["--accounts", &ACCOUNTS.to_string()])
        .args(["--first-account", &FIRST_ACCOUNT.to_string()])
        .args(["--ceiling-secs", "0.5", "--timeout", "60", "--json"])
        .output()
        .await
        .context("running stele bench")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "stele bench printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    // An invalid run (a node out of sync, receipts missing) still has a throughput; say
    // why beside the figure rather than drop it.
    if v["valid"] == false {
        eprintln!("stele bench: invalid run: {}", v["invalid_reasons"]);
    }
    match v["throughput"].as_f64() {
        Some(t) => Ok(t),
        None => bail!("stele bench: no throughput in {v}"),
    }
}

/// One attack's figure: the rate measured before it and the one beside it.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    txs: usize,
    unloaded: f64,
}

impl Baseline {
    /// Measures the rate on `net` before an attack, if benches are asked for.
    pub async fn measure(net: &Testnet) -> Option<Baseline> {
        let txs = txs()?;
        // A first run on a fresh testnet is slower (cold caches, RocksDB's first
        // compactions): warm up, so the figure compares like with like.
        if let Err(e) = rate(&net.net_dir(), txs / 4 + 1).await {
            eprintln!("ATTACK-BENCH warm-up failed: {e:#}");
        }
        match rate(&net.net_dir(), txs).await {
            Ok(unloaded) => Some(Baseline { txs, unloaded }),
            Err(e) => {
                eprintln!("ATTACK-BENCH baseline failed: {e:#}");
                None
            }
        }
    }

    /// Measures on a fresh all-honest testnet with `params` (for attacks present from a
    /// testnet's start, such as a Byzantine validator's floods).
    pub async fn fresh(params: &str) -> Option<Baseline> {
        txs()?;
        let mut net = Testnet::init(4, TESTNET_ACCOUNTS, params).ok()?;
        net.start_all().ok()?;
        wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
            .await
            .ok()?;
        Baseline::measure(&net).await
    }

    /// Measures the rate on the testnet in `net_dir` while `attack` runs, in a task of
    /// its own (the attack goes on meanwhile), and prints the figure when done.
    pub fn beside(self, net_dir: PathBuf, attack: &'static str) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.figure(net_dir, attack))
    }

    async fn figure(self, net_dir: PathBuf, attack: &'static str) {
        match rate(&net_dir, self.txs).await {
            Ok(r) => eprintln!(
                "ATTACK-BENCH | {attack} | {:.0} | {r:.0} | {:.2} |",
                self.unloaded,
                r / self.unloaded.max(f64::MIN_POSITIVE)
            ),
            Err(e) => eprintln!("ATTACK-BENCH {attack}: the bench failed: {e:#}"),
        }
    }
}

/// Starts the bench beside `attack` if a baseline was measured.
pub fn start(
    base: Option<Baseline>,
    net: &Testnet,
    attack: &'static str,
) -> Option<tokio::task::JoinHandle<()>> {
    base.map(|b| b.beside(net.net_dir(), attack))
}

/// Waits for a bench started by [`start`], if any.
pub async fn finish(bench: Option<tokio::task::JoinHandle<()>>) {
    if let Some(b) = bench {
        let _ = b.await;
    }
}
