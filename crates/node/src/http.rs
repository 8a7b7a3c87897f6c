//! The HTTP server under the API, bounded against anyone who can reach it (DESIGN.md
//! "Node"): a cap on connections, a deadline for each request head (idle keep-alive
//! connections included), a cap on header size, a lingering close and a graceful stop.
//!
//! `axum::serve` has none of these (no timer, so not even hyper's header timeout): a
//! slowloris or tens of thousands of idle connections held descriptors until RocksDB
//! could not open its files and the node exited.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::warn;

use crate::metrics::Metrics;

/// Most HTTP connections open at once; the next is answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest a connection may take to send a whole request head, and longest it may sit
/// idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper's read buffer).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest a closing connection goes on reading (and discarding) what its client still
/// sends, so that the answer is read rather than lost to a reset; see [`Lingering`].
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest a closing connection waits for the next byte of what its client still sends.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);
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
                .serve_connection(TokioIo::new(Lingering::new(stream)), service);
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

/// A TCP stream whose shutdown is a lingering close (RFC 9112 §9.6): the write side is
/// closed first, then what the client still sends is read and discarded until it closes
/// too, falls silent for [`LINGER_IDLE`], or [`LINGER_TIME`] has passed.
///
/// hyper closes a connection whose request body it did not read (a 413 from the declared
/// length, or from the bytes past the limit) with those bytes unread. Closing a socket
/// with unread input makes the kernel send a reset, and a reset both breaks the write of
/// a client still sending its body and discards the answer it had not yet read: the
/// client saw a broken pipe instead of the 413. The connection keeps its slot under
/// [`MAX_CONNECTIONS`] while it lingers, and the bytes go through one small buffer.
struct Lingering {
    stream: TcpStream,
    closing: Option<Closing>,
}

struct Closing {
    write_closed: bool,
    until: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
}

impl Lingering {
    fn new(stream: TcpStream) -> Self {
        Lingering {
            stream,
            closing: None,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let closing = this.closing.get_or_insert_with(|| Closing {
            write_closed: false,
            until: Box::pin(tokio::time::sleep(LINGER_TIME)),
            idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
        });
        if !closing.write_closed {
            // The answer is flushed and the client sees its end before we read on.
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            closing.write_closed = true;
        }
        let mut scratch = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                // The client closed, or reset: nothing more to wait for.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    // A client that never stops sending is cut at the deadline all the same.
                    if closing.until.is_elapsed() {
                        return Poll::Ready(Ok(()));
                    }
                    let next = Instant::now() + LINGER_IDLE;
                    closing.idle.as_mut().reset(next);
                }
                Poll::Pending => {
                    if closing.until.as_mut().poll(cx).is_ready()
                        || closing.idle.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Pending;
                }
            }
        }
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
