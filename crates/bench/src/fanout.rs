//! Fan-out scenario: one publisher, N subscribers in one room — throughput, latency,
//! loss and the server's CPU cost per delivered message.
//!
//! This is the hub's hot path (decode once, encode once, push the same frame into every
//! member's queue, batch the writes). N subscribers join room R; one more connection
//! joins it and publishes at a fixed rate for a fixed time, each message carrying its
//! send time (`t`, nanoseconds since an `Instant` taken at start — the same process
//! reads it back, so no clock sync is involved) and a sequence number (`seq`), padded
//! to `--payload-bytes`. Publishing is paced on absolute deadlines (`start + seq /
//! rate`), so a slow moment is caught up instead of silently lowering the rate.
//!
//! Every subscriber records publish → deliver latency into its own histogram (merged at
//! the end) and checks the sequence: loss = published − received, plus messages that
//! arrived out of order. After the publisher stops, subscribers get a bounded grace
//! period (`--straggler-secs`) for messages still in flight.
//!
//! The server's CPU time over the run gives the per-core figure: delivered messages
//! per server CPU-second. The bench's own CPU time is reported too: if it is close to
//! one full core, the load generator (not the server) was the limit.
//!
//! `--stall K`: K extra subscribers join first and then never read their socket again
//! (the TCP connection stays open, with a small receive buffer so the stall reaches
//! the server quickly instead of filling megabytes of loopback socket buffers). A hub must cut them off (or drop for them) without
//! growing its memory or slowing everyone else: the report shows whether the active
//! subscribers still got everything, the server's peak RSS, and how many stalled
//! connections the server closed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, ConnectOpts, Handshake, Target, Ws};
use crate::procfs::{CpuUsage, CpuWindow, Proc, RssSampler};
use crate::report::Report;
use crate::stats::{self, LatencyHist, LatencySummary, MergedHist};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of a protocol endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Subscribers that read and measure.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Size of each message's `data` object in bytes (padded with a `pad` string).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Room to use.
    #[arg(long, default_value = "bench-fanout")]
    pub room: String,
    /// Extra subscribers that stop reading entirely (slow-consumer test).
    #[arg(long, default_value_t = 0)]
    pub stall: usize,
    /// Server process to measure (CPU time, peak RSS).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Pause between the last join and the first publish, for presence events to settle.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Longest wait for messages still in flight after the publisher stops.
    #[arg(long, default_value_t = 5)]
    pub straggler_secs: u64,
    /// Cluster: every other subscriber connects to this URL instead (a second node).
    #[arg(long)]
    pub second_url: Option<String>,
    /// Cluster: the Redis (HOST:PORT) whose commands per published message to report.
    #[arg(long)]
    pub redis: Option<String>,
    #[command(flatten)]
    pub connect: ConnectOpts,
}

/// How long a stalled subscriber reads at the end to find out whether it was closed.
const STALL_PROBE: Duration = Duration::from_secs(3);
/// SO_RCVBUF of stalled subscribers: without it loopback autotuning lets megabytes
/// pile up in kernel buffers before the server's own queue bound is ever reached.
const STALL_RECV_BUFFER: u32 = 4 * 1024;
/// Most messages the publisher writes in one go when catching up.
const MAX_BATCH: u64 = 1000;
/// Time limit for writing one batch of publishes.
const WRITE_LIMIT: Duration = Duration::from_secs(5);

/// `data` of a published message as a subscriber reads it back (`pad` is skipped).
#[derive(Debug, Deserialize)]
struct Stamp {
    t: u64,
    seq: u64,
}

/// The parts of a server frame a subscriber looks at.
#[derive(Debug, Deserialize)]
struct Delivery<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    data: Option<Stamp>,
}

/// Sequence bookkeeping of one subscriber.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct SeqTracker {
    received: u64,
    /// One past the highest sequence number seen.
    next: u64,
    /// Messages whose sequence number was not above every one seen before.
    out_of_order: u64,
}

impl SeqTracker {
    fn observe(&mut self, seq: u64) {
        self.received += 1;
        if seq >= self.next {
            self.next = seq + 1;
        } else {
            self.out_of_order += 1;
        }
    }
}

/// What one active subscriber saw.
struct SubStats {
    hist: LatencyHist,
    seq: SeqTracker,
    /// `message` frames whose data was not a bench stamp.
    unparsed: u64,
    /// When the last message arrived, in nanoseconds since the shared epoch.
    last_recv_ns: u64,
    /// The connection ended before the subscriber was done.
    closed_early: bool,
}

impl SubStats {
    fn new() -> Result<Self> {
        Ok(Self {
            hist: stats::latency_hist()?,
            seq: SeqTracker::default(),
            unparsed: 0,
            last_recv_ns: 0,
            closed_early: false,
        })
    }

    fn on_text(&mut self, text: &str, epoch: Instant) {
        let now_ns = nanos_since(epoch);
        match serde_json::from_str::<Delivery>(text) {
            Ok(Delivery {
                kind,
                data: Some(stamp),
            }) if kind == "message" => {
                stats::record(
                    &mut self.hist,
                    Duration::from_nanos(now_ns.saturating_sub(stamp.t)),
                );
                self.seq.observe(stamp.seq);
                self.last_recv_ns = now_ns;
            }
            Ok(Delivery { kind, .. }) if kind != "message" => {} // presence, welcome, …
            _ => self.unparsed += 1,
        }
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// What every subscriber task shares.
struct Ctx {
    epoch: Instant,
    /// Messages the publisher intends to send; a subscriber that saw the last one is done.
    planned: u64,
}

/// An active subscriber: reads until it saw the last planned message, the connection
/// ends, or the end deadline (set once the publisher stops) passes.
async fn subscribe(
    mut ws: Ws,
    ctx: Arc<Ctx>,
    mut end: watch::Receiver<Option<tokio::time::Instant>>,
) -> Result<SubStats> {
    let mut stats = SubStats::new()?;
    while stats.seq.next < ctx.planned {
        let deadline = *end.borrow_and_update();
        let frame = tokio::select! {
            frame = ws.next() => frame,
            () = sleep_until(deadline) => break,
            changed = end.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        match frame {
            Some(Ok(Message::Text(text))) => stats.on_text(text.as_str(), ctx.epoch),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                stats.closed_early = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    Ok(stats)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A stalled subscriber: never reads until told to probe, then reads for a bounded time
/// to see whether the server closed the connection. Returns true when it did.
async fn stall(mut ws: Ws, mut probe: watch::Receiver<bool>) -> bool {
    if probe.wait_for(|go| *go).await.is_err() {
        return false;
    }
    let closed = tokio::time::timeout(STALL_PROBE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    closed.unwrap_or(false)
}

/// A `publish` request whose `data` object is `payload_bytes` long (when that is more
/// than the stamp itself needs): `{"t":…,"seq":…,"pad":"xxx…"}`.
fn publish_frame(room_json: &str, t: u64, seq: u64, payload_bytes: usize, pad: &str) -> String {
    let head = format!(r#"{{"t":{t},"seq":{seq},"pad":""#);
    let pad_len = payload_bytes.saturating_sub(head.len() + 2);
    let pad = pad.get(..pad_len).unwrap_or(pad);
    format!(r#"{{"type":"publish","room":{room_json},"exclude_self":true,"data":{head}{pad}"}}}}"#)
}

/// The publisher's connection, kept open until the run is over.
struct Publisher {
    sink: SplitSink<Ws, Message>,
    drain: JoinHandle<()>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// What the publisher did.
struct Published {
    count: u64,
    started: Instant,
    ended: Instant,
}

impl Publisher {
    fn new(ws: Ws) -> Self {
        let (sink, mut stream) = ws.split();
        // Replies and presence events must be read, or they would back up.
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Self { sink, drain }
    }

    /// Publishes `planned` messages at `rate` per second, paced on absolute deadlines,
    /// stopping early if that takes longer than `limit`.
    async fn run(&mut self, args: &Args, ctx: &Ctx, limit: Duration) -> Result<Published> {
        let room_json = serde_json::to_string(&args.room)?;
        let pad = "x".repeat(args.payload_bytes);
        let period = Duration::from_secs_f64(1.0 / args.rate);
        let started = Instant::now();
        let give_up = started + limit;
        let mut seq = 0u64;
        while seq < ctx.planned && Instant::now() < give_up {
            let due = started + period.mul_f64(seq as f64);
            tokio::time::sleep_until(due.into()).await;
            let now = Instant::now();
            let batch_end = seq + MAX_BATCH;
            tokio::time::timeout(WRITE_LIMIT, async {
                while seq < ctx.planned
                    && seq < batch_end
                    && started + period.mul_f64(seq as f64) <= now
                {
                    let frame = publish_frame(
                        &room_json,
                        nanos_since(ctx.epoch),
                        seq,
                        args.payload_bytes,
                        &pad,
                    );
                    self.sink.feed(Message::text(frame)).await?;
                    seq += 1;
                }
                self.sink.flush().await
            })
            .await
            .context("publisher blocked: the server stopped reading")?
            .context("publish failed")?;
        }
        Ok(Published {
            count: seq,
            started,
            ended: Instant::now(),
        })
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    if args.subscribers == 0 {
        bail!("--subscribers must be at least 1");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs.is_finite()) {
        bail!("--duration-secs must be a positive number");
    }
    let planned = ((args.rate * args.duration_secs).round() as u64).max(1);
    let epoch = Instant::now();
    let ctx = Arc::new(Ctx { epoch, planned });
    let target = Arc::new(Target::resolve(&args.url, args.connect.source_addrs).await?);
    let handshake = Handshake::Join {
        base: args.room.clone(),
        rooms: 1,
    };
    let rss = args
        .server_pid
        .map(|pid| RssSampler::start(Proc::Pid(pid), Duration::from_millis(100)));

    // Stalled subscribers first, so they hold their place in the room throughout.
    let (probe_tx, probe_rx) = watch::channel(false);
    let stalled = if args.stall > 0 {
        eprintln!("opening {} stalled subscribers", args.stall);
        Some(
            conn::open_all(
                Arc::new(target.with_recv_buffer(STALL_RECV_BUFFER)),
                &args.connect,
                &handshake,
                0,
                args.stall,
                move |_, ws| stall(ws, probe_rx.clone()),
            )
            .await?,
        )
    } else {
        None
    };

    eprintln!("opening {} subscribers", args.subscribers);
    let (end_tx, end_rx) = watch::channel(None);
    // With a second node, half of the subscribers (rounded down) connect there.
    let on_second = if args.second_url.is_some() {
        args.subscribers / 2
    } else {
        0
    };
    let sub_ctx = Arc::clone(&ctx);
    let second_end = end_rx.clone();
    let mut active = conn::open_all(
        Arc::clone(&target),
        &args.connect,
        &handshake,
        args.stall,
        args.subscribers - on_second,
        move |_, ws| subscribe(ws, Arc::clone(&sub_ctx), end_rx.clone()),
    )
    .await?;
    let second = match &args.second_url {
        Some(url) if on_second > 0 => {
            let target2 = Arc::new(Target::resolve(url, args.connect.source_addrs).await?);
            let sub_ctx = Arc::clone(&ctx);
            let opened = conn::open_all(
                target2,
                &args.connect,
                &handshake,
                args.stall + args.subscribers,
                on_second,
                move |_, ws| subscribe(ws, Arc::clone(&sub_ctx), second_end.clone()),
            )
            .await?;
            active.ok += opened.ok;
            active.failed += opened.failed;
            Some(opened.tasks)
        }
        _ => None,
    };

    let publisher_index = args.stall + args.subscribers + on_second;
    let ws = tokio::time::timeout(args.connect.connect_timeout(), async {
        let mut ws = target.connect(publisher_index).await?;
        conn::join(&mut ws, &args.room).await?;
        anyhow::Ok(ws)
    })
    .await
    .context("publisher: no connection in time")?
    .context("publisher")?;
    let mut publisher = Publisher::new(ws);
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;

    eprintln!(
        "publishing {planned} messages at {}/s to {} subscribers",
        args.rate, active.ok
    );
    let redis_before = match &args.redis {
        Some(addr) => Some(crate::redis_stats::command_calls(addr).await?),
        None => None,
    };
    let cpu = CpuWindow::start(args.server_pid)?;
    let limit = Duration::from_secs_f64(args.duration_secs) + Duration::from_secs(2);
    let published = publisher.run(args, &ctx, limit).await?;
    let straggle = Duration::from_secs(args.straggler_secs);
    let end = tokio::time::Instant::from(published.ended) + straggle;
    // Receivers live in the subscriber tasks; none left just means all are done.
    let _ = end_tx.send(Some(end));

    let mut subs = conn::collect(active.tasks, end + Duration::from_secs(1)).await;
    if let Some(tasks) = second {
        subs.extend(conn::collect(tasks, end + Duration::from_secs(1)).await);
    }
    let usage = cpu.finish()?;
    let redis = match (&args.redis, redis_before) {
        (Some(addr), Some((before, per_before))) => {
            let (after, per_after) = crate::redis_stats::command_calls(addr).await?;
            // INFO itself is counted once in `after`.
            let calls = after.saturating_sub(before).saturating_sub(1);
            eprintln!(
                "Redis commands during the run: {:?}",
                crate::redis_stats::delta(&per_before, &per_after)
            );
            Some(calls)
        }
        _ => None,
    };
    let max_rss_kib = rss.map(RssSampler::stop);

    let stalled_closed = match stalled {
        Some(stalled) => {
            let _ = probe_tx.send(true);
            let closed =
                conn::collect(stalled.tasks, tokio::time::Instant::now() + STALL_PROBE * 2).await;
            Some(closed.into_iter().filter(|c| *c).count())
        }
        None => None,
    };
    drop(publisher);

    let mut totals = Totals::new()?;
    for sub in subs {
        totals.add(&sub?);
    }
    let outcome = Outcome {
        subscribers: active.ok as u64,
        failed: active.failed as u64,
        unfinished: (active.ok as u64).saturating_sub(totals.finished),
        published,
        epoch,
        totals,
        usage,
        max_rss_kib,
        stalled_closed,
    };
    let mut report = outcome.report(args);
    if let Some(calls) = redis {
        report.push(
            "redis_commands_per_publish",
            "Redis commands per published message",
            "cmds",
            calls as f64 / outcome.published.count.max(1) as f64,
        );
    }
    Ok(report)
}

/// What all active subscribers saw, together.
struct Totals {
    hist: MergedHist,
    seq: SeqTracker,
    unparsed: u64,
    closed_early: u64,
    last_recv_ns: u64,
    /// Subscribers whose task ended in time (the others were aborted).
    finished: u64,
}

impl Totals {
    fn new() -> Result<Self> {
        Ok(Self {
            hist: stats::merged_hist()?,
            seq: SeqTracker::default(),
            unparsed: 0,
            closed_early: 0,
            last_recv_ns: 0,
            finished: 0,
        })
    }

    fn add(&mut self, sub: &SubStats) {
        stats::merge(&mut self.hist, &sub.hist);
        self.seq.received += sub.seq.received;
        self.seq.out_of_order += sub.seq.out_of_order;
        self.unparsed += sub.unparsed;
        self.closed_early += u64::from(sub.closed_early);
        self.last_recv_ns = self.last_recv_ns.max(sub.last_recv_ns);
        self.finished += 1;
    }
}

/// Everything a fan-out run measured.
struct Outcome {
    subscribers: u64,
    failed: u64,
    unfinished: u64,
    published: Published,
    epoch: Instant,
    totals: Totals,
    usage: CpuUsage,
    max_rss_kib: Option<u64>,
    stalled_closed: Option<usize>,
}

impl Outcome {
    /// Delivered messages per second, from the first publish to the last delivery (or
    /// the last publish, if that came later).
    fn delivered_per_sec(&self) -> f64 {
        let since_epoch = |at: Instant| u64::try_from((at - self.epoch).as_nanos()).unwrap_or(0);
        let first = since_epoch(self.published.started);
        let last = self
            .totals
            .last_recv_ns
            .max(since_epoch(self.published.ended));
        stats::per_sec(
            self.totals.seq.received,
            Duration::from_nanos(last.saturating_sub(first)),
        )
    }

    fn report(&self, args: &Args) -> Report {
        let t = &self.totals;
        let p = &self.published;
        let expected = p.count * self.subscribers;
        let mut report = Report::new("fanout", &args.url);
        report
            .push(
                "subscribers",
                "subscribers",
                "conns",
                self.subscribers as f64,
            )
            .push(
                "subscribers_failed",
                "subscribers failed to join",
                "conns",
                self.failed as f64,
            )
            .push("published", "published", "msgs", p.count as f64)
            .push(
                "publish_rate",
                "publish rate achieved",
                "msg/s",
                // n messages span n - 1 intervals.
                stats::per_sec(p.count.saturating_sub(1), p.ended - p.started),
            )
            .push(
                "received",
                "received (all subscribers)",
                "msgs",
                t.seq.received as f64,
            )
            .push(
                "loss",
                "lost (expected - received)",
                "msgs",
                expected.saturating_sub(t.seq.received) as f64,
            )
            .push(
                "out_of_order",
                "out of order",
                "msgs",
                t.seq.out_of_order as f64,
            )
            .push("unparsed", "unparsed messages", "msgs", t.unparsed as f64)
            .push(
                "closed_early",
                "subscribers disconnected early",
                "conns",
                t.closed_early as f64,
            )
            .push(
                "unfinished",
                "subscribers not done in time",
                "conns",
                self.unfinished as f64,
            )
            .push(
                "delivered_per_sec",
                "delivered msgs/s",
                "msg/s",
                self.delivered_per_sec(),
            );
        LatencySummary::of(&t.hist).add_to(&mut report, "latency", "publish→deliver");
        self.usage.add_to(
            &mut report,
            t.seq.received,
            "delivered_per_server_cpu_s",
            "delivered per server CPU-second",
            "msg/cpu-s",
        );
        if let Some(kib) = self.max_rss_kib {
            report.push(
                "server_rss_max_mib",
                "server peak RSS",
                "MiB",
                kib as f64 / 1024.0,
            );
        }
        if let Some(closed) = self.stalled_closed {
            report
                .push("stalled", "stalled subscribers", "conns", args.stall as f64)
                .push(
                    "stalled_closed",
                    "stalled subscribers closed by the server",
                    "conns",
                    closed as f64,
                );
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_tracking_counts_reordering() {
        let mut t = SeqTracker::default();
        for seq in [0, 1, 3, 2, 4, 4] {
            t.observe(seq);
        }
        assert_eq!(t.received, 6);
        assert_eq!(t.next, 5);
        // 2 came after 3, and the second 4 is a duplicate.
        assert_eq!(t.out_of_order, 2);
    }

    #[test]
    fn publish_frame_pads_data_to_the_payload_size() -> Result<()> {
        let pad = "x".repeat(300);
        let frame = publish_frame(r#""r""#, 123_456_789, 42, 200, &pad);
        let value: serde_json::Value = serde_json::from_str(&frame)?;
        assert_eq!(value["type"], "publish");
        assert_eq!(value["room"], "r");
        assert_eq!(value["exclude_self"], true);
        assert_eq!(value["data"]["t"], 123_456_789);
        assert_eq!(value["data"]["seq"], 42);
        assert_eq!(serde_json::to_string(&value["data"])?.len(), 200);

        // Too small to pad: the stamp alone, still valid.
        let small = publish_frame(r#""r""#, 1, 2, 5, &pad);
        let value: serde_json::Value = serde_json::from_str(&small)?;
        assert_eq!(value["data"]["pad"], "");
        Ok(())
    }

    #[test]
    fn subscriber_measures_messages_and_skips_everything_else() -> Result<()> {
        let epoch = Instant::now();
        let mut s = SubStats::new()?;
        s.on_text(
            r#"{"type":"presence_join","room":"r","member":{"client_id":"c"}}"#,
            epoch,
        );
        s.on_text(r#"{"type":"welcome","connection_id":"x"}"#, epoch);
        s.on_text(
            r#"{"type":"message","room":"r","data":{"t":0,"seq":0,"pad":"xx"},"from":"a","connection_id":"b","offset":1,"ts":5}"#,
            epoch,
        );
        s.on_text(
            r#"{"type":"message","room":"r","data":"not a stamp"}"#,
            epoch,
        );
        assert_eq!(s.seq.received, 1);
        assert_eq!(s.unparsed, 1);
        assert_eq!(s.hist.len(), 1);
        Ok(())
    }
}
