//! A real four-validator testnet (QUIC, RocksDB, HTTP) driven through the client library
//! as a user would: 1,000 transfers agree everywhere and verify offline; a double spend,
//! an overdraft and bad input are handled; a restarted node catches up; a wiped node
//! refuses to start without `--recover`; torsion-signed txs get one verdict on every path.

use std::process::Command;
use std::time::Duration;

use stele_client::client::{Encoding, SubmitBody};
use stele_client::{verify_block, Client, ClientConfig, Verdict};
use stele_crypto::{Digest, Ed25519};
use stele_crypto::{KeyPair, Signer as _};
use stele_tests::chain::{
    block, client_of, key, max_height, metric, metric_sum, metrics_text, same_chain, same_height,
    transfer,
};
use stele_tests::torsion::TorsionSigner;
use stele_tests::{bin, http, status, wait_connected, wait_for, Testnet};
use stele_types::api::{
    Admitted, ApiError, BinarySubmitResponse, CheckpointResponse, SubmitResponse,
    BINARY_CONTENT_TYPE,
};
use stele_types::{Amount, Height, Nonce, Op, Transaction, TxResult};
use tokio::sync::Mutex;

/// The testnets of this file run one at a time: four validators each already keep both
/// cores busy.
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn up(accounts: usize, params: &str) -> (Testnet, Client) {
    let mut net = Testnet::init(4, accounts, params).expect("testnet init");
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");
    let client = Client::from_testnet(&net.net_dir(), ClientConfig::default()).expect("client");
    (net, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_transfers_agree_everywhere_and_verify_offline() {
    let _serial = SERIAL.lock().await;
    const ACCOUNTS: usize = 8;
    const PER_ACCOUNT: u64 = 125;
    let (net, c) = up(ACCOUNTS, "").await;
    let keys: Vec<KeyPair> = (0..ACCOUNTS).map(|j| key(&net, j)).collect();
    // Account j pays j+1 to account j+1 (mod 8), 125 times: 1,000 transfers. Sent in
    // rounds of 50 nonces per sender, inside the admission window G.
    let mut confirmed = Vec::new();
    let mut last_round = Vec::new();
    for round in 0..PER_ACCOUNT.div_ceil(50) {
        let mut txs = Vec::new();
        for (j, k) in keys.iter().enumerate() {
            for nonce in round * 50..((round + 1) * 50).min(PER_ACCOUNT) {
                txs.push(transfer(
                    &c,
                    k,
                    nonce,
                    &keys[(j + 1) % ACCOUNTS],
                    j as u64 + 1,
                ));
            }
        }
        let hashes = c.submit_many(&txs).await.expect("submitted");
        for r in c.wait_for(&hashes).await {
            let conf = r.expect("f+1 matching receipts");
            assert_eq!(conf.result, TxResult::Ok, "{conf:?}");
            confirmed.push(conf);
        }
        last_round = txs;
    }
    assert_eq!(confirmed.len(), 1000);

    // A `?wait` answer asked for in binary is the JSON answer, with each block receipt
    // once and in fewer bytes. The txs are final by now, so both answers are complete.
    let sample = &last_round[..64];
    let body = stele_types::codec::encode(sample);
    let ask = |accept: &'static str| {
        let (url, body) = (net.url(1), body.clone());
        async move {
            let r = http()
                .post(format!("{url}/txs?wait=true"))
                .header("content-type", BINARY_CONTENT_TYPE)
                .header("accept", accept)
                .body(body)
                .send()
                .await
                .expect("answer");
            assert_eq!(r.status().as_u16(), 200, "final outcomes answer 200");
            let ct = r.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .to_owned();
            (ct, r.bytes().await.expect("body").to_vec())
        }
    };
    let (bin_type, bin_bytes) = ask(BINARY_CONTENT_TYPE).await;
    let (json_type, json_bytes) = ask("application/json").await;
    assert_eq!(bin_type, BINARY_CONTENT_TYPE);
    assert!(json_type.starts_with("application/json"), "{json_type}");
    let compact: BinarySubmitResponse =
        stele_types::codec::decode(&bin_bytes, bin_bytes.len()).expect("a binary answer");
    let heights: std::collections::BTreeSet<_> = compact
        .txs
        .iter()
        .map(|e| e.outcome.as_ref().expect("final").height)
        .collect();
    assert_eq!(
        compact.blocks.len(),
        heights.len(),
        "one block receipt per block"
    );
    let json: SubmitResponse = serde_json::from_slice(&json_bytes).expect("a JSON answer");
    assert_eq!(json.txs.len(), 64);
    assert_eq!(compact.into_response().expect("complete"), json);
    assert!(
        bin_bytes.len() * 2 < json_bytes.len(),
        "binary {} bytes, JSON {}",
        bin_bytes.len(),
        json_bytes.len()
    );

    let h = same_height(&net, &[0, 1, 2, 3], 1, Duration::from_secs(60)).await;
    same_chain(&net, &[0, 1, 2, 3], h).await;
    for (j, k) in keys.iter().enumerate() {
        let prev = (j + ACCOUNTS - 1) % ACCOUNTS;
        let expect = 1_000_000 - PER_ACCOUNT * (j as u64 + 1) + PER_ACCOUNT * (prev as u64 + 1);
        for node in c.nodes() {
            let a = c
                .account(node, &k.public())
                .await
                .expect("account")
                .expect("exists");
            assert_eq!(a.balance, Amount(expect), "account {j} at {node}");
            assert_eq!(a.nonce, Nonce(PER_ACCOUNT), "account {j} at {node}");
        }
    }

    // Offline proof, with the library and with `stele verify`.
    let conf = &confirmed[0];
    let b = block(&net.url(2), conf.height.0).await;
    match verify_block(&net.genesis, &b, &conf.hash, Some(&conf.receipts)).expect("verifies") {
        Verdict::Applied { result, .. } => assert_eq!(result, TxResult::Ok),
        v => panic!("expected applied, got {v:?}"),
    }
    let dir = net.dir.path();
    let block_file = dir.join("block.json");
    std::fs::write(&block_file, serde_json::to_string(&b).expect("json")).expect("write");
    let verify = |file: &std::path::Path| {
        Command::new(bin("stele"))
            .arg("verify")
            .arg("--genesis")
            .arg(net.net_dir().join("genesis.json"))
            .arg("--block")
            .arg(file)
            .arg("--tx")
            .arg(conf.hash.to_string())
            .output()
            .expect("stele verify runs")
    };
    let ok = verify(&block_file);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.contains("included"), "{out}");
    let mut bad = b.clone();
    bad.certificate.commits[0].signature.0[5] ^= 1;
    let bad_file = dir.join("bad.json");
    std::fs::write(&bad_file, serde_json::to_string(&bad).expect("json")).expect("write");
    assert!(verify_block(&net.genesis, &bad, &conf.hash, None).is_err());
    let refused = verify(&bad_file);
    assert!(
        !refused.status.success(),
        "stele verify accepted a block with an altered signature: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    // Each committed block is one synced write, and the consensus records behind it are
    // counted too (`stele bench` prints synced writes per block from these). The block's
    // write is counted just before the block, so a scrape between them sees one more.
    for i in 0..4 {
        let text = metrics_text(&net.url(i)).await.expect("metrics");
        let blocks = metric_sum(&text, "stele_blocks_committed_total").expect("blocks");
        let synced = |what: &str| {
            metric_sum(
                &text,
                &format!("stele_store_synced_writes_total{{what=\"{what}\"}}"),
            )
            .expect("synced writes")
        };
        assert!(blocks > 0.0, "validator {i} committed nothing");
        let block_writes = synced("block");
        assert!(
            block_writes == blocks || block_writes == blocks + 1.0,
            "validator {i}: {block_writes} synced block writes for {blocks} blocks"
        );
        assert!(synced("consensus") > 0.0, "validator {i}");
    }
}

async fn post_raw(url: &str, body: Vec<u8>, content_type: &str) -> (u16, ApiError) {
    let r = http()
        .post(format!("{url}/txs"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("answer");
    let code = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("a JSON body");
    // A 2xx carries a SubmitResponse; give it an empty reason.
    let e = serde_json::from_value::<ApiError>(v.clone()).unwrap_or(ApiError {
        reason: String::new(),
        error: v.to_string(),
        index: None,
        horizon: None,
    });
    (code, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_spend_overdraft_and_bad_input() {
    let _serial = SERIAL.lock().await;
    let (net, c) = up(4, "max_pending_per_sender = 4").await;
    let (a, b, d) = (key(&net, 0), key(&net, 1), key(&net, 2));
    let url = net.url(0);
    let views_before: Vec<f64> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(metric(&net.url(i), "stele_consensus_view_changes_total").await);
        }
        v
    };

    // Double spend: two txs with one nonce; one applies, the other is stale.
    let x = transfer(&c, &a, 0, &b, 5);
    let y = transfer(&c, &a, 0, &d, 7);
    let (rx, ry) = tokio::join!(c.submit_and_wait(&x), c.submit_and_wait(&y));
    let (rx, ry) = (rx.expect("x final"), ry.expect("y final"));
    let mut results = [rx.result, ry.result];
    results.sort_by_key(|r| *r as u8);
    assert_eq!(
        results,
        [TxResult::Ok, TxResult::StaleNonce],
        "{rx:?} {ry:?}"
    );
    let winner = if rx.result == TxResult::Ok { &rx } else { &ry };
    let loser = if rx.result == TxResult::Ok { &ry } else { &rx };
    assert_eq!(
        (loser.height, loser.block_digest),
        (winner.height, winner.block_digest),
        "stale_nonce names where the nonce was used"
    );

    // Overdraft: applied as a failure, the balance unchanged but for nothing.
    let before = c
        .account(&c.nodes()[0], &b.public())
        .await
        .expect("b")
        .expect("exists");
    let over = transfer(&c, &b, 0, &a, 10_000_000);
    let r = c.submit_and_wait(&over).await.expect("final");
    assert_eq!(r.result, TxResult::InsufficientFunds);
    let after = c
        .account(&c.nodes()[0], &b.public())
        .await
        .expect("b")
        .expect("exists");
    assert_eq!(after.balance, before.balance);
    assert_eq!(after.nonce, Nonce(1), "a failed tx still uses its nonce");

    // A nonce far ahead is refused at admission.
    let far = transfer(&c, &d, 10_000, &a, 1);
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&far).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "nonce_too_far"), "{e:?}");
    // A sender over its quota (P = 4 pending) gets 429 with Retry-After.
    for n in 1..=4 {
        let t = transfer(&c, &d, n, &a, 1);
        let (code, e) = post_raw(
            &url,
            serde_json::to_vec(&t).expect("json"),
            "application/json",
        )
        .await;
        assert_eq!(code, 202, "gapped nonce {n}: {e:?}");
    }
    let t = transfer(&c, &d, 5, &a, 1);
    let r = http()
        .post(format!("{url}/txs"))
        .json(&t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let e: ApiError = r.json().await.expect("json");
    assert_eq!(e.reason, "sender_quota");

    // Garbage, oversized, badly signed, foreign and unknown-sender submissions: 4xx.
    let (code, e) = post_raw(&url, b"{not json".to_vec(), "application/json").await;
    assert_eq!((code, e.reason.as_str()), (400, "malformed"));
    let (code, e) = post_raw(&url, vec![7u8; 100], "application/octet-stream").await;
    assert_eq!((code, e.reason.as_str()), (400, "malformed"));
    let (code, e) = post_raw(&url, vec![b' '; 9 << 20], "application/json").await;
    assert_eq!((code, e.reason.as_str()), (413, "too_large"));
    let mut forged = transfer(&c, &b, 1, &a, 1);
    forged.signature.0[0] ^= 1;
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&forged).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "bad_signature"));
    let stranger = KeyPair::generate();
    let t = transfer(&c, &stranger, 0, &a, 1);
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&t).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "unknown_sender"));
    // A tx names no chain; one signed for another chain fails its signature here.
    let mut elsewhere = net.genesis.clone();
    elsewhere.chain_id = stele_types::ChainId::new("another-chain").expect("chain id");
    let foreign = Client::new(elsewhere, &net.urls(), ClientConfig::default()).expect("client");
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&transfer(&foreign, &b, 1, &a, 1)).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "bad_signature"), "{e:?}");
    // A tx in the old format, which named its chain, is refused as such, not accepted
    // with the field ignored.
    let mut old_format = serde_json::to_value(transfer(&c, &b, 1, &a, 1)).expect("json");
    old_format["value"]["chain_id"] = net.genesis.chain_id.to_string().into();
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&old_format).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "malformed"), "{e:?}");
    assert!(e.error.contains("chain_id"), "{e:?}");
    // Signed by a client that holds the genesis of a chain written again under this id
    // (one more account): signatures cover the genesis digest, so this chain refuses it
    // and names the genesis it runs.
    let mut again = net.genesis.clone();
    again.accounts.push(stele_types::GenesisAccount {
        key: KeyPair::generate().public(),
        balance: Amount(1),
    });
    let stale = Client::new(again, &net.urls(), ClientConfig::default()).expect("client");
    let (code, e) = post_raw(
        &url,
        serde_json::to_vec(&transfer(&stale, &b, 1, &a, 1)).expect("json"),
        "application/json",
    )
    .await;
    assert_eq!((code, e.reason.as_str()), (400, "bad_signature"), "{e:?}");
    assert!(e.error.contains(&net.genesis.digest().to_hex()), "{e:?}");
    let rejected = metric(&url, "stele_txs_rejected_total{reason=\"bad_signature\"}").await;
    assert!(rejected >= 1.0);

    // The node goes on: a good tx still commits, and no view changed throughout.
    let r = c
        .submit_and_wait(&transfer(&c, &b, 1, &a, 3))
        .await
        .expect("still live");
    assert_eq!(r.result, TxResult::Ok);
    for (i, before) in views_before.iter().enumerate() {
        let v = metric(&net.url(i), "stele_consensus_view_changes_total").await;
        assert_eq!(v, *before, "node {i} changed views");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_and_serves_the_same_chain() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(4, "checkpoint_interval = 8\nwindow = 16").await;
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    assert!(
        net.stop(3).is_some_and(|s| s.success()),
        "SIGTERM stops cleanly"
    );
    // Three of four commit alone; node 3 misses several checkpoints' worth of heights.
    let mut hashes = Vec::new();
    for round in 0..4u64 {
        let txs: Vec<Transaction> = (0..3)
            .flat_map(|j| {
                let c = &c;
                let keys = &keys;
                (round * 10..round * 10 + 10).map(move |n| transfer(c, &keys[j], n, &keys[3], 1))
            })
            .collect();
        let hs = c.submit_many(&txs).await.expect("submitted");
        for r in c.wait_for(&hs).await {
            assert_eq!(r.expect("committed by three").result, TxResult::Ok);
        }
        hashes.extend(hs);
    }
    // By block replay: it holds the whole chain to compare (a store at genesis would
    // otherwise start from a snapshot; the fault suite covers that).
    net.configure(3, "start_from_snapshot", "false")
        .expect("node.toml");
    net.start(3).expect("restart");
    let h = same_height(&net, &[0, 1, 2, 3], 2, Duration::from_secs(90)).await;
    same_chain(&net, &[0, 1, 2, 3], h).await;
    let a = c
        .account(&c.nodes()[3], &keys[3].public())
        .await
        .expect("account on node 3")
        .expect("exists");
    assert_eq!(a.balance, Amount(1_000_000 + 120));
}

/// Every validator serves its latest stable checkpoint with the opening of the state
/// digest it signs (`GET /checkpoint`); with only the genesis file, that proves the state
/// root, and all four prove the same one for the same height. A changed root does not
/// verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_root_at_a_stable_checkpoint_verifies_against_the_genesis() {
    let _serial = SERIAL.lock().await;
    let (net, c) = up(4, "checkpoint_interval = 8\nwindow = 16").await;
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    // One round per block at least (each waits for its receipts): past height 8.
    for n in 0..12 {
        let txs: Vec<Transaction> = (0..4)
            .map(|j| transfer(&c, &keys[j], n, &keys[(j + 1) % 4], 1))
            .collect();
        let hs = c.submit_many(&txs).await.expect("submitted");
        for r in c.wait_for(&hs).await {
            assert_eq!(r.expect("committed").result, TxResult::Ok);
        }
    }
    let vs = net.genesis.validator_set();
    let mut proven = std::collections::BTreeMap::new();
    for i in 0..4 {
        let url = net.url(i);
        let answer: CheckpointResponse =
            wait_for(Duration::from_secs(60), "a stable checkpoint", || {
                let url = url.clone();
                async move {
                    let r = http().get(format!("{url}/checkpoint")).send().await.ok()?;
                    if !r.status().is_success() {
                        return None;
                    }
                    let a: CheckpointResponse = r.json().await.ok()?;
                    (a.certificate.height >= Height(8)).then_some(a)
                }
            })
            .await
            .expect("a stable checkpoint at height 8 or above");
        let root = answer
            .opening
            .verify(&answer.certificate, &vs, &Ed25519)
            .expect("the opening proves the root");
        let mut forged = answer.opening.clone();
        forged.state_root = Digest::of(b"another state");
        assert!(forged.verify(&answer.certificate, &vs, &Ed25519).is_err());
        proven.insert((answer.certificate.height, i), root);
    }
    // Validators at the same stable height prove the same root.
    for ((h, i), r) in &proven {
        for ((h2, j), r2) in &proven {
            if h == h2 {
                assert_eq!(r, r2, "validators {i} and {j} at height {h}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_data_directory_refuses_to_start_without_recover() {
    let _serial = SERIAL.lock().await;
    let mut net = Testnet::init(4, 1, "").expect("init");
    let data = net.node_dir(3).join("data");
    std::fs::remove_dir_all(&data).expect("wipe");
    std::fs::create_dir_all(&data).expect("empty");
    net.start(3).expect("spawn");
    let code = wait_for(Duration::from_secs(30), "node 3 to exit", || {
        let s = net.exited(3);
        async move { s }
    })
    .await
    .expect("it refuses");
    assert_eq!(code.code(), Some(2), "{}", net.log_tail(3));
    assert!(net.log_tail(3).contains("--recover"), "{}", net.log_tail(3));
    net.start_with(3, &["--recover"]).expect("spawn");
    let c = http();
    let s = wait_for(Duration::from_secs(30), "node 3 to answer", || {
        let c = c.clone();
        let u = net.url(3);
        async move { status(&c, &u).await.ok() }
    })
    .await
    .expect("it runs with --recover");
    assert!(s.recovering, "{s:?}");
    assert!(net.exited(3).is_none());
}

/// One signature rule on every path (issue 21): transfers whose R carries a torsion
/// component are valid under ZIP-215. Each must get the same verdict alone (`POST /txs`
/// of one tx), in a batch (a client batch mixed with ordinary txs), by relay (the nodes
/// the client did not post to), in a proposal (the backups) and by state transfer (a
/// node that was down while they committed). Before the fix the single path refused
/// them and a batch accepted some, so a node could commit a block that another refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torsion_signed_transfers_get_one_verdict_on_every_path() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(3, "checkpoint_interval = 8\nwindow = 16").await;
    let keys: Vec<KeyPair> = (0..3).map(|j| key(&net, j)).collect();
    let torsion = TorsionSigner::load(&stele_client::client::testnet_account_key(
        &net.net_dir(),
        0,
    ))
    .expect("account key");
    assert_eq!(torsion.public_key(), keys[0].public());
    assert!(net.stop(3).is_some_and(|s| s.success()));
    let pay = |nonce: u64, amount: u64| {
        c.sign(
            &torsion,
            Nonce(nonce),
            Op::Transfer {
                to: keys[1].public(),
                amount: Amount(amount),
            },
        )
        .expect("well-formed")
    };

    // Alone, to node 0 only: the others get it by relay.
    let alone = pay(0, 1);
    let body = SubmitBody::new(std::slice::from_ref(&alone), Encoding::Json);
    let answer = c
        .post_txs(&c.nodes()[0], &body, false, Duration::from_secs(10))
        .await
        .expect("a torsion-signed tx is admitted alone");
    assert_eq!(answer.txs[0].admitted, Admitted::Accepted);

    // In batches, mixed with ordinary txs, to q nodes.
    let mut batch: Vec<Transaction> = (1..9).map(|n| pay(n, 1)).collect();
    batch.extend((0..8).map(|n| transfer(&c, &keys[2], n, &keys[1], 1)));
    let mut hashes = vec![stele_types::tx_hash(&alone)];
    hashes.extend(c.submit_many(&batch).await.expect("the batch is admitted"));
    for (i, r) in c.wait_for(&hashes).await.into_iter().enumerate() {
        let r = r.unwrap_or_else(|e| panic!("tx {i} not confirmed by f+1: {e}"));
        assert_eq!(r.result, TxResult::Ok, "tx {i}");
    }

    // State transfer: node 3 checks the committed blocks' txs in its own batches.
    // The nine torsion-signed txs may share one block: wait for the height the three reached.
    let top = max_height(&net, &[0, 1, 2]).await;
    assert!(top >= 1, "the three committed nothing");
    net.start(3).expect("restart");
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(90)).await;
    same_chain(&net, &[0, 1, 2, 3], h).await;
    for node in c.nodes() {
        let a = c
            .account(node, &keys[0].public())
            .await
            .expect("account")
            .expect("exists");
        assert_eq!(a.nonce, Nonce(9), "{node}: every torsion-signed tx applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throwaway_senders_are_refused_before_any_signature_check() {
    let _serial = SERIAL.lock().await;
    let (net, c) = up(2, "").await;
    let url = net.url(0);
    let a = key(&net, 0);
    // One honest tx first, so every lazy start-up check is behind us.
    let r = c
        .submit_and_wait(&transfer(&c, &a, 0, &key(&net, 1), 1))
        .await
        .expect("commits");
    assert_eq!(r.result, TxResult::Ok);
    let before = metric(&url, "stele_sig_verified_total").await;
    // Well signed, by keys with no account: the store says so for the cost of a read.
    for _ in 0..500 {
        let stranger = KeyPair::generate();
        let t = transfer(&c, &stranger, 0, &a, 1);
        let (code, e) = post_raw(
            &url,
            serde_json::to_vec(&t).expect("json"),
            "application/json",
        )
        .await;
        assert_eq!((code, e.reason.as_str()), (400, "unknown_sender"));
    }
    let after = metric(&url, "stele_sig_verified_total").await;
    assert_eq!(
        after,
        before,
        "validator 0 checked {} signatures of senders with no account",
        after - before
    );
}

/// Issue 24: a snapshot exported to a file (every chunk verified against the genesis)
/// starts a new data directory, which then fetches only the blocks above it and agrees
/// with the others; a damaged file is refused and leaves no database behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_starts_a_new_data_directory_that_catches_up() {
    let _serial = SERIAL.lock().await;
    let (mut net, c) = up(4, "checkpoint_interval = 8\nwindow = 16").await;
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    assert!(net.stop(3).is_some_and(|s| s.success()));
    let urls: Vec<String> = (0..3).map(|i| net.url(i)).collect();
    // Rounds of transfers to validator 3's account until a stable checkpoint is kept.
    let mut rounds = 0u64;
    loop {
        let txs: Vec<Transaction> = (0..3)
            .flat_map(|j| {
                let (c, keys) = (&c, &keys);
                (rounds * 10..rounds * 10 + 10).map(move |n| transfer(c, &keys[j], n, &keys[3], 1))
            })
            .collect();
        let hs = c.submit_many(&txs).await.expect("submitted");
        for r in c.wait_for(&hs).await {
            assert_eq!(r.expect("committed by three").result, TxResult::Ok);
        }
        rounds += 1;
        let served = http().get(format!("{}/snapshot", urls[0])).send().await;
        if served.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(rounds < 40, "no snapshot served after {rounds} rounds");
    }

    let genesis = net.net_dir().join("genesis.json");
    let file = net.net_dir().join("state.snap");
    let mut export = Command::new(bin("stele-node"));
    export
        .args(["snapshot", "export", "--genesis"])
        .arg(&genesis);
    for u in &urls {
        export.args(["--from", u]);
    }
    let out = export.arg("--out").arg(&file).output().expect("runs");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("the snapshot at height"), "{said}");

    // One byte changed near the end (inside the last chunks): refused, nothing created.
    let mut bytes = std::fs::read(&file).expect("written");
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    let bad = net.net_dir().join("bad.snap");
    std::fs::write(&bad, &bytes).expect("write");
    let elsewhere = net.net_dir().join("elsewhere");
    let out = Command::new(bin("stele-node"))
        .args(["init", "--genesis"])
        .arg(&genesis)
        .arg("--data")
        .arg(&elsewhere)
        .arg("--snapshot")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a damaged snapshot file is refused"
    );
    assert!(!elsewhere.join("db").exists());

    let data = net.node_dir(3).join("data");
    std::fs::remove_dir_all(&data).expect("wipe");
    let out = Command::new(bin("stele-node"))
        .args(["init", "--genesis"])
        .arg(&genesis)
        .arg("--data")
        .arg(&data)
        .arg("--snapshot")
        .arg(&file)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    net.start(3).expect("start from the snapshot");
    let top = max_height(&net, &[0, 1, 2]).await;
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(90)).await;
    assert!(h.0 >= 8);
    let below = http()
        .get(format!("{}/blocks/1", net.url(3)))
        .send()
        .await
        .expect("GET /blocks/1");
    assert_eq!(below.status().as_u16(), 410, "it never fetched block 1");
    let a = c
        .account(&c.nodes()[3], &keys[3].public())
        .await
        .expect("account on node 3")
        .expect("exists");
    assert_eq!(a.balance, Amount(1_000_000 + 30 * rounds));
}

/// Issue 24: with `retain_blocks` set, validators remove the blocks below a horizon
/// that follows the stable checkpoint, answer 410 `pruned` below it, and keep
/// committing and agreeing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_validators_answer_pruned_below_their_horizon_and_go_on() {
    let _serial = SERIAL.lock().await;
    let mut net =
        Testnet::init(4, 4, "checkpoint_interval = 8\nwindow = 16").expect("testnet init");
    for i in 0..4 {
        net.configure(i, "retain_blocks", "16").expect("node.toml");
    }
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");
    let c = Client::from_testnet(&net.net_dir(), ClientConfig::default()).expect("client");
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    let mut n = 0u64;
    while max_height(&net, &[0, 1, 2, 3]).await < 60 {
        let txs: Vec<Transaction> = (0..4)
            .map(|j| transfer(&c, &keys[j], n, &keys[(j + 1) % 4], 1))
            .collect();
        let hs = c.submit_many(&txs).await.expect("submitted");
        for r in c.wait_for(&hs).await {
            assert_eq!(r.expect("committed").result, TxResult::Ok);
        }
        n += 1;
        assert!(n < 400, "the chain does not grow");
    }
    let top = max_height(&net, &[0, 1, 2, 3]).await;
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(60)).await;
    for i in 0..4 {
        let url = net.url(i);
        let horizon = metric(&url, "stele_store_horizon_height").await;
        // 16 below a stable checkpoint at least 16 below the tip.
        assert!(
            horizon > 1.0 && horizon + 48.0 >= h.0 as f64,
            "node {i}: horizon {horizon}, tip {h}"
        );
        let r = http()
            .get(format!("{url}/blocks/1"))
            .send()
            .await
            .expect("GET /blocks/1");
        assert_eq!(r.status().as_u16(), 410, "node {i}");
        let e: ApiError = r.json().await.expect("a JSON reason");
        assert_eq!(e.reason, "pruned");
        assert_eq!(e.horizon, Some(Height(horizon as u64)));
        // The tip's block is still served and verifies.
        let b = block(&url, h.0).await;
        assert_eq!(b.height, h);
    }
}

/// How validator 3 is away while its peers prune past it.
#[derive(Clone, Copy, PartialEq)]
enum Away {
    /// Stopped, then started again.
    Down,
    /// SIGSTOPped, then SIGCONTinued: it runs on, not knowing it was away.
    Paused,
}

/// Issue 24: a validator that was down while its peers pruned past every block it
/// lacks (its data directory intact, so not `--recover`) restarts, finds the blocks it
/// would replay gone, installs the peers' snapshot over its own store and catches up.
/// It keeps its own consensus record (the views it left), so it needs no recovery gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_down_while_its_peers_pruned_past_it_catches_up_by_snapshot() {
    behind_the_peers_horizon(Away::Down).await;
}

/// The same with the validator paused (a suspended VM, a stalled disk): it comes back
/// running, far behind, asking for blocks no peer keeps. It must notice and jump to a
/// snapshot by itself, without an operator's restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_paused_while_its_peers_pruned_past_it_catches_up_by_snapshot() {
    behind_the_peers_horizon(Away::Paused).await;
}

async fn behind_the_peers_horizon(away: Away) {
    let _serial = SERIAL.lock().await;
    let mut net =
        Testnet::init(4, 4, "checkpoint_interval = 8\nwindow = 16").expect("testnet init");
    for i in 0..4 {
        net.configure(i, "retain_blocks", "16").expect("node.toml");
    }
    net.start_all().expect("start");
    wait_connected(&net, &[0, 1, 2, 3], Duration::from_secs(60))
        .await
        .expect("the testnet connects");
    // Not validator 3: it is paused or not started yet.
    let c = client_of(&net, &[0, 1, 2]);
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    let mut n = 0u64;
    let mut commit_until = async |net: &Testnet, nodes: &[usize], height: u64| {
        while max_height(net, nodes).await < height {
            let txs: Vec<Transaction> = (0..3)
                .map(|j| transfer(&c, &keys[j], n, &keys[(j + 1) % 4], 1))
                .collect();
            let hs = c.submit_many(&txs).await.expect("submitted");
            for r in c.wait_for(&hs).await {
                assert_eq!(r.expect("committed").result, TxResult::Ok);
            }
            n += 1;
            assert!(n < 2000, "the chain does not grow");
        }
    };
    commit_until(&net, &[0, 1, 2, 3], 24).await;
    let down_at = same_height(&net, &[0, 1, 2, 3], 24, Duration::from_secs(60)).await;
    let pid = net.pid(3).expect("validator 3 runs");
    let signal = |s| {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, s).expect("signal validator 3");
    };
    match away {
        Away::Down => drop(net.stop(3)),
        Away::Paused => signal(nix::sys::signal::Signal::SIGSTOP),
    }
    // Past what the peers hold back for a laggard (8 L = 128 blocks) and their
    // retain_blocks: block down_at + 1 is gone everywhere.
    commit_until(&net, &[0, 1, 2], down_at.0 + 8 * 16 + 16 + 40).await;
    for i in 0..3 {
        let horizon = metric(&net.url(i), "stele_store_horizon_height").await as u64;
        assert!(
            horizon > down_at.0 + 1,
            "validator {i} still holds block {}: horizon {horizon}",
            down_at.0 + 1
        );
    }
    match away {
        Away::Down => net.start(3).expect("restart"),
        Away::Paused => signal(nix::sys::signal::Signal::SIGCONT),
    }
    let top = max_height(&net, &[0, 1, 2]).await;
    let h = same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(90)).await;
    if away == Away::Paused {
        // Nobody restarted it: the same process started itself again.
        assert_eq!(net.exited(3), None, "validator 3 exited");
        assert_eq!(net.pid(3), Some(pid));
        let log = std::fs::read_to_string(net.node_dir(3).join("node.log")).expect("log");
        assert!(
            log.contains("starting again to install it"),
            "{}",
            net.log_tail(3)
        );
    }
    let installed = metric(&net.url(3), "stele_snapshot_installed_height").await as u64;
    assert!(
        installed > down_at.0 && installed <= h.0,
        "installed {installed}, was down at {down_at}, agreed at {h}"
    );
    // Its own old blocks went with the jump: the store starts at the snapshot.
    let below = http()
        .get(format!("{}/blocks/{}", net.url(3), down_at.0))
        .send()
        .await
        .expect("GET below the snapshot");
    assert_eq!(below.status().as_u16(), 410);
    // It votes again. Right after catching up it may still trail the others by a block
    // or two (they do not need it), so the chain goes on until its vote counter moves.
    let votes = metric(&net.url(3), "stele_votes_sent_total").await;
    let mut more = h.0;
    while metric(&net.url(3), "stele_votes_sent_total").await <= votes {
        more += 1;
        assert!(
            more < h.0 + 300,
            "validator 3 sent no vote in 300 blocks after the jump\n{}",
            net.log_tail(3)
        );
        commit_until(&net, &[0, 1, 2, 3], more).await;
    }
    let top = max_height(&net, &[0, 1, 2]).await;
    same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(60)).await;
}

/// Issue 24: keys ground into one bucket make it larger than any chunk (4 MiB). A new
/// validator still syncs that state by snapshot: the bucket comes in pieces, each
/// verified, and is installed whole. Before pieces its only answer was 413 and the new
/// validator could never start from the peers' snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_validator_syncs_a_bucket_larger_than_a_chunk_in_pieces() {
    let _serial = SERIAL.lock().await;
    const CROWDED: u32 = 90_000;
    let mut net =
        Testnet::init(4, 4, "checkpoint_interval = 8\nwindow = 16").expect("testnet init");
    let path = net.net_dir().join("genesis.json");
    let mut genesis = net.genesis.clone();
    genesis.accounts.extend((0..CROWDED).map(|i| {
        let mut k = [3u8; 32];
        k[..2].copy_from_slice(&7u16.to_be_bytes());
        k[2..6].copy_from_slice(&i.to_be_bytes());
        stele_types::GenesisAccount {
            key: stele_crypto::PublicKey(k),
            balance: Amount(100 + u64::from(i)),
        }
    }));
    std::fs::write(&path, serde_json::to_vec(&genesis).expect("json")).expect("genesis");
    net.genesis = genesis;
    // The data directories name the new genesis, as `stele-node init` does.
    for i in 0..4 {
        let out = Command::new(bin("stele-node"))
            .args(["init", "--genesis"])
            .arg(&path)
            .arg("--data")
            .arg(net.node_dir(i).join("data"))
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..3 {
        net.start(i).expect("start");
    }
    wait_connected(&net, &[0, 1, 2], Duration::from_secs(60))
        .await
        .expect("three connect");
    let c = client_of(&net, &[0, 1, 2]);
    let keys: Vec<KeyPair> = (0..4).map(|j| key(&net, j)).collect();
    let mut rounds = 0u64;
    let served = loop {
        let txs: Vec<Transaction> = (rounds * 10..rounds * 10 + 10)
            .map(|n| transfer(&c, &keys[0], n, &keys[3], 1))
            .collect();
        for r in c
            .wait_for(&c.submit_many(&txs).await.expect("submitted"))
            .await
        {
            assert_eq!(r.expect("committed by three").result, TxResult::Ok);
        }
        rounds += 1;
        let r = http()
            .get(format!("{}/checkpoint", net.url(0)))
            .send()
            .await;
        if let Ok(r) = r {
            if r.status().is_success() {
                let cp: CheckpointResponse = r.json().await.expect("checkpoint");
                break cp.certificate.height;
            }
        }
        assert!(rounds < 40, "no stable checkpoint after {rounds} rounds");
    };
    // The peers' snapshot answers 413 for bucket 0007 alone, and serves its pieces.
    let mut h = served;
    let whole = loop {
        let r = http()
            .get(format!("{}/snapshot/{}/7/0", net.url(0), h.0))
            .send()
            .await
            .expect("GET chunk");
        if r.status().as_u16() != 404 {
            break r;
        }
        // Not kept yet (taken in the background) or already replaced: the latest.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cp: CheckpointResponse = http()
            .get(format!("{}/checkpoint", net.url(0)))
            .send()
            .await
            .expect("GET checkpoint")
            .json()
            .await
            .expect("checkpoint");
        h = cp.certificate.height;
    };
    assert_eq!(whole.status().as_u16(), 413, "bucket 0007 is past a chunk");
    let piece = http()
        .get(format!("{}/snapshot/{}/piece/7/11/0", net.url(0), h.0))
        .send()
        .await
        .expect("GET piece");
    assert_eq!(piece.status().as_u16(), 200);
    let piece: stele_types::snapshot::BucketPiece =
        stele_types::codec::decode(&piece.bytes().await.expect("body"), 8 << 20).expect("a piece");
    assert_eq!(piece.leaves, u64::from(CROWDED));

    net.start(3).expect("start the new validator");
    let top = max_height(&net, &[0, 1, 2]).await;
    same_height(&net, &[0, 1, 2, 3], top, Duration::from_secs(120)).await;
    let installed = metric(&net.url(3), "stele_snapshot_installed_height").await as u64;
    assert!(installed >= 8, "validator 3 replayed instead ({installed})");
    eprintln!(
        "validator 3 installed the snapshot at {installed} (bucket 0007: {} pieces) and \
         reached height {top}",
        u64::from(CROWDED).div_ceil(1 << 11)
    );
    // Every crowded account is on validator 3, read from its own state.
    let c3 = client_of(&net, &[3]);
    for i in [0u32, 1, 45_678, CROWDED - 1] {
        let mut k = [3u8; 32];
        k[..2].copy_from_slice(&7u16.to_be_bytes());
        k[2..6].copy_from_slice(&i.to_be_bytes());
        let a = c3
            .account(&c3.nodes()[0], &stele_crypto::PublicKey(k))
            .await
            .expect("account on node 3")
            .expect("exists");
        assert_eq!(a.balance, Amount(100 + u64::from(i)));
    }
}
