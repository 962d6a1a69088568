//! Presence: who is connected to each hub, from the `connected`/`disconnected` events the
//! service forwards upstream, and `GET /api/{hub}/presence` (the same caller check as the
//! hub's negotiate). The daemon keeps it in memory only: after a restart it knows only the
//! connections that connected since (Azure does not replay events); with the embedded
//! service the counts come from the service itself, which always knows.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Caller;
use crate::config::Hub;
use crate::daemon::http::AppState;
use crate::daemon::http::error::ApiError;
use crate::daemon::http::negotiate::user_id;

/// Connections by lowercased hub, each with its user id. A std `Mutex`: held only to insert,
/// remove or count, never across an `.await`.
#[derive(Debug, Default)]
pub struct Presence {
    hubs: Mutex<HashMap<String, HashMap<String, Option<String>>>>,
}

/// A hub's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: usize,
    pub users: usize,
}

impl Presence {
    pub fn connected(&self, caller: &Caller) {
        let mut hubs = self
            .hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hubs.entry(caller.hub.to_ascii_lowercase())
            .or_default()
            .insert(
                caller.connection.clone(),
                caller.user.clone().filter(|u| !u.is_empty()),
            );
    }

    pub fn disconnected(&self, caller: &Caller) {
        let mut hubs = self
            .hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let hub = caller.hub.to_ascii_lowercase();
        if let Some(connections) = hubs.get_mut(&hub) {
            connections.remove(&caller.connection);
            if connections.is_empty() {
                hubs.remove(&hub);
            }
        }
    }

    /// Connections and distinct users of `hub`.
    pub fn counts(&self, hub: &str) -> Counts {
        let hubs = self
            .hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(connections) = hubs.get(&hub.to_ascii_lowercase()) else {
            return Counts::default();
        };
        let users: std::collections::HashSet<&String> = connections.values().flatten().collect();
        Counts {
            connections: connections.len(),
            users: users.len(),
        }
    }

    /// Whether `user` has a connection to `hub` (as far as the events say).
    pub fn user_connected(&self, hub: &str, user: &str) -> bool {
        let hubs = self
            .hubs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hubs.get(&hub.to_ascii_lowercase())
            .is_some_and(|c| c.values().any(|u| u.as_deref() == Some(user)))
    }
}

#[derive(serde::Deserialize)]
struct PresenceQuery {
    user: Option<String>,
    group: Option<String>,
}

/// `GET /api/{hub}/presence[?user=U][&group=G]` → `{"hub", "connections", "users",
/// "source"}` (`service` or `events`; the embedded service adds `groups` and `transports`).
/// Clustered, `source` is `cluster`: connections and users are summed over the live nodes
/// (`nodes`; users as an upper bound, `"users_upper_bound": true`: a user on two nodes counts
/// twice) and this node's own answer is under `node`. Plus `"user": {"id", "connected"}`
/// and `"group": {"name", "connected"}` when asked (those two ask the service, which knows for sure).
pub async fn presence(
    state: &AppState,
    hub: &Hub,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    user_id(hub, headers)?;
    let query: PresenceQuery = axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let (mut body, mut source) = service_counts(state, &hub.name).await;
    if let Some(cluster) = state.outbox.cluster() {
        // Clustered: the sum over every live node; this node's own answer under `node`.
        match cluster.hub_presence(&hub.name).await {
            Ok((nodes, connections, users)) => {
                body = json!({
                    "connections": connections,
                    "users": users,
                    "users_upper_bound": true,
                    "nodes": nodes,
                    "node": body,
                });
                source = "cluster";
            }
            Err(error) => {
                tracing::warn!(%error, hub = %hub.name, "presence: Redis did not answer; counting this node only");
                body["nodes"] = json!(1);
            }
        }
    }
    body["hub"] = json!(hub.name);
    body["source"] = json!(source);
    if let Some(user) = query.user.filter(|u| !u.is_empty()) {
        let connected = match state.rest.user_exists(&hub.name, &user).await {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(%error, "presence: user check failed; answering from events");
                state.events.presence.user_connected(&hub.name, &user)
            }
        };
        body["user"] = json!({ "id": user, "connected": connected });
    }
    if let Some(group) = query.group.filter(|g| !g.is_empty()) {
        let connected = state
            .rest
            .group_exists(&hub.name, &group)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "presence: group check failed");
                ApiError::unavailable("the SignalR service did not answer the group check")
            })?;
        body["group"] = json!({ "name": group, "connected": connected });
    }
    Ok(Json::<Value>(body).into_response())
}

/// The hub's counts: from the embedded service, which always knows (`RestClient::presence`);
/// on Azure (no such API), or if the service does not answer, from the events herald received.
async fn service_counts(state: &AppState, hub: &str) -> (Value, &'static str) {
    if state.service_kind == "embedded" {
        match state.rest.presence(hub).await {
            Ok(p) => {
                return (
                    json!({
                        "connections": p.connections,
                        "users": p.users,
                        "groups": p.groups,
                        "transports": p.transports,
                    }),
                    "service",
                );
            }
            Err(error) => {
                tracing::warn!(%error, hub, "presence: the embedded service did not answer; counting from events");
            }
        }
    }
    let c = state.events.presence.counts(hub);
    (
        json!({ "connections": c.connections, "users": c.users }),
        "events",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(c: &str, u: Option<&str>) -> Caller {
        Caller {
            hub: "Notifications".into(),
            connection: c.into(),
            user: u.map(str::to_string),
        }
    }

    #[test]
    fn counts_follow_connected_and_disconnected() {
        let p = Presence::default();
        p.connected(&caller("a", Some("alice")));
        p.connected(&caller("b", Some("alice")));
        p.connected(&caller("c", None));
        assert_eq!(
            p.counts("notifications"),
            Counts {
                connections: 3,
                users: 1
            }
        );
        assert!(p.user_connected("NOTIFICATIONS", "alice"));
        p.disconnected(&caller("a", Some("alice")));
        p.disconnected(&caller("b", Some("alice")));
        assert!(!p.user_connected("notifications", "alice"));
        assert_eq!(p.counts("notifications").connections, 1);
        p.disconnected(&caller("c", None));
        p.disconnected(&caller("never", None));
        assert_eq!(p.counts("notifications"), Counts::default());
    }
}
