//! Counters the server exports as metrics, kept where they are cheapest to update.
//!
//! Per-message figures (frames and bytes in and out) are counted on the connection that
//! owns them — only its own task writes them, so there is no shared cache line on the
//! fan-out path — and folded into [`Stats`] when the connection ends. A scrape adds the
//! live connections' counters to the folded totals ([`crate::Hub::snapshot`]).
//!
//! Latency is sampled: one room message in [`LATENCY_SAMPLE_EVERY`] carries its creation
//! instant, and the first recipient to write it records publish→write time. That keeps
//! the histogram meaningful without a record per delivery.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use switchboard_protocol::ErrorCode;

/// One room message in this many carries a latency sample.
pub const LATENCY_SAMPLE_EVERY: u64 = 16;

/// Every error code, in the order of [`Stats::errors`].
pub const ERROR_CODES: [ErrorCode; 9] = [
    ErrorCode::BadRequest,
    ErrorCode::InvalidRoom,
    ErrorCode::RoomFull,
    ErrorCode::NotInRoom,
    ErrorCode::NotFound,
    ErrorCode::Forbidden,
    ErrorCode::Unauthorized,
    ErrorCode::RateLimited,
    ErrorCode::Internal,
];

/// Frames and bytes in one direction.
#[derive(Debug, Default)]
pub struct Traffic {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
}

impl Traffic {
    /// Counts `frames` frames of `bytes` bytes in total.
    pub fn add(&self, frames: u64, bytes: u64) {
        self.frames.fetch_add(frames, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// (frames, bytes).
    pub fn get(&self) -> (u64, u64) {
        (
            self.frames.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Where latency samples go; the server plugs in a metrics histogram.
pub trait LatencySink: Send + Sync + 'static {
    /// Records one duration, in seconds.
    fn record(&self, seconds: f64);
}

/// Hub-wide counters.
pub struct Stats {
    /// Traffic of connections that have ended.
    pub ended_in: Traffic,
    pub ended_out: Traffic,
    /// Room messages published.
    pub published: AtomicU64,
    /// Errors sent, by code (indexed as [`ERROR_CODES`]).
    pub errors: [AtomicU64; 9],
    /// Connections ended, by close code (0 = no close frame).
    pub closes: Mutex<BTreeMap<u16, u64>>,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Slow-consumer drops of connections that have ended.
    pub ended_drops: AtomicU64,
    pub(crate) delivery: parking_lot::RwLock<Option<Box<dyn LatencySink>>>,
    pub(crate) store: parking_lot::RwLock<Option<Box<dyn LatencySink>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ended_in: Traffic::default(),
            ended_out: Traffic::default(),
            published: AtomicU64::new(0),
            errors: Default::default(),
            closes: Mutex::new(BTreeMap::new()),
            accepted: AtomicU64::new(0),
            ended_drops: AtomicU64::new(0),
            delivery: parking_lot::RwLock::new(None),
            store: parking_lot::RwLock::new(None),
        }
    }
}

impl Stats {
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ERROR_CODES.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn closed(&self, code: Option<u16>) {
        *self.closes.lock().entry(code.unwrap_or(0)).or_default() += 1;
    }

    pub(crate) fn record_delivery(&self, seconds: f64) {
        if let Some(sink) = self.delivery.read().as_ref() {
            sink.record(seconds);
        }
    }

    pub(crate) fn record_store(&self, seconds: f64) {
        if let Some(sink) = self.store.read().as_ref() {
            sink.record(seconds);
        }
    }
}

/// A point-in-time view of the hub for a metrics scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Open connections per endpoint path.
    pub connections: BTreeMap<String, u64>,
    pub rooms: u64,
    /// Room memberships (a connection in 3 rooms counts 3).
    pub members: u64,
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub published: u64,
    pub accepted: u64,
    /// (wire code, count).
    pub errors: Vec<(&'static str, u64)>,
    /// (close code, count); 0 = ended without a close frame.
    pub closes: Vec<(u16, u64)>,
    /// Messages dropped or conflated away by slow-consumer policies.
    pub slow_consumer_drops: u64,
    /// Messages waiting in outbound queues.
    pub queued: u64,
}
