//! The transport: one QUIC endpoint per validator, one authenticated connection per
//! pair of validators, per-class streams and queues, and the handle the node uses.
//!
//! Connections: the lower id dials, the higher id accepts, so simultaneous dials cannot
//! happen; an accepted connection from a peer that already has one replaces it (the
//! peer restarted). A dialler counts a connection as up only once the acceptor opened a
//! stream on it (TLS 1.3 checks the client's certificate after the client's handshake
//! ends). Each dialler retries with capped exponential backoff and jitter. An inbound
//! attempt from an address not yet validated gets a stateless Retry; a validated one
//! holds a slot (see `admission`) for at most the short handshake timeout.
//! Each side opens one unidirectional stream per [`FrameClass`] (consensus at a higher
//! QUIC priority), fed from that peer's bounded [`crate::queue`]. Inbound frames are
//! stamped with wall-clock time the moment their last byte is read, then pass through
//! a per-class channel, each peer's share bounded in frames and bytes
//! ([`crate::inbound`]); when the node does not keep up with a peer, that peer's
//! readers stop reading and QUIC flow control pushes back on it, whose queue then
//! drops (and counts). A framing error closes only that peer's connection.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, VarInt};
use rand::Rng;
use stele_crypto::{KeyPair, PublicKey};
use stele_types::{max_frame_len, Genesis, ReplicaId, ValidatorSet};
use tokio::sync::{broadcast, mpsc, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::admission::{Admission, Caps};
use crate::fault::Faults;
use crate::frame::{self, FrameDecoder, FrameError};
use crate::identity::{self, IdentityError};
use crate::inbound::{Inbound, InboundFrame, PeerBudget, PeerLimits};
use crate::metrics::{Metrics, RejectReason};
use crate::queue::{OutQueues, QueueLimits, QueueStats};
use crate::{unix_ms, FrameClass};

/// Most frames a writer hands QUIC in one call.
const WRITE_BATCH_FRAMES: usize = 64;
/// About the most payload bytes a writer hands QUIC in one call.
const WRITE_BATCH_BYTES: usize = 1 << 20;
/// Largest chunk a reader takes from QUIC at once (bounds the decoder's slack).
const READ_CHUNK: usize = 64 << 10;
/// Capacity of the connection-event channel; a receiver that lags loses old events.
const EVENT_CAPACITY: usize = 256;
/// Connection attempts QUIC holds for the accept loop; past that it ignores new ones
/// (their clients retransmit). Each is answered at once (Retry, refusal or a slot).
const ACCEPT_BACKLOG: usize = 256;
/// Bytes QUIC buffers for one attempt the accept loop has not taken yet, and for all.
const ACCEPT_BUFFER: u64 = 16 << 10;
const ACCEPT_BUFFER_TOTAL: u64 = 1 << 20;

/// Application close codes, visible to the peer.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_REPLACED: u32 = 1;
const CLOSE_PROTOCOL: u32 = 2;
const CLOSE_WRONG_DIRECTION: u32 = 3;

/// Tunable bounds and timings; [`Tuning::for_genesis`] gives the defaults.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Bounds of each peer's outbound queues.
    pub queue: QueueLimits,
    /// Most frames received from one peer waiting for the node, all classes together.
    pub inbound_peer_frames: usize,
    /// Most payload bytes received from one peer waiting for the node, all classes
    /// together (the peer picks each stream's class, so a budget per class would be
    /// the peer's to multiply).
    pub inbound_peer_bytes: usize,
    /// Of `inbound_peer_bytes`, those only the peer's consensus frames may use, so its
    /// own relay and bulk frames cannot hold them back; the rest must hold one largest
    /// frame.
    pub inbound_consensus_reserve: usize,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Cap of the doubling reconnect delay.
    pub backoff_max: Duration,
    /// QUIC keep-alive interval (keeps idle connections open, detects dead peers).
    pub keep_alive: Duration,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
    /// An inbound handshake not done within this is abandoned and its slot freed; short,
    /// because a silent client holds its slot until then.
    pub handshake_timeout: Duration,
    /// A dial not confirmed by the peer within this is abandoned and retried.
    pub dial_timeout: Duration,
    /// Most inbound handshakes in progress at once; more are refused.
    pub max_handshakes: usize,
    /// Most inbound handshakes in progress from one source (an IPv4 address or an IPv6
    /// /64); a host that genesis lists for k other validators may hold max(k, this).
    pub max_handshakes_per_source: usize,
    /// Most inbound handshakes in progress from sources that no genesis validator lists
    /// (by IP literal), all together: the rest of `max_handshakes` stays free for
    /// validators reconnecting from their listed addresses.
    pub max_stranger_handshakes: usize,
}

impl Tuning {
    /// Defaults for a chain: queues and inbound buffers sized from its largest frame.
    pub fn for_genesis(genesis: &Genesis) -> Tuning {
        let max_frame = max_frame_len(genesis);
        let n = genesis.validators.len();
        Tuning {
            queue: QueueLimits::for_frame_len(max_frame),
            inbound_peer_frames: 4096,
            // Relay and bulk keep the room one class had when budgets were per class.
            inbound_peer_bytes: max_frame + (8 << 20),
            inbound_consensus_reserve: 4 << 20,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(1),
            dial_timeout: Duration::from_secs(5),
            max_handshakes: 2 * n.max(4),
            max_handshakes_per_source: 2,
            max_stranger_handshakes: n.max(4),
        }
    }

    fn check(&self, max_frame: usize, n: usize) -> Result<(), String> {
        self.queue.check(max_frame)?;
        let channel = self.inbound_channel_capacity(n);
        if self.inbound_peer_frames == 0 || channel.is_none_or(|c| c > Semaphore::MAX_PERMITS) {
            return Err(format!(
                "inbound_peer_frames must be in 1..={} for {n} validators, found {}",
                Semaphore::MAX_PERMITS / n.max(1),
                self.inbound_peer_frames
            ));
        }
        if self.inbound_peer_bytes > Semaphore::MAX_PERMITS
            || self.inbound_peer_bytes < max_frame
            || self.inbound_peer_bytes - max_frame < self.inbound_consensus_reserve
        {
            return Err(format!(
                "inbound_peer_bytes must be at most {} and hold one largest frame \
                 ({max_frame} bytes) beside inbound_consensus_reserve ({}), found {}",
                Semaphore::MAX_PERMITS,
                self.inbound_consensus_reserve,
                self.inbound_peer_bytes
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(format!(
                "backoff must satisfy 0 < backoff_initial <= backoff_max, found {:?} and {:?}",
                self.backoff_initial, self.backoff_max
            ));
        }
        if self.handshake_timeout.is_zero() || self.dial_timeout.is_zero() {
            return Err(format!(
                "handshake_timeout and dial_timeout must be positive, found {:?} and {:?}",
                self.handshake_timeout, self.dial_timeout
            ));
        }
        if self.max_handshakes == 0 || self.max_handshakes_per_source == 0 {
            return Err(format!(
                "max_handshakes and max_handshakes_per_source must be at least 1, found {} and {}",
                self.max_handshakes, self.max_handshakes_per_source
            ));
        }
        if !(1..=self.max_handshakes).contains(&self.max_stranger_handshakes) {
            return Err(format!(
                "max_stranger_handshakes must be in 1..={} (max_handshakes), found {}",
                self.max_handshakes, self.max_stranger_handshakes
            ));
        }
        Ok(())
    }

    /// Frames each class's channel holds: every peer's whole frame budget, so that a
    /// frame with room in its sender's budget never waits for another peer's.
    fn inbound_channel_capacity(&self, n: usize) -> Option<usize> {
        n.saturating_sub(1)
            .max(1)
            .checked_mul(self.inbound_peer_frames)
    }
}

/// Everything [`Transport::start`] needs.
#[derive(Debug)]
pub struct TransportConfig {
    /// The chain: validator keys, addresses, and the frame limit.
    pub genesis: Genesis,
    /// This validator's key: its TLS identity.
    pub key: KeyPair,
    /// A socket already bound for the endpoint (tests bind 127.0.0.1:0 first; a node
    /// behind NAT binds 0.0.0.0:port). `None` binds this validator's genesis `p2p_addr`.
    pub socket: Option<std::net::UdpSocket>,
    /// Bounds and timings.
    pub tuning: Tuning,
    /// Fault injection for tests; `None` in production.
    pub faults: Option<Arc<Faults>>,
}

impl TransportConfig {
    /// A configuration with default tuning, binding the genesis address, no faults.
    pub fn new(genesis: Genesis, key: KeyPair) -> TransportConfig {
        let tuning = Tuning::for_genesis(&genesis);
        TransportConfig {
            genesis,
            key,
            socket: None,
            tuning,
            faults: None,
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("key {0} is not a validator in the genesis file: cannot join the network")]
    NotAValidator(PublicKey),
    #[error("transport configuration: {0}")]
    Config(String),
    #[error("cannot bind validator {id}'s p2p address {addr}: {source}")]
    Bind {
        id: ReplicaId,
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("cannot start the QUIC endpoint on {addr}: {source}")]
    Endpoint {
        addr: String,
        source: std::io::Error,
    },
}

/// A frame the node cannot send: a bug in the caller, never a network condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no validator {peer}: the set has ids 0..{n}")]
    UnknownPeer { peer: ReplicaId, n: usize },
    #[error("validator {0} is this node: frames to self never go on the wire")]
    ToSelf(ReplicaId),
    #[error("frame for validator {peer} has {len} bytes, the maximum is {max}")]
    TooLarge {
        peer: ReplicaId,
        len: usize,
        max: usize,
    },
    #[error("empty frame for validator {0}: a frame has at least one byte")]
    Empty(ReplicaId),
}

/// What became of one frame offered to a peer's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued; it will be written once the peer is connected and earlier frames are out.
    Queued,
    /// Dropped (counted) because that class's queue, or the peer's total, was full.
    DroppedQueueFull,
    /// Dropped (counted) by the fault hook.
    DroppedByFault,
}

/// A peer's connection came up or went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    Connected(ReplicaId),
    Disconnected(ReplicaId),
}

/// One remote validator as the transport tracks it.
#[derive(Debug)]
struct Peer {
    id: ReplicaId,
    queues: Mutex<OutQueues>,
    wake: [Notify; 3],
    /// The live connection and its generation (to tell a replaced one from the current).
    conn: Mutex<Option<(u64, Connection)>>,
}

/// State shared by the handle and every task.
#[derive(Debug)]
struct Shared {
    local: ReplicaId,
    set: Arc<ValidatorSet>,
    max_frame: usize,
    tuning: Tuning,
    /// Indexed by replica id; our own slot exists but is never used.
    peers: Vec<Peer>,
    metrics: Arc<Metrics>,
    faults: Option<Arc<Faults>>,
    events: broadcast::Sender<PeerEvent>,
    connected: watch::Sender<BTreeSet<ReplicaId>>,
    inbound: [mpsc::Sender<InboundFrame>; 3],
    /// What each peer has waiting for the node, indexed by replica id.
    budgets: Arc<[PeerBudget]>,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    admission: Arc<Admission>,
    next_generation: AtomicU64,
}

/// Owns the background tasks; dropping the last handle stops them.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop();
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// The node's handle on the transport. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Handle>,
}

/// A poisoned lock only means another thread panicked while holding it; the queues
/// it guards stay consistent at every await-free step, so go on with them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transport {
    /// Binds the endpoint, starts accepting and dialling. Must run inside a tokio
    /// runtime. Returns the handle and the inbound frame stream.
    pub fn start(config: TransportConfig) -> Result<(Transport, Inbound), TransportError> {
        let TransportConfig {
            genesis,
            key,
            socket,
            tuning,
            faults,
        } = config;
        let set = Arc::new(genesis.validator_set());
        let local = set
            .id_of(&key.public())
            .ok_or(TransportError::NotAValidator(key.public()))?;
        let max_frame = max_frame_len(&genesis);
        if max_frame == 0 || u32::try_from(max_frame).is_err() {
            return Err(TransportError::Config(format!(
                "max_frame_len(genesis) must be in 1..=u32::MAX, found {max_frame}"
            )));
        }
        tuning
            .check(max_frame, set.n())
            .map_err(TransportError::Config)?;
        let own_addr = genesis
            .validators
            .get(local.index())
            .map(|v| v.p2p_addr.clone())
            .unwrap_or_default();
        let socket = match socket {
            Some(s) => s,
            None => bind(&own_addr).map_err(|source| TransportError::Bind {
                id: local,
                addr: own_addr.clone(),
                source,
            })?,
        };

        let metrics = Arc::new(Metrics::default());
        let (server_crypto, client_crypto) =
            identity::quic_configs(&key, set.clone(), local, metrics.clone())?;
        let mut transport = quinn::TransportConfig::default();
        transport
            // One stream per class from each side; no bidirectional streams.
            .max_concurrent_uni_streams(VarInt::from_u32(FrameClass::ALL.len() as u32))
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .datagram_receive_buffer_size(None)
            .keep_alive_interval(Some(tuning.keep_alive))
            .max_idle_timeout(Some(tuning.idle_timeout.try_into().map_err(|_| {
                TransportError::Config(format!(
                    "idle_timeout {:?} is out of QUIC's range",
                    tuning.idle_timeout
                ))
            })?));
        let transport = Arc::new(transport);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server
            .transport_config(transport.clone())
            .migration(false)
            .max_incoming(ACCEPT_BACKLOG)
            .incoming_buffer_size(ACCEPT_BUFFER)
            .incoming_buffer_size_total(ACCEPT_BUFFER_TOTAL);
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let endpoint_config = quinn::EndpointConfig::new(Arc::new(identity::reset_key(&key)));
        let endpoint_err = |source| TransportError::Endpoint {
            addr: own_addr.clone(),
            source,
        };
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(endpoint_err)?;
        let local_addr = endpoint.local_addr().map_err(endpoint_err)?;

        let capacity = tuning
            .inbound_channel_capacity(set.n())
            .ok_or_else(|| TransportError::Config("inbound channel capacity".into()))?;
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in FrameClass::ALL {
            let (tx, rx) = mpsc::channel(capacity);
            senders.push(tx);
            receivers.push(rx);
        }
        let inbound: [mpsc::Sender<InboundFrame>; 3] = senders
            .try_into()
            .map_err(|_| TransportError::Config("three frame classes".into()))?;
        let rx: [mpsc::Receiver<InboundFrame>; 3] = receivers
            .try_into()
            .map_err(|_| TransportError::Config("three frame classes".into()))?;
        let limits = PeerLimits {
            frames: tuning.inbound_peer_frames,
            bytes: tuning.inbound_peer_bytes,
            consensus_reserve: tuning.inbound_consensus_reserve,
        };
        let budgets: Arc<[PeerBudget]> = set.ids().map(|_| PeerBudget::new(limits)).collect();
        let peers = set
            .ids()
            .map(|id| Peer {
                id,
                queues: Mutex::new(OutQueues::default()),
                wake: std::array::from_fn(|_| Notify::new()),
                conn: Mutex::new(None),
            })
            .collect();
        let shared = Arc::new(Shared {
            local,
            set: set.clone(),
            max_frame,
            admission: Arc::new(Admission::new(
                Caps {
                    total: tuning.max_handshakes,
                    per_source: tuning.max_handshakes_per_source,
                    strangers: tuning.max_stranger_handshakes,
                },
                &genesis,
                local,
            )),
            tuning,
            peers,
            metrics,
            faults,
            events: broadcast::channel(EVENT_CAPACITY).0,
            connected: watch::channel(BTreeSet::new()).0,
            inbound,
            budgets: budgets.clone(),
            endpoint,
            client,
            next_generation: AtomicU64::new(0),
        });

        let mut tasks = vec![tokio::spawn(shared.clone().accept_loop())];
        // The lower id dials: we dial every higher id and wait for the lower ones.
        for peer in set.ids().filter(|&id| id > local) {
            tasks.push(tokio::spawn(shared.clone().dial_loop(peer)));
        }
        info!(
            local = local.0,
            addr = %local_addr,
            n = set.n(),
            max_frame,
            "transport started"
        );
        let handle = Handle {
            shared,
            tasks: Mutex::new(tasks),
        };
        Ok((
            Transport {
                inner: Arc::new(handle),
            },
            Inbound::new(rx, budgets),
        ))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// This validator's id.
    pub fn local_id(&self) -> ReplicaId {
        self.shared().local
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared().endpoint.local_addr()
    }

    /// The hard frame limit, `max_frame_len(&genesis)`.
    pub fn max_frame_len(&self) -> usize {
        self.shared().max_frame
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared().metrics
    }

    /// Connection events from now on (a receiver lagging by more than 256 loses the
    /// oldest; [`Transport::connected`] always has the current set).
    pub fn events(&self) -> broadcast::Receiver<PeerEvent> {
        self.shared().events.subscribe()
    }

    /// The set of peers with a live connection, to read or to wait on.
    pub fn connected(&self) -> watch::Receiver<BTreeSet<ReplicaId>> {
        self.shared().connected.subscribe()
    }

    /// What is queued for `peer` now, or `None` for an id outside the set.
    pub fn queue_stats(&self, peer: ReplicaId) -> Option<QueueStats> {
        self.shared()
            .peers
            .get(peer.index())
            .map(|p| lock(&p.queues).stats())
    }

    /// Queues `frame` for `to`. Queue-full and fault drops are outcomes, counted;
    /// errors are caller bugs (unknown id, self, empty or oversized frame).
    pub fn send(
        &self,
        to: ReplicaId,
        class: FrameClass,
        frame: Bytes,
    ) -> Result<SendOutcome, SendError> {
        let s = self.shared();
        if to == s.local {
            return Err(SendError::ToSelf(to));
        }
        let peer = s.peers.get(to.index()).ok_or(SendError::UnknownPeer {
            peer: to,
            n: s.peers.len(),
        })?;
        s.check_frame(to, &frame)?;
        Ok(s.enqueue(peer, class, frame))
    }

    /// Queues `frame` for every other validator (the bytes are shared, not copied).
    /// Returns how many peers' queues took it.
    pub fn broadcast(&self, class: FrameClass, frame: Bytes) -> Result<usize, SendError> {
        let s = self.shared();
        s.check_frame(s.local, &frame)?;
        Ok(s.peers
            .iter()
            .filter(|p| p.id != s.local)
            .filter(|p| s.enqueue(p, class, frame.clone()) == SendOutcome::Queued)
            .count())
    }

    /// Closes every connection (telling peers), stops every task and waits until the
    /// endpoint is idle. The socket is released once the last handle is dropped.
    pub async fn shutdown(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
        self.shared().stop();
        self.shared().endpoint.wait_idle().await;
        info!(local = self.local_id().0, "transport stopped");
    }
}

fn bind(addr: &str) -> std::io::Result<std::net::UdpSocket> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    std::net::UdpSocket::bind(&addrs[..])
}

/// Why a dial failed (logged, counted, retried).
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot dial {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("peer at {addr} closed the connection before accepting us: {source}")]
    Refused {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
    #[error("handshake with {addr} not done within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("peer at {addr}: {source}")]
    Identity {
        addr: SocketAddr,
        source: IdentityError,
    },
}

/// TLS alert 120, `no_application_protocol`: the peer speaks another ALPN.
const NO_APPLICATION_PROTOCOL: u8 = 120;

impl DialError {
    /// The peer refused the handshake for its ALPN: it runs another wire version.
    fn other_wire_version(&self) -> bool {
        matches!(
            self,
            DialError::Handshake {
                source: quinn::ConnectionError::ConnectionClosed(close),
                ..
            } if close.error_code == quinn::TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL)
        )
    }
}

/// Why an inbound handshake did not give a connection (logged, counted).
#[derive(Debug, thiserror::Error)]
enum InboundFailed {
    #[error("handshake failed: {0}")]
    Handshake(quinn::ConnectionError),
    #[error("handshake not done within {0:?}")]
    Timeout(Duration),
}

/// Why a writer stopped (the connection is gone or going).
#[derive(Debug, thiserror::Error)]
enum WriteFailed {
    #[error("cannot open stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("write failed: {0}")]
    Write(#[from] quinn::WriteError),
}

/// A peer broke the framing rules on a stream.
#[derive(Debug, thiserror::Error)]
enum StreamFault {
    #[error("stream opened with byte {0}, expected a class tag 0..=2")]
    UnknownClass(u8),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

impl StreamFault {
    fn reason(&self) -> RejectReason {
        match self {
            StreamFault::UnknownClass(_) => RejectReason::UnknownClass,
            StreamFault::Frame(FrameError::Oversized { .. }) => RejectReason::Oversized,
            StreamFault::Frame(FrameError::Empty) => RejectReason::EmptyFrame,
            StreamFault::Frame(FrameError::Truncated { .. }) => RejectReason::Truncated,
        }
    }
}

/// A delay drawn uniformly from [d/2, d], so that peers restarted together do not
/// redial in lockstep.
fn jitter(d: Duration) -> Duration {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(ms.div_ceil(2)..=ms))
}

impl Shared {
    /// Closes the endpoint and the inbound budgets so every task winds down.
    fn stop(&self) {
        for b in self.budgets.iter() {
            b.close();
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
    }

    fn check_frame(&self, to: ReplicaId, frame: &Bytes) -> Result<(), SendError> {
        if frame.is_empty() {
            return Err(SendError::Empty(to));
        }
        if frame.len() > self.max_frame {
            return Err(SendError::TooLarge {
                peer: to,
                len: frame.len(),
                max: self.max_frame,
            });
        }
        Ok(())
    }

    fn enqueue(&self, peer: &Peer, class: FrameClass, frame: Bytes) -> SendOutcome {
        if let Some(f) = &self.faults {
            if f.drops_to(peer.id) {
                self.metrics.dropped_fault(class);
                return SendOutcome::DroppedByFault;
            }
        }
        let pushed = lock(&peer.queues).push(class, frame, &self.tuning.queue);
        for victim in FrameClass::ALL {
            let n = pushed.evicted[victim.index()];
            if n > 0 {
                self.metrics.dropped_full(victim, n);
                debug!(local = self.local.0, peer = peer.id.0, class = %victim, frames = n,
                    "queued frames evicted for consensus traffic");
            }
        }
        if pushed.queued {
            peer.wake[class.index()].notify_waiters();
            SendOutcome::Queued
        } else {
            self.metrics.dropped_full(class, 1);
            debug!(local = self.local.0, peer = peer.id.0, %class, "queue full, frame dropped");
            SendOutcome::DroppedQueueFull
        }
    }

    fn set_connected(&self, peer: ReplicaId, up: bool) {
        let event = if up {
            PeerEvent::Connected(peer)
        } else {
            PeerEvent::Disconnected(peer)
        };
        // The event goes out while the watch is still locked, so whoever sees the new
        // set and subscribes afterwards never receives the event that made it.
        self.connected.send_modify(|s| {
            if up {
                s.insert(peer);
            } else {
                s.remove(&peer);
            }
            self.metrics.set_peers_connected(s.len());
            // No subscriber is fine: the watch holds the state.
            let _ = self.events.send(event);
        });
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let remote = incoming.remote_address();
            // A Retry keeps no state: a source that never receives our packets (a
            // spoofed one) ends here, before it can hold a handshake slot.
            if !incoming.remote_address_validated() {
                match incoming.retry() {
                    Ok(()) => self.metrics.retry_sent(),
                    // Unreachable: quinn may always retry an unvalidated address.
                    Err(e) => e.into_incoming().refuse(),
                }
                continue;
            }
            let slot = match self.admission.try_admit(remote.ip()) {
                Ok(slot) => slot,
                Err(reason) => {
                    self.metrics.reject(reason);
                    debug!(local = self.local.0, %remote, reason = reason.as_str(),
                        "inbound handshake refused");
                    incoming.refuse();
                    continue;
                }
            };
            let shared = self.clone();
            tokio::spawn(async move {
                let handshake = shared.handshake_inbound(incoming).await;
                drop(slot);
                let conn = match handshake {
                    Ok(c) => c,
                    Err(e) => {
                        if matches!(e, InboundFailed::Timeout(_)) {
                            shared.metrics.reject(RejectReason::HandshakeTimeout);
                        }
                        shared.metrics.connect_failed();
                        debug!(local = shared.local.0, %remote, error = %e, "inbound handshake failed");
                        return;
                    }
                };
                let peer = match identity::peer_id(&conn, &shared.set) {
                    Ok(p) => p,
                    Err(e) => {
                        // The verifier accepted the certificate, so this is unreachable
                        // unless the set changed; refuse all the same.
                        warn!(local = shared.local.0, %remote, error = %e, "unidentified peer");
                        conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"unidentified");
                        return;
                    }
                };
                if peer > shared.local {
                    shared.metrics.reject(RejectReason::WrongDirection);
                    warn!(local = shared.local.0, peer = peer.0, %remote,
                        "higher id dialled us; the lower id dials");
                    conn.close(
                        VarInt::from_u32(CLOSE_WRONG_DIRECTION),
                        b"the lower id dials",
                    );
                    return;
                }
                shared.run_connection(peer, conn, None).await;
            });
        }
    }

    async fn handshake_inbound(
        &self,
        incoming: quinn::Incoming,
    ) -> Result<Connection, InboundFailed> {
        let connecting = incoming.accept().map_err(InboundFailed::Handshake)?;
        let timeout = self.tuning.handshake_timeout;
        tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| InboundFailed::Timeout(timeout))?
            .map_err(InboundFailed::Handshake)
    }

    async fn dial_loop(self: Arc<Self>, peer: ReplicaId) {
        let mut backoff = self.tuning.backoff_initial;
        let mut warned_version = false;
        loop {
            match self.dial(peer).await {
                Ok((conn, first)) => {
                    let began = Instant::now();
                    self.run_connection(peer, conn, Some(first)).await;
                    // Only a connection that lived a while resets the backoff, so a
                    // peer that accepts and drops at once is not redialled in a loop.
                    if began.elapsed() >= self.tuning.backoff_max {
                        backoff = self.tuning.backoff_initial;
                    }
                }
                Err(e) => {
                    self.metrics.connect_failed();
                    if e.other_wire_version() && !warned_version {
                        // Else it looks like any peer that is down: say it once.
                        warned_version = true;
                        warn!(local = self.local.0, peer = peer.0, error = %e,
                            ours = %String::from_utf8_lossy(crate::ALPN),
                            "the peer runs another wire version; every validator must run the same stele version");
                    } else {
                        debug!(local = self.local.0, peer = peer.0, error = %e, retry_in = ?backoff,
                            "dial failed");
                    }
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.tuning.backoff_max);
        }
    }

    /// Dials `peer` and waits until it has accepted us: in TLS 1.3 the client's
    /// handshake ends before the server has checked the client's certificate, so the
    /// first stream the server opens is what confirms the connection.
    async fn dial(&self, peer: ReplicaId) -> Result<(Connection, RecvStream), DialError> {
        let addr_str = self
            .set
            .info(peer)
            .map(|v| v.p2p_addr.clone())
            .unwrap_or_default();
        let addr = tokio::net::lookup_host(addr_str.as_str())
            .await
            .map_err(|source| DialError::Resolve {
                addr: addr_str.clone(),
                source,
            })?
            .next()
            .ok_or(DialError::NoAddress {
                addr: addr_str.clone(),
            })?;
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, &identity::server_name(peer))
            .map_err(|source| DialError::Connect { addr, source })?;
        let timeout = self.tuning.dial_timeout;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| DialError::Timeout { addr, timeout })?
            .map_err(|source| DialError::Handshake { addr, source })?;
        // The verifier checked the key against the server name we dialled; confirm.
        let found = identity::peer_id(&conn, &self.set)
            .map_err(|source| DialError::Identity { addr, source })?;
        if found != peer {
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"wrong peer");
            return Err(DialError::Identity {
                addr,
                source: IdentityError::WrongPeer {
                    expected: peer,
                    found,
                },
            });
        }
        match tokio::time::timeout(timeout, conn.accept_uni()).await {
            Ok(Ok(first)) => Ok((conn, first)),
            Ok(Err(source)) => Err(DialError::Refused { addr, source }),
            Err(_) => {
                conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"not confirmed");
                Err(DialError::Timeout { addr, timeout })
            }
        }
    }

    /// Serves one authenticated connection until it closes; `first` is the stream
    /// that confirmed a dialled connection.
    async fn run_connection(
        self: &Arc<Self>,
        peer: ReplicaId,
        conn: Connection,
        first: Option<RecvStream>,
    ) {
        let Some(p) = self.peers.get(peer.index()) else {
            return;
        };
        debug_assert_ne!(peer, self.local);
        // Counted before the connection is announced, so whoever sees the event sees
        // the count.
        self.metrics.connection_established();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let replaced = lock(&p.conn).replace((generation, conn.clone()));
        let was_replaced = replaced.is_some();
        match replaced {
            Some((_, old)) => old.close(VarInt::from_u32(CLOSE_REPLACED), b"replaced"),
            None => self.set_connected(peer, true),
        }
        info!(local = self.local.0, peer = peer.0, remote = %conn.remote_address(),
            replaced = was_replaced, "peer connected");
        for class in FrameClass::ALL {
            tokio::spawn(self.clone().writer(peer, class, conn.clone()));
        }
        if let Some(stream) = first {
            tokio::spawn(self.clone().reader(peer, conn.clone(), stream));
        }
        let reason = loop {
            match conn.accept_uni().await {
                Ok(stream) => {
                    tokio::spawn(self.clone().reader(peer, conn.clone(), stream));
                }
                Err(e) => break e,
            }
        };
        let current = {
            let mut slot = lock(&p.conn);
            let current = slot.as_ref().is_some_and(|(g, _)| *g == generation);
            if current {
                *slot = None;
            }
            current
        };
        if current {
            self.set_connected(peer, false);
        }
        info!(local = self.local.0, peer = peer.0, %reason, "peer connection closed");
    }

    /// Feeds one class's queue for `peer` into one stream of `conn`.
    async fn writer(self: Arc<Self>, peer: ReplicaId, class: FrameClass, conn: Connection) {
        if let Err(e) = self.write_stream(peer, class, &conn).await {
            debug!(local = self.local.0, peer = peer.0, %class, error = %e, "writer stopped");
        }
    }

    async fn write_stream(
        &self,
        peer: ReplicaId,
        class: FrameClass,
        conn: &Connection,
    ) -> Result<(), WriteFailed> {
        let Some(p) = self.peers.get(peer.index()) else {
            return Ok(());
        };
        let mut stream = conn.open_uni().await?;
        // Consensus bytes leave before any relay or bulk byte that is not yet sent.
        stream.set_priority(i32::from(class == FrameClass::Consensus))?;
        stream.write_all(&[class.tag()]).await?;
        let wake = &p.wake[class.index()];
        let mut batch = Vec::with_capacity(WRITE_BATCH_FRAMES);
        let mut chunks = Vec::with_capacity(2 * WRITE_BATCH_FRAMES);
        loop {
            // Register for a wake-up before looking, so a push in between is not lost.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            lock(&p.queues).pop_batch(class, WRITE_BATCH_FRAMES, WRITE_BATCH_BYTES, &mut batch);
            if batch.is_empty() {
                tokio::select! {
                    _ = &mut notified => continue,
                    _ = conn.closed() => return Ok(()),
                }
            }
            let frames = batch.len() as u64;
            let mut bytes = 0u64;
            let mut headers = BytesMut::with_capacity(frame::HEADER_LEN * batch.len());
            for f in batch.drain(..) {
                bytes += f.len() as u64;
                headers.extend_from_slice(&frame::header(f.len()));
                chunks.push(headers.split().freeze());
                chunks.push(f);
            }
            stream.write_all_chunks(&mut chunks).await?;
            chunks.clear();
            self.metrics.sent(class, frames, bytes);
        }
    }

    /// Reads one stream from `peer`; a framing error closes the whole connection.
    async fn reader(self: Arc<Self>, peer: ReplicaId, conn: Connection, mut stream: RecvStream) {
        if let Err(fault) = self.read_stream(peer, &conn, &mut stream).await {
            let reason = fault.reason();
            self.metrics.reject(reason);
            warn!(local = self.local.0, peer = peer.0, remote = %conn.remote_address(),
                error = %fault, "bad frame, closing the connection");
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), reason.as_str().as_bytes());
        }
    }

    async fn read_stream(
        &self,
        peer: ReplicaId,
        conn: &Connection,
        stream: &mut RecvStream,
    ) -> Result<(), StreamFault> {
        let mut tag = [0u8; 1];
        if stream.read_exact(&mut tag).await.is_err() {
            // Finished or reset before naming its class: nothing was sent on it.
            return Ok(());
        }
        let class = FrameClass::from_tag(tag[0]).ok_or(StreamFault::UnknownClass(tag[0]))?;
        let c = class.index();
        let Some(budget) = self.budgets.get(peer.index()) else {
            return Ok(());
        };
        let mut decoder = FrameDecoder::new(self.max_frame);
        loop {
            let frame = loop {
                if let Some(f) = decoder.next_frame()? {
                    break f;
                }
                match stream.read_chunk(READ_CHUNK, true).await {
                    Ok(Some(chunk)) => decoder.feed(&chunk.bytes),
                    Ok(None) => {
                        decoder.finish()?;
                        return Ok(());
                    }
                    // Connection or stream gone: nothing of the peer's to count.
                    Err(_) => return Ok(()),
                }
            };
            // Stamped before any queueing: the engine's skew check relies on it.
            let arrival_unix_ms = unix_ms();
            if let Some(f) = &self.faults {
                if f.drops_from(peer) {
                    self.metrics.dropped_fault(class);
                    continue;
                }
            }
            self.metrics.received(class, frame.len());
            // Wait for room in this peer's budget: a node that does not keep up stops
            // our reads, and QUIC flow control then stops the sender.
            let room = tokio::select! {
                r = budget.room(class, frame.len()) => r,
                _ = conn.closed() => return Ok(()),
            };
            let Some(room) = room else {
                return Ok(()); // shutting down
            };
            let item = InboundFrame {
                from: peer,
                class,
                arrival_unix_ms,
                frame,
            };
            // Never waits: the channel holds every peer's whole frame budget.
            let delivered = tokio::select! {
                r = self.inbound[c].send(item) => r.is_ok(),
                _ = conn.closed() => false,
            };
            if !delivered {
                return Ok(()); // the room is freed as it drops
            }
            room.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_with(code: quinn::TransportErrorCode) -> DialError {
        DialError::Handshake {
            addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            source: quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: Bytes::new(),
            }),
        }
    }

    /// Only the peer's `no_application_protocol` alert reads as another wire version (it
    /// is warned about once); any other failed handshake is a peer down or faulty.
    #[test]
    fn only_the_alpn_alert_reads_as_another_wire_version() {
        assert!(closed_with(quinn::TransportErrorCode::crypto(120)).other_wire_version());
        // bad_certificate, handshake_failure, a protocol violation: not a version.
        for code in [
            quinn::TransportErrorCode::crypto(42),
            quinn::TransportErrorCode::crypto(40),
            quinn::TransportErrorCode::PROTOCOL_VIOLATION,
        ] {
            assert!(!closed_with(code).other_wire_version(), "{code:?}");
        }
        let timeout = DialError::Timeout {
            addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            timeout: Duration::from_secs(1),
        };
        assert!(!timeout.other_wire_version());
    }
}
