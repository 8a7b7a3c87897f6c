//! The HTTP API (axum, JSON): status, blocks, txs with signed receipts, accounts,
//! metrics, health and readiness; `POST /txs` admits client txs.
//!
//! Client mistakes get a 4xx with a JSON [`ApiError`] naming the reason, never a 5xx or a
//! panic. The paths and bodies are `stele_types::api`, shared with the client.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body_util::BodyExt;
use stele_crypto::{Digest, KeyPair, PublicKey, Verified};
use stele_ledger::{admit, Admission, Refusal};
use stele_store::{ChunkAnswer, PieceAnswer, Store, StoreError, MIN_SERVED_PIECE_BITS};
use stele_types::api::{
    decode_submit_body, AccountResponse, Admitted, ApiError, BinarySubmitResponse, BlockResponse,
    CheckpointResponse, StatusResponse, SubmitBodyError, SubmitEntry, SubmitResponse, TxResponse,
    TxStatus, BINARY_CONTENT_TYPE, MAX_SUBMIT_BODY,
};
use stele_types::snapshot::{ChunkRange, PieceId, MAX_CHUNK_BYTES, MAX_PIECE_BITS};
use stele_types::{
    tx_hash, Genesis, Height, Nonce, ReplicaId, Transaction, TxBody, TxHash, TxResult, ValidatorSet,
};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::error;

use crate::cache::{VerifiedTxs, Waiters};
use crate::driver::{Input, Shared, TxInputs, TxQueueError};
use crate::metrics::Metrics;
use crate::pool::{TxVerdicts, TxWork, VerifyPool, CLIENT_CHUNK};
use crate::receipts::BlockReceipts;

/// Longest `?wait=true` waits for a final outcome before answering 202.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Most requests doing work at once (store reads, signature checks, admission); more are
/// answered 503. A `?wait=true` request gives its slot back before it waits.
pub const MAX_IN_FLIGHT: usize = 256;
/// Most request-body bytes held in memory at once, over all requests.
pub const BODY_BUDGET: usize = 64 << 20;
/// The body budget's unit: a request reserves its declared length in these.
const BODY_UNIT: usize = 16 << 10;
/// Longest a request waits for room in the body budget before a 503.
const BODY_BUDGET_WAIT: Duration = Duration::from_secs(5);
/// Longest a request body may take to arrive once its head is read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// The engine thread's tx queue (never the consensus queue).
    pub engine: TxInputs,
    pub shared: Arc<Shared>,
    pub cache: Arc<VerifiedTxs>,
    pub waiters: Arc<Waiters>,
    /// This validator's block receipts, which every tx receipt is proven against.
    pub receipts: Arc<BlockReceipts>,
    pub metrics: Metrics,
    pub connected: watch::Receiver<BTreeSet<ReplicaId>>,
    /// Slots for requests doing work ([`MAX_IN_FLIGHT`]).
    pub in_flight: Arc<Semaphore>,
    /// Body bytes held, in [`BODY_UNIT`]s ([`BODY_BUDGET`]).
    pub bodies: Arc<Semaphore>,
    /// Where client txs' signatures are checked: after the consensus work waiting.
    pub pool: VerifyPool,
}

impl Api {
    /// The limits' semaphores, full.
    pub fn limits() -> (Arc<Semaphore>, Arc<Semaphore>) {
        (
            Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            Arc::new(Semaphore::new(BODY_BUDGET / BODY_UNIT)),
        )
    }
}

/// The router over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/blocks/{height}", get(block))
        .route("/checkpoint", get(checkpoint))
        .route("/snapshot", get(snapshot_manifest))
        .route("/snapshot/{height}/{first}/{bits}", get(snapshot_chunk))
        .route(
            "/snapshot/{height}/piece/{bucket}/{bits}/{index}",
            get(snapshot_piece),
        )
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
            horizon: None,
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
        "no such path; see GET /status, /blocks/{height}, /txs/{hash}, /accounts/{key}, /checkpoint, /snapshot, POST /txs",
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
    let disk = {
        let path = api.store.path().to_owned();
        tokio::task::spawn_blocking(move || stele_types::proc::dir_bytes(&path))
            .await
            .ok()
            .flatten()
    };
    if let Some(bytes) = disk {
        api.metrics
            .store_disk_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    api.metrics
        .snapshots_skipped
        .set(i64::try_from(api.store.snapshots_skipped()).unwrap_or(i64::MAX));
    api.metrics
        .snapshot_write
        .set(api.store.snapshot_writes().last.as_secs_f64());
    if let Ok(h) = api.store.horizon() {
        api.metrics
            .horizon
            .set(i64::try_from(h.0).unwrap_or(i64::MAX));
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response()
}

/// A slot for a request that does work, or a 503: past [`MAX_IN_FLIGHT`], more work
/// would only queue behind itself.
fn slot(api: &Api) -> Result<OwnedSemaphorePermit, Fail> {
    api.in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy(api))
}

fn busy(api: &Api) -> Fail {
    api.metrics.refuse_http("busy");
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "this validator is answering too many requests; retry shortly or ask another",
    )
}

/// Runs blocking work (RocksDB reads, receipt signing) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> Result<T, Fail> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

/// The latest stable checkpoint certificate with the opening of its state digest.
async fn checkpoint(State(api): State<Arc<Api>>) -> Result<Json<CheckpointResponse>, Fail> {
    let _slot = slot(&api)?;
    blocking(move || {
        let none = |why: String| fail(StatusCode::NOT_FOUND, "not_found", why);
        let certificate = api
            .store
            .stable_checkpoint()
            .map_err(internal)?
            .ok_or_else(|| none("no stable checkpoint here yet".into()))?;
        let opening = api
            .store
            .state_opening(certificate.height)
            .map_err(internal)?
            .ok_or_else(|| {
                none(format!(
                    "the stable checkpoint is at height {}, which this validator has not \
                     executed (or executed before it kept openings)",
                    certificate.height
                ))
            })?;
        Ok(Json(CheckpointResponse {
            certificate,
            opening,
        }))
    })
    .await
}

/// The snapshot this validator serves (issue 24): the manifest of its latest stable
/// checkpoint, when it keeps the state there. Binary (the codec's encoding): a syncing
/// validator decodes and verifies it against its genesis, trusting nothing else.
async fn snapshot_manifest(State(api): State<Arc<Api>>) -> Result<Response, Fail> {
    let _slot = slot(&api)?;
    blocking(move || {
        let m = api
            .store
            .snapshot_manifest()
            .map_err(internal)?
            .ok_or_else(|| {
                fail(
                    StatusCode::NOT_FOUND,
                    "no_snapshot",
                    "this validator keeps no snapshot at its stable checkpoint yet",
                )
            })?;
        Ok(binary(stele_types::codec::encode(&m)))
    })
    .await
}

/// One chunk of the snapshot at `height`: 404 `no_snapshot` when it is not kept (any
/// more), 413 `too_large` when the range must be asked in halves.
async fn snapshot_chunk(
    State(api): State<Arc<Api>>,
    Path((height, first, bits)): Path<(String, String, String)>,
) -> Result<Response, Fail> {
    let range = match (
        height.parse::<u64>(),
        first.parse::<u16>(),
        bits.parse::<u8>(),
    ) {
        (Ok(h), Ok(first), Ok(bits)) => ChunkRange::new(first, bits).map(|r| (Height(h), r)),
        _ => None,
    };
    let Some((h, range)) = range else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "expected /snapshot/{{height}}/{{first bucket}}/{{bits}} with first a multiple \
                 of 2^bits and bits <= 16, found /snapshot/{height}/{first}/{bits}"
            ),
        ));
    };
    let _slot = slot(&api)?;
    blocking(
        move || match api.store.snapshot_chunk(h, range).map_err(internal)? {
            ChunkAnswer::Chunk(c) => Ok(binary(stele_types::codec::encode(&c))),
            ChunkAnswer::TooLarge => Err(fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "{range} holds more than {MAX_CHUNK_BYTES} bytes; ask for its halves \
                     (a single bucket: for its pieces)"
                ),
            )),
            ChunkAnswer::Unavailable => Err(fail(
                StatusCode::NOT_FOUND,
                "no_snapshot",
                format!("no snapshot is kept at height {h}"),
            )),
        },
    )
    .await
}

/// Piece `index` (of 2^`bits` entries) of one bucket of the snapshot at `height`, for a
/// bucket too large for one chunk: 404 `no_snapshot` when that height is not kept, 404
/// `no_piece` past the bucket's last piece, 400 when `bits` is outside 6..=11.
async fn snapshot_piece(
    State(api): State<Arc<Api>>,
    Path((height, bucket, bits, index)): Path<(String, String, String, String)>,
) -> Result<Response, Fail> {
    let id = match (
        height.parse::<u64>(),
        bucket.parse::<u16>(),
        bits.parse::<u8>(),
        index.parse::<u32>(),
    ) {
        (Ok(h), Ok(bucket), Ok(bits), Ok(index)) => Some((
            Height(h),
            PieceId {
                bucket,
                bits,
                index,
            },
        ))
        .filter(|(_, id)| id.is_valid() && id.bits >= MIN_SERVED_PIECE_BITS),
        _ => None,
    };
    let Some((h, id)) = id else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "expected /snapshot/{{height}}/piece/{{bucket}}/{{bits}}/{{index}} with \
                 {MIN_SERVED_PIECE_BITS} <= bits <= {MAX_PIECE_BITS}, found /snapshot/{height}/piece/{bucket}/{bits}/{index}"
            ),
        ));
    };
    let _slot = slot(&api)?;
    blocking(
        move || match api.store.snapshot_piece(h, id).map_err(internal)? {
            PieceAnswer::Piece(p) => Ok(binary(stele_types::codec::encode(&p))),
            PieceAnswer::NoSuchPiece => Err(fail(
                StatusCode::NOT_FOUND,
                "no_piece",
                format!("the bucket has no {id} at height {h}"),
            )),
            PieceAnswer::Unavailable => Err(fail(
                StatusCode::NOT_FOUND,
                "no_snapshot",
                format!("no snapshot is kept at height {h}"),
            )),
        },
    )
    .await
}

fn binary(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(BINARY_CONTENT_TYPE),
        )],
        bytes,
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
    if h.0 == 0 {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "not_found",
            "height 0 is the genesis state, not a block",
        ));
    }
    let _slot = slot(&api)?;
    blocking(move || {
        let horizon = api.store.horizon().map_err(internal)?;
        if h < horizon {
            let mut f = fail(
                StatusCode::GONE,
                "pruned",
                format!(
                    "this validator keeps blocks from height {horizon} on (it started from a \
                     snapshot there); ask another validator for height {h}"
                ),
            );
            f.1.horizon = Some(horizon);
            return Err(f);
        }
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
    })
    .await
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
    let _slot = slot(&api)?;
    blocking(move || {
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
    })
    .await
}

/// What a final outcome is looked up by: a waiter keeps this, not the tx's body.
#[derive(Debug, Clone, Copy)]
struct TxKey {
    hash: TxHash,
    sender: PublicKey,
    nonce: Nonce,
}

impl TxKey {
    fn of(tx: &Transaction) -> TxKey {
        TxKey::hashed(tx, tx_hash(tx))
    }

    fn hashed(tx: &Transaction, hash: TxHash) -> TxKey {
        TxKey {
            hash,
            sender: tx.sender,
            nonce: tx.nonce,
        }
    }
}

/// The final outcome of a tx here, with this validator's receipt (blocking: store reads;
/// the block receipt was signed once when the block executed). `body`: the tx, echoed in
/// the answer when the caller has it. A `?wait` answer does not echo it: the client sent
/// it, and reading it back meant decoding its whole block for every tx.
fn final_outcome(
    api: &Api,
    key: TxKey,
    body: Option<Transaction>,
) -> Result<Option<TxResponse>, Fail> {
    let Some(leaf) = api
        .store
        .final_leaf_of(&key.hash, &key.sender, key.nonce)
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let receipt = api.receipts.receipt(&api.store, &leaf).map_err(internal)?;
    let (status, used_by) = if leaf.outcome == TxResult::StaleNonce {
        // Rare (a client's replaced tx), so reading the block back is fine here.
        let used_by = api
            .store
            .block(leaf.height)
            .map_err(internal)?
            .and_then(|b| b.txs.get(leaf.index as usize).cloned());
        (TxStatus::StaleNonce, used_by)
    } else {
        (TxStatus::Applied, None)
    };
    Ok(Some(TxResponse {
        hash: key.hash,
        status,
        height: Some(leaf.height),
        index: Some(leaf.index),
        result: Some(leaf.outcome),
        receipt: Some(receipt),
        used_by,
        tx: body,
        horizon: None,
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
    let _slot = slot(&api)?;
    let found = {
        let api = api.clone();
        blocking(move || {
            let body = match api.store.tx(&h).map_err(internal)? {
                Some((t, _)) => Some(t),
                None => api.cache.get(&h).map(|v| v.into_signed()),
            };
            let Some(t) = body else {
                return Ok(Err(None));
            };
            match final_outcome(&api, TxKey::of(&t), Some(t.clone()))? {
                Some(r) => Ok(Ok(r)),
                None => Ok(Err(Some(t))),
            }
        })
        .await?
    };
    let body = match found {
        Ok(r) => return Ok(Json(r)),
        Err(body) => body,
    };
    let status = match ask_pending(&api, h).await {
        Some(stele_consensus::TxClass::Executable) => TxStatus::Pending,
        Some(stele_consensus::TxClass::Gapped) => TxStatus::Gapped,
        None => TxStatus::Unknown,
    };
    // An unknown tx may lie below the history this validator keeps: say where it starts.
    let horizon = match status {
        TxStatus::Unknown => api.store.horizon().ok().filter(|h| *h > Height(1)),
        _ => None,
    };
    Ok(Json(TxResponse {
        status,
        tx: body,
        horizon,
        ..TxResponse::unknown(h)
    }))
}

/// `?wait=true|false` (also `1`/`0`, or bare `wait`); other parameters are ignored.
fn parse_wait(query: Option<&str>) -> Result<bool, String> {
    let mut wait = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == "wait" {
            wait = match v {
                "true" | "1" | "" => true,
                "false" | "0" => false,
                other => return Err(format!("wait must be true or false, found {other:?}")),
            };
        }
    }
    Ok(wait)
}

/// Admission's checks that need no signature, against committed state: a sender with no
/// account, or a nonce past its window, is refused before its signature is checked, so
/// txs from throwaway keys cost a store read each, not a signature check. (Committed state
/// only moves forward: a tx refused here would be refused by admission a moment later, or
/// is accepted when the client retries after its account exists.) Returns the txs left
/// to verify, and the refused ones.
#[allow(clippy::type_complexity)]
fn cheap_checks(
    api: &Api,
    candidates: Vec<(usize, Transaction)>,
) -> Result<(Vec<(usize, Transaction)>, Vec<(usize, Refusal)>), StoreError> {
    let mut keep = Vec::with_capacity(candidates.len());
    let mut refused = Vec::new();
    for (i, t) in candidates {
        let account = api.store.account_of(&t.sender)?;
        let ctx = Admission {
            account,
            next_nonce: account.map_or(Nonce(0), |a| a.nonce),
            // Not known off the engine thread; admission checks them.
            sender_pending: 0,
            mempool_len: 0,
        };
        match admit(t.nonce, &ctx, &api.genesis.params) {
            Err(r @ (Refusal::UnknownSender | Refusal::NonceTooFar { .. })) => refused.push((i, r)),
            // A used nonce may be this very tx, committed: admission answers with its
            // receipt.
            _ => keep.push((i, t)),
        }
    }
    Ok((keep, refused))
}

/// Good and bad signatures, and the txs refused from committed state first.
type ChunkVerdicts = (
    Vec<(usize, Verified<TxBody>)>,
    Vec<usize>,
    Vec<(usize, Refusal)>,
);

/// One chunk of a request's txs on the pool: cheap checks and the verified cache, then
/// the signatures left (in one batch with other tx work queued beside it), then the
/// verdicts back to the request. The good ones reach the cache only if admitted.
struct ClientChunk {
    api: Arc<Api>,
    /// The request's tx hashes, by the candidates' index.
    hashes: Arc<[TxHash]>,
    candidates: Vec<(usize, Transaction)>,
    good: Vec<(usize, Verified<TxBody>)>,
    early: Vec<(usize, Refusal)>,
    /// The candidates whose signatures are being checked, in order.
    checking: Vec<usize>,
    failed: Option<StoreError>,
    reply: Option<oneshot::Sender<Result<ChunkVerdicts, StoreError>>>,
}

impl ClientChunk {
    fn new(
        api: Arc<Api>,
        hashes: Arc<[TxHash]>,
        candidates: Vec<(usize, Transaction)>,
        reply: oneshot::Sender<Result<ChunkVerdicts, StoreError>>,
    ) -> ClientChunk {
        ClientChunk {
            api,
            hashes,
            candidates,
            good: Vec::new(),
            early: Vec::new(),
            checking: Vec::new(),
            failed: None,
            reply: Some(reply),
        }
    }
}

impl TxWork for ClientChunk {
    fn most_txs(&self) -> usize {
        self.candidates.len()
    }

    fn prepare(&mut self) -> Vec<Transaction> {
        let (keep, early) = match cheap_checks(&self.api, std::mem::take(&mut self.candidates)) {
            Ok(k) => k,
            Err(e) => {
                self.failed = Some(e);
                return Vec::new();
            }
        };
        self.early = early;
        let mut fresh = Vec::with_capacity(keep.len());
        for (i, t) in keep {
            match self.api.cache.get(&self.hashes[i]) {
                Some(v) => self.good.push((i, v)),
                None => {
                    self.checking.push(i);
                    fresh.push(t);
                }
            }
        }
        fresh
    }

    fn finish(mut self: Box<Self>, verdicts: TxVerdicts) {
        debug_assert_eq!(verdicts.len(), self.checking.len());
        let out = match self.failed.take() {
            Some(e) => Err(e),
            None => {
                let mut bad = Vec::new();
                for (i, v) in std::mem::take(&mut self.checking).into_iter().zip(verdicts) {
                    match v {
                        Some(v) => self.good.push((i, v)),
                        None => bad.push(i),
                    }
                }
                // In the request's order: admission takes a sender's nonces in turn.
                self.good.sort_unstable_by_key(|(i, _)| *i);
                Ok((
                    std::mem::take(&mut self.good),
                    bad,
                    std::mem::take(&mut self.early),
                ))
            }
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(out);
        }
    }
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

fn too_large(api: &Api) -> Fail {
    api.metrics.reject_tx("too_large");
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body larger than {MAX_SUBMIT_BODY} bytes"),
    )
}

/// Reads a request body within the limits: its declared length first (413 at once when
/// too large), room for it in the body budget (503 after [`BODY_BUDGET_WAIT`]), then
/// the bytes within [`BODY_TIMEOUT`] (408). The permit returned holds the budget for
/// as long as the bytes are kept.
async fn read_body(
    api: &Api,
    headers: &HeaderMap,
    body: Body,
) -> Result<(bytes::Bytes, OwnedSemaphorePermit), Fail> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        "content-length is not a number",
                    )
                })?,
        ),
    };
    if declared.is_some_and(|n| n > MAX_SUBMIT_BODY as u64) {
        return Err(too_large(api));
    }
    // A body of unknown length may be as large as the limit.
    let reserve = declared.map_or(MAX_SUBMIT_BODY, |n| n as usize);
    let units = reserve.div_ceil(BODY_UNIT).max(1) as u32;
    let permit = tokio::time::timeout(
        BODY_BUDGET_WAIT,
        api.bodies.clone().acquire_many_owned(units),
    )
    .await
    .map_err(|_| busy(api))?
    .map_err(|_| busy(api))?;
    let limit = reserve.min(MAX_SUBMIT_BODY);
    let read = async {
        let mut body = body;
        let mut buf = bytes::BytesMut::with_capacity(reserve.min(1 << 20));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "malformed",
                    format!("reading the body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large(api));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => Ok((b, permit)),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            api.metrics.refuse_http("body_timeout");
            Err(fail(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
            ))
        }
    }
}

async fn submit(
    State(api): State<Arc<Api>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Fail> {
    let wait = parse_wait(query.as_deref()).map_err(|e| {
        api.metrics.refuse_http("bad_query");
        fail(StatusCode::BAD_REQUEST, "bad_query", e)
    })?;
    let slot = slot(&api)?;
    let (bytes, budget) = read_body(&api, &headers, body).await?;
    let binary_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(BINARY_CONTENT_TYPE));
    // Only a client that asks for it gets the binary answer; errors stay JSON.
    let binary_answer = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(BINARY_CONTENT_TYPE));
    let parsed = decode_submit_body(&bytes, binary_body);
    // The txs own their bytes now: the body and its share of the budget go.
    drop(bytes);
    drop(budget);
    let txs = parsed.map_err(|e| {
        if matches!(e, SubmitBodyError::TooLarge { .. }) {
            return too_large(&api);
        }
        api.metrics.reject_tx("malformed");
        fail(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "expected a signed tx or an array of them (JSON), or {BINARY_CONTENT_TYPE}: {e}"
            ),
        )
    })?;
    let single = txs.len() == 1;
    // Each tx hashed and sized once, here; every step below reads these.
    let (hashes, lens): (Vec<TxHash>, Vec<usize>) =
        txs.iter().map(stele_types::tx::tx_hash_and_len).unzip();
    let hashes: Arc<[TxHash]> = hashes.into();
    let mut errors: Vec<Option<Fail>> = Vec::with_capacity(txs.len());
    for (t, len) in txs.iter().zip(lens) {
        errors.push(
            stele_types::tx::check_well_formed_sized(t, len)
                .err()
                .map(|e| {
                    let reason = match e {
                        stele_types::TxError::TooLarge { .. } => "too_large",
                        _ => "malformed",
                    };
                    fail(StatusCode::BAD_REQUEST, reason, e.to_string())
                }),
        );
    }
    // Held until admission has answered, so relayed copies arriving meanwhile are not
    // checked a second time (the verified cache has them once admitted).
    let hold = api.cache.hold(
        hashes
            .iter()
            .enumerate()
            .filter(|(i, _)| errors[*i].is_none())
            .map(|(_, h)| *h)
            .collect(),
    );
    // Signatures, batched, on the verification pool in chunks (consensus work waiting
    // is taken between two chunks); a bad one is refused alone.
    let verified = {
        let candidates: Vec<(usize, Transaction)> = txs
            .iter()
            .enumerate()
            .filter(|(i, _)| errors[*i].is_none())
            .map(|(i, t)| (i, t.clone()))
            .collect();
        let (mut good, mut bad, mut early) = (Vec::new(), Vec::new(), Vec::new());
        let mut rest = candidates.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<(usize, Transaction)> = rest.by_ref().take(CLIENT_CHUNK).collect();
            let (api2, hashes2) = (api.clone(), hashes.clone());
            let (g, b, e) = api
                .pool
                .client(move |reply| Box::new(ClientChunk::new(api2, hashes2, chunk, reply)))
                .await
                .map_err(|e| {
                    api.metrics.refuse_http("busy");
                    fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        format!("{e}; retry shortly"),
                    )
                })?
                .map_err(internal)?;
            good.extend(g);
            bad.extend(b);
            early.extend(e);
        }
        (good, bad, early)
    };
    let (good, bad, early) = verified;
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
    for (i, refused) in early {
        let (code, reason) = refusal(&refused);
        errors[i] = Some(fail(code, reason, refused.to_string()));
    }
    let mut admitted: Vec<Option<Admitted>> = vec![None; txs.len()];
    if !good.is_empty() {
        let (idx, vtxs): (Vec<usize>, Vec<_>) =
            good.into_iter().map(|(i, v)| (i, (hashes[i], v))).unzip();
        let (reply, rx) = oneshot::channel();
        match api.engine.try_send(Input::Submit { txs: vtxs, reply }) {
            Ok(()) => {}
            Err(TxQueueError::Full) => {
                api.metrics.reject_tx("overloaded");
                return Err(fail(
                    StatusCode::TOO_MANY_REQUESTS,
                    "overloaded",
                    "the validator's engine queue is full; retry shortly",
                ));
            }
            Err(TxQueueError::Stopped) => {
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
    drop(hold);
    for e in errors.iter().flatten() {
        api.metrics.reject_tx(&e.1.reason);
    }
    if single {
        if let Some(mut e) = errors.first_mut().and_then(Option::take) {
            e.1.index = Some(0);
            return Err(e);
        }
    }
    // Waiting is bounded by the waiters, not by the work slots; and a waiter keeps only
    // what finds its outcome, not the request's txs.
    drop(slot);
    let keys: Vec<TxKey> = txs
        .iter()
        .zip(hashes.iter())
        .map(|(t, h)| TxKey::hashed(t, *h))
        .collect();
    drop(txs);
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut outcomes: Vec<Option<TxResponse>> = if wait {
        let admitted_keys = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| errors[*i].is_none() && admitted[*i].is_some())
            .map(|(i, k)| (i, *k))
            .collect();
        wait_final(&api, admitted_keys, keys.len(), deadline).await?
    } else {
        Vec::new()
    };
    let mut entries = Vec::with_capacity(keys.len());
    let mut all_final = true;
    for (i, key) in keys.into_iter().enumerate() {
        let hash = key.hash;
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
                let outcome = outcomes.get_mut(i).and_then(Option::take);
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
                    horizon: None,
                }),
            },
        };
        entries.push(entry);
    }
    let code = if wait && all_final {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let resp = SubmitResponse { txs: entries };
    if binary_answer {
        match BinarySubmitResponse::from_response(&resp) {
            Ok(b) => {
                let mut r = binary(stele_types::codec::encode(&b));
                *r.status_mut() = code;
                return Ok(r);
            }
            // Every outcome above is final with its receipt; should one not be, the
            // client still gets the whole answer, as JSON.
            Err(e) => tracing::warn!(error = %e, "binary answer not built, answering JSON"),
        }
    }
    Ok((code, Json(resp)).into_response())
}

/// Waits until each of `keys` (a request's admitted txs, by index among its `n`) has a
/// final outcome here, or the deadline, in order: one tx at a time is waited on, and
/// each wake-up looks up, in one blocking task, every tx from it on up to the first that
/// is not final yet (txs of one request mostly commit in one block). A task per tx put
/// 64 blocking tasks, with their thread wake-ups, behind every batch of 64. When too
/// many wait on a tx (or in all), answers with what is known now: the client asks again
/// later.
async fn wait_final(
    api: &Arc<Api>,
    keys: Vec<(usize, TxKey)>,
    n: usize,
    deadline: Instant,
) -> Result<Vec<Option<TxResponse>>, Fail> {
    let mut out: Vec<Option<TxResponse>> = (0..n).map(|_| None).collect();
    // The final outcomes of `keys` in order, up to the first not final (or all of them).
    let look = |api: &Arc<Api>, keys: &[(usize, TxKey)], all: bool| {
        let (api, keys) = (api.clone(), keys.to_vec());
        blocking(move || {
            let mut found = Vec::with_capacity(keys.len());
            for (i, key) in keys {
                match final_outcome(&api, key, None)? {
                    Some(r) => found.push((i, r)),
                    None if all => {}
                    None => break,
                }
            }
            Ok(found)
        })
    };
    let mut pending: &[(usize, TxKey)] = &keys;
    while let Some(&(_, first)) = pending.first() {
        let Some(notify) = api.waiters.register(first.sender, first.nonce) else {
            api.metrics.refuse_http("waiters_full");
            for (i, r) in look(api, pending, true).await? {
                out[i] = Some(r);
            }
            return Ok(out);
        };
        // Armed before the check, so a commit between the check and the wait still wakes
        // us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let found = look(api, pending, false).await;
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                api.waiters.unregister(first.sender, first.nonce);
                return Err(e);
            }
        };
        let done = found.len();
        for (i, r) in found {
            out[i] = Some(r);
        }
        pending = &pending[done..];
        let now = Instant::now();
        if done == 0 && now < deadline {
            // Re-check at least every second: a block committed by state transfer wakes
            // nobody twice, and a missed wake-up must cost a second, not the whole wait.
            let _ =
                tokio::time::timeout((deadline - now).min(Duration::from_secs(1)), notified).await;
        }
        api.waiters.unregister(first.sender, first.nonce);
        if now >= deadline {
            // Past the deadline each tx is still looked up once, without waiting.
            for (i, r) in look(api, pending, true).await? {
                out[i] = Some(r);
            }
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_wait;

    #[test]
    fn wait_is_parsed_and_a_bad_value_is_refused() {
        assert_eq!(parse_wait(None), Ok(false));
        assert_eq!(parse_wait(Some("wait=true")), Ok(true));
        assert_eq!(parse_wait(Some("x=1&wait=0")), Ok(false));
        assert_eq!(parse_wait(Some("wait")), Ok(true));
        assert!(parse_wait(Some("wait=maybe")).is_err());
    }
}
