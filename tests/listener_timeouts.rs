//! Slowloris protection with the production defaults (no timeouts shortened): on both the
//! daemon's listener and the embedded service's, a TCP connection that sends nothing, one that
//! leaves its request head unfinished, and an idle keep-alive connection are closed, while a
//! configured shorter timeout is honoured.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Daemon, DaemonYaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(http_extra: &str) -> String {
    DaemonYaml::embedded().http(http_extra).build()
}

/// Read until the peer closes the connection; how long that took, or None if it stayed open
/// for `limit`.
async fn closed_within(mut stream: TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

async fn silent(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

async fn half_head(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .expect("write");
    s
}

/// A completed request on a keep-alive connection, then nothing.
async fn idle_keep_alive(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("write");
    s
}

#[tokio::test]
async fn both_listeners_close_silent_unfinished_and_idle_connections_with_defaults() {
    let daemon = Daemon::start(&config(""), &[]);
    let service = daemon.service_addr.expect("embedded service address");
    let limit = Duration::from_secs(30);
    let mut checks = Vec::new();
    for (listener, addr, path) in [
        ("daemon", daemon.addr, "/healthz"),
        ("service", service, "/api/health"),
    ] {
        checks.push(("silent", listener, silent(addr).await));
        checks.push(("half head", listener, half_head(addr).await));
        checks.push((
            "idle keep-alive",
            listener,
            idle_keep_alive(addr, path).await,
        ));
    }
    let results =
        futures_util::future::join_all(checks.into_iter().map(|(what, listener, s)| async move {
            (what, listener, closed_within(s, limit).await)
        }))
        .await;
    for (what, listener, closed) in results {
        let took =
            closed.unwrap_or_else(|| panic!("{listener}: {what} connection still open after 30 s"));
        // Not closed at once: the defaults (10 s head, 20 s idle) give a client time.
        assert!(
            took >= Duration::from_secs(5),
            "{listener}: {what} connection closed after only {took:?}"
        );
    }
}

#[tokio::test]
async fn configured_timeouts_are_used() {
    let daemon = Daemon::start(
        &config("  header_read_timeout: 1s\n  idle_timeout: 2s\n"),
        &[],
    );
    let limit = Duration::from_secs(8);
    let head = closed_within(half_head(daemon.addr).await, limit)
        .await
        .expect("unfinished head closed");
    assert!(head < Duration::from_secs(4), "head timeout took {head:?}");
    let idle = closed_within(idle_keep_alive(daemon.addr, "/healthz").await, limit)
        .await
        .expect("idle connection closed");
    assert!(
        idle >= Duration::from_millis(1500) && idle < Duration::from_secs(6),
        "idle timeout took {idle:?}"
    );
}
