//! The WebSockets transport: one task per socket (tracked by the service's `TaskTracker`,
//! since axum's graceful shutdown does not see upgraded sockets) that hands inbound frames to
//! the connection and writes the outbound queue. Text frames carry JSON, binary frames
//! MessagePack. The read buffer is kept small (4 KiB) because tungstenite allocates it
//! eagerly per connection.
//!
//! Stateful reconnect: the writer numbers and buffers trackable frames as it writes them
//! (`Connection::before_write`), sends an Ack about once a second when the client sent
//! trackable messages, and takes nothing from the queue while the replay buffer is past its
//! limit (the client's Acks, read by this same loop, free it). A socket whose peer went away
//! leaves a stateful connection waiting for a resume; a resuming socket first writes
//! `Sequence` and the unacknowledged frames. A socket detached by a newer one just ends.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};

use crate::service::Shared;
use crate::service::connection::{Attachment, Connection, FLUSH_TIMEOUT, SocketGuard};

/// Per-socket read buffer (tungstenite's default of 128 KiB is allocated per connection).
const READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before a write hits the socket.
const WRITE_BUFFER: usize = 16 * 1024;
/// How often a stateful connection acknowledges what it received (ASP.NET: 1 s).
const ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the socket loop ended.
enum End {
    /// The service closes the connection: flush, `Close`, close frame.
    Closing,
    /// The peer went away (a stateful connection may be resumed).
    PeerGone,
    /// A newer WebSocket took the connection over.
    Detached,
}

pub(crate) fn upgrade(
    shared: Arc<Shared>,
    upgrade: WebSocketUpgrade,
    connection: Arc<Connection>,
    attachment: Attachment,
) -> Response {
    let max_message = shared.options.max_message_size;
    let failed = connection.clone();
    let generation = attachment.generation;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for the largest frame a REST send can produce, on top of the write buffer.
        .max_write_buffer_size(WRITE_BUFFER + 2 * shared.options.max_rest_body.max(max_message))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, connection = %failed.id, "WebSocket upgrade failed");
            // A failed resume leaves a stateful connection waiting for the next one.
            failed.end_transport(generation, true);
        })
        .on_upgrade(move |socket| {
            let tracker = shared.tracker.clone();
            tracker.track_future(run(socket, connection, shared, attachment))
        })
}

async fn run(
    socket: WebSocket,
    connection: Arc<Connection>,
    shared: Arc<Shared>,
    attachment: Attachment,
) {
    let mut guard = SocketGuard {
        connection: connection.clone(),
        generation: attachment.generation,
        resumable: false,
    };
    let outbound = connection.outbound.clone();
    // On a resume the old socket may still hold the queue for a moment.
    let mut rx = tokio::select! {
        rx = outbound.lock() => rx,
        () = attachment.detached.cancelled() => return,
        () = connection.closed() => return,
    };
    let (mut sink, mut stream) = socket.split();
    if attachment.resumed {
        let replay = async {
            for frame in connection.resume_frames() {
                sink.feed(frame.into_ws()).await?;
            }
            sink.flush().await
        };
        if replay.await.is_err() {
            guard.resumable = true;
            return;
        }
    }
    let stateful = connection.is_stateful();
    let mut acks = tokio::time::interval(ACK_INTERVAL);
    acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        let full = connection.replay_full();
        tokio::select! {
            biased;
            () = connection.closed() => break End::Closing,
            () = attachment.detached.cancelled() => break End::Detached,
            item = rx.recv(), if !full => {
                let Some(item) = item else { break End::Closing };
                let frame = connection.before_write(item);
                tokio::select! {
                    result = sink.send(frame.into_ws()) => if result.is_err() {
                        break End::PeerGone;
                    },
                    () = connection.closed() => break End::Closing,
                    () = attachment.detached.cancelled() => break End::Detached,
                }
            }
            _ = acks.tick(), if stateful => {
                if let Some(ack) = connection.ack_frame()
                    && sink.send(ack.into_ws()).await.is_err()
                {
                    break End::PeerGone;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => connection.receive(text.as_bytes(), &shared),
                Some(Ok(WsMessage::Binary(data))) => connection.receive(&data, &shared),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => connection.touch(),
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break End::PeerGone,
            }
        }
    };
    match end {
        End::Detached => return,
        End::PeerGone => {
            guard.resumable = true;
            return;
        }
        End::Closing => connection.close(None),
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
