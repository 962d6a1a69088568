//! Fan-out: recipient → connections → encode once per protocol → `try_send` into each
//! connection's bounded queue.
//!
//! Slow-consumer policy: fan-out never waits on a client. A connection whose queue is full
//! is closed (log line + `herald_service_slow_consumers_total`); the others are unaffected.
//! The encoded frame is one `Bytes` shared by every connection of the same protocol. Every
//! queue is filled first, then the transports are woken a chunk at a time (`wake`), so the
//! rest of the runtime (a 202, a new request) gets in between chunks instead of waiting
//! behind a whole broadcast.
//!
//! Counted here: every message (`herald_service_messages_total{recipient}`), every frame
//! queued (`herald_service_deliveries_total`) and every one not
//! (`herald_service_dropped_total{reason}`); see `metrics.rs`.

use std::sync::Arc;
use std::task::Waker;

use crate::message::Message;
use crate::signalr::protocol::{HubMessage, Protocol};

use super::connection::{Frame, Outgoing, Push, encode_frame};
use super::metrics::{self as service_metrics, DropReason};
use super::registry::Registry;

/// How many recipients ahead fan-out asks for a connection's memory.
const PREFETCH_AHEAD: usize = 8;

/// Most transports fan-out wakes before it lets the runtime run something else (see `wake`).
const WAKE_CHUNK: usize = 64;

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
    let mut wakes = Vec::with_capacity(targets.len());
    for (i, connection) in targets.iter().enumerate() {
        // A recipient's memory is rarely in cache: ask for the next ones' while this one is
        // served (the connection first, then its queue once the connection has arrived).
        if let Some(ahead) = targets.get(i + PREFETCH_AHEAD) {
            prefetch(Arc::as_ptr(ahead));
        }
        if let Some(near) = targets.get(i + PREFETCH_AHEAD / 2) {
            near.prefetch_queue();
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
        let (push, waker) = connection.try_push_quiet(Outgoing::tracked(frame.clone()), now);
        wakes.extend(waker);
        match push {
            Push::Queued => report.queued += 1,
            Push::SlowConsumer => {
                report.slow_consumers += 1;
                service_metrics::dropped(DropReason::SlowConsumer);
            }
            Push::Closed => service_metrics::dropped(DropReason::Closed),
        }
    }
    metrics::counter!(service_metrics::DELIVERIES).increment(report.queued as u64);
    wake(wakes);
    report
}

/// Wake the transports a send queued for: the first [`WAKE_CHUNK`] now, the rest from a task
/// that yields to the runtime between chunks (all at once outside a runtime).
///
/// Everything is queued before anyone is woken, so order and closing are as if each push had
/// woken its transport. Waking a broadcast's 2,000 transports at once would overflow the
/// worker's local run queue (256 tasks) into the shared one, and whatever is woken from
/// outside the runtime meanwhile (a 202 the store's syncer answers, a request the I/O driver
/// reports) would wait there behind the rest of the broadcast; in chunks, it gets in between.
fn wake(wakes: Vec<Waker>) {
    let mut wakes = wakes.into_iter();
    wake_some(&mut wakes, WAKE_CHUNK);
    if wakes.len() == 0 {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                while wakes.len() > 0 {
                    tokio::task::yield_now().await;
                    wake_some(&mut wakes, WAKE_CHUNK);
                }
            });
        }
        Err(_) => wake_some(&mut wakes, usize::MAX),
    }
}

/// Wake the next `n` of `wakes`, asking for the task memory of those a few ahead (a woken
/// task's state is rarely in cache).
fn wake_some(wakes: &mut std::vec::IntoIter<Waker>, n: usize) {
    for _ in 0..n {
        if let Some(ahead) = wakes.as_slice().get(PREFETCH_AHEAD / 2) {
            prefetch(ahead.data());
        }
        let Some(waker) = wakes.next() else {
            return;
        };
        waker.wake();
    }
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

    /// A waker that counts its wakes in `woken`.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn counting(n: usize) -> (Arc<Counting>, Vec<Waker>) {
        let woken = Arc::new(Counting(0.into()));
        let wakers = (0..n).map(|_| Waker::from(woken.clone())).collect();
        (woken, wakers)
    }

    fn woken(c: &Counting) -> usize {
        c.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn wakes_a_chunk_at_a_time_letting_the_runtime_in_between() {
        let n = WAKE_CHUNK * 3 + 5;
        let (count, wakers) = counting(n);
        wake(wakers);
        assert_eq!(
            woken(&count),
            WAKE_CHUNK,
            "one chunk before the send returns"
        );
        // Each yield of this task lets the waking task run one more chunk.
        let mut seen = vec![woken(&count)];
        while woken(&count) < n && seen.len() < 100 {
            tokio::task::yield_now().await;
            seen.push(woken(&count));
        }
        assert_eq!(woken(&count), n, "every waker woken, once: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1] - w[0] <= WAKE_CHUNK),
            "never more than a chunk between two turns of another task: {seen:?}"
        );

        // A few are woken at once, with no task.
        let (count, wakers) = counting(WAKE_CHUNK);
        wake(wakers);
        assert_eq!(woken(&count), WAKE_CHUNK);
    }

    #[test]
    fn outside_a_runtime_wakes_everyone_at_once() {
        let (count, wakers) = counting(WAKE_CHUNK * 2 + 1);
        wake(wakers);
        assert_eq!(woken(&count), WAKE_CHUNK * 2 + 1);
    }

    #[tokio::test]
    async fn a_broadcast_to_more_than_a_chunk_reaches_every_waiting_transport() {
        let registry = Registry::new(1000);
        let n = WAKE_CHUNK * 4 + 3;
        let mut waiting = Vec::new();
        for i in 0..n {
            let c = Connection::new(i.to_string(), i.to_string(), "h".into(), None, 4);
            c.set_protocol_for_test(Protocol::Json);
            registry.insert(Arc::clone(&c)).unwrap();
            registry.activate(&c);
            let transport = Arc::clone(&c);
            waiting.push(tokio::spawn(async move {
                let mut rx = transport.outbound.lock().await;
                rx.recv().await.map(|o| o.frame.as_bytes().to_vec())
            }));
        }
        // Every transport is waiting in `recv` before the send.
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let report = deliver(&registry, &Message::broadcast("h", "t", vec![json!(1)]));
        assert_eq!(report.queued, n);
        for transport in waiting {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), transport)
                .await
                .expect("woken")
                .expect("task");
            assert_eq!(
                got.as_deref(),
                Some(&b"{\"type\":1,\"target\":\"t\",\"arguments\":[1]}\x1e"[..])
            );
        }
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
