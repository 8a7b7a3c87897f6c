//! Tools for testing a validator's QUIC edge from outside, as an attacker would: a QUIC
//! client that can open handshakes but never finish one, and a flood of silent client
//! Initials. The transport's own tests and the real-process attack suite (`tests/`)
//! share them; nothing in a validator uses them.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ALPN;

/// A QUIC client endpoint speaking the validators' ALPN that trusts no certificate:
/// enough to open handshakes, never to finish one.
pub fn quic_client() -> io::Result<quinn::Endpoint> {
    quic_client_speaking(ALPN)
}

/// [`quic_client`], speaking ALPN `alpn` (another wire version's, say).
pub fn quic_client_speaking(alpn: &[u8]) -> io::Result<quinn::Endpoint> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(io::Error::other)?;
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    Ok(endpoint)
}

/// `count` client Initial datagrams with distinct connection ids, captured from a real
/// QUIC client dialling a socket that never answers: what a flooder replays (an Initial
/// the server cannot decrypt would cost it nothing).
pub async fn capture_initials(count: usize) -> io::Result<Vec<Vec<u8>>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let sink_addr = sink.local_addr()?;
    let endpoint = quic_client()?;
    let mut dials = Vec::new();
    let mut by_cid = std::collections::HashMap::<Vec<u8>, Vec<u8>>::new();
    let mut buf = vec![0u8; 65536];
    while by_cid.len() < count {
        dials.push(
            endpoint
                .connect(sink_addr, "r3.stele")
                .map_err(io::Error::other)?,
        );
        let (len, _) = tokio::time::timeout(Duration::from_secs(15), sink.recv_from(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no Initial to capture"))??;
        let d = &buf[..len];
        // A QUIC v1 long-header Initial: flags 0b1100_xxxx, version, DCID length, DCID.
        if d.len() < 1200 || d[0] & 0xF0 != 0xC0 || d[1..5] != 1u32.to_be_bytes() {
            continue;
        }
        let Some(cid) = d.get(6..6 + usize::from(d[5])) else {
            continue;
        };
        by_cid.entry(cid.to_vec()).or_insert_with(|| d.to_vec());
    }
    drop(dials);
    endpoint.close(0u32.into(), b"captured");
    Ok(by_cid.into_values().collect())
}

/// Replays Initials at a target, [`SilentInitialFlood::PER_TICK`] every
/// [`SilentInitialFlood::TICK`], each from one of a pool of sockets (distinct source
/// ports: what spoofed sources look like to the target), and never answers. Stops when
/// dropped.
#[derive(Debug)]
pub struct SilentInitialFlood {
    task: tokio::task::JoinHandle<()>,
    sent: Arc<AtomicU64>,
}

impl SilentInitialFlood {
    pub const TICK: Duration = Duration::from_millis(20);
    pub const PER_TICK: usize = 8;
    const SOURCES: usize = 128;

    /// Starts replaying `initials` (at least one) at `target`.
    pub fn start(target: SocketAddr, initials: Vec<Vec<u8>>) -> io::Result<SilentInitialFlood> {
        if initials.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no Initials"));
        }
        let pool = (0..Self::SOURCES)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<io::Result<Vec<UdpSocket>>>()?;
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Self::TICK);
            let mut next = 0usize;
            loop {
                tick.tick().await;
                for _ in 0..Self::PER_TICK {
                    let d = &initials[next % initials.len()];
                    if pool[next % pool.len()].send_to(d, target).is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    next += 1;
                }
            }
        });
        Ok(SilentInitialFlood { task, sent })
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for SilentInitialFlood {
    fn drop(&mut self) {
        self.task.abort();
    }
}
