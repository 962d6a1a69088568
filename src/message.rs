//! `Message` and `Recipient`: one SignalR invocation addressed to a hub, a user, a group or a
//! connection. Pure data shared by the daemon, the REST client and the embedded service.

use serde::{Deserialize, Serialize};

/// Who receives a message inside its hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipient {
    /// Every connection of the hub.
    All,
    /// Every connection whose token carries this user id.
    User(String),
    /// Every connection that is a member of this group.
    Group(String),
    /// One connection, by its connection id.
    Connection(String),
}

impl Recipient {
    /// A short kind label for logs and metrics: `all`, `user`, `group`, `connection`.
    pub fn kind(&self) -> &'static str {
        match self {
            Recipient::All => "all",
            Recipient::User(_) => "user",
            Recipient::Group(_) => "group",
            Recipient::Connection(_) => "connection",
        }
    }

    /// Whether a send's `excluded` connections apply: hub-wide and group sends only, as
    /// in Azure's REST API.
    pub fn takes_excluded(&self) -> bool {
        matches!(self, Recipient::All | Recipient::Group(_))
    }
}

/// For people: `all`, `user alice`, `group ops`, `connection abc`.
impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::All => f.write_str("all"),
            Recipient::User(u) => write!(f, "user {u}"),
            Recipient::Group(g) => write!(f, "group {g}"),
            Recipient::Connection(c) => write!(f, "connection {c}"),
        }
    }
}

/// One invocation of the client method `target` with `arguments`, sent into `hub` to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Hub name (case-insensitive on the service side; kept as written here).
    pub hub: String,
    /// Who receives it.
    pub to: Recipient,
    /// The client-side method name the SignalR client subscribed to with `connection.on(...)`.
    pub target: String,
    /// Positional arguments of the invocation, any JSON.
    pub arguments: Vec<serde_json::Value>,
    /// Connection ids excluded from a hub or group send (REST `excluded`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
}

impl Message {
    /// A message to every connection of `hub`.
    pub fn broadcast(
        hub: impl Into<String>,
        target: impl Into<String>,
        arguments: Vec<serde_json::Value>,
    ) -> Self {
        Message {
            hub: hub.into(),
            to: Recipient::All,
            target: target.into(),
            arguments,
            excluded: Vec::new(),
        }
    }

    /// The REST/data-plane payload `{"target", "arguments"}` of this message.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::json!({ "target": self.target, "arguments": self.arguments })
    }
}
