//! The backplane: how one embedded service shares its sends and group membership with the
//! other nodes of a cluster. [`Backplane`] is the trait the service calls; [`Local`] (one
//! node, the default) does nothing; the Redis implementation is `crate::cluster`, which also
//! hands what other nodes published back to [`super::ServiceHandle::apply`].
//!
//! Exactly once across nodes: the origin node delivers to its own connections and publishes
//! the [`Event`] once; every other node delivers it to its own connections (encoded once per
//! protocol there) and the origin ignores its own echo (the node id in the [`Envelope`]).
//! REST sends carrying a message id are deduplicated at the origin, before publishing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::Message;

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    /// Deliver this message to the matching local connections.
    Send(Message),
    AddConnectionToGroup {
        hub: String,
        group: String,
        connection: String,
    },
    RemoveConnectionFromGroup {
        hub: String,
        group: String,
        connection: String,
    },
    RemoveConnectionFromAllGroups {
        hub: String,
        connection: String,
    },
    AddUserToGroup {
        hub: String,
        group: String,
        user: String,
        /// Milliseconds; None: the default (one year).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
    },
    RemoveUserFromGroup {
        hub: String,
        group: String,
        user: String,
    },
    RemoveUserFromAllGroups {
        hub: String,
        user: String,
    },
}

impl Event {
    /// The ttl of a user-group add as the registry takes it.
    pub fn ttl(ttl_ms: Option<u64>) -> Option<Duration> {
        ttl_ms.map(Duration::from_millis)
    }
}

/// An [`Event`] on the wire, with the node that published it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub node: String,
    pub event: Event,
}

/// Where the service publishes what other nodes must apply. Implementations never block
/// the caller (fan-out never waits): they queue, and drop (counted) when the queue is full.
pub trait Backplane: Send + Sync + std::fmt::Debug + 'static {
    /// Other nodes may hold connections: an operation on a connection this node does not
    /// have is forwarded instead of answered "not found".
    fn is_shared(&self) -> bool;
    /// Hand `event` to the other nodes (best effort, never blocking).
    fn publish(&self, event: Event);
}

/// One node: nothing to share.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

impl Backplane for Local {
    fn is_shared(&self) -> bool {
        false
    }
    fn publish(&self, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_as_json() {
        let events = [
            Event::Send(Message::broadcast(
                "h",
                "t",
                vec![serde_json::json!({"a": 1})],
            )),
            Event::AddUserToGroup {
                hub: "h".into(),
                group: "g".into(),
                user: "u".into(),
                ttl_ms: Some(5000),
            },
            Event::RemoveConnectionFromAllGroups {
                hub: "h".into(),
                connection: "c".into(),
            },
        ];
        for event in events {
            let envelope = Envelope {
                node: "n1".into(),
                event,
            };
            let text = serde_json::to_string(&envelope).unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(back, envelope, "{text}");
        }
    }
}
