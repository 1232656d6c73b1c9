//! The hub's [`Transport`] over a tokio-tungstenite WebSocket.
//!
//! Outgoing text frames are written as ready-made frames rather than `Message::Text`, so
//! tungstenite does not re-validate UTF-8 for every recipient of a broadcast: the bytes
//! were produced by our encoder (or validated once on receipt, for raw relays).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{Incoming, Outgoing, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A tokio-tungstenite WebSocket as a hub transport.
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
}

impl<S> WsTransport<S> {
    /// Wraps an established WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsTransport { ws }
    }
}

fn map_err(e: WsError) -> TransportError {
    match e {
        WsError::Capacity(_) => TransportError::TooBig,
        WsError::Utf8(_) => TransportError::InvalidUtf8,
        WsError::Protocol(p) => TransportError::Protocol(p.to_string()),
        other => TransportError::Io(other.to_string()),
    }
}

fn to_message(o: &Outgoing) -> Message {
    match o {
        Outgoing::Text(b) => {
            Message::Frame(Frame::message(b.clone(), OpCode::Data(Data::Text), true))
        }
        Outgoing::Binary(b) => Message::Binary(b.clone()),
        Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
            code: CloseCode::from(*code),
            reason: truncate_reason(reason).into(),
        })),
    }
}

/// Close reasons must fit a control frame (123 bytes after the code).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl<S> Transport for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        let msg = match self.ws.next().await? {
            Ok(m) => m,
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return None,
            Err(e) => return Some(Err(map_err(e))),
        };
        Some(Ok(match msg {
            Message::Text(t) => Incoming::Text(Bytes::from(t)),
            Message::Binary(b) => Incoming::Binary(b),
            Message::Ping(_) => Incoming::Ping,
            Message::Pong(p) => Incoming::Pong(p),
            Message::Close(f) => Incoming::Close(f.map(|f| u16::from(f.code))),
            // Raw frames are never produced when reading.
            Message::Frame(_) => Incoming::Ping,
        }))
    }

    async fn send_batch(&mut self, batch: &[Outgoing]) -> Result<(), TransportError> {
        for o in batch {
            match self.ws.feed(to_message(o)).await {
                Ok(()) => {}
                // A close already under way: nothing more can be written, which is fine.
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Ok(()),
                Err(WsError::Protocol(_)) if matches!(o, Outgoing::Close(..)) => return Ok(()),
                Err(e) => return Err(map_err(e)),
            }
        }
        match self.ws.flush().await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.ws.send(Message::Ping(payload)).await.map_err(map_err)
    }
}
