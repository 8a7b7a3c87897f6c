//! Real QUIC endpoints on 127.0.0.1: authentication, framing limits, reconnection,
//! garbage datagrams, a silent-Initial flood, bounded queues and the fault hook.
//!
//! Every socket is bound to 127.0.0.1:0 before the genesis is written, so the genesis
//! addresses are the real ones and tests never collide on ports. Every wait is on a
//! condition with a deadline.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stele_crypto::{ChainId, KeyPair};
use stele_transport::{
    testkit, unix_ms, Faults, FrameClass, Inbound, InboundFrame, PeerEvent, QueueLimits,
    RejectReason, SendOutcome, Transport, TransportConfig, Tuning,
};
use stele_types::{max_frame_len, Genesis, Params, ReplicaId, ValidatorInfo};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(15);

/// Protocol parameters that make the largest frame small (a few KiB), so tests can
/// fill queues and exceed the limit cheaply.
fn small_params() -> Params {
    Params {
        checkpoint_interval: 1,
        window: 2,
        max_in_flight: 1,
        max_block_bytes: 1400,
        relay_batch_txs: 1,
        transfer_batch_blocks: 1,
        ..Params::default()
    }
}

fn genesis(keys: &[KeyPair], addrs: &[SocketAddr], params: Params) -> Genesis {
    let g = Genesis {
        chain_id: ChainId::new("transport-test").unwrap(),
        genesis_time_ms: 0,
        validators: keys
            .iter()
            .zip(addrs)
            .enumerate()
            .map(|(i, (k, a))| ValidatorInfo {
                key: k.public(),
                p2p_addr: a.to_string(),
                api_addr: format!("127.0.0.1:{}", 1 + i),
            })
            .collect(),
        accounts: vec![],
        params,
    };
    g.validate().unwrap();
    g
}

fn keys(seed: u8, n: usize) -> Vec<KeyPair> {
    (0..n)
        .map(|i| KeyPair::from_seed([seed.wrapping_add(i as u8); 32]))
        .collect()
}

fn sockets(n: usize) -> (Vec<UdpSocket>, Vec<SocketAddr>) {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    (socks, addrs)
}

fn fast_tuning(g: &Genesis) -> Tuning {
    Tuning {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        keep_alive: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(5),
        ..Tuning::for_genesis(g)
    }
}

fn start(g: &Genesis, key: &KeyPair, socket: UdpSocket) -> (Transport, Inbound) {
    start_with(g, key, socket, fast_tuning(g), None)
}

fn start_with(
    g: &Genesis,
    key: &KeyPair,
    socket: UdpSocket,
    tuning: Tuning,
    faults: Option<Arc<Faults>>,
) -> (Transport, Inbound) {
    Transport::start(TransportConfig {
        genesis: g.clone(),
        key: key.clone(),
        socket: Some(socket),
        tuning,
        faults,
    })
    .unwrap()
}

/// A network of `n` validators, all started.
fn network(n: usize, seed: u8) -> (Genesis, Vec<KeyPair>, Vec<(Transport, Inbound)>) {
    let keys = keys(seed, n);
    let (socks, addrs) = sockets(n);
    let g = genesis(&keys, &addrs, small_params());
    let nodes = socks
        .into_iter()
        .zip(&keys)
        .map(|(s, k)| start(&g, k, s))
        .collect();
    (g, keys, nodes)
}

async fn wait_connected_to(t: &Transport, peers: &[u16]) {
    let want: BTreeSet<ReplicaId> = peers.iter().map(|&p| ReplicaId(p)).collect();
    let mut rx = t.connected();
    timeout(DEADLINE, rx.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "validator {} not connected to exactly {want:?} in time (has {:?})",
                t.local_id(),
                *t.connected().borrow()
            )
        })
        .unwrap();
}

async fn wait_full_mesh(nodes: &[(Transport, Inbound)]) {
    let n = nodes.len() as u16;
    for (t, _) in nodes {
        let others: Vec<u16> = (0..n).filter(|&i| i != t.local_id().0).collect();
        wait_connected_to(t, &others).await;
    }
}

/// Polls a counter-like condition until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = timeout(DEADLINE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for: {what}");
}

async fn recv(inbound: &mut Inbound) -> InboundFrame {
    timeout(DEADLINE, inbound.recv())
        .await
        .expect("a frame within the deadline")
        .expect("transport still running")
}

fn payload(from: u16, to: u16, class: FrameClass, seq: u32) -> Bytes {
    Bytes::from(format!("{from}>{to}:{}:{seq}", class.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_exchange_frames_all_to_all() {
    let (_g, _keys, mut nodes) = network(4, 10);
    wait_full_mesh(&nodes).await;
    let before = unix_ms();
    const PER_CLASS: u32 = 20;
    for (t, _) in &nodes {
        let me = t.local_id().0;
        for to in (0..4u16).filter(|&p| p != me) {
            for class in FrameClass::ALL {
                for seq in 0..PER_CLASS {
                    let out = t.send(ReplicaId(to), class, payload(me, to, class, seq));
                    assert_eq!(out, Ok(SendOutcome::Queued));
                }
            }
        }
        // And one broadcast each, which reaches the three others.
        let b = Bytes::from(format!("broadcast from {me}"));
        assert_eq!(t.broadcast(FrameClass::Consensus, b), Ok(3));
    }
    for (t, inbound) in &mut nodes {
        let me = t.local_id().0;
        let expected = 3 * (3 * PER_CLASS as usize + 1);
        let mut next_seq: HashMap<(u16, FrameClass), u32> = HashMap::new();
        let mut broadcasts = BTreeSet::new();
        for _ in 0..expected {
            let f = recv(inbound).await;
            assert!(f.arrival_unix_ms >= before && f.arrival_unix_ms <= unix_ms());
            let text = String::from_utf8(f.frame.to_vec()).unwrap();
            if let Some(from) = text.strip_prefix("broadcast from ") {
                assert_eq!(from, f.from.0.to_string());
                broadcasts.insert(f.from.0);
                continue;
            }
            // Within one class from one peer, frames arrive in order.
            let seq = next_seq.entry((f.from.0, f.class)).or_insert(0);
            assert_eq!(text, payload(f.from.0, me, f.class, *seq));
            *seq += 1;
        }
        assert_eq!(broadcasts.len(), 3, "validator {me} got every broadcast");
        assert!(next_seq.values().all(|&s| s == PER_CLASS), "{next_seq:?}");
        assert!(inbound.try_recv().is_none(), "nothing extra delivered");
        let m = t.metrics().snapshot();
        assert_eq!(m.frames_in.iter().sum::<u64>() as usize, expected);
        assert_eq!(m.peers_connected, 3);
        assert!(m.rejected.iter().all(|&r| r == 0), "{m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_dialling_in_is_refused() {
    // Slot 0 (the id that dials everyone) is bound by an impostor whose key is not in
    // the genesis; the real validators 1..3 never dial 0, so every refusal they count
    // comes from their side of the handshake as servers.
    let real = keys(20, 4);
    let (mut socks, addrs) = sockets(4);
    let g = genesis(&real, &addrs, small_params());
    let impostor = KeyPair::from_seed([99; 32]);
    let mut forged = g.clone();
    forged.validators[0].key = impostor.public();
    let imp_sock = socks.remove(0);
    let nodes: Vec<_> = socks
        .into_iter()
        .zip(&real[1..])
        .map(|(s, k)| start(&g, k, s))
        .collect();
    let (imp, _imp_in) = start(&forged, &impostor, imp_sock);

    for (t, _) in &nodes {
        eventually("the impostor's handshake refused by the server", || {
            t.metrics().snapshot().rejected(RejectReason::UnknownKey) >= 1
        })
        .await;
    }
    // The real validators still connect among themselves, and never to the impostor.
    wait_connected_to(&nodes[0].0, &[2, 3]).await;
    wait_connected_to(&nodes[1].0, &[1, 3]).await;
    wait_connected_to(&nodes[2].0, &[1, 2]).await;
    eventually("the impostor counts its failed dials", || {
        imp.metrics().snapshot().connect_failures >= 3
    })
    .await;
    assert!(imp.connected().borrow().is_empty());
    assert_eq!(imp.metrics().snapshot().connections_established, 0);
    // Frames the impostor queued never reach anyone.
    assert_eq!(
        imp.send(
            ReplicaId(1),
            FrameClass::Consensus,
            Bytes::from_static(b"x")
        ),
        Ok(SendOutcome::Queued)
    );
    for (t, _) in &nodes {
        assert_eq!(t.metrics().snapshot().frames_in, [0, 0, 0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostor_listening_at_a_validator_address_is_refused() {
    // Slot 3 (dialled by everyone, dials no one) is bound by an impostor: the real
    // validators 0..2 refuse its certificate as clients.
    let real = keys(30, 4);
    let (mut socks, addrs) = sockets(4);
    let g = genesis(&real, &addrs, small_params());
    let impostor = KeyPair::from_seed([98; 32]);
    let mut forged = g.clone();
    forged.validators[3].key = impostor.public();
    let imp_sock = socks.pop().unwrap();
    let (imp, _imp_in) = start(&forged, &impostor, imp_sock);
    let nodes: Vec<_> = socks
        .into_iter()
        .zip(&real[..3])
        .map(|(s, k)| start(&g, k, s))
        .collect();

    for (t, _) in &nodes {
        eventually("the impostor's certificate refused by the client", || {
            t.metrics().snapshot().rejected(RejectReason::UnknownKey) >= 1
        })
        .await;
    }
    wait_connected_to(&nodes[0].0, &[1, 2]).await;
    wait_connected_to(&nodes[1].0, &[0, 2]).await;
    wait_connected_to(&nodes[2].0, &[0, 1]).await;
    assert!(imp.connected().borrow().is_empty());
    assert_eq!(imp.metrics().snapshot().connections_established, 0);
    for (t, _) in &nodes {
        assert!(!t.connected().borrow().contains(&ReplicaId(3)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_only_that_connection() {
    let keys = keys(40, 4);
    let (mut socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    // Validator 0 runs a genesis with larger blocks, so its own limit lets it send a
    // frame above everyone else's limit.
    let big = genesis(
        &keys,
        &addrs,
        Params {
            max_block_bytes: 64 << 10,
            ..small_params()
        },
    );
    let limit = max_frame_len(&g);
    assert!(max_frame_len(&big) > limit + 1);
    let s0 = socks.remove(0);
    let mut nodes = vec![start(&big, &keys[0], s0)];
    for (s, k) in socks.into_iter().zip(&keys[1..]) {
        nodes.push(start(&g, k, s));
    }
    wait_full_mesh(&nodes).await;
    let mut events_2 = nodes[2].0.events();

    let oversized = Bytes::from(vec![0xAB; limit + 1]);
    assert_eq!(
        nodes[0]
            .0
            .send(ReplicaId(1), FrameClass::Consensus, oversized),
        Ok(SendOutcome::Queued)
    );
    // Meanwhile validator 2 keeps talking to validator 1.
    for seq in 0..50 {
        let f = payload(2, 1, FrameClass::Consensus, seq);
        nodes[2]
            .0
            .send(ReplicaId(1), FrameClass::Consensus, f)
            .unwrap();
    }
    let m1 = nodes[1].0.metrics().clone();
    eventually("validator 1 refuses the oversized frame", || {
        m1.snapshot().rejected(RejectReason::Oversized) == 1
    })
    .await;
    let mut from_2 = 0;
    while from_2 < 50 {
        let f = recv(&mut nodes[1].1).await;
        assert!(f.frame.len() <= limit, "an oversized frame was delivered");
        assert_eq!(f.from, ReplicaId(2));
        assert_eq!(f.frame, payload(2, 1, FrameClass::Consensus, from_2));
        from_2 += 1;
    }
    // Validator 0 reconnects and is heard again.
    let t0 = nodes[0].0.clone();
    let probe = timeout(DEADLINE, async {
        loop {
            t0.send(
                ReplicaId(1),
                FrameClass::Consensus,
                Bytes::from_static(b"probe"),
            )
            .unwrap();
            if let Ok(Some(f)) = timeout(Duration::from_millis(100), nodes[1].1.recv()).await {
                break f;
            }
        }
    })
    .await
    .expect("validator 0 heard again after reconnecting");
    assert_eq!(
        (probe.from, &probe.frame[..]),
        (ReplicaId(0), &b"probe"[..])
    );
    // Nobody else noticed: validator 2 never lost a connection.
    loop {
        match events_2.try_recv() {
            Ok(PeerEvent::Disconnected(p)) => panic!("validator 2 lost {p}"),
            Ok(PeerEvent::Connected(_)) => {}
            Err(_) => break,
        }
    }
    assert_eq!(nodes[2].0.metrics().snapshot().peers_connected, 3);
    assert_eq!(m1.snapshot().rejected(RejectReason::Oversized), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_is_reconnected() {
    let (g, keys, mut nodes) = network(4, 50);
    wait_full_mesh(&nodes).await;
    let addr_1 = nodes[1].0.local_addr().unwrap();
    let established_0 = nodes[0].0.metrics().snapshot().connections_established;

    // Validator 1 is dialled by 0 and dials 2 and 3: its restart exercises both sides.
    let (t1, in1) = nodes.remove(1);
    t1.shutdown().await;
    drop((t1, in1));
    for (t, _) in &nodes {
        let mut rx = t.connected();
        timeout(DEADLINE, rx.wait_for(|s| !s.contains(&ReplicaId(1))))
            .await
            .expect("peers notice validator 1 went away")
            .unwrap();
    }
    // The old endpoint releases its socket once its tasks have wound down.
    let socket = timeout(DEADLINE, async {
        loop {
            match UdpSocket::bind(addr_1) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("validator 1's address free again");
    nodes.insert(1, start(&g, &keys[1], socket));
    wait_full_mesh(&nodes).await;
    assert!(nodes[0].0.metrics().snapshot().connections_established > established_0);

    for (from, to) in [(0u16, 1u16), (1, 0), (1, 3), (3, 1)] {
        let f = payload(from, to, FrameClass::Consensus, 0);
        let t = nodes[from as usize].0.clone();
        t.send(ReplicaId(to), FrameClass::Consensus, f.clone())
            .unwrap();
        let got = recv(&mut nodes[to as usize].1).await;
        assert_eq!((got.from, got.frame), (ReplicaId(from), f));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_datagrams_do_not_disturb_the_endpoint() {
    use rand::{Rng, SeedableRng};
    let (_g, _keys, mut nodes) = network(4, 60);
    wait_full_mesh(&nodes).await;
    let target = nodes[0].0.local_addr().unwrap();
    let mut events_0 = nodes[0].0.events();
    let established = nodes[0].0.metrics().snapshot().connections_established;

    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let sender = nodes[1].0.clone();
    for i in 0..2000u32 {
        let len = rng.gen_range(1..=1500);
        let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if i % 3 == 0 {
            // Looks like a QUIC v1 long-header Initial packet.
            d[0] = 0xC0 | (d[0] & 0x0F);
            if d.len() >= 5 {
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
        }
        junk.send_to(&d, target).unwrap();
        if i % 20 == 0 {
            let f = payload(1, 0, FrameClass::Consensus, i / 20);
            sender.send(ReplicaId(0), FrameClass::Consensus, f).unwrap();
        }
    }
    for seq in 0..100 {
        let f = recv(&mut nodes[0].1).await;
        assert_eq!(f.frame, payload(1, 0, FrameClass::Consensus, seq));
    }
    // A frame sent after the flood still goes through, both ways.
    nodes[0]
        .0
        .send(
            ReplicaId(2),
            FrameClass::Relay,
            Bytes::from_static(b"after"),
        )
        .unwrap();
    assert_eq!(&recv(&mut nodes[2].1).await.frame[..], b"after");
    let event = events_0.try_recv();
    assert!(
        event.is_err(),
        "no connection event on the flooded endpoint, found {event:?}"
    );
    let m = nodes[0].0.metrics().snapshot();
    assert_eq!(m.connections_established, established);
    assert_eq!(m.peers_connected, 3);
    assert!(m.rejected.iter().all(|&r| r == 0), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_cannot_grow_the_senders_queue() {
    let keys = keys(70, 4);
    let (socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    let max = max_frame_len(&g);
    let limits = QueueLimits {
        frames: [64, 64, 64],
        bytes: [4 * max; 3],
        total_bytes: 4 * max,
    };
    let mut nodes = Vec::new();
    for (i, (s, k)) in socks.into_iter().zip(&keys).enumerate() {
        let mut tuning = fast_tuning(&g);
        if i == 0 {
            tuning.queue = limits.clone();
        }
        if i == 1 {
            // Validator 1's node never reads: the bulk part of validator 0's budget
            // fills at once, while its consensus reserve has room for the frames
            // sent below.
            tuning.inbound_peer_frames = 64;
            tuning.inbound_peer_bytes = 2 * max;
            tuning.inbound_consensus_reserve = max;
        }
        nodes.push(start_with(&g, k, s, tuning, None));
    }
    wait_full_mesh(&nodes).await;
    let t0 = nodes[0].0.clone();
    let m0 = t0.metrics().clone();

    // Offer far more bulk data than the path can hold: QUIC's default stream window
    // (1.25 MB) plus validator 1's inbound budget plus our queue.
    let frame = Bytes::from(vec![0x5A; max]);
    let rounds = 200;
    let per_round = 25;
    let offered = rounds * per_round;
    let (mut queued, mut dropped) = (0u64, 0u64);
    for _ in 0..rounds {
        for _ in 0..per_round {
            match t0.send(ReplicaId(1), FrameClass::Bulk, frame.clone()) {
                Ok(SendOutcome::Queued) => queued += 1,
                Ok(SendOutcome::DroppedQueueFull) => dropped += 1,
                other => panic!("unexpected {other:?}"),
            }
            let q = t0.queue_stats(ReplicaId(1)).unwrap();
            assert!(q.total_bytes() <= limits.total_bytes, "{q:?}");
            assert!(q.frames[2] <= limits.frames[2], "{q:?}");
        }
        // Let the writer run between rounds.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let m = m0.snapshot();
    assert_eq!(queued + dropped, offered as u64);
    assert!(dropped > 0, "the queue never filled: {m:?}");
    assert_eq!(m.dropped_queue_full[2], dropped);
    let path_bound = (4 << 20) as u64;
    assert!(
        m.bytes_out[2] <= path_bound,
        "{} bytes written to a peer that reads nothing",
        m.bytes_out[2]
    );
    assert!(nodes[1].1.pending()[2] <= 8);

    // The queue is full of bulk frames; consensus frames still get in (evicting bulk)
    // and reach validator 1 on their own stream while bulk stays stalled.
    let bulk_drops_before = m.dropped_queue_full[2];
    for seq in 0..10 {
        let f = payload(0, 1, FrameClass::Consensus, seq);
        assert_eq!(
            t0.send(ReplicaId(1), FrameClass::Consensus, f),
            Ok(SendOutcome::Queued)
        );
    }
    let m = m0.snapshot();
    assert_eq!(m.dropped_queue_full[0], 0);
    assert!(m.dropped_queue_full[2] > bulk_drops_before);
    let m1 = nodes[1].0.metrics().clone();
    eventually("validator 1 receives the consensus frames", || {
        m1.snapshot().frames_in[0] == 10
    })
    .await;
    for seq in 0..10 {
        let f = nodes[1].1.try_recv().unwrap();
        assert_eq!(f.class, FrameClass::Consensus);
        assert_eq!(f.frame, payload(0, 1, FrameClass::Consensus, seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hook_drops_traffic_to_and_from_chosen_peers() {
    let keys = keys(80, 4);
    let (socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    let faults = Arc::new(Faults::new());
    let mut nodes = Vec::new();
    for (i, (s, k)) in socks.into_iter().zip(&keys).enumerate() {
        let f = (i == 0).then(|| faults.clone());
        nodes.push(start_with(&g, k, s, fast_tuning(&g), f));
    }
    wait_full_mesh(&nodes).await;
    faults.drop_to(ReplicaId(1), true);
    faults.drop_from(ReplicaId(2), true);

    let t0 = nodes[0].0.clone();
    let f = Bytes::from_static(b"to 1");
    assert_eq!(
        t0.send(ReplicaId(1), FrameClass::Consensus, f),
        Ok(SendOutcome::DroppedByFault)
    );
    nodes[2]
        .0
        .send(
            ReplicaId(0),
            FrameClass::Consensus,
            Bytes::from_static(b"from 2"),
        )
        .unwrap();
    nodes[3]
        .0
        .send(
            ReplicaId(0),
            FrameClass::Consensus,
            Bytes::from_static(b"from 3"),
        )
        .unwrap();
    // Validator 3's frame arrives; validator 2's, sent earlier on another connection,
    // is counted as dropped.
    let got = recv(&mut nodes[0].1).await;
    assert_eq!((got.from, &got.frame[..]), (ReplicaId(3), &b"from 3"[..]));
    let m0 = t0.metrics().clone();
    eventually("the frame from validator 2 is dropped by the hook", || {
        m0.snapshot().dropped_fault[0] == 2
    })
    .await;
    assert!(nodes[0].1.try_recv().is_none());

    faults.heal_all();
    t0.send(
        ReplicaId(1),
        FrameClass::Consensus,
        Bytes::from_static(b"healed"),
    )
    .unwrap();
    let got = recv(&mut nodes[1].1).await;
    assert_eq!(&got.frame[..], b"healed");
}

fn quic_client() -> quinn::Endpoint {
    testkit::quic_client().unwrap()
}

/// A validator of the previous wire format (ALPN `stele/1`: txs that carried their chain
/// id) fails the handshake with an error that names the protocol, rather than
/// connecting and having its every frame refused as malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_wire_version_fails_the_handshake_naming_the_protocol() {
    assert_eq!(stele_transport::ALPN, b"stele/2");
    let (g, _keys, _nodes) = network(4, 95);
    let addr: SocketAddr = g.validators[0].p2p_addr.parse().unwrap();
    let dial = |alpn: &'static [u8]| async move {
        let client = testkit::quic_client_speaking(alpn).unwrap();
        let connecting = client.connect(addr, "r0.stele").unwrap();
        let answer = timeout(DEADLINE, connecting)
            .await
            .expect("an answer in time");
        let error = answer.expect_err("the handshake fails").to_string();
        client.close(0u32.into(), b"done");
        error
    };
    let old = dial(b"stele/1").await;
    assert!(old.contains("known protocol"), "{old}");
    // The same client speaking this version gets past the protocol and fails only on
    // the validator's certificate, which it does not trust.
    let current = dial(stele_transport::ALPN).await;
    assert!(!current.contains("known protocol"), "{current}");
    assert!(current.contains("certificate"), "{current}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_reconnects_through_a_silent_initial_flood() {
    let keys = keys(90, 4);
    let (socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    // Default tuning: the handshake bounds and the backoff are what is under test.
    let tuning = Tuning::for_genesis(&g);
    let mut nodes: Vec<_> = socks
        .into_iter()
        .zip(&keys)
        .map(|(s, k)| start_with(&g, k, s, tuning.clone(), None))
        .collect();
    wait_full_mesh(&nodes).await;

    // Validator 3 accepts from everyone; the flood aims at it.
    let target = nodes[3].0.local_addr().unwrap();
    let initials = testkit::capture_initials(64).await.unwrap();
    let flood = testkit::SilentInitialFlood::start(target, initials).unwrap();
    eventually("the flood is under way", || flood.sent() >= 200).await;

    // Validator 1 restarts (it dials validator 3) while the flood goes on.
    let addr_1 = nodes[1].0.local_addr().unwrap();
    let (t1, in1) = nodes.remove(1);
    t1.shutdown().await;
    drop((t1, in1));
    let mut rx = nodes[2].0.connected();
    timeout(DEADLINE, rx.wait_for(|s| !s.contains(&ReplicaId(1))))
        .await
        .expect("validator 3 notices validator 1 went away")
        .unwrap();
    let socket = timeout(DEADLINE, async {
        loop {
            match UdpSocket::bind(addr_1) {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("validator 1's address free again");
    let began = std::time::Instant::now();
    nodes.insert(1, start_with(&g, &keys[1], socket, tuning.clone(), None));
    let mut rx = nodes[1].0.connected();
    let reconnected = timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.contains(&ReplicaId(3))),
    )
    .await;
    let took = began.elapsed();
    let m3 = nodes[3].0.metrics().snapshot();
    eprintln!(
        "validator 1 reconnected to 3 under the flood: {} after {took:?}; flood datagrams {}; \
         validator 3 refusals {:?}",
        reconnected.is_ok(),
        flood.sent(),
        m3.rejected
    );
    assert!(
        reconnected.is_ok(),
        "validator 1 not reconnected to 3 within 10 s under a silent-Initial flood \
         ({} handshakes refused as busy)",
        m3.rejected(RejectReason::HandshakesBusy)
    );
    wait_connected_to(&nodes[3].0, &[0, 1, 2]).await;
    // The flood was answered with Retries and never held a slot.
    assert!(m3.retries_sent >= 64, "{m3:?}");
    assert_eq!(m3.rejected(RejectReason::HandshakesBusy), 0, "{m3:?}");
    assert_eq!(m3.rejected(RejectReason::HandshakeTimeout), 0, "{m3:?}");

    // Frames flow both ways while the flood goes on.
    for (from, to) in [(1u16, 3u16), (3, 1)] {
        let f = payload(from, to, FrameClass::Consensus, 0);
        let t = nodes[from as usize].0.clone();
        t.send(ReplicaId(to), FrameClass::Consensus, f.clone())
            .unwrap();
        let got = recv(&mut nodes[to as usize].1).await;
        assert_eq!((got.from, got.frame), (ReplicaId(from), f));
    }
    drop(flood);
}

/// Whether `d` is a client's QUIC v1 Initial carrying a token (the answer to a Retry).
fn initial_with_token(d: &[u8]) -> bool {
    if d.len() < 7 || d[0] & 0xF0 != 0xC0 || d[1..5] != 1u32.to_be_bytes() {
        return false;
    }
    let scid_at = 6 + usize::from(d[5]);
    let Some(&scid_len) = d.get(scid_at) else {
        return false;
    };
    let token_at = scid_at + 1 + usize::from(scid_len);
    let Some(&first) = d.get(token_at) else {
        return false;
    };
    // A varint: the top two bits give its length; the token length is non-zero iff
    // any of its value bits is set.
    let len = 1usize << (first >> 6);
    d.get(token_at..token_at + len)
        .is_some_and(|v| v[0] & 0x3F != 0 || v[1..].iter().any(|&b| b != 0))
}

/// A real QUIC client that dials `server` through a relay bound on `via`: the relay
/// passes everything until the client's Initial carrying the Retry token is through,
/// then drops what the client sends. The server sees a validated address that goes
/// silent mid-handshake. Returns the relay task and the client's pending connection.
async fn silent_validated_client(
    client: &quinn::Endpoint,
    server: SocketAddr,
    via: &str,
) -> (tokio::task::JoinHandle<()>, quinn::Connecting) {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind(via).await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let relay = tokio::spawn(async move {
        let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
        let mut client_addr = None;
        let mut silent = false;
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut up) => {
                    client_addr = Some(from);
                    if !silent {
                        let _ = back.send_to(&up[..n], server).await;
                        silent = initial_with_token(&up[..n]);
                    }
                }
                Ok((n, _)) = back.recv_from(&mut down) => {
                    if let Some(c) = client_addr {
                        let _ = front.send_to(&down[..n], c).await;
                    }
                }
            }
        }
    });
    (relay, client.connect(front_addr, "r3.stele").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validated_silent_clients_hold_a_slot_briefly_and_two_per_source() {
    let keys = keys(100, 4);
    let (socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    let tuning = Tuning::for_genesis(&g);
    assert_eq!(tuning.max_handshakes_per_source, 2);
    let nodes: Vec<_> = socks
        .into_iter()
        .zip(&keys)
        .map(|(s, k)| start_with(&g, k, s, tuning.clone(), None))
        .collect();
    wait_full_mesh(&nodes).await;
    let target = nodes[3].0.local_addr().unwrap();
    let m3 = nodes[3].0.metrics().clone();

    // Three silent clients from 127.0.0.2, an address genesis does not list.
    let client = quic_client();
    let mut attackers = Vec::new();
    for _ in 0..3 {
        attackers.push(silent_validated_client(&client, target, "127.0.0.2:0").await);
    }
    let began = std::time::Instant::now();
    eventually("the third attempt from one source is refused", || {
        m3.snapshot().rejected(RejectReason::SourceHandshakesBusy) == 1
    })
    .await;
    eventually("the two silent handshakes are abandoned", || {
        m3.snapshot().rejected(RejectReason::HandshakeTimeout) == 2
    })
    .await;
    eprintln!(
        "two silent validated handshakes held their slots for {:?} (handshake_timeout {:?})",
        began.elapsed(),
        tuning.handshake_timeout
    );
    let m = m3.snapshot();
    assert!(
        m.retries_sent >= 3,
        "every attempt was validated first: {m:?}"
    );
    assert_eq!(m.rejected(RejectReason::HandshakesBusy), 0, "{m:?}");
    // The validators never noticed.
    assert_eq!(m.peers_connected, 3);
    for (relay, _) in &attackers {
        relay.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_take_more_inbound_buffer_by_spreading_over_classes() {
    let keys = keys(110, 4);
    let (socks, addrs) = sockets(4);
    let g = genesis(&keys, &addrs, small_params());
    let max = max_frame_len(&g);
    // Room for four largest frames from one peer waiting for validator 1's node.
    let budget = 4 * max;
    let mut nodes = Vec::new();
    for (i, (s, k)) in socks.into_iter().zip(&keys).enumerate() {
        let mut tuning = fast_tuning(&g);
        if i == 1 {
            tuning.inbound_peer_bytes = budget;
            tuning.inbound_consensus_reserve = max;
        }
        nodes.push(start_with(&g, k, s, tuning, None));
    }
    wait_full_mesh(&nodes).await;
    let m1 = nodes[1].0.metrics().clone();

    // Validator 0 (the Byzantine one) sends largest frames on every class; validator
    // 1's node reads nothing until the end.
    const PER_CLASS: u32 = 12;
    let t0 = nodes[0].0.clone();
    let big = |class: FrameClass, seq: u32| {
        let mut f = vec![0u8; max];
        let tag = format!("{}:{seq}", class.as_str());
        f[..tag.len()].copy_from_slice(tag.as_bytes());
        Bytes::from(f)
    };
    let send_class = |class: FrameClass| {
        for seq in 0..PER_CLASS {
            assert_eq!(
                t0.send(ReplicaId(1), class, big(class, seq)),
                Ok(SendOutcome::Queued)
            );
        }
    };
    send_class(FrameClass::Consensus);
    // Its budget's worth is buffered and one more frame is read, waiting for room.
    eventually("validator 0's consensus frames fill its budget", || {
        m1.snapshot().frames_in[0] > (budget / max) as u64
    })
    .await;
    send_class(FrameClass::Relay);
    send_class(FrameClass::Bulk);
    eventually("validator 0's relay and bulk streams are read", || {
        let m = m1.snapshot();
        m.frames_in[1] >= 1 && m.frames_in[2] >= 1
    })
    .await;

    // An honest validator's consensus frame still gets into the buffer.
    let buffered_before = nodes[1].1.pending()[0];
    let hello = payload(2, 1, FrameClass::Consensus, 0);
    nodes[2]
        .0
        .send(ReplicaId(1), FrameClass::Consensus, hello.clone())
        .unwrap();
    let inbound_1 = &nodes[1].1;
    let waited = timeout(Duration::from_secs(5), async {
        while inbound_1.pending()[0] == buffered_before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let pending = nodes[1].1.pending();
    let byzantine_bytes = (pending.iter().sum::<usize>() - usize::from(waited.is_ok())) * max;
    eprintln!(
        "validator 0 holds {byzantine_bytes} bytes of validator 1's inbound buffer \
         (budget {budget}); frames waiting by class {pending:?}; honest frame buffered: {}",
        waited.is_ok()
    );
    assert!(
        waited.is_ok(),
        "validator 2's consensus frame waits behind validator 0's buffered frames \
         ({byzantine_bytes} bytes of validator 0's buffered, frames by class {pending:?})"
    );
    assert!(
        byzantine_bytes <= budget,
        "validator 0 holds {byzantine_bytes} buffered bytes, more than its budget of {budget}"
    );

    // Nothing was lost: flow control held validator 0's frames back, in order.
    let mut next = HashMap::new();
    let mut honest = 0;
    for _ in 0..3 * PER_CLASS + 1 {
        let f = recv(&mut nodes[1].1).await;
        if f.from == ReplicaId(2) {
            assert_eq!(f.frame, hello);
            honest += 1;
            continue;
        }
        assert_eq!(f.from, ReplicaId(0));
        let seq = next.entry(f.class).or_insert(0u32);
        assert_eq!(f.frame, big(f.class, *seq));
        *seq += 1;
    }
    assert_eq!(honest, 1);
    assert!(next.values().all(|&s| s == PER_CLASS), "{next:?}");
}
