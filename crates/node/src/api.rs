//! The HTTP API (axum, JSON): status, blocks, txs with signed receipts, accounts,
//! metrics, health and readiness; `POST /txs` admits client txs.
//!
//! Client mistakes get a 4xx with a JSON [`ApiError`] naming the reason, never a 5xx or a
//! panic. The paths and bodies are `stele_types::api`, shared with the client.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use stele_crypto::{Digest, KeyPair, PublicKey};
use stele_ledger::Refusal;
use stele_store::Store;
use stele_types::api::{
    AccountResponse, Admitted, ApiError, BlockResponse, StatusResponse, SubmitEntry,
    SubmitResponse, TxResponse, TxStatus, BINARY_CONTENT_TYPE, MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY,
};
use stele_types::{
    codec, tx_hash, Genesis, Height, ReplicaId, Transaction, TxResult, ValidatorSet,
};
use tokio::sync::{oneshot, watch};
use tracing::error;

use crate::cache::{VerifiedTxs, Waiters};
use crate::driver::{sign_receipt, Input, Shared};
use crate::metrics::Metrics;
use crate::net::verify_client_txs;

/// Longest `?wait=true` waits for a final outcome before answering 202.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Debug)]
pub struct Api {
    pub genesis: Genesis,
    /// The genesis's validator set and chain binding, derived once: both hash the whole
    /// genesis.
    pub validators: ValidatorSet,
    pub id: ReplicaId,
    pub key: Arc<KeyPair>,
    pub store: Arc<Store>,
    pub engine: SyncSender<Input>,
    pub shared: Arc<Shared>,
    pub cache: Arc<VerifiedTxs>,
    pub waiters: Arc<Waiters>,
    pub metrics: Metrics,
    pub connected: watch::Receiver<BTreeSet<ReplicaId>>,
}

/// The router over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/blocks/{height}", get(block))
        .route("/txs/{hash}", get(tx))
        .route("/txs", axum::routing::post(submit))
        .route("/accounts/{key}", get(account))
        .fallback(not_found)
        .with_state(api)
}

/// An error answer: status, JSON body, and for 429 a `Retry-After`.
#[derive(Debug)]
struct Fail(StatusCode, ApiError);

fn fail(code: StatusCode, reason: &str, error: impl Into<String>) -> Fail {
    Fail(
        code,
        ApiError {
            reason: reason.into(),
            error: error.into(),
            index: None,
        },
    )
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(self.1)).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn internal(e: impl std::fmt::Display) -> Fail {
    error!(error = %e, "store read failed while answering");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "this validator cannot read its store; ask another",
    )
}

async fn not_found() -> Fail {
    fail(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; see GET /status, /blocks/{height}, /txs/{hash}, /accounts/{key}, POST /txs",
    )
}

fn status_now(api: &Api) -> StatusResponse {
    let mut s = api
        .shared
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    s.peers_connected = api.connected.borrow().len() as u32;
    s
}

async fn status(State(api): State<Arc<Api>>) -> Json<StatusResponse> {
    Json(status_now(&api))
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(api): State<Arc<Api>>) -> Result<Json<StatusResponse>, Fail> {
    let s = status_now(&api);
    let vs = &api.validators;
    let peer_height = *api
        .shared
        .peer_height
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let k = api.genesis.params.checkpoint_interval;
    if s.recovering {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "recovering",
            "recovering a wiped data directory",
        ));
    }
    if (s.peers_connected as usize) + 1 < vs.quorum() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_quorum",
            format!(
                "{} peers connected, a quorum needs {}",
                s.peers_connected,
                vs.quorum() - 1
            ),
        ));
    }
    if s.height.0.saturating_add(k) < peer_height.0 {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching_up",
            format!("at height {}, peers at {}", s.height, peer_height),
        ));
    }
    Ok(Json(s))
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

async fn block(
    State(api): State<Arc<Api>>,
    Path(height): Path<String>,
) -> Result<Json<BlockResponse>, Fail> {
    let h = height.parse::<u64>().map_err(|_| {
        fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("height must be a number, found {height:?}"),
        )
    })?;
    let h = Height(h);
    let missing = || {
        fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no committed block at height {h} here (this validator is at {})",
                api.store.latest_height()
            ),
        )
    };
    if h.0 == 0 {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "not_found",
            "height 0 is the genesis state, not a block",
        ));
    }
    let block = api.store.block(h).map_err(internal)?.ok_or_else(missing)?;
    let certificate = api
        .store
        .certificate(h)
        .map_err(internal)?
        .ok_or_else(missing)?;
    let state_digest = api
        .store
        .state_digest(h)
        .map_err(internal)?
        .ok_or_else(missing)?;
    Ok(Json(BlockResponse {
        height: h,
        digest: block.digest(),
        block,
        certificate,
        state_digest,
    }))
}

async fn account(
    State(api): State<Arc<Api>>,
    Path(key): Path<String>,
) -> Result<Json<AccountResponse>, Fail> {
    let k = PublicKey::from_str(&key).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("account key must be 64 hex digits: {e}"),
        )
    })?;
    let height = api.store.latest_height();
    let a = api.store.account_of(&k).map_err(internal)?.ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no account {k} at height {height}"),
        )
    })?;
    Ok(Json(AccountResponse {
        key: k,
        balance: a.balance,
        nonce: a.nonce,
        height,
    }))
}

/// The final outcome of `tx` here, with this validator's signed receipt.
fn final_outcome(api: &Api, tx: &Transaction) -> Result<Option<TxResponse>, Fail> {
    let Some(receipt) = api.store.receipt(tx, api.id).map_err(internal)? else {
        return Ok(None);
    };
    let status = if receipt.result == TxResult::StaleNonce {
        TxStatus::StaleNonce
    } else {
        TxStatus::Applied
    };
    Ok(Some(TxResponse {
        hash: receipt.tx_hash,
        status,
        height: Some(receipt.height),
        index: Some(receipt.index),
        result: Some(receipt.result),
        receipt: Some(sign_receipt(receipt, api.validators.chain(), &api.key)),
        tx: Some(tx.clone()),
    }))
}

async fn ask_pending(api: &Api, hash: Digest) -> Option<stele_consensus::TxClass> {
    let (reply, rx) = oneshot::channel();
    api.engine.try_send(Input::Pending { hash, reply }).ok()?;
    tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .ok()?
        .ok()?
}

async fn tx(
    State(api): State<Arc<Api>>,
    Path(hash): Path<String>,
) -> Result<Json<TxResponse>, Fail> {
    let h = Digest::from_str(&hash).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("tx hash must be 64 hex digits: {e}"),
        )
    })?;
    if let Some((t, _)) = api.store.tx(&h).map_err(internal)? {
        if let Some(r) = final_outcome(&api, &t)? {
            return Ok(Json(r));
        }
    }
    let body = api.cache.get(&h).map(|v| v.into_signed());
    if let Some(t) = &body {
        if let Some(r) = final_outcome(&api, t)? {
            return Ok(Json(r));
        }
    }
    let status = match ask_pending(&api, h).await {
        Some(stele_consensus::TxClass::Executable) => TxStatus::Pending,
        Some(stele_consensus::TxClass::Gapped) => TxStatus::Gapped,
        None => TxStatus::Unknown,
    };
    Ok(Json(TxResponse {
        status,
        tx: body,
        ..TxResponse::unknown(h)
    }))
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Transaction>),
    One(Box<Transaction>),
}

fn refusal(r: &Refusal) -> (StatusCode, &'static str) {
    match r {
        Refusal::UnknownSender => (StatusCode::BAD_REQUEST, "unknown_sender"),
        Refusal::NonceUsed { .. } => (StatusCode::BAD_REQUEST, "nonce_used"),
        Refusal::NonceTooFar { .. } => (StatusCode::BAD_REQUEST, "nonce_too_far"),
        Refusal::SenderQuotaFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "sender_quota"),
        Refusal::MempoolFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "mempool_full"),
    }
}

async fn submit(
    State(api): State<Arc<Api>>,
    Query(q): Query<SubmitQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Fail> {
    let bytes = axum::body::to_bytes(body, MAX_SUBMIT_BODY)
        .await
        .map_err(|_| {
            api.metrics.reject_tx("too_large");
            fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("body larger than {MAX_SUBMIT_BODY} bytes"),
            )
        })?;
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(BINARY_CONTENT_TYPE));
    let parsed: Result<Vec<Transaction>, String> = if binary {
        codec::decode(&bytes, MAX_SUBMIT_BODY).map_err(|e| e.to_string())
    } else {
        match serde_json::from_slice::<OneOrMany>(&bytes) {
            Ok(OneOrMany::Many(v)) => Ok(v),
            Ok(OneOrMany::One(t)) => Ok(vec![*t]),
            Err(e) => Err(e.to_string()),
        }
    };
    let txs = parsed.map_err(|e| {
        api.metrics.reject_tx("malformed");
        fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "expected a signed tx or an array of them (JSON), or {BINARY_CONTENT_TYPE}: {e}"
            ),
        )
    })?;
    if txs.is_empty() || txs.len() > MAX_SUBMIT_BATCH {
        api.metrics.reject_tx("malformed");
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "a submission holds 1..={MAX_SUBMIT_BATCH} txs, found {}",
                txs.len()
            ),
        ));
    }
    let single = txs.len() == 1;
    let mut errors: Vec<Option<Fail>> = Vec::with_capacity(txs.len());
    for t in &txs {
        errors.push(
            stele_types::tx::check_well_formed(t, &api.genesis.chain_id)
                .err()
                .map(|e| {
                    let reason = match e {
                        stele_types::TxError::WrongChain { .. } => "wrong_chain",
                        stele_types::TxError::TooLarge { .. } => "too_large",
                        _ => "malformed",
                    };
                    fail(StatusCode::BAD_REQUEST, reason, e.to_string())
                }),
        );
    }
    // Signatures, batched, off the async threads; a bad one is refused alone.
    let verified = {
        let api2 = api.clone();
        let candidates: Vec<(usize, Transaction)> = txs
            .iter()
            .enumerate()
            .filter(|(i, _)| errors[*i].is_none())
            .map(|(i, t)| (i, t.clone()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let (idx, batch): (Vec<usize>, Vec<Transaction>) = candidates.into_iter().unzip();
            let verdicts = verify_client_txs(
                &api2.genesis,
                &api2.validators,
                &api2.cache,
                &api2.metrics,
                &batch,
            );
            let mut good = Vec::new();
            let mut bad = Vec::new();
            for (i, v) in idx.into_iter().zip(verdicts) {
                match v {
                    Some(v) => good.push((i, v)),
                    None => bad.push(i),
                }
            }
            (good, bad)
        })
        .await
        .map_err(internal)?
    };
    let (good, bad) = verified;
    for i in bad {
        errors[i] = Some(fail(
            StatusCode::BAD_REQUEST,
            "bad_signature",
            format!(
                "signature does not verify for this sender and tx on chain {}: a tx is \
                 signed for the chain's genesis too, so a client must hold this chain's \
                 genesis file (GET /status shows its digest)",
                api.validators.chain()
            ),
        ));
    }
    let mut admitted: Vec<Option<Admitted>> = vec![None; txs.len()];
    if !good.is_empty() {
        let (idx, vtxs): (Vec<usize>, Vec<_>) = good.into_iter().unzip();
        let (reply, rx) = oneshot::channel();
        match api.engine.try_send(Input::Submit { txs: vtxs, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                api.metrics.reject_tx("overloaded");
                return Err(fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "the validator's engine queue is full; retry shortly",
                ));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "stopping",
                    "the validator is stopping",
                ))
            }
        }
        let results = rx.await.map_err(|_| {
            fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the validator is stopping",
            )
        })?;
        for (i, r) in idx.into_iter().zip(results) {
            match r {
                Ok(a) => admitted[i] = Some(a),
                Err(refused) => {
                    let (code, reason) = refusal(&refused);
                    errors[i] = Some(fail(code, reason, refused.to_string()));
                }
            }
        }
    }
    for e in errors.iter().flatten() {
        api.metrics.reject_tx(&e.1.reason);
    }
    if single {
        if let Some(mut e) = errors.first_mut().and_then(Option::take) {
            e.1.index = Some(0);
            return Err(e);
        }
    }
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut entries = Vec::with_capacity(txs.len());
    let mut all_final = true;
    for (i, t) in txs.iter().enumerate() {
        let hash = tx_hash(t);
        let entry = match (&errors[i], admitted[i]) {
            (Some(e), _) => SubmitEntry {
                hash,
                admitted: Admitted::Refused,
                outcome: None,
                error: Some(ApiError {
                    index: Some(i),
                    ..e.1.clone()
                }),
            },
            (None, Some(a)) => {
                let outcome = if q.wait {
                    wait_final(&api, t, deadline).await?
                } else {
                    None
                };
                all_final &= outcome.is_some();
                SubmitEntry {
                    hash,
                    admitted: a,
                    outcome,
                    error: None,
                }
            }
            (None, None) => SubmitEntry {
                hash,
                admitted: Admitted::Refused,
                outcome: None,
                error: Some(ApiError {
                    reason: "internal".into(),
                    error: "no admission result".into(),
                    index: Some(i),
                }),
            },
        };
        entries.push(entry);
    }
    let code = if q.wait && all_final {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(SubmitResponse { txs: entries })).into_response())
}

/// Waits until `tx` has a final outcome here, or the deadline.
async fn wait_final(
    api: &Api,
    tx: &Transaction,
    deadline: Instant,
) -> Result<Option<TxResponse>, Fail> {
    let Some(notify) = api.waiters.register(tx.sender, tx.nonce) else {
        return final_outcome(api, tx);
    };
    let out = loop {
        // Armed before the check, so a commit between the check and the wait still wakes
        // us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match final_outcome(api, tx) {
            Ok(Some(r)) => break Ok(Some(r)),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            break Ok(None);
        }
        // Re-check at least every second: a block committed by state transfer wakes
        // nobody twice, and a missed wake-up must cost a second, not the whole wait.
        let _ = tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), notified).await;
    };
    api.waiters.unregister(tx.sender, tx.nonce);
    out
}
