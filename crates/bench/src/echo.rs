//! Echo scenario: round trips through an echo endpoint — the cost of the WebSocket
//! stack itself, without rooms or JSON envelopes on the server side.
//!
//! C connections each send a text frame, wait for the same frame to come back, and
//! repeat until the time is up (a closed loop: as fast as the server answers). The
//! figures are round trips per second over all connections and the round-trip latency.
//! Because there is no fan-out, this isolates per-frame read, write and wake-up costs;
//! comparing it with the baseline server separates the stack's overhead from the hub's.
//! The client skips any frame that is not its own payload (e.g. a `welcome`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{self, ConnectOpts, Handshake, Target, Ws};
use crate::procfs::CpuWindow;
use crate::report::Report;
use crate::stats::{self, LatencyHist, LatencySummary};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of an echo endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections, each with one frame in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Size of each frame in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Server process to measure (CPU time).
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectOpts,
}

/// Longest wait for one echo.
const REPLY_LIMIT: Duration = Duration::from_secs(5);
/// Most unrelated frames skipped while waiting for one echo.
const MAX_SKIPPED: usize = 1000;

/// What one connection measured.
struct EchoStats {
    hist: LatencyHist,
    round_trips: u64,
    error: Option<String>,
}

/// A payload of exactly `bytes` bytes (at least the unique prefix) for round trip `n`.
fn payload(index: usize, n: u64, bytes: usize) -> String {
    let mut text = format!("{index}:{n}:");
    let pad = bytes.saturating_sub(text.len());
    text.extend(std::iter::repeat_n('x', pad));
    text
}

/// Sends `text` and waits for the same text to come back.
async fn round_trip(ws: &mut Ws, text: Utf8Bytes) -> Result<()> {
    tokio::time::timeout(REPLY_LIMIT, async {
        ws.send(Message::Text(text.clone()))
            .await
            .context("send failed")?;
        for _ in 0..MAX_SKIPPED {
            match ws.next().await {
                Some(Ok(Message::Text(back))) if back == text => return Ok(()),
                Some(Ok(Message::Close(close))) => bail!("closed by the server: {close:?}"),
                Some(Err(e)) => return Err(anyhow!(e).context("read failed")),
                None => bail!("connection closed"),
                Some(Ok(_)) => {}
            }
        }
        bail!("{MAX_SKIPPED} frames without our echo")
    })
    .await
    .map_err(|_| anyhow!("no echo within {REPLY_LIMIT:?}"))?
}

/// One connection's loop: waits for the shared start, then round trips until the stop time.
async fn echo_loop(
    index: usize,
    mut ws: Ws,
    mut stop_at: watch::Receiver<Option<tokio::time::Instant>>,
    payload_bytes: usize,
) -> Result<EchoStats> {
    let mut stats = EchoStats {
        hist: stats::latency_hist()?,
        round_trips: 0,
        error: None,
    };
    let Ok(stop) = stop_at.wait_for(Option::is_some).await.map(|s| *s) else {
        return Ok(stats);
    };
    let Some(stop) = stop else {
        return Ok(stats);
    };
    while tokio::time::Instant::now() < stop {
        let text = Utf8Bytes::from(payload(index, stats.round_trips, payload_bytes));
        let sent = Instant::now();
        if let Err(e) = round_trip(&mut ws, text).await {
            stats.error = Some(format!("{e:#}"));
            break;
        }
        stats::record(&mut stats.hist, sent.elapsed());
        stats.round_trips += 1;
    }
    // Best effort: the server may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(stats)
}

pub async fn run(args: &Args) -> Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs.is_finite()) {
        bail!("--duration-secs must be a positive number");
    }
    let target = Arc::new(Target::resolve(&args.url, args.connect.source_addrs).await?);
    let (stop_tx, stop_rx) = watch::channel(None);
    let payload_bytes = args.payload_bytes;
    let opened = conn::open_all(
        target,
        &args.connect,
        &Handshake::None,
        0,
        args.connections,
        move |index, ws| echo_loop(index, ws, stop_rx.clone(), payload_bytes),
    )
    .await?;

    let duration = Duration::from_secs_f64(args.duration_secs);
    let cpu = CpuWindow::start(args.server_pid)?;
    let started = Instant::now();
    let stop = tokio::time::Instant::now() + duration;
    let _ = stop_tx.send(Some(stop));
    eprintln!(
        "echoing on {} connections for {:.1}s",
        opened.ok, args.duration_secs
    );
    // Every loop stops at `stop`, after its last round trip in flight.
    let results = conn::collect(opened.tasks, stop + REPLY_LIMIT + Duration::from_secs(2)).await;
    let elapsed = started.elapsed();
    let usage = cpu.finish()?;

    let mut merged = stats::merged_hist()?;
    let (mut round_trips, mut errors) = (0u64, 0u64);
    let mut first_error = None;
    for result in results {
        let conn = result?;
        stats::merge(&mut merged, &conn.hist);
        round_trips += conn.round_trips;
        if let Some(e) = conn.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        eprintln!("first echo error: {e}");
    }

    let mut report = Report::new("echo", &args.url);
    report
        .push("connections", "connections", "conns", opened.ok as f64)
        .push(
            "errors",
            "connections that failed",
            "conns",
            (errors + opened.failed as u64) as f64,
        )
        .push("round_trips", "round trips", "rt", round_trips as f64)
        .push(
            "round_trips_per_sec",
            "round trips/s",
            "rt/s",
            stats::per_sec(round_trips, elapsed),
        );
    LatencySummary::of(&merged).add_to(&mut report, "rtt", "round trip");
    usage.add_to(
        &mut report,
        round_trips,
        "round_trips_per_server_cpu_s",
        "round trips per server CPU-second",
        "rt/cpu-s",
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_are_unique() {
        let a = payload(3, 7, 64);
        let b = payload(3, 8, 64);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.starts_with("3:7:"));
        // Smaller than the prefix: the prefix alone.
        assert_eq!(payload(12, 345, 2), "12:345:");
    }
}
