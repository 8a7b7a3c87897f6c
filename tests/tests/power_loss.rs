//! Power loss on real processes. Every validator's data directory is a [`LazyFs`]
//! mount: what a validator writes stays in the test's memory until it fsyncs, and a
//! power cut (SIGKILL, then drop what was not synced) loses the rest, as a machine
//! losing power loses its page cache. A plain `kill -9` keeps the page cache and never
//! tests a missing fsync.
//!
//! The validators are the test build (`stele-node-byzantine`, honest here) with
//! `--record-sent`: each appends every consensus message it sends to a file beside its
//! data directory, off the cut disk, and the tests check all of it with
//! `stele_consensus::history` (safety rule 3: a restarted validator never signs a
//! message that contradicts one it signed before, nor votes in a view it left).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stele_client::{Client, ClientConfig};
use stele_consensus::history::SignedHistory;
use stele_tests::chain::{all_included, max_height, progress_after, same_height, statuses, Load};
use stele_tests::lazyfs::{Cut, LazyFs};
use stele_tests::{bin, wait_connected, wait_for, Testnet};
use stele_types::{codec, Message, ReplicaId};
use tokio::sync::Mutex;

/// One testnet at a time: four validators already keep both cores busy.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Small checkpoints and window, so a few hundred txs cross many stable checkpoints;
/// short view-change timers, so a cut primary costs little time.
const PARAMS: &str = "checkpoint_interval = 8\nwindow = 16\nmax_batch_delay_ms = 5\n\
                      view_timeout_ms = 500\nmax_view_timeout_ms = 4000";

/// A testnet whose validators' data directories can lose power.
struct Powered {
    net: Testnet,
    fs: Vec<LazyFs>,
    /// Every cut's losses, for the log.
    cuts: Vec<(usize, Cut)>,
}

impl Powered {
    fn init(accounts: usize) -> Powered {
        let net = Testnet::init(4, accounts, PARAMS).expect("testnet init");
        let mut fs = Vec::new();
        for i in 0..4 {
            let data = net.node_dir(i).join("data");
            let backing = net.node_dir(i).join("data.disk");
            std::fs::rename(&data, &backing).expect("move the data directory aside");
            std::fs::create_dir(&data).expect("mount point");
            fs.push(
                LazyFs::mount(&backing, &data).unwrap_or_else(|e| {
                    panic!("{e:#}: the power-loss tests need root and /dev/fuse")
                }),
            );
        }
        Powered {
            net,
            fs,
            cuts: Vec::new(),
        }
    }

    fn sent_path(&self, i: usize) -> PathBuf {
        self.net.node_dir(i).join("sent.bin")
    }

    fn start(&mut self, i: usize) {
        let sent = self.sent_path(i);
        let sent = sent.to_str().expect("utf-8 path");
        self.net
            .start_wrapped(
                i,
                &[],
                &bin("stele-node-byzantine"),
                &["--record-sent", sent],
            )
            .expect("start");
    }

    /// SIGKILL validator i, then drop every write it had not synced.
    fn cut(&mut self, i: usize) -> Cut {
        self.net.kill(i);
        let cut = self.fs[i].power_cut();
        eprintln!("power cut on validator {i}: {cut:?}");
        self.cuts.push((i, cut));
        cut
    }

    /// What validator i sent, in order, across all its runs.
    fn sent(&self, i: usize) -> Vec<Message> {
        let bytes = std::fs::read(self.sent_path(i)).unwrap_or_default();
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while rest.len() >= 4 {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            // A record cut short by the SIGKILL was written before its send: never sent.
            let Some(frame) = rest.get(4..4 + len) else {
                break;
            };
            out.push(codec::decode::<Message>(frame, usize::MAX).expect("a recorded message"));
            rest = &rest[4 + len..];
        }
        out
    }

    /// Runs every validator's record through the rule-3 checker; returns each one's
    /// history.
    fn check_histories(&self) -> Vec<SignedHistory> {
        let vs = self.net.genesis.validator_set();
        let mut all = Vec::new();
        for i in 0..4 {
            let mut h = SignedHistory::default();
            let mut found = Vec::new();
            for m in self.sent(i) {
                found.extend(h.record(ReplicaId(i as u16), &vs, &m));
            }
            assert!(
                found.is_empty(),
                "validator {i} contradicted what it signed before a power cut: {}\n{}",
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                self.net.log_tail(i)
            );
            eprintln!(
                "validator {i}: {} signed messages, none contradicting another; left views below {}",
                h.recorded(),
                h.left_below()
            );
            all.push(h);
        }
        all
    }

    fn logs(&self) -> String {
        (0..4)
            .map(|i| format!("--- validator {i}:\n{}", self.net.log_tail(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Powered {
    fn drop(&mut self) {
        // Processes first, then the mounts, then (as `net` drops) the directories.
        for i in 0..4 {
            self.net.kill(i);
        }
        if std::thread::panicking() {
            // What the disks held at the failure, for a post-mortem.
            let keep =
                std::env::temp_dir().join(format!("stele-power-loss-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&keep);
            for i in 0..4 {
                let _ = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(self.net.node_dir(i))
                    .arg(keep.join(format!("node{i}")))
                    .status();
            }
            eprintln!(
                "the validators' directories (disk as synced, logs, sent records) are in {}",
                keep.display()
            );
        }
        self.fs.clear();
    }
}

async fn up(accounts: usize) -> (Powered, Client) {
    let mut p = Powered::init(accounts);
    for i in 0..4 {
        p.start(i);
    }
    if let Err(e) = wait_connected(&p.net, &[0, 1, 2, 3], Duration::from_secs(60)).await {
        panic!("the testnet does not connect: {e}\n{}", p.logs());
    }
    let client = Client::from_testnet(
        &p.net.net_dir(),
        ClientConfig {
            wait_timeout: Duration::from_secs(15),
            ..ClientConfig::default()
        },
    )
    .expect("client");
    (p, client)
}

async fn primary(net: &Testnet) -> usize {
    let s = statuses(net, &[0, 1, 2, 3]).await.expect("statuses");
    (s.iter().map(|s| s.view.0).max().expect("four") % 4) as usize
}

/// Safety rule 4 against a real power loss: all four validators lose power under load,
/// three times. After each restart the chain goes on from where the synced state
/// stands, and at the end every tx the client saw f+1 receipts for is in every
/// validator's chain with its result `ok` (the load resubmits the same txs, so a lost
/// block would show as a missing tx or a nonce used twice). No validator ever signed
/// a message that contradicts an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_validators_lose_power_under_load_and_keep_every_confirmed_tx() {
    let _serial = SERIAL.lock().await;
    let (mut p, c) = up(8).await;
    let load = Load::start(&p.net, &c, 0..7, 7, 20, None);
    load.advance(200, Duration::from_secs(60))
        .await
        .expect("load commits");
    let mut lost = 0;
    for round in 0..3 {
        let before = max_height(&p.net, &[0, 1, 2, 3]).await;
        let acknowledged = load.confirmed();
        for i in 0..4 {
            p.net.kill(i);
        }
        for i in 0..4 {
            lost += p.cut(i).bytes;
        }
        for i in 0..4 {
            p.start(i);
        }
        wait_connected(&p.net, &[0, 1, 2, 3], Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: no reconnect after the cut: {e}\n{}",
                    p.logs()
                )
            });
        let back = Instant::now();
        let h = max_height(&p.net, &[0, 1, 2, 3]).await;
        let took = progress_after(&p.net, &[0, 1, 2, 3], h, back, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| {
                panic!("round {round}: the chain does not go on: {e}\n{}", p.logs())
            });
        eprintln!(
            "round {round}: cut at height {before} with {acknowledged} txs confirmed; \
             back at {h}, next commit after {took:?}"
        );
        load.advance(150, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("round {round}: load stalls: {e}\n{}", p.logs()));
    }
    let confirmed = load.stop().await;
    let top = max_height(&p.net, &[0, 1, 2, 3]).await;
    let h = same_height(&p.net, &[0, 1, 2, 3], top, Duration::from_secs(120)).await;
    all_included(&p.net, &[0, 1, 2, 3], &confirmed)
        .await
        .expect("every confirmed tx on every validator after the power cuts");
    p.check_histories();
    let c = p.fs.iter().map(LazyFs::counters).collect::<Vec<_>>();
    eprintln!(
        "agreed at {h}; {} confirmed txs on each; cuts dropped {lost} unsynced bytes in all; \
         fsyncs per validator {:?}",
        confirmed.len(),
        c.iter().map(|c| c.syncs).collect::<Vec<_>>()
    );
    // The layer bit: the validators synced through it, and the cuts found unsynced
    // writes to drop (RocksDB's info log, at least, is never synced).
    assert!(c.iter().all(|c| c.syncs > 0 && c.cuts == 3), "{c:?}");
    assert!(
        lost > 0,
        "the power cuts dropped nothing: the layer is not in the path"
    );
}

/// Safety rule 3 against a real power loss: one validator (w) loses power again and
/// again, at the moments its signed state changes most: while it is the primary (a
/// view change follows), while a view change is under way (the primary is down and w
/// has or is about to have sent its VIEW-CHANGE), and right after a stable checkpoint.
/// After each restart it must never sign a message that contradicts one it sent
/// before, nor vote in a view it left; the checker reads everything it ever sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_cut_around_view_changes_and_checkpoints_never_contradicts_itself() {
    let _serial = SERIAL.lock().await;
    let (mut p, c) = up(8).await;
    let load = Load::start(&p.net, &c, 0..7, 7, 20, None);
    load.advance(150, Duration::from_secs(60))
        .await
        .expect("load commits");
    let w = 1;
    for round in 0..6 {
        let primary = primary(&p.net).await;
        let what = match round % 3 {
            0 => {
                // Cut w while it leads (if it does not, the primary's crash starts the
                // view change w then takes part in).
                if primary != w {
                    p.cut(primary);
                    tokio::time::sleep(Duration::from_millis(300 + 250 * round as u64)).await;
                    p.cut(w);
                    p.start(primary);
                    format!("primary {primary} down, w cut mid view change")
                } else {
                    p.cut(w);
                    "w cut as the primary".to_owned()
                }
            }
            1 => {
                // The primary (not w) goes down; w is cut once it has sent its
                // VIEW-CHANGE (its view moves past the primary's).
                let view = statuses(&p.net, &[w]).await.expect("status")[0].view;
                if primary != w {
                    p.cut(primary);
                }
                let _ = wait_for(Duration::from_secs(10), "w's VIEW-CHANGE", || async {
                    let s = statuses(&p.net, &[w]).await?;
                    (s[0].view > view).then_some(())
                })
                .await;
                p.cut(w);
                if primary != w {
                    p.start(primary);
                }
                format!("w cut after leaving view {view}")
            }
            _ => {
                // Right after w's stable checkpoint moves.
                let stable = statuses(&p.net, &[w]).await.expect("status")[0].stable_checkpoint;
                let _ = wait_for(
                    Duration::from_secs(20),
                    "a new stable checkpoint",
                    || async {
                        let s = statuses(&p.net, &[w]).await?;
                        (s[0].stable_checkpoint > stable).then_some(())
                    },
                )
                .await;
                p.cut(w);
                format!("w cut after the stable checkpoint passed {stable}")
            }
        };
        p.start(w);
        wait_connected(&p.net, &[0, 1, 2, 3], Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("round {round}: no reconnect: {e}\n{}", p.logs()));
        load.advance(60, Duration::from_secs(90))
            .await
            .unwrap_or_else(|e| panic!("round {round} ({what}): load stalls: {e}\n{}", p.logs()));
        eprintln!("round {round}: {what}; load goes on");
        // Caught up before the next round, so each cut finds w voting.
        let top = max_height(&p.net, &[0, 2, 3]).await;
        wait_for(Duration::from_secs(60), "w to catch up", || async {
            (max_height(&p.net, &[w]).await >= top).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", p.logs()));
    }
    let confirmed = load.stop().await;
    let top = max_height(&p.net, &[0, 1, 2, 3]).await;
    same_height(&p.net, &[0, 1, 2, 3], top, Duration::from_secs(120)).await;
    all_included(&p.net, &[0, 1, 2, 3], &confirmed)
        .await
        .expect("every confirmed tx on every validator");
    let histories = p.check_histories();
    let cuts_of_w = p.cuts.iter().filter(|(i, _)| *i == w).count();
    assert_eq!(cuts_of_w, 6);
    // Not vacuous: w voted, and left views (sent VIEW-CHANGEs) across its cuts.
    assert!(histories[w].recorded() > 100, "{}", histories[w].recorded());
    assert!(
        histories[w].left_below().0 >= 2,
        "w left only views below {}: the cuts missed the view changes",
        histories[w].left_below()
    );
}
