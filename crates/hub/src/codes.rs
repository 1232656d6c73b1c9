//! Room codes: generation, validation, and the per-address limit on wrong guesses that
//! keeps a 4-digit code from being brute-forced.
//!
//! Each address has a token bucket of wrong guesses ([`CodeGuard`]). While it is empty,
//! every join with a code from that address is refused with `RATE_LIMITED` — even with
//! the right code — so a guesser learns nothing from its attempts.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::Rng;

/// Whether `code` is 4 to 8 ASCII digits.
pub fn is_valid_code(code: &str) -> bool {
    (4..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// A random code of `digits` digits (clamped to 4–8).
pub fn generate_code(digits: usize) -> String {
    let digits = digits.clamp(4, 8);
    let mut rng = rand::rng();
    (0..digits)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-address token buckets for wrong room codes.
#[derive(Debug)]
pub struct CodeGuard {
    burst: f64,
    per_sec: f64,
    buckets: DashMap<IpAddr, Bucket>,
}

impl CodeGuard {
    /// `burst` wrong guesses at once, refilled at one per `refill`.
    pub fn new(burst: u32, refill: Duration) -> Self {
        CodeGuard {
            burst: f64::from(burst.max(1)),
            per_sec: 1.0 / refill.as_secs_f64().max(0.001),
            buckets: DashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.last).as_secs_f64() * self.per_sec;
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            last: now,
        }
    }

    /// True while `addr` has no wrong guesses left.
    pub fn is_limited(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        match self.buckets.get_mut(&addr) {
            Some(mut b) => {
                *b = self.refilled(*b, now);
                b.tokens < 1.0
            }
            None => false,
        }
    }

    /// Spends one wrong guess of `addr`.
    pub fn record_failure(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut b = self.buckets.entry(addr).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        *b = self.refilled(*b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    /// Forgets addresses whose bucket is full again, so the map stays small.
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets
            .retain(|_, b| self.refilled(*b, now).tokens < self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_4_to_8_digits() {
        assert!(is_valid_code("0042"));
        assert!(is_valid_code("12345678"));
        assert!(!is_valid_code("123"));
        assert!(!is_valid_code("123456789"));
        assert!(!is_valid_code("12a4"));
        let c = generate_code(4);
        assert!(is_valid_code(&c) && c.len() == 4);
    }

    #[test]
    fn guard_limits_after_the_burst() {
        let g = CodeGuard::new(3, Duration::from_secs(60));
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..3 {
            assert!(!g.is_limited(ip));
            g.record_failure(ip);
        }
        assert!(g.is_limited(ip));
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(!g.is_limited(other));
    }
}
