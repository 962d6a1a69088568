//! The WebSockets transport: one task per socket (tracked by the service's `TaskTracker`,
//! since axum's graceful shutdown does not see upgraded sockets) that hands inbound frames to
//! the connection and writes the outbound queue. Text frames carry JSON, binary frames
//! MessagePack. The read buffer is kept small (4 KiB) because tungstenite allocates it
//! eagerly per connection.

use std::sync::Arc;

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};

use crate::service::Shared;
use crate::service::connection::{ActiveGuard, Connection, FLUSH_TIMEOUT};

/// Per-socket read buffer (tungstenite's default of 128 KiB is allocated per connection).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before a write hits the socket.
const WRITE_BUFFER: usize = 16 * 1024;

pub(crate) fn upgrade(
    shared: Arc<Shared>,
    upgrade: WebSocketUpgrade,
    connection: Arc<Connection>,
) -> Response {
    let max_message = shared.options.max_message_size;
    let failed = connection.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the largest frame a REST send can produce, on top of the write buffer.
        .max_write_buffer_size(WRITE_BUFFER + 2 * shared.options.max_rest_body.max(max_message))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, connection = %failed.id, "WebSocket upgrade failed");
            failed.close(None);
        })
        .on_upgrade(move |socket| {
            let tracker = shared.tracker.clone();
            tracker.track_future(run(socket, connection, shared))
        })
}

async fn run(socket: WebSocket, connection: Arc<Connection>, shared: Arc<Shared>) {
    let _active = ActiveGuard(connection.clone());
    let outbound = connection.outbound.clone();
    let mut rx = outbound.lock().await;
    let (mut sink, mut stream) = socket.split();
    let mut peer_gone = false;
    loop {
        tokio::select! {
            biased;
            () = connection.closed() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                tokio::select! {
                    result = sink.send(frame.into_ws()) => if result.is_err() {
                        peer_gone = true;
                        break;
                    },
                    () = connection.closed() => break,
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => connection.receive(text.as_bytes(), &shared),
                Some(Ok(WsMessage::Binary(data))) => connection.receive(&data, &shared),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => connection.touch(),
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => {
                    peer_gone = true;
                    break;
                }
            }
        }
    }
    connection.close(None);
    if peer_gone {
        return;
    }
    let code = if shared.shutdown.is_cancelled() {
        close_code::AWAY
    } else {
        close_code::NORMAL
    };
    let frames = connection.final_frames(&mut rx);
    let flush = async {
        for frame in frames {
            sink.feed(frame.into_ws()).await?;
        }
        sink.send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::default(),
        })))
        .await
    };
    if let Ok(Err(error)) = tokio::time::timeout(FLUSH_TIMEOUT, flush).await {
        tracing::debug!(%error, connection = %connection.id, "closing WebSocket failed");
    }
}
