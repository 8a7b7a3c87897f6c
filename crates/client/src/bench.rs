//! `stele bench`: an open-loop load generator and what it measures.
//!
//! It pre-signs transfers, sends them in batches on a fixed schedule (or as fast as the
//! nodes take them), and times each tx from its *scheduled* send time to f+1 verified,
//! matching receipts, so a slow system cannot hide its queueing (no coordinated
//! omission). The pure parts (schedule, latency, agreement, summary, validity rules, CSV,
//! chart) are plain functions with unit tests; [`run`] drives them through [`Client`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use stele_crypto::{ChainBinding, Digest, Ed25519, KeyPair, PublicKey, Scheme, Signature};
use stele_types::api::{Admitted, TxResponse, MAX_SUBMIT_BATCH};
use stele_types::{Amount, Nonce, Op, Receipt, ReplicaId, Transaction, TxHash, TxResult};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{remaining, Encoding, Node, SubmitBody};
use crate::quorum::{Outcome, ReceiptChecker, TxId};
use crate::{Client, ClientError};

/// Signatures per batch when measuring the verify ceiling (the node verifies in batches
/// too; 64 is where ed25519 batch verification has most of its gain).
pub const CEILING_BATCH: usize = 64;
/// Txs per `POST /txs` unless told otherwise.
pub const DEFAULT_BATCH: usize = 64;
/// Kept below the genesis per-sender limits, for a lagging node's sake: the bench counts
/// a tx done at f+1 receipts, and a node that has not executed it yet still holds it.
pub const SENDER_MARGIN: u64 = 4;
/// Largest latency the histogram holds, in µs (one hour); longer is recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Errors kept verbatim in a report; the rest are only counted.
const KEPT_ERRORS: usize = 5;
/// First pause after a round of a batch that settled nothing and failed fast.
const RETRY_PAUSE_START: Duration = Duration::from_millis(100);
/// Longest pause between two rounds of one batch.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Fractions of the verify ceiling a bare `--sweep` offers, in order.
pub const SWEEP_FRACTIONS: [f64; 6] = [0.1, 0.2, 0.35, 0.5, 0.65, 0.8];

/// How fast batches go out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// Open loop: batch k is due at k·batch/rate s after the start, whatever came back.
    Rate(f64),
    /// As fast as the nodes take them: a batch goes when the in-flight bound lets it.
    /// Latency then runs from that moment (closed loop: there is no schedule to lag).
    Max,
}

/// Per-sender txs kept outstanding at most: below the genesis `nonce_window` and
/// `max_pending_per_sender` by [`SENDER_MARGIN`], so admission does not refuse for quota.
pub fn sender_window(nonce_window: u64, max_pending: u32) -> usize {
    let lim = nonce_window.min(u64::from(max_pending));
    lim.saturating_sub(SENDER_MARGIN).max(1) as usize
}

/// Batches in flight at most so that no sender has more than `per_sender` txs
/// outstanding: a batch of `batch` round-robin txs over `accounts` holds at most
/// ⌈batch/accounts⌉ of one sender's.
pub fn batches_in_flight(per_sender: usize, batch: usize, accounts: usize) -> usize {
    let per_batch = batch.div_ceil(accounts.max(1)).max(1);
    (per_sender / per_batch).max(1)
}

/// When batch `k` of `batch` txs is due at `rate` tx/s: k·batch/rate after the start.
pub fn scheduled_offset(k: usize, batch: usize, rate: f64) -> Duration {
    assert!(rate > 0.0 && rate.is_finite(), "a rate is positive: {rate}");
    Duration::from_secs_f64(k as f64 * batch as f64 / rate)
}

/// Latency of a tx due at `scheduled` and confirmed at `done`: from the schedule, not
/// from when it actually went out, so time spent behind schedule counts.
pub fn latency_from_schedule(scheduled: Instant, done: Instant) -> Duration {
    done.saturating_duration_since(scheduled)
}

/// Tx `i` of a run over `accounts` senders, round robin: (sender, nonce offset).
pub fn assignment(i: usize, accounts: usize) -> (usize, u64) {
    assert!(accounts > 0);
    (i % accounts, (i / accounts) as u64)
}

/// The send rate of batches released over `span` (first to last release): the txs of
/// every batch but the last, over the span, since batch k opens the k-th interval. An
/// on-schedule run gives exactly its rate; `None` when there is no interval (one batch).
pub fn send_rate(released_txs: usize, last_batch_txs: usize, span: Duration) -> Option<f64> {
    debug_assert!(last_batch_txs <= released_txs);
    let secs = span.as_secs_f64();
    (secs > 0.0 && released_txs > last_batch_txs)
        .then(|| (released_txs - last_batch_txs) as f64 / secs)
}

/// A latency histogram in microseconds, and, when it has an origin, each tx's
/// (scheduled send, latency) for `--latency-log`.
#[derive(Debug, Clone)]
pub struct Recorder {
    hist: Histogram<u64>,
    origin: Option<Instant>,
    samples: Vec<Sample>,
}

/// One confirmed tx: its scheduled send in seconds from the run's start, and its latency
/// in milliseconds.
pub type Sample = (f32, f32);

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// 1 µs .. 1 h, 3 significant digits.
    pub fn new() -> Recorder {
        // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"));
        Recorder {
            hist,
            origin: None,
            samples: Vec::new(),
        }
    }

    /// A recorder that also keeps each tx's sample, its send timed from `origin`.
    pub fn with_samples(origin: Instant) -> Recorder {
        Recorder {
            origin: Some(origin),
            ..Recorder::new()
        }
    }

    /// Records a tx due at `scheduled`, confirmed at `done`.
    pub fn record(&mut self, scheduled: Instant, done: Instant) {
        let latency = latency_from_schedule(scheduled, done);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .max(1);
        self.hist.saturating_record(us);
        if let Some(origin) = self.origin {
            let sent = scheduled.saturating_duration_since(origin).as_secs_f32();
            self.samples.push((sent, latency.as_secs_f32() * 1000.0));
        }
    }

    /// The samples kept, in the order recorded.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// How many were recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// p50/p90/p99/max in milliseconds (all 0 when empty).
    pub fn latency(&self) -> Latency {
        if self.hist.is_empty() {
            return Latency::default();
        }
        let q = |p: f64| self.hist.value_at_quantile(p) as f64 / 1000.0;
        Latency {
            count: self.hist.len(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            max: self.hist.max() as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds, over `count` confirmed txs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The outcome at least `need` distinct validators signed among verified receipts
/// (signer, outcome). A validator counts once per outcome; should two outcomes both
/// reach `need` (more than f faulty), the larger wins, ties by order, so the answer does
/// not depend on arrival order.
pub fn agreed(need: usize, votes: &[(ReplicaId, Outcome)]) -> Option<Outcome> {
    assert!(need > 0);
    let mut groups: BTreeMap<Outcome, BTreeSet<ReplicaId>> = BTreeMap::new();
    for (who, what) in votes {
        groups.entry(*what).or_default().insert(*who);
    }
    groups
        .into_iter()
        .filter(|(_, g)| g.len() >= need)
        .max_by_key(|(o, g)| (g.len(), std::cmp::Reverse(*o)))
        .map(|(o, _)| o)
}

/// Checks receipts (index into a batch, receipt, for `stale_nonce` the tx that used the
/// nonce) for the txs `txs[index]`: leaf, Merkle path, and the block receipt's signature,
/// which the checker verifies once per (validator, height) however many txs of a block
/// it covers. Returns the ones that count as (index, signer, outcome).
pub fn verify_receipts(
    checker: &ReceiptChecker,
    txs: &[TxId],
    receipts: Vec<(usize, Receipt, Option<Transaction>)>,
) -> Vec<(usize, ReplicaId, Outcome)> {
    receipts
        .into_iter()
        .filter_map(|(k, r, used_by)| {
            let (who, what) = checker.check(txs.get(k)?, &r, used_by.as_ref()).ok()?;
            Some((k, who, what))
        })
        .collect()
}

/// The value of Prometheus sample `name` (summed over its labels), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        // `name{labels} value [timestamp]`: the value follows the labels.
        let after = rest.rsplit_once('}').map_or(rest, |(_, v)| v);
        if let Some(v) = after
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// What one node said at one moment: `/status` sync and its `/metrics` counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeSample {
    pub sync: Option<bool>,
    pub sig_verified: Option<f64>,
    pub txs_committed: Option<f64>,
    /// `stele_process_cpu_seconds_total`: the validator process's CPU time.
    pub cpu_s: Option<f64>,
    /// `stele_sig_verify_cpu_seconds_total`: its time in signature checks.
    pub verify_s: Option<f64>,
    /// `stele_blocks_committed_total`.
    pub blocks: Option<f64>,
    /// `stele_store_synced_writes_total`, every kind: its fsyncs on the commit path.
    pub synced_writes: Option<f64>,
}

/// One node before and after a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeCheck {
    pub url: String,
    pub before: NodeSample,
    pub after: NodeSample,
}

impl NodeCheck {
    /// Growth of `stele_sig_verified_total` over the run.
    pub fn sig_verified_delta(&self) -> Option<f64> {
        Some(self.after.sig_verified? - self.before.sig_verified?)
    }

    /// Growth of `stele_txs_committed_total` over the run.
    pub fn txs_committed_delta(&self) -> Option<f64> {
        Some(self.after.txs_committed? - self.before.txs_committed?)
    }

    /// The validator's CPU seconds over the run.
    pub fn cpu_delta(&self) -> Option<f64> {
        Some(self.after.cpu_s? - self.before.cpu_s?)
    }

    /// Its seconds in signature checks over the run.
    pub fn verify_delta(&self) -> Option<f64> {
        Some(self.after.verify_s? - self.before.verify_s?)
    }

    /// Synced writes per committed block over the run.
    pub fn synced_per_block(&self) -> Option<f64> {
        let blocks = self.after.blocks? - self.before.blocks?;
        let writes = self.after.synced_writes? - self.before.synced_writes?;
        (blocks > 0.0).then(|| writes / blocks)
    }

    /// One line on what the run cost this validator per committed tx: CPU, the share of
    /// it spent verifying signatures, and signature checks (one per tx is the least);
    /// then its synced writes per block.
    pub fn cost_line(&self, committed: u64) -> String {
        let per_tx = |x: f64| x / committed.max(1) as f64;
        let cpu = self
            .cpu_delta()
            .map_or_else(|| "-".to_owned(), |c| format!("{:.3} ms", per_tx(c) * 1e3));
        let share = match (self.verify_delta(), self.cpu_delta()) {
            (Some(v), Some(c)) if c > 0.0 => format!("{:.0} %", 100.0 * v / c),
            _ => "-".to_owned(),
        };
        let checks = self
            .sig_verified_delta()
            .map_or_else(|| "-".to_owned(), |v| format!("{:.2}", per_tx(v)));
        let synced = self
            .synced_per_block()
            .map_or_else(|| "-".to_owned(), |w| format!("{w:.2}"));
        format!(
            "{}  CPU {cpu} per tx, {share} of it verifying signatures, {checks} tx signature checks per tx, {synced} synced writes per block",
            self.url
        )
    }
}

/// Why a run does not count: a node with `sync` off (or silent) before or after, or a
/// node whose `stele_sig_verified_total` grew by less than the `committed` txs, so some
/// tx was not verified by every validator.
pub fn invalid_reasons(nodes: &[NodeCheck], committed: u64) -> Vec<String> {
    let mut why = Vec::new();
    if nodes.is_empty() {
        why.push("no node was checked".to_owned());
    }
    for n in nodes {
        for (when, s) in [("before", n.before.sync), ("after", n.after.sync)] {
            match s {
                Some(true) => {}
                Some(false) => why.push(format!(
                    "{}: sync is off {when} the run (commits not synced to disk)",
                    n.url
                )),
                None => why.push(format!("{}: no /status answer {when} the run", n.url)),
            }
        }
        match n.sig_verified_delta() {
            Some(grew) if grew >= committed as f64 => {}
            Some(grew) => why.push(format!(
                "{}: stele_sig_verified_total grew by {grew} < {committed} txs committed",
                n.url
            )),
            None => why.push(format!(
                "{}: stele_sig_verified_total not readable from /metrics",
                n.url
            )),
        }
    }
    why
}

/// What became of one tx.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// f+1 matching verified receipts, first known at `at`.
    Confirmed { at: Instant, result: TxResult },
    /// Every validator it went to refused it.
    Refused(String),
    /// No agreed outcome (timeout, unreachable nodes).
    Failed(String),
}

/// Tallies of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub txs: usize,
    /// Confirmed `ok`.
    pub ok: u64,
    /// Confirmed with another applied result (e.g. insufficient funds).
    pub other_applied: u64,
    /// Confirmed not applied (stale nonce).
    pub not_applied: u64,
    pub refused: u64,
    pub failed: u64,
    pub first_errors: Vec<String>,
}

impl Counts {
    /// Counts one tx's fate; the latency of a confirmed one goes to `rec`.
    pub fn add(&mut self, due: Instant, fate: Fate, rec: &mut Recorder) {
        let mut keep = |e: String| {
            if self.first_errors.len() < KEPT_ERRORS {
                self.first_errors.push(e);
            }
        };
        match fate {
            Fate::Confirmed { at, result } => {
                rec.record(due, at);
                match result {
                    TxResult::Ok => self.ok += 1,
                    r if r.is_applied() => {
                        keep(format!("applied with result {}", r.as_str()));
                        self.other_applied += 1;
                    }
                    r => {
                        keep(format!("not applied: {}", r.as_str()));
                        self.not_applied += 1;
                    }
                }
            }
            Fate::Refused(e) => {
                keep(format!("refused: {e}"));
                self.refused += 1;
            }
            Fate::Failed(e) => {
                keep(e);
                self.failed += 1;
            }
        }
    }

    /// Txs committed (applied, whatever the result) and confirmed by f+1 receipts.
    pub fn committed(&self) -> u64 {
        self.ok + self.other_applied
    }
}

/// What one load phase measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub counts: Counts,
    pub recorder: Recorder,
    /// Start to the last confirmation.
    pub elapsed: Duration,
    /// Txs sent per second (see [`send_rate`]).
    pub achieved: Option<f64>,
    /// The load generator's own CPU time (user + system) during the phase, when known.
    pub client_cpu: Option<Duration>,
}

/// The result of one run at one offered rate.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub txs: usize,
    pub accounts: usize,
    pub batch: usize,
    /// Validators each batch went to.
    pub fanout: usize,
    pub validators: usize,
    /// Offered tx/s (`--rate`); `None` for as fast as the nodes take them.
    pub offered: Option<f64>,
    /// Sent tx/s.
    pub achieved: Option<f64>,
    /// Txs confirmed `ok` by f+1 receipts, per second from the start to the last one.
    pub throughput: f64,
    /// Verify ceiling, tx/s: `ceiling_sig_per_s` / validators.
    pub ceiling: f64,
    /// This machine's ed25519 batch-verify rate (batches of 64, all cores), sig/s.
    pub ceiling_sig_per_s: f64,
    /// throughput / ceiling.
    pub ceiling_ratio: f64,
    pub counts: Counts,
    pub elapsed_s: f64,
    /// From each tx's scheduled send time to f+1 matching receipts.
    pub latency_ms: Latency,
    /// The load generator's CPU seconds during the run (it shares the machine).
    pub client_cpu_s: Option<f64>,
    pub valid: bool,
    pub invalid_reasons: Vec<String>,
    pub nodes: Vec<NodeCheck>,
    /// Each confirmed tx's (scheduled send, latency), in the order confirmed.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// How a run was set up, for its report.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub accounts: usize,
    pub batch: usize,
    pub fanout: usize,
    pub validators: usize,
    pub pace: Pace,
    /// ed25519 batch-verify rate of this machine, sig/s.
    pub ceiling_sig_per_s: f64,
}

/// Builds the report; `valid` follows [`invalid_reasons`] with the txs committed.
pub fn summarize(setup: &Setup, load: LoadResult, nodes: Vec<NodeCheck>) -> Report {
    let secs = load.elapsed.as_secs_f64();
    let throughput = if secs > 0.0 {
        load.counts.ok as f64 / secs
    } else {
        0.0
    };
    let ceiling = setup.ceiling_sig_per_s / setup.validators.max(1) as f64;
    let mut reasons = invalid_reasons(&nodes, load.counts.committed());
    let unconfirmed = load.counts.refused + load.counts.failed;
    if unconfirmed > 0 {
        reasons.push(format!(
            "{unconfirmed} of {} txs got no f+1 receipts ({} refused, {} failed)",
            load.counts.txs, load.counts.refused, load.counts.failed
        ));
    }
    let offered = match setup.pace {
        Pace::Rate(r) => Some(r),
        Pace::Max => None,
    };
    Report {
        txs: load.counts.txs,
        accounts: setup.accounts,
        batch: setup.batch,
        fanout: setup.fanout,
        validators: setup.validators,
        offered,
        achieved: load.achieved,
        throughput,
        ceiling,
        ceiling_sig_per_s: setup.ceiling_sig_per_s,
        ceiling_ratio: if ceiling > 0.0 {
            throughput / ceiling
        } else {
            0.0
        },
        elapsed_s: secs,
        latency_ms: load.recorder.latency(),
        samples: load.recorder.samples,
        client_cpu_s: load.client_cpu.map(|d| d.as_secs_f64()),
        valid: reasons.is_empty(),
        invalid_reasons: reasons,
        counts: load.counts,
        nodes,
    }
}

fn rate_text(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.1} tx/s"))
}

impl Report {
    /// The human summary.
    pub fn text(&self) -> String {
        let l = &self.latency_ms;
        let c = &self.counts;
        let mut s = format!(
            "{} txs from {} accounts in batches of {} to {} of {} validators, {:.2} s\n\
             offered     {}\n\
             achieved    {} (sent)\n\
             committed   {:.1} tx/s ({} ok, {} other result, {} not applied, {} refused, {} failed)\n\
             latency     p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms \
             (scheduled send to f+1 receipts, {} txs)\n\
             ceiling     {:.1} tx/s = {:.0} sig/s (ed25519 batches of {CEILING_BATCH}, all cores) / n = {}; \
             committed / ceiling = {:.2}",
            self.txs,
            self.accounts,
            self.batch,
            self.fanout,
            self.validators,
            self.elapsed_s,
            match self.offered {
                Some(r) => format!("{r:.1} tx/s (open loop)"),
                None => "as fast as the nodes take them (closed loop)".to_owned(),
            },
            rate_text(self.achieved),
            self.throughput,
            c.ok,
            c.other_applied,
            c.not_applied,
            c.refused,
            c.failed,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            l.count,
            self.ceiling,
            self.ceiling_sig_per_s,
            self.validators,
            self.ceiling_ratio,
        );
        let committed = c.ok + c.other_applied;
        if let Some(cpu) = self.client_cpu_s {
            let _ = write!(
                s,
                "\nclient CPU  {cpu:.1} s (this load generator, on the same machine), {:.3} ms per committed tx",
                cpu * 1e3 / committed.max(1) as f64
            );
        }
        for n in &self.nodes {
            let _ = write!(s, "\nvalidator   {}", n.cost_line(committed));
        }
        for e in &c.first_errors {
            let _ = write!(s, "\n  e.g. {e}");
        }
        if self.valid {
            s.push_str(
                "\nrun VALID: every node synced to disk and verified at least one signature per \
                 committed tx",
            );
        } else {
            s.push_str("\nrun INVALID:");
            for r in &self.invalid_reasons {
                let _ = write!(s, "\n  {r}");
            }
        }
        s
    }
}

/// The CSV of a sweep: one row per run.
pub fn csv(reports: &[Report]) -> String {
    let mut s = String::from(
        "offered_tx_s,achieved_tx_s,committed_tx_s,p50_ms,p90_ms,p99_ms,max_ms,txs,ok,ceiling_tx_s,valid\n",
    );
    let opt = |r: Option<f64>| r.map_or_else(String::new, |r| format!("{r:.1}"));
    for r in reports {
        let l = &r.latency_ms;
        let _ = writeln!(
            s,
            "{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{},{},{:.1},{}",
            opt(r.offered),
            opt(r.achieved),
            r.throughput,
            l.p50,
            l.p90,
            l.p99,
            l.max,
            r.txs,
            r.counts.ok,
            r.ceiling,
            r.valid
        );
    }
    s
}

/// Every confirmed tx of every run, one row each, sorted by scheduled send within a run:
/// when the slow ones were sent, to line them up with what the nodes did then.
pub fn latency_csv(reports: &[Report]) -> String {
    let mut s = String::from("run,offered_tx_s,sent_s,latency_ms\n");
    for (i, r) in reports.iter().enumerate() {
        let offered = r.offered.map_or_else(String::new, |r| format!("{r:.1}"));
        let mut samples = r.samples.clone();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (sent, latency) in samples {
            let _ = writeln!(s, "{},{offered},{sent:.4},{latency:.3}", i + 1);
        }
    }
    s
}

/// Drawing the chart failed.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart: {0}")]
pub struct ChartError(String);

/// The latency-versus-throughput chart of a sweep, SVG: p50, p90 and p99 (log scale)
/// against committed tx/s, runs in offered order, with the verify ceiling marked.
pub fn svg(reports: &[Report]) -> Result<String, ChartError> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
    let ceiling = reports.iter().map(|r| r.ceiling).fold(0.0, f64::max);
    let xmax = reports
        .iter()
        .map(|r| r.throughput.max(r.offered.unwrap_or(0.0)))
        .fold(ceiling, f64::max)
        .max(1.0)
        * 1.05;
    let lat = |r: &Report| [r.latency_ms.p50, r.latency_ms.p90, r.latency_ms.p99];
    let all: Vec<f64> = reports.iter().flat_map(lat).filter(|v| *v > 0.0).collect();
    let ymin = all.iter().copied().fold(f64::INFINITY, f64::min);
    let ymin = if ymin.is_finite() { ymin / 2.0 } else { 1.0 };
    let ymax = all.iter().copied().fold(ymin * 10.0, f64::max) * 2.0;
    let mut runs: Vec<&Report> = reports.iter().collect();
    runs.sort_by(|a, b| {
        let key = |r: &Report| r.offered.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b))
    });
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "stele bench: latency vs committed throughput",
                ("sans-serif", 22),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("committed tx/s (ok, f+1 receipts)")
            .y_desc("latency from scheduled send, ms")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y}"))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(BLACK.mix(0.04))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, color)) in [("p50", BLUE), ("p90", GREEN), ("p99", RED)]
            .into_iter()
            .enumerate()
        {
            let pts: Vec<(f64, f64)> = runs
                .iter()
                .map(|r| (r.throughput, lat(r)[i]))
                .filter(|(_, y)| *y > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(|e| err(&e))?;
        }
        // Each run's offered rate beside its p50 point.
        let offered: Vec<(f64, f64, String)> = runs
            .iter()
            .filter(|r| r.latency_ms.p50 > 0.0)
            .map(|r| {
                let label = r
                    .offered
                    .map_or_else(|| "max".to_owned(), |o| format!("{o:.0}/s"));
                (r.throughput, r.latency_ms.p50, label)
            })
            .collect();
        chart
            .draw_series(offered.into_iter().map(|(x, y, label)| {
                EmptyElement::at((x, y))
                    + Text::new(format!("offered {label}"), (8, 4), ("sans-serif", 12))
            }))
            .map_err(|e| err(&e))?;
        if ceiling > 0.0 {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(ceiling, ymin), (ceiling, ymax)],
                    8,
                    5,
                    grey.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("verify ceiling {ceiling:.0} tx/s"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(buf)
}

/// This machine's ed25519 batch-verify rate, sig/s: batches of [`CEILING_BATCH`] of the
/// given txs' signatures (cycled), verified on `threads` threads for about `dur`.
pub fn verify_ceiling(
    chain: &ChainBinding,
    sample: &[Transaction],
    dur: Duration,
    threads: usize,
) -> f64 {
    assert!(!sample.is_empty(), "the ceiling is measured on real txs");
    let items: Vec<(PublicKey, Vec<u8>, Signature)> = sample
        .iter()
        .cycle()
        .take(CEILING_BATCH)
        .map(|t| (t.sender, t.message(chain), t.signature))
        .collect();
    let refs: Vec<(&PublicKey, &[u8], &Signature)> =
        items.iter().map(|(p, m, s)| (p, m.as_slice(), s)).collect();
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let refs = &refs;
                s.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed() < dur {
                        let verdicts = Ed25519.verify_batch(refs);
                        assert!(
                            verdicts.iter().all(Result::is_ok),
                            "our own signatures verify"
                        );
                        n += refs.len() as u64;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Where a bench's transfers go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipients {
    /// 1 to the next sender: the state stays the same size.
    Senders,
    /// The genesis's `min_new_account` to a new key each, derived from this seed and the
    /// tx's index: the state grows by one account per tx.
    New(u64),
}

/// The new account tx `i` of a [`Recipients::New`] run pays.
pub fn new_account(seed: u64, i: usize) -> PublicKey {
    let mut salt = 0u64;
    loop {
        let d = Digest::of_parts(
            "stele/bench/new-account",
            &[
                &seed.to_le_bytes(),
                &(i as u64).to_le_bytes(),
                &salt.to_le_bytes(),
            ],
        );
        let key = PublicKey(*d.as_bytes());
        // A small-order key is refused as a recipient; one in 2^250 or so.
        if !key.is_small_order() {
            return key;
        }
        salt += 1;
    }
}

/// Pre-signs `total` transfers over `keys` (round robin, contiguous nonces from each
/// account's `next`) to `to`, on `threads` threads; `tick(k)` reports k more signed.
pub fn presign(
    client: &Client,
    keys: &[KeyPair],
    next: &[Nonce],
    total: usize,
    to: Recipients,
    threads: usize,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Transaction>, ClientError> {
    assert!(keys.len() >= 2, "a transfer goes to another account");
    assert_eq!(keys.len(), next.len());
    let m = keys.len();
    let per = total.div_ceil(threads.max(1)).max(1);
    let sign_range = |lo: usize, hi: usize| -> Result<Vec<Transaction>, ClientError> {
        let mut out = Vec::with_capacity(hi - lo);
        for i in lo..hi {
            let (a, off) = assignment(i, m);
            let op = match to {
                Recipients::Senders => Op::Transfer {
                    to: keys[(a + 1) % m].public(),
                    amount: Amount(1),
                },
                Recipients::New(seed) => Op::Transfer {
                    to: new_account(seed, i),
                    amount: client.genesis().params.min_new_account.max(Amount(1)),
                },
            };
            out.push(client.sign(&keys[a], Nonce(next[a].0 + off), op)?);
            if out.len() % 256 == 0 {
                tick(256);
            }
        }
        tick((out.len() % 256) as u64);
        Ok(out)
    };
    let parts: Vec<Result<Vec<Transaction>, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..total)
            .step_by(per)
            .map(|lo| {
                let sign_range = &sign_range;
                s.spawn(move || sign_range(lo, (lo + per).min(total)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut txs = Vec::with_capacity(total);
    for p in parts {
        txs.extend(p?);
    }
    debug_assert_eq!(txs.len(), total);
    Ok(txs)
}

/// The load generator's own CPU time (user + system), from `/proc/self/stat`.
pub use stele_types::proc::process_cpu;

/// Parameters of one load phase.
#[derive(Clone, Debug)]
pub struct LoadOpts {
    pub batch: usize,
    pub pace: Pace,
    /// Batches outstanding at most (see [`batches_in_flight`]).
    pub max_batches: usize,
    /// Validators each batch is posted to with `?wait=true` (f+1 is the least that gives
    /// f+1 receipts); the others get the txs by relay.
    pub fanout: usize,
    /// How long a tx may take from its due time to f+1 receipts.
    pub wait_timeout: Duration,
}

/// Posts one batch with `?wait=true` to `fanout` validators, verifies the receipts in
/// their answers as they come, and notes for each tx when f+1 matched. What that round
/// did not settle (a refusal at one node, a node's wait that ran out before the outcome,
/// an unreachable node) goes again, as a smaller batch, to every validator whose receipt
/// is still missing, until `deadline`: one request per node and round, never a poll per
/// tx, so an overloaded network is not also flooded by its load generator.
pub async fn send_batch(
    client: &Client,
    txs: &[Transaction],
    fanout: usize,
    deadline: Instant,
) -> Vec<Fate> {
    assert!(!txs.is_empty() && txs.len() <= MAX_SUBMIT_BATCH);
    let n = txs.len();
    let need = client.receipts_needed();
    let ids: Arc<[TxId]> = txs.iter().map(TxId::of).collect();
    let hashes: Vec<TxHash> = ids.iter().map(|t| t.hash).collect();
    let mut votes: Vec<Vec<(ReplicaId, Outcome)>> = vec![Vec::new(); n];
    let mut fate: Vec<Option<Fate>> = vec![None; n];
    let mut admitted = vec![false; n];
    let mut refusal: Vec<Option<String>> = vec![None; n];
    let mut last_error: Option<String> = None;
    let mut pause = RETRY_PAUSE_START;
    for round in 0u32.. {
        let open: Vec<usize> = (0..n).filter(|k| fate[*k].is_none()).collect();
        if open.is_empty() {
            break;
        }
        if round > 0 {
            // Refused by every node it went to, or left without an answer, with no node
            // holding it: a refusal now is the node's final word.
            let give_up = Instant::now() >= deadline;
            for &k in &open {
                if give_up || (round > 1 && !admitted[k] && refusal[k].is_some()) {
                    fate[k] = Some(match (&refusal[k], give_up) {
                        (Some(r), false) => Fate::Refused(r.clone()),
                        _ => Fate::Failed(format!(
                            "no f+1 matching receipts by the deadline ({} of {need}); last error: {}",
                            agreed_best(&votes[k]),
                            last_error.as_deref().unwrap_or("none")
                        )),
                    });
                }
            }
            if give_up {
                break;
            }
        }
        let open: Vec<usize> = open.into_iter().filter(|k| fate[*k].is_none()).collect();
        if open.is_empty() {
            break;
        }
        // Only this round's refusals decide at the next.
        for &k in &open {
            refusal[k] = None;
        }
        // Round 0: the fanout. Later: every node that has not given a counted receipt for
        // all the open txs.
        let targets: Vec<(usize, Node)> = if round == 0 {
            client
                .fanout_nodes(&hashes[open[0]], fanout)
                .into_iter()
                .filter_map(|node| Some((client.nodes().iter().position(|x| *x == node)?, node)))
                .collect()
        } else {
            client
                .nodes()
                .iter()
                .cloned()
                .enumerate()
                .filter(|(_, node)| {
                    let id = node.validator;
                    open.iter()
                        .any(|k| !votes[*k].iter().any(|(who, _)| Some(*who) == id))
                })
                .collect()
        };
        let part: Vec<Transaction> = open.iter().map(|k| txs[*k].clone()).collect();
        let body = Arc::new(SubmitBody::new(&part, Encoding::Binary));
        let open = Arc::new(open);
        let started = Instant::now();
        let mut progressed = false;
        let mut set = JoinSet::new();
        for (_, node) in targets {
            let (c, b) = (client.clone(), Arc::clone(&body));
            set.spawn(async move {
                let timeout = c.config().wait_request_timeout.min(remaining(deadline));
                let r = c.post_retrying(&node, &b, true, timeout, deadline).await;
                (node, r)
            });
        }
        while let Some(joined) = set.join_next().await {
            let (node, answer): (Node, _) = match joined {
                Ok(x) => x,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => continue,
            };
            let resp = match answer {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "bench batch not taken");
                    last_error = Some(e.to_string());
                    continue;
                }
            };
            // post_txs checked the answer holds exactly the hashes sent, in order.
            let mut receipts = Vec::new();
            for (j, e) in resp.txs.into_iter().enumerate() {
                let k = open[j];
                if e.admitted == Admitted::Refused {
                    if let Some(api) = e.error {
                        let why = format!("{node}: {}: {}", api.reason, api.error);
                        last_error = Some(why.clone());
                        refusal[k] = Some(why);
                    }
                    continue;
                }
                admitted[k] = true;
                if let Some(TxResponse {
                    receipt: Some(r),
                    used_by,
                    ..
                }) = e.outcome
                {
                    receipts.push((k, r, used_by));
                }
            }
            let (c, ids) = (client.clone(), Arc::clone(&ids));
            let counted = tokio::task::spawn_blocking(move || {
                verify_receipts(c.receipt_checker(), &ids, receipts)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            let now = Instant::now();
            for (k, who, what) in counted {
                progressed = true;
                votes[k].push((who, what));
                if fate[k].is_none() {
                    if let Some(o) = agreed(need, &votes[k]) {
                        fate[k] = Some(Fate::Confirmed {
                            at: now,
                            result: o.result,
                        });
                    }
                }
            }
            if open.iter().all(|k| fate[*k].is_some()) {
                set.abort_all();
                break;
            }
        }
        // A round that failed fast (nodes down, refusing) waits before the next one.
        if !progressed && started.elapsed() < pause {
            tokio::time::sleep(pause.min(remaining(deadline))).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }
    fate.into_iter()
        .map(|f| f.unwrap_or_else(|| Fate::Failed("no outcome".into())))
        .collect()
}

/// The size of the largest group of matching votes.
fn agreed_best(votes: &[(ReplicaId, Outcome)]) -> usize {
    let mut groups: BTreeMap<Outcome, BTreeSet<ReplicaId>> = BTreeMap::new();
    for (who, what) in votes {
        groups.entry(*what).or_default().insert(*who);
    }
    groups.values().map(BTreeSet::len).max().unwrap_or(0)
}

/// Sends `txs` (signed, in round-robin order) in batches on schedule, each batch with
/// [`send_batch`], and measures each tx from its batch's due time. `progress` counts
/// settled txs.
pub async fn load(
    client: &Client,
    txs: Vec<Transaction>,
    opts: &LoadOpts,
    progress: &ProgressBar,
) -> LoadResult {
    let b = opts.batch.clamp(1, MAX_SUBMIT_BATCH);
    let permits = Arc::new(Semaphore::new(opts.max_batches.max(1)));
    let start = Instant::now();
    let mut rec = Recorder::with_samples(start);
    let mut counts = Counts {
        txs: txs.len(),
        ..Counts::default()
    };
    let mut last_done: Option<Instant> = None;
    let mut settle = |due: Instant, fates: Vec<Fate>, rec: &mut Recorder, counts: &mut Counts| {
        progress.inc(fates.len() as u64);
        for f in fates {
            if let Fate::Confirmed { at, .. } = f {
                last_done = last_done.max(Some(at));
            }
            counts.add(due, f, rec);
        }
    };
    let cpu0 = process_cpu();
    let mut set: JoinSet<(Instant, Vec<Fate>)> = JoinSet::new();
    let (mut released, mut last_len, mut last_release) = (0usize, 0usize, start);
    for (k, chunk) in txs.chunks(b).enumerate() {
        let scheduled = match opts.pace {
            Pace::Rate(r) => {
                let due = start + scheduled_offset(k, b, r);
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
            Pace::Max => None,
        };
        // Settle what finished while waiting for the window, so the tally keeps up.
        let permit = loop {
            tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => break p,
                Some(j) = set.join_next(), if !set.is_empty() => {
                    if let Some((due, fates)) = joined(j) {
                        settle(due, fates, &mut rec, &mut counts);
                    }
                }
            }
        };
        let Ok(permit) = permit else {
            unreachable!("the window semaphore is never closed")
        };
        let now = Instant::now();
        let due = scheduled.unwrap_or(now);
        (released, last_len, last_release) = (released + chunk.len(), chunk.len(), now);
        let (c, chunk) = (client.clone(), chunk.to_vec());
        let (fanout, deadline) = (opts.fanout, due + opts.wait_timeout);
        set.spawn(async move {
            let fates = send_batch(&c, &chunk, fanout, deadline).await;
            drop(permit);
            (due, fates)
        });
        while let Some(j) = set.try_join_next() {
            if let Some((due, fates)) = joined(j) {
                settle(due, fates, &mut rec, &mut counts);
            }
        }
    }
    while let Some(j) = set.join_next().await {
        if let Some((due, fates)) = joined(j) {
            settle(due, fates, &mut rec, &mut counts);
        }
    }
    let client_cpu = match (cpu0, process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    debug_assert_eq!(
        rec.len(),
        counts.ok + counts.other_applied + counts.not_applied
    );
    LoadResult {
        counts,
        recorder: rec,
        elapsed: last_done.map_or(Duration::ZERO, |t| t.duration_since(start)),
        achieved: send_rate(released, last_len, last_release.duration_since(start)),
        client_cpu,
    }
}

/// A finished task's value; a panic in it (a bug of ours) goes on up, and a cancelled
/// one (never, here) is skipped.
fn joined<T>(j: Result<T, tokio::task::JoinError>) -> Option<T> {
    match j {
        Ok(v) => Some(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// Every node's `sync` flag and counters, in node order.
pub async fn sample(client: &Client) -> Vec<(String, NodeSample)> {
    let http = reqwest::Client::new();
    let timeout = client.config().request_timeout;
    let answers = client
        .ask_all(client.nodes(), move |c, n| {
            let http = http.clone();
            async move {
                let sync = c.status(&n).await.ok().map(|s| s.sync);
                let text = match http
                    .get(format!("{}/metrics", n.url))
                    .timeout(timeout)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r.text().await.ok(),
                    _ => None,
                };
                let get = |name| text.as_deref().and_then(|t| metric(t, name));
                Ok::<_, ClientError>(NodeSample {
                    sync,
                    sig_verified: get("stele_sig_verified_total"),
                    txs_committed: get("stele_txs_committed_total"),
                    cpu_s: get("stele_process_cpu_seconds_total"),
                    verify_s: get("stele_sig_verify_cpu_seconds_total"),
                    blocks: get("stele_blocks_committed_total"),
                    synced_writes: get("stele_store_synced_writes_total"),
                })
            }
        })
        .await;
    answers
        .into_iter()
        .map(|(n, r)| (n.url, r.unwrap_or_default()))
        .collect()
}

/// Pairs the samples taken before and after a run.
pub fn checks(
    before: Vec<(String, NodeSample)>,
    after: Vec<(String, NodeSample)>,
) -> Vec<NodeCheck> {
    debug_assert_eq!(before.len(), after.len());
    before
        .into_iter()
        .zip(after)
        .map(|((url, b), (_, a))| NodeCheck {
            url,
            before: b,
            after: a,
        })
        .collect()
}

/// A whole `stele bench`: the accounts, the runs and how they are sent.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Txs per run.
    pub txs: usize,
    /// One run per pace, in order (several with `--sweep`).
    pub paces: Vec<Pace>,
    pub batch: usize,
    pub fanout: usize,
    /// Txs outstanding at most; `None`: as many as the per-sender limits allow.
    pub in_flight: Option<usize>,
    pub wait_timeout: Duration,
    /// How long the verify ceiling is measured.
    pub ceiling_time: Duration,
    pub threads: usize,
    /// Transfers create new accounts instead of paying the senders.
    pub new_accounts: bool,
}

/// What `run` tells the user along the way.
pub trait Ui {
    /// A line of progress (to stderr).
    fn note(&self, msg: &str);
    /// A progress bar over `len` items with `what` as its message.
    fn bar(&self, len: u64, what: &str) -> ProgressBar;
}

/// For each pace in turn: reads the accounts' next nonces, pre-signs the run's txs,
/// samples every node, sends the load and samples again. The verify ceiling is measured
/// once, on the first run's txs, before any load. A run that left txs without f+1
/// receipts ends the series: later runs would start behind a stalled or lagging network
/// (and senders with gaps), and measure that instead. One report per run done, in order.
pub async fn run(
    client: &Client,
    keys: &[KeyPair],
    plan: &Plan,
    ui: &dyn Ui,
) -> Result<Vec<Report>, ClientError> {
    assert!(!plan.paces.is_empty() && plan.txs > 0 && keys.len() >= 2);
    let m = keys.len();
    let params = &client.genesis().params;
    let per_sender = sender_window(params.nonce_window, params.max_pending_per_sender);
    let by_senders = batches_in_flight(per_sender, plan.batch, m);
    let max_batches = match plan.in_flight {
        Some(t) => by_senders.min(t.div_ceil(plan.batch).max(1)),
        None => by_senders,
    };
    let mut ceiling_sig_per_s = None;
    let mut reports = Vec::with_capacity(plan.paces.len());
    for (i, pace) in plan.paces.iter().copied().enumerate() {
        let mut next = Vec::with_capacity(m);
        for k in keys {
            next.push(client.next_nonce(&k.public()).await?);
        }
        let bar = ui.bar(plan.txs as u64, "signing");
        let txs = {
            let (c, keys, bar2) = (client.clone(), keys.to_vec(), bar.clone());
            let (total, threads) = (plan.txs, plan.threads);
            let to = if plan.new_accounts {
                Recipients::New(rand::random())
            } else {
                Recipients::Senders
            };
            tokio::task::spawn_blocking(move || {
                presign(&c, &keys, &next, total, to, threads, &|k| bar2.inc(k))
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
        };
        bar.finish_and_clear();
        let ceiling_sig_per_s = match ceiling_sig_per_s {
            Some(c) => c,
            None => {
                ui.note(&format!(
                    "measuring the verify ceiling: ed25519 batches of {CEILING_BATCH} on {} \
                     threads for {:.1} s ...",
                    plan.threads,
                    plan.ceiling_time.as_secs_f64()
                ));
                let chain = client.chain().clone();
                let sample: Vec<Transaction> = txs.iter().take(CEILING_BATCH).cloned().collect();
                let (d, t) = (plan.ceiling_time, plan.threads);
                let c = tokio::task::spawn_blocking(move || verify_ceiling(&chain, &sample, d, t))
                    .await
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                *ceiling_sig_per_s.insert(c)
            }
        };
        let setup = Setup {
            accounts: m,
            batch: plan.batch,
            fanout: plan.fanout,
            validators: client.validators().n(),
            pace,
            ceiling_sig_per_s,
        };
        ui.note(&format!(
            "run {}/{}: {} txs {}, batches of {}, to {} validators each, at most {} batches \
             in flight ...",
            i + 1,
            plan.paces.len(),
            txs.len(),
            match pace {
                Pace::Rate(r) => format!("at {r:.0} tx/s"),
                Pace::Max => "as fast as the nodes take them".to_owned(),
            },
            plan.batch,
            plan.fanout,
            max_batches
        ));
        let before = sample(client).await;
        let opts = LoadOpts {
            batch: plan.batch,
            pace,
            max_batches,
            fanout: plan.fanout,
            wait_timeout: plan.wait_timeout,
        };
        let bar = ui.bar(txs.len() as u64, "confirmed");
        let res = load(client, txs, &opts, &bar).await;
        bar.finish_and_clear();
        let after = sample(client).await;
        let report = summarize(&setup, res, checks(before, after));
        let unconfirmed = report.counts.refused + report.counts.failed;
        reports.push(report);
        if unconfirmed > 0 && i + 1 < plan.paces.len() {
            ui.note(&format!(
                "run {} left {unconfirmed} txs without f+1 receipts: the {} later runs are skipped",
                i + 1,
                plan.paces.len() - i - 1
            ));
            break;
        }
    }
    Ok(reports)
}

/// A [`Ui`] that says nothing (for `--json` and tests).
#[derive(Debug, Default)]
pub struct Quiet;

impl Ui for Quiet {
    fn note(&self, _msg: &str) {}
    fn bar(&self, _len: u64, _what: &str) -> ProgressBar {
        ProgressBar::hidden()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::tests::{keys, receipt, set, spot, Spot};
    use std::sync::atomic::{AtomicU64, Ordering};
    use stele_crypto::Digest;
    use stele_types::Height;

    #[test]
    fn batch_k_is_due_at_k_times_batch_over_rate() {
        assert_eq!(scheduled_offset(0, 256, 1000.0), Duration::ZERO);
        assert_eq!(scheduled_offset(4, 250, 1000.0), Duration::from_secs(1));
        assert_eq!(scheduled_offset(3, 100, 2000.0), Duration::from_millis(150));
        // 5,000 tx/s in batches of 64: one batch every 12.8 ms.
        assert_eq!(scheduled_offset(10, 64, 5000.0), Duration::from_millis(128));
    }

    #[test]
    #[should_panic(expected = "a rate is positive")]
    fn a_zero_rate_has_no_schedule() {
        let _ = scheduled_offset(1, 1, 0.0);
    }

    #[test]
    fn latency_counts_the_time_spent_behind_schedule() {
        let start = Instant::now();
        let due = start + Duration::from_millis(100);
        // Sent 400 ms late, confirmed 10 ms after sending: 410 ms, not 10.
        let done = due + Duration::from_millis(410);
        assert_eq!(latency_from_schedule(due, done), Duration::from_millis(410));
        assert_eq!(latency_from_schedule(done, due), Duration::ZERO);
        let mut r = Recorder::new();
        r.record(due, done);
        assert_eq!(r.len(), 1);
        assert!((r.latency().p50 - 410.0).abs() < 0.5, "{:?}", r.latency());
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let t0 = Instant::now();
        let mut r = Recorder::new();
        assert_eq!(r.latency(), Latency::default());
        for ms in 1..=1000u64 {
            r.record(t0, t0 + Duration::from_millis(ms));
        }
        let l = r.latency();
        assert_eq!(l.count, 1000);
        // hdrhistogram keeps 3 significant digits.
        for (got, want) in [
            (l.p50, 500.0),
            (l.p90, 900.0),
            (l.p99, 990.0),
            (l.max, 1000.0),
        ] {
            assert!((got - want).abs() <= want * 0.002, "{got} vs {want}");
        }
    }

    #[test]
    fn send_rate_of_an_on_schedule_run_is_its_rate() {
        // 10 batches of 64 at 5,000 tx/s: the last goes out at 9 × 12.8 ms.
        let span = scheduled_offset(9, 64, 5000.0);
        let r = send_rate(640, 64, span).unwrap();
        assert!((r - 5000.0).abs() < 1e-6, "{r}");
        assert_eq!(send_rate(64, 64, Duration::ZERO), None);
    }

    #[test]
    fn senders_are_round_robin_with_contiguous_nonces() {
        assert_eq!(assignment(0, 4), (0, 0));
        assert_eq!(assignment(5, 4), (1, 1));
        assert_eq!(assignment(11, 4), (3, 2));
        assert_eq!(sender_window(64, 64), 60);
        assert_eq!(sender_window(3, 64), 1);
        // One tx per sender per batch: as many batches as the sender window.
        assert_eq!(batches_in_flight(60, 64, 64), 60);
        // Up to two per sender per batch: half as many.
        assert_eq!(batches_in_flight(60, 100, 64), 30);
        assert_eq!(batches_in_flight(1, 4096, 2), 1);
    }

    #[test]
    fn presigned_txs_verify_and_number_each_sender_contiguously() {
        let genesis = crate::verify::tests::genesis(&keys(4));
        let client = Client::new(genesis, &["127.0.0.1:1".to_owned()], Default::default()).unwrap();
        let senders = keys(3);
        let next = [Nonce(5), Nonce(0), Nonce(9)];
        let ticks = AtomicU64::new(0);
        let txs = presign(&client, &senders, &next, 10, Recipients::Senders, 3, &|k| {
            ticks.fetch_add(k, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(txs.len(), 10);
        assert_eq!(ticks.load(Ordering::Relaxed), 10);
        for (i, t) in txs.iter().enumerate() {
            let (a, off) = assignment(i, 3);
            assert_eq!(t.sender, senders[a].public());
            assert_eq!(t.nonce, Nonce(next[a].0 + off));
            assert!(matches!(t.op, Op::Transfer { to, .. } if to == senders[(a + 1) % 3].public()));
            Ed25519
                .verify(&t.sender, &t.message(client.chain()), &t.signature)
                .unwrap();
        }
        let rate = verify_ceiling(client.chain(), &txs, Duration::from_millis(50), 2);
        assert!(rate > 0.0);
    }

    fn outcome(h: u64, result: TxResult) -> Outcome {
        Outcome {
            height: Height(h),
            index: 0,
            block_digest: Digest::of(&h.to_le_bytes()),
            results_root: Digest::of(b"results"),
            state_digest: Digest::of(b"state"),
            result,
        }
    }

    #[test]
    fn f_plus_one_distinct_validators_must_agree() {
        let ok = outcome(3, TxResult::Ok);
        let other = outcome(4, TxResult::Ok);
        let r = ReplicaId;
        assert_eq!(agreed(2, &[(r(0), ok)]), None);
        // One validator twice is still one.
        assert_eq!(agreed(2, &[(r(0), ok), (r(0), ok)]), None);
        // Two validators on different outcomes agree on nothing.
        assert_eq!(agreed(2, &[(r(0), ok), (r(1), other)]), None);
        assert_eq!(
            agreed(2, &[(r(0), ok), (r(1), other), (r(2), ok)]),
            Some(ok)
        );
    }

    #[test]
    fn only_verified_final_receipts_for_the_tx_count() {
        let k = keys(4);
        let vs = set("t", &k);
        let checker = ReceiptChecker::new(vs.clone());
        let h = [Digest::of(b"a"), Digest::of(b"b")];
        let ids = [TxId::hash(h[0]), TxId::hash(h[1])];
        let ok = spot(3, TxResult::Ok);
        let mut forged = receipt(&vs, &k[1], 1, h[0], ok);
        forged.block.signature.0[3] ^= 1;
        let r = |key: usize, id: u16, hash: TxHash, s: Spot| receipt(&vs, &k[key], id, hash, s);
        let counted = verify_receipts(
            &checker,
            &ids,
            vec![
                (0, r(0, 0, h[0], ok), None),
                (0, forged, None),
                // For the other tx of the batch.
                (0, r(2, 2, h[1], ok), None),
                // Non-final.
                (1, r(2, 2, h[1], spot(3, TxResult::NonceGap)), None),
                // Not a validator id.
                (1, r(3, 9, h[1], ok), None),
                (1, r(3, 3, h[1], ok), None),
                // Index out of the batch.
                (7, r(3, 3, h[1], ok), None),
            ],
        );
        // Each tx's leaf is in its own test block, so each has its own results root.
        let want = |k: usize| {
            checker
                .check(&ids[k], &r(k, k as u16, h[k], ok), None)
                .unwrap()
                .1
        };
        assert_eq!(want(0).result, TxResult::Ok);
        assert_eq!(
            counted,
            vec![(0, ReplicaId(0), want(0)), (1, ReplicaId(3), want(1))]
        );
    }

    #[test]
    fn reads_prometheus_samples() {
        let t = "# HELP stele_sig_verified_total x\n# TYPE stele_sig_verified_total counter\n\
                 stele_sig_verified_total 1234\nstele_sig_verified_total_x 9\n\
                 stele_txs_rejected_total{reason=\"a b\"} 5\nstele_txs_rejected_total{reason=\"c\"} 6 1700000000\n";
        assert_eq!(metric(t, "stele_sig_verified_total"), Some(1234.0));
        assert_eq!(metric(t, "stele_txs_rejected_total"), Some(11.0));
        assert_eq!(metric(t, "stele_txs_committed_total"), None);
    }

    fn node(sync: (bool, bool), sig: (f64, f64)) -> NodeCheck {
        let s = |sync, sig| NodeSample {
            sync: Some(sync),
            sig_verified: Some(sig),
            txs_committed: Some(0.0),
            cpu_s: None,
            verify_s: None,
            blocks: None,
            synced_writes: None,
        };
        NodeCheck {
            url: "http://n".into(),
            before: s(sync.0, sig.0),
            after: s(sync.1, sig.1),
        }
    }

    #[test]
    fn a_run_is_invalid_when_sync_is_off_or_a_node_verified_too_few() {
        assert!(invalid_reasons(&[node((true, true), (10.0, 110.0))], 100).is_empty());
        let r = invalid_reasons(&[node((true, false), (0.0, 100.0))], 100);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("sync is off after"), "{r:?}");
        let r = invalid_reasons(&[node((true, true), (10.0, 100.0))], 100);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("grew by 90 < 100"), "{r:?}");
        let mut silent = node((true, true), (0.0, 100.0));
        silent.after = NodeSample::default();
        assert_eq!(invalid_reasons(&[silent], 100).len(), 2);
        assert_eq!(invalid_reasons(&[], 0).len(), 1);
    }

    #[test]
    fn the_cost_line_divides_each_validators_cpu_by_the_committed_txs() {
        let mut n = node((true, true), (0.0, 1050.0));
        n.before.cpu_s = Some(10.0);
        n.after.cpu_s = Some(12.0);
        n.before.verify_s = Some(1.0);
        n.after.verify_s = Some(1.5);
        let line = n.cost_line(1000);
        assert!(line.contains("CPU 2.000 ms per tx"), "{line}");
        assert!(line.contains("25 % of it verifying"), "{line}");
        assert!(line.contains("1.05 tx signature checks per tx"), "{line}");
        assert!(line.contains("- synced writes per block"), "{line}");
        n.before.blocks = Some(100.0);
        n.after.blocks = Some(140.0);
        n.before.synced_writes = Some(300.0);
        n.after.synced_writes = Some(400.0);
        let line = n.cost_line(1000);
        assert!(line.contains("2.50 synced writes per block"), "{line}");
        // An old validator without the CPU counters: said, not guessed.
        let old = node((true, true), (0.0, 1000.0));
        assert!(
            old.cost_line(1000).contains("CPU - per tx, - of it"),
            "{}",
            old.cost_line(1000)
        );
    }

    fn report(rate: f64, ok: u64, p50: f64, valid_sigs: f64) -> Report {
        report_with(rate, ok, p50, valid_sigs, 0)
    }

    fn report_with(rate: f64, ok: u64, p50: f64, valid_sigs: f64, refused: u64) -> Report {
        let t0 = Instant::now();
        let mut rec = Recorder::new();
        let mut counts = Counts {
            txs: 1000,
            ..Counts::default()
        };
        for _ in 0..ok {
            let fate = Fate::Confirmed {
                at: t0 + Duration::from_secs_f64(p50 / 1000.0),
                result: TxResult::Ok,
            };
            counts.add(t0, fate, &mut rec);
        }
        for _ in 0..refused {
            counts.add(t0, Fate::Refused("sender_quota: full".into()), &mut rec);
        }
        let setup = Setup {
            accounts: 10,
            batch: 100,
            fanout: 2,
            validators: 4,
            pace: Pace::Rate(rate),
            ceiling_sig_per_s: 8000.0,
        };
        let load = LoadResult {
            counts,
            recorder: rec,
            elapsed: Duration::from_secs(2),
            achieved: Some(rate),
            client_cpu: None,
        };
        summarize(&setup, load, vec![node((true, true), (0.0, valid_sigs))])
    }

    #[test]
    fn summary_rates_ceiling_and_validity() {
        let r = report(1000.0, 900, 20.0, 800.0);
        assert_eq!(r.offered, Some(1000.0));
        assert_eq!(r.throughput, 450.0);
        assert_eq!(r.ceiling, 2000.0);
        assert!((r.ceiling_ratio - 0.225).abs() < 1e-9);
        assert_eq!(r.latency_ms.count, 900);
        // 800 signatures verified for 900 committed txs.
        assert!(!r.valid);
        assert_eq!(r.invalid_reasons.len(), 1);
        assert!(r.text().contains("run INVALID"), "{}", r.text());
        assert!(report(1000.0, 900, 20.0, 900.0).valid);
        // A tx without f+1 receipts makes the run incomplete, so not valid either.
        let r = report_with(1000.0, 900, 20.0, 900.0, 3);
        assert_eq!(r.counts.refused, 3);
        assert!(!r.valid);
        assert!(
            r.invalid_reasons[0].contains("3 of 1000 txs got no f+1 receipts"),
            "{:?}",
            r.invalid_reasons
        );
    }

    #[test]
    fn json_has_throughput_and_ceiling() {
        let v = serde_json::to_value(report(1000.0, 900, 20.0, 900.0)).unwrap();
        assert_eq!(v["throughput"], 450.0);
        assert_eq!(v["ceiling"], 2000.0);
        assert_eq!(v["valid"], true);
        assert!(v["latency_ms"]["p99"].as_f64().unwrap() > 19.0);
        assert_eq!(v["counts"]["ok"], 900);
    }

    #[test]
    fn the_latency_log_has_a_row_per_confirmed_tx_in_send_order() {
        let t0 = Instant::now();
        let mut rec = Recorder::with_samples(t0);
        let mut counts = Counts::default();
        // Confirmed out of send order; a refused one has no latency.
        for (due_ms, took_ms) in [(500, 40), (100, 250), (300, 10)] {
            let due = t0 + Duration::from_millis(due_ms);
            let fate = Fate::Confirmed {
                at: due + Duration::from_millis(took_ms),
                result: TxResult::Ok,
            };
            counts.add(due, fate, &mut rec);
        }
        counts.add(t0, Fate::Refused("sender_quota: full".into()), &mut rec);
        assert_eq!(rec.samples().len(), 3);
        let mut r = report(2000.0, 1, 10.0, 1e9);
        r.samples = rec.samples().to_vec();
        let csv = latency_csv(&[r]);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(
            rows,
            [
                "run,offered_tx_s,sent_s,latency_ms",
                "1,2000.0,0.1000,250.000",
                "1,2000.0,0.3000,10.000",
                "1,2000.0,0.5000,40.000"
            ]
        );
        assert!(
            Recorder::new().samples().is_empty(),
            "no origin, no samples"
        );
    }

    #[test]
    fn csv_has_one_row_per_run() {
        let rs = [
            report(1000.0, 900, 20.0, 900.0),
            report(2000.0, 1000, 40.0, 0.0),
        ];
        let text = csv(&rs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("offered_tx_s,achieved_tx_s,committed_tx_s,p50_ms"));
        assert!(
            lines[1].starts_with("1000.0,1000.0,450.0,20.0"),
            "{}",
            lines[1]
        );
        assert!(lines[2].ends_with(",2000.0,false"), "{}", lines[2]);
    }

    #[test]
    fn the_chart_is_an_svg_with_the_percentiles_and_the_ceiling() {
        let rs = [
            report(2000.0, 1000, 40.0, 0.0),
            report(1000.0, 900, 20.0, 900.0),
        ];
        let svg = svg(&rs).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "p50",
            "p90",
            "p99",
            "verify ceiling 2000 tx/s",
            "committed tx/s",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.svg");
        std::fs::write(&path, &svg).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
        // An empty sweep still draws axes.
        assert!(super::svg(&[]).unwrap().starts_with("<svg"));
    }

    /// Fake validators on 127.0.0.1 that commit every admitted tx at once and answer
    /// `?wait=true` with a signed receipt, for the network half of the bench.
    mod fake {
        use std::collections::HashMap;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};

        use axum::body::Bytes;
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};
        use axum::routing::{get, post};
        use axum::{Json, Router};
        use stele_crypto::{merkle, Digest, KeyPair, PublicKey, Signed};
        use stele_types::api::{
            AccountResponse, Admitted, ApiError, StatusResponse, SubmitEntry, SubmitResponse,
            TxResponse, TxStatus,
        };
        use stele_types::{
            codec, results_leaf, tx_hash, Amount, BlockReceipt, Genesis, Height, Nonce, Receipt,
            ReplicaId, Transaction, TxHash, TxResult, ViewNumber,
        };

        use crate::{Client, ClientConfig};

        #[derive(Clone, Copy, Debug, Default)]
        pub struct Behaviour {
            /// Refuses every tx of a batch (`sender_quota`).
            pub refuses: bool,
            /// Says `sync: false`.
            pub unsynced: bool,
            /// Reports no signature verifications.
            pub lazy: bool,
        }

        pub struct Node {
            id: ReplicaId,
            key: KeyPair,
            genesis: Genesis,
            b: Behaviour,
            ledger: Arc<Mutex<HashMap<TxHash, u32>>>,
            /// Each sender's next nonce, as the shared ledger has it.
            nonces: Arc<Mutex<HashMap<PublicKey, u64>>>,
            pub posts: AtomicU64,
        }

        impl Node {
            fn outcome(&self, hash: TxHash) -> Option<TxResponse> {
                let index = *self
                    .ledger
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&hash)?;
                // Each tx alone in its own block (height index + 1): a one-leaf tree.
                let height = Height(1 + u64::from(index));
                let tree = merkle::Tree::new(&[results_leaf(&hash, TxResult::Ok)]);
                let block = BlockReceipt {
                    replica: self.id,
                    height,
                    block_digest: Digest::of(&height.0.to_le_bytes()),
                    results_root: tree.root(),
                    state_digest: Digest::of(b"state"),
                };
                let receipt = Receipt {
                    block: Signed::sign(block, &self.genesis.chain_binding(), &self.key),
                    tx_hash: hash,
                    result: TxResult::Ok,
                    proof: tree.prove(0)?,
                };
                Some(TxResponse {
                    hash,
                    status: TxStatus::Applied,
                    height: Some(height),
                    index: Some(0),
                    result: Some(TxResult::Ok),
                    receipt: Some(receipt),
                    used_by: None,
                    tx: None,
                    horizon: None,
                })
            }
        }

        async fn post_txs(State(n): State<Arc<Node>>, body: Bytes) -> Response {
            n.posts.fetch_add(1, Ordering::SeqCst);
            let Ok(txs) = codec::decode::<Vec<Transaction>>(&body, 8 << 20) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let mut entries = Vec::new();
            for t in &txs {
                let hash = tx_hash(t);
                if n.b.refuses {
                    entries.push(SubmitEntry {
                        hash,
                        admitted: Admitted::Refused,
                        outcome: None,
                        error: Some(ApiError {
                            reason: "sender_quota".into(),
                            error: "fake".into(),
                            index: None,
                            horizon: None,
                        }),
                    });
                    continue;
                }
                {
                    let mut l = n.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    let next = l.len() as u32;
                    l.entry(hash).or_insert(next);
                    let mut nonces = n.nonces.lock().unwrap_or_else(|e| e.into_inner());
                    let after = nonces.entry(t.sender).or_insert(0);
                    *after = (*after).max(t.nonce.0 + 1);
                }
                entries.push(SubmitEntry {
                    hash,
                    admitted: Admitted::Accepted,
                    outcome: n.outcome(hash),
                    error: None,
                });
            }
            Json(SubmitResponse { txs: entries }).into_response()
        }

        async fn get_tx(State(n): State<Arc<Node>>, Path(h): Path<String>) -> Response {
            let Ok(h) = h.parse::<Digest>() else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            Json(n.outcome(h).unwrap_or_else(|| TxResponse::unknown(h))).into_response()
        }

        async fn get_account(State(n): State<Arc<Node>>, Path(k): Path<String>) -> Response {
            let Ok(key) = k.parse::<PublicKey>() else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let nonces = n.nonces.lock().unwrap_or_else(|e| e.into_inner());
            let a = AccountResponse {
                key,
                balance: Amount(1000),
                nonce: Nonce(nonces.get(&key).copied().unwrap_or(0)),
                height: Height(1),
            };
            Json(a).into_response()
        }

        async fn get_status(State(n): State<Arc<Node>>) -> Json<StatusResponse> {
            Json(StatusResponse {
                validator: n.id,
                chain_id: n.genesis.chain_id.clone(),
                genesis: n.genesis.digest(),
                height: Height(1),
                view: ViewNumber(0),
                active: true,
                block_hash: Digest::of(b"block 1"),
                state_digest: Digest::of(b"s"),
                stable_checkpoint: Height(0),
                peers_connected: 3,
                sync: !n.b.unsynced,
                recovering: false,
                mempool_txs: 0,
                state_root: None,
                snapshot_sync: None,
            })
        }

        async fn get_metrics(State(n): State<Arc<Node>>) -> String {
            // Every tx in the shared ledger counts as verified here (as if relayed).
            let seen = n.ledger.lock().unwrap_or_else(|e| e.into_inner()).len();
            let sigs = if n.b.lazy { 0 } else { seen };
            format!(
                "# TYPE stele_sig_verified_total counter\nstele_sig_verified_total {sigs}\n\
                 stele_txs_committed_total {seen}\n"
            )
        }

        /// Four fake validators of one genesis, and a client for them.
        pub async fn network(b: [Behaviour; 4]) -> (Client, Vec<Arc<Node>>) {
            let keys: Vec<KeyPair> = (0..4).map(|_| KeyPair::generate()).collect();
            let mut genesis = crate::verify::tests::genesis(&keys);
            let mut listeners = Vec::new();
            for v in &mut genesis.validators {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                v.api_addr = l.local_addr().unwrap().to_string();
                listeners.push(l);
            }
            let ledger = Arc::new(Mutex::new(HashMap::new()));
            let nonces = Arc::new(Mutex::new(HashMap::new()));
            let mut nodes = Vec::new();
            for (i, (l, (key, b))) in listeners
                .into_iter()
                .zip(keys.into_iter().zip(b))
                .enumerate()
            {
                let node = Arc::new(Node {
                    id: ReplicaId(i as u16),
                    key,
                    genesis: genesis.clone(),
                    b,
                    ledger: Arc::clone(&ledger),
                    nonces: Arc::clone(&nonces),
                    posts: AtomicU64::new(0),
                });
                let app = Router::new()
                    .route("/txs", post(post_txs))
                    .route("/txs/{hash}", get(get_tx))
                    .route("/accounts/{key}", get(get_account))
                    .route("/status", get(get_status))
                    .route("/metrics", get(get_metrics))
                    .with_state(Arc::clone(&node));
                tokio::spawn(async move { axum::serve(l, app).await });
                nodes.push(node);
            }
            let urls: Vec<String> = genesis
                .validators
                .iter()
                .map(|v| format!("http://{}", v.api_addr))
                .collect();
            let client = Client::new(genesis, &urls, ClientConfig::default()).unwrap();
            (client, nodes)
        }
    }

    fn plan(txs: usize, paces: Vec<Pace>) -> Plan {
        Plan {
            txs,
            paces,
            batch: 8,
            fanout: 2,
            in_flight: None,
            wait_timeout: Duration::from_secs(20),
            ceiling_time: Duration::from_millis(20),
            threads: 1,
            new_accounts: false,
        }
    }

    /// `--new-accounts`: every tx pays the genesis minimum to a key no other tx pays and
    /// no sender holds; another run (another seed) pays other keys.
    #[tokio::test]
    async fn a_new_accounts_run_pays_the_minimum_to_a_fresh_key_each() {
        let (client, _nodes) = fake::network([Default::default(); 4]).await;
        let senders = keys(2);
        let txs = presign(
            &client,
            &senders,
            &[Nonce(0); 2],
            50,
            Recipients::New(7),
            2,
            &|_| {},
        )
        .unwrap();
        let min = client.genesis().params.min_new_account.max(Amount(1));
        let mut to = std::collections::BTreeSet::new();
        for t in &txs {
            match t.op {
                Op::Transfer { to: k, amount } => {
                    assert_eq!(amount, min);
                    assert!(senders.iter().all(|s| s.public() != k));
                    to.insert(k);
                }
                ref other => panic!("not a transfer: {other:?}"),
            }
        }
        assert_eq!(to.len(), 50);
        assert_ne!(new_account(7, 0), new_account(8, 0));
    }

    #[tokio::test]
    async fn a_batch_is_confirmed_by_f_plus_one_receipts_despite_a_refusing_node() {
        let refusing = fake::Behaviour {
            refuses: true,
            ..Default::default()
        };
        let d = fake::Behaviour::default();
        let (client, nodes) = fake::network([refusing, d, d, d]).await;
        let senders = keys(4);
        let txs = presign(
            &client,
            &senders,
            &[Nonce(0); 4],
            64,
            Recipients::Senders,
            1,
            &|_| {},
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // Batches whose fanout holds the refusing node need a second round elsewhere.
        let mut with_refuser = 0;
        for chunk in txs.chunks(2) {
            let fanout = client.fanout_nodes(&stele_types::tx_hash(&chunk[0]), 2);
            if fanout.iter().any(|n| n.validator == Some(ReplicaId(0))) {
                with_refuser += 1;
            }
            let fates = send_batch(&client, chunk, 2, deadline).await;
            assert_eq!(fates.len(), chunk.len());
            for f in fates {
                assert!(
                    matches!(
                        f,
                        Fate::Confirmed {
                            result: TxResult::Ok,
                            ..
                        }
                    ),
                    "{f:?}"
                );
            }
        }
        assert!(with_refuser > 0);
        assert!(nodes[0].posts.load(Ordering::SeqCst) >= with_refuser);
    }

    #[tokio::test]
    async fn a_tx_every_node_refuses_is_counted_refused() {
        let r = fake::Behaviour {
            refuses: true,
            ..Default::default()
        };
        let (client, _nodes) = fake::network([r; 4]).await;
        let senders = keys(2);
        let txs = presign(
            &client,
            &senders,
            &[Nonce(0); 2],
            3,
            Recipients::Senders,
            1,
            &|_| {},
        )
        .unwrap();
        let fates = send_batch(&client, &txs, 2, Instant::now() + Duration::from_secs(20)).await;
        for f in fates {
            assert!(
                matches!(&f, Fate::Refused(why) if why.contains("sender_quota")),
                "{f:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_run_reports_every_tx_and_its_validity() {
        let d = fake::Behaviour::default();
        let (client, _) = fake::network([d; 4]).await;
        let senders = keys(4);
        let reports = run(
            &client,
            &senders,
            &plan(48, vec![Pace::Rate(2000.0), Pace::Max]),
            &Quiet,
        )
        .await
        .unwrap();
        assert_eq!(reports.len(), 2);
        for r in &reports {
            assert_eq!(r.counts.ok, 48, "{}", r.text());
            assert_eq!(r.latency_ms.count, 48);
            assert!(r.valid, "{}", r.text());
            assert!(r.throughput > 0.0 && r.ceiling > 0.0);
            assert_eq!(r.nodes.len(), 4);
        }
        assert_eq!(reports[0].offered, Some(2000.0));
        assert_eq!(reports[1].offered, None);

        let unsynced = fake::Behaviour {
            unsynced: true,
            ..d
        };
        let lazy = fake::Behaviour { lazy: true, ..d };
        let (client, _) = fake::network([d, unsynced, lazy, d]).await;
        let reports = run(&client, &senders, &plan(16, vec![Pace::Max]), &Quiet)
            .await
            .unwrap();
        let r = &reports[0];
        assert_eq!(r.counts.ok, 16);
        assert!(!r.valid);
        let why = r.invalid_reasons.join("\n");
        assert!(why.contains("sync is off before"), "{why}");
        assert!(why.contains("grew by 0 < 16"), "{why}");
    }

    #[tokio::test]
    async fn a_run_that_loses_txs_ends_the_series() {
        let r = fake::Behaviour {
            refuses: true,
            ..Default::default()
        };
        let (client, _) = fake::network([r; 4]).await;
        let paces = vec![Pace::Rate(1000.0), Pace::Rate(2000.0)];
        let reports = run(&client, &keys(2), &plan(8, paces), &Quiet)
            .await
            .unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].counts.refused, 8);
        assert!(!reports[0].valid);
        assert!(
            reports[0]
                .invalid_reasons
                .iter()
                .any(|w| w.contains("8 of 8 txs got no f+1 receipts")),
            "{:?}",
            reports[0].invalid_reasons
        );
    }
}
