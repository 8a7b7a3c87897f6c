//! `stele-node run`: opens the store, rebuilds the engine, starts the transport, the
//! verification workers, the engine thread and the HTTP API, and stops them in order on
//! SIGINT/SIGTERM or when the engine halts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use stele_consensus::{ChainState, Config, Engine, RecoveryGate};
use stele_ledger::{genesis_changes, genesis_state_digest};
use stele_store::{GenesisState, SnapshotConfig, Store, StoreConfig};
use stele_transport::{Transport, TransportConfig};
use stele_types::api::StatusResponse;
use stele_types::{CommittedBlock, Genesis, Height, ReplicaId, ViewNumber};
use tracing::{error, info, warn};

use crate::api::{self, Api};
use crate::cache::{VerifiedTxs, Waiters, VERIFIED_CACHE_CAP};
use crate::config::Loaded;
use crate::datadir::{self, Opening};
use crate::driver::{input_queues, now_ms, Driver, Exit, Input, Shared};
use crate::metrics::Metrics;
use crate::net;
use crate::pool::VerifyPool;

/// Marks a data directory whose recovery has not finished: a restart mid-recovery must
/// stay gated, since the votes signed before the wipe are still unknown.
pub const RECOVERING_MARKER: &str = "RECOVERING";

/// Why `run` failed before the node was up; the exit code says which.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The operator must act on the data directory (exit code 2).
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    /// Anything else (exit code 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The committed chain above the stable checkpoint, as the engine needs it to restart.
fn chain_state(store: &Store, low: Height, k: u64) -> anyhow::Result<ChainState> {
    let (executed, state_digest) = store.tip();
    let mut recent = Vec::new();
    let mut checkpoint_digests = Vec::new();
    for h in low.0.saturating_add(1)..=executed.0 {
        let h = Height(h);
        let block = store
            .block(h)?
            .with_context(|| format!("block {h} missing"))?;
        let certificate = store
            .certificate(h)?
            .with_context(|| format!("certificate {h} missing"))?;
        recent.push(CommittedBlock { block, certificate });
        if h.0 % k == 0 {
            let d = store
                .state_digest(h)?
                .with_context(|| format!("state digest {h} missing"))?;
            checkpoint_digests.push((h, d));
        }
    }
    Ok(ChainState {
        executed,
        state_digest,
        recent,
        checkpoint_digests,
    })
}

/// How `stele-node run` was asked to start.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--recover`: the data directory was lost (see [`RECOVERING_MARKER`]).
    pub recover: bool,
    /// `--byzantine NAME` (test builds with the `byzantine` feature only).
    #[cfg(feature = "byzantine")]
    pub byzantine: Option<stele_consensus::byzantine::Behaviour>,
    /// `--record-sent FILE` (test builds with the `byzantine` feature only).
    #[cfg(feature = "byzantine")]
    pub record_sent: Option<std::path::PathBuf>,
}

/// Runs a validator until it is stopped or halts.
pub async fn run(loaded: Loaded, options: Options) -> Result<Exit, StartError> {
    let recover = options.recover;
    let Loaded {
        genesis,
        key,
        id,
        data_dir,
        p2p_listen,
        api_listen,
        config,
        ..
    } = loaded;
    let opening = datadir::opening(&data_dir, &genesis, recover)?;
    if opening == Opening::Recover {
        write_synced(&data_dir, RECOVERING_MARKER, b"recovering\n")
            .with_context(|| format!("writing {}", data_dir.join(RECOVERING_MARKER).display()))?;
    }
    let recovering = data_dir.join(RECOVERING_MARKER).exists();
    if recover && opening == Opening::Existing && !recovering {
        warn!("--recover given, but the data directory holds a database: opening it as it is");
    }
    let initial = GenesisState {
        changes: genesis_changes(&genesis),
        state_digest: genesis_state_digest(&genesis),
    };
    let db = datadir::db_path(&data_dir);
    let store = Store::open(
        &db,
        &genesis,
        &initial,
        &StoreConfig {
            sync: config.sync,
            verify_on_open: true,
            snapshots: (config.snapshot_every > 0).then(|| SnapshotConfig {
                dir: data_dir.join("snapshots"),
                every: genesis
                    .params
                    .checkpoint_interval
                    .saturating_mul(config.snapshot_every),
                kept: config.snapshots_kept,
            }),
        },
    )
    .with_context(|| format!("opening the store in {}", db.display()))?;
    if opening == Opening::Fresh {
        datadir::remove_marker(&data_dir)?;
    }
    if !config.sync {
        warn!("sync = false: commits are not synced to disk; a crash may lose acknowledged blocks and sent votes. Benchmarks only.");
    }
    let store = Arc::new(store);
    store
        .start_background()
        .context("starting the store's background thread")?;
    let key = Arc::new(key);
    let start = Instant::now();
    let socket = std::net::UdpSocket::bind(&p2p_listen)
        .with_context(|| format!("binding the QUIC address {p2p_listen}"))?;
    let mut tc = TransportConfig::new(genesis.clone(), (*key).clone());
    tc.socket = Some(socket);
    let (transport, inbound) = Transport::start(tc).context("starting the QUIC transport")?;
    let listener = tokio::net::TcpListener::bind(&api_listen)
        .await
        .with_context(|| format!("binding the HTTP API address {api_listen}"))?;

    let metrics = Metrics::new();
    let cache = Arc::new(VerifiedTxs::new(VERIFIED_CACHE_CAP));
    let frames = Arc::new(stele_consensus::FrameVerdicts::default());
    let waiters = Arc::new(Waiters::default());
    let receipts = Arc::new(crate::receipts::BlockReceipts::new(
        id,
        key.clone(),
        genesis.validator_set().chain().clone(),
    ));
    let (height, state_digest) = store.tip();
    let shared = Arc::new(Shared {
        status: Mutex::new(StatusResponse {
            validator: id,
            chain_id: genesis.chain_id.clone(),
            genesis: *genesis.validator_set().chain().genesis(),
            height,
            view: ViewNumber(0),
            active: false,
            block_hash: stele_types::Block::null_digest(height),
            state_digest,
            stable_checkpoint: store
                .stable_checkpoint()
                .context("reading the stable checkpoint")?
                .map_or(Height(0), |c| c.height),
            peers_connected: 0,
            sync: config.sync,
            recovering,
            mempool_txs: 0,
            state_root: None,
            snapshot_sync: None,
        }),
        peer_height: Mutex::new(Height(0)),
    });
    let vs = genesis.validator_set();
    let (engine_tx, peer_inputs, tx_inputs, engine_rx) = input_queues(vs.n());

    // One verification pool for every signature the node checks, consensus first.
    let pool = VerifyPool::start(
        VerifyPool::default_threads(),
        vs.n(),
        net::PEER_QUEUE,
        net::batch_verifier(vs.clone(), metrics.clone()),
    )
    .context("starting the verification pool")?;
    tokio::spawn(net::inbound_loop(
        inbound,
        pool.clone(),
        Arc::new(net::Ctx {
            engine: peer_inputs,
            tx_queue: tx_inputs.clone(),
            genesis: genesis.clone(),
            validators: vs.clone(),
            cache: cache.clone(),
            frames: frames.clone(),
            metrics: metrics.clone(),
            relay_wait: net::RELAY_WAIT,
        }),
    ));

    // The API answers (status, metrics) while a store at genesis first tries to start
    // from a peer's snapshot; the engine starts from whatever the store then holds.
    let (stop_http_tx, stop_http_rx) = tokio::sync::watch::channel(false);
    let (in_flight, bodies) = Api::limits();
    let http_metrics = metrics.clone();
    let api = Arc::new(Api {
        genesis: genesis.clone(),
        validators: vs.clone(),
        id,
        key: key.clone(),
        store: store.clone(),
        engine: tx_inputs,
        shared: shared.clone(),
        cache: cache.clone(),
        waiters: waiters.clone(),
        receipts: receipts.clone(),
        metrics: metrics.clone(),
        connected: transport.connected(),
        in_flight,
        bodies,
        pool,
    });
    let server = tokio::spawn(crate::http::serve(
        listener,
        api::router(api),
        http_metrics,
        stop_http_rx,
    ));
    // A store at genesis starts from the highest snapshot a peer proves. So does one
    // further behind than the peers promise to keep blocks for a laggard (8 L: see the
    // driver's prune target), since they may have pruned what it would replay; closer,
    // it replays.
    let tip = store.latest_height();
    let above = match tip {
        Height(0) => Some(Height(0)),
        t => Some(Height(t.0.saturating_add(8 * genesis.params.window))),
    }
    .filter(|_| config.start_from_snapshot);
    if let Some(above) = above {
        if tip > Height(0) {
            info!(
                height = tip.0,
                "looking for a snapshot more than 8 L above this store's height"
            );
        }
        let sync = crate::snapshot_sync::sync_from_snapshot(
            &genesis,
            id,
            store.clone(),
            &metrics,
            &shared,
            above,
        );
        tokio::select! {
            r = sync => { r?; }
            s = shutdown_signal() => {
                // Nothing is installed until every chunk verified: stopping here leaves
                // the store at genesis, to sync again at the next start.
                info!(signal = s, "stopping during snapshot sync");
                let _ = stop_http_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(6), server).await;
                transport.shutdown().await;
                return Ok(Exit::Stopped);
            }
        }
    }
    if let Ok(h) = store.horizon() {
        if h > Height(1) {
            metrics.snapshot_installed.set(h.0 as i64);
        }
    }

    let durable = store.durable_entries().context("reading consensus state")?;
    let low = store
        .stable_checkpoint()
        .context("reading the stable checkpoint")?
        .map_or(Height(0), |c| c.height);
    let chain = chain_state(&store, low, genesis.params.checkpoint_interval)
        .context("reading the committed chain")?;
    info!(
        validator = id.0,
        height = chain.executed.0,
        stable_checkpoint = low.0,
        durable_entries = durable.len(),
        recovering,
        "opened store"
    );
    let engine = Engine::restore(
        Config {
            id,
            genesis: genesis.clone(),
            signer: key.clone(),
            genesis_state: initial.state_digest,
        },
        durable,
        chain,
        now_ms(start),
    );

    let driver = Driver {
        engine,
        store: store.clone(),
        transport: transport.clone(),
        genesis: genesis.clone(),
        key: key.clone(),
        metrics: metrics.clone(),
        waiters: waiters.clone(),
        receipts: receipts.clone(),
        cache: cache.clone(),
        shared: shared.clone(),
        recovery: recovering
            .then(|| RecoveryGate::new(id, vs.quorum(), vs.f(), genesis.params.window)),
        recovered: recovering,
        #[cfg(feature = "byzantine")]
        byzantine: options.byzantine,
        #[cfg(feature = "byzantine")]
        record_sent: match &options.record_sent {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("--record-sent {}: {e}", p.display()))?,
            ),
            None => None,
        },
        sync: config.sync,
        retain_blocks: config.retain_blocks,
        start,
    };
    let (exit_tx, mut exit_rx) = tokio::sync::oneshot::channel::<Exit>();
    let marker = data_dir.join(RECOVERING_MARKER);
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let exit = driver.run(engine_rx);
            let _ = exit_tx.send(exit);
        })
        .context("starting the engine thread")?;

    // Gauges the engine does not own, once a second.
    {
        let (t, m, s) = (transport.clone(), metrics.clone(), shared.clone());
        let q = vs.quorum() as i64;
        tokio::spawn(async move {
            let mut seen = t.metrics().snapshot();
            m.transport(&Default::default(), &seen);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let peers = t.connected().borrow().len() as i64;
                m.peers.set(peers);
                m.faults_tolerated.set((peers + 1 - q).max(0));
                let now = t.metrics().snapshot();
                m.transport(&seen, &now);
                seen = now;
                let recovering = s
                    .status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .recovering;
                if !recovering && marker.exists() {
                    let _ = std::fs::remove_file(&marker);
                }
            }
        });
    }

    let (resync_tx, resync_rx) = tokio::sync::oneshot::channel::<Exit>();
    if config.start_from_snapshot {
        tokio::spawn(watch_far_behind(
            genesis.clone(),
            id,
            shared.clone(),
            resync_tx,
        ));
    }

    info!(
        validator = id.0,
        p2p = %p2p_listen,
        api = %api_listen,
        n = vs.n(),
        f = vs.f(),
        "validator running"
    );

    let exit = tokio::select! {
        e = &mut exit_rx => e.unwrap_or(Exit::Stopped),
        Ok(resync) = resync_rx => {
            let _ = engine_tx.try_send(Input::Stop);
            match exit_rx.await {
                Ok(Exit::Stopped) | Err(_) => resync,
                Ok(other) => other,
            }
        }
        s = shutdown_signal() => {
            info!(signal = s, "stopping");
            let _ = engine_tx.try_send(Input::Stop);
            exit_rx.await.unwrap_or(Exit::Stopped)
        }
    };
    drop(engine_tx);
    let _ = stop_http_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(6), server)
        .await
        .is_err()
    {
        warn!("HTTP API did not stop within 5 s");
    }
    transport.shutdown().await;
    if engine_thread.join().is_err() {
        error!("the engine thread panicked");
    }
    if let Err(e) = store.flush() {
        warn!(error = %e, "flushing the store at shutdown");
    }
    Ok(exit)
}

/// How long a validator far behind its peers may execute nothing before it looks for a
/// snapshot to jump to.
const STUCK_FOR: Duration = Duration::from_secs(10);

/// Watches for a validator that runs on far behind its peers without catching up: it
/// was paused or cut off while they moved on and pruned the blocks it would replay, so
/// asking for them is hopeless. When its height has not moved for [`STUCK_FOR`], the
/// honest peer height (f+1 STATUS claims, so one liar cannot trigger it) is more than
/// 8 L above it, and a peer serves a snapshot above that line whose certificate verifies,
/// it asks `run` to stop and start again, which installs that snapshot (the same rule a
/// start uses: a validator within 8 L replays).
async fn watch_far_behind(
    genesis: Genesis,
    id: ReplicaId,
    shared: Arc<Shared>,
    resync: tokio::sync::oneshot::Sender<Exit>,
) {
    let behind = 8 * genesis.params.window;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Height(0), Instant::now());
    loop {
        tick.tick().await;
        let height = shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .height;
        let peers = *shared.peer_height.lock().unwrap_or_else(|e| e.into_inner());
        if height != last.0 {
            last = (height, Instant::now());
            continue;
        }
        let line = Height(height.0.saturating_add(behind));
        if peers <= line || last.1.elapsed() < STUCK_FOR {
            continue;
        }
        match crate::snapshot_sync::highest_verified_snapshot(&genesis, id).await {
            Some(snapshot) if snapshot > line => {
                warn!(
                    height = height.0,
                    peers = peers.0,
                    snapshot = snapshot.0,
                    "more than 8 L behind the peers, executing nothing: restarting to install their snapshot"
                );
                let _ = resync.send(Exit::Resync { height, snapshot });
                return;
            }
            found => {
                info!(
                    height = height.0,
                    peers = peers.0,
                    snapshot = found.map(|h| h.0),
                    "far behind the peers, and no snapshot to jump to yet"
                );
                // Asked again after another STUCK_FOR.
                last.1 = Instant::now();
            }
        }
    }
}

/// Writes `name` in `dir` and syncs the file and the directory: the recovery marker must
/// survive a power cut, or a recovering validator comes back as a normal voter.
fn write_synced(dir: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(name))?;
    f.write_all(content)?;
    f.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

async fn shutdown_signal() -> &'static str {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term => "SIGTERM",
    }
}

/// For `testnet up` and tests: the per-validator state this module reads, by path.
pub fn is_initialised(data: &Path) -> bool {
    data.join(datadir::MARKER).exists() || datadir::db_path(data).join("CURRENT").exists()
}
