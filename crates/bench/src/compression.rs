//! Compression scenario: what permessage-deflate costs and saves on fan-out.
//!
//! One server build, one endpoint with `compression = true`, two modes measured in
//! alternation within the same run: subscribers that offer permessage-deflate ("on") and
//! subscribers that do not ("off", so the server uses its plain transport). For each
//! payload — a small message under the compression minimum and about 1 KiB of
//! repetitive JSON — and each mode, `--runs` fan-outs: `--subscribers` connections join
//! a fresh room, one more connection publishes `--rate` messages/s for
//! `--duration-secs`, every subscriber counts the bytes it reads off its socket and the
//! messages it gets (inflating compressed ones), and the server's CPU time is read from
//! /proc around the publishing window. Reported per mode and payload, as medians of the
//! runs: wire bytes per delivered message, server CPU µs per delivered message,
//! delivered/s and p99 publish → deliver latency, with the on/off ratio. With
//! `--takeover-url` (an endpoint of the same server with server context takeover), a
//! third mode measures per-connection compression.
//!
//! The client side is a minimal RFC 6455 + RFC 7692 client written here on plain TCP
//! (tokio-tungstenite has no permessage-deflate), used for both modes so that the only
//! difference between them is the negotiation.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use flate2::{Decompress, FlushDecompress, Status};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::procfs::CpuWindow;
use crate::report::{Report, render_rows};
use crate::stats::{self, LatencySummary, median};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of a protocol endpoint with `compression = true`.
    #[arg(long, default_value = "ws://127.0.0.1:8080/deflate")]
    pub url: String,
    /// Subscribers per fan-out.
    #[arg(long, default_value_t = 200)]
    pub subscribers: usize,
    /// Publishes per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long each fan-out publishes, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Fan-outs per mode and payload (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Server process to measure (CPU time).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A protocol endpoint of the same server with server context takeover
    /// (`compression_server_no_context_takeover = false`): measured as a third mode.
    #[arg(long)]
    pub takeover_url: Option<String>,
}

/// Longest wait for a handshake, a join, or the last messages after publishing stops.
const STEP_LIMIT: Duration = Duration::from_secs(10);
const OFFER: &str = "permessage-deflate; client_max_window_bits";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// A stamp and a short pad: under the default 256-byte minimum, never compressed.
    Small,
    /// About 1 KiB of sensor readings: what a dashboard pushes.
    Json1k,
}

impl Payload {
    fn name(self) -> &'static str {
        match self {
            Payload::Small => "small (~150 B frame)",
            Payload::Json1k => "1 KiB JSON",
        }
    }

    fn data(self, t: u64, seq: u64) -> serde_json::Value {
        match self {
            Payload::Small => serde_json::json!({ "t": t, "seq": seq, "pad": "hello, room" }),
            Payload::Json1k => {
                let readings: Vec<_> = (0..12)
                    .map(|i| {
                        serde_json::json!({
                            "sensor": format!("hall-{}", (seq + i) % 9),
                            "temperature": 20.0 + ((seq + i) % 50) as f64 / 10.0,
                            "humidity": 40 + (seq + i) % 20,
                            "unit": "C",
                            "ok": true,
                        })
                    })
                    .collect();
                serde_json::json!({ "t": t, "seq": seq, "readings": readings })
            }
        }
    }
}

/// How the subscribers of a fan-out connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No permessage-deflate offer.
    Off,
    /// permessage-deflate with the defaults: one compression per message for everyone.
    On,
    /// permessage-deflate with server context takeover: a compressor per connection.
    Takeover,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Takeover => "takeover",
        }
    }
}

/// A reported figure: key, label, unit, and how to read it from a run.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RunResult) -> Option<f64>,
);

/// One fan-out's figures.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    wire_bytes_per_msg: f64,
    server_cpu_us_per_msg: Option<f64>,
    delivered_per_s: f64,
    p99_ms: f64,
    loss: u64,
}

pub async fn run(args: &Args) -> Result<Report> {
    let target = Url::parse(&args.url)?;
    let takeover = args.takeover_url.as_deref().map(Url::parse).transpose()?;
    let mut modes = vec![Mode::Off, Mode::On];
    if takeover.is_some() {
        modes.push(Mode::Takeover);
    }
    let mut results: Vec<(Payload, Mode, RunResult)> = Vec::new();
    for payload in [Payload::Small, Payload::Json1k] {
        for i in 0..args.runs {
            for &mode in &modes {
                let url = match (mode, &takeover) {
                    (Mode::Takeover, Some(t)) => t,
                    _ => &target,
                };
                let r = fan_out(args, url, payload, mode, i)
                    .await
                    .with_context(|| {
                        format!(
                            "{} run {} with compression {}",
                            payload.name(),
                            i + 1,
                            mode.name()
                        )
                    })?;
                eprintln!(
                    "  {:<22} {:<8} run {}: {:.0} B/msg, {} µs CPU/msg, {:.0} delivered/s, p99 {:.2} ms, lost {}",
                    payload.name(),
                    mode.name(),
                    i + 1,
                    r.wire_bytes_per_msg,
                    r.server_cpu_us_per_msg
                        .map_or("?".into(), |c| format!("{c:.2}")),
                    r.delivered_per_s,
                    r.p99_ms,
                    r.loss
                );
                results.push((payload, mode, r));
            }
        }
    }
    let mut report = Report::new("compression", &args.url);
    let mut rows = Vec::new();
    for payload in [Payload::Small, Payload::Json1k] {
        let med = |mode: Mode, f: fn(&RunResult) -> Option<f64>| {
            let v: Vec<f64> = results
                .iter()
                .filter(|(p, m, _)| *p == payload && *m == mode)
                .filter_map(|(_, _, r)| f(r))
                .collect();
            median(&v)
        };
        let key = match payload {
            Payload::Small => "small",
            Payload::Json1k => "json1k",
        };
        let metrics: [Metric; 5] = [
            (
                "wire_bytes_per_msg",
                "wire bytes per delivered message",
                "B",
                |r| Some(r.wire_bytes_per_msg),
            ),
            (
                "server_cpu_us_per_msg",
                "server CPU per delivered message",
                "µs",
                |r| r.server_cpu_us_per_msg,
            ),
            ("delivered_per_s", "delivered messages/s", "msg/s", |r| {
                Some(r.delivered_per_s)
            }),
            ("p99_ms", "p99 publish → deliver", "ms", |r| {
                Some(r.p99_ms)
            }),
            ("lost", "messages lost", "msgs", |r| Some(r.loss as f64)),
        ];
        for (name, label, unit, f) in metrics {
            let mut row = vec![payload.name().to_owned(), format!("{label} ({unit})")];
            let off = med(Mode::Off, f);
            for &mode in &modes {
                let v = med(mode, f);
                if let Some(v) = v {
                    report.push(
                        &format!("{key}_{}_{name}", mode.name()),
                        &format!("{} {label}, {}", payload.name(), mode.name()),
                        unit,
                        v,
                    );
                }
                row.push(v.map_or("?".into(), |v| format!("{v:.2}")));
            }
            for &mode in &modes[1..] {
                row.push(match (off, med(mode, f)) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
                    _ => "-".into(),
                });
            }
            rows.push(row);
        }
    }
    let mut header = vec!["payload", "metric"];
    header.extend(modes.iter().map(|m| m.name()));
    header.push("on/off");
    if takeover.is_some() {
        header.push("takeover/off");
    }
    eprintln!(
        "\nmedians of {} runs, {} subscribers, {} msg/s for {} s:\n{}",
        args.runs,
        args.subscribers,
        args.rate,
        args.duration_secs,
        render_rows(&header, &rows)
    );
    Ok(report)
}

/// One fan-out in one mode.
async fn fan_out(
    args: &Args,
    target: &Url,
    payload: Payload,
    mode: Mode,
    run: usize,
) -> Result<RunResult> {
    let room = format!(
        "bench-z-{}-{}-{run}-{}",
        payload as u8,
        mode.name(),
        std::process::id()
    );
    let planned = (args.rate * args.duration_secs).round().max(1.0) as u64;
    let epoch = Instant::now();
    let mut subs = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let mut c = tokio::time::timeout(STEP_LIMIT, Client::connect(target, mode != Mode::Off))
            .await
            .context("handshake timed out")??;
        tokio::time::timeout(STEP_LIMIT, c.join(&room))
            .await
            .context("join timed out")??;
        subs.push(c);
    }
    let mut publisher = tokio::time::timeout(STEP_LIMIT, Client::connect(target, false))
        .await
        .context("publisher handshake timed out")??;
    tokio::time::timeout(STEP_LIMIT, publisher.join(&room))
        .await
        .context("publisher join timed out")??;
    let (end_tx, end_rx) = watch::channel(None::<tokio::time::Instant>);
    let tasks: Vec<_> = subs
        .into_iter()
        .map(|c| {
            let end = end_rx.clone();
            tokio::spawn(async move { c.subscribe(epoch, planned, end).await })
        })
        .collect();
    // Let presence events settle before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = CpuWindow::start(args.server_pid)?;
    let start = tokio::time::Instant::now();
    let rate = args.rate;
    let pub_task = tokio::spawn(async move {
        let mut drain = [0u8; 16 * 1024];
        for seq in 0..planned {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due).await;
            let t = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let msg = serde_json::json!({ "type": "publish", "room": room, "data": payload.data(t, seq) });
            publisher.send_text(msg.to_string().as_bytes()).await?;
            // The publisher is a member too: keep its socket drained.
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::ZERO, publisher.read.read(&mut drain)).await
            {
                if n == 0 {
                    bail!("publisher connection closed");
                }
            }
        }
        Ok::<_, anyhow::Error>(publisher)
    });
    let publisher = pub_task.await.context("publisher task")??;
    let _ = end_tx.send(Some(tokio::time::Instant::now() + STEP_LIMIT));
    let mut hist = stats::merged_hist()?;
    let (mut bytes, mut delivered, mut last_ns) = (0u64, 0u64, 0u64);
    for t in tasks {
        let s = t.await.context("subscriber task")??;
        bytes += s.bytes;
        delivered += s.received;
        last_ns = last_ns.max(s.last_ns);
        stats::merge(&mut hist, &s.hist);
    }
    let usage = cpu.finish()?;
    drop(publisher);
    let elapsed =
        Duration::from_nanos(last_ns).saturating_sub(start.into_std().duration_since(epoch));
    let lat = LatencySummary::of(&hist);
    Ok(RunResult {
        wire_bytes_per_msg: bytes as f64 / delivered.max(1) as f64,
        server_cpu_us_per_msg: usage.server_s.map(|s| s * 1e6 / delivered.max(1) as f64),
        delivered_per_s: stats::per_sec(delivered, elapsed.max(Duration::from_millis(1))),
        p99_ms: lat.p99_ms,
        loss: planned * args.subscribers as u64 - delivered.min(planned * args.subscribers as u64),
    })
}

/// `ws://host:port/path`.
#[derive(Debug, Clone)]
struct Url {
    authority: String,
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .with_context(|| format!("`{url}`: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        Ok(Url {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// A subscriber's tally.
struct Tally {
    bytes: u64,
    received: u64,
    last_ns: u64,
    hist: stats::LatencyHist,
}

#[derive(Deserialize)]
struct Stamp {
    t: u64,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Stamp>,
}

/// A minimal WebSocket client: masked text frames out; frames in, inflated when RSV1
/// says so (each message alone, or continuing the stream under server context takeover).
struct Client {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    inflater: Option<Decompress>,
    /// The server compresses with context: keep the inflater's window between messages.
    takeover: bool,
    mask_seed: u32,
}

impl Client {
    async fn connect(url: &Url, deflate: bool) -> Result<Self> {
        let stream = TcpStream::connect(&url.authority)
            .await
            .with_context(|| format!("cannot connect to {}", url.authority))?;
        stream.set_nodelay(true)?;
        let (mut read, mut write) = stream.into_split();
        let ext = if deflate {
            format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
        } else {
            String::new()
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n",
            url.path, url.authority
        );
        write.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                bail!("response head too long");
            }
            let mut chunk = [0u8; 2048];
            let n = read.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed during the handshake");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            bail!(
                "upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        let agreed = head.contains("sec-websocket-extensions: permessage-deflate");
        if agreed != deflate {
            bail!(
                "permessage-deflate {} but {}",
                if deflate { "offered" } else { "not offered" },
                if agreed { "agreed" } else { "not agreed" }
            );
        }
        let takeover = agreed && !head.contains("server_no_context_takeover");
        buf.drain(..head_end);
        Ok(Client {
            read,
            write,
            buf,
            inflater: agreed.then(|| Decompress::new(false)),
            takeover,
            mask_seed: 0x9e37_79b9,
        })
    }

    async fn send_text(&mut self, payload: &[u8]) -> Result<()> {
        self.mask_seed = self
            .mask_seed
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let key = self.mask_seed.to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x81);
        let n = payload.len();
        if n < 126 {
            frame.push(0x80 | n as u8);
        } else if n <= 65535 {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.write.write_all(&frame).await?;
        Ok(())
    }

    /// The next complete frame in the buffer: (rsv1, opcode, payload), consumed.
    fn take_frame(&mut self) -> Result<Option<(bool, u8, Vec<u8>)>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[2..10]);
                (usize::try_from(u64::from_be_bytes(a))?, 10)
            }
            126 | 127 => return Ok(None),
            n => (usize::from(n), 2),
        };
        if b[0] & 0x80 == 0 {
            bail!("the server fragmented a message; not expected here");
        }
        if b.len() < at + len {
            return Ok(None);
        }
        let rsv1 = b[0] & 0x40 != 0;
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(Some((rsv1, opcode, payload)))
    }

    /// Reads the next data message into `out`; returns the bytes read off the socket.
    async fn read_message(&mut self, out: &mut Vec<u8>) -> Result<u64> {
        let mut read = 0u64;
        loop {
            if let Some((rsv1, opcode, payload)) = self.take_frame()? {
                match opcode {
                    0x1 | 0x2 => {
                        out.clear();
                        if rsv1 {
                            let d = self
                                .inflater
                                .as_mut()
                                .context("compressed frame without permessage-deflate")?;
                            if !self.takeover {
                                d.reset(false);
                            }
                            inflate(d, &payload, out)?;
                        } else {
                            out.extend_from_slice(&payload);
                        }
                        return Ok(read);
                    }
                    0x8 => bail!("server closed the connection"),
                    _ => continue, // pings: the run is shorter than the heartbeat timeout
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.read.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            read += n as u64;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn join(&mut self, room: &str) -> Result<()> {
        let req = serde_json::json!({ "type": "join", "room": room, "id": "j" }).to_string();
        self.send_text(req.as_bytes()).await?;
        let mut msg = Vec::new();
        for _ in 0..1000 {
            self.read_message(&mut msg).await?;
            let env: Envelope = serde_json::from_slice(&msg).context("a message is not JSON")?;
            match env.kind.as_str() {
                "joined" => return Ok(()),
                "error" => bail!("join refused: {}", String::from_utf8_lossy(&msg)),
                _ => {}
            }
        }
        bail!("no joined reply")
    }

    async fn subscribe(
        mut self,
        epoch: Instant,
        planned: u64,
        mut end: watch::Receiver<Option<tokio::time::Instant>>,
    ) -> Result<Tally> {
        let mut tally = Tally {
            bytes: 0,
            received: 0,
            last_ns: 0,
            hist: stats::latency_hist()?,
        };
        let mut msg = Vec::new();
        while tally.received < planned {
            let deadline = *end.borrow_and_update();
            let step = tokio::select! {
                r = self.read_message(&mut msg) => r?,
                () = sleep_until(deadline) => break,
                changed = end.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            };
            tally.bytes += step;
            let Ok(env) = serde_json::from_slice::<Envelope>(&msg) else {
                continue;
            };
            if let ("message", Some(stamp)) = (env.kind.as_str(), env.data) {
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                stats::record(
                    &mut tally.hist,
                    Duration::from_nanos(now.saturating_sub(stamp.t)),
                );
                tally.received += 1;
                tally.last_ns = now;
            }
        }
        Ok(tally)
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Inflates one message (RFC 7692 §7.2.2), continuing `d`'s stream.
fn inflate(d: &mut Decompress, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut pos = 0usize;
    loop {
        out.reserve(input.len() * 4 + 1024);
        let before = d.total_in();
        let status = d
            .decompress_vec(&input[pos..], out, FlushDecompress::Sync)
            .context("invalid compressed data from the server")?;
        pos += usize::try_from(d.total_in() - before)?;
        if status == Status::StreamEnd || (pos == input.len() && out.len() < out.capacity()) {
            return Ok(());
        }
        if out.len() > 64 << 20 {
            bail!("message inflates past 64 MiB");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("ws://127.0.0.1:9000/deflate").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9000", "/deflate")
        );
        assert!(Url::parse("wss://x/").is_err());
    }

    #[test]
    fn the_json_payload_is_about_a_kibibyte() {
        let n = Payload::Json1k.data(u64::MAX, 12345).to_string().len();
        assert!((900..1300).contains(&n), "{n}");
    }
}
