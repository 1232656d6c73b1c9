//! The Switchboard hub: connections, rooms, presence, history, parameters and hooks —
//! everything except sockets.
//!
//! Where to start:
//! - [`Hub`] (in [`hub`]) holds the registries and the server-side commands an embedding
//!   application calls (`create_room`, `publish`, `broadcast`, …).
//! - [`dispatch`] handles each client request type.
//! - [`driver`] runs one connection over any [`driver::Transport`]: reads frames into the
//!   hub, writes out the connection's [`queue::OutQueue`], pings, and cleans up.
//! - [`queue`] is the bounded outbound queue and its slow-consumer policies.
//! - [`room`] is a room's state; [`frame`] is a message encoded once for all recipients.
//! - [`hooks`] lets the application veto or rewrite events; [`events`] streams them out,
//!   including a lock-free queue for real-time threads.
//! - [`sessions`] is the playback domain (sessions, players, audio zones) over the
//!   [`playback`] store seam.
//! - [`store`] and [`broker`] are the seams for persistence and clustering.
//! - [`auth`] holds what credentials grant a connection (room permissions, expiry);
//!   [`ratelimit`] the token buckets behind the per-connection message limit.
//!
//! A connection is only an id and a bounded queue here; see the server crate for the
//! WebSocket side.

pub mod auth;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod codes;
pub mod connection;
pub mod dispatch;
pub mod driver;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod frame;
pub mod hooks;
pub mod hub;
pub mod playback;
pub mod queue;
pub mod ratelimit;
pub mod room;
pub mod sessions;
pub mod stats;
pub mod store;

pub use auth::{Grant, Permissions, TokenVerifier};
pub use broker::{Broker, BrokerError, Envelope, MemoryBus};
pub use cluster::{
    ClusterPosition, CommandError, Divergence, NodeCommand, PresenceChange, PresenceCounts,
    RemoteMember, ReplyTo, RoomSignal,
};
pub use connection::{ConnectInfo, Connection, ConnectionInfo};
pub use driver::{Incoming, Transport, TransportError};
pub use endpoint::{EndpointRules, EventSet, Mode, SlowConsumer};
pub use error::{HubError, HubResult};
pub use events::{HubEvent, Membership, MembershipObserver, RtEvent, RtKind};
pub use frame::{FrameCompressor, Outgoing, Payload};
pub use hooks::{ConnectRequest, Decision, HookSet, Hooks};
pub use hub::{Hub, HubConfig, WeakHub};
pub use playback::{MemoryPlaybackStore, PlaybackStore};
pub use ratelimit::{MessageLimit, TokenBucket, address_key};
pub use room::{CodeSpec, ParamSpec, RoomInfo, RoomSpec};
pub use sessions::PlayerAction;
pub use stats::{LatencySink, Snapshot};
pub use store::{MemoryStore, Store, StoreError};
