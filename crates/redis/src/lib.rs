//! Switchboard's cluster engine on Redis: several `switchboard` processes started with
//! the same `--redis` URL share rooms, offsets, history, presence and connections.
//!
//! Where to start:
//! - [`RedisBroker::start`] connects a hub to Redis and starts the node's tasks.
//! - [`broker`] implements the hub's [`switchboard_hub::Broker`]: one `EVALSHA` per
//!   publish ([`scripts`]) numbers the message, appends it to the room's stream and
//!   publishes it on the room's channel.
//! - [`subscriber`] is the node's one pub/sub connection: room channels while the node
//!   has members there, the node's own command channel and the all-nodes channel; it
//!   reconnects with backoff, resubscribes and resynchronises the rooms.
//! - [`heartbeat`] keeps the node's entry, connection index and presence alive and
//!   reaps nodes that stopped beating (their members leave presence everywhere).
//! - [`keys`] names everything kept in Redis; [`wire`] is what travels on the channels.
//!
//! `docs/cluster.md` describes the design and what Redis holds.

pub mod broker;
pub mod error;
pub mod heartbeat;
pub mod keys;
pub mod scripts;
pub mod subscriber;
pub mod wire;

pub use broker::{ClusterConfig, RedisBroker};
pub use error::ClusterError;
