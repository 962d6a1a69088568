//! One way to serve an axum `Router` on a TCP listener until shutdown, shared by `herald run`,
//! `herald run --custom-handler` and the embedded service: HTTP/1.1 with upgrades
//! (WebSocket), a header-read timeout for a new connection's first request, an idle timeout
//! between requests on a keep-alive connection, and one graceful-shutdown deadline.
//!
//! Why not `axum::serve`: it has no header-read or idle timeout, so a socket that never sends
//! a complete request head (slowloris) holds a file descriptor forever.
//!
//! Timing, exactly: hyper's own header-read timer (set to `idle_timeout`) starts whenever the
//! connection waits for a request head, so it bounds both the idle time after a response and
//! the reading of the next head. A brand-new connection must in addition deliver its first
//! complete head within `header_read_timeout` (usually shorter). Requests in flight (long
//! polls, SSE streams) and upgraded WebSockets are never idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long requests in flight get to finish after shutdown begins, everywhere herald serves.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A listener's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// A new connection's first request head must be complete within this time.
    pub header_read_timeout: Duration,
    /// A keep-alive connection waiting for its next request head is closed after this time.
    pub idle_timeout: Duration,
    /// After shutdown begins, requests in flight get this long before their connections are
    /// dropped.
    pub shutdown_deadline: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            shutdown_deadline: SHUTDOWN_DEADLINE,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled; then stop accepting, let requests
/// in flight finish for up to `options.shutdown_deadline`, and return. Upgraded connections
/// (WebSockets) are not waited for: their owners track them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Connection tasks, so shutdown can wait for requests in flight.
    let connections = TaskTracker::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.idle_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::error!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let seen_request = Arc::new(AtomicBool::new(false));
        let service = {
            let seen = seen_request.clone();
            let app = app.clone();
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                seen.store(true, Ordering::Release);
                app.clone().oneshot(request.map(Body::new))
            })
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let first_head = options.header_read_timeout;
        let stop = shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = &mut connection => Some(result),
                () = tokio::time::sleep(first_head) => None,
                () = stop.cancelled() => None,
            };
            let result = match result {
                Some(result) => result,
                // Dropping the connection closes the socket.
                None if !seen_request.load(Ordering::Acquire) => {
                    tracing::debug!(%peer, "closed a connection that sent no complete request head in time");
                    return;
                }
                None => {
                    tokio::select! {
                        result = &mut connection => result,
                        () = stop.cancelled() => {
                            // Finish the request in flight, then close.
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(options.shutdown_deadline, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {:?} were cut off at shutdown",
            options.shutdown_deadline
        );
    }
    Ok(())
}

/// Errors of one accepted connection (the peer went away), as opposed to the listener's.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(options: ServeOptions) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "done"
            }),
        );
        tokio::spawn(serve(listener, app, options, stop.clone()));
        (addr, stop)
    }

    /// Read until the peer closes; returns what was read, or None if it stayed open.
    async fn read_to_close(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into()),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    fn short() -> ServeOptions {
        ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(900),
            shutdown_deadline: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn silent_and_half_sent_connections_are_closed() {
        let (addr, _stop) = start(short()).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert!(
            read_to_close(&mut silent, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            read_to_close(&mut half, Duration::from_secs(5))
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn slow_requests_are_not_idle_but_idle_keep_alive_is_closed() {
        let (addr, _stop) = start(short()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The handler takes 600 ms, longer than the header-read timeout: still answered.
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await;
        let text = answer.expect("the idle keep-alive connection is closed after the answer");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("done"), "{text}");
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish() {
        let (addr, stop) = start(short()).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        let text = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }
}
