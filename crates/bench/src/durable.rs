//! Durable-publish scenario: how many publishes per second the server acknowledges, and
//! how long an ack takes, when every ack waits for the store.
//!
//! A publish to a durable room is acknowledged only after the store committed it (for
//! SQLite: WAL + `synchronous=FULL`, so after an fsync). The store's writer group-commits
//! whatever appends are waiting, so the cost of a commit is shared by concurrent
//! publishers — which is what this measures. The scenario (re)creates its rooms over the
//! REST API (`DELETE` then `POST /api/rooms {"id":…,"durable":…}`), opens P publisher
//! connections that join them, and has each keep K publishes in flight: it sends
//! `{"type":"publish","id":N,"room":…,"exclude_self":true,"data":{"seq":N,"pad":"…"}}`
//! (`data` padded to `--payload-bytes`) until K are unanswered, then one more for every
//! ack, until the time is up, and then waits (bounded) for the last acks.
//!
//! Reported: acked publishes per second (from the start to the last ack), publish → ack
//! latency p50/p99/p99.9/max, errors, publishes still unanswered at the end, acks that
//! carried an offset another ack already had (must be 0), and the server's CPU time. When
//! the server serves Prometheus text on `GET /metrics` with
//! `switchboard_store_append_seconds`, the mean time the server waited for the store per
//! append over the run is reported too.
//!
//! Reading the latency: the server handles one connection's requests one after another,
//! so with K in flight an ack also waits for the K − 1 publishes ahead of it on the same
//! connection (Little's law: latency ≈ P × K ÷ throughput). K keeps the pipe full; the
//! group-commit batch is bounded by how many *connections* wait on the store at once.
//!
//! Rooms: by default each publisher has a room of its own (`R-0` … `R-{P-1}`), so a
//! publish goes to the store and back as an ack and to nobody else — the path being
//! measured, without fan-out. The store's writer batches appends across rooms just as
//! within one. `--rooms 1` puts every publisher in room R: each publish is then also
//! delivered to the other P − 1 publishers (read and skipped), which at high rates costs
//! more than the publishing itself and can get publishers closed as slow consumers
//! (counted under "publishers that failed").

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::conn::{self, ConnectOpts, Handshake, Target, Ws};
use crate::procfs::CpuWindow;
use crate::report::Report;
use crate::stats::{self, LatencyHist, LatencySummary};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// WebSocket URL of a protocol endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Base URL of the server's REST API, where the room is created.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Publisher connections.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Publishes each publisher keeps sent but not yet acknowledged.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// How long to publish, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Size of each message's `data` object in bytes (padded with a `pad` string).
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Room to (re)create and publish to, or the prefix of the rooms (see --rooms). Any
    /// room of that id is deleted first.
    #[arg(long, default_value = "bench-durable")]
    pub room: String,
    /// Rooms to spread the publishers over: 0 = one per publisher (no fan-out), 1 = all
    /// in --room, N = --room-0 … --room-{N-1}.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Create the room durable (acks wait for the store) or ordinary (memory only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub durable: bool,
    /// Server process to measure (CPU time).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (0 = no bind).
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u8,
}

/// Longest wait for one ack (or for the last acks once publishing stopped).
const REPLY_LIMIT: Duration = Duration::from_secs(10);
/// Time limit for one REST call.
const HTTP_LIMIT: Duration = Duration::from_secs(10);
/// The server's histogram of store append durations (`GET /metrics`).
const STORE_APPEND_METRIC: &str = "switchboard_store_append_seconds";

/// A `publish` request with integer `id` whose `data` object is `payload_bytes` long
/// (when that is more than `{"seq":…,"pad":""}` needs).
fn publish_request(room_json: &str, id: u64, payload_bytes: usize, pad: &str) -> String {
    let head = format!(r#"{{"seq":{id},"pad":""#);
    let pad_len = payload_bytes.saturating_sub(head.len() + 2);
    let pad = pad.get(..pad_len).unwrap_or(pad);
    format!(
        r#"{{"type":"publish","id":{id},"room":{room_json},"exclude_self":true,"data":{head}{pad}"}}}}"#
    )
}

/// The parts of a server frame a publisher looks at.
#[derive(Debug, Deserialize)]
struct Reply<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// Publishes sent and not yet answered, oldest first. A connection's replies come in
/// request order, so the answer is almost always the front one.
#[derive(Debug, Default)]
struct InFlight {
    sent: VecDeque<(u64, Instant)>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.sent.len()
    }

    fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    fn push(&mut self, id: u64, at: Instant) {
        self.sent.push_back((id, at));
    }

    /// Takes request `id` out; returns when it was sent, or `None` if it is not waiting.
    fn answer(&mut self, id: u64) -> Option<Instant> {
        if self.sent.front().is_some_and(|(front, _)| *front == id) {
            return self.sent.pop_front().map(|(_, at)| at);
        }
        let i = self.sent.iter().position(|(waiting, _)| *waiting == id)?;
        self.sent.remove(i).map(|(_, at)| at)
    }
}

/// What one publisher measured.
struct PubStats {
    hist: LatencyHist,
    sent: u64,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    /// The room published to, as an index (offsets are per room).
    room: usize,
    /// Offsets of the acks, in arrival order.
    offsets: Vec<u64>,
    /// Publishes with no answer when the publisher gave up.
    unanswered: u64,
    last_ack: Option<Instant>,
    /// The connection ended or failed before the publisher was done.
    failure: Option<String>,
}

impl PubStats {
    fn new(room: usize) -> Result<Self> {
        Ok(Self {
            room,
            hist: stats::latency_hist()?,
            sent: 0,
            acked: 0,
            errors: 0,
            first_error: None,
            offsets: Vec::new(),
            unanswered: 0,
            last_ack: None,
            failure: None,
        })
    }

    /// Handles one text frame from the server.
    fn on_text(&mut self, text: &str, in_flight: &mut InFlight) {
        let Ok(reply) = serde_json::from_str::<Reply>(text) else {
            return;
        };
        let Some(sent_at) = reply.id.and_then(|id| in_flight.answer(id)) else {
            return; // welcome, presence, other publishers' messages
        };
        let now = Instant::now();
        match reply.kind.as_ref() {
            "ack" => {
                stats::record(&mut self.hist, now - sent_at);
                self.acked += 1;
                self.offsets.extend(reply.offset);
                self.last_ack = Some(now);
            }
            _ => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| {
                    format!(
                        "{} {} {}",
                        reply.kind,
                        reply.code.unwrap_or_default(),
                        reply.message.unwrap_or_default()
                    )
                });
            }
        }
    }
}

/// What every publisher shares.
struct Ctx {
    pad: String,
    payload_bytes: usize,
    in_flight: usize,
}

/// One publisher: waits for the shared stop time to be set (the start signal), keeps
/// `in_flight` publishes outstanding until then, and collects the last acks.
async fn publish_loop(
    mut ws: Ws,
    room: (usize, String),
    ctx: Arc<Ctx>,
    mut stop_at: watch::Receiver<Option<tokio::time::Instant>>,
) -> Result<PubStats> {
    let (room_index, room_json) = room;
    let mut stats = PubStats::new(room_index)?;
    let Ok(stop) = stop_at.wait_for(Option::is_some).await.map(|s| *s) else {
        return Ok(stats);
    };
    let Some(stop) = stop else {
        return Ok(stats);
    };
    let mut waiting = InFlight::default();
    let mut next_id = 0u64;
    loop {
        let publishing = tokio::time::Instant::now() < stop;
        if publishing && waiting.len() < ctx.in_flight {
            while waiting.len() < ctx.in_flight {
                let frame = publish_request(&room_json, next_id, ctx.payload_bytes, &ctx.pad);
                waiting.push(next_id, Instant::now());
                next_id += 1;
                if let Err(e) = ws.feed(Message::text(frame)).await {
                    stats.failure = Some(format!("send failed: {e}"));
                    break;
                }
            }
            if stats.failure.is_none()
                && let Err(e) = ws.flush().await
            {
                stats.failure = Some(format!("send failed: {e}"));
            }
            stats.sent = next_id;
            if stats.failure.is_some() {
                break;
            }
        }
        if !publishing && waiting.is_empty() {
            break;
        }
        // While publishing, wake up at the stop time even if no answer comes.
        let limit = if publishing {
            REPLY_LIMIT.min(stop.saturating_duration_since(tokio::time::Instant::now()))
        } else {
            REPLY_LIMIT
        };
        match tokio::time::timeout(limit, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => stats.on_text(text.as_str(), &mut waiting),
            Ok(Some(Ok(Message::Close(close)))) => {
                stats.failure = Some(format!("closed by the server: {close:?}"));
                break;
            }
            Ok(Some(Err(e))) => {
                stats.failure = Some(format!("read failed: {e}"));
                break;
            }
            Ok(None) => {
                stats.failure = Some("connection closed".into());
                break;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) if publishing => {}
            Err(_) => {
                stats.failure = Some(format!("no answer within {REPLY_LIMIT:?}"));
                break;
            }
        }
    }
    stats.unanswered = waiting.len() as u64;
    // Best effort: the server may already be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(stats)
}

/// How many items (here: room and offset) occur more than once.
fn duplicates<T: Eq + std::hash::Hash + Copy>(offsets: impl IntoIterator<Item = T>) -> u64 {
    let mut seen = HashSet::new();
    offsets.into_iter().filter(|o| !seen.insert(*o)).count() as u64
}

pub async fn run(args: &Args) -> Result<Report> {
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    if args.in_flight == 0 {
        bail!("--in-flight must be at least 1");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs.is_finite()) {
        bail!("--duration-secs must be a positive number");
    }
    let rooms = if args.rooms == 0 {
        args.publishers
    } else {
        args.rooms
    };
    let handshake = Handshake::Join {
        base: args.room.clone(),
        rooms,
    };
    let api = Api::parse(&args.api)?;
    for room in (0..rooms).filter_map(|i| handshake.room_for(i)) {
        api.recreate_room(&room, args.durable).await?;
    }
    let appends_before = api.store_appends().await;

    let target = Arc::new(Target::resolve(&args.url, args.source_addrs).await?);
    let ctx = Arc::new(Ctx {
        pad: "x".repeat(args.payload_bytes),
        payload_bytes: args.payload_bytes,
        in_flight: args.in_flight,
    });
    let (stop_tx, stop_rx) = watch::channel(None);
    let connect = ConnectOpts {
        source_addrs: args.source_addrs,
        ..ConnectOpts::default()
    };
    let room_of = handshake.clone();
    let opened = conn::open_all(
        target,
        &connect,
        &handshake,
        0,
        args.publishers,
        move |index, ws| {
            let room = room_of.room_for(index).unwrap_or_default();
            let room = (index % rooms, serde_json::Value::String(room).to_string());
            publish_loop(ws, room, Arc::clone(&ctx), stop_rx.clone())
        },
    )
    .await?;

    eprintln!(
        "publishing to {rooms} {} room(s) {}… from {} connections, {} in flight each, for {:.1}s",
        if args.durable { "durable" } else { "ordinary" },
        args.room,
        opened.ok,
        args.in_flight,
        args.duration_secs
    );
    let cpu = CpuWindow::start(args.server_pid)?;
    let started = Instant::now();
    let stop = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration_secs);
    let _ = stop_tx.send(Some(stop));
    let results = conn::collect(opened.tasks, stop + REPLY_LIMIT + Duration::from_secs(2)).await;
    let usage = cpu.finish()?;
    let appends_after = api.store_appends().await;

    let mut hist = stats::merged_hist()?;
    let mut totals = PubTotals::default();
    let mut offsets = Vec::new();
    for result in results {
        let p = result?;
        stats::merge(&mut hist, &p.hist);
        totals.sent += p.sent;
        totals.acked += p.acked;
        totals.errors += p.errors;
        totals.unanswered += p.unanswered;
        totals.failed += u64::from(p.failure.is_some());
        if let Some(e) = p.first_error.or(p.failure) {
            totals.first_error.get_or_insert(e);
        }
        if let Some(at) = p.last_ack {
            totals.last_ack = Some(totals.last_ack.map_or(at, |t: Instant| t.max(at)));
        }
        offsets.extend(p.offsets.iter().map(|o| (p.room, *o)));
    }
    if let Some(e) = &totals.first_error {
        eprintln!("first publisher problem: {e}");
    }
    let elapsed = totals.last_ack.map_or(Duration::ZERO, |at| at - started);

    let mut report = Report::new("durable", &args.url);
    report
        .push(
            "durable",
            "durable room (1 = yes)",
            "",
            f64::from(u8::from(args.durable)),
        )
        .push("publishers", "publishers", "conns", opened.ok as f64)
        .push("rooms", "rooms", "rooms", rooms as f64)
        .push(
            "publishers_failed",
            "publishers that failed",
            "conns",
            (opened.failed as u64 + totals.failed) as f64,
        )
        .push(
            "in_flight",
            "publishes in flight each",
            "msgs",
            args.in_flight as f64,
        )
        .push("sent", "published", "msgs", totals.sent as f64)
        .push("acked", "acked", "msgs", totals.acked as f64)
        .push("errors", "error replies", "msgs", totals.errors as f64)
        .push(
            "unanswered",
            "unanswered at the end",
            "msgs",
            totals.unanswered as f64,
        )
        .push(
            "duplicate_offsets",
            "acks repeating an offset",
            "msgs",
            duplicates(offsets) as f64,
        )
        .push(
            "acked_per_sec",
            "acked publishes/s",
            "msg/s",
            stats::per_sec(totals.acked, elapsed),
        );
    LatencySummary::of(&hist).add_to(&mut report, "ack", "publish→ack");
    usage.add_to(
        &mut report,
        totals.acked,
        "acked_per_server_cpu_s",
        "acked publishes per server CPU-second",
        "msg/cpu-s",
    );
    if let (Some(before), Some(after)) = (appends_before, appends_after)
        && let Some(mean) = after.mean_since(&before)
    {
        report
            .push(
                "store_appends",
                "store appends (server)",
                "appends",
                after.count - before.count,
            )
            .push(
                "store_append_mean_ms",
                "store append mean (server)",
                "ms",
                mean * 1000.0,
            );
    }
    Ok(report)
}

/// All publishers together.
#[derive(Debug, Default)]
struct PubTotals {
    sent: u64,
    acked: u64,
    errors: u64,
    unanswered: u64,
    failed: u64,
    first_error: Option<String>,
    last_ack: Option<Instant>,
}

// -- REST --------------------------------------------------------------------------------

/// The server's REST API, spoken as plain HTTP/1.1 (one request per connection).
struct Api {
    host: String,
    port: u16,
}

/// A histogram's running `_sum` and `_count`, read from Prometheus text.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SumCount {
    sum: f64,
    count: f64,
}

impl SumCount {
    /// The mean of what was recorded between `before` and `self`.
    fn mean_since(&self, before: &SumCount) -> Option<f64> {
        let count = self.count - before.count;
        (count > 0.0).then(|| (self.sum - before.sum) / count)
    }
}

impl Api {
    fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid API URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the API URL must be http://HOST:PORT, got {url:?}");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("API URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self {
            host,
            port: uri.port_u16().unwrap_or(80),
        })
    }

    /// Deletes room `id` if it exists and creates it anew, so every run starts empty.
    async fn recreate_room(&self, id: &str, durable: bool) -> Result<()> {
        let path = format!("/api/rooms/{id}");
        let (status, body) = self.request("DELETE", &path, None).await?;
        if status != 204 && status != 404 {
            bail!("DELETE {path}: HTTP {status}: {body}");
        }
        let spec = serde_json::json!({ "id": id, "durable": durable }).to_string();
        let (status, body) = self.request("POST", "/api/rooms", Some(&spec)).await?;
        if status != 201 {
            bail!("POST /api/rooms {spec}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// The server's store-append histogram, when it serves `/metrics` with one.
    async fn store_appends(&self) -> Option<SumCount> {
        match self.request("GET", "/metrics", None).await {
            Ok((200, text)) => histogram_sum_count(&text, STORE_APPEND_METRIC),
            _ => None,
        }
    }

    async fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let what = format!("{method} http://{}:{}{path}", self.host, self.port);
        tokio::time::timeout(HTTP_LIMIT, async {
            let mut stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .context("cannot connect")?;
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: */*\r\nConnection: close\r\n",
                self.host, self.port
            );
            if let Some(body) = body {
                request.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                ));
            }
            request.push_str("\r\n");
            request.push_str(body.unwrap_or(""));
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            parse_response(&response)
        })
        .await
        .with_context(|| format!("{what}: no answer within {HTTP_LIMIT:?}"))?
        .with_context(|| what)
    }
}

/// Status and body of an HTTP/1.1 response read to the end (`Connection: close`); a
/// chunked body is reassembled.
fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("malformed chunk"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        body.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

/// `NAME_sum` and `NAME_count` of an unlabelled histogram in Prometheus text.
fn histogram_sum_count(text: &str, name: &str) -> Option<SumCount> {
    let value = |suffix: &str| -> Option<f64> {
        let key = format!("{name}_{suffix}");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (k, v) = line.split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
    };
    Some(SumCount {
        sum: value("sum")?,
        count: value("count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_request_has_an_id_and_pads_data_to_the_payload_size() -> Result<()> {
        let pad = "x".repeat(300);
        let frame = publish_request(r#""r""#, 42, 100, &pad);
        let value: serde_json::Value = serde_json::from_str(&frame)?;
        assert_eq!(value["type"], "publish");
        assert_eq!(value["id"], 42);
        assert_eq!(value["room"], "r");
        assert_eq!(value["exclude_self"], true);
        assert_eq!(value["data"]["seq"], 42);
        assert_eq!(serde_json::to_string(&value["data"])?.len(), 100);
        // Too small to pad: the stamp alone, still valid.
        let small: serde_json::Value =
            serde_json::from_str(&publish_request(r#""r""#, 7, 3, &pad))?;
        assert_eq!(small["data"]["pad"], "");
        Ok(())
    }

    #[test]
    fn acks_and_errors_are_matched_to_their_requests() -> Result<()> {
        let t0 = Instant::now();
        let mut waiting = InFlight::default();
        for id in 0..4 {
            waiting.push(id, t0);
        }
        let mut s = PubStats::new(0)?;
        s.on_text(r#"{"type":"welcome","connection_id":"c"}"#, &mut waiting);
        s.on_text(
            r#"{"type":"message","room":"r","data":{"seq":9},"from":"x","connection_id":"y","offset":5,"ts":1}"#,
            &mut waiting,
        );
        s.on_text(
            r#"{"type":"ack","id":0,"room":"r","offset":11}"#,
            &mut waiting,
        );
        // Out of order still matches.
        s.on_text(
            r#"{"type":"ack","id":2,"room":"r","offset":13}"#,
            &mut waiting,
        );
        s.on_text(
            r#"{"type":"error","id":1,"code":"INTERNAL","message":"disk full"}"#,
            &mut waiting,
        );
        // An answer to nothing we sent is ignored.
        s.on_text(
            r#"{"type":"ack","id":99,"room":"r","offset":14}"#,
            &mut waiting,
        );
        assert_eq!((s.acked, s.errors), (2, 1));
        assert_eq!(s.offsets, vec![11, 13]);
        assert_eq!(s.hist.len(), 2);
        assert!(
            s.first_error
                .as_deref()
                .is_some_and(|e| e.contains("disk full"))
        );
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting.answer(3), Some(t0));
        assert_eq!(waiting.answer(3), None);
        Ok(())
    }

    #[test]
    fn duplicate_offsets_are_counted() {
        assert_eq!(duplicates([1, 2, 3]), 0);
        assert_eq!(duplicates([1, 2, 2, 3, 1, 2]), 3);
        // Offsets are per room.
        assert_eq!(duplicates([(0, 1), (1, 1), (0, 2), (1, 1)]), 1);
    }

    #[test]
    fn http_responses_plain_and_chunked() -> Result<()> {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":1}\r\n";
        assert_eq!(parse_response(plain)?, (201, "{\"a\":1}\r\n".to_owned()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked)?, (200, "abcdefg".to_owned()));
        assert_eq!(parse_response(b"HTTP/1.1 204 No Content\r\n\r\n")?.0, 204);
        assert!(parse_response(b"garbage").is_err());
        Ok(())
    }

    #[test]
    fn store_append_histogram_is_read_from_prometheus_text() {
        let text = "# HELP switchboard_store_append_seconds Time to append.\n\
                    # TYPE switchboard_store_append_seconds histogram\n\
                    switchboard_store_append_seconds_bucket{le=\"0.001\"} 3\n\
                    switchboard_store_append_seconds_sum 0.5\n\
                    switchboard_store_append_seconds_count 100\n\
                    switchboard_store_append_seconds_total_other 7\n";
        let after = histogram_sum_count(text, STORE_APPEND_METRIC);
        assert_eq!(
            after,
            Some(SumCount {
                sum: 0.5,
                count: 100.0
            })
        );
        let before = SumCount {
            sum: 0.1,
            count: 20.0,
        };
        let mean = after
            .and_then(|a| a.mean_since(&before))
            .unwrap_or(f64::NAN);
        assert!((mean - 0.005).abs() < 1e-12, "{mean}");
        assert_eq!(before.mean_since(&before), None);
        assert_eq!(
            histogram_sum_count("nothing here", STORE_APPEND_METRIC),
            None
        );
    }

    #[test]
    fn api_urls_are_http_only() -> Result<()> {
        let api = Api::parse("http://127.0.0.1:8080")?;
        assert_eq!((api.host.as_str(), api.port), ("127.0.0.1", 8080));
        assert!(Api::parse("https://127.0.0.1:8080").is_err());
        assert!(Api::parse("ws://127.0.0.1:8080/ws").is_err());
        Ok(())
    }
}
