//! Per-route rate limits (GCRA via `governor`), shared by all callers of a route. A limiter is
//! kept per route name and budget, so a reload that leaves a route's budget alone keeps its
//! state, and a changed budget starts fresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::RateLimit;

/// The limiters of all routes. A std `Mutex` around the map: held only to look up or insert,
/// never across an await; the limiters themselves are lock-free.
#[derive(Default)]
pub struct RateLimiters {
    by_route: Mutex<HashMap<(String, RateLimit), Arc<DefaultDirectRateLimiter>>>,
}

impl RateLimiters {
    /// `Ok(())` when `route` may take one more request, else how long to wait.
    pub fn check(&self, route: &str, limit: &RateLimit) -> Result<(), Duration> {
        let limiter = {
            let Ok(mut map) = self.by_route.lock() else {
                return Ok(());
            };
            // Drop limiters of other budgets for this route (a reload changed it).
            map.retain(|(name, l), _| name != route || l == limit);
            map.entry((route.to_string(), *limit))
                .or_insert_with(|| {
                    let period = limit.per / limit.requests.get();
                    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                        .map(|q| q.allow_burst(limit.burst))
                        .unwrap_or_else(|| Quota::per_second(limit.requests));
                    Arc::new(DefaultDirectRateLimiter::direct(quota))
                })
                .clone()
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn budget_then_refusal_with_a_wait() {
        let limiters = RateLimiters::default();
        let limit = RateLimit {
            requests: NonZeroU32::new(2).unwrap(),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(2).unwrap(),
        };
        assert!(limiters.check("r", &limit).is_ok());
        assert!(limiters.check("r", &limit).is_ok());
        let wait = limiters.check("r", &limit).unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        // Another route has its own budget; a changed budget starts fresh.
        assert!(limiters.check("other", &limit).is_ok());
        let bigger = RateLimit {
            requests: NonZeroU32::new(5).unwrap(),
            ..limit
        };
        assert!(limiters.check("r", &bigger).is_ok());
    }
}
