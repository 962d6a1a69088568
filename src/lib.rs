//! herald: a declarative real-time status notification daemon.
//!
//! One YAML file (`notifications.yaml`) declares hubs, message templates, cron schedules and
//! HTTP status routes. herald serves negotiate endpoints to SignalR clients and delivers
//! messages through Azure SignalR Service's REST API or through its own embedded
//! SignalR-compatible service.
//!
//! # Layout
//!
//! ```text
//! message.rs     Message {hub, to: Recipient, target, arguments}
//! signalr/       connection strings, tokens, REST client, hub protocol
//! service/       the embedded SignalR-compatible service (client endpoint + REST API)
//! ```

pub mod message;
pub mod service;
pub mod signalr;

/// Install the process-wide crypto providers (rustls and jsonwebtoken, both on aws-lc-rs).
/// Call once at the start of `main` and in test set-up; repeated calls are harmless.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
pub mod cli;
pub mod config;
pub mod cron;
pub mod telemetry;
pub mod template;
