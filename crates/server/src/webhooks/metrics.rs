//! Webhook metrics, exported on `/metrics` with the server's other figures:
//!
//! - `switchboard_webhook_calls_total{hook, outcome}`: every HTTP request; `hook` is
//!   `connect`, `join`, `publish`, `direct`, `close` or `lifecycle`; `outcome` is
//!   `allow`, `rewrite`, `reject` (synchronous hooks), `delivered` (lifecycle), or
//!   `failed` / `timeout` (either).
//! - `switchboard_webhook_latency_seconds{hook}`: time from sending to a full answer.
//! - `switchboard_webhook_lifecycle_events_total{outcome}`: `delivered`, `retried` (one
//!   per retry), `given_up` (attempts exhausted or refused for good), `dropped` (queue
//!   full, or still queued at shutdown).
//! - `switchboard_webhook_lifecycle_queue`: lifecycle events waiting or in flight.
//!
//! Handles are created once, inside the server's registry ([`crate::metrics::Metrics`]),
//! and recording through them costs an atomic add.

use metrics::{Counter, Gauge, Histogram, Unit};

use super::settings::SyncHook;

/// The `hook` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookLabel {
    Sync(SyncHook),
    Lifecycle,
}

impl HookLabel {
    const COUNT: usize = 6;
    const ALL: [HookLabel; Self::COUNT] = [
        HookLabel::Sync(SyncHook::Connect),
        HookLabel::Sync(SyncHook::Join),
        HookLabel::Sync(SyncHook::Publish),
        HookLabel::Sync(SyncHook::Direct),
        HookLabel::Sync(SyncHook::Close),
        HookLabel::Lifecycle,
    ];

    fn index(self) -> usize {
        match self {
            HookLabel::Sync(h) => h.index(),
            HookLabel::Lifecycle => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookLabel::Sync(h) => h.as_str(),
            HookLabel::Lifecycle => "lifecycle",
        }
    }
}

/// The `outcome` of one HTTP call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Allow,
    Rewrite,
    Reject,
    Delivered,
    Failed,
    Timeout,
}

impl CallOutcome {
    const COUNT: usize = 6;
    const ALL: [CallOutcome; Self::COUNT] = [
        CallOutcome::Allow,
        CallOutcome::Rewrite,
        CallOutcome::Reject,
        CallOutcome::Delivered,
        CallOutcome::Failed,
        CallOutcome::Timeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Allow => "allow",
            CallOutcome::Rewrite => "rewrite",
            CallOutcome::Reject => "reject",
            CallOutcome::Delivered => "delivered",
            CallOutcome::Failed => "failed",
            CallOutcome::Timeout => "timeout",
        }
    }
}

/// What became of a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Delivered,
    Retried,
    GivenUp,
    Dropped,
}

impl EventOutcome {
    const ALL: [EventOutcome; 4] = [
        EventOutcome::Delivered,
        EventOutcome::Retried,
        EventOutcome::GivenUp,
        EventOutcome::Dropped,
    ];

    fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Delivered => "delivered",
            EventOutcome::Retried => "retried",
            EventOutcome::GivenUp => "given_up",
            EventOutcome::Dropped => "dropped",
        }
    }
}

const CALLS: &str = "switchboard_webhook_calls_total";
const LATENCY: &str = "switchboard_webhook_latency_seconds";
const EVENTS: &str = "switchboard_webhook_lifecycle_events_total";
const QUEUE: &str = "switchboard_webhook_lifecycle_queue";

/// Handles for every webhook series.
pub struct WebhookMetrics {
    calls: Vec<Counter>,
    latency: Vec<Histogram>,
    events: Vec<Counter>,
    queue: Gauge,
}

impl WebhookMetrics {
    /// Registers the series with the current recorder (call it inside
    /// [`crate::metrics::Metrics::scope`]); with none, every handle is a no-op.
    pub fn register() -> WebhookMetrics {
        metrics::describe_counter!(CALLS, "Webhook HTTP calls, by hook and outcome.");
        metrics::describe_histogram!(
            LATENCY,
            Unit::Seconds,
            "Webhook call duration, from sending to a full answer."
        );
        metrics::describe_counter!(EVENTS, "What became of lifecycle webhook events.");
        metrics::describe_gauge!(QUEUE, "Lifecycle webhook events waiting or in flight.");
        let mut calls = Vec::with_capacity(HookLabel::COUNT * CallOutcome::COUNT);
        for h in HookLabel::ALL {
            for o in CallOutcome::ALL {
                calls.push(metrics::counter!(CALLS, "hook" => h.as_str(), "outcome" => o.as_str()));
            }
        }
        WebhookMetrics {
            calls,
            latency: HookLabel::ALL
                .iter()
                .map(|h| metrics::histogram!(LATENCY, "hook" => h.as_str()))
                .collect(),
            events: EventOutcome::ALL
                .iter()
                .map(|o| metrics::counter!(EVENTS, "outcome" => o.as_str()))
                .collect(),
            queue: metrics::gauge!(QUEUE),
        }
    }

    pub fn call(&self, hook: HookLabel, outcome: CallOutcome, seconds: f64) {
        let i = hook.index() * CallOutcome::COUNT + outcome as usize;
        if let Some(c) = self.calls.get(i) {
            c.increment(1);
        }
        if let Some(h) = self.latency.get(hook.index()) {
            h.record(seconds);
        }
    }

    pub fn event(&self, outcome: EventOutcome) {
        if let Some(c) = self.events.get(outcome as usize) {
            c.increment(1);
        }
    }

    pub fn queue_depth(&self, depth: usize) {
        self.queue.set(depth as f64);
    }
}

/// Lets a warning through at most once per interval, so that a receiver that is down
/// gives one log line a second rather than one per message.
#[derive(Debug, Default)]
pub struct LogThrottle {
    last_ms: std::sync::atomic::AtomicI64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    const INTERVAL_MS: i64 = 1000;

    /// `Some(n)` when a line may be logged now (`n` lines were held back since the last),
    /// `None` otherwise.
    pub fn ready(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = switchboard_hub::clock::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= Self::INTERVAL_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_throttle_lets_one_line_through_per_interval() {
        let t = LogThrottle::default();
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
    }

    #[test]
    fn every_label_pair_has_its_own_series() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let m = metrics::with_local_recorder(&recorder, WebhookMetrics::register);
        m.call(
            HookLabel::Sync(SyncHook::Publish),
            CallOutcome::Reject,
            0.01,
        );
        m.call(HookLabel::Lifecycle, CallOutcome::Timeout, 0.5);
        m.event(EventOutcome::Dropped);
        let text = handle.render();
        assert!(
            text.contains(r#"switchboard_webhook_calls_total{hook="publish",outcome="reject"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"switchboard_webhook_calls_total{hook="lifecycle",outcome="timeout"} 1"#
            )
        );
        assert!(
            text.contains(r#"switchboard_webhook_lifecycle_events_total{outcome="dropped"} 1"#)
        );
    }
}
