//! Switchboard's wire contract as Rust types.
//!
//! Start with [`codec`]: [`codec::decode_client`] turns one WebSocket frame into a
//! [`client::Request`] (or a [`codec::DecodeError`] that already carries the right error
//! code and request id), and [`codec::encode`] turns a [`server::ServerMessage`] into the
//! bytes of one frame. Everything else here is plain data:
//!
//! - [`client`]: what clients send (`join`, `publish`, …).
//! - [`server`]: what the server sends (`welcome`, `message`, `error`, …).
//! - [`codes`]: error codes and WebSocket close codes.
//! - [`playback`]: sessions, players and audio zones.
//! - [`room_id`]: the room id rule shared by the WebSocket and REST surfaces.
//!
//! This crate does no I/O and has no async code, so both the server and the client
//! library build on it.

pub mod client;
pub mod codec;
pub mod codes;
pub mod playback;
pub mod room_id;
pub mod server;

pub use client::{ClientMessage, Request, RequestId, Since};
pub use codec::{DecodeError, Encoding, decode_client, encode};
pub use codes::{CloseCode, ErrorCode};
pub use server::{Member, ParamState, RoomMessage, ServerMessage};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// JSON objects as they travel on the wire (`meta`, `data` when it is an object).
pub type Map = serde_json::Map<String, serde_json::Value>;
