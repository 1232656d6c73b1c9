//! Opening many WebSocket client connections, the way every scenario does.
//!
//! Start with [`open_all`]: it opens `count` connections at a paced rate with a bounded
//! number of handshakes in flight, optionally joins each one to a room (`join` →
//! `joined`, skipping `welcome` and presence events), and then hands each connection
//! to a per-connection task supplied by the scenario. The scenario decides what a
//! connection does once it is ready (drain, measure, stall, echo); this module only
//! gets it there, so connection setup is written once.
//!
//! Why source addresses: on loopback every connection to the same server address needs
//! its own `(source address, source port)` pair, and one source address only has
//! ≈ 28k ephemeral ports (fewer once old runs leave sockets in TIME_WAIT). Binding each
//! socket to `127.0.0.k:0` before connecting, rotating `k` over [`SourceAddrs`],
//! multiplies that by the number of addresses, so tens of thousands of connections and
//! repeated runs never run out of ports. Every 127.0.0.0/8 address is local on Linux,
//! so no setup is needed.
//!
//! Why small buffers: tungstenite eagerly allocates its whole read buffer (128 KiB by
//! default) per connection; the load generator keeps thousands of connections, so it
//! uses 4 KiB (see [`client_config`]) and stays small next to the server it measures.

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Read buffer per connection (see the module doc).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Time limit for resolving the server's host name.
const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

/// Most frames [`join`] skips while waiting for `joined` (welcome, presence events).
const MAX_FRAMES_BEFORE_JOINED: usize = 100_000;

/// Options shared by every client scenario for opening its connections.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOpts {
    /// Number of loopback source addresses to spread connections over
    /// (127.0.0.1 ..= 127.0.0.N); 0 = let the kernel choose (no bind).
    #[arg(long, default_value_t = 16)]
    pub source_addrs: u8,
    /// New connections started per second.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_per_sec: f64,
    /// Most connection handshakes (TCP + WebSocket + join) in flight at once.
    #[arg(long, default_value_t = 128)]
    pub in_flight: usize,
    /// Time limit for one connection's TCP connect, upgrade and join, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
}

/// The same values as the command-line defaults, for scenarios that do not take these
/// options from the command line.
impl Default for ConnectOpts {
    fn default() -> Self {
        Self {
            source_addrs: 16,
            ramp_per_sec: 2000.0,
            in_flight: 128,
            connect_timeout_ms: 10_000,
        }
    }
}

impl ConnectOpts {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// The WebSocket configuration of every bench client connection.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_write_buffer_size(4 * 1024 * 1024)
}

/// Rotation of loopback source addresses `127.0.0.1 ..= 127.0.0.count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceAddrs {
    count: u8,
}

impl SourceAddrs {
    /// `count` must be between 1 and 254 (127.0.0.255 is a broadcast address).
    pub fn new(count: u8) -> Result<Self> {
        if count == 0 || count == u8::MAX {
            bail!("source address count must be between 1 and 254, got {count}");
        }
        Ok(Self { count })
    }

    /// The source address of connection number `index`.
    pub fn for_index(&self, index: usize) -> Ipv4Addr {
        // `count` ≤ 254 so the remainder fits in u8 and 1 + remainder ≤ 254.
        let offset = u8::try_from(index % usize::from(self.count)).unwrap_or(0);
        Ipv4Addr::new(127, 0, 0, 1 + offset)
    }
}

/// Where the connections go: the URL for the upgrade request and the resolved address.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    sources: Option<SourceAddrs>,
    /// SO_RCVBUF for new sockets; `None` leaves the kernel's autotuning alone.
    recv_buffer: Option<u32>,
}

impl Target {
    /// Parses a `ws://host:port/path` URL and resolves its host once.
    pub async fn resolve(url: &str, source_addrs: u8) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            other => bail!("only ws:// URLs are supported, got scheme {other:?} in {url:?}"),
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host((host, port)))
            .await
            .with_context(|| format!("resolving {host} took over {RESOLVE_LIMIT:?}"))?
            .with_context(|| format!("cannot resolve {host}:{port}"))?
            .next()
            .ok_or_else(|| anyhow!("{host}:{port} resolved to no address"))?;
        // Source rotation only makes sense towards a loopback IPv4 server.
        let sources = match addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && source_addrs > 0 => {
                Some(SourceAddrs::new(source_addrs)?)
            }
            _ => None,
        };
        Ok(Self {
            url: url.to_owned(),
            addr,
            sources,
            recv_buffer: None,
        })
    }

    /// The same target, for sockets with a fixed, small receive buffer (a client that
    /// stops reading then fills its TCP window sooner).
    pub fn with_recv_buffer(&self, bytes: u32) -> Self {
        Self {
            recv_buffer: Some(bytes),
            ..self.clone()
        }
    }

    /// Opens connection number `index`: TCP (from its rotated source address, with
    /// TCP_NODELAY) and the WebSocket upgrade. No time limit: callers wrap it.
    pub async fn connect(&self, index: usize) -> Result<Ws> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .context("cannot create a TCP socket")?;
        if let Some(bytes) = self.recv_buffer {
            socket.set_recv_buffer_size(bytes).context("SO_RCVBUF")?;
        }
        if let Some(sources) = self.sources {
            let source = SocketAddr::new(IpAddr::V4(sources.for_index(index)), 0);
            socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
            socket
                .bind(source)
                .with_context(|| format!("cannot bind to source address {source}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .with_context(|| format!("TCP connect to {} failed", self.addr))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (ws, _response) =
            client_async_with_config(self.url.as_str(), stream, Some(client_config()))
                .await
                .with_context(|| format!("WebSocket upgrade to {} failed", self.url))?;
        Ok(ws)
    }
}

/// The `type` of a JSON envelope (and `id`, `code`, `message` for replies and errors).
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

/// Sends `{"type":"join","room":room,"id":"j"}` and waits for the `joined` reply,
/// skipping anything else the server sends first (welcome, presence events).
/// An `error` reply or a close fails the join. No time limit: callers wrap it.
pub async fn join(ws: &mut Ws, room: &str) -> Result<()> {
    let request = serde_json::json!({ "type": "join", "room": room, "id": "j" }).to_string();
    ws.send(Message::text(request))
        .await
        .context("cannot send join")?;
    for _ in 0..MAX_FRAMES_BEFORE_JOINED {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| anyhow!("connection closed before joined"))?
            .context("read error before joined")?;
        match frame {
            Message::Text(text) => {
                let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
                    continue;
                };
                match head.kind.as_ref() {
                    "joined" => return Ok(()),
                    "error" => bail!(
                        "join refused: {} {}",
                        head.code.unwrap_or_default(),
                        head.message.unwrap_or_default()
                    ),
                    _ => {}
                }
            }
            Message::Close(close) => bail!("server closed the connection before joined: {close:?}"),
            _ => {}
        }
    }
    bail!("no joined reply within {MAX_FRAMES_BEFORE_JOINED} frames")
}

/// How each opened connection is prepared before the scenario gets it.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// Just the WebSocket upgrade (echo endpoints).
    None,
    /// Upgrade, then join a room: `base` when `rooms` ≤ 1, else `base-{index % rooms}`.
    Join { base: String, rooms: usize },
}

impl Handshake {
    /// The room connection `index` joins, if any.
    pub fn room_for(&self, index: usize) -> Option<String> {
        match self {
            Handshake::None => None,
            Handshake::Join { base, rooms } if *rooms <= 1 => Some(base.clone()),
            Handshake::Join { base, rooms } => Some(format!("{base}-{}", index % rooms)),
        }
    }
}

/// What [`open_all`] opened: the running per-connection tasks and how opening went.
pub struct Opened<R> {
    /// One task per connection; `None` results are connections that failed to open.
    /// Dropping this aborts every task, which closes their connections.
    pub tasks: JoinSet<Option<R>>,
    pub ok: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Time from the first connection started to the last one ready.
    pub elapsed: Duration,
}

impl<R> Opened<R> {
    /// Connections opened per second.
    pub fn rate(&self) -> f64 {
        crate::stats::per_sec(self.ok as u64, self.elapsed)
    }
}

/// Opens `count` connections to `target` (indices `first_index..first_index+count`),
/// paced at `opts.ramp_per_sec`, with at most `opts.in_flight` handshakes at once,
/// each bounded by `opts.connect_timeout_ms`. Each connection that is ready is handed
/// to `run(index, ws)` in its own task. Returns once every connection is ready or has
/// failed. Fails only when none could be opened.
pub async fn open_all<R, F, Fut>(
    target: Arc<Target>,
    opts: &ConnectOpts,
    handshake: &Handshake,
    first_index: usize,
    count: usize,
    run: F,
) -> Result<Opened<R>>
where
    F: Fn(usize, Ws) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    if opts.ramp_per_sec.is_nan() || opts.ramp_per_sec <= 0.0 {
        bail!("--ramp-per-sec must be positive");
    }
    let run = Arc::new(run);
    let in_flight = Arc::new(Semaphore::new(opts.in_flight.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut tasks = JoinSet::new();
    let mut tally = Tally::new(count);
    let limit = opts.connect_timeout();
    let start = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / opts.ramp_per_sec);

    for i in 0..count {
        let due = start + pace.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .context("connection semaphore closed")?;
        let target = Arc::clone(&target);
        let run = Arc::clone(&run);
        let ready_tx = ready_tx.clone();
        let room = handshake.room_for(i);
        let index = first_index + i;
        tasks.spawn(async move {
            let opened = tokio::time::timeout(limit, async {
                let mut ws = target.connect(index).await?;
                if let Some(room) = room {
                    join(&mut ws, &room).await?;
                }
                anyhow::Ok(ws)
            })
            .await;
            drop(permit);
            match opened {
                Ok(Ok(ws)) => {
                    // The receiver may be gone if the caller gave up; the task still runs.
                    let _ = ready_tx.send(Ok(()));
                    Some(run(index, ws).await)
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    None
                }
                Err(_) => {
                    let _ = ready_tx.send(Err(format!("no connection within {limit:?}")));
                    None
                }
            }
        });
        while let Ok(result) = ready_rx.try_recv() {
            tally.add(result);
        }
    }
    drop(ready_tx);
    // Every task reports exactly once, within `limit` of its start.
    let deadline = tokio::time::Instant::now() + limit + Duration::from_secs(1);
    while tally.done() < count {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(result)) => tally.add(result),
            Ok(None) | Err(_) => break,
        }
    }
    let elapsed = start.elapsed();
    let unaccounted = count - tally.done();
    tally.failed += unaccounted;
    eprintln!(
        "opened {}/{count} connections in {:.1}s ({} failed)",
        tally.ok,
        elapsed.as_secs_f64(),
        tally.failed
    );
    if tally.ok == 0 && count > 0 {
        bail!(
            "no connection could be opened to {}: {}",
            target.url,
            tally.first_error.unwrap_or_else(|| "unknown error".into())
        );
    }
    Ok(Opened {
        tasks,
        ok: tally.ok,
        failed: tally.failed,
        first_error: tally.first_error,
        elapsed,
    })
}

/// Joins every task of `tasks` until `deadline`, then aborts what is left. Tasks that
/// failed to connect (`None`) or panicked are skipped.
pub async fn collect<R: 'static>(
    mut tasks: JoinSet<Option<R>>,
    deadline: tokio::time::Instant,
) -> Vec<R> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, tasks.join_next()).await {
        if let Ok(Some(result)) = joined {
            out.push(result);
        }
    }
    tasks.abort_all();
    out
}

/// Counts ready and failed connections and prints progress about once a second.
struct Tally {
    count: usize,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    last_print: Instant,
}

impl Tally {
    fn new(count: usize) -> Self {
        Self {
            count,
            ok: 0,
            failed: 0,
            first_error: None,
            last_print: Instant::now(),
        }
    }

    fn done(&self) -> usize {
        self.ok + self.failed
    }

    fn add(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
        if self.last_print.elapsed() >= Duration::from_secs(1) {
            self.last_print = Instant::now();
            eprintln!(
                "  … {}/{} connections ready, {} failed",
                self.ok, self.count, self.failed
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate_and_stay_in_range() -> Result<()> {
        let sources = SourceAddrs::new(3)?;
        let got: Vec<Ipv4Addr> = (0..7).map(|i| sources.for_index(i)).collect();
        let a = |d| Ipv4Addr::new(127, 0, 0, d);
        assert_eq!(got, vec![a(1), a(2), a(3), a(1), a(2), a(3), a(1)]);

        let widest = SourceAddrs::new(254)?;
        assert_eq!(widest.for_index(253), a(254));
        assert_eq!(widest.for_index(254), a(1));
        assert!(SourceAddrs::new(0).is_err());
        assert!(SourceAddrs::new(255).is_err());
        Ok(())
    }

    #[test]
    fn default_options_match_the_command_line_defaults() -> Result<()> {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectOpts,
        }
        let parsed = Cli::try_parse_from(["bench"])?.connect;
        let default = ConnectOpts::default();
        assert_eq!(parsed.source_addrs, default.source_addrs);
        assert_eq!(parsed.ramp_per_sec, default.ramp_per_sec);
        assert_eq!(parsed.in_flight, default.in_flight);
        assert_eq!(parsed.connect_timeout_ms, default.connect_timeout_ms);
        Ok(())
    }

    #[test]
    fn rooms_are_spread_only_when_asked() {
        let one = Handshake::Join {
            base: "r".into(),
            rooms: 1,
        };
        assert_eq!(one.room_for(5).as_deref(), Some("r"));
        let three = Handshake::Join {
            base: "r".into(),
            rooms: 3,
        };
        assert_eq!(three.room_for(4).as_deref(), Some("r-1"));
        assert_eq!(Handshake::None.room_for(0), None);
    }

    #[tokio::test]
    async fn target_parses_ws_urls_and_rejects_others() -> Result<()> {
        let t = Target::resolve("ws://127.0.0.1:9/ws", 4).await?;
        assert_eq!(t.addr, "127.0.0.1:9".parse::<SocketAddr>()?);
        assert_eq!(t.sources, Some(SourceAddrs::new(4)?));
        let no_rotation = Target::resolve("ws://127.0.0.1:9/ws", 0).await?;
        assert_eq!(no_rotation.sources, None);
        assert!(Target::resolve("http://127.0.0.1:9/ws", 4).await.is_err());
        assert!(Target::resolve("wss://127.0.0.1:9/ws", 4).await.is_err());
        Ok(())
    }
}
