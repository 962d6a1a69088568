//! Several service endpoints, as the Azure SignalR SDK's multiple endpoints: a
//! [`NamedEndpoint`] is one connection string with a name (for logs, metrics and `/healthz`)
//! and a [`EndpointRole`]. Pure data; the REST client that uses a set of them is
//! `rest::RestClient`.

use std::fmt;

use super::ServiceEndpoint;

/// What an endpoint is for. Negotiate hands out primaries, and secondaries only while no
/// primary is up; sends and group changes go to both kinds alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointRole {
    Primary,
    Secondary,
}

impl EndpointRole {
    /// `primary` / `secondary`, as in the config and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointRole::Primary => "primary",
            EndpointRole::Secondary => "secondary",
        }
    }
}

impl fmt::Display for EndpointRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint of a set. `Debug` redacts the key (through `ServiceEndpoint`'s `Debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEndpoint {
    /// Unique in its set; a label of `herald_endpoint_up` and the key of `/healthz`.
    pub name: String,
    pub role: EndpointRole,
    pub endpoint: ServiceEndpoint,
}

impl NamedEndpoint {
    /// The name a lone connection string gets (`signalr.connection_string`, the environment).
    pub const DEFAULT_NAME: &'static str = "default";

    /// The one primary endpoint of a set made from a single connection string.
    pub fn primary(endpoint: ServiceEndpoint) -> Self {
        NamedEndpoint {
            name: Self::DEFAULT_NAME.to_string(),
            role: EndpointRole::Primary,
            endpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let key = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH";
        let e = ServiceEndpoint::new("http://localhost", Some(8888), key).unwrap();
        let named = NamedEndpoint::primary(e);
        let shown = format!("{named:?}");
        assert!(!shown.contains(key), "{shown}");
        assert_eq!(named.role.to_string(), "primary");
        assert_eq!(named.name, "default");
    }
}
