//! Running one connection over any transport.
//!
//! A transport is anything that can receive frames and write batches of frames:
//! implement [`Transport`] (the server does it for tokio-tungstenite; the
//! `plain_tungstenite` example does it without axum) and hand it to [`run`]. The driver
//! owns the connection's whole life: it reads frames and feeds them to the hub, writes
//! whatever the hub queued — everything ready, then one flush — pings on schedule, closes
//! silent peers, and tells the hub when the connection is gone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_protocol::{CloseCode, ServerMessage};

use crate::auth::ExpiryStep;
use crate::clock::now_ms;
use crate::connection::Connection;
use crate::endpoint::Mode;
use crate::frame::{FrameCompressor, Outgoing, Payload};
use crate::hooks::HookSet;
use crate::hub::Hub;
use crate::ratelimit::{MessageLimiter, Verdict};

/// A frame received from the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A complete text message (already checked to be UTF-8).
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping (the transport answers it itself).
    Ping,
    /// A pong, with the payload of the ping it answers.
    Pong(Bytes),
    /// The peer sent a close frame.
    Close(Option<u16>),
}

/// Why a transport failed; each maps to the close code sent back, when one can be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransportError {
    /// A frame or message over `max_message_size` (close 1009).
    #[error("message too big")]
    TooBig,
    /// A text message that is not UTF-8 (close 1007).
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A message whose payload is not what its frame says, such as compressed data that
    /// does not inflate (close 1007).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// A WebSocket protocol violation (close 1002).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The connection is gone (no close frame can be sent).
    #[error("connection lost: {0}")]
    Io(String),
}

impl TransportError {
    /// The close code to send for this error, if the peer can still be told.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            TransportError::TooBig => Some(CloseCode::TOO_BIG),
            TransportError::InvalidUtf8 | TransportError::InvalidPayload(_) => {
                Some(CloseCode::INVALID_PAYLOAD)
            }
            TransportError::Protocol(_) => Some(CloseCode::PROTOCOL_ERROR),
            TransportError::Io(_) => None,
        }
    }
}

/// A bidirectional message transport for one connection.
///
/// `recv` must be cancel-safe: the driver races it against the outbound queue and the
/// heartbeat timer, and drops it when another branch wins.
pub trait Transport: Send {
    /// The next frame; `None` when the peer is gone.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Incoming, TransportError>>> + Send;
    /// Writes every frame of `batch` (a `Close` last, if any), then flushes once.
    fn send_batch(
        &mut self,
        batch: &[Outgoing],
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Sends a ping with this payload.
    fn ping(&mut self, payload: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// A compressor whose output every connection with the same settings can share, when
    /// the transport negotiated one: the driver then hands it [`Outgoing::Compressed`]
    /// frames, compressed once per message for all recipients. `None` (the default):
    /// frames come uncompressed, and the transport compresses them itself if it must.
    fn shared_compressor(&self) -> Option<Arc<dyn FrameCompressor>> {
        None
    }
}

/// How a connection ended, for logs and the `close` hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The close code sent or received, if any.
    pub code: Option<u16>,
    /// Why.
    pub reason: String,
}

/// Drives `conn` over `transport` until it ends, then unregisters it from the hub.
pub async fn run<T: Transport>(hub: &Hub, conn: Arc<Connection>, mut transport: T) -> Ended {
    let ended = drive(hub, &conn, &mut transport).await;
    hub.disconnected(&conn, ended.code, &ended.reason).await;
    ended
}

async fn drive<T: Transport>(hub: &Hub, conn: &Arc<Connection>, transport: &mut T) -> Ended {
    let rules = conn.endpoint().clone();
    let ping_every = rules.ping_interval.max(Duration::from_millis(10));
    let timeout = rules.connection_timeout;
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    // The last sign of life, on the monotonic clock: the connection is closed exactly
    // `connection_timeout` after it, not at the next ping tick.
    let mut alive_at = tokio::time::Instant::now();
    let mut watch = Watch::new(conn);
    // One timer for the connection's whole life, moved only when its deadline changes:
    // creating a fresh `Sleep` on every loop turn would touch the runtime's timer wheel
    // once per delivered message.
    let mut deadline = watch.due(next_ping, alive_at + timeout);
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut limiter = MessageLimiter::new(rules.rate_limit);
    // Set once a 4029 close is queued: whatever the client sends meanwhile is ignored.
    let mut closing = false;
    let mut batch = Vec::new();
    let mut sample = None;
    let encoding = conn.encoding();
    let compressor = transport.shared_compressor();
    loop {
        tokio::select! {
            more = conn.queue().next_batch_with(&mut batch, encoding, compressor.as_deref(), &mut sample) => {
                let close = batch.iter().find_map(|o| match o {
                    Outgoing::Close(code, reason) => Some((*code, reason.clone())),
                    _ => None,
                });
                if let Err(e) = transport.send_batch(&batch).await {
                    return Ended { code: None, reason: e.to_string() };
                }
                if let Some(at) = sample.take() {
                    hub.stats().record_delivery(at.elapsed().as_secs_f64());
                }
                let bytes: usize = batch.iter().map(Outgoing::len).sum();
                conn.traffic_out.add(batch.len() as u64, bytes as u64);
                batch.clear();
                // Do not let one burst pin a large batch buffer for the connection's life.
                if batch.capacity() > 64 {
                    batch.shrink_to(16);
                }
                if !more {
                    let (code, reason) = close.unwrap_or((CloseCode::NORMAL.0, String::new()));
                    if closing {
                        linger(transport).await;
                    }
                    return Ended { code: Some(code), reason };
                }
            }
            frame = transport.recv() => {
                let frame = match frame {
                    None => return Ended { code: None, reason: "peer went away".into() },
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        if let Some(code) = e.close_code() {
                            let _ = transport.send_batch(&[Outgoing::Close(code.0, e.to_string())]).await;
                            return Ended { code: Some(code.0), reason: e.to_string() };
                        }
                        return Ended { code: None, reason: e.to_string() };
                    }
                };
                conn.touch();
                if let Incoming::Text(b) | Incoming::Binary(b) = &frame {
                    conn.traffic_in.add(1, b.len() as u64);
                    watch.first_message = None;
                    if closing {
                        continue;
                    }
                    match limiter.check(std::time::Instant::now()) {
                        Verdict::Allow => {}
                        Verdict::Reject => {
                            if rules.mode == Mode::Protocol {
                                hub.reject_rate_limited(conn, b).await;
                            }
                            continue;
                        }
                        Verdict::Close => {
                            closing = true;
                            conn.queue().close(CloseCode::RATE_LIMITED.0, "rate limited");
                            continue;
                        }
                    }
                }
                alive_at = tokio::time::Instant::now();
                let due = watch.due(next_ping, alive_at + timeout);
                if due != deadline {
                    deadline = due;
                    timer.as_mut().reset(deadline);
                }
                match frame {
                    Incoming::Text(bytes) | Incoming::Binary(bytes) if rules.mode == Mode::Protocol => {
                        // Boxed so that the (large) request-handling state is allocated only
                        // while a request runs, not carried by every idle connection's task.
                        Box::pin(hub.handle_frame(conn, &bytes)).await;
                        // A `refresh` may have moved the token's expiry.
                        if rules.verifier.is_some() {
                            watch.check_expiry(conn);
                            let due = watch.due(next_ping, alive_at + timeout);
                            if due != deadline {
                                deadline = due;
                                timer.as_mut().reset(deadline);
                            }
                        }
                    }
                    Incoming::Text(bytes) => deliver_plain(hub, conn, rules.mode, bytes, true),
                    Incoming::Binary(bytes) => deliver_plain(hub, conn, rules.mode, bytes, false),
                    Incoming::Ping => {}
                    Incoming::Pong(payload) => {
                        let rtt = rtt_from(&payload);
                        if let Some(rtt) = rtt {
                            conn.set_rtt_ms(rtt);
                        }
                        if let Some(h) = hub.hook(HookSet::PONG) {
                            h.on_pong(conn, rtt).await;
                        }
                    }
                    Incoming::Close(code) => {
                        // The transport has answered the close; write that answer out.
                        let _ = transport.send_batch(&[]).await;
                        // A close frame without a code is reported as 1005 (RFC 6455 §7.4.1).
                        return Ended { code: Some(code.unwrap_or(1005)), reason: "closed by peer".into() };
                    }
                }
            }
            () = &mut timer => {
                let silent = if alive_at.elapsed() >= timeout {
                    Some("heartbeat timeout")
                } else if watch
                    .first_message
                    .is_some_and(|t| tokio::time::Instant::now() >= t)
                {
                    Some("no message received in time")
                } else {
                    None
                };
                if let Some(reason) = silent {
                    let reason = reason.to_owned();
                    let _ = transport
                        .send_batch(&[Outgoing::Close(CloseCode::POLICY.0, reason.clone())])
                        .await;
                    return Ended { code: Some(CloseCode::POLICY.0), reason };
                }
                watch.check_expiry(conn);
                if tokio::time::Instant::now() < next_ping {
                    deadline = watch.due(next_ping, alive_at + timeout);
                    timer.as_mut().reset(deadline);
                    continue;
                }
                let stamp = Bytes::copy_from_slice(&now_ms().to_be_bytes());
                if let Err(e) = transport.ping(stamp).await {
                    return Ended { code: None, reason: e.to_string() };
                }
                next_ping = tokio::time::Instant::now() + ping_every;
                deadline = watch.due(next_ping, alive_at + timeout);
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// The deadlines a connection's timer watches besides pings and the heartbeat: the
/// first data frame (when `first_message_timeout` is set) and the token's expiry.
struct Watch {
    /// Close with 1008 if no data frame has arrived by then.
    first_message: Option<tokio::time::Instant>,
    /// The next expiry step (warning or close), as a wall-clock time in ms.
    expiry_at: Option<i64>,
    /// Wall-clock ms and the monotonic instant of the same moment, so that an expiry in
    /// ms always converts to the same instant (an unchanged deadline never moves the
    /// timer).
    base: (i64, tokio::time::Instant),
    warn_ms: i64,
}

impl Watch {
    fn new(conn: &Connection) -> Self {
        let rules = conn.endpoint();
        let now = tokio::time::Instant::now();
        let first = rules.first_message_timeout;
        let mut w = Watch {
            first_message: (!first.is_zero()).then(|| now + first),
            expiry_at: None,
            base: (now_ms(), now),
            warn_ms: i64::try_from(rules.expiry_warning.as_millis()).unwrap_or(i64::MAX),
        };
        w.check_expiry(conn);
        w
    }

    /// Sends `token_expiring` or closes with 4001 when their time has come, and notes
    /// when to look again. A `refresh` moves the expiry; the next look sees it.
    fn check_expiry(&mut self, conn: &Connection) {
        self.expiry_at = match conn.expiry_step(now_ms(), self.warn_ms) {
            ExpiryStep::Wait(at) => at,
            ExpiryStep::Warn { expires_at } => {
                let left = expires_at.saturating_sub(now_ms()).max(0);
                conn.send(Payload::msg(ServerMessage::TokenExpiring {
                    expires_in_ms: left as u64,
                    expires_at,
                }));
                Some(expires_at)
            }
            ExpiryStep::Expired => {
                conn.queue()
                    .close(CloseCode::UNAUTHORIZED.0, "token expired");
                None
            }
        };
    }

    /// The timer's next deadline: the earliest of `base` (ping or heartbeat) and ours.
    fn due(
        &mut self,
        base: tokio::time::Instant,
        heartbeat: tokio::time::Instant,
    ) -> tokio::time::Instant {
        let mut due = base.min(heartbeat);
        if let Some(t) = self.first_message {
            due = due.min(t);
        }
        if let Some(at) = self.expiry_at {
            let (ms0, t0) = self.base;
            let ahead = u64::try_from(at.saturating_sub(ms0)).unwrap_or(0);
            due = due.min(t0 + Duration::from_millis(ahead));
        }
        due
    }
}

/// How long a connection closed for flooding may take to answer the close frame.
const LINGER: Duration = Duration::from_secs(2);

/// After closing a flooding client: read and discard what it still sends until its close
/// reply (or [`LINGER`]). Dropping the socket with unread input would make the kernel
/// answer with a reset, and a reset can destroy the close frame and the errors before it
/// in the client's receive buffer — it would never learn why it was closed.
async fn linger<T: Transport>(transport: &mut T) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(frame)) = transport.recv().await {
            if let Incoming::Close(_) = frame {
                let _ = transport.send_batch(&[]).await;
                break;
            }
        }
    })
    .await;
}

/// Raw and echo endpoints: no envelope, the frame goes on unchanged.
fn deliver_plain(hub: &Hub, conn: &Arc<Connection>, mode: Mode, bytes: Bytes, text: bool) {
    match mode {
        Mode::Echo => {
            conn.send(Payload::Raw { bytes, text });
        }
        Mode::Raw => hub.relay_raw(conn, bytes, text),
        Mode::Protocol => {}
    }
}

/// Our pings carry the send time; a pong echoing one gives the round trip.
fn rtt_from(payload: &[u8]) -> Option<u64> {
    let sent = i64::from_be_bytes(payload.try_into().ok()?);
    let rtt = now_ms() - sent;
    (0..600_000).contains(&rtt).then_some(rtt as u64)
}
