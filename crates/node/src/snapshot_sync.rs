//! Starting from a peer's snapshot (issue 24). A validator whose store is at genesis (a
//! new one, or one restarted with `--recover` after losing its disk) asks every other
//! validator's HTTP API for its snapshot manifest, keeps the highest one that verifies
//! against the genesis file (q CHECKPOINTs over a digest whose opening holds the state
//! root), fetches the chunks from all of them at once through
//! [`stele_consensus::snapshot::SnapshotSync`], and installs the state in one write. It
//! then fetches only the blocks above that height, as any lagging validator does. No
//! peer is trusted: a chunk is kept only if it verifies against the proven root.
//!
//! When no peer serves a snapshot (a young chain, or every peer faulty) it logs why and
//! the node replays blocks from genesis instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use stele_consensus::snapshot::{
    Event, FetchFailure, Fetched, Outcome, Progress, Request, SnapshotSync, SyncConfig,
};
use stele_crypto::Ed25519;
use stele_store::Store;
use stele_types::api::SnapshotSyncStatus;
use stele_types::codec;
use stele_types::snapshot::{BucketPiece, Part, SnapshotChunk, SnapshotManifest, MAX_CHUNK_BYTES};
use stele_types::{Genesis, Height, ReplicaId};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::driver::Shared;
use crate::metrics::Metrics;

/// How long one manifest or chunk request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A manifest is a block, two certificates and the results: bounded by the frame limit.
fn manifest_limit(genesis: &Genesis) -> usize {
    stele_types::max_frame_len(genesis)
}

/// A chunk's (or piece's) encoding is its entries (which the server bounds) plus framing.
const CHUNK_LIMIT: usize = MAX_CHUNK_BYTES + (1 << 20);

/// What a chunk fetch returns to the loop.
type Answer = (ReplicaId, Part, Result<Fetched, FetchFailure>, u64);

/// The peers' API base URLs.
fn peers(genesis: &Genesis, me: ReplicaId) -> Vec<(ReplicaId, String)> {
    genesis
        .validators
        .iter()
        .enumerate()
        .map(|(i, v)| (ReplicaId(i as u16), format!("http://{}", v.api_addr)))
        .filter(|(id, _)| *id != me)
        .collect()
}

/// Reads a body of at most `limit` bytes; a longer one is an error, never buffered.
async fn read_limited(mut r: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if r.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("answer longer than {limit} bytes"));
    }
    let mut out = Vec::new();
    while let Some(piece) = r.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + piece.len() > limit {
            return Err(format!("answer longer than {limit} bytes"));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// One peer's manifest, if it serves one that verifies.
async fn manifest_of(
    client: &reqwest::Client,
    genesis: &Genesis,
    peer: ReplicaId,
    url: &str,
) -> Option<(Height, SnapshotManifest)> {
    let r = match client.get(format!("{url}/snapshot")).send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            info!(peer = peer.0, status = %r.status(), "peer serves no snapshot");
            return None;
        }
        Err(e) => {
            info!(peer = peer.0, error = %e, "peer unreachable for a snapshot");
            return None;
        }
    };
    let bytes = match read_limited(r, manifest_limit(genesis)).await {
        Ok(b) => b,
        Err(e) => {
            warn!(peer = peer.0, error = %e, "snapshot manifest unreadable");
            return None;
        }
    };
    let m: SnapshotManifest = match codec::decode(&bytes, manifest_limit(genesis)) {
        Ok(m) => m,
        Err(e) => {
            warn!(peer = peer.0, error = %e, "snapshot manifest does not decode");
            return None;
        }
    };
    match m.verify(&genesis.validator_set(), &Ed25519) {
        Ok((h, _)) => Some((h, m)),
        Err(e) => {
            warn!(peer = peer.0, error = %e, "snapshot manifest does not verify; ignoring that peer's snapshot");
            None
        }
    }
}

async fn fetch_chunk(
    client: reqwest::Client,
    url: String,
    height: Height,
    req: Request<ReplicaId>,
    tx: mpsc::UnboundedSender<Answer>,
) {
    let part = req.part;
    let path = match part {
        Part::Range(r) => format!("{url}/snapshot/{}/{}/{}", height.0, r.first, r.bits),
        Part::Piece(p) => format!(
            "{url}/snapshot/{}/piece/{}/{}/{}",
            height.0, p.bucket, p.bits, p.index
        ),
    };
    let answer = async {
        let resp = client
            .get(path)
            .send()
            .await
            .map_err(|e| FetchFailure::Transport(e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(FetchFailure::Unavailable),
            413 => return Err(FetchFailure::TooLarge),
            s => return Err(FetchFailure::Transport(format!("HTTP {s}"))),
        }
        let bytes = read_limited(resp, CHUNK_LIMIT)
            .await
            .map_err(FetchFailure::Transport)?;
        let n = bytes.len() as u64;
        let fetched = match part {
            Part::Range(_) => {
                codec::decode::<SnapshotChunk>(&bytes, CHUNK_LIMIT).map(Fetched::Chunk)
            }
            Part::Piece(_) => codec::decode::<BucketPiece>(&bytes, CHUNK_LIMIT).map(Fetched::Piece),
        };
        fetched
            .map(|c| (c, n))
            .map_err(|e| FetchFailure::Transport(format!("{part} does not decode: {e}")))
    }
    .await;
    let (answer, bytes) = match answer {
        Ok((c, n)) => (Ok(c), n),
        Err(e) => (Err(e), 0),
    };
    let _ = tx.send((req.peer, part, answer, bytes));
}

fn show(p: &Progress, started: Instant) -> (SnapshotSyncStatus, Option<u64>) {
    let secs = started.elapsed().as_secs_f64();
    let eta = (p.chunks_done > 0)
        .then(|| (secs / p.chunks_done as f64 * p.chunks_left as f64).ceil() as u64);
    (
        SnapshotSyncStatus {
            height: Height(0),
            chunks_done: p.chunks_done,
            chunks_left: p.chunks_left,
            bytes: p.bytes,
            peers: p.peers_serving,
            eta_seconds: eta,
        },
        eta,
    )
}

fn set_status(shared: Option<&Shared>, status: Option<SnapshotSyncStatus>) {
    if let Some(shared) = shared {
        shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot_sync = status;
    }
}

/// Attempts at a snapshot before replaying blocks: a peer may drop the snapshot being
/// fetched once newer ones are stable, and the next attempt takes the newer one.
const ATTEMPTS: u32 = 3;

/// Syncs the store from the highest snapshot a peer proves, if it is above `above`
/// (genesis for a new or recovering store; for a store far behind, the height below
/// which it can still replay). Returns the height installed, or `None` when the node
/// must replay blocks instead.
pub async fn sync_from_snapshot(
    genesis: &Genesis,
    me: ReplicaId,
    store: Arc<Store>,
    metrics: &Metrics,
    shared: &Shared,
    above: Height,
) -> anyhow::Result<Option<Height>> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client for snapshot sync")?;
    let peers = peers(genesis, me);
    for attempt in 1..=ATTEMPTS {
        match attempt_fetch(genesis, &peers, &client, metrics, Some(shared), above).await? {
            Attempt::Fetched(manifest, chunks, p) => {
                let height = manifest.checkpoint.height;
                let root = manifest.opening.state_root;
                let started = Instant::now();
                let s = store.clone();
                tokio::task::spawn_blocking(move || s.install_snapshot(&manifest, &chunks))
                    .await
                    .context("the snapshot install task")?
                    .with_context(|| format!("installing the snapshot at height {height}"))?;
                metrics.snapshot_installed.set(height.0 as i64);
                info!(
                    height = height.0,
                    %root,
                    entries = p.entries,
                    bytes = p.bytes,
                    bad_chunks = p.bad_chunks,
                    stalls = p.stalls,
                    install_ms = started.elapsed().as_millis() as u64,
                    "installed the snapshot; fetching the blocks above it"
                );
                return Ok(Some(height));
            }
            Attempt::NoSnapshot => return Ok(None),
            Attempt::Incomplete if attempt < ATTEMPTS => {
                info!(
                    attempt,
                    "starting the snapshot sync again from the peers' newest snapshot"
                )
            }
            Attempt::Incomplete => {}
        }
    }
    warn!("no snapshot could be fetched whole; replaying blocks");
    Ok(None)
}

/// The height of the highest snapshot any peer serves whose manifest verifies against
/// the genesis (its checkpoint certificate holds q signatures), without fetching it.
pub async fn highest_verified_snapshot(genesis: &Genesis, me: ReplicaId) -> Option<Height> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .ok()?;
    let mut asks = tokio::task::JoinSet::new();
    for (id, url) in peers(genesis, me) {
        let (client, genesis) = (client.clone(), genesis.clone());
        asks.spawn(async move { manifest_of(&client, &genesis, id, &url).await });
    }
    let mut best = None;
    while let Some(r) = asks.join_next().await {
        if let Some((h, _)) = r.ok().flatten() {
            best = best.max(Some(h));
        }
    }
    best
}

/// Fetches and verifies the highest snapshot `urls` serve, for `stele-node snapshot
/// export`: the manifest and every chunk, each verified against the genesis.
pub async fn fetch_snapshot(
    genesis: &Genesis,
    urls: &[String],
) -> anyhow::Result<Option<(SnapshotManifest, Vec<SnapshotChunk>)>> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let peers: Vec<(ReplicaId, String)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (ReplicaId(i as u16), u.trim_end_matches('/').to_owned()))
        .collect();
    let metrics = Metrics::new();
    for _ in 1..=ATTEMPTS {
        match attempt_fetch(genesis, &peers, &client, &metrics, None, Height(0)).await? {
            Attempt::Fetched(m, chunks, _) => return Ok(Some((*m, chunks))),
            Attempt::NoSnapshot => return Ok(None),
            Attempt::Incomplete => {}
        }
    }
    Ok(None)
}

enum Attempt {
    /// Every chunk verified.
    Fetched(Box<SnapshotManifest>, Vec<SnapshotChunk>, Progress),
    /// No peer serves a snapshot that verifies.
    NoSnapshot,
    /// Peers served a manifest but not every chunk of it.
    Incomplete,
}

async fn attempt_fetch(
    genesis: &Genesis,
    peers: &[(ReplicaId, String)],
    client: &reqwest::Client,
    metrics: &Metrics,
    shared: Option<&Shared>,
    above: Height,
) -> anyhow::Result<Attempt> {
    let mut asks = tokio::task::JoinSet::new();
    for (id, url) in peers.iter().cloned() {
        let (client, genesis) = (client.clone(), genesis.clone());
        asks.spawn(async move { manifest_of(&client, &genesis, id, &url).await });
    }
    let mut found = Vec::new();
    while let Some(r) = asks.join_next().await {
        found.extend(r.ok().flatten());
    }
    let Some((height, manifest)) = found
        .into_iter()
        .filter(|(h, _)| *h > above)
        .max_by_key(|(h, _)| *h)
    else {
        info!(
            above = above.0,
            "no peer serves a snapshot above this height that verifies; replaying blocks"
        );
        return Ok(Attempt::NoSnapshot);
    };
    let root = manifest.opening.state_root;
    info!(height = height.0, %root, "fetching the snapshot at the highest checkpoint a peer proves");
    metrics.snapshot_height.set(height.0 as i64);
    let mut sync = SnapshotSync::new(
        height,
        root,
        peers.iter().map(|(id, _)| *id),
        SyncConfig::default(),
    );
    let urls: std::collections::BTreeMap<ReplicaId, String> = peers.iter().cloned().collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Answer>();
    let started = Instant::now();
    let now = |s: Instant| s.elapsed().as_millis() as u64;
    let mut reqs = sync.requests(0);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_log = Instant::now();
    let outcome = loop {
        for r in reqs.drain(..) {
            let url = urls.get(&r.peer).cloned().unwrap_or_default();
            tokio::spawn(fetch_chunk(client.clone(), url, height, r, tx.clone()));
        }
        for e in sync.take_events() {
            match e {
                Event::Faulty { peer, part, error } => {
                    metrics.snapshot_bad_chunks.inc();
                    warn!(peer = peer.0, %part, %error, "a snapshot chunk does not verify; not asking that validator again");
                }
                Event::Stalled { peer, part } => {
                    metrics.snapshot_stalls.inc();
                    warn!(peer = peer.0, %part, "snapshot chunk request stalled; asking another validator");
                }
                Event::Unavailable { peer } => {
                    info!(
                        peer = peer.0,
                        height = height.0,
                        "validator no longer keeps this snapshot"
                    )
                }
                Event::FalseTooLarge { peer, part, bytes } => {
                    metrics.snapshot_bad_chunks.inc();
                    warn!(peer = peer.0, %part, bytes, "a validator called a snapshot range too large that fits; not asking it again");
                }
                Event::Failed {
                    peer,
                    part,
                    error,
                    backoff_ms,
                } => {
                    warn!(peer = peer.0, %part, %error, backoff_ms, "snapshot chunk request failed; asking that validator again later")
                }
            }
        }
        let p = sync.progress();
        let (mut status, eta) = show(&p, started);
        status.height = height;
        metrics.snapshot_chunks_left.set(p.chunks_left as i64);
        metrics
            .snapshot_eta
            .set(eta.map_or(-1, |e| e.min(i64::MAX as u64) as i64));
        set_status(shared, Some(status));
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            info!(
                height = height.0,
                chunks_done = p.chunks_done,
                chunks_left = p.chunks_left,
                bytes = p.bytes,
                peers = p.peers_serving,
                eta_seconds = ?eta,
                "snapshot sync"
            );
        }
        if let Some(o) = sync.outcome() {
            break o;
        }
        tokio::select! {
            a = rx.recv() => {
                let Some((peer, part, answer, bytes)) = a else { break Outcome::NoPeers };
                if answer.is_ok() {
                    let label = peer.0.to_string();
                    let done_before = sync.progress().chunks_done;
                    reqs = sync.on_answer(now(started), peer, part, answer, bytes);
                    if sync.progress().chunks_done > done_before {
                        metrics.snapshot_chunks.with_label_values(&[&label]).inc();
                        metrics.snapshot_bytes.with_label_values(&[&label]).inc_by(bytes);
                    }
                } else {
                    reqs = sync.on_answer(now(started), peer, part, answer, bytes);
                }
            }
            _ = tick.tick() => reqs = sync.tick(now(started)),
        }
    };
    let chunks = match outcome {
        Outcome::Complete(chunks) => chunks,
        Outcome::NoPeers => {
            warn!(
                height = height.0,
                "no validator is left to serve the rest of this snapshot"
            );
            set_status(shared, None);
            metrics.snapshot_height.set(0);
            return Ok(Attempt::Incomplete);
        }
    };
    metrics.snapshot_chunks_left.set(0);
    metrics.snapshot_eta.set(0);
    set_status(shared, None);
    info!(
        height = height.0,
        fetch_ms = started.elapsed().as_millis() as u64,
        "fetched and verified every chunk of the snapshot"
    );
    Ok(Attempt::Fetched(
        Box::new(manifest),
        chunks,
        sync.progress(),
    ))
}
