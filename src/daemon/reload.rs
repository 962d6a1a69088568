//! Reloading the config: run the same `config::load` as startup and `herald check`; a valid
//! result is swapped in atomically (generation + 1), an invalid one is logged error by error
//! and the last good config keeps running. The outcome is recorded for `/healthz` and metrics.

use std::sync::Mutex;

use serde::Serialize;

use crate::config::{self, Config, SignalrConfig, live::LiveConfig};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Applied {
        generation: u64,
        /// Keys that changed but only take effect after a restart.
        restart_required: Vec<&'static str>,
    },
    /// The file's content did not change.
    Unchanged,
    /// The new config is invalid; the old one keeps running.
    Rejected { errors: Vec<String> },
}

/// The last reload, as `/healthz` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadRecord {
    pub at: String,
    pub outcome: &'static str,
    pub generation: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<&'static str>,
}

/// The most recent reload. A std `Mutex`: written by the one control loop, read by
/// `/healthz`, never held across an await.
#[derive(Debug, Default)]
pub struct ReloadLog {
    last: Mutex<Option<ReloadRecord>>,
}

impl ReloadLog {
    pub fn snapshot(&self) -> Option<ReloadRecord> {
        self.last.lock().map(|g| g.clone()).unwrap_or(None)
    }

    fn record(&self, r: ReloadRecord) {
        if let Ok(mut g) = self.last.lock() {
            *g = Some(r);
        }
    }
}

/// Keys whose change needs a restart: the listeners and the service connection.
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
    if old.http.request_timeout != new.http.request_timeout {
        keys.push("http.request_timeout");
    }
    match (&old.signalr, &new.signalr) {
        (SignalrConfig::Azure(a), SignalrConfig::Azure(b)) => {
            if a != b {
                keys.push("signalr.connection_string");
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

/// Reload from the current config's path.
pub fn reload(live: &LiveConfig, log: &ReloadLog) -> ReloadOutcome {
    let current = live.current();
    let at = crate::daemon::now_rfc3339();
    // Most file events leave the content as it is: compare hashes before compiling anything.
    let text = config::source::read_text(&current.path);
    if text
        .as_ref()
        .is_ok_and(|t| config::compile::content_hash(t) == current.content_hash)
    {
        tracing::debug!("config file unchanged; nothing to reload");
        return ReloadOutcome::Unchanged;
    }
    let loaded =
        text.and_then(|t| config::load_str(&current.path, &t, &|name| std::env::var(name).ok()));
    match loaded {
        Err(errors) => {
            for d in &errors.diagnostics {
                tracing::error!("{d}");
            }
            let errors: Vec<String> = errors.diagnostics.iter().map(|d| d.to_string()).collect();
            tracing::error!(
                count = errors.len(),
                generation = live.generation(),
                "config reload rejected; the last good config keeps running"
            );
            metrics::counter!("herald_config_reloads_total", "outcome" => "rejected").increment(1);
            metrics::gauge!("herald_config_last_reload_successful").set(0.0);
            log.record(ReloadRecord {
                at,
                outcome: "rejected",
                generation: live.generation(),
                sha256: current.content_hash.clone(),
                errors: errors.clone(),
                restart_required: Vec::new(),
            });
            ReloadOutcome::Rejected { errors }
        }
        Ok(new) => {
            let restart = restart_required(&current, &new);
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "these keys changed but take effect only after a restart");
            }
            for w in &new.warnings {
                tracing::warn!("{w}");
            }
            let sha = new.content_hash.clone();
            let (hubs, routes, schedules) = (new.hubs.len(), new.routes.len(), new.schedules.len());
            // Recorded before the swap, so whoever sees the new generation sees its record.
            // Only this control loop replaces the snapshot, so the next generation is known.
            let generation = live.generation() + 1;
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
            metrics::counter!("herald_config_reloads_total", "outcome" => "applied").increment(1);
            metrics::gauge!("herald_config_last_reload_successful").set(1.0);
            metrics::gauge!("herald_config_generation").set(generation as f64);
            ReloadOutcome::Applied {
                generation,
                restart_required: restart,
            }
        }
    }
}
