//! Cluster-wide history and retained statuses: the copy in Redis that every node reads, so
//! that a history or retained `GET` on any node gives the same answer, and the [`Shared`]
//! handle the readers use (Redis when clustered, else — or when Redis is away — the node's
//! own store, saying `"source": "local"`).
//!
//! Keys:
//!
//! ```text
//! herald:history:{hub}    stream, one entry per kept message (field `m`: JSON id, time_ms,
//!                         user, target, arguments); MAXLEN keep, MINID now - max_age
//! herald:retained:{hub}   hash, field JSON ["source","key"] → JSON {id, time_ms, message}
//! ```
//!
//! Why this structure: each message is delivered by exactly one node (the one whose outbox
//! holds it), so that node appends it once; a stream gives one cluster-wide order (Redis
//! assigns the ids), and its ids are times, so `XADD … MAXLEN` plus `XTRIM … MINID` trims to
//! the hub's `keep` and `max_age` in one atomic step without a second index. A read takes the
//! whole (capped) stream with `XRANGE` and applies `after`, the caller's user and `limit` in
//! memory, exactly as the local store does; `keep` bounds that cost. Retained statuses are
//! "latest per key", which is what a hash is; one hash per hub makes "all of a hub's
//! retained statuses" (status page, `send_retained`) one `HGETALL`. The node's SQLite still
//! keeps its own copy (durability, and the fallback while Redis is away); what was written
//! while Redis was away is not copied later (that node's local answer has it).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError};
use crate::message::Message;
use crate::store::{
    HistoryEntry, HistoryPolicy, RetainKey, Retained, Store, StoreError, history_audience,
    rfc3339_ms,
};

/// Where an answer came from: `None` when not clustered (the store is the only one).
pub type Source = Option<&'static str>;
/// Answered from Redis: the same on every node.
pub const CLUSTER: &str = "cluster";
/// Clustered, but Redis is away: this node's own store.
pub const LOCAL: &str = "local";

fn history_key(hub: &str) -> String {
    format!("herald:history:{}", hub.to_ascii_lowercase())
}

fn retained_key(hub: &str) -> String {
    format!("herald:retained:{}", hub.to_ascii_lowercase())
}

fn retained_field(key: &RetainKey) -> String {
    json_text(&(&key.source, &key.key))
}

fn json_text<T: Serialize>(value: &T) -> String {
    // Serializing strings, numbers and `Message` cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    id: String,
    time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    target: String,
    arguments: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct StoredRetained {
    id: String,
    time_ms: i64,
    message: Message,
}

impl Cluster {
    /// Append a delivered message to its hub's cluster-wide history (broadcasts and user
    /// messages only, as the store keeps), trimmed to `policy`.
    pub async fn keep_history(
        &self,
        id: &str,
        accepted_ms: i64,
        message: &Message,
        policy: HistoryPolicy,
    ) -> Result<(), ClusterError> {
        if policy.keep == 0 {
            return Ok(());
        }
        let Some(user) = history_audience(&message.to) else {
            return Ok(());
        };
        let entry = StoredEntry {
            id: id.to_string(),
            time_ms: accepted_ms,
            user: user.map(str::to_string),
            target: message.target.clone(),
            arguments: message.arguments.clone(),
        };
        let key = history_key(&message.hub);
        let oldest = (crate::store::now_ms() - policy.max_age.as_millis() as i64).max(0);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg(policy.keep)
            .arg("*")
            .arg("m")
            .arg(json_text(&entry))
            .ignore()
            .cmd("XTRIM")
            .arg(&key)
            .arg("MINID")
            .arg(oldest)
            .ignore();
        self.query_pipe::<()>("XADD (history)", &pipe).await
    }

    /// The whole cluster-wide history of `hub`, oldest first.
    async fn history_all(&self, hub: &str) -> Result<Vec<StoredEntry>, ClusterError> {
        let rows: Vec<(String, HashMap<String, String>)> = self
            .query(
                "XRANGE (history)",
                redis::cmd("XRANGE").arg(history_key(hub)).arg("-").arg("+"),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, fields)| {
                let text = fields.get("m")?;
                serde_json::from_str(text).ok()
            })
            .collect())
    }

    /// Store the retained statuses of just-accepted messages cluster-wide.
    pub async fn keep_retained(
        &self,
        retained: &[(RetainKey, String, Message)],
        time_ms: i64,
    ) -> Result<(), ClusterError> {
        if retained.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, id, message) in retained {
            let value = StoredRetained {
                id: id.clone(),
                time_ms,
                message: message.clone(),
            };
            pipe.cmd("HSET")
                .arg(retained_key(&message.hub))
                .arg(retained_field(key))
                .arg(json_text(&value))
                .ignore();
        }
        self.query_pipe::<()>("HSET (retained)", &pipe).await
    }

    async fn retained_one(
        &self,
        hub: &str,
        key: &RetainKey,
    ) -> Result<Option<Retained>, ClusterError> {
        let text: Option<String> = self
            .query(
                "HGET (retained)",
                redis::cmd("HGET")
                    .arg(retained_key(hub))
                    .arg(retained_field(key)),
            )
            .await?;
        Ok(text.as_deref().and_then(decode_retained))
    }

    async fn retained_all(&self, hub: &str) -> Result<Vec<Retained>, ClusterError> {
        let all: HashMap<String, String> = self
            .query(
                "HGETALL (retained)",
                redis::cmd("HGETALL").arg(retained_key(hub)),
            )
            .await?;
        let mut out: Vec<Retained> = all.values().filter_map(|t| decode_retained(t)).collect();
        out.sort_by(|a, b| a.time_ms.cmp(&b.time_ms).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }
}

fn decode_retained(text: &str) -> Option<Retained> {
    let r: StoredRetained = serde_json::from_str(text).ok()?;
    Some(Retained {
        id: r.id,
        time_ms: r.time_ms,
        message: r.message,
    })
}

/// `after`, `user` and `limit` over a whole history, as `Store::history` answers them.
fn select(
    all: Vec<StoredEntry>,
    after: Option<&str>,
    user: Option<&str>,
    limit: u32,
) -> Option<Vec<HistoryEntry>> {
    let start = match after {
        None => 0,
        Some(id) => all.iter().position(|e| e.id == id)? + 1,
    };
    Some(
        all.into_iter()
            .enumerate()
            .skip(start)
            .filter(|(_, e)| e.user.is_none() || e.user.as_deref() == user)
            .take(limit as usize)
            .map(|(seq, e)| HistoryEntry {
                seq: seq as i64,
                id: e.id,
                time: rfc3339_ms(e.time_ms),
                user: e.user,
                target: e.target,
                arguments: e.arguments,
            })
            .collect(),
    )
}

/// What readers ask for history and retained statuses: Redis when clustered and Redis
/// answers, else the node's own store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shared {
    store: Store,
    cluster: Option<Cluster>,
}

impl Shared {
    pub fn new(store: Store, cluster: Option<Cluster>) -> Shared {
        Shared { store, cluster }
    }

    /// The cluster, when Redis is believed up (else go local at once, not after a timeout).
    fn redis(&self) -> Option<&Cluster> {
        self.cluster.as_ref().filter(|c| c.redis_up())
    }

    fn local(&self) -> Source {
        self.cluster.as_ref().map(|_| LOCAL)
    }

    /// As [`Store::history`], from Redis when clustered.
    pub async fn history(
        &self,
        hub: &str,
        after: Option<String>,
        user: Option<String>,
        limit: u32,
    ) -> Result<(Option<Vec<HistoryEntry>>, Source), StoreError> {
        if let Some(cluster) = self.redis() {
            match cluster.history_all(hub).await {
                Ok(all) => {
                    return Ok((
                        select(all, after.as_deref(), user.as_deref(), limit),
                        Some(CLUSTER),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, hub, "cluster: history not readable from Redis; answering from this node");
                }
            }
        }
        let found = self.store.history(hub, after, user, limit).await?;
        Ok((found, self.local()))
    }

    /// As [`Store::retained`] (a route's status in `hub`), from Redis when clustered.
    pub async fn retained(
        &self,
        hub: &str,
        key: RetainKey,
    ) -> Result<(Option<Retained>, Source), StoreError> {
        if let Some(cluster) = self.redis() {
            match cluster.retained_one(hub, &key).await {
                Ok(found) => return Ok((found, Some(CLUSTER))),
                Err(error) => {
                    tracing::warn!(%error, hub, "cluster: retained status not readable from Redis; answering from this node");
                }
            }
        }
        Ok((self.store.retained(key).await?, self.local()))
    }

    /// As [`Store::retained_in_hub`], from Redis when clustered.
    pub async fn retained_in_hub(&self, hub: &str) -> Result<(Vec<Retained>, Source), StoreError> {
        if let Some(cluster) = self.redis() {
            match cluster.retained_all(hub).await {
                Ok(found) => return Ok((found, Some(CLUSTER))),
                Err(error) => {
                    tracing::warn!(%error, hub, "cluster: retained statuses not readable from Redis; answering from this node");
                }
            }
        }
        Ok((self.store.retained_in_hub(hub).await?, self.local()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, user: Option<&str>) -> StoredEntry {
        StoredEntry {
            id: id.into(),
            time_ms: 0,
            user: user.map(str::to_string),
            target: "t".into(),
            arguments: Vec::new(),
        }
    }

    fn ids(found: Option<Vec<HistoryEntry>>) -> Option<Vec<String>> {
        found.map(|v| v.into_iter().map(|e| e.id).collect())
    }

    #[test]
    fn select_applies_after_user_and_limit_as_the_store_does() {
        let all = || {
            vec![
                entry("a", None),
                entry("b", Some("bob")),
                entry("c", Some("alice")),
                entry("d", None),
            ]
        };
        assert_eq!(
            ids(select(all(), None, Some("alice"), 10)),
            Some(vec!["a".into(), "c".into(), "d".into()])
        );
        assert_eq!(
            ids(select(all(), Some("b"), None, 10)),
            Some(vec!["d".into()])
        );
        assert_eq!(
            ids(select(all(), Some("a"), Some("bob"), 1)),
            Some(vec!["b".into()])
        );
        assert_eq!(ids(select(all(), Some("gone"), None, 10)), None);
    }
}
