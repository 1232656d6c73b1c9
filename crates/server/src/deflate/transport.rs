//! The hub's [`Transport`] for connections that negotiated permessage-deflate.
//!
//! tungstenite refuses any frame with RSV1 set, so this transport does its own framing
//! on the upgraded socket: it reads and checks client frames (`frames.rs`), reassembles
//! fragmented messages, inflates compressed ones with the decompressed size capped at
//! `max_message_size`, validates UTF-8 after inflating, answers pings and the closing
//! handshake, and writes batches of frames with one write and one flush, like the plain
//! transport (`crate::transport`).
//!
//! `recv` is cancel-safe: everything it has read lives in `self`, a frame is consumed
//! only once complete and handled without awaiting, and pending control frames are
//! written with plain `write` calls that either wrote some bytes (which are then dropped
//! from the queue) or none.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Decompress};
use switchboard_hub::{FrameCompressor, Incoming, Outgoing, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{self, InflateError, SharedDeflater};
use super::frames::{self, Header, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use super::{Agreement, DeflateConfig};

/// Read buffer capacity kept between messages (as for the plain transport).
const READ_KEEP: usize = 2 * 1024;
/// Write buffer capacity kept between batches.
const SCRATCH_KEEP: usize = 2 * 1024;

/// A message being reassembled from its frames.
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
}

/// How outbound messages are compressed on this connection.
enum Outbound {
    /// No server context takeover: the driver hands us frames already compressed once
    /// per message for every recipient with these settings.
    Shared(Arc<SharedDeflater>),
    /// Server context takeover: this connection's own compressor, which remembers what
    /// it sent before.
    Own {
        compressor: Box<Compress>,
        min_bytes: usize,
    },
}

/// A permessage-deflate WebSocket connection as a hub transport.
pub struct DeflateTransport<S> {
    io: S,
    rbuf: BytesMut,
    /// Pongs and the close reply, written before anything else.
    control: Vec<u8>,
    /// The batch being written.
    scratch: Vec<u8>,
    partial: Option<Partial>,
    max_message_size: usize,
    outbound: Outbound,
    /// Client context takeover: the inflater that remembers earlier messages. Without
    /// it, messages are inflated with a per-thread inflater.
    inflater: Option<Box<Decompress>>,
    /// A close frame was received: nothing more is read.
    close_received: bool,
    /// A close frame was sent: nothing more is written.
    close_sent: bool,
}

impl<S> DeflateTransport<S> {
    /// Wraps an upgraded socket that agreed on `agreement` under `config`.
    pub fn new(
        io: S,
        agreement: &Agreement,
        config: &DeflateConfig,
        max_message_size: usize,
    ) -> Self {
        let outbound = if agreement.server_no_context_takeover {
            Outbound::Shared(Arc::new(SharedDeflater {
                level: config.level,
                bits: agreement.server_max_window_bits,
                min_bytes: config.min_bytes,
            }))
        } else {
            Outbound::Own {
                compressor: Box::new(codec::compressor(
                    config.level,
                    agreement.server_max_window_bits,
                )),
                min_bytes: config.min_bytes,
            }
        };
        DeflateTransport {
            io,
            rbuf: BytesMut::with_capacity(READ_KEEP),
            control: Vec::new(),
            scratch: Vec::new(),
            partial: None,
            max_message_size,
            outbound,
            inflater: (!agreement.client_no_context_takeover)
                .then(|| Box::new(codec::inflater(agreement.client_max_window_bits))),
            close_received: false,
            close_sent: false,
        }
    }

    /// Compressed payloads may come out slightly larger than what they hold (stored
    /// blocks of incompressible data): allow for that before inflating decides.
    fn max_compressed(&self) -> usize {
        self.max_message_size
            .saturating_add(self.max_message_size / 1024)
            .saturating_add(1024)
    }

    /// Takes one complete frame off the read buffer and handles it; `Ok(None)` when more
    /// bytes are needed or the frame produced nothing for the driver.
    fn next_frame(&mut self) -> Result<Option<Option<Incoming>>, TransportError> {
        let Some(h) = frames::parse_header(&self.rbuf, self.max_compressed())? else {
            return Ok(None);
        };
        // Size limits apply before the payload is read: a plain message may not exceed
        // `max_message_size`, a compressed one gets a little slack here and is held to
        // `max_message_size` once inflated.
        let (so_far, compressed) = match (&self.partial, h.opcode) {
            (Some(p), OP_CONT) => (p.data.len(), p.compressed),
            (_, OP_TEXT | OP_BINARY) => (0, h.rsv1),
            _ => (0, true),
        };
        let limit = if compressed {
            self.max_compressed()
        } else {
            self.max_message_size
        };
        if !h.is_control() && so_far.saturating_add(h.len) > limit {
            return Err(TransportError::TooBig);
        }
        let total = h.header_len + h.len;
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            return Ok(None);
        }
        self.rbuf.advance(h.header_len);
        frames::unmask(&mut self.rbuf[..h.len], h.mask);
        let result = self.on_frame(h);
        self.rbuf.advance(h.len);
        result.map(Some)
    }

    /// Handles a frame whose unmasked payload is `self.rbuf[..h.len]`.
    fn on_frame(&mut self, h: Header) -> Result<Option<Incoming>, TransportError> {
        let payload = &self.rbuf[..h.len];
        match h.opcode {
            OP_PING => {
                // Nothing, not even a pong, may follow our close frame.
                if !self.close_sent {
                    frames::write_frame(&mut self.control, OP_PONG, false, payload);
                }
                Ok(Some(Incoming::Ping))
            }
            OP_PONG => Ok(Some(Incoming::Pong(Bytes::copy_from_slice(payload)))),
            OP_CLOSE => {
                let code = frames::parse_close(payload)?;
                self.close_received = true;
                if !self.close_sent {
                    frames::write_close(&mut self.control, code, "");
                    self.close_sent = true;
                }
                Ok(Some(Incoming::Close(code)))
            }
            OP_TEXT | OP_BINARY => {
                if self.partial.is_some() {
                    return Err(TransportError::Protocol(
                        "new data frame while a fragmented message is open".into(),
                    ));
                }
                let part = Partial {
                    text: h.opcode == OP_TEXT,
                    compressed: h.rsv1,
                    data: payload.to_vec(),
                };
                if h.fin {
                    return self.finish(part).map(Some);
                }
                self.partial = Some(part);
                Ok(None)
            }
            OP_CONT => {
                let Some(part) = self.partial.as_mut() else {
                    return Err(TransportError::Protocol(
                        "continuation frame without a message to continue".into(),
                    ));
                };
                part.data.extend_from_slice(payload);
                if !h.fin {
                    return Ok(None);
                }
                match self.partial.take() {
                    Some(part) => self.finish(part).map(Some),
                    None => Ok(None),
                }
            }
            _ => Err(TransportError::Protocol("unknown opcode".into())),
        }
    }

    /// A complete message: inflated if compressed, UTF-8 checked if text.
    fn finish(&mut self, part: Partial) -> Result<Incoming, TransportError> {
        let data = if part.compressed {
            let mut out = Vec::new();
            let r = match self.inflater.as_deref_mut() {
                Some(d) => codec::inflate_into(d, &part.data, self.max_message_size, &mut out).map(
                    |ended| {
                        // The client ended its DEFLATE stream: the next message starts a
                        // fresh one.
                        if ended {
                            d.reset(false);
                        }
                    },
                ),
                None => codec::inflate_alone(&part.data, self.max_message_size, &mut out),
            };
            match r {
                Ok(()) => out,
                Err(InflateError::TooBig) => return Err(TransportError::TooBig),
                // RFC 7692 only says to fail the connection; 1007 says what is wrong
                // (the payload is not what its frame claims) rather than the framing.
                Err(e @ InflateError::Corrupt(_)) => {
                    return Err(TransportError::InvalidPayload(e.to_string()));
                }
            }
        } else {
            part.data
        };
        if part.text {
            if std::str::from_utf8(&data).is_err() {
                return Err(TransportError::InvalidUtf8);
            }
            Ok(Incoming::Text(Bytes::from(data)))
        } else {
            Ok(Incoming::Binary(Bytes::from(data)))
        }
    }
}

impl<S> DeflateTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Writes the pending control frames (cancel-safe: see the module doc).
    async fn write_control(&mut self) -> Result<(), TransportError> {
        while !self.control.is_empty() {
            let n = self.io.write(&self.control).await.map_err(io_err)?;
            if n == 0 {
                return Err(TransportError::Io("socket closed while writing".into()));
            }
            self.control.drain(..n);
        }
        if self.control.capacity() > 256 {
            self.control = Vec::new();
        }
        self.io.flush().await.map_err(io_err)
    }

    /// Frames one outgoing data message into the scratch buffer.
    fn frame_data(&mut self, text: bool, payload: &[u8]) -> Result<(), TransportError> {
        let opcode = if text { OP_TEXT } else { OP_BINARY };
        match &mut self.outbound {
            Outbound::Own {
                compressor,
                min_bytes,
            } if payload.len() >= *min_bytes => {
                let mut out = Vec::new();
                codec::compress_into(compressor, payload, &mut out)
                    .map_err(|e| TransportError::Io(format!("compression failed: {e}")))?;
                frames::write_frame(&mut self.scratch, opcode, true, &out);
            }
            _ => frames::write_frame(&mut self.scratch, opcode, false, payload),
        }
        Ok(())
    }
}

fn io_err(e: std::io::Error) -> TransportError {
    TransportError::Io(e.to_string())
}

impl<S> Transport for DeflateTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        loop {
            if let Err(e) = self.write_control().await {
                return Some(Err(e));
            }
            if self.close_received {
                return None;
            }
            match self.next_frame() {
                Ok(Some(Some(incoming))) => return Some(Ok(incoming)),
                Ok(Some(None)) => continue,
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 16 * READ_KEEP {
                // A big message grew the buffer; an idle connection gives it back.
                self.rbuf = BytesMut::with_capacity(READ_KEEP);
            }
            if self.rbuf.capacity() == self.rbuf.len() {
                self.rbuf.reserve(READ_KEEP);
            }
            match self.io.read_buf(&mut self.rbuf).await {
                // The peer went away; a half-read frame is simply lost with it.
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(io_err(e))),
            }
        }
    }

    async fn send_batch(&mut self, batch: &[Outgoing]) -> Result<(), TransportError> {
        self.write_control().await?;
        if self.close_sent {
            // After a close frame nothing more may be sent (RFC 6455 §5.5.1). Once the
            // closing handshake is complete, the server ends TCP first (§7.1.1).
            if self.close_received {
                let _ = self.io.shutdown().await;
            }
            return Ok(());
        }
        self.scratch.clear();
        let mut closing = false;
        for o in batch {
            match o {
                Outgoing::Text(b) => self.frame_data(true, b)?,
                Outgoing::Binary(b) => self.frame_data(false, b)?,
                Outgoing::Compressed { text, payload } => {
                    let opcode = if *text { OP_TEXT } else { OP_BINARY };
                    frames::write_frame(&mut self.scratch, opcode, true, payload);
                }
                Outgoing::Close(code, reason) => {
                    frames::write_close(&mut self.scratch, Some(*code), reason);
                    self.close_sent = true;
                    closing = true;
                    break;
                }
            }
        }
        if !self.scratch.is_empty() {
            self.io.write_all(&self.scratch).await.map_err(io_err)?;
            self.io.flush().await.map_err(io_err)?;
        }
        if self.scratch.capacity() > SCRATCH_KEEP {
            self.scratch = Vec::new();
        }
        if closing {
            // The close frame is the last thing we send; say so to TCP as well.
            let _ = self.io.shutdown().await;
        }
        Ok(())
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        if self.close_sent {
            return Ok(());
        }
        frames::write_frame(&mut self.control, OP_PING, false, &payload);
        self.write_control().await
    }

    fn shared_compressor(&self) -> Option<Arc<dyn FrameCompressor>> {
        match &self.outbound {
            Outbound::Shared(d) => Some(d.clone() as Arc<dyn FrameCompressor>),
            Outbound::Own { .. } => None,
        }
    }
}
