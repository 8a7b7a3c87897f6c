//! The fault suite on real processes: four `stele-node` validators on 127.0.0.1 (QUIC,
//! RocksDB, HTTP), load through the client library while a fault happens, then the
//! checks every test ends with: every tx the client saw f+1 receipts for is in every
//! honest node's chain, the honest nodes agree (height, tip hash, state digest), and
//! progress resumed within `RESUME_FACTOR` × the capped view-change timeout.
//! Partitions, which need network namespaces, are in `partition.rs`.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stele_client::{Client, ClientConfig};
use stele_crypto::KeyPair;
use stele_tests::beside::{self, Baseline};
use stele_tests::chain::{
    all_included, key, max_height, metric, metric_sum, metrics_text, progress_after, rss_bytes,
    same_height, statuses, verify_blocks, Load,
};
use stele_tests::{bin, http, wait_connected, wait_for, Testnet};
use stele_transport::{FrameClass, SendOutcome, Transport, TransportConfig, Tuning};
use stele_types::api::StatusResponse;
use stele_types::{Genesis, Nonce, Op, Params};
use tokio::sync::Mutex;

/// One testnet at a time: four validators already keep both cores busy.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Small checkpoints and window so recovery and state transfer happen within seconds,
/// short view-change timers so a fault costs little time.
const PARAMS: &str = "checkpoint_interval = 16\nwindow = 32\nmax_batch_delay_ms = 5\n\
                      view_timeout_ms = 500\nmax_view_timeout_ms = 4000";
/// `max_view_timeout_ms` above: the longest a view-change timer waits.
const CAPPED_TIMEOUT: Duration = Duration::from_millis(4000);
/// After a fault heals, a commit must come within this many capped timeouts: one timer
/// to notice, one more view change if the next primary was also unlucky, and slack for
/// two cores shared by four validators and the load.
const RESUME_FACTOR: u32 = 3;

fn resume_bound() -> Duration {
    CAPPED_TIMEOUT * RESUME_FACTOR
}

fn client_config() -> ClientConfig {
    ClientConfig {
        wait_timeout: Duration::from_secs(15),
        ..ClientConfig::default()
    }
}

async fn up(accounts: usize, params: &str) -> (Testnet, Client) {
    let mut net = Testnet::init(4, accounts, params).expect("testnet init");
    net.start_all().expect("start");
    if let Err(e) = wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60)).await {
        panic!("the testnet does not connect: {e}\n{}", all_logs(&net));
    }
    let client = Client::from_testnet(&net.net_dir(), client_config()).expect("client");
    (net, client)
}

/// Every validator's log tail, for failure messages.
fn all_logs(net: &Testnet) -> String {
    (0..net.n())
        .map(|i| format!("--- validator {i}:\n{}", net.log_tail(i)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The current view's primary, as the listed nodes see it (they must agree).
async fn primary(net: &Testnet, nodes: &[usize]) -> usize {
    let s = statuses(net, nodes).await.expect("statuses");
    let v = s.iter().map(|s| s.view.0).max().expect("nodes");
    (v % net.n() as u64) as usize
}

/// The checks every fault test ends with, after the load stopped.
async fn agree_and_hold(net: &Testnet, honest: &[usize], confirmed: &[stele_types::TxHash]) {
    let top = max_height(net, honest).await;
    let h = same_height(net, honest, top, Duration::from_secs(120)).await;
    all_included(net, honest, confirmed)
        .await
        .expect("every confirmed tx on every honest node");
    eprintln!(
        "agreed at height {h} on {honest:?}; {} confirmed txs on each",
        confirmed.len()
    );
}

/// Faults 1 and 2: SIGKILL the primary under load; a view change happens, load goes on,
/// nothing acknowledged is lost; the killed node restarts and catches up by state
/// transfer to the others' height.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_load_then_restarted_catches_up() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(8, PARAMS).await;
    let load = Load::start(&net, &c, 0..7, 7, 20, None);
    load.advance(300, Duration::from_secs(60))
        .await
        .expect("load commits");

    let p = primary(&net, &[0, 1, 2, 3]).await;
    let others: Vec<usize> = (0..4).filter(|i| *i != p).collect();
    let view = statuses(&net, &others).await.expect("statuses")[0].view;
    net.kill(p);
    let killed = Instant::now();
    let changed = wait_for(resume_bound(), "a view change", || async {
        let s = statuses(&net, &others).await?;
        s.iter().all(|s| s.view > view && s.active).then_some(())
    })
    .await;
    changed.expect("the others change views without the primary");
    let h = max_height(&net, &others).await;
    let took = progress_after(&net, &others, h, killed, resume_bound())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}",
                "commits resume after the view change",
                all_logs(&net)
            )
        });
    eprintln!("primary {p} killed: commits resumed {took:?} later");
    load.advance(300, Duration::from_secs(60))
        .await
        .expect("load goes on with three validators");

    // Fault 2: the killed node restarts and catches up by state transfer.
    let target = max_height(&net, &others).await;
    net.start(p).expect("restart");
    wait_for(
        Duration::from_secs(120),
        "the restarted node to catch up",
        || async {
            let s = statuses(&net, &[p]).await?;
            (s[0].height.0 >= target).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", net.log_tail(p)));
    let transferred = metric(&net.url(p), "stele_state_transfer_blocks_total").await;
    assert!(
        transferred > 0.0,
        "node {p} caught up without state transfer"
    );
    load.advance(100, Duration::from_secs(60))
        .await
        .expect("load goes on with four");
    let confirmed = load.stop().await;
    agree_and_hold(&net, &[0, 1, 2, 3], &confirmed).await;
    for i in others {
        let vc = metric(&net.url(i), "stele_consensus_view_changes_total").await;
        assert!(vc >= 1.0, "node {i} saw no view change");
    }
}

/// Fault 3: a node is down while 10,000 blocks commit (one tx per block), then restarts:
/// it catches up by block replay, and every block it serves carries a certificate that
/// verifies. Then it is wiped and catches up from the others' snapshot instead.
///
/// It once found a livelock: the three changed views for minutes without committing.
/// Re-sent VIEW-CHANGEs (each carrying up to 256 prepared certificates) were verified anew
/// behind thousands of relayed txs, every STATUS drew a full retransmission, and replicas
/// ranked the burst in different orders, so a backup's oldest tx sat behind hundreds in
/// the primary's order. The simulator's `burst_of_one_tx_blocks_changes_no_view` and
/// `cpu_bound_burst_while_a_replica_restarts` keep those fixed; this test prints the view
/// changes each node saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_down_while_ten_thousand_blocks_commit_catches_up() {
    let _serial = SERIAL.lock().await;
    const BLOCKS: u64 = 10_000;
    // A sender has one tx in flight at a time: many senders keep many blocks in flight.
    const ACCOUNTS: u64 = 250;
    // One tx per block; a longer window and more blocks in flight so the three keep
    // pipelining one-tx blocks.
    let params = "checkpoint_interval = 128\nwindow = 256\nmax_in_flight = 128\n\
                  max_block_txs = 1\nmax_batch_delay_ms = 5\nview_timeout_ms = 500\n\
                  max_view_timeout_ms = 4000";
    let (mut net, c) = up(ACCOUNTS as usize + 1, params).await;
    net.kill(3);
    let started = Instant::now();
    let load = Load::start(
        &net,
        &c,
        0..ACCOUNTS as usize,
        ACCOUNTS as usize,
        (BLOCKS / ACCOUNTS) as usize,
        Some(BLOCKS / ACCOUNTS),
    );
    let confirmed = load
        .finish(Duration::from_secs(600))
        .await
        .expect("10,000 txs commit on three validators");
    assert_eq!(confirmed.len() as u64, BLOCKS);
    let h = max_height(&net, &[0, 1, 2]).await;
    assert!(h >= BLOCKS, "one tx per block: {h} blocks");
    let mut views = Vec::new();
    for i in 0..3 {
        views.push(metric(&net.url(i), "stele_consensus_view_changes_total").await);
    }
    eprintln!(
        "{h} blocks committed without node 3 in {:?}; view changes seen by nodes 0-2: {views:?}",
        started.elapsed()
    );

    // First by block replay (as an archive validator must), then, wiped, from the
    // others' snapshot (issue 24): both times are printed for the README.
    net.configure(3, "start_from_snapshot", "false")
        .expect("node.toml");
    let restarted = Instant::now();
    net.start(3).expect("restart");
    let h = same_height(&net, &[0, 1, 2, 3], h, Duration::from_secs(300)).await;
    let by_replay = restarted.elapsed();
    eprintln!("node 3 caught up to {h} by block replay in {by_replay:?}");
    let transferred = metric(&net.url(3), "stele_state_transfer_blocks_total").await;
    assert!(
        transferred >= (BLOCKS - 2 * 256) as f64,
        "node 3 got {transferred} blocks by state transfer"
    );
    // Every block node 3 now holds, checked offline against the validator set.
    let vs = net.genesis.validator_set();
    verify_blocks(&net.url(3), &vs, 1..=h.0).await;
    all_included(&net, &[0, 1, 2, 3], &confirmed)
        .await
        .expect("every confirmed tx on every node");

    net.kill(3);
    let data = net.node_dir(3).join("data");
    std::fs::remove_dir_all(&data).expect("wipe");
    std::fs::create_dir_all(&data).expect("empty");
    net.configure(3, "start_from_snapshot", "true")
        .expect("node.toml");
    let restarted = Instant::now();
    net.start_with(3, &["--recover"]).expect("restart");
    let h = same_height(&net, &[0, 1, 2, 3], h.0, Duration::from_secs(300)).await;
    let by_snapshot = restarted.elapsed();
    let url = net.url(3);
    let installed = metric(&url, "stele_snapshot_installed_height").await;
    let blocks = metric(&url, "stele_state_transfer_blocks_total").await;
    eprintln!(
        "node 3, wiped, caught up to {h} from the snapshot at height {installed} and {blocks} \
         blocks in {by_snapshot:?} (block replay: {by_replay:?})"
    );
    // A snapshot within the others' window of the tip: only the blocks above it moved.
    assert!(
        installed + 512.0 >= h.0 as f64,
        "installed {installed}, tip {h}"
    );
    assert!(
        blocks <= 512.0,
        "{blocks} blocks by state transfer after the snapshot"
    );
    all_included(&net, &[0, 1, 2, 3], &confirmed)
        .await
        .expect("every confirmed tx on every node, or below node 3's horizon");
}

/// Fault 4: SIGKILL every validator at once under load, restart them all: the chain
/// continues from where it stood, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_killed_and_restarted_continues() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(8, PARAMS).await;
    let load = Load::start(&net, &c, 0..7, 7, 20, None);
    load.advance(300, Duration::from_secs(60))
        .await
        .expect("load commits");
    let before = statuses(&net, &[0, 1, 2, 3]).await.expect("statuses");
    for i in 0..4 {
        net.kill(i);
    }
    let acknowledged = load.confirmed();
    net.start_all().expect("restart");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("reconnect");
    let back = Instant::now();
    let after = statuses(&net, &[0, 1, 2, 3]).await.expect("statuses");
    for (b, a) in before.iter().zip(&after) {
        assert!(
            a.height >= b.height,
            "validator {} restarted at {} below the {} it had reached",
            a.validator,
            a.height,
            b.height
        );
    }
    let h = max_height(&net, &[0, 1, 2, 3]).await;
    let took = progress_after(&net, &[0, 1, 2, 3], h, back, resume_bound())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}\n{}",
                "the chain continues after a whole-cluster restart",
                all_logs(&net)
            )
        });
    eprintln!("whole cluster restarted: next commit {took:?} after reconnecting");
    load.advance(300, Duration::from_secs(90))
        .await
        .expect("load goes on");
    let confirmed = load.stop().await;
    assert!(confirmed.len() >= acknowledged + 300);
    agree_and_hold(&net, &[0, 1, 2, 3], &confirmed).await;
}

/// Validator w's status; panics if w voted while that status still says `recovering`
/// (the metrics are read first, so a vote they count was sent before the status).
async fn gated(net: &Testnet, w: usize) -> Option<StatusResponse> {
    let votes = metric(&net.url(w), "stele_votes_sent_total").await;
    let s = statuses(net, &[w]).await?.remove(0);
    if s.recovering {
        assert_eq!(votes, 0.0, "a recovering validator voted: {s:?}");
    }
    Some(s)
}

/// Fault 5: a validator loses its data directory. It refuses to start; with `--recover`
/// it installs its peers' snapshot at their stable checkpoint (no block below it is
/// fetched), catches up from there, sends no vote at a height <= c_r + L or in a view <= m (its metrics
/// say what it sent), and votes again once past a stable checkpoint above c_r + L and
/// after the next view change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_validator_recovers_and_votes_only_past_its_bounds() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(6, PARAMS).await;
    let load = Load::start(&net, &c, 0..5, 5, 20, None);
    load.advance(200, Duration::from_secs(60))
        .await
        .expect("load commits");
    let p = primary(&net, &[0, 1, 2, 3]).await;
    // Not the primary, nor the next one: a view change while it recovers must not need it.
    let w = (p + 2) % 4;
    // Wiped once the others serve a snapshot (a stable checkpoint they keep the state
    // of): before that, replaying from genesis is what it must do.
    let others: Vec<usize> = (0..4).filter(|i| *i != w).collect();
    wait_for(Duration::from_secs(60), "a snapshot served", || async {
        let mut served = 0;
        for i in &others {
            let r = http().get(format!("{}/snapshot", net.url(*i))).send().await;
            served += usize::from(r.is_ok_and(|r| r.status().is_success()));
        }
        (served == others.len()).then_some(())
    })
    .await
    .expect("the others keep a snapshot at their stable checkpoint");
    net.kill(w);
    let data = net.node_dir(w).join("data");
    std::fs::remove_dir_all(&data).expect("wipe");
    std::fs::create_dir_all(&data).expect("empty");
    net.start(w).expect("spawn");
    let code = wait_for(Duration::from_secs(30), "the wiped node to exit", || {
        let s = net.exited(w);
        async move { s }
    })
    .await
    .expect("it refuses to start");
    assert_eq!(code.code(), Some(2), "{}", net.log_tail(w));
    assert!(net.log_tail(w).contains("--recover"), "{}", net.log_tail(w));

    net.start_with(w, &["--recover"]).expect("spawn");
    let url = net.url(w);
    let bounds = wait_for(Duration::from_secs(60), "the recovery bounds", || async {
        let t = metrics_text(&url).await.ok()?;
        let h = metric_sum(&t, "stele_recovery_bound_height")?;
        let v = metric_sum(&t, "stele_recovery_bound_view")?;
        (h >= 0.0 && v >= 0.0).then_some((h, v))
    })
    .await
    .expect("q STATUS replies fix c_r and m");
    eprintln!("recovery bounds: c_r + L = {}, m = {}", bounds.0, bounds.1);
    // It started from its peers' snapshot (issue 24), not by replaying from genesis: the
    // engine only starts once the state is installed, so the figures are final here.
    let installed = metric(&url, "stele_snapshot_installed_height").await;
    assert!(
        installed >= 16.0,
        "no snapshot installed (height {installed}): {}",
        net.log_tail(w)
    );
    assert!(metric(&url, "stele_snapshot_sync_chunks_total").await >= 256.0);
    assert_eq!(
        metric(&url, "stele_snapshot_sync_bad_chunks_total").await,
        0.0
    );
    let below = http()
        .get(format!("{url}/blocks/1"))
        .send()
        .await
        .expect("GET /blocks/1");
    assert_eq!(
        below.status().as_u16(),
        410,
        "block 1 is below the snapshot: never fetched"
    );
    let e: stele_types::api::ApiError = below.json().await.expect("a JSON reason");
    assert_eq!(
        (e.reason.as_str(), e.horizon),
        ("pruned", Some(stele_types::Height(installed as u64)))
    );
    eprintln!("recovered from the snapshot at height {installed}");
    // Until the gate opens, no vote (see `gated`).
    wait_for(
        Duration::from_secs(120),
        "a stable checkpoint above c_r + L",
        || async {
            let s = gated(&net, w).await?;
            (s.stable_checkpoint.0 as f64 > bounds.0).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", net.log_tail(w)));
    // The gate also needs a view above m. Busy cores may have brought one already;
    // if not, restart the primary: the other two cannot change views without a third
    // voter, and the recovering one does not vote yet.
    if gated(&net, w).await.is_some_and(|s| s.recovering) {
        // The voting validators' primary; if that is w, they are changing views anyway.
        let p = primary(&net, &others).await;
        if p != w {
            net.stop(p);
            tokio::time::sleep(CAPPED_TIMEOUT / 4).await;
            net.start(p).expect("restart the primary");
        }
    }
    let finished = wait_for(
        Duration::from_secs(120),
        "the recovery to finish",
        || async {
            let s = gated(&net, w).await?;
            (!s.recovering).then_some(())
        },
    )
    .await;
    if let Err(e) = finished {
        let st = statuses(&net, &[0, 1, 2, 3]).await;
        panic!("{e}: {st:?}\n{}", all_logs(&net));
    }
    // Votes again: a COMMIT (which has a height and a view; a VIEW-CHANGE has no height).
    let commits = "stele_votes_sent_total{kind=\"commit\"}";
    wait_for(
        Duration::from_secs(60),
        "the recovered node to vote",
        || async { (metric(&url, commits).await > 0.0).then_some(()) },
    )
    .await
    .expect("it votes again");
    let low_h = metric(&url, "stele_recovery_lowest_vote_height").await;
    let low_v = metric(&url, "stele_recovery_lowest_vote_view").await;
    assert!(
        low_h > bounds.0,
        "voted at height {low_h} <= c_r + L = {}",
        bounds.0
    );
    assert!(
        low_v > bounds.1,
        "voted in view {low_v} <= m = {}",
        bounds.1
    );
    load.advance(100, Duration::from_secs(60))
        .await
        .expect("load goes on");
    let confirmed = load.stop().await;
    agree_and_hold(&net, &[0, 1, 2, 3], &confirmed).await;
}

/// Fault 7: one validator runs the `byzantine` test build of stele-node with `behaviour`.
/// The other three keep agreeing under load; `check` gets the testnet and the honest
/// ids for the behaviour's own checks, while the load still runs.
/// The attack's name in the throughput figures.
fn behaviour_name(behaviour: &str) -> &'static str {
    match behaviour {
        "flood-fetches" => "Byzantine validator flooding fetches",
        "flood-evidence" => "Byzantine primary flooding evidence",
        _ => "Byzantine validator",
    }
}

async fn byzantine_run(bad: usize, behaviour: &str, check: impl AsyncFnOnce(&Testnet, &[usize])) {
    let _serial = SERIAL.lock().await;
    // The floods' figure for the README (`make attack-bench`): the rate of an all-honest
    // testnet first, then the rate beside the flood.
    let base = if behaviour.starts_with("flood-") {
        Baseline::fresh(PARAMS).await
    } else {
        None
    };
    let mut net = Testnet::init(4, beside::TESTNET_ACCOUNTS, PARAMS).expect("testnet init");
    let byz = bin("stele-node-byzantine");
    for i in 0..4 {
        if i == bad {
            net.start_wrapped(i, &[], &byz, &["--byzantine", behaviour])
                .expect("start the Byzantine validator");
        } else {
            net.start(i).expect("start");
        }
    }
    let honest: Vec<usize> = (0..4).filter(|i| *i != bad).collect();
    wait_connected(&net, &honest, Duration::from_secs(60))
        .await
        .expect("the honest validators connect");
    if behaviour != "silent" {
        // The Byzantine primary must be reachable before load starts: else the honest
        // timers replace it before it proposed anything, and its behaviour never shows
        // (an equivocating primary that never led a view; seen in CI).
        stele_tests::wait_peers(&net, &honest, 3, Duration::from_secs(60))
            .await
            .expect("the honest validators reach the Byzantine one");
    }
    let c = Client::from_testnet(&net.net_dir(), client_config()).expect("client");
    let load = Load::start(&net, &c, 0..7, 7, 20, None);
    load.advance(300, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", net.log_tail(honest[0])));
    beside::finish(beside::start(base, &net, behaviour_name(behaviour))).await;
    check(&net, &honest).await;
    let confirmed = load.stop().await;
    agree_and_hold(&net, &honest, &confirmed).await;
    let log = stele_tests::read(&net.node_dir(bad).join("node.log"));
    assert!(
        log.contains("BYZANTINE test build"),
        "validator {bad} did not run the Byzantine build: {}",
        net.log_tail(bad)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocating_primary_is_caught_and_the_others_agree() {
    byzantine_run(0, "equivocate", async |net, honest| {
        let mut evidence = 0.0;
        for i in honest {
            evidence += metric(&net.url(*i), "stele_byzantine_evidence_total").await;
        }
        assert!(evidence > 0.0, "no honest validator recorded evidence");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_primary_is_replaced_by_a_view_change() {
    byzantine_run(0, "silent", async |net, honest| {
        let s = statuses(net, honest).await.expect("statuses");
        assert!(
            s.iter().all(|s| s.view.0 > 0),
            "commits without replacing the silent primary of view 0: {s:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_votes_are_rejected_and_counted() {
    byzantine_run(1, "bad-votes", async |net, honest| {
        for i in honest {
            let r = metric(&net.url(*i), "stele_messages_rejected_total").await;
            assert!(r > 0.0, "validator {i} rejected none of the bad votes");
        }
    })
    .await;
}

/// Resident-memory cap for every validator under a Byzantine peer's flood.
const FLOOD_RSS_CAP: u64 = 512 << 20;

/// A Byzantine validator asks every peer for blocks and bodies as fast as it can: the
/// honest ones answer within a byte budget per peer and interval, refuse and count the
/// rest (`rate_limited`), keep committing, and stay under [`FLOOD_RSS_CAP`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_flood_is_rate_limited_and_the_others_agree() {
    byzantine_run(1, "flood-fetches", async |net, honest| {
        // A fetch past the tip costs nothing to answer: the flood bites once the chain
        // holds more blocks than the budget lets one peer take per interval.
        wait_for(
            Duration::from_secs(120),
            "the chain passes height 200",
            async || {
                let h = max_height(net, honest).await;
                eprintln!("DBG height {h} {:?}", std::time::SystemTime::now());
                (h >= 200).then_some(())
            },
        )
        .await
        .expect("the honest validators commit under the flood");
        tokio::time::sleep(Duration::from_secs(5)).await;
        for i in honest {
            let limited = metric(
                &net.url(*i),
                "stele_messages_rejected_total{reason=\"rate_limited\"}",
            )
            .await;
            if limited == 0.0 {
                let text = metrics_text(&net.url(*i)).await.unwrap_or_default();
                let seen: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains("rejected") || l.contains("received_total"))
                    .collect();
                panic!("validator {i} answered every flooded fetch: {seen:#?}");
            }
            let pid = net.pid(*i).expect("runs");
            let peak = stele_tests::chain::peak_rss_bytes(pid).expect("/proc status");
            eprintln!(
                "validator {i}: {limited} fetches refused, peak RSS {} MiB",
                peak >> 20
            );
            assert!(
                peak <= FLOOD_RSS_CAP,
                "validator {i} peaked at {} MiB",
                peak >> 20
            );
        }
    })
    .await;
}

/// A Byzantine primary floods conflicting votes and proposals: each honest validator
/// records evidence at most once per (kind, view, height) of the liar's, not once per
/// conflicting message (each record is a synced write), and keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_flood_is_recorded_once_per_slot_and_the_others_agree() {
    byzantine_run(0, "flood-evidence", async |net, honest| {
        let sts = statuses(net, honest).await.expect("statuses");
        for (i, st) in honest.iter().zip(&sts) {
            let evidence = metric(&net.url(*i), "stele_byzantine_evidence_total").await;
            // One liar: at most one record per kind, view and height it could vote in
            // (heights up to the validator's own plus the window). Every kind's series
            // exists from the start.
            let text = metrics_text(&net.url(*i)).await.expect("metrics");
            let kinds = text
                .lines()
                .filter(|l| l.starts_with("stele_byzantine_evidence_total{"))
                .count() as f64;
            let slots = (st.height.0 + net.genesis.params.window) as f64 * (st.view.0 + 1) as f64;
            eprintln!(
                "validator {i}: {evidence} evidence records, bound {}",
                kinds * slots
            );
            assert!(evidence > 0.0, "validator {i} recorded no evidence");
            assert!(
                evidence <= kinds * slots,
                "validator {i} recorded {evidence} evidence, more than one per slot ({})",
                kinds * slots
            );
        }
    })
    .await;
}

/// A deterministic byte stream for garbage.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Fault 8: 100k garbage UDP datagrams and 100k garbage or oversized frames (from a
/// validator's own key, so they pass the handshake) at the QUIC ports, and 100k invalid
/// txs at `POST /txs`, while honest txs flow: honest txs still commit, rejections are
/// counted by reason, and every node's resident memory stays under 512 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_garbage_and_invalid_txs_is_refused_and_counted() {
    const N: usize = 100_000;
    const RSS_LIMIT: u64 = 512 << 20;
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(8, PARAMS).await;
    let load = Load::start(&net, &c, 0..6, 7, 10, None);
    load.advance(100, Duration::from_secs(60))
        .await
        .expect("load commits");
    let mut g = Garbage(0x5eed);

    // Unauthenticated datagrams at every QUIC port.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for k in 0..N {
        let to = &net.genesis.validators[k % 4].p2p_addr;
        let len = 1 + (g.next() % 1400) as usize;
        // A full socket buffer only drops a datagram: garbage either way.
        let _ = udp.send_to(&g.bytes(len), to);
    }

    // Validator 3 turns Byzantine: its key, a transport of the test's own, and frames
    // that do not decode, with an oversized one every 10,000.
    net.kill(3);
    let key3 = KeyPair::load(&net.node_dir(3).join("validator.pem")).expect("validator 3's key");
    let big = Genesis {
        params: Params {
            max_block_bytes: net.genesis.params.max_block_bytes * 4,
            ..net.genesis.params.clone()
        },
        ..net.genesis.clone()
    };
    let limit = stele_types::max_frame_len(&net.genesis);
    let (t, _inbound) = Transport::start(TransportConfig {
        genesis: big.clone(),
        key: key3,
        socket: None,
        tuning: Tuning::for_genesis(&big),
        faults: None,
    })
    .expect("the impostor transport starts");
    let rejected_before: Vec<f64> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(metric(&net.url(i), "stele_messages_rejected_total").await);
        }
        v
    };
    let mut queued = 0usize;
    for k in 0..N {
        let frame = if k % 10_000 == 9_999 {
            Bytes::from(vec![0xEE; limit + 1])
        } else {
            let len = 1 + (g.next() % 512) as usize;
            Bytes::from(g.bytes(len))
        };
        let peer = stele_types::ReplicaId((k % 3) as u16);
        loop {
            match t.send(peer, FrameClass::Consensus, frame.clone()) {
                Ok(SendOutcome::Queued) => {
                    queued += 1;
                    break;
                }
                // The peer's queue is full (or it reconnects after an oversized frame):
                // let it drain.
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    assert_eq!(queued, N);
    load.advance(50, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the frame flood");
    // Every garbage frame that arrived was refused and counted under some reason
    // (undecodable, oversized, or the inbound queue full). Frames lost when an
    // oversized one reset the connection never arrived.
    wait_for(
        Duration::from_secs(60),
        "the rejections to be counted",
        || async {
            let mut rose = 0.0;
            for (i, before) in rejected_before.iter().enumerate() {
                rose += metric(&net.url(i), "stele_messages_rejected_total").await - before;
            }
            if rose >= (N - N / 10) as f64 {
                eprintln!(
                    "validators 0-2 refused {rose} of {N} garbage frames (counted by reason)"
                );
                return Some(());
            }
            None
        },
    )
    .await
    .expect("the garbage frames are counted as rejected");
    drop(t);

    // Invalid txs at POST /txs of validator 0: a quarter each of bad signatures,
    // another chain's, nonces far beyond the window, and bodies that are not JSON.
    let url = net.url(0);
    let http = http();
    let sender = key(&net, 6);
    let other_chain = Genesis {
        chain_id: stele_types::ChainId::new("another-chain").expect("chain id"),
        ..net.genesis.clone()
    };
    let wrong = Client::new(other_chain, &net.urls(), client_config()).expect("client");
    let far = net.genesis.params.nonce_window + 1_000;
    // A tx names no chain: one signed for another chain fails its signature here.
    let kinds: [(&str, usize); 3] = [("forged", N / 4), ("another_chain", N / 4), ("far", N / 4)];
    let reasons: [(&str, usize); 2] = [("bad_signature", N / 2), ("nonce_too_far", N / 4)];
    let before = metrics_text(&url).await.expect("metrics");
    let reason_count = |text: &str, reason: &str| {
        metric_sum(
            text,
            &format!("stele_txs_rejected_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    for (kind, count) in kinds {
        let txs: Vec<stele_types::Transaction> = (0..count as u64)
            .map(|k| {
                let op = Op::Transfer {
                    to: KeyPair::generate().public(),
                    amount: stele_types::Amount(1 + k % 7),
                };
                match kind {
                    "forged" => {
                        let mut t = c.sign(&sender, Nonce(far + k), op).expect("tx");
                        t.value.nonce = Nonce(1 + k % 3);
                        t
                    }
                    // Nonces admission would take, so only the signature refuses them.
                    "another_chain" => wrong.sign(&sender, Nonce(1 + k % 3), op).expect("tx"),
                    _ => c.sign(&sender, Nonce(far + k), op).expect("tx"),
                }
            })
            .collect();
        for batch in txs.chunks(1000) {
            loop {
                let r = http
                    .post(format!("{url}/txs"))
                    .json(&batch)
                    .send()
                    .await
                    .expect("POST /txs");
                if r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let garbage_posts = N / 4;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (http, url) = (http.clone(), url.clone());
        let mut g = Garbage(w as u64 + 1);
        set.spawn(async move {
            for _ in 0..garbage_posts / 16 {
                let len = 1 + (g.next() % 200) as usize;
                let r = http
                    .post(format!("{url}/txs"))
                    .header("content-type", "application/json")
                    .body(g.bytes(len))
                    .send()
                    .await
                    .expect("POST /txs");
                assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
            }
        });
    }
    while let Some(j) = set.join_next().await {
        j.expect("garbage poster");
    }
    let after = metrics_text(&url).await.expect("metrics");
    for (reason, count) in reasons
        .iter()
        .copied()
        .chain([("malformed", garbage_posts / 16 * 16)])
    {
        let rose = reason_count(&after, reason) - reason_count(&before, reason);
        eprintln!("validator 0 refused {rose} txs as {reason}");
        assert_eq!(rose, count as f64, "{reason}");
    }

    load.advance(50, Duration::from_secs(60))
        .await
        .expect("honest txs commit after the flood");
    for i in 0..3 {
        let pid = net.pid(i).expect("running");
        let rss = rss_bytes(pid).expect("rss");
        eprintln!("validator {i}: resident memory {} MiB", rss >> 20);
        assert!(rss < RSS_LIMIT, "validator {i} uses {} MiB", rss >> 20);
    }
    net.start(3).expect("validator 3 back, honest");
    let confirmed = load.stop().await;
    agree_and_hold(&net, &[0, 1, 2, 3], &confirmed).await;
}
