//! Accepting connections with limits a hostile client cannot get around (issue 39, D3/D4/D7):
//! a header that does not arrive within `header_timeout` closes the connection (slowloris), a
//! body that does not arrive within `body_timeout` gets 408 (stalled uploads), at most
//! `max_connections` are open (over that, a new connection gets an immediate 503 and is closed,
//! so the process never runs out of file descriptors and `/health` keeps answering), and a
//! shutdown waits at most `drain_timeout` for open connections, and a stream still unread
//! `stream_grace` past its request's deadline has its connection closed (a client that never
//! reads its stream holds neither the engine's work nor the process).
//!
//! By hand rather than `axum::serve`, which has none of these knobs: hyper's HTTP/1 server with
//! its header-read timer, one task per connection, hyper-util's graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Closes the connection whose requests carry it (an extension of each request): a stream whose
/// client has stopped reading is never polled again, so only closing its connection frees it.
#[derive(Clone)]
pub struct ConnectionCloser(Arc<tokio::sync::Notify>);

impl ConnectionCloser {
    pub fn close(&self) {
        self.0.notify_one();
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest the request line and headers may take to arrive.
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Most connections open at once (bounded further by the open-file limit).
    pub max_connections: usize,
    /// Longest a shutdown waits for open connections after the requests in flight are done.
    pub drain_timeout: Duration,
    /// How long past its request's deadline a stream may go unread before its connection is
    /// closed (issue 39, D7: a client that never read its stream outlived `--timeout`).
    pub stream_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            drain_timeout: Duration::from_secs(10),
            stream_grace: Duration::from_secs(10),
        }
    }
}

/// File descriptors left for everything that is not a client connection (model files, logs).
const RESERVED_FDS: u64 = 64;

/// `max_connections`, lowered to fit the process's open-file limit.
fn connection_cap(max_connections: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { u64::MAX };
    let fit = soft.saturating_sub(RESERVED_FDS).max(1);
    max_connections.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

/// The answer to a connection over the cap, written without reading the request.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 111\r\n\r\n{\"error\":{\"message\":\"too many open connections; retry shortly\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// their requests for at most `drain_timeout`.
pub async fn serve(listener: TcpListener, router: Router, limits: &ConnectionLimits, shutdown: impl Future<Output = ()>) {
    let cap = connection_cap(limits.max_connections);
    let permits = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of descriptors or a connection reset before accept: wait, then go on (as
            // axum::serve does); never end the server over one connection.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let closer = ConnectionCloser(Arc::new(tokio::sync::Notify::new()));
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(closer.clone())));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // Dropping the connection's future closes its socket.
            tokio::select! {
                _ = connection => {}
                () = closer.0.notified() => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_fits_the_open_file_limit_and_the_busy_answer_is_well_formed() {
        assert!(super::connection_cap(usize::MAX) >= 1);
        assert_eq!(super::connection_cap(1), 1);
        let text = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
