//! When a REST call is tried again and how long to wait first: connection errors, timeouts,
//! 429 and 5xx are retried; the wait is the service's `Retry-After` (delta-seconds or
//! HTTP-date, capped at `max_backoff`) or else an exponential backoff with full jitter.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Whether an answer with `status` is worth another try.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Connection failures and timeouts are worth another try; so is a connection dropped
/// under the request (reset, broken pipe, early EOF). Anything else (a bad URL, a body
/// error) would fail again.
pub(crate) fn is_retryable_transport(e: &reqwest::Error) -> bool {
    if e.is_connect() || e.is_timeout() {
        return true;
    }
    let mut cause = e.source();
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset
                    | ConnectionAborted
                    | ConnectionRefused
                    | BrokenPipe
                    | UnexpectedEof
            ) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

/// The wait before retry number `attempt` (1-based) after an answer with `headers`: the
/// answer's `Retry-After` capped at `max_backoff`, else [`backoff`].
pub(crate) fn delay_after_answer(
    headers: &HeaderMap,
    attempt: u32,
    base_backoff: Duration,
    max_backoff: Duration,
) -> Duration {
    retry_after(headers, SystemTime::now())
        .map(|d| d.min(max_backoff))
        .unwrap_or_else(|| backoff(attempt, base_backoff, max_backoff))
}

/// Full jitter: uniform in `[0, min(max_backoff, base_backoff * 2^(attempt-1))]`, so
/// that many senders hit by the same outage do not retry in lockstep.
pub(crate) fn backoff(attempt: u32, base_backoff: Duration, max_backoff: Duration) -> Duration {
    let exponential = base_backoff.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    exponential.min(max_backoff).mul_f64(rand::random::<f64>())
}

/// `Retry-After` as a wait from `now`: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, RFC 9110 §10.2.3; a date already past means "now", zero).
/// `None` when absent or unreadable, so the caller falls back to its own backoff. Not capped
/// here: the caller caps it.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(350);
        for _ in 0..200 {
            assert!(backoff(1, base, max) <= Duration::from_millis(100));
            assert!(backoff(2, base, max) <= Duration::from_millis(200));
            assert!(backoff(10, base, max) <= max);
            assert!(backoff(u32::MAX, base, max) <= max);
        }
    }

    #[test]
    fn retry_after_seconds_form() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(&headers("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(retry_after(&headers(" 0 "), now), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("-5"), now), None);
    }

    #[test]
    fn retry_after_http_date_form() {
        // 2015-10-21T07:28:00Z, the RFC's example date.
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let before = at - Duration::from_secs(90);
        assert_eq!(
            retry_after(&headers(date), before),
            Some(Duration::from_secs(90))
        );
        // The obsolete RFC 850 and asctime forms are accepted too (RFC 9110 §5.6.7).
        assert_eq!(
            retry_after(&headers("Wednesday, 21-Oct-15 07:28:00 GMT"), before),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(&headers("Wed Oct 21 07:28:00 2015"), before),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn retry_after_date_in_the_past_means_now() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(
            retry_after(&headers(date), SystemTime::now()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn both_forms_are_capped_at_max_backoff() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        assert_eq!(delay_after_answer(&headers("3600"), 1, base, max), max);
        let far = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400));
        assert_eq!(delay_after_answer(&headers(&far), 1, base, max), max);
        // Unreadable: the jittered backoff instead.
        assert!(delay_after_answer(&headers("later"), 1, base, max) <= base);
    }
}
