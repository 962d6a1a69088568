//! Exactly-once REST sends: the window of message ids (`x-herald-message-id`, see
//! `crate::signalr::rest::MESSAGE_ID_HEADER`) already fanned out. A send whose id is in the
//! window is answered 202 but not delivered again (`herald_service_dropped_total
//! {reason="duplicate"}`); a send without the header is never deduplicated.
//!
//! The window is bounded in time and count: ids older than `window` are forgotten, and past
//! `capacity` the oldest id goes first. A `HashSet` answers "seen?" and a `VecDeque` of
//! (id, instant) in arrival order gives the eviction order, so each check is O(1)
//! (amortised: every id is evicted at most once).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The ids seen within the window. A std `Mutex`: each check is a few hash operations, no
/// `.await`; owned by the service's shared state.
pub(crate) struct Dedupe {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seen: HashSet<String>,
    order: VecDeque<(String, Instant)>,
}

impl Dedupe {
    /// A window of `window` and at most `capacity` ids; either zero turns it off.
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Dedupe {
            window,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Record `id`; `true` if it was not seen within the window (deliver it).
    pub(crate) fn first_time(&self, id: &str) -> bool {
        self.first_time_at(id, Instant::now())
    }

    fn first_time_at(&self, id: &str, now: Instant) -> bool {
        if self.window.is_zero() || self.capacity == 0 {
            return true;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((old, at)) = inner.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            let old = old.clone();
            inner.seen.remove(&old);
            inner.order.pop_front();
        }
        if inner.seen.contains(id) {
            return false;
        }
        inner.seen.insert(id.to_string());
        inner.order.push_back((id.to_string(), now));
        while inner.order.len() > self.capacity {
            if let Some((old, _)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_dropped() {
        let d = Dedupe::new(Duration::from_secs(60), 10);
        let t = Instant::now();
        assert!(d.first_time_at("a", t));
        assert!(!d.first_time_at("a", t + Duration::from_secs(59)));
        assert!(d.first_time_at("b", t));
        assert!(
            d.first_time_at("a", t + Duration::from_secs(60)),
            "forgotten after the window"
        );
        assert!(!d.first_time_at("a", t + Duration::from_secs(61)));
    }

    #[test]
    fn past_capacity_the_oldest_id_goes_first() {
        let d = Dedupe::new(Duration::from_secs(60), 2);
        let t = Instant::now();
        assert!(d.first_time_at("a", t));
        assert!(d.first_time_at("b", t));
        assert!(d.first_time_at("c", t));
        assert!(!d.first_time_at("b", t));
        assert!(!d.first_time_at("c", t));
        assert!(d.first_time_at("a", t), "a was evicted");
    }

    #[test]
    fn a_zero_window_or_capacity_turns_it_off() {
        for d in [
            Dedupe::new(Duration::ZERO, 10),
            Dedupe::new(Duration::from_secs(1), 0),
        ] {
            assert!(d.first_time("a"));
            assert!(d.first_time("a"));
        }
    }
}
