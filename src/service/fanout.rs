//! Fan-out: recipient → connections → encode once per protocol → `try_send` into each
//! connection's bounded queue.
//!
//! Slow-consumer policy: fan-out never waits on a client. A connection whose queue is full
//! is closed (log line + `herald_service_slow_consumers_total`); the others are unaffected.
//! The encoded frame is one `Bytes` shared by every connection of the same protocol.
//!
//! Counted here: every message (`herald_service_messages_total{recipient}`), every frame
//! queued (`herald_service_deliveries_total`) and every one not
//! (`herald_service_dropped_total{reason}`); see `metrics.rs`.

use std::sync::Arc;

use crate::message::Message;
use crate::signalr::protocol::{HubMessage, Protocol};

use super::connection::{Frame, Outgoing, Push, encode_frame};
use super::metrics::{self as service_metrics, DropReason};
use super::registry::Registry;

/// How many recipients ahead fan-out asks for a connection's memory.
const PREFETCH_AHEAD: usize = 8;

/// Ask the CPU to start loading the cache line at `p` (a hint: no effect on meaning).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    // SAFETY: a prefetch never dereferences `p` (any address is allowed, even a dangling
    // one), and SSE, which it needs, is part of every x86_64 CPU.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// What one send did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Connections the recipient resolved to (after `excluded`).
    pub connections: usize,
    /// Connections the message was queued for.
    pub queued: usize,
    /// Connections closed because their queue was full.
    pub slow_consumers: usize,
}

/// Deliver `message` to its recipients.
pub(crate) fn deliver(registry: &Registry, message: &Message) -> SendReport {
    metrics::counter!(service_metrics::MESSAGES, "recipient" => message.to.kind()).increment(1);
    let targets = registry.resolve(&message.hub, &message.to, &message.excluded);
    let mut report = SendReport {
        connections: targets.len(),
        ..SendReport::default()
    };
    if targets.is_empty() {
        service_metrics::dropped(DropReason::NoRecipient);
        return report;
    }
    let invocation = HubMessage::invocation(message.target.clone(), message.arguments.clone());
    let mut json: Option<Option<Frame>> = None;
    let mut msgpack: Option<Option<Frame>> = None;
    let now = tokio::time::Instant::now();
    for (i, connection) in targets.iter().enumerate() {
        // A recipient's memory is rarely in cache: ask for the next ones' while this one is
        // served (the connection first, then its queue once the connection has arrived, then
        // the task a push wakes once the queue has).
        if let Some(ahead) = targets.get(i + PREFETCH_AHEAD) {
            prefetch(Arc::as_ptr(ahead));
        }
        if let Some(near) = targets.get(i + PREFETCH_AHEAD / 2) {
            near.prefetch_queue();
        }
        if let Some(next) = targets.get(i + PREFETCH_AHEAD / 4) {
            next.prefetch_task();
        }
        let Some(protocol) = connection.protocol() else {
            continue;
        };
        let slot = match protocol {
            Protocol::Json => &mut json,
            Protocol::MessagePack => &mut msgpack,
        };
        let frame = slot.get_or_insert_with(|| match encode_frame(protocol, &invocation) {
            Ok(frame) => Some(frame),
            Err(error) => {
                tracing::error!(%error, protocol = protocol.name(), target = %message.target, "could not encode a message");
                None
            }
        });
        let Some(frame) = frame else {
            continue;
        };
        match connection.try_push_at(Outgoing::tracked(frame.clone()), now) {
            Push::Queued => report.queued += 1,
            Push::SlowConsumer => {
                report.slow_consumers += 1;
                service_metrics::dropped(DropReason::SlowConsumer);
            }
            Push::Closed => service_metrics::dropped(DropReason::Closed),
        }
    }
    metrics::counter!(service_metrics::DELIVERIES).increment(report.queued as u64);
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::connection::Connection;
    use super::*;
    use crate::message::Recipient;

    #[tokio::test]
    async fn encodes_once_and_closes_a_full_queue() {
        let registry = Registry::new(10);
        let fast = Connection::new("f".into(), "f".into(), "h".into(), None, 4);
        fast.set_protocol_for_test(Protocol::Json);
        let slow = Connection::new("s".into(), "s".into(), "h".into(), None, 1);
        slow.set_protocol_for_test(Protocol::MessagePack);
        let other = Connection::new("o".into(), "o".into(), "h".into(), None, 4);
        other.set_protocol_for_test(Protocol::Json);
        for c in [&fast, &slow, &other] {
            registry.insert(Arc::clone(c)).unwrap();
            registry.activate(c);
        }
        let message = Message::broadcast("H", "t", vec![json!(1)]);
        let first = deliver(&registry, &message);
        assert_eq!(
            first,
            SendReport {
                connections: 3,
                queued: 3,
                slow_consumers: 0
            }
        );
        let second = deliver(&registry, &message);
        assert_eq!(second.slow_consumers, 1);
        assert!(slow.is_closed());
        assert!(!fast.is_closed());

        let mut rx_fast = fast.outbound.lock().await;
        let mut rx_other = other.outbound.lock().await;
        let (Some(Frame::Text(a)), Some(Frame::Text(b))) = (
            rx_fast.recv().await.map(|o| o.frame),
            rx_other.recv().await.map(|o| o.frame),
        ) else {
            panic!("expected text frames");
        };
        assert_eq!(
            a.as_str(),
            "{\"type\":1,\"target\":\"t\",\"arguments\":[1]}\u{1e}"
        );
        // Same allocation: encoded once, shared.
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        let mut rx_slow = slow.outbound.lock().await;
        // Closed as a slow consumer: what it had queued is left for the final flush.
        assert!(rx_slow.recv().await.is_none());
        assert!(matches!(
            rx_slow.try_recv().map(|o| o.frame),
            Some(Frame::Binary(_))
        ));
    }

    /// The value of the sample line `series` in Prometheus text.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn deliveries_and_drops_are_counted_by_reason() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            service_metrics::describe();
            let registry = Registry::new(10);
            let ok = Connection::new("ok".into(), "ok".into(), "h".into(), None, 8);
            let slow = Connection::new("slow".into(), "slow".into(), "h".into(), None, 1);
            for c in [&ok, &slow] {
                c.set_protocol_for_test(Protocol::Json);
                registry.insert(Arc::clone(c)).unwrap();
                registry.activate(c);
            }
            let all = Message::broadcast("h", "t", vec![json!(1)]);
            // Both queued; then `slow` is full (dropped, closed); then it is closed.
            deliver(&registry, &all);
            deliver(&registry, &all);
            deliver(&registry, &all);
            // Nobody in that group.
            let nobody = Message {
                to: Recipient::Group("empty".into()),
                ..all.clone()
            };
            deliver(&registry, &nobody);
        });
        let text = handle.render();
        let value =
            |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}: {text}"));
        assert_eq!(
            value("herald_service_messages_total{recipient=\"all\"}"),
            3.0
        );
        assert_eq!(
            value("herald_service_messages_total{recipient=\"group\"}"),
            1.0
        );
        assert_eq!(value("herald_service_deliveries_total"), 4.0);
        assert_eq!(
            value("herald_service_dropped_total{reason=\"slow_consumer\"}"),
            1.0
        );
        assert_eq!(
            value("herald_service_dropped_total{reason=\"closed\"}"),
            1.0
        );
        assert_eq!(
            value("herald_service_dropped_total{reason=\"no_recipient\"}"),
            1.0
        );
        assert_eq!(value("herald_service_slow_consumers_total"), 1.0);
    }
}
