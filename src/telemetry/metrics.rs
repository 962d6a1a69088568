//! The catalogue of the daemon's metrics: every family's name as a const, its kind, labels and
//! `# HELP` text, in one table. `describe()` runs once when the recorder is installed: it
//! describes each family and registers the unlabelled ones at zero, so a dashboard finds every
//! family from the first scrape. Process metrics (`process_*`) are read from /proc at scrape
//! time by `metrics-process` (`collect_process`).

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

pub const BUILD_INFO: &str = "herald_build_info";
pub const CONFIG_GENERATION: &str = "herald_config_generation";
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "herald_config_last_reload_successful";
pub const CONFIG_RELOADS: &str = "herald_config_reloads_total";
pub const CONFIG_RESTART_REQUIRED: &str = "herald_config_restart_required";
pub const HTTP_REQUESTS: &str = "herald_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "herald_http_request_duration_seconds";
pub const NEGOTIATE: &str = "herald_negotiate_total";
pub const RATE_LIMITED: &str = "herald_rate_limited_total";
pub const MESSAGES: &str = "herald_messages_total";
pub const REST_REQUEST_DURATION: &str = "herald_rest_request_seconds";
pub const SCHEDULE_FIRES: &str = "herald_schedule_fires_total";
pub const SCHEDULE_MISSES: &str = "herald_schedule_misses_total";
pub const SCHEDULE_NEXT_FIRE: &str = "herald_schedule_next_fire_timestamp_seconds";
pub const SCHEDULE_LAST_FIRE: &str = "herald_schedule_last_fire_timestamp_seconds";
pub const SCHEDULE_FIRE_LAG: &str = "herald_schedule_fire_lag_seconds";
pub const OUTBOX_DEPTH: &str = "herald_outbox_depth";
pub const OUTBOX_OLDEST_AGE: &str = "herald_outbox_oldest_age_seconds";
pub const OUTBOX_RETRIES: &str = "herald_outbox_retries_total";
pub const OUTBOX_DROPPED: &str = "herald_outbox_dropped_total";
pub const HISTORY_MESSAGES: &str = "herald_history_messages";
pub const ENDPOINT_UP: &str = "herald_endpoint_up";
pub const ACKS: &str = "herald_acks_total";
pub const CLIENT_EVENTS: &str = "herald_client_events_total";

/// The daemon's families (the embedded service describes its own, see `describe`).
pub const FAMILIES: &[Family] = &[
    Family {
        name: ACKS,
        kind: Kind::Counter,
        labels: &["route"],
        help: "Client acknowledgements recorded, by the acknowledged message's source (`route:NAME` or `schedule:NAME`).",
    },
    Family {
        name: CLIENT_EVENTS,
        kind: Kind::Counter,
        labels: &["hub", "event", "outcome"],
        help: "Client events received upstream (connected, disconnected, client methods), by outcome (`ok`, `refused`, `failed`).",
    },
    Family {
        name: OUTBOX_DEPTH,
        kind: Kind::Gauge,
        labels: &[],
        help: "Accepted messages stored and not yet taken by the SignalR service.",
    },
    Family {
        name: OUTBOX_OLDEST_AGE,
        kind: Kind::Gauge,
        labels: &[],
        help: "Seconds since the oldest message still in the outbox was accepted (0 when empty).",
    },
    Family {
        name: OUTBOX_RETRIES,
        kind: Kind::Counter,
        labels: &[],
        help: "Sends from the outbox that the SignalR service did not take and that are retried.",
    },
    Family {
        name: OUTBOX_DROPPED,
        kind: Kind::Counter,
        labels: &[],
        help: "Messages the SignalR service refused for good (e.g. over its size limit), dropped from the outbox.",
    },
    Family {
        name: HISTORY_MESSAGES,
        kind: Kind::Gauge,
        labels: &["hub"],
        help: "Messages kept in a hub's history.",
    },
    Family {
        name: ENDPOINT_UP,
        kind: Kind::Gauge,
        labels: &["endpoint", "role"],
        help: "1 while a SignalR endpoint of `signalr.endpoints` takes calls, 0 while it is skipped (failed a call or a health probe).",
    },
    Family {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["version"],
        help: "Always 1; the version label is the running herald's version.",
    },
    Family {
        name: CONFIG_GENERATION,
        kind: Kind::Gauge,
        labels: &[],
        help: "Generation of the running config: 1 at start, +1 per applied reload.",
    },
    Family {
        name: CONFIG_LAST_RELOAD_SUCCESSFUL,
        kind: Kind::Gauge,
        labels: &[],
        help: "1 when the last reload was applied or reverted to the running config, 0 after a rejected one.",
    },
    Family {
        name: CONFIG_RELOADS,
        kind: Kind::Counter,
        labels: &["outcome"],
        help: "Config reloads by outcome: applied, restored (a rejected edit reverted) or rejected.",
    },
    Family {
        name: CONFIG_RESTART_REQUIRED,
        kind: Kind::Gauge,
        labels: &[],
        help: "1 while a reload changed keys that take effect only after a restart (see /healthz).",
    },
    Family {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        labels: &["route", "method", "status"],
        help: "HTTP requests to the daemon by route name (config route, negotiate, healthz, readyz, metrics, preflight, unmatched), method and status.",
    },
    Family {
        name: HTTP_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &["route", "method"],
        help: "Time to answer an HTTP request to the daemon, by route name and method.",
    },
    Family {
        name: NEGOTIATE,
        kind: Kind::Counter,
        labels: &["hub"],
        help: "Negotiate answers (client connection info issued) by hub.",
    },
    Family {
        name: RATE_LIMITED,
        kind: Kind::Counter,
        labels: &["route"],
        help: "Requests refused with 429 by a route's rate limit.",
    },
    Family {
        name: MESSAGES,
        kind: Kind::Counter,
        labels: &["hub", "to", "source", "outcome"],
        help: "Messages the daemon handed to the SignalR service, by hub, recipient kind, source (route, schedule) and outcome.",
    },
    Family {
        name: REST_REQUEST_DURATION,
        kind: Kind::Histogram,
        labels: &[],
        help: "Latency of the daemon's calls to the SignalR service REST API.",
    },
    Family {
        name: SCHEDULE_FIRES,
        kind: Kind::Counter,
        labels: &["schedule"],
        help: "Schedule fires by schedule.",
    },
    Family {
        name: SCHEDULE_MISSES,
        kind: Kind::Counter,
        labels: &["schedule"],
        help: "Times a schedule was late by more than the grace window and skipped the fires missed before it.",
    },
    Family {
        name: SCHEDULE_NEXT_FIRE,
        kind: Kind::Gauge,
        labels: &["schedule"],
        help: "Unix time of the schedule's next fire.",
    },
    Family {
        name: SCHEDULE_LAST_FIRE,
        kind: Kind::Gauge,
        labels: &["schedule"],
        help: "Unix time of the schedule's last fire (the instant it was due).",
    },
    Family {
        name: SCHEDULE_FIRE_LAG,
        kind: Kind::Histogram,
        labels: &["schedule"],
        help: "How late a fire ran after its due instant.",
    },
];

/// The standard process families `metrics-process` exports on Linux.
pub const PROCESS_FAMILIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Families of the embedded service (`service/`), described by the service itself.
pub const SERVICE_FAMILIES: &[&str] = {
    use crate::service::metrics as s;
    &[
        s::CONNECTIONS_BY_HUB,
        s::CONNECTIONS,
        s::MESSAGES,
        s::DELIVERIES,
        s::DROPPED,
        s::SLOW_CONSUMERS,
    ]
};

/// Every family name a scrape may show (for dashboards and their test).
pub fn names() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .iter()
        .map(|f| f.name)
        .chain(PROCESS_FAMILIES.iter().copied())
        .chain(SERVICE_FAMILIES.iter().copied())
}

/// Describe every family and register the unlabelled ones (and `herald_build_info`), so they
/// appear, with `# HELP`, before any traffic. Call once, after installing the recorder.
pub fn describe() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => describe_counter!(f.name, f.help),
            Kind::Gauge => describe_gauge!(f.name, f.help),
            Kind::Histogram => describe_histogram!(f.name, f.help),
        }
        if f.labels.is_empty() {
            match f.kind {
                Kind::Counter => metrics::counter!(f.name).increment(0),
                Kind::Gauge => metrics::gauge!(f.name).increment(0.0),
                // A histogram with no observation renders no series; it appears on first use.
                Kind::Histogram => {}
            }
        }
    }
    for outcome in ["applied", "restored", "rejected"] {
        metrics::counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    process_collector().describe();
    crate::service::metrics::describe();
}

/// Families labelled by config names, at zero for the names `cfg` declares: called at start
/// and after each applied reload, so per-hub and per-schedule panels have series at once.
pub fn register_config(cfg: &crate::config::Config) {
    for hub in cfg.hubs.keys() {
        metrics::counter!(NEGOTIATE, "hub" => hub.clone()).increment(0);
    }
    for name in cfg.schedules.keys() {
        metrics::counter!(SCHEDULE_FIRES, "schedule" => name.clone()).increment(0);
        metrics::counter!(SCHEDULE_MISSES, "schedule" => name.clone()).increment(0);
    }
    for route in cfg.routes.iter().filter(|r| r.rate_limit.is_some()) {
        metrics::counter!(RATE_LIMITED, "route" => route.name.clone()).increment(0);
    }
}

fn process_collector() -> metrics_process::Collector {
    metrics_process::Collector::default()
}

/// Read the process metrics from /proc now (called on each scrape of `/metrics`).
pub fn collect_process() {
    process_collector().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_with_help() {
        let mut seen = std::collections::BTreeSet::new();
        for name in names() {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        for f in FAMILIES {
            assert!(f.name.starts_with("herald_"), "{}", f.name);
            assert!(!f.help.is_empty(), "{} has no help", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                f.name
            );
        }
    }
}
