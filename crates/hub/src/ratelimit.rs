//! Token buckets, and the per-connection message limit built on them.
//!
//! [`TokenBucket`] is the one primitive: `burst` tokens, refilled continuously at `rate`
//! per second. [`MessageLimiter`] applies an endpoint's [`MessageLimit`] to one
//! connection. It lives inside that connection's driver task, so it needs no lock and a
//! flooding connection only ever slows itself down. [`address_key`] groups client
//! addresses the way every per-address limit of the server does.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A token bucket: at most `burst` tokens, refilled at `rate` tokens per second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens.
    pub fn full(burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one (after refilling for the time passed).
    pub fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Adds what `rate` earned since the last call, up to `burst`.
    pub fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let gained = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + gained).min(burst);
        self.last = now;
    }

    /// Tokens available now (as of the last refill).
    pub fn tokens(&self) -> f64 {
        self.tokens
    }

    /// How long until one token is available at `rate` (zero when one is).
    pub fn wait_for_one(&self, rate: f64) -> Duration {
        if self.tokens >= 1.0 || rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }
}

/// An endpoint's limit on the data frames one connection may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageLimit {
    /// Sustained frames per second; `0` turns the limit off.
    pub per_second: u32,
    /// Frames that may be sent at once above the sustained rate.
    pub burst: u32,
    /// Frames over the limit a connection may send before it is closed with 4029. This
    /// allowance itself comes back at one per second, so a client that overshoots now
    /// and then only gets `RATE_LIMITED` errors, while one that keeps flooding is closed.
    pub max_violations: u32,
}

impl Default for MessageLimit {
    fn default() -> Self {
        MessageLimit {
            per_second: 0,
            burst: 100,
            max_violations: 50,
        }
    }
}

impl MessageLimit {
    /// True when the limit is on.
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0
    }
}

/// The verdict on one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: handle it.
    Allow,
    /// Over the limit: drop it and tell the client (`RATE_LIMITED`).
    Reject,
    /// Over the limit for too long: close the connection with 4029.
    Close,
}

/// One connection's message limiter (owned by its driver task).
#[derive(Debug)]
pub struct MessageLimiter {
    limit: MessageLimit,
    frames: TokenBucket,
    violations: TokenBucket,
}

impl MessageLimiter {
    /// A limiter with full buckets.
    pub fn new(limit: MessageLimit) -> Self {
        MessageLimiter {
            limit,
            frames: TokenBucket::full(f64::from(limit.burst.max(1))),
            violations: TokenBucket::full(f64::from(limit.max_violations)),
        }
    }

    /// Counts one incoming data frame.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if !self.limit.is_enabled() {
            return Verdict::Allow;
        }
        let burst = f64::from(self.limit.burst.max(1));
        if self
            .frames
            .take(f64::from(self.limit.per_second), burst, now)
        {
            return Verdict::Allow;
        }
        if self
            .violations
            .take(1.0, f64::from(self.limit.max_violations), now)
        {
            Verdict::Reject
        } else {
            Verdict::Close
        }
    }
}

/// The key under which per-address limits count a client: IPv4 addresses as they are
/// (IPv4-mapped IPv6 too), IPv6 addresses by their /64 prefix — one host usually owns a
/// whole /64, so counting single IPv6 addresses would let it take 2⁶⁴ fresh allowances.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(3.0);
        assert!(b.take(10.0, 3.0, t0));
        assert!(b.take(10.0, 3.0, t0));
        assert!(b.take(10.0, 3.0, t0));
        assert!(!b.take(10.0, 3.0, t0));
        assert_eq!(b.wait_for_one(10.0), Duration::from_millis(100));
        assert!(b.take(10.0, 3.0, t0 + Duration::from_millis(100)));
        assert!(!b.take(10.0, 3.0, t0 + Duration::from_millis(100)));
        // Refills never exceed the burst.
        b.refill(10.0, 3.0, t0 + Duration::from_secs(60));
        assert_eq!(b.tokens(), 3.0);
    }

    #[test]
    fn limiter_rejects_then_closes_a_persistent_flood() {
        let limit = MessageLimit {
            per_second: 10,
            burst: 5,
            max_violations: 3,
        };
        let mut l = MessageLimiter::new(limit);
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..10).map(|_| l.check(t0)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..8], &[Verdict::Reject; 3]);
        assert_eq!(verdicts[8], Verdict::Close);
    }

    #[test]
    fn limiter_forgives_occasional_overshoots() {
        let limit = MessageLimit {
            per_second: 1,
            burst: 1,
            max_violations: 2,
        };
        let mut l = MessageLimiter::new(limit);
        let t0 = Instant::now();
        for s in 0..20 {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(l.check(now), Verdict::Allow);
            assert_eq!(l.check(now), Verdict::Reject, "second {s}");
        }
    }

    #[test]
    fn disabled_limit_allows_everything() {
        let mut l = MessageLimiter::new(MessageLimit::default());
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.check(t0) == Verdict::Allow));
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
