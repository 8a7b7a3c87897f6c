//! What the real-process tests check about a chain: the nodes agree (height, tip hash,
//! state digest), every tx a client saw f+1 receipts for is in every honest node's
//! chain, and how long progress took to resume. Plus a load generator that keeps
//! submitting through the client library while a fault happens.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use stele_client::{testnet_account_key, Client};
use stele_crypto::KeyPair;
use stele_types::api::{BlockResponse, StatusResponse, TxResponse, TxStatus};
use stele_types::{Amount, Height, Nonce, Op, Transaction, TxHash, TxResult};
use tokio::task::JoinSet;

use crate::{http, status, wait_for, Testnet};

/// Funded account j's key, from the testnet directory.
/// A client of only these validators' APIs (leaving out one that is paused, which accepts
/// connections and never answers, so every request to it would wait out its timeout).
pub fn client_of(net: &Testnet, nodes: &[usize]) -> Client {
    let all = Client::from_testnet(&net.net_dir(), stele_client::ClientConfig::default())
        .expect("client");
    let urls: Vec<String> = nodes.iter().map(|i| net.url(*i)).collect();
    Client::new(
        all.genesis().clone(),
        &urls,
        stele_client::ClientConfig::default(),
    )
    .expect("client")
}

pub fn key(net: &Testnet, j: usize) -> KeyPair {
    KeyPair::load(&testnet_account_key(&net.net_dir(), j)).expect("account key")
}

/// A signed transfer.
pub fn transfer(c: &Client, from: &KeyPair, nonce: u64, to: &KeyPair, amount: u64) -> Transaction {
    c.sign(
        from,
        Nonce(nonce),
        Op::Transfer {
            to: to.public(),
            amount: Amount(amount),
        },
    )
    .expect("well-formed")
}

/// `GET /metrics` of one node.
pub async fn metrics_text(url: &str) -> anyhow::Result<String> {
    Ok(http()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum of every series of `name` (with any labels) in a metrics text, or None if
/// the text has none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // `name{...} v` or `name v`, not `name_other v`.
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(v) = value.and_then(|v| v.trim().parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// One metric of one node (summed over its labels); panics if the node lacks it.
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = metrics_text(url).await.expect("metrics");
    metric_sum(&text, name).unwrap_or_else(|| panic!("{name} not in {url}/metrics"))
}

/// The statuses of the listed nodes, or None if one does not answer.
pub async fn statuses(net: &Testnet, nodes: &[usize]) -> Option<Vec<StatusResponse>> {
    let c = http();
    let mut out = Vec::new();
    for i in nodes {
        out.push(status(&c, &net.url(*i)).await.ok()?);
    }
    Some(out)
}

/// Waits until every listed node is at the same height (at least `min`) with the same
/// tip hash and state digest, and returns that height. Blocks are hash-chained, so the
/// same tip hash means the same chain below it.
pub async fn same_height(net: &Testnet, nodes: &[usize], min: u64, limit: Duration) -> Height {
    wait_for(limit, "the nodes to agree on one height", || async {
        let s = statuses(net, nodes).await?;
        let first = &s[0];
        let same = s.iter().all(|x| {
            x.height == first.height
                && x.block_hash == first.block_hash
                && x.state_digest == first.state_digest
        });
        (same && first.height.0 >= min).then_some(first.height)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {:?}",
            nodes
                .iter()
                .map(|i| (i, net.log_tail(*i)))
                .collect::<Vec<_>>()
        )
    })
}

/// The highest height any listed node reports (nodes that do not answer count as 0).
pub async fn max_height(net: &Testnet, nodes: &[usize]) -> u64 {
    let c = http();
    let mut best = 0;
    for i in nodes {
        if let Ok(s) = status(&c, &net.url(*i)).await {
            best = best.max(s.height.0);
        }
    }
    best
}

/// Waits until some listed node is above `height`; returns how long that took from
/// `since`. Fails after `limit`.
pub async fn progress_after(
    net: &Testnet,
    nodes: &[usize],
    height: u64,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    wait_for(limit, "a commit", || async {
        (max_height(net, nodes).await > height).then_some(())
    })
    .await?;
    Ok(since.elapsed())
}

/// `GET /blocks/{h}`.
pub async fn block(url: &str, h: u64) -> BlockResponse {
    http()
        .get(format!("{url}/blocks/{h}"))
        .send()
        .await
        .expect("block")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json")
}

/// Fetches blocks `heights` from `url`, 64 at a time, and checks each offline against
/// its commit certificate and the validator set; panics naming the first that fails.
pub async fn verify_blocks(
    url: &str,
    vs: &stele_types::ValidatorSet,
    heights: std::ops::RangeInclusive<u64>,
) {
    for chunk in heights.collect::<Vec<_>>().chunks(64) {
        let mut set = JoinSet::new();
        for &height in chunk {
            let url = url.to_owned();
            set.spawn(async move { block(&url, height).await });
        }
        while let Some(b) = set.join_next().await {
            let b = b.expect("fetch task");
            stele_client::verify_certified(vs, &b)
                .unwrap_or_else(|e| panic!("block {} from {url}: {e}", b.height));
        }
    }
}

/// Every node holds the same block (digest and state digest) at every height up to `h`.
pub async fn same_chain(net: &Testnet, nodes: &[usize], h: Height) {
    for height in 1..=h.0 {
        let first = block(&net.url(nodes[0]), height).await;
        for i in &nodes[1..] {
            let b = block(&net.url(*i), height).await;
            assert_eq!(
                b.digest, first.digest,
                "node {i} differs at height {height}"
            );
            assert_eq!(
                b.state_digest, first.state_digest,
                "node {i} state at {height}"
            );
        }
    }
}

/// Every hash in `confirmed` is applied in the chain of every listed node, at one height
/// on all of them. Asks 32 at a time.
/// The height `tx` was applied at on some node of `nodes` other than `not`.
async fn applied_height_elsewhere(
    c: &reqwest::Client,
    net: &Testnet,
    nodes: &[usize],
    not: usize,
    tx: TxHash,
) -> anyhow::Result<Height> {
    for j in nodes.iter().filter(|j| **j != not) {
        let r: TxResponse = c
            .get(format!("{}/txs/{tx}", net.url(*j)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if let (TxStatus::Applied, Some(h)) = (r.status, r.height) {
            return Ok(h);
        }
    }
    bail!("tx {tx} is applied on no other node")
}

pub async fn all_included(
    net: &Testnet,
    nodes: &[usize],
    confirmed: &[TxHash],
) -> anyhow::Result<()> {
    let c = http();
    for i in nodes {
        let url = net.url(*i);
        for chunk in confirmed.chunks(32) {
            let mut set = JoinSet::new();
            for h in chunk {
                let (c, u, h) = (c.clone(), url.clone(), *h);
                set.spawn(async move {
                    let r: anyhow::Result<TxResponse> = async {
                        Ok(c.get(format!("{u}/txs/{h}"))
                            .send()
                            .await?
                            .error_for_status()?
                            .json()
                            .await?)
                    }
                    .await;
                    (h, r)
                });
            }
            while let Some(j) = set.join_next().await {
                let (h, r) = j.context("lookup task")?;
                let r = r.with_context(|| format!("GET /txs/{h} on node {i}"))?;
                if r.status == TxStatus::Unknown {
                    if let Some(horizon) = r.horizon {
                        // A validator started from a snapshot keeps no history below it:
                        // the tx must have been applied below, as another node shows.
                        let at = applied_height_elsewhere(&c, net, nodes, *i, h).await?;
                        if at < horizon {
                            continue;
                        }
                        bail!("node {i}: tx {h} applied at {at}, at or above its horizon {horizon}, is unknown there");
                    }
                }
                if r.status != TxStatus::Applied || r.result != Some(TxResult::Ok) {
                    bail!(
                        "node {i}: tx {h}, confirmed by f+1 receipts, is {:?} ({:?})",
                        r.status,
                        r.result
                    );
                }
            }
        }
    }
    Ok(())
}

/// Load through the client library: one task per account, each submitting a batch of
/// consecutive nonces and waiting for f+1 receipts, resubmitting what did not confirm
/// (same txs, same nonces) until it does. Nothing is given up, so every nonce is used by
/// exactly its tx.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    confirmed: Arc<Mutex<Vec<TxHash>>>,
    not_ok: Arc<Mutex<Vec<(TxHash, TxResult)>>>,
    retries: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Load {
    /// Starts load from accounts `from` (indices of funded accounts), each sending
    /// `batch` txs at a time to account `to`, at most `limit` txs per account (None: no
    /// limit).
    pub fn start(
        net: &Testnet,
        client: &Client,
        from: std::ops::Range<usize>,
        to: usize,
        batch: usize,
        limit: Option<u64>,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let confirmed = Arc::new(Mutex::new(Vec::new()));
        let not_ok = Arc::new(Mutex::new(Vec::new()));
        let retries = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let dest = key(net, to);
        for j in from {
            let (c, k, dest) = (client.clone(), key(net, j), dest.clone());
            let (stop, confirmed, not_ok, retries) = (
                stop.clone(),
                confirmed.clone(),
                not_ok.clone(),
                retries.clone(),
            );
            tasks.spawn(async move {
                let mut nonce = 0u64;
                while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| nonce < l) {
                    let n = limit.map_or(batch as u64, |l| (l - nonce).min(batch as u64));
                    let mut pending: Vec<Transaction> = (nonce..nonce + n)
                        .map(|x| transfer(&c, &k, x, &dest, 1))
                        .collect();
                    while !pending.is_empty() {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // A refusal (a node down, a nonce still gapped) or a timeout only
                        // means: ask again. A tx lost with the mempools of validators that
                        // restarted is sent again by `wait_for_txs`.
                        let _ = c.submit_many(&pending).await;
                        let results = c.wait_for_txs(&pending).await;
                        let mut again = Vec::new();
                        for (tx, r) in pending.into_iter().zip(results) {
                            match r {
                                Ok(conf) if conf.result == TxResult::Ok => {
                                    confirmed.lock().expect("lock").push(conf.hash)
                                }
                                Ok(conf) => {
                                    not_ok.lock().expect("lock").push((conf.hash, conf.result))
                                }
                                Err(_) => again.push(tx),
                            }
                        }
                        if !again.is_empty() {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        pending = again;
                    }
                    nonce += n;
                }
            });
        }
        Load {
            stop,
            confirmed,
            not_ok,
            retries,
            tasks,
        }
    }

    /// Txs confirmed (f+1 matching `ok` receipts) so far.
    pub fn confirmed(&self) -> usize {
        self.confirmed.lock().expect("lock").len()
    }

    /// Waits until at least `n` more txs than now are confirmed, or fails after `limit`.
    pub async fn advance(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let target = self.confirmed() + n;
        wait_for(limit, &format!("{target} confirmed txs"), || async {
            (self.confirmed() >= target).then_some(())
        })
        .await
    }

    /// Stops submitting, waits for the tasks (each finishes its current batch or stops
    /// retrying), and returns every confirmed hash. Panics if any tx confirmed with a
    /// result other than `ok`: every nonce was fresh and every sender funded.
    pub async fn stop(mut self) -> Vec<TxHash> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(j) = self.tasks.join_next().await {
            if let Err(e) = j {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        let not_ok = self.not_ok.lock().expect("lock").clone();
        assert!(
            not_ok.is_empty(),
            "confirmed with a result other than ok: {not_ok:?}"
        );
        self.confirmed.lock().expect("lock").clone()
    }

    /// Waits until every account sent its `limit` txs (see [`Load::start`]).
    pub async fn finish(mut self, limit: Duration) -> anyhow::Result<Vec<TxHash>> {
        tokio::time::timeout(limit, async {
            while let Some(j) = self.tasks.join_next().await {
                if let Err(e) = j {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("the load did not finish in {limit:?}"))?;
        Ok(self.stop().await)
    }

    /// How many batches had to be resubmitted.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Resident memory of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    proc_status_kb(pid, "VmRSS:")
}

/// The most resident memory a process ever had (its high-water mark), in bytes: a peak
/// between two samples is not missed.
pub fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    proc_status_kb(pid, "VmHWM:")
}

fn proc_status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("{field} in /proc/PID/status"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// How many file descriptors a process has open now.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sum_adds_labelled_series_and_ignores_longer_names() {
        let text = "# HELP x\nstele_a{kind=\"p\"} 2\nstele_a{kind=\"q\"} 3\nstele_a_total 7\nstele_b 1.5\n";
        assert_eq!(metric_sum(text, "stele_a"), Some(5.0));
        assert_eq!(metric_sum(text, "stele_b"), Some(1.5));
        assert_eq!(metric_sum(text, "stele_c"), None);
    }
}
