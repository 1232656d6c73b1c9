//! Idle scenario: what one connected, joined, silent client costs the server in memory.
//!
//! A hub's capacity for phones, dashboards and devices that mostly sit connected is
//! bounded by memory per connection, not by CPU, so this scenario opens N connections,
//! joins each to a room, lets the server settle and reads the server's resident memory
//! (`VmRSS`) before the first connection and after the last. The difference divided by
//! N is the figure: it includes the socket, the WebSocket state and buffers, the
//! connection's tasks and queue, and its room membership.
//!
//! Every connection keeps reading (and discarding) what it is sent, so the server's
//! pings are answered and presence events do not pile up in its queues. With all N
//! connections in one room each join is announced to every member already there —
//! N²/2 `presence_join` events — so `--rooms M` spreads the connections over M rooms
//! (`R-0` … `R-{M-1}`); `compare` uses rooms of about 100 members.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::StreamExt;

use crate::conn::{self, ConnectOpts, Handshake, Target, Ws};
use crate::procfs::Proc;
use crate::report::Report;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of a protocol endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Room every connection joins (or the prefix of the rooms, with --rooms).
    #[arg(long, default_value = "bench-idle")]
    pub room: String,
    /// Spread connections over this many rooms (1 = all in --room).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Server process whose VmRSS is measured; without it only the client side is reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds to wait after the last connection before reading the server's memory.
    #[arg(long, default_value_t = 2)]
    pub hold_secs: u64,
    #[command(flatten)]
    pub connect: ConnectOpts,
}

/// Keeps a connection open, reading and discarding every frame until it closes, then
/// counts it in `closed`.
async fn drain(mut ws: Ws, closed: Arc<AtomicUsize>) {
    while let Some(Ok(_)) = ws.next().await {}
    closed.fetch_add(1, Ordering::Relaxed);
}

pub async fn run(args: &Args) -> Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let server = args.server_pid.map(Proc::Pid);
    let server_before = server.map(|p| p.rss_kib()).transpose()?;
    let bench_before = Proc::Myself.rss_kib()?;

    let target = Arc::new(Target::resolve(&args.url, args.connect.source_addrs).await?);
    let handshake = Handshake::Join {
        base: args.room.clone(),
        rooms: args.rooms,
    };
    let closed = Arc::new(AtomicUsize::new(0));
    let closed_by_task = Arc::clone(&closed);
    let opened = conn::open_all(
        target,
        &args.connect,
        &handshake,
        0,
        args.connections,
        move |_index, ws| drain(ws, Arc::clone(&closed_by_task)),
    )
    .await?;
    if let Some(e) = &opened.first_error {
        eprintln!("first connection error: {e}");
    }
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;

    let server_after = server.map(|p| p.rss_kib()).transpose()?;
    let bench_after = Proc::Myself.rss_kib()?;
    let still_open = opened.ok.saturating_sub(closed.load(Ordering::Relaxed));

    let per_conn =
        |before: u64, after: u64| (after as f64 - before as f64) / opened.ok.max(1) as f64;
    let mut report = Report::new("idle", &args.url);
    report
        .push(
            "connections",
            "connections opened",
            "conns",
            opened.ok as f64,
        )
        .push(
            "failed",
            "connections failed",
            "conns",
            opened.failed as f64,
        )
        .push(
            "still_open",
            "still open at the end",
            "conns",
            still_open as f64,
        )
        .push(
            "open_rate",
            "connections opened per second",
            "conn/s",
            opened.rate(),
        );
    if let (Some(before), Some(after)) = (server_before, server_after) {
        report
            .push(
                "server_rss_before_kib",
                "server RSS before",
                "KiB",
                before as f64,
            )
            .push(
                "server_rss_after_kib",
                "server RSS after",
                "KiB",
                after as f64,
            )
            .push(
                "server_kib_per_conn",
                "server RSS per connection",
                "KiB",
                per_conn(before, after),
            );
    }
    report.push(
        "bench_kib_per_conn",
        "bench RSS per connection",
        "KiB",
        per_conn(bench_before, bench_after),
    );
    // Dropping `opened` aborts the drain tasks and closes every connection.
    drop(opened);
    Ok(report)
}
