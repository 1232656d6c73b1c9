//! Per-endpoint rules the hub enforces: what a connection may do and how its rooms behave.
//!
//! The server builds one [`EndpointRules`] per `[[endpoint]]` of its configuration and
//! hands it to every connection it accepts there; an embedding application builds its
//! own. Transport-level limits (frame sizes, heartbeats) live here too so that any
//! transport driving the hub sees the same values.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::TokenVerifier;
use crate::ratelimit::MessageLimit;

/// How an endpoint treats frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The Switchboard protocol: JSON or MessagePack envelopes.
    #[default]
    Protocol,
    /// No envelope: every frame is relayed to the other connections of the endpoint's room.
    Raw,
    /// Every frame is sent back to its sender.
    Echo,
}

/// What happens to a connection whose outbound queue is full (per room).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumer {
    /// Close the connection with 4008.
    #[default]
    Disconnect,
    /// Drop the oldest queued messages of the room and tell the client with `gap`.
    Drop,
    /// Keep only the newest queued message per `data.key`; keyless messages as `Drop`.
    Conflate,
}

/// The client message types, as a bit set, so the hot path checks one bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSet(u32);

impl EventSet {
    /// Every message type enabled.
    pub const ALL: EventSet = EventSet(u32::MAX);

    /// The set of the named types; an unknown name is returned as the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0u32;
        for name in names {
            let i = switchboard_protocol::ClientMessage::TYPES
                .iter()
                .position(|t| *t == name)
                .ok_or_else(|| name.to_owned())?;
            bits |= 1 << i;
        }
        Ok(EventSet(bits))
    }

    /// True when messages of wire type `name` are enabled.
    pub fn allows(self, name: &str) -> bool {
        match switchboard_protocol::ClientMessage::TYPES
            .iter()
            .position(|t| *t == name)
        {
            Some(i) => self.0 & (1 << i) != 0,
            None => false,
        }
    }
}

/// The rules of one endpoint.
#[derive(Debug)]
pub struct EndpointRules {
    /// The URL path, e.g. `/ws`.
    pub path: String,
    /// Protocol, raw or echo.
    pub mode: Mode,
    /// Raw mode: the room all connections share.
    pub raw_room: String,
    /// Most simultaneous connections on this endpoint.
    pub max_connections: usize,
    /// Largest accepted frame or message, in bytes.
    pub max_message_size: usize,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// Silence after which a connection is closed.
    pub connection_timeout: Duration,
    /// Whether joining an unknown room creates it.
    pub auto_create_rooms: bool,
    /// Most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// Default `max_connections` of rooms created here.
    pub room_max_connections: usize,
    /// Default history size of rooms created here.
    pub history_size: usize,
    /// Default history age limit of rooms created here (zero: none).
    pub history_ttl: Duration,
    /// Enabled client message types.
    pub events: EventSet,
    /// Outbound queue bound, in messages.
    pub queue_size: usize,
    /// `presence_join`/`presence_leave` are broadcast only while a room has at most this
    /// many members: each join costs one event per member, so a room of N members that
    /// fills up costs N² events. Bigger rooms rely on paged `presence` requests.
    pub presence_events_max_members: usize,
    /// Default slow-consumer policy of rooms created here.
    pub slow_consumer: SlowConsumer,
    // -- access and abuse limits (docs/security.md) --
    /// Data frames one connection may send (`rate_limit.*`).
    pub rate_limit: MessageLimit,
    /// A connection that sends no data frame within this time after it opened is closed
    /// with 1008; zero turns the check off.
    pub first_message_timeout: Duration,
    /// Verifies tokens sent with `refresh`; `None` on endpoints without authentication.
    pub verifier: Option<Arc<dyn TokenVerifier>>,
    /// How long before a connection's token expires it gets `token_expiring`.
    pub expiry_warning: Duration,
    connections: AtomicUsize,
}

impl EndpointRules {
    /// Rules with the documented defaults for `path`.
    pub fn new(path: impl Into<String>) -> Self {
        EndpointRules {
            path: path.into(),
            mode: Mode::Protocol,
            raw_room: "general".into(),
            max_connections: 10_000,
            max_message_size: 65_536,
            ping_interval: Duration::from_millis(25_000),
            connection_timeout: Duration::from_millis(60_000),
            auto_create_rooms: true,
            max_rooms_per_connection: 100,
            room_max_connections: 100,
            history_size: 100,
            history_ttl: Duration::ZERO,
            events: EventSet::ALL,
            queue_size: 1024,
            presence_events_max_members: 1000,
            slow_consumer: SlowConsumer::Disconnect,
            rate_limit: MessageLimit::default(),
            first_message_timeout: Duration::ZERO,
            verifier: None,
            expiry_warning: Duration::from_secs(30),
            connections: AtomicUsize::new(0),
        }
    }

    /// Connections currently open on this endpoint.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Takes one connection slot, or `None` when the endpoint is full. The slot is given
    /// back when the returned guard is dropped.
    pub fn try_reserve(self: &std::sync::Arc<Self>) -> Option<ConnectionSlot> {
        let mut n = self.connections.load(Ordering::Relaxed);
        loop {
            if n >= self.max_connections {
                return None;
            }
            match self.connections.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnectionSlot(self.clone())),
                Err(current) => n = current,
            }
        }
    }
}

/// One reserved connection slot of an endpoint; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot(std::sync::Arc<EndpointRules>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn event_set_allows_only_named_types() {
        let set = EventSet::from_names(["join", "publish"]).unwrap();
        assert!(set.allows("join"));
        assert!(set.allows("publish"));
        assert!(!set.allows("direct"));
        assert_eq!(EventSet::from_names(["jump"]), Err("jump".to_owned()));
    }

    #[test]
    fn slots_are_bounded_and_released() {
        let mut rules = EndpointRules::new("/ws");
        rules.max_connections = 2;
        let rules = Arc::new(rules);
        let a = rules.try_reserve().unwrap();
        let _b = rules.try_reserve().unwrap();
        assert!(rules.try_reserve().is_none());
        drop(a);
        assert!(rules.try_reserve().is_some());
    }
}
