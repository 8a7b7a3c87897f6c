//! Fault 6 on real processes: network partitions. Four validators, each in its own
//! network namespace ([`stele_tests::netns`]), under steady load from the client library:
//! the primary is cut off and later reconnected; then a 2|2 split, in which neither side
//! has a quorum and nothing may commit; then the split heals. Progress must resume within
//! [`RESUME`] capped view-change timeouts of the cut and of the heal, and at the end every
//! tx the client saw f+1 receipts for is in every node's chain and all four agree. Needs
//! root and iproute2; without them it fails and says why, it never skips.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stele_client::{testnet_account_key, Client, ClientConfig, Confirmed};
use stele_crypto::{KeyPair, PublicKey};
use stele_tests::netns::Lab;
use stele_tests::{bin, wait_connected, wait_for, Testnet};
use stele_types::api::{BlockResponse, StatusResponse};
use stele_types::{Amount, Height, Nonce, Op, Transaction, TxResult};

const N: usize = 4;
/// T: the view-change timer's base.
const T_MS: u64 = 500;
/// T_max: the cap of the doubling view-change timer.
const T_MAX_MS: u64 = 4000;
/// Progress (a tx sent then gets f+1 receipts; after the heal, all four commit a new
/// height) resumes within this many T_max of the primary being cut off and of the split
/// healing. After the heal that covers the QUIC redial (the links timed out in the split;
/// the dial backoff is capped at 5 s, about 1.25 T_max) and the views converging: while
/// replicas accept a NEW-VIEW at different times, some time out and move on, and several
/// views can pass, each costing up to a T_max timer plus forming its NEW-VIEW. Measured
/// over 28 runs on a 2-core machine shared with other test loads: 0.5 to 0.9 s after the
/// cut; 1.4 to 18.2 s after the heal (median about 9 s). The bound leaves room for that
/// tail; tighten it when views converge faster.
const RESUME: u32 = 8;
/// How long the 2|2 split is held, in T_max: a few view-change timeouts, and past QUIC's
/// idle timeout (10 s), so the links between the sides really close.
const HOLD: u32 = 3;
/// Senders that keep the load going, one tx at a time each.
const LOADERS: usize = 4;
/// The account that sends the probes (one tx submitted at each fault's start or end).
const PROBE: usize = LOADERS;
/// K, small so that a cut-off validator falls behind the others' stable checkpoint.
const CHECKPOINT_INTERVAL: u64 = 16;

fn t_max() -> Duration {
    Duration::from_millis(T_MAX_MS)
}

fn key(net: &Testnet, j: usize) -> KeyPair {
    KeyPair::load(&testnet_account_key(&net.net_dir(), j)).expect("account key")
}

fn transfer(c: &Client, from: &KeyPair, nonce: u64, to: &PublicKey) -> Transaction {
    c.sign(
        from,
        Nonce(nonce),
        Op::Transfer {
            to: *to,
            amount: Amount(1),
        },
    )
    .expect("well-formed")
}

/// Submits `tx` (the same tx, so the same hash, each time) until f+1 validators sent
/// matching receipts or `limit` passes; returns the confirmation and how long it took.
async fn confirm_within(
    c: &Client,
    tx: &Transaction,
    limit: Duration,
) -> Result<(Confirmed, Duration), String> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        match c.submit_and_wait_until(tx, deadline).await {
            Ok(conf) => return Ok((conf, started.elapsed())),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("no f+1 receipts within {limit:?}: {last}"))
}

/// Senders that each submit one transfer at a time and wait for its receipts; a tx sent
/// during a fault is retried until it commits after it.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Confirmed>>>,
    tasks: Vec<tokio::task::JoinHandle<Result<u64, String>>>,
}

impl Load {
    fn start(c: &Client, net: &Testnet) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..LOADERS)
            .map(|j| {
                let (c, stop, seen) = (c.clone(), Arc::clone(&stop), Arc::clone(&seen));
                let (from, to) = (key(net, j), key(net, (j + 1) % LOADERS).public());
                tokio::spawn(async move {
                    let mut nonce = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let tx = transfer(&c, &from, nonce, &to);
                        let (conf, _) = confirm_within(&c, &tx, Duration::from_secs(120))
                            .await
                            .map_err(|e| format!("sender {j} nonce {nonce}: {e}"))?;
                        if conf.result != TxResult::Ok {
                            return Err(format!("sender {j} nonce {nonce}: {conf:?}"));
                        }
                        seen.lock().expect("not poisoned").push(conf);
                        nonce += 1;
                    }
                    Ok(nonce)
                })
            })
            .collect();
        Load { stop, seen, tasks }
    }

    fn confirmed(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }

    /// Stops offering new txs, waits for the ones in flight, returns every confirmation.
    async fn finish(self) -> Vec<Confirmed> {
        self.stop.store(true, Ordering::Relaxed);
        for (j, t) in self.tasks.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(150), t).await {
                Ok(Ok(Ok(n))) => eprintln!("partition: sender {j} confirmed {n} txs"),
                Ok(Ok(Err(e))) => panic!("load failed: {e}"),
                Ok(Err(e)) => panic!("sender {j} panicked: {e}"),
                Err(_) => panic!("sender {j} did not finish its last tx"),
            }
        }
        std::mem::take(&mut *self.seen.lock().expect("not poisoned"))
    }
}

/// Short timeouts: a cut-off node must not hold the test up.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a reqwest client")
}

async fn status_of(h: &reqwest::Client, net: &Testnet, i: usize) -> Result<StatusResponse, String> {
    let url = format!("{}/status", net.url(i));
    let r = h
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    r.error_for_status()
        .map_err(|e| format!("{url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// The status of every listed node; any that does not answer is an error.
async fn statuses(
    h: &reqwest::Client,
    net: &Testnet,
    nodes: &[usize],
) -> Result<Vec<StatusResponse>, String> {
    let mut out = Vec::new();
    for &i in nodes {
        out.push(status_of(h, net, i).await?);
    }
    Ok(out)
}

fn heights(s: &[StatusResponse]) -> Vec<u64> {
    s.iter().map(|s| s.height.0).collect()
}

async fn block(h: &reqwest::Client, net: &Testnet, i: usize, height: u64) -> BlockResponse {
    let url = format!("{}/blocks/{height}", net.url(i));
    h.get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// For a failure message: the tail of every node's log, and where the whole logs were
/// copied (the testnet's temporary directory goes with the test).
fn logs(net: &Testnet) -> String {
    let keep = std::env::temp_dir().join(format!("stele-partition-{}", std::process::id()));
    let kept = std::fs::create_dir_all(&keep).is_ok()
        && (0..net.n()).all(|i| {
            std::fs::copy(
                net.node_dir(i).join("node.log"),
                keep.join(format!("node{i}.log")),
            )
            .is_ok()
        });
    let mut out: Vec<String> = (0..net.n())
        .map(|i| format!("--- node {i} ---\n{}", net.log_tail(i)))
        .collect();
    if kept {
        out.push(format!("(whole node logs in {})", keep.display()));
    }
    out.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_then_two_two_split_then_heal() {
    let began = Instant::now();
    let bound = t_max() * RESUME;
    let say = |what: String| eprintln!("partition [{:>6.1?}] {what}", began.elapsed());
    // Declared before the testnet, so it is dropped after the processes are killed.
    let mut lab = Lab::new(N).unwrap_or_else(|e| panic!("the partition test needs this: {e:#}"));
    let params = format!(
        "view_timeout_ms = {T_MS}\nmax_view_timeout_ms = {T_MAX_MS}\n\
         checkpoint_interval = {CHECKPOINT_INTERVAL}\nwindow = {}",
        2 * CHECKPOINT_INTERVAL
    );
    let mut net =
        Testnet::init_with(N, LOADERS + 1, &params, &lab.testnet_hosts()).expect("testnet init");
    // Catching up by block replay, so every node holds the whole chain compared at the
    // end. With the default, a validator cut off while the others commit more than 8 L
    // blocks (256 here; 12 s of hold at 20 one-tx blocks a second is enough) installs
    // their snapshot as soon as it hears them again, and answers 410 below it. Seen in
    // one run under nextest: 959 blocks during the hold, then 410 for block 1. The
    // snapshot jump is the fault suite's to cover (faults.rs, testnet.rs).
    for i in 0..N {
        net.configure(i, "start_from_snapshot", "false")
            .expect("node.toml");
    }
    for i in 0..N {
        let wrapper = lab.exec_prefix(i);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        net.start_wrapped(i, &wrapper, &bin("stele-node"), &[])
            .expect("start a validator in its namespace");
    }
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}: the validators did not connect across the bridge (with br_netfilter \
                 loaded, iptables' FORWARD chain must accept bridged traffic)\n{}",
                logs(&net)
            )
        });
    say(format!(
        "four validators up at {:?}",
        (0..N).map(|i| lab.addr(i)).collect::<Vec<_>>()
    ));
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    let c = Client::from_testnet(&net.net_dir(), config).expect("client");
    let keys: Vec<KeyPair> = (0..=PROBE).map(|j| key(&net, j)).collect();
    let probe = |nonce| transfer(&c, &keys[PROBE], nonce, &keys[0].public());
    let h = http();

    let load = Load::start(&c, &net);
    wait_for(Duration::from_secs(30), "the load to commit", || {
        let n = load.confirmed();
        async move { (n >= 20).then_some(()) }
    })
    .await
    .expect("txs commit before any fault");

    // 1. The primary is cut off; the other three have a quorum and change views.
    let before = statuses(&h, &net, &[0, 1, 2, 3]).await.expect("all answer");
    let primary = (before[0].view.0 % N as u64) as usize;
    let rest: Vec<usize> = (0..N).filter(|i| *i != primary).collect();
    lab.isolate(primary).expect("cut the primary off");
    say(format!(
        "cut off validator {primary}, the primary of view {}, at heights {:?}",
        before[0].view.0,
        heights(&before)
    ));
    let (conf, took) = confirm_within(&c, &probe(0), bound)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no progress without validator {primary}: {e}\n{}",
                logs(&net)
            )
        });
    say(format!(
        "a tx sent at the cut committed at height {} after {took:?} (bound {bound:?})",
        conf.height.0
    ));
    let after = statuses(&h, &net, &rest).await.expect("the three answer");
    assert!(
        after.iter().all(|s| s.view > before[0].view),
        "the three left the cut-off primary's view: {:?}",
        after.iter().map(|s| s.view.0).collect::<Vec<_>>()
    );
    // Held for HOLD x T_max (past QUIC's idle timeout, so links must be redialled) and
    // 2K heights (so the others' stable checkpoint passes all it has).
    let confirmed = load.confirmed();
    let hold_until = Instant::now() + t_max() * HOLD;
    let far = before[0].height.0 + 2 * CHECKPOINT_INTERVAL;
    wait_for(
        Duration::from_secs(60),
        "the three to commit the load for the hold",
        || {
            let (n, h, net, rest) = (load.confirmed(), h.clone(), &net, &rest);
            async move {
                let s = statuses(&h, net, rest).await.ok()?;
                let done = Instant::now() >= hold_until
                    && n >= confirmed + 10
                    && s.iter().all(|s| s.height.0 >= far);
                done.then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&net)));

    // It comes back and catches up with what the others committed meanwhile.
    lab.reconnect(primary).expect("reconnect");
    let target = heights(&statuses(&h, &net, &rest).await.expect("the three answer"))
        .into_iter()
        .max()
        .expect("three heights");
    let reconnected = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "the reconnected validator to catch up",
        || {
            let (h, net) = (h.clone(), &net);
            async move {
                let s = status_of(&h, net, primary).await.ok()?;
                (s.height.0 >= target).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&net)));
    say(format!(
        "validator {primary} reconnected and reached height {target} in {:?}",
        reconnected.elapsed()
    ));

    // 2. A 2|2 split: neither side has a quorum (3 of 4), so nothing commits.
    lab.split(&[2, 3]).expect("split");
    let split_at = Instant::now();
    let at_cut = heights(
        &statuses(&h, &net, &[0, 1, 2, 3])
            .await
            .expect("all answer in the split"),
    );
    // A node that held q COMMITs when the links went may still execute that block: wait
    // until the top height stays put for 2T. From then on no node may pass it; one that
    // lags may still fetch blocks below it from its own side (a state transfer of blocks
    // a quorum committed before the split, not a commit).
    let settle_by = Instant::now() + Duration::from_secs(10);
    let top_of = |hs: &[u64]| hs.iter().copied().max().expect("four heights");
    let (mut top, mut still_since) = (top_of(&at_cut), Instant::now());
    while still_since.elapsed() < Duration::from_millis(2 * T_MS) {
        assert!(
            Instant::now() < settle_by,
            "the top height kept moving in the 2|2 split: {top}\n{}",
            logs(&net)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = heights_now(h.clone(), &net)
            .await
            .unwrap_or_else(|e| panic!("every API stays reachable in the split: {e}"));
        if top_of(&now) != top {
            (top, still_since) = (top_of(&now), Instant::now());
        }
    }
    say(format!(
        "split {{0,1}} | {{2,3}} at heights {at_cut:?}; top height settled at {top}"
    ));
    let hold_until = Instant::now() + t_max() * HOLD;
    let mut views = vec![0u64; N];
    let offered = load.confirmed();
    let mut seen = Vec::new();
    while Instant::now() < hold_until {
        let s = statuses(&h, &net, &[0, 1, 2, 3])
            .await
            .unwrap_or_else(|e| panic!("every API stays reachable in the split: {e}"));
        seen = heights(&s);
        assert!(
            seen.iter().all(|x| *x <= top),
            "a commit during the 2|2 split: heights {seen:?}, top before it {top}\n{}",
            logs(&net)
        );
        for (v, s) in views.iter_mut().zip(&s) {
            *v = (*v).max(s.view.0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say(format!(
        "no commits for {:?} of split under load (heights {seen:?}, {} confirmations \
         throughout); views reached {views:?}",
        split_at.elapsed(),
        load.confirmed() - offered
    ));

    // 3. Heal: commits resume, on all four.
    lab.heal().expect("heal");
    let healed = Instant::now();
    let (conf, took) = confirm_within(&c, &probe(1), bound)
        .await
        .unwrap_or_else(|e| panic!("no progress after the heal: {e}\n{}", logs(&net)));
    say(format!(
        "a tx sent at the heal committed at height {} after {took:?} (bound {bound:?})",
        conf.height.0
    ));
    wait_for(
        bound.saturating_sub(healed.elapsed()),
        "all four to commit after the heal",
        || {
            let seen = heights_now(h.clone(), &net);
            async move { seen.await.ok()?.iter().all(|x| *x > top).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&net)));
    say(format!(
        "all four above height {top} {:?} after the heal",
        healed.elapsed()
    ));

    // 4. Quiesce, then check agreement and that every confirmed tx is everywhere.
    let confirmed = load.finish().await;
    let s = wait_for(Duration::from_secs(60), "all four at one height", || {
        let (h, net) = (h.clone(), &net);
        async move {
            let s = statuses(&h, net, &[0, 1, 2, 3]).await.ok()?;
            let same = s.iter().all(|x| {
                (x.height, x.block_hash, x.state_digest)
                    == (s[0].height, s[0].block_hash, s[0].state_digest)
            });
            same.then_some(s)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&net)));
    let height = s[0].height;
    let mut chains: Vec<Vec<BlockResponse>> = Vec::new();
    for i in 0..N {
        let mut chain = Vec::new();
        for k in 1..=height.0 {
            chain.push(block(&h, &net, i, k).await);
        }
        chains.push(chain);
    }
    for k in 0..height.0 as usize {
        for (i, chain) in chains.iter().enumerate().skip(1) {
            assert_eq!(
                chain[k].digest,
                chains[0][k].digest,
                "node {i} at height {}",
                k + 1
            );
            assert_eq!(
                chain[k].state_digest,
                chains[0][k].state_digest,
                "node {i}'s state at height {}",
                k + 1
            );
        }
    }
    assert_eq!(chains[0].last().map(|b| b.digest), Some(s[0].block_hash));
    for conf in &confirmed {
        assert!(conf.height <= height && conf.height > Height(0), "{conf:?}");
        for (i, chain) in chains.iter().enumerate() {
            let b = &chain[conf.height.0 as usize - 1];
            assert_eq!(b.digest, conf.block_digest, "node {i}: {conf:?}");
            assert_eq!(
                b.block.tx_hashes().get(conf.index as usize),
                Some(&conf.hash),
                "node {i} lacks a confirmed tx at height {}",
                conf.height.0
            );
        }
    }
    say(format!(
        "{} confirmed txs in all four chains; all agree at height {} (views {:?})",
        confirmed.len(),
        height.0,
        s.iter().map(|x| x.view.0).collect::<Vec<_>>()
    ));
}

/// Every node's height, as one future that owns what it needs.
async fn heights_now(h: reqwest::Client, net: &Testnet) -> Result<Vec<u64>, String> {
    Ok(heights(&statuses(&h, net, &[0, 1, 2, 3]).await?))
}
