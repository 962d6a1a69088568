//! The embedded service's metrics: every family's name as a constant (used at each emit
//! site) and [`describe`], which gives each its `# HELP` text and makes it exist, zero-valued,
//! before any traffic, so dashboards see every family from start-up.
//!
//! Families (names are in dashboards: keep them):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `herald_service_connections` | gauge | | open (handshaken) connections, all hubs |
//! | `herald_connections` | gauge | `hub`, `transport` | open connections by hub and transport |
//! | `herald_service_messages_total` | counter | `recipient` | messages accepted for fan-out |
//! | `herald_service_deliveries_total` | counter | | frames queued to connections |
//! | `herald_service_dropped_total` | counter | `reason` | deliveries not made, see [`DropReason`] |
//! | `herald_service_slow_consumers_total` | counter | | connections closed with a full queue |
//! | `herald_service_upstream_requests_total` | counter | `category`, `outcome` | upstream POSTs made, see [`UpstreamOutcome`] |
//! | `herald_service_upstream_dropped_total` | counter | `event` | upstream events refused at a full hub queue |

use crate::message::Recipient;

/// Gauge: open connections (handshake done) over all hubs.
pub const CONNECTIONS: &str = "herald_service_connections";
/// Gauge: open connections by `hub` and `transport`.
pub const CONNECTIONS_BY_HUB: &str = "herald_connections";
/// Counter: messages accepted for fan-out, by `recipient` (all, user, group, connection).
pub const MESSAGES: &str = "herald_service_messages_total";
/// Counter: frames of fanned-out messages queued to connections (one per connection).
pub const DELIVERIES: &str = "herald_service_deliveries_total";
/// Counter: fanned-out messages not queued, by `reason` ([`DropReason::label`]).
pub const DROPPED: &str = "herald_service_dropped_total";
/// Counter: connections closed because their outbound queue was full.
pub const SLOW_CONSUMERS: &str = "herald_service_slow_consumers_total";

/// Counter: upstream POSTs, by `category` (connections, messages) and `outcome`
/// ([`UpstreamOutcome::label`]).
pub const UPSTREAM_REQUESTS: &str = "herald_service_upstream_requests_total";
/// Counter: upstream events not sent because the hub's queue was full, by `event`
/// (`connected`, `disconnected`, `invocation`).
pub const UPSTREAM_DROPPED: &str = "herald_service_upstream_dropped_total";

/// How one upstream POST ended (the `outcome` label of [`UPSTREAM_REQUESTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// 200 or 204.
    Ok,
    /// Any other status.
    Status,
    /// No answer within the upstream timeout.
    Timeout,
    /// Connection refused, reset, TLS failure, or an answer over 16 MB.
    Error,
}

impl UpstreamOutcome {
    pub const ALL: [UpstreamOutcome; 4] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::Status,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Status => "status",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
        }
    }
}

/// Count one upstream POST.
pub(crate) fn upstream_request(category: &'static str, outcome: UpstreamOutcome) {
    metrics::counter!(UPSTREAM_REQUESTS, "category" => category, "outcome" => outcome.label())
        .increment(1);
}

/// Count one upstream event refused at a full queue.
pub(crate) fn upstream_dropped(event: &'static str) {
    metrics::counter!(UPSTREAM_DROPPED, "event" => event).increment(1);
}

/// Why a message was not delivered (the `reason` label of [`DROPPED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The connection's queue was full: it is closed as a slow consumer.
    SlowConsumer,
    /// The connection was already closing.
    Closed,
    /// The recipient matched no connection (counted once per message).
    NoRecipient,
    /// A REST send repeated a message id seen within the dedupe window (counted once per
    /// send, not fanned out).
    Duplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::SlowConsumer,
        DropReason::Closed,
        DropReason::NoRecipient,
        DropReason::Duplicate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::Closed => "closed",
            DropReason::NoRecipient => "no_recipient",
            DropReason::Duplicate => "duplicate",
        }
    }
}

/// Count one dropped delivery.
pub(crate) fn dropped(reason: DropReason) {
    metrics::counter!(DROPPED, "reason" => reason.label()).increment(1);
}

/// Register every family with its HELP text, and a zero for the unlabelled ones, each
/// drop reason and each recipient kind. Idempotent: gauges get `increment(0)`, never a
/// reset, so calling it again (telemetry start-up, then [`super::Service::start`]) keeps the
/// values.
pub fn describe() {
    metrics::describe_gauge!(
        CONNECTIONS,
        metrics::Unit::Count,
        "Open connections to the embedded SignalR service (handshake done), all hubs."
    );
    metrics::describe_gauge!(
        CONNECTIONS_BY_HUB,
        metrics::Unit::Count,
        "Open connections to the embedded SignalR service by hub and transport."
    );
    metrics::describe_counter!(
        MESSAGES,
        metrics::Unit::Count,
        "Messages the embedded SignalR service accepted for fan-out, by recipient kind."
    );
    metrics::describe_counter!(
        DELIVERIES,
        metrics::Unit::Count,
        "Frames of fanned-out messages queued to connections (one per connection)."
    );
    metrics::describe_counter!(
        DROPPED,
        metrics::Unit::Count,
        "Fanned-out messages not queued: slow_consumer (queue full, connection closed), closed (connection already closing), no_recipient (matched no connection), duplicate (a REST send repeating a message id within the dedupe window)."
    );
    metrics::describe_counter!(
        SLOW_CONSUMERS,
        metrics::Unit::Count,
        "Connections closed because their outbound queue was full."
    );
    metrics::describe_counter!(
        UPSTREAM_REQUESTS,
        metrics::Unit::Count,
        "Upstream POSTs of the embedded SignalR service, by category (connections, messages) and outcome: ok (200/204), status (any other status), timeout, error (connection failure or an answer over 16 MB)."
    );
    metrics::describe_counter!(
        UPSTREAM_DROPPED,
        metrics::Unit::Count,
        "Upstream events not sent because the hub's upstream queue was full, by event (connected, disconnected, invocation; a refused invocation gets a Completion error)."
    );
    metrics::gauge!(CONNECTIONS).increment(0.0);
    for category in ["connections", "messages"] {
        for outcome in UpstreamOutcome::ALL {
            metrics::counter!(UPSTREAM_REQUESTS, "category" => category, "outcome" => outcome.label())
                .increment(0);
        }
    }
    for event in ["connected", "disconnected", "invocation"] {
        metrics::counter!(UPSTREAM_DROPPED, "event" => event).increment(0);
    }
    metrics::counter!(DELIVERIES).increment(0);
    metrics::counter!(SLOW_CONSUMERS).increment(0);
    for reason in DropReason::ALL {
        metrics::counter!(DROPPED, "reason" => reason.label()).increment(0);
    }
    for recipient in [
        Recipient::All,
        Recipient::User(String::new()),
        Recipient::Group(String::new()),
        Recipient::Connection(String::new()),
    ] {
        metrics::counter!(MESSAGES, "recipient" => recipient.kind()).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_exists_with_help_before_traffic() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::gauge!(CONNECTIONS).set(3.0);
            describe();
        });
        let text = handle.render();
        for name in [
            CONNECTIONS,
            MESSAGES,
            DELIVERIES,
            DROPPED,
            SLOW_CONSUMERS,
            UPSTREAM_REQUESTS,
            UPSTREAM_DROPPED,
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
        }
        assert!(
            text.contains("herald_service_connections 3\n"),
            "describe keeps values: {text}"
        );
        assert!(
            text.contains("herald_service_deliveries_total 0\n"),
            "{text}"
        );
        for reason in ["slow_consumer", "closed", "no_recipient", "duplicate"] {
            assert!(
                text.contains(&format!(
                    "herald_service_dropped_total{{reason=\"{reason}\"}} 0\n"
                )),
                "{text}"
            );
        }
        assert!(
            text.contains("herald_service_messages_total{recipient=\"group\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_service_upstream_requests_total{category=\"messages\",outcome=\"timeout\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("herald_service_upstream_dropped_total{event=\"connected\"} 0\n"),
            "{text}"
        );
    }
}
