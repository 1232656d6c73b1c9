//! Switchboard's Rust client: typed requests, reconnect with recovery, clock sync, LAN
//! discovery and status events.
//!
//! Where to start: [`Client::connect`] returns a [`Client`] handle (typed methods for every
//! request of the protocol, each resolving on its reply) and an [`Events`] stream of
//! everything the server sends, in order. [`driver`](crate) is the one task that owns the
//! socket; [`recovery`] is the bookkeeping that makes a reconnect lose and repeat nothing;
//! [`clock`] estimates the server clock; [`discovery`] finds servers on the LAN.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::{Client, ClientOptions, Event};
//!
//! let (client, mut events) =
//!     Client::connect("ws://127.0.0.1:8080/ws", ClientOptions::default()).await?;
//! client.join("lobby").await?;
//! client.publish("lobby", serde_json::json!({"text": "hello"})).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Message(m) = event {
//!         println!("{} #{}: {}", m.room, m.offset, m.data);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod backoff;
mod client;
pub mod clock;
pub mod discovery;
mod driver;
mod error;
mod handshake;
mod options;
pub mod recovery;
pub mod remember;
mod shared;
mod status;
mod wire;

pub use client::{Client, Events, HistoryPage, JoinOptions, Joined, Pong, PresencePage};
pub use clock::ClockEstimate;
pub use discovery::{DiscoveryError, ServerInfo, discover, discover_at, locate};
pub use error::ClientError;
pub use options::ClientOptions;
pub use recovery::Position;
pub use status::{Event, Status};
pub use switchboard_protocol as protocol;
pub use switchboard_protocol::{Encoding, ErrorCode, RoomMessage, ServerMessage};
