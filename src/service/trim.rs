//! Giving freed heap back to the operating system after a burst of connects or
//! disconnects.
//!
//! A thousand clients connecting at once leave behind the buffers of their negotiate and
//! upgrade requests: freed, but scattered between the connections that stay, so glibc's
//! allocator keeps those pages and the process's RSS stays at the burst's high-water mark
//! (about 1 KiB per connection of a 2,000-client burst). Once the connection count has
//! moved by at least [`BURST`] and then held still for half a second, `malloc_trim` returns
//! the free pages. It runs on the blocking pool, once per burst, never on a quiet or a
//! steadily changing server. Other allocators and platforms: nothing to do.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;

/// How often the connection count is looked at.
const EVERY: Duration = Duration::from_millis(500);
/// Connections opened or closed since the last trim that make a burst.
const BURST: usize = 256;
/// Movement within one look that still counts as settled.
const SETTLED: usize = 32;

/// Whether a trim is due: the count moved by `BURST` since the last trim (`trimmed_at`)
/// and by less than `SETTLED` since the last look (`last`).
fn due(trimmed_at: usize, last: usize, now: usize) -> bool {
    now.abs_diff(trimmed_at) >= BURST && now.abs_diff(last) < SETTLED
}

/// Watch the connection count until shutdown; trim after each burst.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trimmed_at = shared.registry.connection_count();
    let mut last = trimmed_at;
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = shared.registry.connection_count();
        if due(trimmed_at, last, now) {
            trimmed_at = now;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
        last = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: `malloc_trim` takes no pointers and only walks glibc's own free lists, under
    // the allocator's locks; it is safe to call from any thread at any time.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "returned free heap pages after a connection burst"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_burst_once_it_settles() {
        // Still connecting: not yet.
        assert!(!due(0, 500, 1000));
        // Settled after a burst of connects, or of disconnects.
        assert!(due(0, 1000, 1010));
        assert!(due(2000, 990, 1000));
        // Small movements never trim.
        assert!(!due(1000, 1100, 1100));
        // Once trimmed at 1010, the same level is no burst.
        assert!(!due(1010, 1010, 1010));
    }
}
