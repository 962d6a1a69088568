//! One client connection, whatever its transport: handshake, inbound hub messages,
//! keep-alive and client timeout (the supervisor task), and the bounded outbound queue that
//! fan-out fills with `try_send` and the transport drains.
//!
//! The transports (`transport/`) only move bytes: they hand every inbound frame or POST
//! body to [`Connection::receive`] and write out what the queue yields. Closing is one
//! path for every cause: [`Connection::close`] records an optional `Close` message and
//! cancels the connection's token; the transport then flushes what is queued, the `Close`
//! message, and ends; the supervisor removes the connection from the registry.
//!
//! Stateful reconnect (WebSockets, when negotiated): the connection carries a
//! [`Replay`](super::replay::Replay). Queue items say whether they are trackable; the
//! WebSocket writer numbers and buffers those as it writes them, inbound Acks trim the
//! buffer, and inbound duplicates are dropped. When the socket drops, the connection is not
//! closed but *disconnected*: it stays in the registry (fan-out keeps queueing), and the
//! supervisor closes it only if no new WebSocket resumes it within `reconnect_window`. A
//! resume is a new attachment (a higher generation); a socket still attached when another
//! arrives is detached, not closed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::metrics as service_metrics;
use super::queue;
use super::replay::Replay;
use super::upstream::{self, ClientInfo, Link};
use crate::signalr::protocol::{
    self, HubMessage, MAX_PROTOCOL_VERSION, Protocol, encode_handshake_response,
    parse_handshake_request,
};

/// How long a closing transport may spend flushing queued frames and the `Close` message.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a closed long-polling connection stays addressable, so that its last poll gets
/// 204 rather than 404.
const LONG_POLLING_GRACE: Duration = Duration::from_secs(5);

/// One encoded outbound frame. JSON frames are text (WebSocket Text), MessagePack frames
/// binary; both share their bytes between every connection of a fan-out.
#[derive(Debug, Clone)]
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Frame {
    /// A frame for `protocol` (text when unknown yet: before the handshake).
    pub(crate) fn new(protocol: Option<Protocol>, bytes: Vec<u8>) -> Frame {
        let bytes = Bytes::from(bytes);
        match protocol {
            Some(Protocol::MessagePack) => Frame::Binary(bytes),
            _ => match Utf8Bytes::try_from(bytes.clone()) {
                Ok(text) => Frame::Text(text),
                Err(_) => Frame::Binary(bytes),
            },
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }

    /// Whether `other` goes in the same kind of WebSocket message (text or binary).
    pub(crate) fn same_kind(&self, other: &Frame) -> bool {
        matches!(
            (self, other),
            (Frame::Text(_), Frame::Text(_)) | (Frame::Binary(_), Frame::Binary(_))
        )
    }

    /// A frame of this one's kind holding `bytes`: several text frames joined are still
    /// UTF-8, checked once here.
    pub(crate) fn with_bytes(&self, bytes: Vec<u8>) -> Frame {
        match self {
            Frame::Binary(_) => Frame::Binary(Bytes::from(bytes)),
            Frame::Text(_) => Frame::new(None, bytes),
        }
    }

    pub(crate) fn into_ws(self) -> WsMessage {
        match self {
            Frame::Text(t) => WsMessage::Text(t),
            Frame::Binary(b) => WsMessage::Binary(b),
        }
    }
}

/// One item of the outbound queue: the encoded frame and whether it is trackable (gets a
/// sequence id under stateful reconnect; see `HubMessage::is_trackable`).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) frame: Frame,
    pub(crate) trackable: bool,
}

impl Outgoing {
    /// A trackable frame (an Invocation, a Completion, ...).
    pub(crate) fn tracked(frame: Frame) -> Self {
        Outgoing {
            frame,
            trackable: true,
        }
    }

    /// A frame outside the sequence (handshake answer, Ping, Close, Ack, Sequence).
    pub(crate) fn untracked(frame: Frame) -> Self {
        Outgoing {
            frame,
            trackable: false,
        }
    }
}

/// What [`Connection::attach`] hands the transport request that now owns the connection.
#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    /// Rises with every attachment; a transport ending with an older one changes nothing.
    pub(crate) generation: u64,
    /// Cancelled when a newer WebSocket takes the connection over (stateful reconnect).
    pub(crate) detached: CancellationToken,
    /// This WebSocket resumes a stateful connection: send `Sequence` and replay first.
    pub(crate) resumed: bool,
}

/// The transport a connection uses (fixed by the first transport request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportKind {
    WebSockets,
    ServerSentEvents,
    LongPolling,
}

/// Why a transport request cannot use the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AttachError {
    #[error("another request is already active for this connection")]
    Busy,
    #[error("the connection already uses another transport")]
    OtherTransport,
    #[error("the connection is closed")]
    Closed,
}

/// Outcome of offering a frame to a connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The queue was full: the connection is being closed as a slow consumer.
    SlowConsumer,
    /// The connection is closing or closed.
    Closed,
}

/// What a long-polling GET should do.
pub(crate) enum PollStart {
    /// The first poll: answer 200 at once (the JS client waits for it before the handshake).
    First,
    /// Wait for data; the token is cancelled when a newer poll supersedes this one.
    Wait(CancellationToken),
    /// The close was already delivered: 204.
    Finished,
}

#[derive(Default)]
struct State {
    /// Bytes received before the handshake completed; `None` once it has.
    handshake: Option<Vec<u8>>,
    transport: Option<TransportKind>,
    /// A WebSocket or SSE request currently owns the transport.
    active: bool,
    attached_at: Option<Instant>,
    post_in_flight: bool,
    long_poll_started: bool,
    /// The token of the long poll now waiting, cancelled when a newer poll arrives.
    poll: Option<CancellationToken>,
    close_delivered: bool,
    /// Counts attachments (see [`Attachment::generation`]).
    generation: u64,
    /// The current attachment's detach token.
    detach: Option<CancellationToken>,
    /// Stateful reconnect: when the WebSocket dropped, while no new one has resumed.
    disconnected_at: Option<Instant>,
}

/// A client connection.
///
/// The fields that fan-out and the WebSocket writer touch for every frame come first and fit
/// one cache line: `repr(C)` keeps the declared order and `align(64)` starts them on a line
/// (Rust's own layout spread them over the struct, and with 2,000 recipients a message's
/// cost is mostly cache misses).
#[repr(C, align(64))]
pub(crate) struct Connection {
    /// Producer side of the bounded outbound queue (`queue.rs`): fan-out never waits, and
    /// a full queue is the slow-consumer signal.
    queue: queue::Sender,
    /// Stateful reconnect state, `Some` when negotiated. A std `Mutex`: the WebSocket writer
    /// and `receive` update it synchronously, never across an `.await`.
    replay: Option<Box<Mutex<Replay>>>,
    /// Milliseconds after `created` when a frame was last queued for the client (the
    /// handshake answer included): a Ping is due `keep_alive` after it.
    last_sent_ms: AtomicU64,
    created: Instant,
    /// Mirrors `closed` for the hot path: fan-out asks every recipient, and
    /// `CancellationToken::is_cancelled` takes a lock.
    closing: AtomicBool,
    /// Set once by the handshake; read lock-free by fan-out.
    protocol: OnceLock<Protocol>,
    /// Public connection id (REST API, `excluded`).
    pub(crate) id: String,
    /// Secret transport id (`id=` on `/client/`); equals `id` for negotiate v0.
    pub(crate) token: String,
    /// Lowercased hub name.
    pub(crate) hub: String,
    /// User id from the token, if any.
    pub(crate) user: Option<String>,
    /// Consumer side. A tokio `Mutex` because its holder awaits on it: a WebSocket or SSE
    /// response holds it for its whole life, each long poll for one poll (a superseded
    /// poll releases it to the next). Dropped with the connection.
    pub(crate) outbound: Arc<tokio::sync::Mutex<queue::Receiver>>,
    /// Cancelled exactly when the connection starts closing, for any reason.
    closed: CancellationToken,
    /// The `Close` message to send last, if any; std `Mutex`: set once, read once, no await.
    close_message: Mutex<Option<Box<HubMessage>>>,
    /// Handshake and transport bookkeeping; std `Mutex`, only held for synchronous updates.
    state: Mutex<State>,
    /// Milliseconds after `created` when something was last received (client timeout).
    last_received_ms: AtomicU64,
    /// Wakes the supervisor when the handshake completes, a transport attaches or the
    /// connection closes.
    changed: Notify,
    /// Claims and query for the upstream headers; set once at creation (`open`), read by
    /// the upstream worker.
    client_info: OnceLock<Box<ClientInfo>>,
    /// The `error` of the `Close` message the connection was closed with (the upstream
    /// `disconnected` event's `Error`); set once by [`Connection::close`].
    close_error: OnceLock<String>,
    /// The queue of the connection's upstream worker, from the handshake until
    /// `disconnected` is queued (then dropped, which ends the worker). A std `Mutex`: set,
    /// cloned and taken synchronously.
    upstream: Mutex<Option<Link>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere mid-update of plain data; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TransportKind {
    /// The transport's name as SignalR spells it (metrics label).
    pub(crate) fn name(self) -> &'static str {
        match self {
            TransportKind::WebSockets => "WebSockets",
            TransportKind::ServerSentEvents => "ServerSentEvents",
            TransportKind::LongPolling => "LongPolling",
        }
    }
}

impl Connection {
    /// The attached transport's name, for metrics (`none` before one attaches).
    pub(crate) fn transport_name(&self) -> &'static str {
        lock(&self.state)
            .transport
            .map(TransportKind::name)
            .unwrap_or("none")
    }

    #[cfg(test)]
    pub(crate) fn new(
        id: String,
        token: String,
        hub: String,
        user: Option<String>,
        queue_size: usize,
    ) -> Arc<Self> {
        Self::with_replay(id, token, hub, user, queue_size, None)
    }

    /// A connection; `replay_limit`: stateful reconnect with a replay buffer of that many
    /// bytes.
    pub(crate) fn with_replay(
        id: String,
        token: String,
        hub: String,
        user: Option<String>,
        queue_size: usize,
        replay_limit: Option<usize>,
    ) -> Arc<Self> {
        let (queue, rx) = queue::bounded(queue_size);
        Arc::new(Connection {
            id,
            token,
            hub,
            user,
            protocol: OnceLock::new(),
            queue,
            outbound: Arc::new(tokio::sync::Mutex::new(rx)),
            replay: replay_limit.map(|limit| Box::new(Mutex::new(Replay::new(limit)))),
            closed: CancellationToken::new(),
            closing: AtomicBool::new(false),
            close_message: Mutex::new(None),
            state: Mutex::new(State {
                handshake: Some(Vec::new()),
                ..State::default()
            }),
            created: Instant::now(),
            last_received_ms: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
            changed: Notify::new(),
            client_info: OnceLock::new(),
            close_error: OnceLock::new(),
            upstream: Mutex::new(None),
        })
    }

    #[cfg(test)]
    pub(crate) fn set_protocol_for_test(&self, protocol: Protocol) {
        let _ = self.protocol.set(protocol);
        lock(&self.state).handshake = None;
    }

    pub(crate) fn protocol(&self) -> Option<Protocol> {
        self.protocol.get().copied()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves when the connection starts closing.
    pub(crate) fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.closed.cancelled()
    }

    /// Start closing; `message` (the first one given wins) is sent after the queued frames.
    pub(crate) fn close(&self, message: Option<HubMessage>) {
        if self.is_closed() {
            return;
        }
        if let Some(message) = message {
            if let HubMessage::Close {
                error: Some(error), ..
            } = &message
            {
                let _ = self.close_error.set(error.clone());
            }
            let mut slot = lock(&self.close_message);
            if slot.is_none() {
                *slot = Some(Box::new(message));
            }
        }
        self.closing.store(true, Ordering::Release);
        self.closed.cancel();
        self.queue.close();
        // The supervisor's one wake-up besides its timer and shutdown.
        self.changed.notify_one();
    }

    /// Record what the upstream headers say about the client (once; later calls are ignored).
    pub(crate) fn set_client_info(&self, info: ClientInfo) {
        let _ = self.client_info.set(Box::new(info));
    }

    pub(crate) fn client_info(&self) -> ClientInfo {
        self.client_info
            .get()
            .map(|info| ClientInfo::clone(info))
            .unwrap_or_default()
    }

    /// The error the connection was closed with, if any.
    pub(crate) fn close_error(&self) -> Option<String> {
        self.close_error.get().cloned()
    }

    /// Install the upstream worker's queue; `false` if one is already there.
    pub(crate) fn set_upstream(&self, link: Link) -> bool {
        let mut slot = lock(&self.upstream);
        if slot.is_some() {
            return false;
        }
        *slot = Some(link);
        true
    }

    pub(crate) fn upstream(&self) -> Option<Link> {
        lock(&self.upstream).clone()
    }

    pub(crate) fn take_upstream(&self) -> Option<Link> {
        lock(&self.upstream).take()
    }

    fn millis(&self) -> u64 {
        self.millis_at(Instant::now())
    }

    fn millis_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX)
    }

    /// Note client activity (resets the client timeout).
    pub(crate) fn touch(&self) {
        self.last_received_ms
            .store(self.millis(), Ordering::Relaxed);
    }

    fn last_received(&self) -> Instant {
        self.created + Duration::from_millis(self.last_received_ms.load(Ordering::Relaxed))
    }

    /// Note that a frame was queued for the client at `now` (postpones the next keep-alive
    /// Ping).
    fn sent(&self, now: Instant) {
        self.last_sent_ms
            .fetch_max(self.millis_at(now), Ordering::Relaxed);
    }

    fn last_sent(&self) -> Instant {
        self.created + Duration::from_millis(self.last_sent_ms.load(Ordering::Relaxed))
    }

    /// Whether the client negotiated stateful reconnect.
    pub(crate) fn is_stateful(&self) -> bool {
        self.replay.is_some()
    }

    /// Claim the connection for a transport request. A second WebSocket for a stateful
    /// connection past its handshake resumes it (detaching the old socket if that one has
    /// not ended yet); anything else already attached makes it `Busy`.
    pub(crate) fn attach(&self, kind: TransportKind) -> Result<Attachment, AttachError> {
        if self.is_closed() {
            return Err(AttachError::Closed);
        }
        let mut s = lock(&self.state);
        match s.transport {
            Some(existing) if existing != kind => return Err(AttachError::OtherTransport),
            _ => {}
        }
        let mut resumed = false;
        if kind != TransportKind::LongPolling {
            if s.active || s.transport.is_some() {
                let resumable = self.is_stateful()
                    && kind == TransportKind::WebSockets
                    && s.handshake.is_none();
                if !resumable {
                    return Err(AttachError::Busy);
                }
                resumed = true;
                if let Some(previous) = s.detach.take() {
                    previous.cancel();
                    // The old socket's writer may be waiting on the queue.
                    self.queue.interrupt();
                }
                s.disconnected_at = None;
            }
            s.active = true;
        }
        s.generation += 1;
        let detached = CancellationToken::new();
        s.detach = Some(detached.clone());
        s.transport = Some(kind);
        if s.attached_at.is_none() || resumed {
            s.attached_at.get_or_insert_with(Instant::now);
            self.touch();
        }
        let attachment = Attachment {
            generation: s.generation,
            detached,
            resumed,
        };
        drop(s);
        self.changed.notify_one();
        Ok(attachment)
    }

    /// A WebSocket attachment ended. If it is still the current one: a stateful connection
    /// whose peer went away (`resumable`) waits for a resume; anything else closes.
    pub(crate) fn end_transport(&self, generation: u64, resumable: bool) {
        let mut s = lock(&self.state);
        if s.generation != generation {
            // A newer socket took over; it owns the connection now.
            return;
        }
        s.active = false;
        s.detach = None;
        let wait = resumable
            && self.is_stateful()
            && s.handshake.is_none()
            && s.transport == Some(TransportKind::WebSockets)
            && !self.is_closed();
        if wait {
            s.disconnected_at = Some(Instant::now());
            drop(s);
            tracing::debug!(connection = %self.id, hub = %self.hub, "WebSocket dropped: kept for a stateful reconnect");
            self.changed.notify_one();
        } else {
            drop(s);
            self.close(None);
        }
    }

    /// The writer is about to write `item`: a trackable frame of a stateful connection gets
    /// its sequence id and a place in the replay buffer first.
    pub(crate) fn before_write(&self, item: Outgoing) -> Frame {
        if item.trackable
            && let Some(replay) = &self.replay
        {
            lock(replay).record(&item.frame);
        }
        item.frame
    }

    /// Whether the replay buffer is past its limit (the writer waits for an Ack).
    pub(crate) fn replay_full(&self) -> bool {
        self.replay.as_ref().is_some_and(|r| lock(r).is_full())
    }

    /// The Ack frame due now, if the client sent trackable messages since the last one.
    pub(crate) fn ack_frame(&self) -> Option<Frame> {
        let sequence_id = lock(self.replay.as_ref()?).ack_due()?;
        let protocol = self.protocol()?;
        encode_frame(protocol, &HubMessage::Ack { sequence_id }).ok()
    }

    /// What a resuming WebSocket writes first: `Sequence`, then every unacknowledged frame.
    pub(crate) fn resume_frames(&self) -> Vec<Frame> {
        let (Some(replay), Some(protocol)) = (&self.replay, self.protocol()) else {
            return Vec::new();
        };
        let (sequence_id, buffered) = lock(replay).resume();
        let mut frames = Vec::with_capacity(buffered.len() + 1);
        match encode_frame(protocol, &HubMessage::Sequence { sequence_id }) {
            Ok(frame) => frames.push(frame),
            Err(error) => tracing::error!(%error, "could not encode a Sequence message"),
        }
        tracing::debug!(connection = %self.id, sequence_id, replayed = buffered.len(), "stateful reconnect: resuming");
        frames.extend(buffered);
        frames
    }

    pub(crate) fn transport(&self) -> Option<TransportKind> {
        lock(&self.state).transport
    }

    /// Mark a POST (send) as in flight; `Busy` if one already is (→ 409).
    pub(crate) fn begin_post(self: &Arc<Self>) -> Result<PostGuard, AttachError> {
        let mut s = lock(&self.state);
        if s.post_in_flight {
            return Err(AttachError::Busy);
        }
        s.post_in_flight = true;
        Ok(PostGuard(self.clone()))
    }

    /// Register a long poll (superseding the previous one).
    pub(crate) fn start_poll(&self) -> PollStart {
        let mut s = lock(&self.state);
        if s.close_delivered {
            return PollStart::Finished;
        }
        if !s.long_poll_started {
            s.long_poll_started = true;
            return PollStart::First;
        }
        let token = CancellationToken::new();
        if let Some(previous) = s.poll.replace(token.clone()) {
            previous.cancel();
        }
        PollStart::Wait(token)
    }

    /// The last frames have been handed to the client (long polling): later polls get 204.
    pub(crate) fn mark_close_delivered(&self) {
        lock(&self.state).close_delivered = true;
    }

    /// Offer a frame to the queue without waiting. A full queue closes the connection.
    pub(crate) fn try_push(&self, item: Outgoing) -> Push {
        let (push, waker) = self.try_push_quiet(item, Instant::now());
        if let Some(waker) = waker {
            waker.wake();
        }
        push
    }

    /// Start loading the queue's memory (fan-out, a few recipients ahead).
    #[inline]
    pub(crate) fn prefetch_queue(&self) {
        self.queue.prefetch();
    }

    /// [`try_push`](Self::try_push) without the wake, for fan-out: the clock already read
    /// (once per message, not once per recipient), and the transport's waker, if it waits,
    /// handed back instead of woken (fan-out wakes its recipients in chunks).
    pub(crate) fn try_push_quiet(&self, item: Outgoing, now: Instant) -> (Push, Option<Waker>) {
        if self.is_closed() {
            return (Push::Closed, None);
        }
        match self.queue.try_push_quiet(item) {
            Ok(waker) => {
                self.sent(now);
                (Push::Queued, waker)
            }
            Err(queue::Full) => (self.close_slow_consumer(), None),
        }
    }

    /// The queue is full: close the connection (a slow consumer).
    fn close_slow_consumer(&self) -> Push {
        tracing::warn!(
            connection = %self.id,
            hub = %self.hub,
            "closing slow consumer: its outbound queue is full"
        );
        metrics::counter!(service_metrics::SLOW_CONSUMERS).increment(1);
        self.close(Some(HubMessage::Close {
            error: Some("Connection closed: the client is not reading fast enough.".into()),
            allow_reconnect: true,
        }));
        Push::SlowConsumer
    }

    /// Encode `message` for the connection's protocol and offer it to the queue.
    pub(crate) fn push_message(&self, message: &HubMessage) {
        let protocol = self.protocol();
        match protocol.unwrap_or(Protocol::Json).encode(message) {
            Ok(bytes) => {
                self.try_push(Outgoing {
                    frame: Frame::new(protocol, bytes),
                    trackable: message.is_trackable(),
                });
            }
            Err(error) => tracing::error!(%error, "could not encode a hub message"),
        }
    }

    /// Everything left to write after the connection started closing: the queued frames,
    /// then the `Close` message if there is one.
    pub(crate) fn final_frames(&self, rx: &mut queue::Receiver) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(item) = rx.try_recv() {
            frames.push(self.before_write(item));
        }
        let message = lock(&self.close_message).take();
        if let Some(message) = message {
            let protocol = self.protocol();
            match protocol.unwrap_or(Protocol::Json).encode(&message) {
                Ok(bytes) => frames.push(Frame::new(protocol, bytes)),
                Err(error) => tracing::error!(%error, "could not encode a Close message"),
            }
        }
        frames
    }

    /// Handle bytes from the client: the handshake first, then hub messages. Anything
    /// malformed closes the connection; nothing here panics or waits.
    pub(crate) fn receive(self: &Arc<Self>, data: &[u8], shared: &Shared) {
        if self.is_closed() {
            return;
        }
        self.touch();
        let mut s = lock(&self.state);
        let Some(buffer) = s.handshake.as_mut() else {
            drop(s);
            self.handle_messages(data, shared);
            return;
        };
        buffer.extend_from_slice(data);
        let parsed = parse_handshake_request(buffer);
        let (request, used) = match parsed {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(error) => {
                drop(s);
                tracing::debug!(connection = %self.id, %error, "handshake failed");
                self.close(None);
                return;
            }
        };
        let rest = buffer.split_off(used);
        let transport = s.transport;
        let chosen = match Protocol::from_name(&request.protocol) {
            None => Err(format!(
                "Requested protocol '{}' is not available.",
                request.protocol
            )),
            Some(p) if request.version > MAX_PROTOCOL_VERSION => Err(format!(
                "The server does not support version {} of the '{}' protocol.",
                request.version,
                p.name()
            )),
            Some(p) if p.is_binary() && transport == Some(TransportKind::ServerSentEvents) => {
                Err(format!(
                    "Cannot use the '{}' protocol on the current transport. The transport does not support 'Binary' transfer format.",
                    p.name()
                ))
            }
            Some(p) => Ok(p),
        };
        let protocol = match chosen {
            Ok(p) => p,
            Err(error) => {
                drop(s);
                tracing::debug!(connection = %self.id, %error, "handshake refused");
                self.try_push(Outgoing::untracked(Frame::new(
                    None,
                    encode_handshake_response(Some(&error)),
                )));
                self.close(None);
                return;
            }
        };
        s.handshake = None;
        drop(s);
        let _ = self.protocol.set(protocol);
        // The response goes first, then the connection becomes visible to fan-out.
        self.try_push(Outgoing::untracked(Frame::new(
            Some(protocol),
            encode_handshake_response(None),
        )));
        shared.registry.activate(self);
        self.changed.notify_one();
        tracing::debug!(connection = %self.id, hub = %self.hub, protocol = protocol.name(), "connected");
        upstream::connected(shared, self);
        if !rest.is_empty() {
            self.handle_messages(&rest, shared);
        }
    }

    fn handle_messages(self: &Arc<Self>, data: &[u8], shared: &Shared) {
        let Some(protocol) = self.protocol() else {
            return;
        };
        let messages = match protocol.decode_frame_raw(data) {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!(connection = %self.id, %error, "malformed message from client");
                self.close(Some(HubMessage::Close {
                    error: Some(format!("Connection closed with an error. {error}")),
                    allow_reconnect: false,
                }));
                return;
            }
        };
        for raw in messages {
            let message = raw.message;
            if let Some(replay) = &self.replay {
                let mut replay = lock(replay);
                match replay.inbound(&message) {
                    Ok(true) => {}
                    // A duplicate, or a message before the client's Sequence after a resume.
                    Ok(false) => continue,
                    Err(error) => {
                        drop(replay);
                        tracing::debug!(connection = %self.id, %error, "bad Sequence from client");
                        self.close(Some(HubMessage::Close {
                            error: Some(format!("Connection closed with an error. {error}")),
                            allow_reconnect: false,
                        }));
                        return;
                    }
                }
                if let HubMessage::Ack { sequence_id } = message {
                    replay.ack(sequence_id);
                    continue;
                }
            }
            match message {
                // Forwarded upstream (or refused there when none takes it).
                HubMessage::Invocation {
                    invocation_id,
                    target,
                    ..
                } => {
                    upstream::invocation(shared, self, &target, invocation_id.as_deref(), raw.bytes)
                }
                // Not supported in serverless mode (Azure/azure-signalr#2132).
                HubMessage::StreamInvocation {
                    invocation_id: id, ..
                } => self.push_message(&HubMessage::completion_error(
                    id,
                    upstream::NO_UPSTREAM_ERROR,
                )),
                HubMessage::Close { .. } => {
                    self.close(None);
                    return;
                }
                // Fire-and-forget invocations, pings, acks and the rest need no answer.
                _ => {}
            }
        }
    }
}

/// Clears the connection's "POST in flight" flag when the POST ends.
pub(crate) struct PostGuard(Arc<Connection>);

impl Drop for PostGuard {
    fn drop(&mut self) {
        lock(&self.0.state).post_in_flight = false;
    }
}

/// Clears the "active request" flag (and closes the connection) when an SSE response ends,
/// however it ends (including a dropped response body).
pub(crate) struct ActiveGuard(pub(crate) Arc<Connection>);

/// Ends a WebSocket attachment however its task ends ([`Connection::end_transport`]): the
/// task sets `resumable` when the peer went away, which keeps a stateful connection for a
/// resume; otherwise the connection closes.
pub(crate) struct SocketGuard {
    pub(crate) connection: Arc<Connection>,
    pub(crate) generation: u64,
    pub(crate) resumable: bool,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        self.connection
            .end_transport(self.generation, self.resumable);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        lock(&self.0.state).active = false;
        self.0.close(None);
    }
}

/// The connection's timer task: handshake deadline, keep-alive Pings, client timeout and
/// shutdown; removes the connection from the registry when it ends.
///
/// Keep-alive as ASP.NET Core does it: once the handshake is answered, a Ping is queued
/// whenever nothing was queued for the client for `keep_alive`, so the client (whose own
/// server timeout is 30 s) never hears nothing for longer than that. The JS client arms
/// its own Ping timer only when it receives data, so this Ping is what keeps an idle
/// client alive in both directions. Where ASP.NET Core checks on a one-second timer, this
/// task sleeps until the exact instant a Ping becomes due (re-reading the last-sent time
/// when it wakes), so the gap is at most `keep_alive` and an idle connection costs one
/// wake-up per interval.
pub(crate) async fn supervise(connection: Arc<Connection>, shared: Arc<Shared>) {
    let options = &shared.options;
    loop {
        if connection.is_closed() {
            break;
        }
        let (handshaken, attached_at, disconnected_at) = {
            let s = lock(&connection.state);
            (s.handshake.is_none(), s.attached_at, s.disconnected_at)
        };
        let deadline = if let Some(at) = disconnected_at {
            at + options.reconnect_window
        } else if handshaken {
            (connection.last_sent() + options.keep_alive)
                .min(connection.last_received() + options.client_timeout)
        } else {
            attached_at.unwrap_or(connection.created) + options.handshake_timeout
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => {
                connection.close(Some(HubMessage::Close {
                    error: Some("Server is shutting down.".into()),
                    allow_reconnect: true,
                }));
                break;
            }
            // Closing, the handshake or a transport attaching.
            () = connection.changed.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                if disconnected_at.is_some() {
                    // Re-read: a resume may have attached meanwhile.
                    if lock(&connection.state).disconnected_at.is_some() {
                        tracing::debug!(connection = %connection.id, "not resumed within the reconnect window");
                        connection.close(None);
                    }
                } else if !handshaken {
                    tracing::debug!(connection = %connection.id, "handshake timed out");
                    connection.close(None);
                } else if now >= connection.last_received() + options.client_timeout {
                    tracing::debug!(connection = %connection.id, "client timed out");
                    connection.close(Some(HubMessage::Close {
                        error: Some(format!(
                            "Server timeout ({} ms) elapsed without receiving a message from the client.",
                            options.client_timeout.as_millis()
                        )),
                        allow_reconnect: false,
                    }));
                } else if now >= connection.last_sent() + options.keep_alive {
                    // Queuing the Ping counts as sending: the next one is due `keep_alive`
                    // from now (marked here too, so a Ping that could not be queued
                    // cannot turn this loop into a spin).
                    connection.push_message(&HubMessage::Ping);
                    connection.sent(now);
                }
                // Otherwise something was sent meanwhile: sleep until the new deadline.
            }
        }
    }
    shared.registry.deactivate(&connection);
    upstream::disconnected(&shared, &connection);
    if connection.transport() == Some(TransportKind::LongPolling) {
        tokio::select! {
            () = tokio::time::sleep(LONG_POLLING_GRACE.min(options.long_poll_timeout)) => {}
            () = shared.shutdown.cancelled() => {}
        }
    }
    shared.registry.forget(&connection);
    tracing::debug!(connection = %connection.id, "connection removed");
}

/// A random id as ASP.NET Core makes them: 16 random bytes, base64url without padding.
pub(crate) fn new_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Encode `message` for `protocol` as an outbound frame (fan-out's "encode once").
pub(crate) fn encode_frame(
    protocol: Protocol,
    message: &HubMessage,
) -> Result<Frame, protocol::ProtocolError> {
    protocol
        .encode(message)
        .map(|bytes| Frame::new(Some(protocol), bytes))
}

#[cfg(test)]
mod tests {
    use tokio_util::task::TaskTracker;

    use super::super::ServiceOptions;
    use super::super::registry::Registry;
    use super::*;

    #[test]
    fn the_fields_touched_per_frame_share_one_cache_line() {
        let end = std::mem::offset_of!(Connection, protocol) + size_of::<OnceLock<Protocol>>();
        assert!(end <= 64, "they end at byte {end}");
        assert_eq!(align_of::<Connection>(), 64);
    }

    const HANDSHAKE: &[u8] = b"{\"protocol\":\"json\",\"version\":1}\x1e";
    const CLIENT_PING: &[u8] = b"{\"type\":6}\x1e";
    const PING: &str = "{\"type\":6}\u{1e}";

    /// A service's shared state with the production intervals (15 s / 30 s), no listener.
    fn shared() -> Arc<Shared> {
        let options = ServiceOptions::new(
            "127.0.0.1:0".parse().expect("address"),
            vec!["k".to_string()],
        );
        Arc::new(Shared {
            registry: Registry::new(10),
            dedupe: super::super::dedupe::Dedupe::new(Duration::ZERO, 0),
            local_addr: options.listen,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            stopped: CancellationToken::new(),
            upstream: None,
            options,
        })
    }

    /// A WebSocket connection with a running supervisor, handshake done; returns it with the
    /// instant the handshake answer was queued.
    async fn connected(shared: &Arc<Shared>) -> (Arc<Connection>, Instant) {
        let c = Connection::new("c".into(), "c".into(), "h".into(), None, 64);
        shared.registry.insert(c.clone()).expect("insert");
        c.attach(TransportKind::WebSockets).expect("attach");
        tokio::spawn(supervise(c.clone(), shared.clone()));
        // Let the supervisor start and wait on the handshake deadline.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.receive(HANDSHAKE, shared);
        let at = Instant::now();
        let frame = c
            .outbound
            .lock()
            .await
            .recv()
            .await
            .expect("handshake answer")
            .frame;
        assert_eq!(frame.as_bytes(), b"{}\x1e");
        (c, at)
    }

    fn text(frame: &Frame) -> String {
        String::from_utf8_lossy(frame.as_bytes()).into_owned()
    }

    /// Frames the client gets until `until`, with when each arrived; the client sends a
    /// Ping every `client_ping` if given.
    async fn frames_until(
        c: &Arc<Connection>,
        shared: &Arc<Shared>,
        until: Instant,
        client_ping: Option<Duration>,
    ) -> Vec<(Instant, String)> {
        let mut rx = c.outbound.lock().await;
        let mut got = Vec::new();
        let mut next_ping = client_ping.map(|p| Instant::now() + p);
        loop {
            let wake = next_ping.map_or(until, |p| p.min(until));
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => got.push((Instant::now(), text(&item.frame))),
                    None => break,
                },
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= until {
                        break;
                    }
                    c.receive(CLIENT_PING, shared);
                    next_ping = client_ping.map(|p| Instant::now() + p);
                }
            }
        }
        got
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_a_ping_every_keep_alive_from_the_handshake() {
        let shared = shared();
        let (c, handshake) = connected(&shared).await;
        // The client pings every 10 s (as the JS client does once it hears from the server),
        // so only the server's keep-alive is under test.
        let got = frames_until(
            &c,
            &shared,
            handshake + Duration::from_secs(61),
            Some(Duration::from_secs(10)),
        )
        .await;
        assert!(got.iter().all(|(_, f)| f == PING), "{got:?}");
        let offsets: Vec<u64> = got
            .iter()
            .map(|(at, _)| (*at - handshake).as_secs_f64().round() as u64)
            .collect();
        assert_eq!(
            offsets,
            vec![15, 30, 45, 60],
            "the first Ping is not skipped"
        );
        let mut previous = handshake;
        for (at, _) in &got {
            assert!(*at - previous <= Duration::from_secs(15), "{got:?}");
            previous = *at;
        }
        assert!(!c.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn data_sent_postpones_the_next_ping() {
        let shared = shared();
        let (c, handshake) = connected(&shared).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            c.try_push(Outgoing::tracked(Frame::new(
                Some(Protocol::Json),
                b"x".to_vec()
            ))),
            Push::Queued
        );
        let got = frames_until(
            &c,
            &shared,
            handshake + Duration::from_secs(41),
            Some(Duration::from_secs(10)),
        )
        .await;
        let offsets: Vec<(u64, &str)> = got
            .iter()
            .map(|(at, f)| ((*at - handshake).as_secs_f64().round() as u64, f.as_str()))
            .collect();
        assert_eq!(offsets, vec![(10, "x"), (25, PING), (40, PING)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_pinged_then_timed_out_after_30_s() {
        let shared = shared();
        let (c, handshake) = connected(&shared).await;
        let got = frames_until(&c, &shared, handshake + Duration::from_secs(29), None).await;
        let offsets: Vec<u64> = got
            .iter()
            .map(|(at, _)| (*at - handshake).as_secs_f64().round() as u64)
            .collect();
        assert_eq!(offsets, vec![15], "{got:?}");
        assert!(!c.is_closed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(c.is_closed(), "closed 30 s after the last message received");
        let mut rx = c.outbound.lock().await;
        let last = c.final_frames(&mut rx);
        let close = last.last().map(text).unwrap_or_default();
        assert!(
            close.contains("Server timeout (30000 ms) elapsed"),
            "{close}"
        );
    }
}
