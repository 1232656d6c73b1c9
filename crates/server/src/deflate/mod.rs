//! permessage-deflate (RFC 7692): negotiation, compression, and the transport that
//! speaks it.
//!
//! Where to start: [`negotiate`] reads the client's `Sec-WebSocket-Extensions` offers at
//! the upgrade and returns an [`Agreement`] (or nothing: the connection then runs on the
//! ordinary tungstenite transport, unchanged). A connection with an agreement runs on
//! [`DeflateTransport`] (`transport.rs`), which reads frames itself (`frames.rs`) because
//! tungstenite refuses RSV1, and compresses with [`codec`].
//!
//! Outbound, the default is *no server context takeover*: every message is compressed
//! on its own, so the compressed bytes depend only on the message and the settings, and
//! a room broadcast is compressed once — by the first member's writer, cached in the
//! hub's `SharedFrame` — for every member ([`codec::SharedDeflater`]). With server
//! context takeover each connection keeps its own compressor (better ratio, but CPU per
//! recipient and ≈ 256 KiB per connection). Inbound, the default asks clients for
//! *no client context takeover*, so no connection keeps an inflater between messages.
//! docs/compression.md has the trade-offs and figures.

pub mod codec;
mod frames;
mod negotiate;
mod transport;

pub use negotiate::{Agreement, negotiate};
pub use transport::DeflateTransport;

use std::sync::Arc;

use switchboard_hub::{Connection, Hub, driver};
use tokio::io::{AsyncRead, AsyncWrite};

/// Runs an upgraded connection that agreed on permessage-deflate until it ends.
pub async fn run<S>(
    hub: &Hub,
    conn: Arc<Connection>,
    io: S,
    agreement: &Agreement,
    config: &DeflateConfig,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = conn.id().to_owned();
    let rules = conn.endpoint().clone();
    tracing::info!(
        connection_id = %id,
        client_id = conn.client_id(),
        path = %rules.path,
        extensions = ?agreement.response,
        "connection opened"
    );
    let transport = DeflateTransport::new(io, agreement, config, rules.max_message_size);
    let ended = driver::run(hub, conn, transport).await;
    tracing::info!(connection_id = %id, code = ?ended.code, reason = %ended.reason, "connection closed");
}

/// An endpoint's permessage-deflate settings (`compression = true` and the
/// `compression_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Messages shorter than this (encoded, before compression) go out uncompressed.
    pub min_bytes: usize,
    /// zlib level, 0 (store) to 9 (smallest).
    pub level: u32,
    /// Compress every outbound message on its own (the default), which lets a broadcast
    /// be compressed once for all recipients. `false` keeps a compressor per connection.
    pub server_no_context_takeover: bool,
    /// Ask clients to compress every message on its own (the default), so the server
    /// keeps no inflater per connection between messages.
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window the server compresses with, 9 to 15 (log2 bytes).
    pub server_max_window_bits: u8,
    /// The largest window asked of clients that offer `client_max_window_bits`, 9 to 15.
    pub client_max_window_bits: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            min_bytes: 256,
            level: 6,
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// The `compression*` keys of one `[[endpoint]]` table, as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeflateKeys {
    pub compression: Option<bool>,
    pub min_bytes: Option<usize>,
    pub level: Option<u32>,
    pub server_no_context_takeover: Option<bool>,
    pub client_no_context_takeover: Option<bool>,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
}

impl DeflateConfig {
    /// Checks an endpoint's keys: `Ok(None)` when compression is off. Returns the name of
    /// the offending key (without the `endpoint[i].` prefix) and what is wrong with it.
    pub fn from_keys(k: DeflateKeys) -> Result<Option<DeflateConfig>, (&'static str, String)> {
        if k.compression != Some(true) {
            let set = [
                ("compression_min_bytes", k.min_bytes.is_some()),
                ("compression_level", k.level.is_some()),
                (
                    "compression_server_no_context_takeover",
                    k.server_no_context_takeover.is_some(),
                ),
                (
                    "compression_client_no_context_takeover",
                    k.client_no_context_takeover.is_some(),
                ),
                (
                    "compression_server_max_window_bits",
                    k.server_max_window_bits.is_some(),
                ),
                (
                    "compression_client_max_window_bits",
                    k.client_max_window_bits.is_some(),
                ),
            ];
            if let Some((name, _)) = set.iter().find(|(_, s)| *s) {
                return Err((name, "has no effect without `compression = true`".into()));
            }
            return Ok(None);
        }
        let d = DeflateConfig::default();
        let level = k.level.unwrap_or(d.level);
        if level > 9 {
            return Err(("compression_level", format!("{level}: use 0 to 9")));
        }
        let bits = |name: &'static str, v: Option<u8>, d: u8| match v {
            None => Ok(d),
            Some(b @ 9..=15) => Ok(b),
            Some(b) => Err((name, format!("{b}: use 9 to 15"))),
        };
        Ok(Some(DeflateConfig {
            min_bytes: k.min_bytes.unwrap_or(d.min_bytes),
            level,
            server_no_context_takeover: k
                .server_no_context_takeover
                .unwrap_or(d.server_no_context_takeover),
            client_no_context_takeover: k
                .client_no_context_takeover
                .unwrap_or(d.client_no_context_takeover),
            server_max_window_bits: bits(
                "compression_server_max_window_bits",
                k.server_max_window_bits,
                d.server_max_window_bits,
            )?,
            client_max_window_bits: bits(
                "compression_client_max_window_bits",
                k.client_max_window_bits,
                d.client_max_window_bits,
            )?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_enabled_and_keys_without_it_are_refused() {
        assert_eq!(DeflateConfig::from_keys(DeflateKeys::default()), Ok(None));
        let k = DeflateKeys {
            compression: Some(false),
            level: Some(3),
            ..Default::default()
        };
        assert_eq!(
            DeflateConfig::from_keys(k).unwrap_err().0,
            "compression_level"
        );
    }

    #[test]
    fn values_are_checked() {
        let on = DeflateKeys {
            compression: Some(true),
            ..Default::default()
        };
        assert_eq!(
            DeflateConfig::from_keys(on),
            Ok(Some(DeflateConfig::default()))
        );
        for (k, name) in [
            (
                DeflateKeys {
                    level: Some(10),
                    ..on
                },
                "compression_level",
            ),
            (
                DeflateKeys {
                    server_max_window_bits: Some(8),
                    ..on
                },
                "compression_server_max_window_bits",
            ),
            (
                DeflateKeys {
                    client_max_window_bits: Some(16),
                    ..on
                },
                "compression_client_max_window_bits",
            ),
        ] {
            assert_eq!(DeflateConfig::from_keys(k).unwrap_err().0, name);
        }
    }
}
