//! The server clock, estimated NTP-style from `ping`/`pong` round trips.
//!
//! Each pong gives one sample: `offset = server_time − (sent + received) / 2` and
//! `rtt = received − sent`. The estimate is the median of the last few samples, so a single
//! reply delayed by a busy network or a GC pause does not move it. Until the first pong the
//! offset comes from `welcome.server_time` (good to about one round trip).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The local time of a Unix timestamp in ms.
pub fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A snapshot of the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClockEstimate {
    /// Server clock minus local clock, ms.
    pub offset_ms: f64,
    /// Median round-trip time, ms (0 until the first pong).
    pub rtt_ms: f64,
    /// How many samples the median is taken over.
    pub samples: usize,
}

/// The samples and the current estimate.
#[derive(Debug, Clone)]
pub struct Clock {
    samples: VecDeque<(f64, f64)>,
    keep: usize,
    estimate: ClockEstimate,
}

impl Clock {
    /// A clock keeping the last `keep` samples.
    pub fn new(keep: usize) -> Self {
        Clock {
            samples: VecDeque::with_capacity(keep),
            keep: keep.max(1),
            estimate: ClockEstimate::default(),
        }
    }

    /// A rough first estimate from `welcome.server_time`, used only before any sample.
    pub fn rough(&mut self, server_time: i64, local_now: i64) {
        if self.samples.is_empty() {
            self.estimate.offset_ms = (server_time - local_now) as f64;
        }
    }

    /// Adds one round trip: sent and received on the local clock, `server_time` from the pong.
    pub fn sample(&mut self, sent: i64, received: i64, server_time: i64) {
        if received < sent {
            return; // the local clock jumped back: this sample means nothing
        }
        let offset = server_time as f64 - (sent as f64 + received as f64) / 2.0;
        let rtt = (received - sent) as f64;
        if self.samples.len() == self.keep {
            self.samples.pop_front();
        }
        self.samples.push_back((offset, rtt));
        self.estimate = ClockEstimate {
            offset_ms: median(self.samples.iter().map(|s| s.0)),
            rtt_ms: median(self.samples.iter().map(|s| s.1)),
            samples: self.samples.len(),
        };
    }

    /// The current estimate.
    pub fn estimate(&self) -> ClockEstimate {
        self.estimate
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl ClockEstimate {
    /// The server time (ms since the Unix epoch) at local time `local`.
    pub fn to_server(&self, local: SystemTime) -> i64 {
        unix_ms(local) + self.offset_ms.round() as i64
    }

    /// The local time at which the server clock shows `server_ms` (e.g. a `param`'s `at`).
    pub fn to_local(&self, server_ms: i64) -> SystemTime {
        from_unix_ms(server_ms - self.offset_ms.round() as i64)
    }

    /// How long from now until the server clock shows `server_ms` (zero if it has passed).
    pub fn until(&self, server_ms: i64) -> Duration {
        self.to_local(server_ms)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_and_rtt_are_the_median_of_recent_samples() {
        let mut c = Clock::new(5);
        // Server 1000 ms ahead, 20 ms round trips...
        for i in 0..4 {
            let sent = 10_000 + i * 100;
            c.sample(sent, sent + 20, sent + 10 + 1000);
        }
        // ...and one reply delayed by 400 ms on the way back.
        c.sample(20_000, 20_420, 20_010 + 1000);
        let e = c.estimate();
        assert_eq!(e.offset_ms, 1000.0);
        assert_eq!(e.rtt_ms, 20.0);
        assert_eq!(e.samples, 5);
        // Older samples fall out.
        for i in 0..5 {
            let sent = 30_000 + i * 100;
            c.sample(sent, sent + 40, sent + 20 - 500);
        }
        assert_eq!(c.estimate().offset_ms, -500.0);
        assert_eq!(c.estimate().rtt_ms, 40.0);
    }

    #[test]
    fn the_welcome_gives_a_rough_offset_until_the_first_sample() {
        let mut c = Clock::new(3);
        c.rough(5_000, 4_000);
        assert_eq!(c.estimate().offset_ms, 1000.0);
        c.sample(0, 10, 5 + 200);
        c.rough(9_999_999, 0);
        assert_eq!(c.estimate().offset_ms, 200.0);
    }

    #[test]
    fn times_convert_both_ways() {
        let e = ClockEstimate {
            offset_ms: 2_500.0,
            rtt_ms: 1.0,
            samples: 1,
        };
        let local = from_unix_ms(1_700_000_000_000);
        let server = e.to_server(local);
        assert_eq!(server, 1_700_000_002_500);
        assert_eq!(e.to_local(server), local);
        assert_eq!(from_unix_ms(unix_ms(from_unix_ms(-5))), from_unix_ms(-5));
        assert_eq!(e.until(0), Duration::ZERO);
    }
}
