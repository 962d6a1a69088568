//! Which SignalR service the daemon delivers through: Azure SignalR Service from the connection
//! string or `signalr.endpoints` (with the task that probes their health), or the embedded
//! service it starts itself; the endpoint and REST client for either.
//! `herald send`/`token` reach a running embedded service through `embedded_endpoint` too.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use super::DaemonError;
use crate::config::{Config, SignalrConfig};
use crate::service::{Service, ServiceHandle, ServiceOptions};
use crate::signalr::ServiceEndpoint;
use crate::signalr::rest::{PROBE_INTERVAL, RestClient, RestOptions};
use crate::state::embedded_access_key;

/// The service endpoint of an embedded service listening on `addr`.
pub fn embedded_endpoint(
    addr: SocketAddr,
    access_key: &str,
    public_url: Option<&str>,
) -> Result<ServiceEndpoint, crate::signalr::ConnectionStringError> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    let mut cs = format!(
        "Endpoint=http://{host};Port={};AccessKey={access_key};Version=1.0;",
        addr.port()
    );
    if let Some(url) = public_url {
        cs.push_str(&format!("ClientEndpoint={url};"));
    }
    ServiceEndpoint::from_connection_string(&cs)
}

/// The REST client's options for `cfg` (its data-plane API version).
pub fn rest_options(cfg: &Config) -> RestOptions {
    RestOptions {
        api: cfg.api_version,
        ..RestOptions::default()
    }
}

/// The upstream URL of a daemon listening on `addr`: its own client-events endpoint.
pub fn self_upstream_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!(
        "http://{host}:{}{}",
        addr.port(),
        crate::signalr::upstream::FUNCTIONS_PATH
    )
}

/// Start the embedded service described by `cfg` (if that is the mode) and build the REST
/// client for whichever service delivers messages. `daemon`: the daemon's own listener, which
/// the embedded service forwards client events to (its upstream).
pub async fn connect(
    cfg: &Config,
    shutdown: &CancellationToken,
    daemon: Option<SocketAddr>,
) -> Result<(RestClient, &'static str, Option<ServiceHandle>), DaemonError> {
    connect_with(cfg, shutdown, daemon, None).await
}

/// `connect`, giving the embedded service `backplane` (a cluster's) when it is `Some`.
pub async fn connect_with(
    cfg: &Config,
    shutdown: &CancellationToken,
    daemon: Option<SocketAddr>,
    backplane: Option<std::sync::Arc<dyn crate::service::backplane::Backplane>>,
) -> Result<(RestClient, &'static str, Option<ServiceHandle>), DaemonError> {
    match &cfg.signalr {
        SignalrConfig::Azure(set) => {
            for e in set.iter() {
                tracing::info!(
                    endpoint = %e.name,
                    role = %e.role,
                    service = %e.endpoint.connection_string_redacted(),
                    "using Azure SignalR Service"
                );
            }
            let rest = RestClient::with_endpoints(set.to_vec(), rest_options(cfg))?;
            // A lone endpoint is never probed nor skipped (the task ends at once).
            tokio::spawn(
                rest.clone()
                    .run_probes(PROBE_INTERVAL, shutdown.child_token()),
            );
            Ok((rest, "azure", None))
        }
        SignalrConfig::Embedded {
            listen,
            access_key,
            public_url,
            max_connections,
            timeouts,
        } => {
            let key = embedded_access_key(access_key.as_ref())
                .map_err(|source| DaemonError::KeyFile { source })?;
            let mut options = ServiceOptions::new(*listen, vec![key.clone()]);
            options.header_read_timeout = timeouts.header_read;
            options.idle_timeout = timeouts.idle;
            options.max_connections = *max_connections;
            if let Some(backplane) = backplane {
                options.backplane = backplane;
            }
            // Client events (connected, disconnected, invocations) go to the daemon's own
            // upstream endpoint, as Azure's upstream setting would send them.
            if let Some(addr) = daemon {
                let url = self_upstream_url(addr);
                tracing::debug!(%url, "embedded service upstream: client events go to the daemon");
                options.upstreams = vec![crate::signalr::upstream::UpstreamTemplate::all(url)];
            }
            let handle = Service::start(options, shutdown.child_token()).await?;
            let endpoint = embedded_endpoint(handle.local_addr(), &key, public_url.as_deref())?;
            tracing::info!(listen = %handle.local_addr(), "embedded SignalR service started");
            // The embedded service takes several messages per request (`:sendBatch`).
            let options = RestOptions {
                batch_sends: true,
                ..rest_options(cfg)
            };
            let rest = RestClient::new(endpoint, options)?;
            Ok((rest, "embedded", Some(handle)))
        }
    }
}
