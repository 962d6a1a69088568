//! The data-plane REST API of Azure SignalR Service (and of herald's embedded service, which
//! mirrors it): [`RestClient`] sends to all/user/group/connection, manages group membership,
//! checks existence, closes connections and probes health, over one endpoint or a set of them
//! (`set`); [`EndpointClient`] does it for one endpoint. [`RestOptions`] says how (API
//! version, timeouts, retries); [`RestError`] says why a call failed.
//!
//! Rooms: `client` runs the operations; `paths` holds every difference between the
//! 2022-06-01 API (facts §4.1, §4.3) and the legacy `/api/v1` one (facts §4.2), and segment
//! encoding; `set` spreads calls over endpoints and keeps their health; `retry` decides what is retried and how long to wait (`Retry-After`, jittered
//! backoff); `error` is `RestError`.

mod client;
mod error;
mod paths;
mod retry;
mod set;

use std::time::Duration;

/// The request header that carries a message's id on a send. herald's embedded service drops a
/// send whose id it saw recently; Azure SignalR Service ignores unknown headers.
pub const MESSAGE_ID_HEADER: &str = "x-herald-message-id";

pub use client::{EndpointClient, Presence, check_sendable};
pub use error::RestError;
pub use paths::{API_VERSION_2022_06_01, ApiVersion};
pub use set::{EndpointState, PROBE_INTERVAL, PROBE_TIMEOUT, RestClient};

/// The service refuses request bodies over 1 MB (facts §4.1); herald refuses them first, so
/// an oversized message fails fast and is never retried.
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// How a [`RestClient`] talks to the service.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// Which API paths to use.
    pub api: ApiVersion,
    /// Limit for one HTTP request (connect, send, and read of the answer).
    pub timeout: Duration,
    /// Retries after the first attempt, for connection errors, timeouts, 429 and 5xx only.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled per retry, then fully jittered.
    pub base_backoff: Duration,
    /// Ceiling of any backoff, including one asked for by `Retry-After` (either form).
    pub max_backoff: Duration,
    /// The `nameid` claim of REST tokens: which server made the call.
    pub server_name: String,
    /// The service takes `:sendBatch` (herald's embedded service does; Azure does not): the
    /// outbox then sends a hub's waiting messages several per request.
    pub batch_sends: bool,
}

impl Default for RestOptions {
    fn default() -> Self {
        RestOptions {
            api: ApiVersion::default(),
            timeout: Duration::from_secs(10),
            max_retries: 3,
            batch_sends: false,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            server_name: default_server_name(),
        }
    }
}

/// `herald_<hostname>`, or `herald_<random>` where the host name cannot be read (the SDK
/// uses `<MachineName>_<guid>`).
fn default_server_name() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let host = from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    format!("herald_{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_server_name_is_prefixed() {
        assert!(RestOptions::default().server_name.starts_with("herald_"));
        assert_eq!(RestOptions::default().api, ApiVersion::V2022_06_01);
    }
}
