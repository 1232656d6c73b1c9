//! Outbound frames, encoded at most once per encoding however many connections get them.
//!
//! A broadcast builds one [`SharedFrame`] and pushes the same `Arc` into every member's
//! queue. The first writer that needs JSON encodes it and caches the bytes; every other
//! writer reuses them (the same for MessagePack). So a room with only JSON members never
//! pays for MessagePack, and nobody encodes a frame per recipient.
//!
//! The same goes for compression: a transport whose extension compresses every message
//! independently of the ones before it (permessage-deflate without server context
//! takeover) hands the driver a [`FrameCompressor`], and the first writer that needs the
//! compressed form of a frame builds it once for every recipient with the same settings.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use switchboard_protocol::{Encoding, ServerMessage, codec};

/// A server message and its lazily built encodings.
#[derive(Debug)]
pub struct SharedFrame {
    msg: ServerMessage,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
    /// The compressed forms (JSON, MessagePack), built on first use; see [`Compressed`].
    compressed: [OnceLock<Compressed>; 2],
    /// Set on sampled room messages: when the frame was built. Only the first writer
    /// records it (`sample_taken`); unsampled frames cost writers one branch.
    sampled_at: Option<std::time::Instant>,
    sample_taken: std::sync::atomic::AtomicBool,
}

impl SharedFrame {
    /// Wraps a message; nothing is encoded yet.
    pub fn new(msg: ServerMessage) -> Arc<Self> {
        Arc::new(SharedFrame {
            msg,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            compressed: [OnceLock::new(), OnceLock::new()],
            sampled_at: None,
            sample_taken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Like [`SharedFrame::new`], carrying its creation time for one latency sample.
    pub fn sampled(msg: ServerMessage) -> Arc<Self> {
        Arc::new(SharedFrame {
            msg,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            compressed: [OnceLock::new(), OnceLock::new()],
            sampled_at: Some(std::time::Instant::now()),
            sample_taken: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The creation time, once: only the first writer of a sampled frame gets it.
    pub fn take_sample(&self) -> Option<std::time::Instant> {
        let at = self.sampled_at?;
        (!self
            .sample_taken
            .swap(true, std::sync::atomic::Ordering::Relaxed))
        .then_some(at)
    }

    /// The message itself.
    pub fn message(&self) -> &ServerMessage {
        &self.msg
    }

    /// The frame payload in `encoding`, encoding it on first use.
    pub fn bytes(&self, encoding: Encoding) -> Bytes {
        let cell = match encoding {
            Encoding::Json => &self.json,
            Encoding::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| match codec::encode(&self.msg, encoding) {
            Ok(b) => b,
            Err(e) => {
                // Only values JSON cannot hold can fail here, and inputs are parsed from
                // JSON or MessagePack-to-JSON, so this is a bug; say so instead of dying.
                tracing::error!(error = %e, "failed to encode an outbound message");
                Bytes::from_static(
                    br#"{"type":"error","code":"INTERNAL","message":"encoding failed"}"#,
                )
            }
        })
        .clone()
    }

    /// The compressed payload in `encoding` for `compressor`'s settings, compressing it on
    /// first use; `None` when the message is sent uncompressed (below the compressor's
    /// minimum size, or not made smaller by it).
    ///
    /// One form is cached per encoding, for the settings (`FrameCompressor::key`) that
    /// asked first; a recipient with other settings (another endpoint's level or window)
    /// gets its own compression, uncached.
    pub fn compressed(
        &self,
        encoding: Encoding,
        compressor: &dyn FrameCompressor,
    ) -> Option<Bytes> {
        let plain = self.bytes(encoding);
        if plain.len() < compressor.min_size() {
            return None;
        }
        let cell = &self.compressed[usize::from(encoding.is_binary())];
        let form = cell.get_or_init(|| Compressed {
            key: compressor.key(),
            bytes: compressor.compress(&plain),
        });
        if form.key == compressor.key() {
            form.bytes.clone()
        } else {
            compressor.compress(&plain)
        }
    }
}

/// A frame's compressed payload and the compressor settings it was built with.
#[derive(Debug)]
struct Compressed {
    key: u64,
    /// `None`: compression did not make it smaller, so it goes out plain.
    bytes: Option<Bytes>,
}

/// Compresses whole message payloads, each independently of every other, for a
/// transport's compression extension. Because the output depends only on the payload and
/// the settings, it can be computed once and sent to every recipient with those settings.
pub trait FrameCompressor: Send + Sync {
    /// Identifies the settings: equal keys must produce identical output for equal input.
    fn key(&self) -> u64;
    /// Payloads shorter than this go out uncompressed.
    fn min_size(&self) -> usize;
    /// The compressed payload, or `None` when it would not be smaller than `payload`.
    fn compress(&self, payload: &[u8]) -> Option<Bytes>;
}

/// One item of a connection's outbound queue.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A protocol message, encoded for the connection's encoding when written.
    Msg(Arc<SharedFrame>),
    /// A raw-mode frame relayed unchanged.
    Raw {
        /// The frame's payload.
        bytes: Bytes,
        /// Text (true) or binary (false) frame.
        text: bool,
    },
}

impl Payload {
    /// Wraps a one-off message (a reply to one connection).
    pub fn msg(msg: ServerMessage) -> Self {
        Payload::Msg(SharedFrame::new(msg))
    }
}

/// What a transport writes: already-encoded frames and control actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A text frame.
    Text(Bytes),
    /// A binary frame.
    Binary(Bytes),
    /// Close the connection with this code and reason, after everything before it.
    Close(u16, String),
    /// A message whose payload is already compressed by the transport's
    /// [`FrameCompressor`]; produced only for transports that offer one.
    Compressed {
        /// Text (true) or binary (false) message.
        text: bool,
        /// The compressed payload, as it goes on the wire.
        payload: Bytes,
    },
}

impl Outgoing {
    /// Payload bytes (0 for a close).
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(b) | Outgoing::Binary(b) => b.len(),
            Outgoing::Compressed { payload, .. } => payload.len(),
            Outgoing::Close(..) => 0,
        }
    }

    /// True for a close or an empty frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame for `payload` on a connection using `encoding`.
    pub fn from_payload(payload: &Payload, encoding: Encoding) -> Self {
        match payload {
            Payload::Msg(frame) => {
                let bytes = frame.bytes(encoding);
                if encoding.is_binary() {
                    Outgoing::Binary(bytes)
                } else {
                    Outgoing::Text(bytes)
                }
            }
            Payload::Raw { bytes, text: true } => Outgoing::Text(bytes.clone()),
            Payload::Raw { bytes, text: false } => Outgoing::Binary(bytes.clone()),
        }
    }

    /// Like [`Outgoing::from_payload`], compressed with `compressor` when that is worth
    /// it. A protocol message is compressed once for all recipients (cached in its
    /// [`SharedFrame`]); a raw-mode frame, which is not shared, is compressed here.
    pub fn from_payload_compressed(
        payload: &Payload,
        encoding: Encoding,
        compressor: &dyn FrameCompressor,
    ) -> Self {
        let (compressed, text) = match payload {
            Payload::Msg(frame) => (
                frame.compressed(encoding, compressor),
                !encoding.is_binary(),
            ),
            Payload::Raw { bytes, text } => (
                (bytes.len() >= compressor.min_size())
                    .then(|| compressor.compress(bytes))
                    .flatten(),
                *text,
            ),
        };
        match compressed {
            Some(payload) => Outgoing::Compressed { text, payload },
            None => Outgoing::from_payload(payload, encoding),
        }
    }
}
