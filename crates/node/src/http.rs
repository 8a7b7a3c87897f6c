//! The HTTP server under the API, bounded against anyone who can reach it (DESIGN.md
//! "Node"): a cap on connections, a deadline for each request head (idle keep-alive
//! connections included), a cap on header size, and a graceful stop.
//!
//! `axum::serve` has none of these (no timer, so not even hyper's header timeout): a
//! slowloris or tens of thousands of idle connections held descriptors until RocksDB
//! could not open its files and the node exited.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::warn;

use crate::metrics::Metrics;

/// Most HTTP connections open at once; the next is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest a connection may take to send a whole request head, and longest it may sit
/// idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's read buffer).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a stop waits for requests in flight (`?wait=true` ones are cut).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a connection over the cap reads before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 90\r\n\r\n\
{\"reason\":\"too_many_connections\",\"error\":\"this validator has too many connections; retry\"}";

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors (or a connection reset before accept): going on
                    // at once would spin.
                    warn!(error = %e, "accepting an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        while conns.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A fresh socket's send buffer is empty: the answer is written at once or not
            // at all, and the descriptor closes now, whatever the peer does.
            let _ = stream.try_write(TOO_MANY);
            metrics.refuse_http("too_many_connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let (metrics, mut stop) = (metrics.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match r {
                Err(e) if e.is_timeout() => metrics.refuse_http("header_timeout"),
                Err(e) if e.is_parse() || e.is_parse_too_large() => metrics.refuse_http("bad_head"),
                _ => {}
            }
        });
    }
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_GRACE, drain).await.is_err() {
        warn!("HTTP connections still open {STOP_GRACE:?} after the stop; cutting them");
    }
}

#[cfg(test)]
mod tests {
    use super::TOO_MANY;

    #[test]
    fn the_refusal_is_a_complete_http_answer_with_a_json_reason() {
        let text = std::str::from_utf8(TOO_MANY).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("content-length")
            .parse()
            .expect("a number");
        assert_eq!(len, body.len());
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["reason"], "too_many_connections");
    }
}
