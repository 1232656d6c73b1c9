//! Reconnect delays: exponential backoff with full jitter.
//!
//! The delay before retry `n` (0, 1, 2, …) is drawn uniformly from
//! `[0, min(max_delay, retry_delay · 2ⁿ))`. Full jitter (rather than a fixed or
//! "equal jitter" schedule) is what spreads a thousand clients dropped by the same outage
//! over the whole window instead of bringing them back in waves.

use std::time::Duration;

/// The upper bound of the delay before retry `attempt`: `min(max_delay, retry_delay · 2^attempt)`.
pub fn backoff_ceiling(attempt: u32, retry_delay: Duration, max_delay: Duration) -> Duration {
    // 2^attempt overflows quickly; past 2^20 the cap has long won for any sane base.
    let factor = 1u32 << attempt.min(20);
    retry_delay.saturating_mul(factor).min(max_delay)
}

/// A random delay in `[0, backoff_ceiling(attempt, …))`.
pub fn backoff_delay(attempt: u32, retry_delay: Duration, max_delay: Duration) -> Duration {
    let ceiling = backoff_ceiling(attempt, retry_delay, max_delay);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..ms))
}

/// Reads a `Retry-After` header value given in seconds (the form the server uses). HTTP
/// dates are not accepted: the caller falls back to its own backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_millis(5_000);

    #[test]
    fn the_ceiling_doubles_until_the_cap() {
        let c: Vec<u128> = (0..8)
            .map(|n| backoff_ceiling(n, BASE, CAP).as_millis())
            .collect();
        assert_eq!(c, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff_ceiling(u32::MAX, BASE, CAP), CAP);
    }

    #[test]
    fn delays_stay_within_bounds_and_use_the_whole_window() {
        for attempt in 0..10 {
            let ceiling = backoff_ceiling(attempt, BASE, CAP);
            let delays: Vec<Duration> = (0..500)
                .map(|_| backoff_delay(attempt, BASE, CAP))
                .collect();
            assert!(delays.iter().all(|d| *d < ceiling), "attempt {attempt}");
            // Full jitter: both halves of the window are used.
            assert!(delays.iter().any(|d| *d < ceiling / 2));
            assert!(delays.iter().any(|d| *d >= ceiling / 2));
        }
        assert_eq!(backoff_delay(3, Duration::ZERO, CAP), Duration::ZERO);
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
