//! The embedded SignalR-compatible service: `ServiceOptions`, `Service::start` and the
//! `ServiceHandle` (Clone, Arc inside) → signalr::{protocol, token}, message.
//!
//! What clients see is Azure SignalR Service in serverless mode: `POST /client/negotiate`,
//! the three transports at `/client/?hub=…&id=…` (or a negotiate-less WebSocket), and the
//! data-plane REST API under `/api` (2022-06-01) and `/api/v1`. The service never imports the
//! daemon's configuration: the caller builds a [`ServiceOptions`].
//!
//! Two "nothing lost" features sit on top of Azure's surface: a REST send carrying
//! `x-herald-message-id` is fanned out once per id within [`ServiceOptions::dedupe_window`]
//! (repeats get 202 and are counted as `duplicate` drops), and a WebSocket client that
//! negotiates `useStatefulReconnect=true` gets ASP.NET Core's stateful reconnect: its
//! connection outlives a dropped socket for [`ServiceOptions::reconnect_window`], and a new
//! socket with the same connection token resumes it (`Sequence`, then the unacknowledged
//! frames, in order).
//!
//! # Layout
//!
//! ```text
//! mod.rs            ServiceOptions, Service::start, ServiceHandle, the route table
//! auth.rs           client and REST token checks (audience = the request URL)
//! negotiate.rs      POST /client/negotiate
//! transport/        /client/ : ws.rs, sse.rs, long_polling.rs, and the dispatcher in mod.rs
//! connection.rs     per-connection state: handshake, keep-alive, bounded outbound queue
//! registry.rs       ids/users/groups, two-way maps; std RwLock, never across .await
//! fanout.rs         recipient → connections → encode once per protocol → try_send
//! rest.rs           the data-plane REST API
//! dedupe.rs         exactly-once sends: the window of `x-herald-message-id`s seen
//! replay.rs         stateful reconnect: replay buffer, sequence ids, Acks
//! metrics.rs        metric names, HELP text, zero values before traffic
//! upstream.rs       serverless upstream: connected/disconnected/invocations POSTed, bounded
//! backplane/        the Backplane trait (sends and group changes shared with other nodes)
//! ```

mod auth;
pub mod backplane;
mod connection;
mod dedupe;
mod fanout;
pub mod metrics;
mod negotiate;
mod queue;
mod registry;
mod replay;
mod rest;
mod transport;
mod trim;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::message::{Message, Recipient};
use crate::signalr::protocol::HubMessage;
use crate::signalr::rest::Presence;
use crate::signalr::upstream::UpstreamTemplate;

pub use fanout::SendReport;
pub use upstream::UpstreamBuildError;

use backplane::Event;
use registry::Registry;

/// How the embedded service listens and behaves. Defaults follow Azure and ASP.NET Core.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Address to bind; port 0 picks a free port (see [`ServiceHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Access keys accepted for token signatures (HMAC key = the UTF-8 bytes of each key).
    pub access_keys: Vec<String>,
    /// Send a hub Ping when nothing else was sent for this long (15 s).
    pub keep_alive: Duration,
    /// Close a connection when nothing was received from it for this long (30 s).
    pub client_timeout: Duration,
    /// Time allowed between opening a transport and completing the handshake (15 s); also
    /// how long a negotiated connection may wait for its transport.
    pub handshake_timeout: Duration,
    /// How long a long-polling GET waits for data before answering 200 with no body (90 s).
    pub long_poll_timeout: Duration,
    /// Most live connections (negotiated or connected); more are refused with 503.
    pub max_connections: usize,
    /// Frames that may wait for one connection's transport; a full queue closes that
    /// connection as a slow consumer.
    pub outbound_queue: usize,
    /// Largest client message accepted (one WebSocket message or one POST body).
    pub max_message_size: usize,
    /// Largest REST request body; larger ones get 413 (Azure: 1 MB).
    pub max_rest_body: usize,
    /// Ceiling for a graceful shutdown: open transports and requests get this long to end.
    pub shutdown_timeout: Duration,
    /// A new TCP connection that has not sent a complete request head within this long is
    /// closed (10 s): a slowloris cannot hold file descriptors.
    pub header_read_timeout: Duration,
    /// A keep-alive HTTP connection with no request for this long is closed (20 s). Open
    /// WebSocket and SSE transports are not idle: the keep-alive and client timeout govern
    /// them.
    pub idle_timeout: Duration,
    /// How long a REST send's message id (`x-herald-message-id`) is remembered: a repeat
    /// within it is answered 202 and not delivered again (10 min; zero turns it off).
    pub dedupe_window: Duration,
    /// Most message ids remembered; past it the oldest is forgotten first (100 000; zero
    /// turns deduplication off).
    pub dedupe_capacity: usize,
    /// Stateful reconnect: most bytes of sent but unacknowledged messages kept per
    /// connection for replay (ASP.NET's `StatefulReconnectBufferSize`, 100 000). Past it the
    /// connection's writer waits for the client's Ack (and a queue that fills meanwhile
    /// closes the connection as a slow consumer). Zero: stateful reconnect is not offered.
    pub stateful_reconnect_buffer: usize,
    /// Stateful reconnect: how long a connection whose WebSocket dropped stays alive (id,
    /// user, groups, buffer) for the client to resume it (ASP.NET's `DisconnectTimeout`,
    /// 15 s). After it the connection is closed as any other.
    pub reconnect_window: Duration,
    /// Serverless upstream settings, in order: the first template matching an event's hub,
    /// category and event gets it (empty: no upstream; client invocations are refused).
    pub upstreams: Vec<UpstreamTemplate>,
    /// How long one upstream POST may take, connect to last body byte (10 s). An
    /// invocation that times out gets a Completion error.
    pub upstream_timeout: Duration,
    /// Most upstream POSTs in flight per hub (16).
    pub upstream_concurrency: usize,
    /// Most upstream events waiting per hub beyond those in flight (256); past it a
    /// connection event is dropped (and counted) and an invocation gets a Completion error.
    pub upstream_queue: usize,
    /// Where sends and group changes are shared with other nodes ([`backplane::Local`]: one
    /// node, nothing shared).
    pub backplane: Arc<dyn backplane::Backplane>,
}

impl ServiceOptions {
    /// Options with the defaults for everything but the address and the keys.
    pub fn new(listen: SocketAddr, access_keys: Vec<String>) -> Self {
        ServiceOptions {
            listen,
            access_keys,
            keep_alive: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(15),
            long_poll_timeout: Duration::from_secs(90),
            max_connections: 10_000,
            outbound_queue: 256,
            max_message_size: 1024 * 1024,
            max_rest_body: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            dedupe_window: Duration::from_secs(600),
            dedupe_capacity: 100_000,
            stateful_reconnect_buffer: 100_000,
            reconnect_window: Duration::from_secs(15),
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(10),
            upstream_concurrency: 16,
            upstream_queue: 256,
            backplane: Arc::new(backplane::Local),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no access key configured: tokens could never be verified")]
    NoAccessKeys,
    #[error("invalid service option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamBuildError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The embedded service; see [`Service::start`].
pub struct Service;

impl Service {
    /// Bind `options.listen` and serve until `shutdown` is cancelled (or
    /// [`ServiceHandle::shutdown`] is called). On shutdown every connection gets a `Close`
    /// message with `allowReconnect: true`, and transports and requests get
    /// `options.shutdown_timeout` to end; [`ServiceHandle::stopped`] resolves after that.
    pub async fn start(
        options: ServiceOptions,
        shutdown: CancellationToken,
    ) -> Result<ServiceHandle, ServiceError> {
        validate(&options)?;
        self::metrics::describe();
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: options.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServiceError::Bind {
            addr: options.listen,
            source,
        })?;
        let upstream = upstream::Upstream::new(
            options.upstreams.clone(),
            options.access_keys.clone(),
            options.upstream_timeout,
            options.upstream_concurrency,
            options.upstream_queue,
        )?
        .map(Arc::new);
        let shared = Arc::new(Shared {
            upstream,
            registry: Registry::new(options.max_connections),
            dedupe: dedupe::Dedupe::new(options.dedupe_window, options.dedupe_capacity),
            local_addr,
            shutdown: shutdown.child_token(),
            tracker: TaskTracker::new(),
            stopped: CancellationToken::new(),
            options,
        });
        let handle = ServiceHandle {
            shared: shared.clone(),
        };
        let app = handle.router();
        shared.tracker.spawn(registry::sweep(shared.clone()));
        shared.tracker.spawn(trim::run(shared.clone()));
        tokio::spawn(serve(listener, app, shared));
        tracing::info!(addr = %local_addr, "embedded SignalR service listening");
        Ok(handle)
    }
}

fn validate(options: &ServiceOptions) -> Result<(), ServiceError> {
    if options.access_keys.iter().all(|k| k.is_empty()) {
        return Err(ServiceError::NoAccessKeys);
    }
    let checks: [(&'static str, bool); 12] = [
        ("keep_alive", options.keep_alive.is_zero()),
        ("client_timeout", options.client_timeout.is_zero()),
        ("handshake_timeout", options.handshake_timeout.is_zero()),
        ("long_poll_timeout", options.long_poll_timeout.is_zero()),
        ("max_connections", options.max_connections == 0),
        ("outbound_queue", options.outbound_queue == 0),
        ("max_message_size", options.max_message_size == 0),
        ("header_read_timeout", options.header_read_timeout.is_zero()),
        ("idle_timeout", options.idle_timeout.is_zero()),
        ("reconnect_window", options.reconnect_window.is_zero()),
        ("upstream_timeout", options.upstream_timeout.is_zero()),
        ("upstream_concurrency", options.upstream_concurrency == 0),
    ];
    for (option, bad) in checks {
        if bad {
            return Err(ServiceError::InvalidOption {
                option,
                reason: "must be greater than zero",
            });
        }
    }
    Ok(())
}

/// Run the server until shutdown, then wait (with a ceiling) for the tracked tasks.
async fn serve(listener: tokio::net::TcpListener, app: Router, shared: Arc<Shared>) {
    let options = crate::server::ServeOptions {
        header_read_timeout: shared.options.header_read_timeout,
        idle_timeout: shared.options.idle_timeout,
        shutdown_deadline: shared.options.shutdown_timeout,
    };
    if let Err(error) = crate::server::serve(listener, app, options, shared.shutdown.clone()).await
    {
        tracing::error!(%error, "embedded SignalR service stopped with an error");
    }
    shared.tracker.close();
    if tokio::time::timeout(shared.options.shutdown_timeout, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("embedded SignalR service: connections outlived the shutdown timeout");
    }
    tracing::info!("embedded SignalR service stopped");
    shared.stopped.cancel();
}

/// Everything the routes, the connection tasks and the handle share; one per service,
/// owned through `Arc`s and dropped when the last handle and task are gone.
pub(crate) struct Shared {
    pub(crate) options: ServiceOptions,
    /// Connections, users and groups; see `registry.rs` for its locking.
    pub(crate) registry: Registry,
    /// Message ids of REST sends already fanned out (its own short std `Mutex`).
    pub(crate) dedupe: dedupe::Dedupe,
    pub(crate) local_addr: SocketAddr,
    /// Child of the caller's token: cancelling it stops only this service.
    pub(crate) shutdown: CancellationToken,
    /// Tracks connection tasks, which axum's graceful shutdown does not see (WebSocket
    /// tasks are spawned by the upgrade).
    pub(crate) tracker: TaskTracker,
    /// Cancelled once the server and every tracked task have ended.
    pub(crate) stopped: CancellationToken,
    /// The upstream sender, `None` without upstream templates.
    pub(crate) upstream: Option<Arc<upstream::Upstream>>,
}

impl Shared {
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.options
            .access_keys
            .iter()
            .map(String::as_str)
            .collect()
    }
}

/// A cheap, cloneable handle to a running service: send messages, manage groups, inspect
/// connections, or mount its routes elsewhere.
#[derive(Clone)]
pub struct ServiceHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServiceHandle {
    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Deliver `message` to its recipients now. Never waits on a client: each connection's
    /// queue is tried once, and a full one closes that connection.
    pub fn send(&self, message: &Message) -> SendReport {
        self.publish(Event::Send(message.clone()));
        fanout::deliver(&self.shared.registry, message)
    }

    fn publish(&self, event: Event) {
        if self.shared.options.backplane.is_shared() {
            self.shared.options.backplane.publish(event);
        }
    }

    /// A connection operation for a connection this node may not have: applied here when it
    /// is here; otherwise forwarded to the other nodes when there are any (answered `true`,
    /// the node that has it applies it), else `false`.
    fn local_or_forward(&self, local: bool, event: impl FnOnce() -> Event) -> bool {
        if local {
            return true;
        }
        if self.shared.options.backplane.is_shared() {
            self.shared.options.backplane.publish(event());
            return true;
        }
        false
    }

    /// Apply what another node published: deliver to local connections, or change local
    /// membership; never published again.
    pub fn apply(&self, event: Event) {
        let r = &self.shared.registry;
        match event {
            Event::Send(message) => {
                fanout::deliver(r, &message);
            }
            Event::AddConnectionToGroup {
                hub,
                group,
                connection,
            } => {
                r.add_connection_to_group(&hub, &group, &connection);
            }
            Event::RemoveConnectionFromGroup {
                hub,
                group,
                connection,
            } => {
                r.remove_connection_from_group(&hub, &group, &connection);
            }
            Event::RemoveConnectionFromAllGroups { hub, connection } => {
                r.remove_connection_from_all_groups(&hub, &connection);
            }
            Event::AddUserToGroup {
                hub,
                group,
                user,
                ttl_ms,
            } => r.add_user_to_group(&hub, &group, &user, Event::ttl(ttl_ms)),
            Event::RemoveUserFromGroup { hub, group, user } => {
                r.remove_user_from_group(&hub, &group, &user)
            }
            Event::RemoveUserFromAllGroups { hub, user } => {
                r.remove_user_from_all_groups(&hub, &user)
            }
        }
    }

    /// Add a connection to a group; `false` if the connection is not connected to `hub`.
    pub fn add_connection_to_group(&self, hub: &str, group: &str, connection_id: &str) -> bool {
        let local = self
            .shared
            .registry
            .add_connection_to_group(hub, group, connection_id);
        self.local_or_forward(local, || Event::AddConnectionToGroup {
            hub: hub.to_string(),
            group: group.to_string(),
            connection: connection_id.to_string(),
        })
    }

    /// Remove a connection from a group; `false` if the connection is not connected to `hub`.
    pub fn remove_connection_from_group(
        &self,
        hub: &str,
        group: &str,
        connection_id: &str,
    ) -> bool {
        let local = self
            .shared
            .registry
            .remove_connection_from_group(hub, group, connection_id);
        self.local_or_forward(local, || Event::RemoveConnectionFromGroup {
            hub: hub.to_string(),
            group: group.to_string(),
            connection: connection_id.to_string(),
        })
    }

    /// Remove a connection from every group; `false` if the connection is unknown.
    pub fn remove_connection_from_all_groups(&self, hub: &str, connection_id: &str) -> bool {
        let local = self
            .shared
            .registry
            .remove_connection_from_all_groups(hub, connection_id);
        self.local_or_forward(local, || Event::RemoveConnectionFromAllGroups {
            hub: hub.to_string(),
            connection: connection_id.to_string(),
        })
    }

    /// Add a user to a group, for the user's current and future connections. `ttl`: how
    /// long the membership lasts (none: one year; zero: only the current connections).
    pub fn add_user_to_group(&self, hub: &str, group: &str, user: &str, ttl: Option<Duration>) {
        self.shared
            .registry
            .add_user_to_group(hub, group, user, ttl);
        self.publish(Event::AddUserToGroup {
            hub: hub.to_string(),
            group: group.to_string(),
            user: user.to_string(),
            ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        });
    }

    /// Remove a user (and the user's connections) from a group.
    pub fn remove_user_from_group(&self, hub: &str, group: &str, user: &str) {
        self.shared
            .registry
            .remove_user_from_group(hub, group, user);
        self.publish(Event::RemoveUserFromGroup {
            hub: hub.to_string(),
            group: group.to_string(),
            user: user.to_string(),
        });
    }

    /// Remove a user (and the user's connections) from every group of `hub`.
    pub fn remove_user_from_all_groups(&self, hub: &str, user: &str) {
        self.shared.registry.remove_user_from_all_groups(hub, user);
        self.publish(Event::RemoveUserFromAllGroups {
            hub: hub.to_string(),
            user: user.to_string(),
        });
    }

    /// Whether the user is a member of the group.
    pub fn user_in_group(&self, hub: &str, group: &str, user: &str) -> bool {
        self.shared.registry.user_in_group(hub, group, user)
    }

    /// Whether the connection is connected to `hub`.
    pub fn connection_exists(&self, hub: &str, connection_id: &str) -> bool {
        self.shared
            .registry
            .connection(hub, connection_id)
            .is_some()
    }

    /// Whether the user has at least one connection to `hub`.
    pub fn user_exists(&self, hub: &str, user: &str) -> bool {
        self.shared.registry.user_exists(hub, user)
    }

    /// Whether the group has at least one connection.
    pub fn group_exists(&self, hub: &str, group: &str) -> bool {
        self.shared.registry.group_exists(hub, group)
    }

    /// Close one connection: it gets a `Close` message (`allowReconnect: true`, `error` =
    /// `reason`) and then its transport closes. `false` if the connection is unknown.
    pub fn close_connection(&self, hub: &str, connection_id: &str, reason: Option<&str>) -> bool {
        match self.shared.registry.connection(hub, connection_id) {
            Some(connection) => {
                connection.close(Some(close_message(reason)));
                true
            }
            None => false,
        }
    }

    /// Close every connection of `to` (all, a user's, a group's or one) except `excluded`;
    /// returns how many were closed.
    pub fn close_connections(
        &self,
        hub: &str,
        to: &Recipient,
        excluded: &[String],
        reason: Option<&str>,
    ) -> usize {
        let targets = self.shared.registry.resolve(hub, to, excluded);
        for connection in &targets {
            connection.close(Some(close_message(reason)));
        }
        targets.len()
    }

    /// Who is connected to `hub`: connections, distinct users, groups with a connection,
    /// and connections per transport (the REST extension `GET /api/hubs/{hub}/presence`).
    pub fn presence(&self, hub: &str) -> Presence {
        let (connections, users, groups) = self.shared.registry.presence(hub);
        let mut transports = std::collections::BTreeMap::new();
        for connection in &connections {
            *transports
                .entry(connection.transport_name().to_string())
                .or_insert(0) += 1;
        }
        Presence {
            connections: connections.len(),
            users,
            groups,
            transports,
        }
    }

    /// Per lowercased hub with a connection: (hub, connections, distinct users).
    pub fn hub_counts(&self) -> Vec<(String, usize, usize)> {
        self.shared.registry.hub_counts()
    }

    /// Connections that completed their handshake, over all hubs.
    pub fn connection_count(&self) -> usize {
        self.shared.registry.connected_count()
    }

    /// The full route table (client endpoint with CORS, REST API), for serving elsewhere
    /// or for `oneshot` tests. [`Service::start`] serves exactly this.
    pub fn router(&self) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_credentials(true)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            .max_age(Duration::from_secs(3600));
        let client = Router::new()
            .route("/client/negotiate", post(negotiate::negotiate))
            .route("/client/negotiate/", post(negotiate::negotiate))
            .route("/client", any(transport::client))
            .route("/client/", any(transport::client))
            .layer(cors)
            .with_state(self.shared.clone());
        let api = Router::new()
            .route("/api", any(rest::api))
            .route("/api/{*path}", any(rest::api))
            .layer(axum::extract::DefaultBodyLimit::max(
                self.shared.options.max_rest_body,
            ))
            .with_state(self.shared.clone());
        client.merge(api)
    }

    /// Stop this service (the caller's token is left alone).
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Resolves once the service has stopped and its connection tasks have ended (or the
    /// shutdown timeout passed).
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }
}

/// The `Close` message sent when a connection is closed through the REST API or the handle.
fn close_message(reason: Option<&str>) -> HubMessage {
    HubMessage::Close {
        error: reason.filter(|r| !r.is_empty()).map(str::to_string),
        allow_reconnect: true,
    }
}

/// Hub names are case-insensitive: every table is keyed by the lowercased name.
pub(crate) fn hub_key(hub: &str) -> String {
    hub.to_ascii_lowercase()
}
