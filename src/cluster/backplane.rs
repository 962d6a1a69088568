//! The Redis backplane transport: `RedisBackplane` (the service's `Backplane`), the publisher
//! task (PUBLISH, plus the `herald:user-groups` hash for user-group changes) and the subscriber
//! task (SUBSCRIBE with its own reconnect loop; on every (re)subscribe it loads the persisted
//! user-group memberships, so a node that starts or reconnects later has them).
//!
//! Why plain pub/sub (measured with `redis-benchmark -n 50000 -c 8`, 48-byte payload, Redis
//! 7.0 on loopback, a loaded 2-core machine: PUBLISH 24.6k/s p50 0.063 ms, SPUBLISH 21.5k/s
//! p50 0.063 ms, XADD MAXLEN ~ 10000 18.9k/s p50 0.087 ms, before any XREAD): PUBLISH and
//! SPUBLISH cost the same on one Redis (sharded pub/sub only spreads channels over a Redis
//! Cluster, and herald uses one channel), and both beat XADD + XREAD streams, whose one gain,
//! replay after a gap, is unwanted here: during an outage every node already delivered its own
//! sends to its own connections, so replaying them later would deliver twice. Fan-out is
//! at-most-once per connection anyway; durability is each node's outbox.
//!
//! Bounded everywhere: publishes go through a bounded queue (full: dropped, counted as
//! `direction="out"`), and received envelopes into a bounded queue toward the service
//! (full: dropped, `direction="in"`). The pub/sub stream of redis-rs is read by one task that
//! only decodes and `try_send`s, so it never grows.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{CHANNEL, Cluster, DROPPED, PUBLISH_FAILURES, PUBLISHED, RECEIVED};
use crate::service::backplane::{Backplane, Envelope, Event};

/// Persisted user-group memberships.
const USER_GROUPS: &str = "herald:user-groups";
/// A user-group membership without ttl lasts this long (as in the registry and Azure).
const DEFAULT_MEMBERSHIP: Duration = Duration::from_secs(365 * 24 * 3600);
/// A publish that waited longer than this (Redis away) is dropped, not sent late.
const STALE: Duration = Duration::from_secs(2);

/// One envelope waiting for the publisher.
pub(super) struct Outgoing {
    event: Event,
    queued: Instant,
}

/// The service's backplane on Redis.
#[derive(Debug)]
pub struct RedisBackplane {
    cluster: Cluster,
}

impl RedisBackplane {
    pub(super) fn new(cluster: Cluster) -> Self {
        RedisBackplane { cluster }
    }
}

impl Backplane for RedisBackplane {
    fn is_shared(&self) -> bool {
        true
    }

    fn publish(&self, event: Event) {
        let item = Outgoing {
            event,
            queued: Instant::now(),
        };
        if self.cluster.inner.outgoing.try_send(item).is_err() {
            metrics::counter!(DROPPED, "direction" => "out").increment(1);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn membership_field(hub: &str, group: &str, user: &str) -> String {
    serde_json::json!([hub.to_ascii_lowercase(), group, user]).to_string()
}

/// Publish queued envelopes in order until shutdown.
pub(super) async fn publisher(cluster: Cluster, mut rx: mpsc::Receiver<Outgoing>) {
    let stop = cluster.inner.shutdown.clone();
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        if item.queued.elapsed() > STALE || !cluster.redis_up() && item.queued.elapsed() > STALE / 4
        {
            metrics::counter!(PUBLISH_FAILURES).increment(1);
            continue;
        }
        if let Err(error) = publish_one(&cluster, item.event).await {
            metrics::counter!(PUBLISH_FAILURES).increment(1);
            tracing::debug!(%error, "cluster: publish failed");
        }
    }
}

async fn publish_one(cluster: &Cluster, event: Event) -> Result<(), super::ClusterError> {
    // User-group memberships also live in a hash, for nodes that join later.
    match &event {
        Event::AddUserToGroup {
            hub,
            group,
            user,
            ttl_ms,
        } if *ttl_ms != Some(0) => {
            let ttl = ttl_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_MEMBERSHIP);
            let expires = now_ms().saturating_add(ttl.as_millis() as u64);
            cluster
                .query::<()>(
                    "HSET (user group)",
                    redis::cmd("HSET")
                        .arg(USER_GROUPS)
                        .arg(membership_field(hub, group, user))
                        .arg(expires),
                )
                .await?;
        }
        Event::RemoveUserFromGroup { hub, group, user } => {
            cluster
                .query::<()>(
                    "HDEL (user group)",
                    redis::cmd("HDEL")
                        .arg(USER_GROUPS)
                        .arg(membership_field(hub, group, user)),
                )
                .await?;
        }
        Event::RemoveUserFromAllGroups { hub, user } => {
            let fields: Vec<String> = cluster
                .query("HKEYS (user groups)", redis::cmd("HKEYS").arg(USER_GROUPS))
                .await?;
            let hub = hub.to_ascii_lowercase();
            let mine: Vec<String> = fields
                .into_iter()
                .filter(|f| {
                    serde_json::from_str::<(String, String, String)>(f)
                        .is_ok_and(|(h, _, u)| h == hub && u == *user)
                })
                .collect();
            if !mine.is_empty() {
                cluster
                    .query::<()>(
                        "HDEL (user groups)",
                        redis::cmd("HDEL").arg(USER_GROUPS).arg(&mine),
                    )
                    .await?;
            }
        }
        _ => {}
    }
    let envelope = Envelope {
        node: cluster.node().to_string(),
        event,
    };
    let payload = serde_json::to_string(&envelope).unwrap_or_default();
    cluster
        .query::<()>("PUBLISH", redis::cmd("PUBLISH").arg(CHANNEL).arg(payload))
        .await?;
    metrics::counter!(PUBLISHED).increment(1);
    Ok(())
}

/// Hand an envelope to the service's side; a full queue drops it (counted).
fn forward(cluster: &Cluster, envelope: Envelope) {
    if cluster.inner.incoming_tx.try_send(envelope).is_err() {
        metrics::counter!(DROPPED, "direction" => "in").increment(1);
    }
}

/// The persisted user-group memberships still valid, as events to apply.
async fn load_memberships(cluster: &Cluster) -> Result<Vec<Event>, super::ClusterError> {
    let all: Vec<(String, u64)> = cluster
        .query(
            "HGETALL (user groups)",
            redis::cmd("HGETALL").arg(USER_GROUPS),
        )
        .await?;
    let now = now_ms();
    let mut events = Vec::new();
    let mut expired = Vec::new();
    for (field, expires) in all {
        match serde_json::from_str::<(String, String, String)>(&field) {
            Ok((hub, group, user)) if expires > now => events.push(Event::AddUserToGroup {
                hub,
                group,
                user,
                ttl_ms: Some(expires - now),
            }),
            _ => expired.push(field),
        }
    }
    if !expired.is_empty() {
        let _ = cluster
            .query::<()>(
                "HDEL (expired user groups)",
                redis::cmd("HDEL").arg(USER_GROUPS).arg(&expired),
            )
            .await;
    }
    Ok(events)
}

/// Subscribe, forward, and on any loss reconnect with backoff, until shutdown.
pub(super) async fn subscriber(cluster: Cluster) {
    let stop = cluster.inner.shutdown.clone();
    let mut backoff = super::BACKOFF_MIN;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let connected = tokio::time::timeout(super::COMMAND_TIMEOUT * 2, async {
            let mut pubsub = cluster.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            Ok(Err(error)) => {
                tracing::debug!(%error, "cluster: subscribe failed");
                cluster.inner.subscribed.store(false, Ordering::Relaxed);
                cluster.note_health();
                wait(&cluster, &mut backoff).await;
                continue;
            }
            Err(_) => {
                cluster.inner.subscribed.store(false, Ordering::Relaxed);
                cluster.note_health();
                wait(&cluster, &mut backoff).await;
                continue;
            }
        };
        backoff = super::BACKOFF_MIN;
        cluster.inner.subscribed.store(true, Ordering::Relaxed);
        match load_memberships(&cluster).await {
            Ok(events) => {
                for event in events {
                    forward(
                        &cluster,
                        Envelope {
                            node: String::new(),
                            event,
                        },
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "cluster: could not load user-group memberships"),
        }
        let mut stream = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                msg = stream.next() => msg,
            };
            let Some(msg) = msg else { break };
            let envelope = match serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) {
                Ok(e) => e,
                Err(error) => {
                    metrics::counter!(DROPPED, "direction" => "undecodable").increment(1);
                    tracing::debug!(%error, "cluster: undecodable backplane envelope");
                    continue;
                }
            };
            if envelope.node == cluster.node() {
                continue; // our own echo: delivered locally already
            }
            metrics::counter!(RECEIVED).increment(1);
            forward(&cluster, envelope);
        }
        cluster.inner.subscribed.store(false, Ordering::Relaxed);
        cluster.note_health();
    }
}

async fn wait(cluster: &Cluster, backoff: &mut Duration) {
    tokio::select! {
        _ = cluster.inner.shutdown.cancelled() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = super::next_backoff(*backoff);
}
