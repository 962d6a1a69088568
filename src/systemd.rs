//! Telling systemd the truth: `READY=1` once the config is loaded and the listeners are bound,
//! `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around each reload, `STOPPING=1` on
//! shutdown, `STATUS=` lines for `systemctl status`, and `WATCHDOG=1` at half the watchdog
//! interval, sent only while the scheduler and the HTTP loop prove they are alive. Everything
//! here is a no-op without `NOTIFY_SOCKET`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with the monotonic timestamp systemd requires for `Type=notify-reload`.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("Reloading configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// A `STATUS=` line.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Proof of life from the scheduler loop: the wall-clock milliseconds of its last turn.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<AtomicI64>);

impl Heartbeat {
    pub fn beat(&self) {
        self.0
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = self.0.load(Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        Duration::from_millis(now.saturating_sub(last).max(0) as u64)
    }
}

/// Longest the scheduler loop may sleep, so its heartbeat stays fresh.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// If systemd enabled the watchdog, ping it at half its interval while `scheduler` beats and
/// `http` answers `/healthz`; stop at `shutdown`.
pub fn spawn_watchdog(scheduler: Heartbeat, http: SocketAddr, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = interval / 2;
    let probe_url = format!("http://{}/healthz", loopback(http));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(every.max(Duration::from_millis(100)))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "watchdog: cannot build the HTTP probe");
                return;
            }
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let scheduler_ok = scheduler.age() <= interval;
            let http_ok = client
                .get(&probe_url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if scheduler_ok && http_ok {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::warn!(
                    scheduler_ok,
                    http_ok,
                    "watchdog not fed: a loop is not answering"
                );
            }
        }
    });
}

/// The address to probe a listener bound to `addr` on (unspecified → loopback).
fn loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
