//! The baseline server: the least a hub can do on the same WebSocket stack, to measure
//! Switchboard against in the same run.
//!
//! A ratio against a fixed reference tells more than an absolute number on a shared
//! 2-core machine whose speed drifts from run to run. This server is that reference: plain
//! tokio + tokio-tungstenite configured the way the design notes recommend (4 KiB read
//! buffer, capped write buffer, TCP_NODELAY), and only the fan-out path:
//!
//! - on connect it sends `{"type":"welcome",…}` (except on `/echo`);
//! - `join` adds the connection to the room's member list and replies `joined`;
//! - `publish` encodes ONE `message` frame into a shared, reference-counted buffer and
//!   pushes a clone of it into every member's bounded queue; a member whose queue is
//!   full is dropped from the room and closed with 4008 (slow consumer);
//! - each connection's writer drains everything queued, then flushes once;
//! - on the path `/echo` every text or binary frame is sent back unchanged.
//!
//! No history, presence events, hooks, auth, metrics or limits: whatever Switchboard
//! costs beyond this is the price of its features. Every path is accepted.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, accept_hdr_async_with_config};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 = any free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Outbound queue bound per connection, in messages.
    #[arg(long, default_value_t = 1024)]
    pub queue_size: usize,
}

/// Time limit for a client's upgrade request.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Time given to a close frame for a kicked client (it is probably not reading).
const CLOSE_LIMIT: Duration = Duration::from_secs(1);
/// Close code for a slow consumer (PROTOCOL §6).
const SLOW_CONSUMER: u16 = 4008;

fn server_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(64 * 1024))
}

/// A member of a room: where to push its frames, and how to kick it.
#[derive(Clone)]
struct Peer {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    kick: Arc<Notify>,
}

impl Peer {
    /// Queues a frame; a full queue kicks the peer. Returns false when the peer is gone.
    fn push(&self, frame: Utf8Bytes) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.kick.notify_one();
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Default)]
struct Room {
    offset: u64,
    members: Vec<Peer>,
}

/// Every room, behind one lock: the baseline keeps it simple on purpose.
struct Hub {
    rooms: Mutex<HashMap<String, Room>>,
    next_id: AtomicU64,
    queue_size: usize,
}

/// A client request, decoded once; `data` stays raw JSON and is never re-encoded.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    exclude_self: bool,
}

/// The one frame built per publish.
#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    data: &'a RawValue,
    from: &'a str,
    connection_id: &'a str,
    offset: u64,
    ts: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn error_frame(id: Option<&serde_json::Value>, code: &str, message: &str) -> Utf8Bytes {
    let mut error = serde_json::json!({ "type": "error", "code": code, "message": message });
    if let Some(id) = id {
        error["id"] = id.clone();
    }
    error.to_string().into()
}

/// One protocol connection as the hub sees it.
struct Session {
    me: Peer,
    connection_id: String,
    joined: Vec<String>,
}

impl Hub {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles one text frame from `session`.
    fn handle(&self, session: &mut Session, text: &str) -> Result<()> {
        let Ok(request) = serde_json::from_str::<Incoming>(text) else {
            session
                .me
                .push(error_frame(None, "BAD_REQUEST", "malformed message"));
            return Ok(());
        };
        let id = request.id.as_ref();
        match (request.kind.as_ref(), request.room.as_deref()) {
            ("join", Some(room)) => {
                let offset = {
                    let mut rooms = self.rooms();
                    let entry = rooms.entry(room.to_owned()).or_default();
                    if !session.joined.iter().any(|r| r == room) {
                        entry.members.push(session.me.clone());
                        session.joined.push(room.to_owned());
                    }
                    entry.offset
                };
                let mut reply = serde_json::json!({
                    "type": "joined", "room": room, "epoch": "baseline", "offset": offset,
                    "members": [], "recovered": [], "recovered_complete": true,
                });
                if let Some(id) = id {
                    reply["id"] = id.clone();
                }
                session.me.push(reply.to_string().into());
            }
            ("publish", Some(room)) => {
                let Some(data) = request.data else {
                    session
                        .me
                        .push(error_frame(id, "BAD_REQUEST", "publish without data"));
                    return Ok(());
                };
                if !session.joined.iter().any(|r| r == room) {
                    session
                        .me
                        .push(error_frame(id, "NOT_IN_ROOM", "join the room first"));
                    return Ok(());
                }
                let mut rooms = self.rooms();
                let Some(entry) = rooms.get_mut(room) else {
                    return Ok(());
                };
                entry.offset += 1;
                let frame: Utf8Bytes = serde_json::to_string(&Outgoing {
                    kind: "message",
                    room,
                    data,
                    from: &session.connection_id,
                    connection_id: &session.connection_id,
                    offset: entry.offset,
                    ts: now_ms(),
                })
                .context("cannot encode a message")?
                .into();
                let sender = session.me.id;
                let skip_sender = request.exclude_self;
                entry
                    .members
                    .retain(|m| (skip_sender && m.id == sender) || m.push(frame.clone()));
            }
            _ => {
                session.me.push(error_frame(
                    id,
                    "BAD_REQUEST",
                    "the baseline server understands only join and publish",
                ));
            }
        }
        Ok(())
    }

    fn leave_all(&self, session: &Session) {
        let mut rooms = self.rooms();
        for name in &session.joined {
            if let Some(room) = rooms.get_mut(name) {
                room.members.retain(|m| m.id != session.me.id);
                if room.members.is_empty() {
                    rooms.remove(name);
                }
            }
        }
    }
}

/// Runs the baseline server until SIGINT or SIGTERM.
pub async fn run(args: &Args) -> Result<()> {
    let socket = match args.listen {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("cannot create the listening socket")?;
    socket.set_reuseaddr(true).context("SO_REUSEADDR")?;
    socket
        .bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listener = socket.listen(4096).context("listen failed")?;
    let addr = listener.local_addr().context("no local address")?;
    eprintln!("listening on http://{addr}");

    let hub = Arc::new(Hub {
        rooms: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        queue_size: args.queue_size.max(1),
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let hub = Arc::clone(&hub);
                    tokio::spawn(async move {
                        // A failed connection only concerns that client.
                        let _ = serve(stream, hub).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    eprintln!("baseline server stopped");
    Ok(())
}

async fn serve(stream: TcpStream, hub: Arc<Hub>) -> Result<()> {
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let mut path = String::new();
    // The error type is fixed by tungstenite's `Callback` trait.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let ws = tokio::time::timeout(
        HANDSHAKE_LIMIT,
        accept_hdr_async_with_config(stream, callback, Some(server_config())),
    )
    .await
    .context("upgrade timed out")?
    .context("upgrade failed")?;
    if path == "/echo" {
        echo(ws).await
    } else {
        protocol(ws, &path, &hub).await
    }
}

/// Echo endpoint: every data frame back, unchanged.
async fn echo(mut ws: WebSocketStream<TcpStream>) -> Result<()> {
    while let Some(frame) = ws.next().await {
        match frame? {
            frame @ (Message::Text(_) | Message::Binary(_)) => ws.send(frame).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Protocol endpoint: a reader handling requests, a writer draining the queue.
async fn protocol(ws: WebSocketStream<TcpStream>, path: &str, hub: &Hub) -> Result<()> {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let connection_id = format!("baseline-{id}");
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(hub.queue_size);
    let kick = Arc::new(Notify::new());
    let mut session = Session {
        me: Peer {
            id,
            tx,
            kick: Arc::clone(&kick),
        },
        connection_id,
        joined: Vec::new(),
    };
    let welcome = serde_json::json!({
        "type": "welcome", "connection_id": session.connection_id,
        "client_id": session.connection_id, "node_id": "baseline", "path": path,
        "server_time": now_ms(), "heartbeat_ms": 0, "protocol": 1,
    });
    session.me.push(welcome.to_string().into());

    let (mut sink, mut stream) = ws.split();
    let queue_size = hub.queue_size;
    let writer = async {
        while let Some(first) = rx.recv().await {
            sink.feed(Message::Text(first)).await?;
            // Everything already queued goes out with one flush.
            for _ in 0..queue_size {
                match rx.try_recv() {
                    Ok(next) => sink.feed(Message::Text(next)).await?,
                    Err(_) => break,
                }
            }
            sink.flush().await?;
        }
        anyhow::Ok(())
    };
    let reader = async {
        while let Some(frame) = stream.next().await {
            match frame? {
                Message::Text(text) => hub.handle(&mut session, text.as_str())?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        anyhow::Ok(())
    };
    let (result, kicked) = tokio::select! {
        r = writer => (r, false),
        r = reader => (r, false),
        () = kick.notified() => (Ok(()), true),
    };
    hub.leave_all(&session);
    if kicked {
        let close = CloseFrame {
            code: CloseCode::from(SLOW_CONSUMER),
            reason: "slow consumer".into(),
        };
        // The client is probably not reading: try briefly, then drop the socket.
        let _ = tokio::time::timeout(CLOSE_LIMIT, sink.send(Message::Close(Some(close)))).await;
    }
    result
}
