//! lean-server: the "practical limit" reference for BENCHMARKS.md. A minimal tokio WebSocket
//! broadcast server with no protocol: every body POSTed to `--http` (any path) is sent as one
//! text frame to every WebSocket connected on `--ws`, through a `tokio::sync::broadcast`
//! channel (a client that lags more than `--capacity` messages skips them, counted as loss by
//! the load tool).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9001")]
    ws: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9101")]
    http: SocketAddr,
    #[arg(long, default_value_t = 4096)]
    capacity: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (tx, _) = broadcast::channel::<Utf8Bytes>(args.capacity);
    let ws = TcpListener::bind(args.ws)
        .await
        .with_context(|| format!("binding {}", args.ws))?;
    let http = TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding {}", args.http))?;
    eprintln!("lean-server: ws {} http {}", args.ws, args.http);
    let publisher = tx.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = http.accept().await else {
                continue;
            };
            let tx = publisher.clone();
            tokio::spawn(async move {
                let _ = serve_http(stream, tx).await;
            });
        }
    });
    loop {
        let (stream, _) = ws.accept().await.context("accepting")?;
        let rx = tx.subscribe();
        tokio::spawn(async move {
            let _ = serve_ws(stream, rx).await;
        });
    }
}

async fn serve_ws(stream: TcpStream, mut rx: broadcast::Receiver<Utf8Bytes>) -> Result<()> {
    let _ = stream.set_nodelay(true);
    // Small buffers, as a server sized for many idle connections would use.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Ok(text) => sink.send(Message::Text(text)).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            incoming = source.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// HTTP/1.1 keep-alive, just enough for `POST <path>` with a Content-Length body.
async fn serve_http(mut stream: TcpStream, tx: broadcast::Sender<Utf8Bytes>) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if let Ok(text) = String::from_utf8(body) {
            let _ = tx.send(Utf8Bytes::from(text));
        }
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}
