//! herald: a declarative real-time status notification daemon.
//!
//! One YAML file (`notifications.yaml`) declares hubs, message templates, cron schedules and
//! HTTP status routes. herald serves negotiate endpoints to SignalR clients and delivers
//! messages through Azure SignalR Service's REST API or through its own embedded
//! SignalR-compatible service; the same REST client serves both.
//!
//! # Layout
//!
//! ```text
//! cli.rs          clap commands: run, check, schema, send, token, service, functions init
//! telemetry/      logging (text/JSON), the Prometheus recorder; metrics.rs: the metrics catalogue
//! state.rs        where herald keeps state on disk: state dir, embedded access key
//! systemd.rs      sd_notify READY / RELOADING / STOPPING / WATCHDOG; no-op elsewhere
//! control.rs      Control {Reload, Shutdown}; OS signals → the daemon's control channel
//! message.rs      Message {hub, to: Recipient, target, arguments}
//! server.rs       serve a Router until shutdown: header-read and idle timeouts, one deadline
//! template.rs     minijinja templates; a lone "{{ expr }}" keeps its JSON type
//! cron.rs         NCRONTAB (6 fields, 5 accepted) in an IANA zone → next fires
//! config/         model (the YAML shape) → source (spans, ${VAR}, HERALD_ env) → compile →
//!                 Config; live (ArcSwap snapshot), watch (file watcher), schema
//! signalr/        ServiceEndpoint (connection strings), names (REST naming rules), token,
//!                 endpoints, rest/ (RestClient over one or several endpoints), protocol/,
//!                 upstream (X-ASRS headers, signatures)
//! cluster/        scale-out on Redis: backplane transport, fire locks, idempotency, presence
//! store/          the state database (SQLite): outbox, idempotency keys, history, retained
//! service/        the embedded SignalR-compatible service: negotiate, transports, registry,
//!                 fan-out, data-plane REST API, upstream sender, backplane/, dedupe, replay
//! daemon/         `herald run`: composition (mod.rs), endpoint (Azure or embedded), http
//!                 (negotiate, status routes, history, page, health, metrics), events
//!                 (upstream endpoint: acks, groups, relays, presence), outbox (delivers
//!                 what the store holds), schedule, reload, delivery, auth; functions/
//!                 (Azure Functions custom handler: handler.rs serves host invocations with
//!                 the same code, init.rs generates the app)
//! ```

pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod cron;
pub mod daemon;
pub mod message;
pub mod server;
pub mod service;
pub mod signalr;
pub mod state;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod template;

/// Install the process-wide crypto providers (rustls and jsonwebtoken, both on aws-lc-rs).
/// Call once at the start of `main` and in test set-up; repeated calls are harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
