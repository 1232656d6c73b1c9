//! Latency histograms, rates and medians: the arithmetic every scenario reports with.
//!
//! Latencies are recorded in microseconds into an HDR histogram per connection (so the
//! hot path never shares a lock) with 2 significant digits — 1 % precision is plenty
//! for millisecond reports and keeps a histogram at ≈ 10 KiB, which matters with
//! thousands of subscribers. The per-connection histograms are merged at the end.

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::report::Report;

/// Highest latency a histogram tracks, in microseconds; larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// A per-connection latency histogram (microseconds).
pub type LatencyHist = Histogram<u32>;

/// The merged latency histogram of a whole run (microseconds).
pub type MergedHist = Histogram<u64>;

/// A new per-connection latency histogram.
pub fn latency_hist() -> Result<LatencyHist> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).context("cannot create a histogram")
}

/// A new merged latency histogram with the same bounds.
pub fn merged_hist() -> Result<MergedHist> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).context("cannot create a histogram")
}

/// Records one latency, clamped to the histogram's range.
pub fn record(hist: &mut LatencyHist, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Adds every value of a per-connection histogram into the merged one.
pub fn merge(into: &mut MergedHist, from: &LatencyHist) {
    for bucket in from.iter_recorded() {
        into.saturating_record_n(
            bucket.value_iterated_to(),
            u64::from(bucket.count_at_value()),
        );
    }
}

/// The latency figures every scenario reports, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(hist: &MergedHist) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if hist.is_empty() {
            return Self {
                p50_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        Self {
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
        }
    }

    /// Adds the four figures to a report under `prefix` (e.g. "latency").
    pub fn add_to(&self, report: &mut Report, prefix: &str, what: &str) {
        report.push(
            &format!("{prefix}_p50_ms"),
            &format!("{what} p50"),
            "ms",
            self.p50_ms,
        );
        report.push(
            &format!("{prefix}_p99_ms"),
            &format!("{what} p99"),
            "ms",
            self.p99_ms,
        );
        report.push(
            &format!("{prefix}_p999_ms"),
            &format!("{what} p99.9"),
            "ms",
            self.p999_ms,
        );
        report.push(
            &format!("{prefix}_max_ms"),
            &format!("{what} max"),
            "ms",
            self.max_ms,
        );
    }
}

/// `count` events over `elapsed`, per second (0 when nothing elapsed).
pub fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// The median of `values` (mean of the middle two for an even count); NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(mid).copied()
    } else {
        Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn merged_percentiles_follow_the_recorded_values() -> Result<()> {
        // Two connections: one saw 1..=90 ms, the other 91..=100 ms.
        let mut a = latency_hist()?;
        let mut b = latency_hist()?;
        for ms in 1..=90u64 {
            record(&mut a, Duration::from_millis(ms));
        }
        for ms in 91..=100u64 {
            record(&mut b, Duration::from_millis(ms));
        }
        let mut all = merged_hist()?;
        merge(&mut all, &a);
        merge(&mut all, &b);
        assert_eq!(all.len(), 100);
        let s = LatencySummary::of(&all);
        // 2 significant digits: within 1 % of the exact value.
        assert!((s.p50_ms - 50.0).abs() <= 0.5, "p50 {}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() <= 1.0, "p99 {}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() <= 1.0, "max {}", s.max_ms);
        Ok(())
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() -> Result<()> {
        let mut h = latency_hist()?;
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(3600));
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
        Ok(())
    }

    #[test]
    fn rate_of_zero_duration_is_zero() {
        assert_eq!(per_sec(10, Duration::ZERO), 0.0);
        assert_eq!(per_sec(10, Duration::from_millis(500)), 20.0);
    }
}
