//! Attacks on a validator's HTTP edge, on real processes, each while honest load runs
//! through the client library (issue 22, DESIGN.md "The edges are bounded against anyone
//! who can reach them"): slowloris connections, large JSON bodies, idle connections,
//! thousands of `?wait=true` requests on one key, oversized bodies, and a silent-Initial
//! QUIC flood while a validator restarts.
//!
//! Each asserts that honest txs keep committing, that the attacked validator stays up
//! with its resident memory under [`RSS_CAP`] and its open descriptors under
//! [`FD_CAP`], and that it counts what it refused. Honest throughput under each attack
//! is a figure for the README, measured with `stele bench` beside the attack, never a
//! timed assertion here.

use std::time::{Duration, Instant};

use stele_client::{Client, ClientConfig};
use stele_tests::beside::{self, Baseline};
use stele_tests::chain::{key, metric, open_fds, peak_rss_bytes, transfer, Load};
use stele_tests::{http, wait_connected, wait_peers, Testnet};
use stele_transport::testkit::{capture_initials, SilentInitialFlood};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// One testnet at a time: four validators and an attacker keep both cores busy.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Most resident memory a validator may reach under any of these attacks.
const RSS_CAP: u64 = 512 << 20;
/// Most descriptors a validator may hold open: its HTTP connection cap (1,024), RocksDB's
/// open-file cap (512) and a margin for the QUIC socket, logs and threads.
const FD_CAP: usize = 2048;

/// A running testnet with honest load, and (with `STELE_ATTACK_BENCH_TXS` set) the
/// honest rate `stele bench` measured on it before any attack.
async fn up() -> (Testnet, Client, Load, Option<Baseline>) {
    let mut net = Testnet::init(4, beside::TESTNET_ACCOUNTS, "").expect("testnet init");
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");
    let client = Client::from_testnet(&net.net_dir(), ClientConfig::default()).expect("client");
    let load = Load::start(&net, &client, 0..4, 7, 20, None);
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit before the attack");
    let base = Baseline::measure(&net).await;
    (net, client, load, base)
}

/// The attacked validator (0) is alive and within its bounds; returns its descriptor
/// count.
fn within_bounds(net: &mut Testnet, what: &str) -> usize {
    validator_within_bounds(net, 0, what)
}

/// Validator `i` is alive and within its bounds; returns its descriptor count.
fn validator_within_bounds(net: &mut Testnet, i: usize, what: &str) -> usize {
    assert!(
        net.exited(i).is_none(),
        "validator {i} exited during {what}: {}",
        net.log_tail(i)
    );
    let pid = net.pid(i).expect("the validator runs");
    let fds = open_fds(pid).expect("/proc fd");
    assert!(
        fds <= FD_CAP,
        "validator {i} holds {fds} descriptors during {what}, the cap is {FD_CAP}"
    );
    let peak = peak_rss_bytes(pid).expect("/proc status");
    assert!(
        peak <= RSS_CAP,
        "validator {i} reached {} MiB resident during {what}, the cap is {} MiB",
        peak >> 20,
        RSS_CAP >> 20
    );
    fds
}

/// Whether the validator closed this connection: a read that does not block finds EOF,
/// data (an error answer before the close) or an error.
fn closed_by_peer(s: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Opens up to `n` connections to `addr`; the ones the validator refuses at once count
/// as closed.
async fn connect_many(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(s) = TcpStream::connect(addr).await {
            out.push(s);
        }
    }
    out
}

/// Waits up to `limit` for the validator to close `socks`, checking its bounds every
/// second; returns how many are still open.
async fn wait_closed(
    net: &mut Testnet,
    socks: &mut Vec<TcpStream>,
    limit: Duration,
    what: &str,
    mut each_second: impl FnMut(&mut TcpStream),
) -> usize {
    let start = Instant::now();
    let mut max_fds = 0;
    while start.elapsed() < limit && !socks.is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        socks.retain(|s| !closed_by_peer(s));
        for s in socks.iter_mut() {
            each_second(s);
        }
        max_fds = max_fds.max(within_bounds(net, what));
    }
    eprintln!(
        "{what}: {} still open after {:?}, validator 0 held at most {max_fds} descriptors",
        socks.len(),
        start.elapsed()
    );
    socks.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_and_honest_txs_commit() {
    let _serial = SERIAL.lock().await;
    let (mut net, _c, load, base) = up().await;
    let addr = net.genesis.validators[0].api_addr.clone();
    let before = load.confirmed();
    let mut socks = connect_many(&addr, 1000).await;
    for s in &mut socks {
        let _ = s
            .write_all(b"POST /txs HTTP/1.1\r\nHost: v\r\nContent-Type: application/json\r\n")
            .await;
    }
    let bench = beside::start(base, &net, "1,000 slowloris connections");
    // One more header byte a second, never the blank line that ends the header.
    let open = wait_closed(
        &mut net,
        &mut socks,
        Duration::from_secs(40),
        "1,000 slowloris connections",
        |s| {
            let _ = s.try_write(b"X");
        },
    )
    .await;
    beside::finish(bench).await;
    assert_eq!(
        open, 0,
        "{open} of 1,000 connections still sending their header after 40 s"
    );
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the attack");
    assert!(load.confirmed() > before);
    // Cut for taking too long, or for a header line hyper refuses: each is counted.
    let text = stele_tests::chain::metrics_text(&net.url(0))
        .await
        .expect("metrics");
    let counted: Vec<(&str, f64)> = ["header_timeout", "bad_head", "too_many_connections"]
        .iter()
        .map(|r| {
            let n = stele_tests::chain::metric_sum(
                &text,
                &format!("stele_http_refused_total{{reason=\"{r}\"}}"),
            )
            .unwrap_or(0.0);
            (*r, n)
        })
        .collect();
    eprintln!("slowloris refusals by reason: {counted:?}");
    // Every slowloris connection is refused and counted: cut for its slow head, or, when
    // honest clients hold part of the connection cap, refused at the cap.
    let cut: f64 = counted.iter().map(|(_, n)| n).sum();
    assert!(
        cut >= 1000.0,
        "{cut} slowloris connections counted as refused"
    );
    within_bounds(&mut net, "1,000 slowloris connections");
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed() {
    let _serial = SERIAL.lock().await;
    let (mut net, _c, load, base) = up().await;
    let addr = net.genesis.validators[0].api_addr.clone();
    let before = load.confirmed();
    // Two attacker processes of 10,000 connections each: one process may hold no more
    // descriptors than its limit (20,000 here), and that limit is the attack's size.
    let mut attackers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_stele-attack"))
                .args(["idle", &addr, "10000", "45"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("stele-attack starts")
        })
        .collect();
    // The connections take a few seconds to open; the bench runs while they are held.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let bench = beside::start(base, &net, "20,000 idle connections");
    let start = Instant::now();
    let mut max_fds = 0;
    while start.elapsed() < Duration::from_secs(50)
        && attackers
            .iter_mut()
            .any(|a| a.try_wait().ok().flatten().is_none())
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_fds = max_fds.max(within_bounds(&mut net, "20,000 idle connections"));
    }
    beside::finish(bench).await;
    let mut opened = 0;
    let mut left = 0;
    for a in attackers {
        let out = a.wait_with_output().expect("stele-attack ends");
        let text = String::from_utf8_lossy(&out.stdout);
        opened += text
            .lines()
            .find_map(|l| l.strip_prefix("opened "))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        left += text
            .lines()
            .filter_map(|l| l.strip_prefix("open "))
            .next_back()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
    }
    eprintln!(
        "20,000 idle connections: {opened} opened, {left} still open at the end, validator 0 \
         held at most {max_fds} descriptors"
    );
    assert_eq!(left, 0, "{left} idle connections still open after 45 s");
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the attack");
    assert!(load.confirmed() > before);
    let refused = metric(&net.url(0), "stele_http_refused_total").await;
    assert!(
        refused >= opened as f64,
        "{refused} refusals counted for {opened} idle connections"
    );
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_json_bodies_do_not_blow_up_memory() {
    let _serial = SERIAL.lock().await;
    let (mut net, _c, load, base) = up().await;
    let before = load.confirmed();
    // `[0,0,…]` just under the body limit: each element is two bytes of input and, held
    // as a generic JSON value, tens of bytes of memory.
    let limit = stele_types::api::MAX_SUBMIT_BODY;
    let mut body = Vec::with_capacity(limit);
    body.push(b'[');
    while body.len() + 3 < limit {
        body.extend_from_slice(b"0,");
    }
    body.extend_from_slice(b"0]");
    let body = bytes::Bytes::from(body);
    let url = format!("{}/txs", net.url(0));
    let c = http();
    // One round of 32; with a bench beside, rounds go on until it is done.
    let bench = beside::start(base, &net, "32 concurrent 8 MiB JSON bodies");
    let mut rounds = 0;
    loop {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            set.spawn(async move {
                let r = c
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("an answer");
                let code = r.status().as_u16();
                let v: serde_json::Value = r.json().await.expect("a JSON body");
                (code, v)
            });
        }
        while let Some(r) = set.join_next().await {
            let (code, v) = r.expect("task");
            assert!(
                (400..=503).contains(&code) && v["reason"].is_string(),
                "{code} {v}"
            );
        }
        rounds += 1;
        if bench.as_ref().is_none_or(|b| b.is_finished()) {
            break;
        }
    }
    beside::finish(bench).await;
    eprintln!("{rounds} rounds of 32 bodies");
    within_bounds(&mut net, "32 concurrent 8 MiB JSON bodies");
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the attack");
    assert!(load.confirmed() > before);
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_waits_on_one_key_are_bounded() {
    let _serial = SERIAL.lock().await;
    let (mut net, c, load, base) = up().await;
    let before = load.confirmed();
    // Nonce 1 of an account that never sends nonce 0: admitted as gapped, never final,
    // so every waiter would wait its whole 30 s.
    let gapped = transfer(&c, &key(&net, 6), 1, &key(&net, 7), 1);
    let body = bytes::Bytes::from(serde_json::to_vec(&gapped).expect("json"));
    let url = format!("{}/txs?wait=true", net.url(0));
    let attacker = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let (a, url, body) = (attacker.clone(), url.clone(), body.clone());
        set.spawn(async move {
            match a
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    (code, v["reason"].as_str().unwrap_or("").to_string())
                }
                // Refused at connect or cut: the validator protected itself.
                Err(_) => (0, "connection".to_string()),
            }
        });
    }
    let bench = beside::start(base, &net, "10,000 waits on one key");
    let mut max_fds = 0;
    let mut answers = std::collections::BTreeMap::<(u16, String), usize>::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !set.is_empty() {
        tokio::select! {
            r = set.join_next() => {
                if let Some(r) = r {
                    *answers.entry(r.expect("task")).or_default() += 1;
                }
            }
            _ = tick.tick() => max_fds = max_fds.max(within_bounds(&mut net, "10,000 waits on one key")),
        }
    }
    beside::finish(bench).await;
    eprintln!(
        "answers (code, reason): {answers:?}; validator 0 held at most {max_fds} descriptors"
    );
    for (code, reason) in answers.keys() {
        assert!(
            [200, 202, 429, 503].contains(code) || *code == 0,
            "unexpected answer {code} {reason}"
        );
    }
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the attack");
    assert!(load.confirmed() > before);
    let refused = metric(&net.url(0), "stele_http_refused_total").await;
    let refusals: usize = answers
        .iter()
        .filter(|((code, _), _)| [429, 503].contains(code))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused >= refusals as f64,
        "{refusals} refusals answered, {refused} counted"
    );
    within_bounds(&mut net, "10,000 waits on one key");
    load.stop().await;
}

/// Sends a POST /txs head and then `body` on a raw connection, and reads whatever the
/// validator answers until it closes; the answer's status line, or the error that cut it.
async fn raw_post(addr: &str, head: String, body: Vec<Vec<u8>>) -> Result<String, String> {
    let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        for part in body {
            wr.write_all(&part).await?;
        }
        wr.shutdown().await
    });
    let mut answer = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut answer).await;
    // The writer's own error (a reset, a broken pipe) is what a client would see first.
    let wrote = writer.await.map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    match (read, wrote) {
        (Ok(_), _) if !status.is_empty() => Ok(status),
        (r, w) => Err(format!("read {r:?}, write {w:?}, answer {status:?}")),
    }
}

/// A body over the limit is refused with a 413 the client can read. Before the lingering
/// close, the validator closed with the body's bytes unread, the kernel answered with a
/// reset, and a client still writing saw a broken pipe instead of the 413 (a CI run of
/// `double_spend_overdraft_and_bad_input` failed so, on a 9 MiB body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_a_readable_413_not_a_reset() {
    let _serial = SERIAL.lock().await;
    let mut net = Testnet::init(4, 8, "").expect("testnet init");
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");
    let url = format!("{}/txs", net.url(0));
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/txs")
        .to_string();
    let big = bytes::Bytes::from(vec![b' '; 64 << 20]);
    for round in 0..4 {
        // Declared too large: refused from the head.
        let r = http()
            .post(&url)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer to a 64 MiB body: {e:?}"));
        assert_eq!(r.status().as_u16(), 413, "round {round}");
        let v: serde_json::Value = r.json().await.expect("a JSON body");
        assert_eq!(v["reason"], "too_large", "round {round}: {v}");

        // Length unknown (chunked): refused once the limit is passed, mid-body.
        let chunk = {
            let mut c = format!("{:x}\r\n", 1 << 20).into_bytes();
            c.extend(std::iter::repeat_n(b' ', 1 << 20));
            c.extend_from_slice(b"\r\n");
            c
        };
        let mut parts = vec![chunk; 32];
        parts.push(b"0\r\n\r\n".to_vec());
        let head = format!(
            "POST /txs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let status = raw_post(&addr, head, parts)
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer to a 32 MiB chunked body: {e}"));
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "round {round}: {status}"
        );
    }
    within_bounds(&mut net, "64 MiB bodies");
}

/// Replayed client Initials from spoofed-looking sources aimed at validator 3 (which
/// accepts from 0, 1 and 2) while validator 1 restarts: every one is answered with a
/// stateless Retry and none takes a handshake slot, so validator 1 reconnects and honest
/// txs keep committing. Before Retry (issue 22), eight silent Initials every 10 s kept
/// every slot full and a restarted validator could not get back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_initial_flood_while_a_validator_restarts() {
    let _serial = SERIAL.lock().await;
    let (mut net, _c, load, base) = up().await;
    let target: std::net::SocketAddr = net.genesis.validators[3]
        .p2p_addr
        .parse()
        .expect("a socket address");
    let flood = SilentInitialFlood::start(target, capture_initials(64).await.expect("Initials"))
        .expect("the flood starts");
    let t0 = Instant::now();
    while flood.sent() < 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the flood did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        net.stop(1).is_some_and(|s| s.success()),
        "SIGTERM stops validator 1"
    );
    let before = load.confirmed();
    net.start(1).expect("validator 1 restarts");
    wait_peers(&net, &[1, 3], 3, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "validator 1 did not reconnect to every peer under the flood ({} datagrams): {e}",
                flood.sent()
            )
        });
    beside::finish(beside::start(base, &net, "silent-Initial QUIC flood")).await;
    load.advance(20, Duration::from_secs(60))
        .await
        .expect("honest txs commit during the flood");
    assert!(load.confirmed() > before);
    let url = net.url(3);
    let retries = metric(&url, "stele_transport_retries_total").await;
    let sent = flood.sent();
    eprintln!("flood: {sent} datagrams; validator 3 sent {retries} Retries");
    // Each datagram has its own source port: each is answered with a Retry (UDP on
    // loopback may lose a few under load, hence not all).
    assert!(retries >= 64.0, "{retries} Retries for {sent} datagrams");
    for reason in [
        "handshakes_busy",
        "handshake_timeout",
        "stranger_handshakes_busy",
    ] {
        let n = metric(
            &url,
            &format!("stele_transport_refused_total{{reason=\"{reason}\"}}"),
        )
        .await;
        assert_eq!(n, 0.0, "the flood took handshake slots: {reason} = {n}");
    }
    validator_within_bounds(&mut net, 3, "a silent-Initial flood");
    drop(flood);
    load.stop().await;
}
