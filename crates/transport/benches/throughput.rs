//! Throughput between two validators on loopback: 512 B and 64 KiB frames, consensus
//! class, with a bounded number of frames in flight so the sender's queue never drops.
//!
//! Criterion reports bytes/s; messages/s is that divided by the frame size. Run with
//! `cargo bench -p stele-transport`.
#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stele_crypto::{ChainId, KeyPair};
use stele_transport::{FrameClass, SendOutcome, Transport, TransportConfig};
use stele_types::{Genesis, Params, ReplicaId, ValidatorInfo};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Four validators so the genesis is valid; only 0 and 1 run. The sockets of 2 and
    // 3 stay bound (and silent) so nothing else answers at their addresses.
    let keys: Vec<KeyPair> = (0..4u8).map(|i| KeyPair::from_seed([i + 1; 32])).collect();
    let socks: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let genesis = Genesis {
        chain_id: ChainId::new("transport-bench").unwrap(),
        genesis_time_ms: 0,
        validators: keys
            .iter()
            .zip(&socks)
            .enumerate()
            .map(|(i, (k, s))| ValidatorInfo {
                key: k.public(),
                p2p_addr: s.local_addr().unwrap().to_string(),
                api_addr: format!("127.0.0.1:{}", 1 + i),
            })
            .collect(),
        accounts: vec![],
        params: Params::default(),
    };
    genesis.validate().unwrap();
    let mut socks = socks.into_iter();
    let (a, b_in, _a_in, _b) = rt.block_on(async {
        let mut start = |i: usize| {
            let mut cfg = TransportConfig::new(genesis.clone(), keys[i].clone());
            cfg.socket = socks.next();
            Transport::start(cfg).unwrap()
        };
        let (a, a_in) = start(0);
        let (b, b_in) = start(1);
        let mut up = a.connected();
        tokio::time::timeout(
            Duration::from_secs(10),
            up.wait_for(|s| s.contains(&ReplicaId(1))),
        )
        .await
        .unwrap()
        .unwrap();
        (a, b_in, a_in, b)
    });
    let mut b_in = b_in;

    let mut group = c.benchmark_group("transport_loopback");
    group.measurement_time(Duration::from_secs(5));
    for (name, size, window) in [("512B", 512usize, 2048u64), ("64KiB", 64 << 10, 128)] {
        let frame = Bytes::from(vec![0x42; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iters| {
                rt.block_on(async {
                    let began = Instant::now();
                    let (mut sent, mut got) = (0u64, 0u64);
                    while got < iters {
                        while sent < iters && sent - got < window {
                            let out = a.send(ReplicaId(1), FrameClass::Consensus, frame.clone());
                            assert_eq!(out, Ok(SendOutcome::Queued));
                            sent += 1;
                        }
                        let f = b_in.recv().await.unwrap();
                        assert_eq!(f.frame.len(), size);
                        got += 1;
                    }
                    began.elapsed()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
