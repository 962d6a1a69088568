//! The composition root of `herald run`: builds the REST client (Azure, or the embedded
//! service it starts), the live config, the HTTP listener and the scheduler, then runs the one
//! control loop (reload, shutdown) until asked to stop. `functions` is the Azure Functions
//! custom-handler mode of the same daemon (`herald run --custom-handler`, `functions init`).

pub mod auth;
pub mod delivery;
pub mod endpoint;
pub mod events;
pub mod functions;
pub mod http;
pub mod outbox;
pub mod reload;
pub mod schedule;
pub mod wakeup;

pub use endpoint::{connect, embedded_endpoint, rest_options};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, live::LiveConfig};
use crate::control::{self, Control, ControlSender};
use crate::telemetry::metrics as m;

/// How long in-flight requests and scheduled sends get after a shutdown request: the one
/// shutdown deadline of herald (`crate::server` uses the same).
pub const SHUTDOWN_DEADLINE: Duration = crate::server::SHUTDOWN_DEADLINE;

/// `now` as templates see it: RFC 3339, UTC, milliseconds, `Z`.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("could not listen on {addr}: {source}{hint}", hint = bind_hint(source))]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded SignalR service: {0}{hint}", hint = service_hint(.0))]
    Service(#[from] crate::service::ServiceError),
    #[error("SignalR endpoint: {0}")]
    Endpoint(#[from] crate::signalr::ConnectionStringError),
    #[error("REST client: {0}")]
    Rest(#[from] crate::signalr::rest::RestError),
    #[error("cannot read or create the embedded service's key file in {dir}: {source}", dir = crate::state::state_dir().display())]
    KeyFile {
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// What to add to a bind error: the usual cause of "address in use".
fn bind_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        " (is another herald, or another program, already listening there?)"
    } else {
        ""
    }
}

fn service_hint(e: &crate::service::ServiceError) -> &'static str {
    match e {
        crate::service::ServiceError::Bind { source, .. } => bind_hint(source),
        _ => "",
    }
}

/// The `STATUS=` line `systemctl status` shows; it names restart-only keys still pending.
fn status_line(
    live: &LiveConfig,
    reloads: &reload::ReloadLog,
    listen: SocketAddr,
    service: &str,
    note: &str,
) -> String {
    let cfg = live.current();
    let pending = reloads.restart_required();
    let restart = if pending.is_empty() {
        String::new()
    } else {
        format!("; restart pending for {}", pending.join(", "))
    };
    format!(
        "{note}: {} hubs, {} routes, {} schedules on {listen} ({service} service, config generation {}){restart}",
        cfg.hubs.len(),
        cfg.routes.len(),
        cfg.schedules.len(),
        live.generation()
    )
}

/// Run one reload on the blocking pool (it reads and compiles the file), off the async
/// workers that serve requests.
async fn reload_off_workers(
    live: &LiveConfig,
    reloads: &Arc<reload::ReloadLog>,
) -> reload::ReloadOutcome {
    let (live, log) = (live.clone(), reloads.clone());
    match tokio::task::spawn_blocking(move || reload::reload(&live, &log)).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(error = %e, "config reload task failed; the last good config keeps running");
            reload::ReloadOutcome::Rejected {
                errors: vec![format!("the reload task failed: {e}")],
            }
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
    let state_dir = cfg
        .state
        .dir
        .clone()
        .unwrap_or_else(crate::state::state_dir);
    let store = crate::store::Store::open(&state_dir, cfg.state.synchronous)?;
    tracing::info!(path = %store.path().display(), "state database open");
    let mut outbox = outbox::Outbox::new(store);
    let cluster = match &cfg.cluster {
        Some(c) => Some(crate::cluster::Cluster::start(
            c.redis.expose(),
            c.node_id.clone(),
            shutdown.clone(),
        )?),
        None => None,
    };
    let backplane = cluster.as_ref().map(|c| {
        let b: Arc<dyn crate::service::backplane::Backplane> = c.backplane();
        b
    });
    // The listener is bound first: the embedded service's upstream points at it.
    let listen = cfg.http.listen;
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
    let (rest, service_kind, service) =
        endpoint::connect_with(&cfg, &shutdown, Some(local), backplane).await?;
    if let Some(cluster) = cluster {
        match &service {
            Some(service) => cluster.attach(service.clone()),
            None => tracing::warn!(
                "cluster: with Azure SignalR Service, Azure shares sends itself; only schedule locks and idempotency keys use Redis"
            ),
        }
        outbox = outbox.with_cluster(cluster);
    }
    let request_timeout = cfg.http.request_timeout;
    let live = LiveConfig::new(cfg);
    metrics::gauge!(m::CONFIG_GENERATION).set(1.0);
    metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESSFUL).set(1.0);
    m::register_config(&live.current());

    let reloads = Arc::new(reload::ReloadLog::new(live.current()));
    let limiters: Arc<http::rate_limit::RateLimiters> = Arc::default();
    let state = http::AppState {
        live: live.clone(),
        rest: rest.clone(),
        service_kind,
        metrics,
        reloads: reloads.clone(),
        limiters: limiters.clone(),
        outbox: outbox.clone(),
        events: events::Events {
            rest: rest.clone(),
            store: outbox.store().clone(),
            outbox: Some(outbox.clone()),
            limiters,
            presence: Arc::default(),
        },
    };
    let app = http::router(state, request_timeout);
    let server_stop = shutdown.clone();
    let serve_options = crate::server::ServeOptions {
        header_read_timeout: live.current().http.timeouts.header_read,
        idle_timeout: live.current().http.timeouts.idle,
        shutdown_deadline: SHUTDOWN_DEADLINE,
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
    let history_live = live.clone();
    let deliveries = tokio::spawn(outbox::run(
        outbox.clone(),
        rest.clone(),
        Arc::new(move || {
            let cfg = history_live.current();
            cfg.hubs
                .values()
                .filter_map(|h| Some((h.name.to_ascii_lowercase(), h.history?)))
                .collect()
        }),
        {
            let live = live.clone();
            Arc::new(move || live.current().state.idempotency_window)
        },
        shutdown.clone(),
    ));
    // The cron loop on a thread and timer of its own: when fan-out keeps the main runtime's
    // workers busy, a woken task waits behind thousands of socket writers (about 5 ms per
    // 2,000 at saturation); a thread of its own is woken by the kernel at the instant, and
    // with a short slice (`wakeup`) it runs then rather than after the running thread's.
    let scheduler = {
        let run = schedule::run(
            live.clone(),
            outbox.clone(),
            shutdown.clone(),
            heartbeat.clone(),
            sends.clone(),
            tokio::runtime::Handle::current(),
        );
        let main = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            // Woken at the second even while the workers keep the core busy.
            wakeup::ask_for_this_thread();
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(own) => own.block_on(run),
                Err(error) => {
                    tracing::warn!(%error, "no runtime of its own for the scheduler; it shares the main one");
                    main.block_on(run);
                }
            }
        })
    };
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
    crate::systemd::ready(&status_line(
        &live,
        &reloads,
        local,
        service_kind,
        "running",
    ));
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
                let note = match reload_off_workers(&live, &reloads).await {
                    reload::ReloadOutcome::Applied { .. } => {
                        m::register_config(&live.current());
                        "reloaded".to_string()
                    }
                    reload::ReloadOutcome::Restored => {
                        "reloaded (rejected edit reverted)".to_string()
                    }
                    reload::ReloadOutcome::Unchanged => "running".to_string(),
                    reload::ReloadOutcome::Rejected { errors } => format!(
                        "last reload rejected ({} error{}; see the log)",
                        errors.len(),
                        if errors.len() == 1 { "" } else { "s" }
                    ),
                };
                crate::systemd::ready(&status_line(&live, &reloads, local, service_kind, &note));
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
    let _ = deliveries.await;
    sends.close();
    if tokio::time::timeout(SHUTDOWN_DEADLINE, sends.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduled sends still running at shutdown were abandoned");
    }
    // `serve` returns within the deadline; the margin covers the task's own exit.
    match tokio::time::timeout(SHUTDOWN_DEADLINE + Duration::from_secs(1), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(DaemonError::Serve(e)),
        Ok(Err(_)) | Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    if let Some(service) = service {
        let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, service.stopped()).await;
    }
    tracing::info!("stopped");
    Ok(())
}
