//! The client against fake validators: real HTTP on 127.0.0.1, scripted behaviour.
//!
//! Each fake validator serves the API types from `stele_types::api` and signs receipts
//! with its own genesis key. The shared "ledger" commits every admitted tx at once, so
//! the tests are about the client: fanout, 429 backoff, polling outside the fanout,
//! receipt quorums against a lying validator, nonces, batches and timeouts; and the
//! `stele` binary end to end on top of it.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use stele_client::{Client, ClientConfig, ClientError};
use stele_crypto::{merkle, ChainBinding, ChainId, Digest, KeyPair, PublicKey, Signed};
use stele_types::api::{
    AccountResponse, Admitted, ApiError, StatusResponse, SubmitEntry, SubmitResponse, TxResponse,
    TxStatus, BINARY_CONTENT_TYPE,
};
use stele_types::{
    codec, results_leaf, tx_hash, Amount, BlockReceipt, Genesis, GenesisAccount, Height, Nonce, Op,
    Params, Receipt, ReplicaId, Transaction, TxHash, TxResult, ValidatorInfo, ViewNumber,
};

#[derive(Clone, Copy, Debug, Default)]
struct Behaviour {
    /// Signs `insufficient_funds` for everything.
    liar: bool,
    /// Refuses every POST with 400 `bad_signature`.
    refuses: bool,
    /// Answers `?wait=true` at once with 202 and no outcome, as if its wait timed out.
    wait_times_out: bool,
    /// Says `pending` forever, never signs a receipt.
    never_final: bool,
    /// Answers 429 (Retry-After: 1) to this many POSTs first.
    busy: u32,
    /// The account nonce it reports for every key (`None`: no account).
    nonce: Option<u64>,
    /// Inside a batch, refuses the tx with this nonce (`nonce_too_far`).
    refuse_nonce: Option<u64>,
    /// Admits this many POSTs without keeping their txs: a validator that crashed before
    /// they committed, its mempool gone with it.
    loses: u32,
}

#[derive(Default)]
struct Ledger {
    applied: HashMap<TxHash, (Height, u32)>,
    next_height: u64,
}

struct FakeNode {
    id: ReplicaId,
    key: KeyPair,
    chain: ChainBinding,
    behaviour: Behaviour,
    busy_left: AtomicU32,
    loses_left: AtomicU32,
    posts: AtomicU64,
    ledger: Arc<Mutex<Ledger>>,
}

impl FakeNode {
    fn answer(&self, hash: TxHash) -> TxResponse {
        let at = self.ledger.lock().unwrap().applied.get(&hash).copied();
        let Some((height, index)) = at else {
            return TxResponse::unknown(hash);
        };
        if self.behaviour.never_final {
            return TxResponse {
                status: TxStatus::Pending,
                ..TxResponse::unknown(hash)
            };
        }
        let result = if self.behaviour.liar {
            TxResult::InsufficientFunds
        } else {
            TxResult::Ok
        };
        let receipt = signed_receipt(
            &self.chain,
            &self.key,
            self.id,
            Height(height.0),
            Digest::of(&height.0.to_le_bytes()),
            &filler_leaves(hash, result, index),
            index,
        );
        TxResponse {
            hash,
            status: TxStatus::Applied,
            height: Some(height),
            index: Some(index),
            result: Some(result),
            receipt: Some(receipt),
            used_by: None,
            tx: None,
            horizon: None,
        }
    }
}

/// A block's (tx hash, result) leaves with (`hash`, `result`) at `index` and filler txs
/// applied `ok` before it.
fn filler_leaves(hash: TxHash, result: TxResult, index: u32) -> Vec<(TxHash, TxResult)> {
    (0..=index)
        .map(|i| {
            if i == index {
                (hash, result)
            } else {
                (Digest::of(&i.to_le_bytes()), TxResult::Ok)
            }
        })
        .collect()
}

/// Validator `id`'s receipt for leaf `index` of a block with `leaves`, as a node builds it.
fn signed_receipt(
    chain: &ChainBinding,
    key: &KeyPair,
    id: ReplicaId,
    height: Height,
    block_digest: Digest,
    leaves: &[(TxHash, TxResult)],
    index: u32,
) -> Receipt {
    let tree = merkle::Tree::new(
        &leaves
            .iter()
            .map(|(h, r)| results_leaf(h, *r))
            .collect::<Vec<_>>(),
    );
    let block = BlockReceipt {
        replica: id,
        height,
        block_digest,
        results_root: tree.root(),
        state_digest: Digest::of(b"state"),
    };
    let (tx_hash, result) = leaves[index as usize];
    Receipt {
        block: Signed::sign(block, chain, key),
        tx_hash,
        result,
        proof: tree.prove(index as usize).unwrap(),
    }
}

fn api_error(status: StatusCode, reason: &str) -> Response {
    let body = ApiError {
        reason: reason.into(),
        error: format!("fake node says {reason}"),
        index: None,
        horizon: None,
    };
    (status, Json(body)).into_response()
}

async fn post_txs(
    State(node): State<Arc<FakeNode>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    node.posts.fetch_add(1, Ordering::SeqCst);
    let binary = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == BINARY_CONTENT_TYPE.as_bytes());
    let txs: Vec<Transaction> = if binary {
        match codec::decode(&body, 8 << 20) {
            Ok(t) => t,
            Err(_) => return api_error(StatusCode::BAD_REQUEST, "malformed"),
        }
    } else if let Ok(t) = serde_json::from_slice::<Vec<Transaction>>(&body) {
        t
    } else if let Ok(t) = serde_json::from_slice::<Transaction>(&body) {
        vec![t]
    } else {
        return api_error(StatusCode::BAD_REQUEST, "malformed");
    };
    if node.behaviour.refuses {
        return api_error(StatusCode::BAD_REQUEST, "bad_signature");
    }
    if node
        .busy_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok()
    {
        let mut r = api_error(StatusCode::TOO_MANY_REQUESTS, "mempool_full");
        r.headers_mut()
            .insert("retry-after", "1".parse().expect("header value"));
        return r;
    }
    let lost = node
        .loses_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok();
    if !lost {
        let mut ledger = node.ledger.lock().unwrap();
        ledger.next_height += 1;
        let height = Height(ledger.next_height);
        for (i, tx) in txs.iter().enumerate() {
            let h = tx_hash(tx);
            ledger.applied.entry(h).or_insert((height, i as u32));
        }
    }
    let wait = q.get("wait").is_some_and(|v| v == "true");
    let answer_now = wait && !node.behaviour.wait_times_out;
    let entries = txs
        .iter()
        .map(|tx| {
            let hash = tx_hash(tx);
            if Some(tx.nonce.0) == node.behaviour.refuse_nonce {
                return SubmitEntry {
                    hash,
                    admitted: Admitted::Refused,
                    outcome: None,
                    error: Some(ApiError {
                        reason: "nonce_too_far".into(),
                        error: "fake node refuses this nonce".into(),
                        index: None,
                        horizon: None,
                    }),
                };
            }
            SubmitEntry {
                hash,
                admitted: Admitted::Accepted,
                outcome: answer_now.then(|| node.answer(hash)),
                error: None,
            }
        })
        .collect();
    let status = if answer_now {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(SubmitResponse { txs: entries })).into_response()
}

async fn get_tx(State(node): State<Arc<FakeNode>>, Path(hash): Path<String>) -> Response {
    match hash.parse::<Digest>() {
        Ok(h) => Json(node.answer(h)).into_response(),
        Err(_) => api_error(StatusCode::BAD_REQUEST, "malformed"),
    }
}

async fn get_account(State(node): State<Arc<FakeNode>>, Path(key): Path<String>) -> Response {
    let Ok(key) = key.parse::<PublicKey>() else {
        return api_error(StatusCode::BAD_REQUEST, "malformed");
    };
    match node.behaviour.nonce {
        Some(n) => Json(AccountResponse {
            key,
            balance: Amount(100),
            nonce: Nonce(n),
            height: Height(3),
        })
        .into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn get_status(State(node): State<Arc<FakeNode>>) -> Json<StatusResponse> {
    Json(StatusResponse {
        validator: node.id,
        chain_id: node.chain.id().clone(),
        genesis: *node.chain.genesis(),
        height: Height(3),
        view: ViewNumber(0),
        active: true,
        block_hash: Digest::of(b"b"),
        state_digest: Digest::of(b"s"),
        stable_checkpoint: Height(0),
        peers_connected: 3,
        sync: true,
        recovering: false,
        mempool_txs: 0,
        state_root: None,
        snapshot_sync: None,
    })
}

struct Net {
    client: Client,
    nodes: Vec<Arc<FakeNode>>,
    sender: KeyPair,
    genesis: Genesis,
    keys: Vec<KeyPair>,
}

/// Four fake validators with these behaviours; `None` is a validator that is down.
async fn network(behaviours: [Option<Behaviour>; 4], config: ClientConfig) -> Net {
    let keys: Vec<KeyPair> = (0..4).map(|_| KeyPair::generate()).collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let sender = KeyPair::generate();
    let genesis = Genesis {
        chain_id: ChainId::new("mock").unwrap(),
        genesis_time_ms: 0,
        validators: keys
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(i, (k, a))| ValidatorInfo {
                key: k.public(),
                p2p_addr: format!("127.0.0.1:{}", 1 + i),
                api_addr: a.clone(),
            })
            .collect(),
        accounts: vec![GenesisAccount {
            key: sender.public(),
            balance: Amount(1_000_000),
        }],
        params: Params::default(),
    };
    genesis.validate().unwrap();
    let chain = genesis.chain_binding();
    let mut nodes = Vec::new();
    for (i, (listener, b)) in listeners.into_iter().zip(behaviours).enumerate() {
        let Some(behaviour) = b else {
            drop(listener); // connection refused from now on
            continue;
        };
        let node = Arc::new(FakeNode {
            id: ReplicaId(i as u16),
            key: keys[i].clone(),
            chain: chain.clone(),
            behaviour,
            busy_left: AtomicU32::new(behaviour.busy),
            loses_left: AtomicU32::new(behaviour.loses),
            posts: AtomicU64::new(0),
            ledger: Arc::clone(&ledger),
        });
        let app = Router::new()
            .route("/txs", post(post_txs))
            .route("/txs/{hash}", get(get_tx))
            .route("/accounts/{key}", get(get_account))
            .route("/status", get(get_status))
            .with_state(Arc::clone(&node));
        tokio::spawn(async move { axum::serve(listener, app).await });
        nodes.push(node);
    }
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let client = Client::new(genesis.clone(), &urls, config).unwrap();
    Net {
        client,
        nodes,
        sender,
        genesis,
        keys,
    }
}

fn honest() -> Option<Behaviour> {
    Some(Behaviour {
        nonce: Some(0),
        ..Behaviour::default()
    })
}

fn transfer(net: &Net, nonce: u64) -> Transaction {
    net.client
        .sign(
            &net.sender,
            Nonce(nonce),
            Op::Transfer {
                to: KeyPair::generate().public(),
                amount: Amount(10),
            },
        )
        .unwrap()
}

/// POSTs all the fake validators received.
fn total_posts(net: &Net) -> u64 {
    net.nodes
        .iter()
        .map(|n| n.posts.load(Ordering::SeqCst))
        .sum()
}

/// Every result confirms its tx, in order, with result `ok`.
fn assert_all_ok(results: &[Result<stele_client::Confirmed, ClientError>], hashes: &[TxHash]) {
    assert_eq!(results.len(), hashes.len());
    for (r, h) in results.iter().zip(hashes) {
        let c = r.as_ref().unwrap();
        assert_eq!(c.hash, *h);
        assert_eq!(c.result, TxResult::Ok);
    }
}

fn quick() -> ClientConfig {
    ClientConfig {
        wait_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_wait_accepts_f_plus_one_matching_receipts() {
    let net = network([honest(), honest(), honest(), honest()], quick()).await;
    let tx = transfer(&net, 0);
    let c = net.client.submit_and_wait(&tx).await.unwrap();
    assert_eq!(c.hash, tx_hash(&tx));
    assert_eq!(c.result, TxResult::Ok);
    assert!(c.receipts.len() >= 2, "{}", c.receipts.len());
    assert!(c.receipts.iter().all(|r| r.tx_hash == c.hash));
    // The POST goes to the fanout of q = 3 consecutive validators and to nobody else.
    // submit_and_wait returns, aborting the rest, as soon as f+1 receipts match, so the
    // third POST may never leave: between f+1 and q arrive, and the node outside the
    // fanout gets none.
    let fanout = net.client.fanout_nodes(&c.hash, net.client.fanout());
    assert_eq!(fanout.len(), 3);
    let outside = (usize::from(c.hash.0[0]) + 3) % 4;
    let posts: Vec<u64> = net
        .nodes
        .iter()
        .map(|n| n.posts.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        posts[outside], 0,
        "the validator outside the fanout got a POST: {posts:?}"
    );
    let total: u64 = posts.iter().sum();
    assert!((2..=3).contains(&total), "{posts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_validator_and_a_dead_one_do_not_change_the_result() {
    let liar = Some(Behaviour {
        liar: true,
        ..honest().unwrap()
    });
    for layout in [
        [liar, honest(), honest(), None],
        [None, liar, honest(), honest()],
        [honest(), None, liar, honest()],
    ] {
        let net = network(layout, quick()).await;
        let tx = transfer(&net, 0);
        let c = net.client.submit_and_wait(&tx).await.unwrap();
        assert_eq!(c.result, TxResult::Ok);
        assert!(c.receipts.iter().all(|r| r.result == TxResult::Ok));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_polled_from_validators_outside_the_fanout() {
    let times_out = Some(Behaviour {
        wait_times_out: true,
        ..honest().unwrap()
    });
    let config = ClientConfig {
        fanout: Some(1),
        ..quick()
    };
    let net = network([times_out; 4], config).await;
    let tx = transfer(&net, 0);
    let c = net.client.submit_and_wait(&tx).await.unwrap();
    assert_eq!(c.result, TxResult::Ok);
    let posts = total_posts(&net);
    assert_eq!(posts, 1, "only the fanout of one was sent the tx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_validator_is_retried_after_its_retry_after() {
    let busy = Some(Behaviour {
        busy: 1,
        ..honest().unwrap()
    });
    let net = network([busy; 4], quick()).await;
    let tx = transfer(&net, 0);
    let started = Instant::now();
    let c = net.client.submit_and_wait(&tx).await.unwrap();
    assert_eq!(c.result, TxResult::Ok);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_every_validator_refuses_is_reported_with_the_reason() {
    let refuses = Some(Behaviour {
        refuses: true,
        ..honest().unwrap()
    });
    let net = network([refuses; 4], quick()).await;
    let err = net
        .client
        .submit_and_wait(&transfer(&net, 0))
        .await
        .unwrap_err();
    let ClientError::Rejected { errors, .. } = &err else {
        panic!("expected Rejected, got {err}");
    };
    assert!(
        errors
            .iter()
            .all(|e| e.api_reason() == Some("bad_signature")),
        "{err}"
    );
    assert!(err.to_string().contains("bad_signature"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_agreement_times_out_with_what_was_seen() {
    let pending = Some(Behaviour {
        never_final: true,
        ..honest().unwrap()
    });
    let liar = Some(Behaviour {
        liar: true,
        ..honest().unwrap()
    });
    let config = ClientConfig {
        wait_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let net = network([liar, pending, pending, honest()], config).await;
    let started = Instant::now();
    let err = net
        .client
        .submit_and_wait(&transfer(&net, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                have: 1,
                need: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_nonce_is_the_highest_any_validator_reports() {
    let with = |n| {
        Some(Behaviour {
            nonce: n,
            ..Behaviour::default()
        })
    };
    let net = network([with(Some(3)), with(Some(5)), with(None), None], quick()).await;
    let sender = net.sender.public();
    assert_eq!(net.client.next_nonce(&sender).await.unwrap(), Nonce(5));
    let none = network([with(None), with(None), with(None), None], quick()).await;
    assert!(matches!(
        none.client.next_nonce(&sender).await,
        Err(ClientError::NoAccount {
            answered: 3,
            asked: 4,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_transfers_in_batches_are_all_confirmed() {
    let net = network([honest(), honest(), honest(), None], quick()).await;
    let txs: Vec<Transaction> = (0..1000).map(|i| transfer(&net, i)).collect();
    let hashes = net.client.submit_many(&txs).await.unwrap();
    assert_eq!(hashes, txs.iter().map(tx_hash).collect::<Vec<_>>());
    let results = net.client.wait_for(&hashes).await;
    assert_all_ok(&results, &hashes);
}

/// Every validator crashes with the batch still in its mempool. A bulk wait must send the
/// txs again to the validators that say they never saw them, not sit out its whole timeout
/// while nothing commits: CI failed once on exactly that, a load generator silent for 15 s
/// after `faults.rs` restarted all four validators with every batch in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txs_lost_with_every_mempool_are_sent_again_and_confirmed() {
    let lossy = Some(Behaviour {
        loses: 1,
        ..honest().unwrap()
    });
    let config = ClientConfig {
        resend_interval: Duration::from_millis(200),
        ..quick()
    };
    let net = network([lossy; 4], config).await;
    let txs: Vec<Transaction> = (0..50).map(|i| transfer(&net, i)).collect();
    let hashes = net.client.submit_many(&txs).await.unwrap();
    let results = net.client.wait_for_txs(&txs).await;
    assert_all_ok(&results, &hashes);
    let posts = total_posts(&net);
    assert!(posts > 3, "the batch was never sent again ({posts} POSTs)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_unreachable_validators() {
    let net = network([honest(), None, honest(), honest()], quick()).await;
    let answers = net.client.statuses().await;
    assert_eq!(answers.len(), 4);
    assert!(answers[0].1.is_ok());
    let err = answers[1].1.as_ref().unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("validator 1"), "{err}");
    assert_eq!(answers[2].1.as_ref().unwrap().validator, ReplicaId(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tx_refused_inside_a_batch_is_reported_by_index() {
    let picky = Some(Behaviour {
        refuse_nonce: Some(7),
        ..honest().unwrap()
    });
    let net = network([picky; 4], quick()).await;
    let txs: Vec<Transaction> = (0..10).map(|i| transfer(&net, i)).collect();
    let sent = net.client.submit_batch(&txs).await.unwrap();
    assert_eq!(sent.hashes.len(), 10);
    assert_eq!(sent.refused.len(), 1);
    let (index, hash, api) = &sent.refused[0];
    assert_eq!((*index, *hash), (7, tx_hash(&txs[7])));
    assert_eq!(api.reason, "nonce_too_far");
    let err = net.client.submit_many(&txs).await.unwrap_err();
    assert!(
        matches!(err, ClientError::BatchRefused { total: 10, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nonce_too_far"), "{err}");
}

/// A client given the genesis file of another chain under the same id (the network was
/// written again with one more account): no receipt of this network counts for it, and
/// `stele status` says why instead of leaving a user with refusals and timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_another_genesis_under_the_same_id_counts_nothing_and_says_why() {
    let net = network([honest(), honest(), honest(), honest()], quick()).await;
    let mut stale = net.genesis.clone();
    stale.accounts.push(GenesisAccount {
        key: KeyPair::generate().public(),
        balance: Amount(1),
    });
    assert_eq!(stale.chain_id, net.genesis.chain_id);
    let urls: Vec<String> = stale
        .validators
        .iter()
        .map(|v| format!("http://{}", v.api_addr))
        .collect();
    let config = ClientConfig {
        wait_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let client = Client::new(stale.clone(), &urls, config).unwrap();
    assert_ne!(client.chain(), net.client.chain());
    let tx = client
        .sign(
            &net.sender,
            Nonce(0),
            Op::Transfer {
                to: KeyPair::generate().public(),
                amount: Amount(10),
            },
        )
        .unwrap();
    let err = client.submit_and_wait(&tx).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { have: 0, .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("genesis.json");
    std::fs::write(&g, stale.to_json()).unwrap();
    let (code, out, err) = stele(&["--genesis", g.to_str().unwrap(), "status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("with genesis {}", net.genesis.digest()))
            && out.contains("it is another chain's"),
        "{out}"
    );
}

/// A testnet directory as `stele-node testnet init` lays it out, for the fake network.
fn testnet_dir(net: &Net) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("genesis.json"), net.genesis.to_json()).unwrap();
    std::fs::create_dir(dir.path().join("clients")).unwrap();
    net.sender
        .save(&stele_client::testnet_account_key(dir.path(), 0))
        .unwrap();
    dir
}

async fn stele(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_stele"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_exits_0_only_for_ok() {
    let net = network([honest(), honest(), honest(), None], quick()).await;
    let dir = testnet_dir(&net);
    let d = dir.path().to_str().unwrap();
    let to = KeyPair::generate().public().to_hex();
    let (code, out, err) = stele(&[
        "--testnet",
        d,
        "submit",
        "transfer",
        "--to",
        &to,
        "--amount",
        "5",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("applied: ok at height"), "{out}");
    let (code, out, err) = stele(&[
        "--testnet",
        d,
        "--json",
        "submit",
        "put",
        "--key",
        "k",
        "--value",
        "v",
        "--nonce",
        "1",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["result"], "ok");
    assert_eq!(doc["nonce"], 1);

    let (code, out, _) = stele(&["--testnet", d, "status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("unreachable"), "{out}");

    let liar = Some(Behaviour {
        liar: true,
        ..honest().unwrap()
    });
    let lying = network([liar, liar, liar, None], quick()).await;
    let dir = testnet_dir(&lying);
    let d = dir.path().to_str().unwrap();
    let (code, out, err) = stele(&[
        "--testnet",
        d,
        "submit",
        "transfer",
        "--to",
        &to,
        "--amount",
        "5",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("applied: insufficient_funds"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verify_says_included_or_applied_and_fails_on_a_forgery() {
    use stele_types::api::BlockResponse;
    use stele_types::{Block, Commit, CommitCertificate, SignatureEntry};

    let net = network([honest(), honest(), honest(), honest()], quick()).await;
    let txs: Vec<Transaction> = (0..3).map(|i| transfer(&net, i)).collect();
    let block = Block::new(Height(4), 1_700_000_000_000, txs.clone());
    let digest = block.digest();
    let commits = (0..3)
        .map(|i| {
            let replica = ReplicaId(i as u16);
            let c = Signed::sign(
                Commit {
                    view: ViewNumber(0),
                    height: Height(4),
                    digest,
                    replica,
                },
                &net.genesis.chain_binding(),
                &net.keys[i],
            );
            SignatureEntry {
                replica,
                signature: c.signature,
            }
        })
        .collect();
    let resp = BlockResponse {
        height: Height(4),
        digest,
        block,
        certificate: CommitCertificate {
            view: ViewNumber(0),
            height: Height(4),
            digest,
            commits,
        },
        state_digest: Digest::of(b"s"),
    };
    let hash = tx_hash(&txs[1]);
    let leaves: Vec<_> = resp
        .block
        .txs
        .iter()
        .map(|t| (tx_hash(t), TxResult::Ok))
        .collect();
    let receipts: Vec<Receipt> = (0..2)
        .map(|i| {
            signed_receipt(
                &net.genesis.chain_binding(),
                &net.keys[i as usize],
                ReplicaId(i),
                Height(4),
                digest,
                &leaves,
                1,
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(p("genesis.json"), net.genesis.to_json()).unwrap();
    std::fs::write(p("block.json"), serde_json::to_string(&resp).unwrap()).unwrap();
    std::fs::write(p("r.json"), serde_json::to_string(&receipts).unwrap()).unwrap();
    std::fs::write(p("r1.json"), serde_json::to_string(&receipts[..1]).unwrap()).unwrap();
    let h = hash.to_hex();
    let base = ["verify", "--genesis", &p("genesis.json"), "--tx", &h];

    let (code, out, err) = stele(&[&base[..], &["--block", &p("block.json")]].concat()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("included at height 4 (index 1)"), "{out}");

    let (code, out, _) = stele(
        &[
            &base[..],
            &["--block", &p("block.json"), "--receipts", &p("r1.json")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.starts_with("included at height 4"), "{out}");
    assert!(!out.contains("applied:"), "{out}");

    let (code, out, _) = stele(
        &[
            &base[..],
            &["--block", &p("block.json"), "--receipts", &p("r.json")],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("applied: ok at height 4 (index 1)"),
        "{out}"
    );
    let (code, out, _) = stele(
        &[
            &base[..],
            &[
                "--json",
                "--block",
                &p("block.json"),
                "--receipts",
                &p("r.json"),
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["verdict"], "applied", "{out}");
    assert_eq!(doc["result"], "ok", "{out}");
    assert_eq!(doc["receipts"], 2, "{out}");

    let mut forged = resp.clone();
    forged.certificate.commits[0].signature.0[3] ^= 1;
    std::fs::write(p("forged.json"), serde_json::to_string(&forged).unwrap()).unwrap();
    let (code, out, err) = stele(&[&base[..], &["--block", &p("forged.json")]].concat()).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("verification FAILED"), "{err}");
    assert!(err.contains("signature of replica 0"), "{err}");

    std::fs::write(p("junk.json"), "{ not json").unwrap();
    let (code, _, err) = stele(&[&base[..], &["--block", &p("junk.json")]].concat()).await;
    assert_eq!(code, 1);
    assert!(err.contains("junk.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tx_writes_receipts_that_agree_and_account_reads_every_validator() {
    let net = network([honest(), honest(), honest(), None], quick()).await;
    let tx = transfer(&net, 0);
    let c = net.client.submit_and_wait(&tx).await.unwrap();
    let dir = testnet_dir(&net);
    let d = dir.path().to_str().unwrap();
    let file = dir.path().join("r.json");
    let h = c.hash.to_hex();
    let (code, out, err) = stele(&[
        "--testnet",
        d,
        "tx",
        &h,
        "--receipts-out",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 signed receipts agree"), "{out}");
    let written: Vec<Receipt> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written.len(), 3);
    assert!(written
        .iter()
        .all(|r| r.tx_hash == c.hash && r.block.height == c.height && r.proves_leaf()));

    let unknown = Digest::of(b"never sent").to_hex();
    let (code, out, _) = stele(&["--testnet", d, "--json", "tx", &unknown]).await;
    assert_eq!(code, 1, "no agreed outcome is exit 1");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["outcome"].is_null());

    let key = net.sender.public().to_hex();
    let (code, out, err) = stele(&["--testnet", d, "account", &key]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("balance 100, next nonce 0"), "{out}");
}
