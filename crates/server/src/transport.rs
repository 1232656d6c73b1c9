//! The hub's [`Transport`] over a tokio-tungstenite WebSocket.
//!
//! Reading, control frames and the closing handshake are tungstenite's. Outgoing data
//! frames are not: a batch is framed into one scratch buffer and written to the socket
//! directly, after tungstenite's own buffer has been flushed. That saves a copy per
//! frame and a UTF-8 re-validation per recipient, and — the reason it exists — it keeps
//! memory flat: tungstenite's write buffer keeps the capacity of the largest batch it
//! ever held for the life of the connection, while ours is freed after a burst.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{Incoming, Outgoing, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A tokio-tungstenite WebSocket as a hub transport.
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// The batch being written, as ready-made frames; emptied after every batch.
    scratch: Vec<u8>,
}

impl<S> WsTransport<S> {
    /// Wraps an established WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsTransport {
            ws,
            scratch: Vec::new(),
        }
    }
}

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
/// Scratch capacity kept between batches; larger buffers are freed after use.
const SCRATCH_KEEP: usize = 2 * 1024;

/// Appends one final, unmasked server frame (RFC 6455 §5.2) to `out`.
fn frame_into(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn map_err(e: WsError) -> TransportError {
    match e {
        WsError::Capacity(_) => TransportError::TooBig,
        WsError::Utf8(_) => TransportError::InvalidUtf8,
        WsError::Protocol(p) => TransportError::Protocol(p.to_string()),
        other => TransportError::Io(other.to_string()),
    }
}

/// The close frame for `Close`; data frames never go through tungstenite's writer.
fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: truncate_reason(reason).into(),
    }))
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
            // The peer dropped TCP without a closing handshake: it is gone, not a
            // protocol offender, and there is nobody left to send a close frame to.
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => return None,
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
        // Whatever tungstenite queued itself (pongs, a close reply) goes out first and
        // whole, so that our frames never land in the middle of one of its frames.
        match self.ws.flush().await {
            Ok(()) => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Ok(()),
            Err(e) => return Err(map_err(e)),
        }
        let data_end = batch
            .iter()
            .position(|o| matches!(o, Outgoing::Close(..)))
            .unwrap_or(batch.len());
        if data_end > 0 {
            self.scratch.clear();
            for o in &batch[..data_end] {
                match o {
                    Outgoing::Text(b) => frame_into(&mut self.scratch, OPCODE_TEXT, b),
                    Outgoing::Binary(b) => frame_into(&mut self.scratch, OPCODE_BINARY, b),
                    // Only for transports that negotiated compression (`crate::deflate`).
                    Outgoing::Compressed { .. } | Outgoing::Close(..) => {}
                }
            }
            let io = self.ws.get_mut();
            io.write_all(&self.scratch)
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            io.flush()
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            // A burst must not pin a large buffer for the rest of the connection's life.
            if self.scratch.capacity() > SCRATCH_KEEP {
                self.scratch = Vec::new();
            }
        }
        // Close frames go through tungstenite so that it tracks the closing handshake.
        for o in &batch[data_end..] {
            let Outgoing::Close(code, reason) = o else {
                continue;
            };
            match self.ws.feed(close_message(*code, reason)).await {
                Ok(()) => {}
                // A close already under way: nothing more can be written, which is fine.
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Protocol(_)) => {
                    return Ok(());
                }
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

#[cfg(test)]
mod tests {
    use super::frame_into;

    #[test]
    fn frames_use_the_shortest_length_encoding() {
        let mut out = Vec::new();
        frame_into(&mut out, 0x1, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        frame_into(&mut out, 0x2, &[7; 200]);
        assert_eq!(&out[..4], &[0x82, 126, 0, 200]);
        assert_eq!(out.len(), 4 + 200);
        out.clear();
        frame_into(&mut out, 0x1, &vec![0; 70_000]);
        assert_eq!(&out[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(out[2..10].try_into().unwrap()), 70_000);
    }
}
