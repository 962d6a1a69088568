//! The composition root of `herald run`: builds the REST client (Azure, or the embedded
//! service it starts), the live config, the HTTP listener and the scheduler, then runs the one
//! control loop (reload, shutdown) until asked to stop. `functions` is the Azure Functions
//! custom-handler mode of the same daemon (`herald run --custom-handler`, `functions init`).

pub mod auth;
pub mod delivery;
pub mod functions;
pub mod http;
pub mod outbox;
pub mod reload;
pub mod schedule;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, SignalrConfig, live::LiveConfig};
use crate::control::{self, Control, ControlSender};
use crate::service::{Service, ServiceHandle, ServiceOptions};
use crate::signalr::ServiceEndpoint;
use crate::signalr::rest::{RestClient, RestOptions};

/// How long in-flight requests and sends get after a shutdown request.
const SHUTDOWN_GRACE: Duration = crate::server::SHUTDOWN_DEADLINE;

/// `now` as templates see it: RFC 3339, UTC, milliseconds, `Z`.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded SignalR service: {0}")]
    Service(#[from] crate::service::ServiceError),
    #[error("SignalR endpoint: {0}")]
    Endpoint(#[from] crate::signalr::ConnectionStringError),
    #[error("REST client: {0}")]
    Rest(#[from] crate::signalr::rest::RestError),
    #[error("cannot read or create the embedded service's key file in {dir}: {source}", dir = state_dir().display())]
    KeyFile {
        #[source]
        source: std::io::Error,
    },
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// The `STATUS=` line `systemctl status` shows.
fn status_line(live: &LiveConfig, listen: SocketAddr, service: &str, note: &str) -> String {
    let cfg = live.current();
    format!(
        "{note}: {} hubs, {} routes, {} schedules on {listen} ({service} service, config generation {})",
        cfg.hubs.len(),
        cfg.routes.len(),
        cfg.schedules.len(),
        live.generation()
    )
}

/// A generated access key: 32 random bytes, base64 (43 characters).
pub fn generate_access_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Where a generated embedded-service access key is kept, so that `herald token` and
/// `herald send` sign with the key a running `herald run` uses: `$STATE_DIRECTORY` (systemd),
/// else `$XDG_STATE_HOME/herald`, else `~/.local/state/herald`.
pub fn state_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").and_then(|d| {
        d.to_str()
            .and_then(|s| s.split(':').next().map(PathBuf::from))
    }) {
        return dir;
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("herald");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/herald"),
        None => std::env::temp_dir().join("herald"),
    }
}

/// The embedded service's access key: the configured one, else the one kept in
/// `state_dir()/embedded-access-key` (created with mode 0600 on first use).
pub fn embedded_access_key(configured: Option<&crate::config::Secret>) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(k) = configured {
        return Ok(k.expose().to_string());
    }
    let dir = state_dir();
    let path = dir.join("embedded-access-key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let key = existing.trim().to_string();
        if key.len() >= 16 {
            return Ok(key);
        }
    }
    std::fs::create_dir_all(&dir)?;
    let key = generate_access_key();
    let tmp = dir.join(format!(".embedded-access-key.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    // Rename is atomic: a concurrent first start sees one whole key or none.
    std::fs::rename(&tmp, &path)?;
    std::fs::read_to_string(&path).map(|k| k.trim().to_string())
}

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

/// Start the embedded service described by `cfg` (if that is the mode) and build the REST
/// client for whichever service delivers messages.
pub async fn connect(
    cfg: &Config,
    shutdown: &CancellationToken,
) -> Result<(RestClient, &'static str, Option<ServiceHandle>), DaemonError> {
    match &cfg.signalr {
        SignalrConfig::Azure(endpoint) => {
            tracing::info!(service = %endpoint.connection_string_redacted(), "using Azure SignalR Service");
            let rest = RestClient::new((**endpoint).clone(), rest_options(cfg))?;
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
            options.max_connections = *max_connections;
            options.header_read_timeout = timeouts.header_read;
            options.idle_timeout = timeouts.idle;
            let handle = Service::start(options, shutdown.child_token()).await?;
            let endpoint = embedded_endpoint(handle.local_addr(), &key, public_url.as_deref())?;
            tracing::info!(listen = %handle.local_addr(), "embedded SignalR service started");
            let rest = RestClient::new(endpoint, rest_options(cfg))?;
            Ok((rest, "embedded", Some(handle)))
        }
    }
}

/// Run the daemon with an already loaded config until SIGTERM/SIGINT (or `Control::Shutdown`).
/// With `watch`, edits of the config file are picked up without SIGHUP.
pub async fn run(
    cfg: Config,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    watch: bool,
) -> Result<(), DaemonError> {
    let (tx, rx) = control::channel();
    control::spawn_signal_forwarder(tx.clone()).map_err(DaemonError::Signals)?;
    run_with_control(cfg, metrics, watch, tx, rx).await
}

/// `run` with an explicit control channel (tests drive it directly).
pub async fn run_with_control(
    cfg: Config,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    watch: bool,
    tx: ControlSender,
    mut rx: tokio::sync::mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    let shutdown = CancellationToken::new();
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let (rest, service_kind, service) = connect(&cfg, &shutdown).await?;
    let listen = cfg.http.listen;
    let request_timeout = cfg.http.request_timeout;
    let live = LiveConfig::new(cfg);
    metrics::gauge!("herald_config_generation").set(1.0);
    metrics::gauge!("herald_config_last_reload_successful").set(1.0);

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: listen,
        source,
    })?;
    let reloads = Arc::new(reload::ReloadLog::default());
    let state = http::AppState {
        live: live.clone(),
        rest: rest.clone(),
        service_kind,
        metrics,
        reloads: reloads.clone(),
        limiters: Arc::default(),
    };
    let app = http::router(state, request_timeout);
    let server_stop = shutdown.clone();
    let serve_options = crate::server::ServeOptions {
        header_read_timeout: live.current().http.timeouts.header_read,
        idle_timeout: live.current().http.timeouts.idle,
        shutdown_deadline: SHUTDOWN_GRACE,
    };
    let server = tokio::spawn(crate::server::serve(
        listener,
        app,
        serve_options,
        server_stop,
    ));
    let heartbeat = crate::systemd::Heartbeat::default();
    heartbeat.beat();
    let sends = tokio_util::task::TaskTracker::new();
    let scheduler = tokio::spawn(schedule::run(
        live.clone(),
        rest.clone(),
        shutdown.clone(),
        heartbeat.clone(),
        sends.clone(),
    ));
    // Kept alive until the daemon stops; without it, SIGHUP still reloads.
    let _watcher = if watch {
        match crate::config::watch::watch(&live.current().path, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("{e}; reload with SIGHUP instead");
                None
            }
        }
    } else {
        None
    };
    {
        let cfg = live.current();
        tracing::info!(
            listen = %local, hubs = cfg.hubs.len(), routes = cfg.routes.len(),
            schedules = cfg.schedules.len(), service = service_kind, "herald is running"
        );
    }
    crate::systemd::ready(&status_line(&live, local, service_kind, "running"));
    crate::systemd::spawn_watchdog(heartbeat, local, shutdown.clone());

    while let Some(msg) = rx.recv().await {
        match msg {
            Control::Reload => {
                // Coalesce a burst of reload requests into one.
                let mut stop = false;
                while let Ok(next) = rx.try_recv() {
                    if next == Control::Shutdown {
                        stop = true;
                    }
                }
                crate::systemd::reloading();
                let note = match reload::reload(&live, &reloads) {
                    reload::ReloadOutcome::Applied { .. } => "reloaded".to_string(),
                    reload::ReloadOutcome::Unchanged => "running".to_string(),
                    reload::ReloadOutcome::Rejected { errors } => format!(
                        "last reload rejected ({} error{}; see the log)",
                        errors.len(),
                        if errors.len() == 1 { "" } else { "s" }
                    ),
                };
                crate::systemd::ready(&status_line(&live, local, service_kind, &note));
                if stop {
                    break;
                }
            }
            Control::Shutdown => break,
        }
    }

    tracing::info!("shutting down");
    crate::systemd::stopping();
    shutdown.cancel();
    let _ = scheduler.await;
    sends.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, sends.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduled sends still running at shutdown were abandoned");
    }
    match tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(DaemonError::Serve(e)),
        Ok(Err(_)) | Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    if let Some(service) = service {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, service.stopped()).await;
    }
    tracing::info!("stopped");
    Ok(())
}
