//! Scale-out on Redis: several herald nodes as one logical service. Owns the Redis
//! connections (a `ConnectionManager` for commands, reconnecting with backoff; a dedicated
//! pub/sub connection with its own resubscribe loop), the backplane transport (see
//! `backplane.rs`), schedule-fire locks, cross-node idempotency keys, persisted user-group
//! memberships, cluster-wide presence and the health that `/readyz`, `/healthz` and metrics
//! report. → service (the `Backplane` trait, `ServiceHandle`), redis.
//!
//! Keys (all under `herald:`):
//!
//! ```text
//! herald:backplane                      pub/sub channel of backplane envelopes (JSON)
//! herald:fire:{schedule}:{instant_ms}   SET NX PX 60000, value = node id (fencing value)
//! herald:idem:{scope}:{key}             SET NX PX window, value = the first answer
//! herald:user-groups                    hash ["hub","group","user"] → expiry (ms since epoch)
//! herald:node:{node}                    hash: `connections` (this node's total) and
//!                                       `hub:{hub}` → "connections users" per hub,
//!                                       PX 15 s, refreshed every second
//! herald:history:{hub}, herald:retained:{hub}   cluster-wide history and retained
//!                                       statuses (see `shared.rs`)
//! ```
//!
//! Cluster-wide presence sums the nodes' per-hub counts: connections exactly, users as an
//! upper bound (a user connected to two nodes counts twice).
//!
//! Faults: while Redis is away every node keeps serving its own connections; publishes fail
//! fast (counted, not buffered: a late replay would deliver twice what each node already
//! delivered locally), locks and idempotency fall back to the node's own SQLite, and the
//! subscriber retries with backoff. One log line when Redis goes away, one when it is back.

mod backplane;
mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::service::ServiceHandle;
use crate::service::backplane::Envelope;

pub use backplane::RedisBackplane;
pub use shared::Shared;

/// The pub/sub channel every node publishes to and subscribes to.
pub const CHANNEL: &str = "herald:backplane";
/// How long a schedule-fire lock is held (longer than any catch-up of a late fire).
pub const FIRE_LOCK: Duration = Duration::from_secs(60);
/// Longest a Redis command may take before it counts as failed (Redis away).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Envelopes waiting to be published / applied; more are dropped and counted.
const QUEUE: usize = 4096;
/// Backoff of the subscriber's reconnect loop.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often health is probed and this node's presence refreshed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A node's presence key expires this long after its last refresh (a dead node drops out).
const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// Metric names.
pub const REDIS_UP: &str = "herald_cluster_redis_up";
pub const PUBLISHED: &str = "herald_cluster_published_total";
pub const PUBLISH_FAILURES: &str = "herald_cluster_publish_failures_total";
pub const RECEIVED: &str = "herald_cluster_received_total";
pub const DROPPED: &str = "herald_cluster_dropped_total";

fn describe() {
    metrics::describe_gauge!(
        REDIS_UP,
        "1 while the cluster's Redis answers (commands and the backplane subscription), else 0"
    );
    metrics::describe_counter!(PUBLISHED, "Backplane envelopes published to Redis");
    metrics::describe_counter!(
        PUBLISH_FAILURES,
        "Backplane envelopes that could not be published (Redis away); not retried"
    );
    metrics::describe_counter!(RECEIVED, "Backplane envelopes received from other nodes");
    metrics::describe_counter!(
        DROPPED,
        "Backplane envelopes dropped: a full queue (direction out or in) or undecodable"
    );
    metrics::gauge!(REDIS_UP).set(0.0);
    for direction in ["out", "in", "undecodable"] {
        metrics::counter!(DROPPED, "direction" => direction).increment(0);
    }
    metrics::counter!(PUBLISHED).increment(0);
    metrics::counter!(PUBLISH_FAILURES).increment(0);
    metrics::counter!(RECEIVED).increment(0);
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid Redis URL: {0}")]
    Url(#[source] redis::RedisError),
    #[error("Redis command {command} failed: {source}")]
    Command {
        command: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis command {0} timed out")]
    Timeout(&'static str),
}

/// The cluster membership of this node: a cheap, cloneable handle.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: String,
    client: redis::Client,
    /// Commands (publish, locks, keys). Cloning it is cheap and shares one multiplexed
    /// connection; it reconnects by itself with backoff.
    commands: ConnectionManager,
    /// The subscription is live (set by the subscriber loop).
    subscribed: AtomicBool,
    /// The last probe answered (set by the probe loop).
    commands_up: AtomicBool,
    /// Whether "Redis is away" was logged (one line per outage).
    down_logged: AtomicBool,
    /// Redis was up at least once (before that, "away" is the start, not an outage).
    was_up: AtomicBool,
    /// Where `RedisBackplane::publish` queues envelopes for the publisher task.
    outgoing: mpsc::Sender<backplane::Outgoing>,
    /// The receiving end of what other nodes published, taken once by `attach`. A std
    /// `Mutex`: touched once at startup.
    incoming: std::sync::Mutex<Option<mpsc::Receiver<Envelope>>>,
    incoming_tx: mpsc::Sender<Envelope>,
    shutdown: CancellationToken,
}

impl Cluster {
    /// Connect (lazily: a Redis that is away now is retried in the background) and start the
    /// subscriber, publisher and probe tasks, which stop with `shutdown`.
    pub fn start(
        url: &str,
        node: Option<String>,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        describe();
        let client = redis::Client::open(url).map_err(ClusterError::Url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_min_delay(BACKOFF_MIN)
            .set_max_delay(BACKOFF_MAX)
            .set_number_of_retries(1);
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(ClusterError::Url)?;
        let node = node.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].into());
        let (outgoing, outgoing_rx) = mpsc::channel(QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::channel(QUEUE);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node,
                client,
                commands,
                subscribed: AtomicBool::new(false),
                commands_up: AtomicBool::new(false),
                down_logged: AtomicBool::new(false),
                was_up: AtomicBool::new(false),
                outgoing,
                incoming: std::sync::Mutex::new(Some(incoming_rx)),
                incoming_tx,
                shutdown,
            }),
        };
        tokio::spawn(backplane::publisher(cluster.clone(), outgoing_rx));
        tokio::spawn(backplane::subscriber(cluster.clone()));
        tracing::info!(node = %cluster.node(), "cluster: joining through Redis");
        Ok(cluster)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The backplane to give the embedded service (`ServiceOptions::backplane`).
    pub fn backplane(&self) -> Arc<RedisBackplane> {
        Arc::new(RedisBackplane::new(self.clone()))
    }

    /// Apply what other nodes publish to `service`, and report its connection count as this
    /// node's presence. Call once, after the service started.
    pub fn attach(&self, service: ServiceHandle) {
        let rx = self
            .inner
            .incoming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut rx) = rx {
            let applier = service.clone();
            let stop = self.inner.shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        next = rx.recv() => match next {
                            Some(envelope) => applier.apply(envelope.event),
                            None => break,
                        },
                    }
                }
            });
        }
        tokio::spawn(probe(self.clone(), service));
    }

    /// Redis answers and the backplane subscription is live.
    pub fn redis_up(&self) -> bool {
        self.inner.commands_up.load(Ordering::Relaxed)
            && self.inner.subscribed.load(Ordering::Relaxed)
    }

    /// Record the state of Redis: the gauge, and one log line per change.
    fn note_health(&self) {
        let up = self.redis_up();
        metrics::gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
        if up {
            self.inner.was_up.store(true, Ordering::Relaxed);
            if self.inner.down_logged.swap(false, Ordering::Relaxed) {
                tracing::info!(node = %self.node(), "cluster: Redis is back; cross-node delivery resumed");
            }
        } else if self.inner.was_up.load(Ordering::Relaxed)
            && !self.inner.down_logged.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(node = %self.node(), "cluster: Redis is away; serving local connections only, retrying with backoff");
        }
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, ClusterError> {
        let mut conn = self.inner.commands.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ClusterError::Command { command, source }),
            Err(_) => Err(ClusterError::Timeout(command)),
        }
    }

    async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, ClusterError> {
        let mut conn = self.inner.commands.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ClusterError::Command { command, source }),
            Err(_) => Err(ClusterError::Timeout(command)),
        }
    }

    /// Take the lock of one schedule fire: `true` if this node won it and must store the
    /// fire. Held for [`FIRE_LOCK`], so it outlives reloads and restarts of any node.
    pub async fn claim_fire(&self, schedule: &str, instant_ms: i64) -> Result<bool, ClusterError> {
        let key = format!("herald:fire:{schedule}:{instant_ms}");
        let set: Option<String> = self
            .query(
                "SET NX (fire lock)",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(self.node())
                    .arg("NX")
                    .arg("PX")
                    .arg(FIRE_LOCK.as_millis() as u64),
            )
            .await?;
        Ok(set.is_some())
    }

    /// Remember `answer` under an idempotency key for `window`, cluster-wide. `None`: first
    /// time (go on); `Some(first)`: another request (on any node) had it, with this answer.
    pub async fn idempotency(
        &self,
        scope: &str,
        key: &str,
        answer: &str,
        window: Duration,
    ) -> Result<Option<String>, ClusterError> {
        let redis_key = format!("herald:idem:{scope}:{key}");
        let set: Option<String> = self
            .query(
                "SET NX (idempotency)",
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(answer)
                    .arg("NX")
                    .arg("PX")
                    .arg(window.as_millis().max(1) as u64),
            )
            .await?;
        if set.is_some() {
            return Ok(None);
        }
        let first: Option<String> = self
            .query("GET (idempotency)", redis::cmd("GET").arg(&redis_key))
            .await?;
        Ok(first)
    }

    /// Every live node's presence hash.
    async fn node_presence(&self) -> Result<Vec<HashMap<String, String>>, ClusterError> {
        let keys: Vec<String> = self
            .query("KEYS (presence)", redis::cmd("KEYS").arg("herald:node:*"))
            .await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HGETALL").arg(key);
        }
        let all: Vec<HashMap<String, String>> =
            self.query_pipe("HGETALL (presence)", &pipe).await?;
        // A key that expired between KEYS and HGETALL answers an empty hash.
        Ok(all.into_iter().filter(|h| !h.is_empty()).collect())
    }

    /// Connections over every live node: (nodes, connections).
    pub async fn presence(&self) -> Result<(usize, u64), ClusterError> {
        let nodes = self.node_presence().await?;
        let connections = nodes
            .iter()
            .filter_map(|h| h.get("connections")?.parse::<u64>().ok())
            .sum();
        Ok((nodes.len(), connections))
    }

    /// `hub` over every live node: (nodes, connections, users). Users are summed over
    /// nodes, so an upper bound: one user connected to two nodes counts twice.
    pub async fn hub_presence(&self, hub: &str) -> Result<(usize, u64, u64), ClusterError> {
        let nodes = self.node_presence().await?;
        let field = format!("hub:{}", hub.to_ascii_lowercase());
        let (mut connections, mut users) = (0, 0);
        for node in &nodes {
            if let Some((c, u)) = node.get(&field).and_then(|v| v.split_once(' ')) {
                connections += c.parse::<u64>().unwrap_or(0);
                users += u.parse::<u64>().unwrap_or(0);
            }
        }
        Ok((nodes.len(), connections, users))
    }
}

/// Every [`PROBE_EVERY`]: PING, refresh this node's presence, update health.
async fn probe(cluster: Cluster, service: ServiceHandle) {
    let key = format!("herald:node:{}", cluster.node());
    loop {
        let count = service.connection_count() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        pipe.cmd("HSET").arg(&key).arg("connections").arg(count);
        for (hub, connections, users) in service.hub_counts() {
            pipe.arg(format!("hub:{hub}"))
                .arg(format!("{connections} {users}"));
        }
        pipe.ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(PRESENCE_TTL.as_millis() as u64)
            .ignore();
        let ok = cluster
            .query_pipe::<()>("HSET (presence)", &pipe)
            .await
            .is_ok();
        cluster.inner.commands_up.store(ok, Ordering::Relaxed);
        cluster.note_health();
        tokio::select! {
            _ = cluster.inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
    // Leave the presence count at once rather than after its expiry.
    let _ = cluster
        .query::<()>("DEL (presence)", redis::cmd("DEL").arg(&key))
        .await;
}

/// The next backoff after `current`.
fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

/// The cluster's part of accepting messages (`Outbox::accept`): a schedule fire is stored
/// only by the node that wins its lock, and an idempotency key seen on any node answers with
/// the first answer. `Some`: stop here with this answer; `None`: store locally as usual.
/// Redis away: `None` (each node decides alone, as one node would; every node then delivers
/// its own fires to its own connections, since the backplane is down too).
pub async fn shared_accept(
    cluster: &Cluster,
    accept: &crate::store::Accept,
) -> Option<crate::store::Accepted> {
    use crate::store::Accepted;
    if let Some(fire) = &accept.fire {
        match cluster.claim_fire(&fire.schedule, fire.instant_ms).await {
            Ok(true) => {}
            Ok(false) => return Some(Accepted::FireSeen),
            Err(error) => {
                tracing::debug!(%error, schedule = %fire.schedule, "cluster: fire lock unavailable; firing locally");
            }
        }
    }
    if let Some(idem) = &accept.idempotency {
        match cluster
            .idempotency(&idem.scope, &idem.key, &idem.answer, idem.window)
            .await
        {
            Ok(Some(first)) => return Some(Accepted::Repeat(first)),
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, "cluster: idempotency key unavailable; checking locally only");
            }
        }
    }
    None
}
