//! Reloading the config: run the same `config::load` as startup and `herald check`; a valid
//! result is swapped in atomically (generation + 1), an invalid one is logged error by error
//! and the last good config keeps running. Reverting the file to the running content after a
//! rejection counts as a successful reload. Keys that only take effect after a restart are
//! compared with the config the process started with and stay pending until then. The outcome
//! is recorded for `/healthz`, metrics and the systemd status line.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::{self, Config, SignalrConfig, live::LiveConfig};
use crate::telemetry::metrics as m;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Applied {
        generation: u64,
        /// Keys that differ from the started config and take effect only after a restart.
        restart_required: Vec<&'static str>,
    },
    /// The file is back to the running content after a rejected reload: the rejection is
    /// cleared and the running snapshot stays.
    Restored,
    /// The file's content did not change.
    Unchanged,
    /// The new config is invalid; the old one keeps running.
    Rejected { errors: Vec<String> },
}

/// The last reload, as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub at: String,
    /// `applied`, `restored` or `rejected`.
    pub outcome: &'static str,
    pub generation: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<&'static str>,
}

impl ReloadRecord {
    pub fn rejected(&self) -> bool {
        self.outcome == "rejected"
    }
}

/// The reload history that matters now: the last reload and the restart-only keys pending.
/// std `Mutex`es: written by the one reload at a time (the control loop awaits each), read by
/// `/healthz`, never held across an await.
#[derive(Debug)]
pub struct ReloadLog {
    last: Mutex<Option<ReloadRecord>>,
    /// Restart-only keys whose running value differs from the started config's.
    pending_restart: Mutex<Vec<&'static str>>,
    /// The config the listeners and the service connection were built from; restart-only
    /// keys are compared with it, so a second reload does not forget a pending restart.
    started: Arc<Config>,
}

impl ReloadLog {
    /// A log for a process that started with `started`.
    pub fn new(started: Arc<Config>) -> Self {
        ReloadLog {
            last: Mutex::new(None),
            pending_restart: Mutex::new(Vec::new()),
            started,
        }
    }

    pub fn snapshot(&self) -> Option<ReloadRecord> {
        self.last.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// Whether the last reload was rejected (the running config is older than the file).
    pub fn last_rejected(&self) -> bool {
        self.snapshot().is_some_and(|r| r.rejected())
    }

    /// Restart-only keys that changed since start; empty when none is pending.
    pub fn restart_required(&self) -> Vec<&'static str> {
        self.pending_restart
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    fn record(&self, r: ReloadRecord) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some(r);
        }
    }

    fn set_pending(&self, keys: &[&'static str]) {
        if let Ok(mut g) = self.pending_restart.lock() {
            *g = keys.to_vec();
        }
        metrics::gauge!(m::CONFIG_RESTART_REQUIRED).set(if keys.is_empty() { 0.0 } else { 1.0 });
    }
}

/// Keys whose change needs a restart: the listeners, the service connection and the state
/// database.
pub fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.http.listen != new.http.listen {
        keys.push("http.listen");
    }
    if old.http.timeouts.header_read != new.http.timeouts.header_read {
        keys.push("http.header_read_timeout");
    }
    if old.http.timeouts.idle != new.http.timeouts.idle {
        keys.push("http.idle_timeout");
    }
    if old.api_version != new.api_version {
        keys.push("signalr.api_version");
    }
    if old.state.dir != new.state.dir {
        keys.push("state.dir");
    }
    if old.state.synchronous != new.state.synchronous {
        keys.push("state.synchronous");
    }
    if old.cluster != new.cluster {
        keys.push("cluster");
    }
    if old.http.request_timeout != new.http.request_timeout {
        keys.push("http.request_timeout");
    }
    match (&old.signalr, &new.signalr) {
        (SignalrConfig::Azure(a), SignalrConfig::Azure(b)) => {
            if a != b {
                keys.push(if a.len() == 1 && b.len() == 1 {
                    "signalr.connection_string"
                } else {
                    "signalr.endpoints"
                });
            }
        }
        (
            SignalrConfig::Embedded {
                listen: l1,
                access_key: k1,
                public_url: p1,
                max_connections: m1,
                timeouts: t1,
            },
            SignalrConfig::Embedded {
                listen: l2,
                access_key: k2,
                public_url: p2,
                max_connections: m2,
                timeouts: t2,
            },
        ) => {
            if l1 != l2 {
                keys.push("signalr.embedded.listen");
            }
            if k1 != k2 {
                keys.push("signalr.embedded.access_key");
            }
            if p1 != p2 {
                keys.push("signalr.embedded.public_url");
            }
            if m1 != m2 {
                keys.push("signalr.embedded.max_connections");
            }
            if t1.header_read != t2.header_read {
                keys.push("signalr.embedded.header_read_timeout");
            }
            if t1.idle != t2.idle {
                keys.push("signalr.embedded.idle_timeout");
            }
        }
        _ => keys.push("signalr.connection_string"),
    }
    keys
}

/// Reload from the current config's path. Blocking (reads and compiles the file): the
/// daemon runs it on the blocking pool.
pub fn reload(live: &LiveConfig, log: &ReloadLog) -> ReloadOutcome {
    let current = live.current();
    let at = crate::daemon::now_rfc3339();
    // Most file events leave the content as it is: compare hashes before compiling anything.
    let text = config::source::read_text(&current.path);
    if text
        .as_ref()
        .is_ok_and(|t| config::compile::content_hash(t) == current.content_hash)
    {
        if !log.last_rejected() {
            tracing::debug!("config file unchanged; nothing to reload");
            return ReloadOutcome::Unchanged;
        }
        // The rejected edit was reverted: what runs is what the file says again.
        tracing::info!(
            generation = live.generation(),
            "config file is back to the running config; the rejected reload is cleared"
        );
        metrics::counter!(m::CONFIG_RELOADS, "outcome" => "restored").increment(1);
        metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESSFUL).set(1.0);
        log.record(ReloadRecord {
            at,
            outcome: "restored",
            generation: live.generation(),
            sha256: current.content_hash.clone(),
            errors: Vec::new(),
            restart_required: log.restart_required(),
        });
        return ReloadOutcome::Restored;
    }
    let loaded =
        text.and_then(|t| config::load_str(&current.path, &t, &|name| std::env::var(name).ok()));
    match loaded {
        Err(errors) => {
            // Bounded: the first REPORT_LIMIT problems are logged and kept for /healthz.
            let limit = config::diagnostic::REPORT_LIMIT;
            let count = errors.diagnostics.len();
            for d in errors.diagnostics.iter().take(limit) {
                tracing::error!("{d}");
            }
            let mut errors: Vec<String> = errors
                .diagnostics
                .iter()
                .take(limit)
                .map(|d| d.to_string())
                .collect();
            if count > limit {
                let more = format!("... and {} more errors", count - limit);
                tracing::error!("{more}");
                errors.push(more);
            }
            tracing::error!(
                count,
                generation = live.generation(),
                "config reload rejected; the last good config keeps running"
            );
            metrics::counter!(m::CONFIG_RELOADS, "outcome" => "rejected").increment(1);
            metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESSFUL).set(0.0);
            log.record(ReloadRecord {
                at,
                outcome: "rejected",
                generation: live.generation(),
                sha256: current.content_hash.clone(),
                errors: errors.clone(),
                restart_required: log.restart_required(),
            });
            ReloadOutcome::Rejected { errors }
        }
        Ok(new) => {
            let restart = restart_required(&log.started, &new);
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "these keys changed but take effect only after a restart");
            }
            // Warnings the running config already had were logged when it was loaded (the
            // CORS `*` warning once per start, not once per reload).
            for w in &new.warnings {
                if !current.warnings.iter().any(|old| old.message == w.message) {
                    tracing::warn!("{w}");
                }
            }
            let sha = new.content_hash.clone();
            let (hubs, routes, schedules) = (new.hubs.len(), new.routes.len(), new.schedules.len());
            // Recorded before the swap, so whoever sees the new generation sees its record.
            // Only one reload runs at a time, so the next generation is known.
            let generation = live.generation() + 1;
            log.set_pending(&restart);
            log.record(ReloadRecord {
                at,
                outcome: "applied",
                generation,
                sha256: sha.clone(),
                errors: Vec::new(),
                restart_required: restart.clone(),
            });
            let generation = live.replace(new);
            tracing::info!(generation, hubs, routes, schedules, sha256 = %&sha[..12], "config reloaded");
            metrics::counter!(m::CONFIG_RELOADS, "outcome" => "applied").increment(1);
            metrics::gauge!(m::CONFIG_LAST_RELOAD_SUCCESSFUL).set(1.0);
            metrics::gauge!(m::CONFIG_GENERATION).set(generation as f64);
            ReloadOutcome::Applied {
                generation,
                restart_required: restart,
            }
        }
    }
}
