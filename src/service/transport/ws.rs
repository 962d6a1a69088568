//! The WebSockets transport: one task per socket (tracked by the service's `TaskTracker`,
//! since axum's graceful shutdown does not see upgraded sockets) that hands inbound frames to
//! the connection and writes the outbound queue. Text frames carry JSON, binary frames
//! MessagePack. The read buffer is kept small (256 bytes) because tungstenite allocates it
//! eagerly per connection (and zeroes it on every read attempt); larger client messages
//! are read in several reads. A busy connection's queue is written as one WebSocket
//! message holding several records ([`Batch`]).
//!
//! Stateful reconnect: the writer numbers and buffers trackable frames as it writes them
//! (`Connection::before_write`), sends an Ack about once a second when the client sent
//! trackable messages, and takes nothing from the queue while the replay buffer is past its
//! limit (the client's Acks, read by this same loop, free it). A socket whose peer went away
//! leaves a stateful connection waiting for a resume; a resuming socket first writes
//! `Sequence` and the unacknowledged frames. A socket detached by a newer one just ends.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
};
use axum::response::Response;
use futures_util::SinkExt;

use crate::service::Shared;
use crate::service::connection::{Attachment, Connection, FLUSH_TIMEOUT, Outgoing, SocketGuard};
use crate::service::queue;

use super::read_gate::ReadGate;

/// Per-socket read buffer (tungstenite's default of 128 KiB is allocated per connection).
const READ_BUFFER: usize = 256;
/// Bytes gathered before a write hits the socket.
const WRITE_BUFFER: usize = 16 * 1024;
/// How often a stateful connection acknowledges what it received (ASP.NET: 1 s).
const ACK_INTERVAL: Duration = Duration::from_secs(1);
/// At most this many queued frames are joined into one WebSocket message...
const BATCH_FRAMES: usize = 64;
/// ... and at most about this many bytes (a single larger frame goes alone).
const BATCH_BYTES: usize = 8 * 1024;

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

/// Joins what a busy connection's queue holds into one WebSocket message: SignalR records
/// carry their own framing (JSON's `0x1e` terminator, MessagePack's length prefix), so a
/// client reads several from one message. One write, one frame header and one wake-up of
/// the client then carry them all. A frame of another kind (text after binary) or one past
/// the limits waits in `pending` for the next message.
#[derive(Default)]
struct Batch {
    pending: Option<Outgoing>,
}

impl Batch {
    /// The next queue item: the one set aside, or the queue's next (cancel-safe); `None`
    /// when the queue says stop (closing, or interrupted by a newer socket).
    async fn next(&mut self, rx: &mut queue::Receiver) -> Option<Outgoing> {
        match self.pending.take() {
            Some(item) => Some(item),
            None => rx.recv().await,
        }
    }

    /// `first` and whatever else is queued now, within the limits, as one message; each
    /// frame passes `before_write` in order (numbered and buffered under stateful
    /// reconnect), and gathering stops when the replay buffer fills.
    fn gather(
        &mut self,
        connection: &Connection,
        first: Outgoing,
        rx: &mut queue::Receiver,
    ) -> WsMessage {
        let first = connection.before_write(first);
        let mut joined: Option<Vec<u8>> = None;
        let mut count = 1;
        while count < BATCH_FRAMES && !connection.replay_full() {
            let Some(item) = rx.try_recv() else { break };
            let len = joined.as_ref().map_or(first.as_bytes().len(), Vec::len);
            if !item.frame.same_kind(&first) || len + item.frame.as_bytes().len() > BATCH_BYTES {
                self.pending = Some(item);
                break;
            }
            let frame = connection.before_write(item);
            joined
                .get_or_insert_with(|| {
                    let mut bytes = Vec::with_capacity((len * 4).min(BATCH_BYTES));
                    bytes.extend_from_slice(first.as_bytes());
                    bytes
                })
                .extend_from_slice(frame.as_bytes());
            count += 1;
        }
        match joined {
            None => first.into_ws(),
            Some(bytes) => first.with_bytes(bytes).into_ws(),
        }
    }
}

/// The next tick of `interval`; never when there is none.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `socket` serves both directions, unsplit (a split would take a lock around every read
/// poll and every write): the loop reads and writes it by turns.
async fn run(
    mut socket: WebSocket,
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
    if attachment.resumed {
        let replay = async {
            for frame in connection.resume_frames() {
                socket.feed(frame.into_ws()).await?;
            }
            socket.flush().await
        };
        if replay.await.is_err() {
            guard.resumable = true;
            return;
        }
    }
    // Only a stateful connection acknowledges (and pays for the timer).
    let mut acks = connection.is_stateful().then(|| {
        let mut acks = tokio::time::interval(ACK_INTERVAL);
        acks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        acks
    });
    // Closing and detaching wake the queue (its `recv` answers `None`), so these two are
    // polled only while the queue is not read: the replay buffer is full, or a write is
    // stuck. Made once and polled by reference: a fresh `cancelled()` registers a waiter.
    let mut closed = pin!(connection.closed());
    let mut detached = pin!(attachment.detached.cancelled());
    let mut batch = Batch::default();
    // A wake for the queue does not poll the socket's read side too.
    let gate = ReadGate::new();
    let end = loop {
        let full = connection.replay_full();
        tokio::select! {
            biased;
            () = &mut closed, if full => break End::Closing,
            () = &mut detached, if full => break End::Detached,
            incoming = std::future::poll_fn(|cx| gate.poll_next(&mut socket, cx)) => match incoming {
                Some(Ok(WsMessage::Text(text))) => connection.receive(text.as_bytes(), &shared),
                Some(Ok(WsMessage::Binary(data))) => connection.receive(&data, &shared),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => connection.touch(),
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break End::PeerGone,
            },
            item = batch.next(&mut rx), if !full => {
                let Some(item) = item else {
                    if connection.is_closed() {
                        break End::Closing;
                    }
                    if attachment.detached.is_cancelled() {
                        break End::Detached;
                    }
                    // An interrupt meant for an earlier socket.
                    continue;
                };
                let message = batch.gather(&connection, item, &mut rx);
                tokio::select! {
                    biased;
                    result = socket.send(message) => if result.is_err() {
                        break End::PeerGone;
                    },
                    () = &mut closed => break End::Closing,
                    () = &mut detached => break End::Detached,
                }
            }
            _ = tick(&mut acks), if acks.is_some() => {
                if let Some(ack) = connection.ack_frame()
                    && socket.send(ack.into_ws()).await.is_err()
                {
                    break End::PeerGone;
                }
            }
        }
    };
    // Taken from the queue but not written: recorded for a resume, or sent with the final
    // frames.
    let pending = batch
        .pending
        .take()
        .map(|item| connection.before_write(item));
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
    let mut frames: Vec<_> = pending.into_iter().collect();
    frames.extend(connection.final_frames(&mut rx));
    let flush = async {
        for frame in frames {
            socket.feed(frame.into_ws()).await?;
        }
        socket
            .send(WsMessage::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::default(),
            })))
            .await
    };
    if let Ok(Err(error)) = tokio::time::timeout(FLUSH_TIMEOUT, flush).await {
        tracing::debug!(%error, connection = %connection.id, "closing WebSocket failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::connection::{Frame, Push};

    fn text(text: &str) -> Outgoing {
        Outgoing::tracked(Frame::new(None, text.as_bytes().to_vec()))
    }

    fn binary(bytes: &[u8]) -> Outgoing {
        Outgoing::tracked(Frame::Binary(bytes::Bytes::copy_from_slice(bytes)))
    }

    async fn first(rx: &mut queue::Receiver) -> Outgoing {
        rx.recv().await.expect("an item")
    }

    #[tokio::test]
    async fn a_busy_queue_goes_out_as_one_message_of_several_records_in_order() {
        let c = Connection::new("c".into(), "c".into(), "h".into(), None, 256);
        for i in 0..3 {
            assert_eq!(
                c.try_push(text(&format!("{{\"n\":{i}}}\u{1e}"))),
                Push::Queued
            );
        }
        let mut rx = c.outbound.lock().await;
        let mut batch = Batch::default();
        let item = first(&mut rx).await;
        let WsMessage::Text(joined) = batch.gather(&c, item, &mut rx) else {
            panic!("expected one text message");
        };
        assert_eq!(
            joined.as_str(),
            "{\"n\":0}\u{1e}{\"n\":1}\u{1e}{\"n\":2}\u{1e}"
        );
        assert!(batch.pending.is_none());
        // A lone frame goes as it is.
        c.try_push(text("{}\u{1e}"));
        let item = first(&mut rx).await;
        assert!(
            matches!(batch.gather(&c, item, &mut rx), WsMessage::Text(t) if t.as_str() == "{}\u{1e}")
        );
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_limits_and_at_a_frame_of_another_kind() {
        let c = Connection::new("c".into(), "c".into(), "h".into(), None, 256);
        let mut rx = c.outbound.lock().await;
        let mut batch = Batch::default();
        // Count: BATCH_FRAMES records, the next one waits.
        for _ in 0..BATCH_FRAMES + 1 {
            c.try_push(binary(b"\x01x"));
        }
        let item = first(&mut rx).await;
        let WsMessage::Binary(joined) = batch.gather(&c, item, &mut rx) else {
            panic!("expected binary");
        };
        assert_eq!(joined.len(), 2 * BATCH_FRAMES);
        assert_eq!(rx.len(), 1);
        let item = batch.next(&mut rx).await.expect("the last one");
        assert!(matches!(batch.gather(&c, item, &mut rx), WsMessage::Binary(b) if b.len() == 2));
        // Bytes: a frame that would pass BATCH_BYTES waits in `pending`.
        let big = "x".repeat(BATCH_BYTES - 10);
        c.try_push(text(&big));
        c.try_push(text("0123456789AB"));
        let item = first(&mut rx).await;
        assert!(
            matches!(batch.gather(&c, item, &mut rx), WsMessage::Text(t) if t.len() == big.len())
        );
        let pending = batch.next(&mut rx).await.expect("pending");
        assert_eq!(pending.frame.as_bytes(), b"0123456789AB");
        // Kind: text then binary are two messages.
        c.try_push(text("a"));
        c.try_push(binary(b"b"));
        let item = first(&mut rx).await;
        assert!(matches!(
            batch.gather(&c, item, &mut rx),
            WsMessage::Text(_)
        ));
        let item = batch.next(&mut rx).await.expect("pending");
        assert!(matches!(
            batch.gather(&c, item, &mut rx),
            WsMessage::Binary(_)
        ));
    }

    #[tokio::test]
    async fn under_stateful_reconnect_each_record_is_numbered_and_a_full_buffer_ends_the_batch() {
        // A replay limit of 5 bytes: full after the second 3-byte record.
        let c = Connection::with_replay("c".into(), "c".into(), "h".into(), None, 256, Some(5));
        c.set_protocol_for_test(crate::signalr::protocol::Protocol::Json);
        let mut rx = c.outbound.lock().await;
        let mut batch = Batch::default();
        for record in ["a1\u{1e}", "b2\u{1e}", "c3\u{1e}"] {
            c.try_push(text(record));
        }
        let item = first(&mut rx).await;
        assert!(
            matches!(batch.gather(&c, item, &mut rx), WsMessage::Text(t) if t.as_str() == "a1\u{1e}b2\u{1e}")
        );
        assert!(c.replay_full());
        assert_eq!(rx.len(), 1, "the third waits for an Ack");
        let frames = c.resume_frames();
        // Sequence, then both records, each buffered on its own.
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].as_bytes(), b"a1\x1e");
        assert_eq!(frames[2].as_bytes(), b"b2\x1e");
    }
}
