//! Every Prometheus metric of the node, in one struct (DESIGN.md, "Metrics").
//!
//! The engine returns counters and actions; this struct turns them into series. Every
//! labelled series is created at start with value 0, so dashboards and alerts never see
//! "no data" for a thing that has not happened yet.

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use stele_consensus::{Evidence, Reject};
use stele_transport::{MetricsSnapshot, RejectReason};
use stele_types::Message;

/// Why a client tx was refused at `POST /txs` (the `reason` label).
pub const TX_REJECT_REASONS: [&str; 9] = [
    "malformed",
    "too_large",
    "bad_signature",
    "unknown_sender",
    "nonce_used",
    "nonce_too_far",
    "sender_quota",
    "mempool_full",
    "overloaded",
];

/// Rejections of validator traffic beyond the engine's own reasons: the transport's
/// malformed frames (oversized, empty, truncated, unknown stream class; each reason also
/// in `stele_transport_refused_total`) and the node's (verification queue full).
pub const NODE_MESSAGE_REJECT_REASONS: [&str; 2] = ["transport", "inbound_full"];

/// The node's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Snapshot sync (issue 24): the height being synced or installed, 0 if none.
    pub snapshot_height: IntGauge,
    pub snapshot_chunks_left: IntGauge,
    pub snapshot_eta: IntGauge,
    pub snapshot_chunks: IntCounterVec,
    pub snapshot_bytes: IntCounterVec,
    pub snapshot_bad_chunks: IntCounter,
    pub snapshot_stalls: IntCounter,
    pub snapshot_installed: IntGauge,
    pub horizon: IntGauge,
    pub height: IntGauge,
    pub view: IntGauge,
    pub active: IntGauge,
    pub view_changes: IntCounter,
    pub block_interval: Histogram,
    pub commit_latency: Histogram,
    pub block_txs: Histogram,
    pub blocks_committed: IntCounter,
    pub synced_writes: IntCounterVec,
    pub txs_committed: IntCounter,
    pub txs_rejected: IntCounterVec,
    pub http_refused: IntCounterVec,
    pub mempool: IntGauge,
    pub peers: IntGauge,
    pub messages_received: IntCounterVec,
    pub messages_rejected: IntCounterVec,
    pub transport_refused: IntCounterVec,
    pub transport_retries: IntCounter,
    pub transport_connect_failures: IntCounter,
    pub evidence: IntCounterVec,
    pub store_commit: Histogram,
    pub state_transfer_blocks: IntCounter,
    pub sig_verify: Histogram,
    pub sig_verified: IntCounter,
    /// CPU seconds of this process (all threads), brought up to date at each scrape.
    pub process_cpu: Counter,
    /// Seconds spent in ed25519 verification on every thread (`stele_crypto::verify_time`),
    /// brought up to date at each scrape: with `process_cpu`, the share of the CPU that
    /// signature checks take.
    pub verify_cpu: Counter,
    /// Serialises the scrape-time updates of the two counters above.
    cpu_sync: std::sync::Arc<std::sync::Mutex<()>>,
    pub faults_tolerated: IntGauge,
    /// Executing a block, at heights that are not checkpoints.
    pub execute: Histogram,
    /// Executing a block at a checkpoint height, the state root included: against
    /// `execute`, what the root costs.
    pub execute_checkpoint: Histogram,
    /// Bytes of the store's data directory, brought up to date at each scrape.
    pub store_disk_bytes: IntGauge,
    /// Snapshot heights passed over since start, brought up to date at each scrape.
    pub snapshots_skipped: IntGauge,
    /// How long writing the last snapshot took, brought up to date at each scrape.
    pub snapshot_write: Gauge,
    pub votes_sent: IntCounterVec,
    pub recovery_bound_height: IntGauge,
    pub recovery_bound_view: IntGauge,
    pub recovery_lowest_vote_height: IntGauge,
    pub recovery_lowest_vote_view: IntGauge,
}

/// Why the HTTP edge refused a connection or a request (the `reason` label of
/// `stele_http_refused_total`): `too_many_connections` (over the connection cap, answered
/// 503 and closed), `header_timeout` (no complete request head in time, idle ones
/// included), `body_timeout` (the body did not arrive in time), `busy` (too many requests
/// in flight, or the body budget or the verification queue full: 503), `waiters_full`
/// (`?wait=true` answered at once: too many wait on that tx or in all), `bad_query`,
/// `bad_head` (a request head hyper could not parse, or over its size: cut).
pub const HTTP_REFUSE_REASONS: [&str; 7] = [
    "too_many_connections",
    "header_timeout",
    "bad_head",
    "body_timeout",
    "busy",
    "waiters_full",
    "bad_query",
];

/// The votes (the `kind` label of `stele_votes_sent_total`): what a validator that lost
/// its disk must not send until it is past c_r + L and in a view above m. CHECKPOINT is
/// not among them: it attests a state digest that execution determines, so signing one
/// twice cannot conflict, and DESIGN.md lets a recovering validator send it.
pub const VOTE_KINDS: [&str; 5] = ["proposal", "prepare", "commit", "view_change", "new_view"];

/// What a synced write on the engine thread's path was for (`stele_store_synced_writes_total`):
/// a committed block; the consensus records of one drain (votes with their bodies, views,
/// certificates: safety rule 3, grouped per drain); a stable checkpoint; pruning below
/// it; evidence.
pub const SYNCED_WRITE_KINDS: [&str; 5] = ["block", "consensus", "checkpoint", "prune", "evidence"];

fn secs(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

impl Metrics {
    /// Every metric, registered, every labelled series at 0.
    pub fn new() -> Metrics {
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label])
                .unwrap_or_else(|e| panic!("metric {name}: {e}"));
            for value in values {
                v.with_label_values(&[value]).reset();
            }
            v
        };
        let mut message_rejects: Vec<&str> = Reject::LABELS.to_vec();
        message_rejects.extend(NODE_MESSAGE_REJECT_REASONS);
        let peer_vec = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["peer"])
                .unwrap_or_else(|e| panic!("metric {name}: {e}"))
        };
        let m = Metrics {
            registry: Registry::new(),
            snapshot_height: gauge(
                "stele_snapshot_sync_height",
                "The checkpoint height whose snapshot this validator is fetching or installed at start; 0 if none.",
            ),
            snapshot_chunks_left: gauge(
                "stele_snapshot_sync_chunks_left",
                "Snapshot chunks still to fetch or in flight.",
            ),
            snapshot_eta: gauge(
                "stele_snapshot_sync_eta_seconds",
                "Estimated seconds until every snapshot chunk is fetched, at the rate so far; -1 before the first chunk.",
            ),
            snapshot_chunks: peer_vec(
                "stele_snapshot_sync_chunks_total",
                "Snapshot chunks fetched and verified, by the validator that served them.",
            ),
            snapshot_bytes: peer_vec(
                "stele_snapshot_sync_bytes_total",
                "Bytes of verified snapshot chunks, by the validator that served them.",
            ),
            snapshot_bad_chunks: counter(
                "stele_snapshot_sync_bad_chunks_total",
                "Snapshot chunks that did not verify (the peer is not asked again).",
            ),
            snapshot_stalls: counter(
                "stele_snapshot_sync_stalls_total",
                "Snapshot chunk requests unanswered within the timeout (asked of another peer).",
            ),
            horizon: gauge(
                "stele_store_horizon_height",
                "The lowest height above genesis whose block this validator keeps (1 unless it started from a snapshot); queries below it answer 410 pruned.",
            ),
            snapshot_installed: gauge(
                "stele_snapshot_installed_height",
                "The checkpoint height of the snapshot this validator's store started from; 0 if it started from genesis.",
            ),
            height: gauge("stele_consensus_height", "Highest executed height."),
            view: gauge("stele_consensus_view", "Current view."),
            active: gauge(
                "stele_consensus_active",
                "1 while taking part in the current view, 0 while changing views.",
            ),
            view_changes: counter(
                "stele_consensus_view_changes_total",
                "View changes this validator started or joined.",
            ),
            block_interval: secs(
                "stele_consensus_block_interval_seconds",
                "Time between two committed blocks.",
                latency.clone(),
            ),
            commit_latency: secs(
                "stele_consensus_commit_latency_seconds",
                "From a block's PRE-PREPARE (as seen here) to its commit.",
                latency.clone(),
            ),
            block_txs: secs(
                "stele_consensus_block_txs",
                "Txs per committed block.",
                vec![
                    0.0, 1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
                ],
            ),
            blocks_committed: counter("stele_blocks_committed_total", "Blocks committed."),
            synced_writes: vec(
                "stele_store_synced_writes_total",
                "Synced RocksDB writes on the engine thread's path, by what they were for (with \
                 sync off only pruning, which is always synced); against \
                 stele_blocks_committed_total, the fsyncs per block.",
                "what",
                &SYNCED_WRITE_KINDS,
            ),
            txs_committed: counter(
                "stele_txs_committed_total",
                "Txs applied (any applied result) in committed blocks.",
            ),
            txs_rejected: vec(
                "stele_txs_rejected_total",
                "Client txs refused at POST /txs, by reason.",
                "reason",
                &TX_REJECT_REASONS,
            ),
            http_refused: vec(
                "stele_http_refused_total",
                "HTTP connections and requests the API refused or cut to protect itself, by reason.",
                "reason",
                &HTTP_REFUSE_REASONS,
            ),
            mempool: gauge("stele_mempool_txs", "Txs pending in this validator."),
            peers: gauge("stele_peers_connected", "Validators connected over QUIC."),
            messages_received: vec(
                "stele_messages_received_total",
                "Validator messages decoded, by kind.",
                "kind",
                &Message::KINDS,
            ),
            messages_rejected: vec(
                "stele_messages_rejected_total",
                "Validator messages refused, by reason.",
                "reason",
                &message_rejects,
            ),
            transport_refused: vec(
                "stele_transport_refused_total",
                "Frames, streams and connection attempts the QUIC transport refused, by reason.",
                "reason",
                &RejectReason::ALL.map(RejectReason::as_str),
            ),
            transport_retries: counter(
                "stele_transport_retries_total",
                "Connection attempts from addresses not yet validated, answered with a stateless QUIC Retry (every honest dial gets one; a spoofed flood gets nothing else).",
            ),
            transport_connect_failures: counter(
                "stele_transport_connect_failures_total",
                "Dials and handshakes that failed, refusals included.",
            ),
            evidence: vec(
                "stele_byzantine_evidence_total",
                "Byzantine behaviour proven by signed messages, by kind.",
                "kind",
                &Evidence::KINDS,
            ),
            store_commit: secs(
                "stele_store_commit_seconds",
                "Synced RocksDB write of one committed block.",
                latency.clone(),
            ),
            state_transfer_blocks: counter(
                "stele_state_transfer_blocks_total",
                "Committed blocks received by state transfer.",
            ),
            sig_verify: secs(
                "stele_sig_verify_seconds",
                "Time to verify one batch of tx signatures.",
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                ],
            ),
            sig_verified: counter(
                "stele_sig_verified_total",
                "Tx signatures verified (each tx once per validator).",
            ),
            process_cpu: Counter::new(
                "stele_process_cpu_seconds_total",
                "CPU time of this validator process, user and system, all threads.",
            )
            .unwrap_or_else(|e| panic!("metric stele_process_cpu_seconds_total: {e}")),
            verify_cpu: Counter::new(
                "stele_sig_verify_cpu_seconds_total",
                "Time spent verifying ed25519 signatures (txs, votes, certificates), all threads.",
            )
            .unwrap_or_else(|e| panic!("metric stele_sig_verify_cpu_seconds_total: {e}")),
            cpu_sync: std::sync::Arc::new(std::sync::Mutex::new(())),
            faults_tolerated: gauge(
                "stele_quorum_faults_tolerated",
                "How many more validators may fail now with the chain still live.",
            ),
            execute: secs(
                "stele_execute_seconds",
                "Executing one committed block (not at a checkpoint height).",
                latency.clone(),
            ),
            execute_checkpoint: secs(
                "stele_execute_checkpoint_seconds",
                "Executing one block at a checkpoint height, computing the state root included.",
                latency.clone(),
            ),
            store_disk_bytes: gauge(
                "stele_store_disk_bytes",
                "Bytes the store's RocksDB directory takes on disk (SST files, WAL, manifests).",
            ),
            snapshot_write: Gauge::new(
                "stele_store_snapshot_write_seconds",
                "How long writing the last snapshot kept took (a pass over the accounts and records, beside the commits); 0 before the first.",
            )
            .unwrap_or_else(|e| panic!("metric stele_store_snapshot_write_seconds: {e}")),
            snapshots_skipped: gauge(
                "stele_store_snapshots_skipped",
                "Snapshot heights passed over since start because the snapshot before was still being written (a larger snapshot_every takes them less often).",
            ),
            votes_sent: vec(
                "stele_votes_sent_total",
                "Votes and proposals this validator sent (CHECKPOINTs aside), by kind.",
                "kind",
                &VOTE_KINDS,
            ),
            recovery_bound_height: gauge(
                "stele_recovery_bound_height",
                "While recovering (--recover): c_r + L, at or below which no vote may be sent; -1 before q replies or without recovery.",
            ),
            recovery_bound_view: gauge(
                "stele_recovery_bound_view",
                "While recovering (--recover): m, in or below which no vote may be sent; -1 before q replies or without recovery.",
            ),
            recovery_lowest_vote_height: gauge(
                "stele_recovery_lowest_vote_height",
                "Since a recovery started: the lowest height of any vote sent; -1 if none.",
            ),
            recovery_lowest_vote_view: gauge(
                "stele_recovery_lowest_vote_view",
                "Since a recovery started: the lowest view of any vote sent; -1 if none.",
            ),
        };
        for g in [
            &m.recovery_bound_height,
            &m.recovery_bound_view,
            &m.recovery_lowest_vote_height,
            &m.recovery_lowest_vote_view,
        ] {
            g.set(-1);
        }
        m.snapshot_eta.set(-1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.snapshot_height.clone()),
            Box::new(m.snapshot_chunks_left.clone()),
            Box::new(m.snapshot_eta.clone()),
            Box::new(m.snapshot_chunks.clone()),
            Box::new(m.snapshot_bytes.clone()),
            Box::new(m.snapshot_bad_chunks.clone()),
            Box::new(m.snapshot_stalls.clone()),
            Box::new(m.snapshot_installed.clone()),
            Box::new(m.horizon.clone()),
            Box::new(m.height.clone()),
            Box::new(m.view.clone()),
            Box::new(m.active.clone()),
            Box::new(m.view_changes.clone()),
            Box::new(m.block_interval.clone()),
            Box::new(m.commit_latency.clone()),
            Box::new(m.block_txs.clone()),
            Box::new(m.blocks_committed.clone()),
            Box::new(m.synced_writes.clone()),
            Box::new(m.txs_committed.clone()),
            Box::new(m.txs_rejected.clone()),
            Box::new(m.http_refused.clone()),
            Box::new(m.mempool.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.messages_received.clone()),
            Box::new(m.messages_rejected.clone()),
            Box::new(m.transport_refused.clone()),
            Box::new(m.transport_retries.clone()),
            Box::new(m.transport_connect_failures.clone()),
            Box::new(m.evidence.clone()),
            Box::new(m.store_commit.clone()),
            Box::new(m.state_transfer_blocks.clone()),
            Box::new(m.sig_verify.clone()),
            Box::new(m.sig_verified.clone()),
            Box::new(m.process_cpu.clone()),
            Box::new(m.verify_cpu.clone()),
            Box::new(m.faults_tolerated.clone()),
            Box::new(m.execute.clone()),
            Box::new(m.execute_checkpoint.clone()),
            Box::new(m.store_disk_bytes.clone()),
            Box::new(m.snapshots_skipped.clone()),
            Box::new(m.snapshot_write.clone()),
            Box::new(m.votes_sent.clone()),
            Box::new(m.recovery_bound_height.clone()),
            Box::new(m.recovery_bound_view.clone()),
            Box::new(m.recovery_lowest_vote_height.clone()),
            Box::new(m.recovery_lowest_vote_view.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .unwrap_or_else(|e| panic!("registering a metric twice: {e}"));
        }
        m
    }

    /// The text exposition format, for `GET /metrics`.
    pub fn render(&self) -> String {
        {
            let _one = self.cpu_sync.lock().unwrap_or_else(|e| e.into_inner());
            let catch_up = |c: &Counter, total: f64| {
                let d = total - c.get();
                if d > 0.0 {
                    c.inc_by(d);
                }
            };
            if let Some(cpu) = stele_types::proc::process_cpu() {
                catch_up(&self.process_cpu, cpu.as_secs_f64());
            }
            catch_up(&self.verify_cpu, stele_crypto::verify_time().as_secs_f64());
        }
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    pub fn reject_tx(&self, reason: &str) {
        self.txs_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts an HTTP refusal; `reason` is one of [`HTTP_REFUSE_REASONS`].
    pub fn refuse_http(&self, reason: &str) {
        debug_assert!(HTTP_REFUSE_REASONS.contains(&reason), "{reason}");
        self.http_refused.with_label_values(&[reason]).inc();
    }

    /// Adds what the transport counted between two of its snapshots.
    pub fn transport(&self, before: &MetricsSnapshot, now: &MetricsSnapshot) {
        for reason in RejectReason::ALL {
            let n = now.rejected(reason).saturating_sub(before.rejected(reason));
            if n == 0 {
                continue;
            }
            self.transport_refused
                .with_label_values(&[reason.as_str()])
                .inc_by(n);
            if matches!(
                reason,
                RejectReason::Oversized
                    | RejectReason::EmptyFrame
                    | RejectReason::Truncated
                    | RejectReason::UnknownClass
            ) {
                self.messages_rejected
                    .with_label_values(&["transport"])
                    .inc_by(n);
            }
        }
        self.transport_retries
            .inc_by(now.retries_sent.saturating_sub(before.retries_sent));
        self.transport_connect_failures
            .inc_by(now.connect_failures.saturating_sub(before.connect_failures));
    }

    pub fn reject_message(&self, reason: &str) {
        self.messages_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a message this validator sends if it is a vote, and while a recovery is
    /// (or was) under way lowers the lowest (height, view) voted: the fault suite checks
    /// those against c_r + L and m from outside the process.
    pub fn sent(&self, m: &Message, recovering: bool) {
        let Some((kind, height, view)) = vote_of(m) else {
            return;
        };
        self.votes_sent.with_label_values(&[kind]).inc();
        if !recovering {
            return;
        }
        let lower = |g: &IntGauge, v: Option<u64>| {
            if let Some(v) = v {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                if g.get() < 0 || v < g.get() {
                    g.set(v);
                }
            }
        };
        lower(&self.recovery_lowest_vote_height, height);
        lower(&self.recovery_lowest_vote_view, view);
    }
}

/// A vote's kind label, height and view (each where the message has one).
fn vote_of(m: &Message) -> Option<(&'static str, Option<u64>, Option<u64>)> {
    Some(match m {
        Message::Proposal(p) => (
            "proposal",
            Some(p.pre_prepare.height.0),
            Some(p.pre_prepare.view.0),
        ),
        Message::Prepare(p) => ("prepare", Some(p.height.0), Some(p.view.0)),
        Message::Commit(c) => ("commit", Some(c.height.0), Some(c.view.0)),
        Message::ViewChange(v) => ("view_change", None, Some(v.new_view.0)),
        Message::NewView(v) => ("new_view", None, Some(v.view.0)),
        _ => return None,
    })
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_refusals_are_counted_by_reason_and_frames_among_messages() {
        let m = Metrics::new();
        let before = MetricsSnapshot::default();
        let mut now = before.clone();
        now.rejected[RejectReason::ALL
            .iter()
            .position(|r| *r == RejectReason::HandshakeTimeout)
            .expect("a reason")] = 3;
        now.rejected[RejectReason::ALL
            .iter()
            .position(|r| *r == RejectReason::Oversized)
            .expect("a reason")] = 2;
        now.retries_sent = 64;
        m.transport(&before, &now);
        m.transport(&now, &now);
        let refused = |r: &str| m.transport_refused.with_label_values(&[r]).get();
        assert_eq!(refused("handshake_timeout"), 3);
        assert_eq!(refused("oversized_frame"), 2);
        assert_eq!(refused("handshakes_busy"), 0);
        // A handshake is not a message; an oversized frame is.
        assert_eq!(
            m.messages_rejected.with_label_values(&["transport"]).get(),
            2
        );
        assert_eq!(m.transport_retries.get(), 64);
    }

    #[test]
    fn every_labelled_series_exists_from_start() {
        let m = Metrics::new();
        let text = m.render();
        for kind in Message::KINDS {
            assert!(
                text.contains(&format!(
                    "stele_messages_received_total{{kind=\"{kind}\"}} 0"
                )),
                "{kind}"
            );
        }
        for reason in TX_REJECT_REASONS {
            assert!(
                text.contains(&format!(
                    "stele_txs_rejected_total{{reason=\"{reason}\"}} 0"
                )),
                "{reason}"
            );
        }
        for reason in RejectReason::ALL {
            assert!(text.contains(&format!(
                "stele_transport_refused_total{{reason=\"{}\"}} 0",
                reason.as_str()
            )));
        }
        for kind in VOTE_KINDS {
            assert!(text.contains(&format!("stele_votes_sent_total{{kind=\"{kind}\"}} 0")));
        }
        for what in SYNCED_WRITE_KINDS {
            assert!(text.contains(&format!(
                "stele_store_synced_writes_total{{what=\"{what}\"}} 0"
            )));
        }
        assert!(text.contains("stele_recovery_bound_height -1"));
        assert!(text.contains("stele_recovery_lowest_vote_view -1"));
        for kind in Evidence::KINDS {
            assert!(text.contains(&format!(
                "stele_byzantine_evidence_total{{kind=\"{kind}\"}} 0"
            )));
        }
        for name in [
            "stele_consensus_height",
            "stele_consensus_view",
            "stele_consensus_view_changes_total",
            "stele_consensus_block_interval_seconds_bucket",
            "stele_consensus_commit_latency_seconds_bucket",
            "stele_consensus_block_txs_bucket",
            "stele_txs_committed_total",
            "stele_mempool_txs",
            "stele_peers_connected",
            "stele_store_commit_seconds_bucket",
            "stele_state_transfer_blocks_total",
            "stele_sig_verify_seconds_bucket",
            "stele_sig_verified_total",
            "stele_process_cpu_seconds_total",
            "stele_sig_verify_cpu_seconds_total",
            "stele_quorum_faults_tolerated",
            "stele_execute_seconds_bucket",
            "stele_execute_checkpoint_seconds_bucket",
            "stele_store_disk_bytes",
            "stele_store_snapshots_skipped",
            "stele_store_snapshot_write_seconds",
            "stele_transport_retries_total",
            "stele_transport_connect_failures_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
