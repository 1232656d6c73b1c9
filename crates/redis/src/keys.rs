//! Names of everything the cluster keeps in Redis.
//!
//! Per room (keys share the `{room}` hash tag, so a room's keys live in one slot and the
//! Lua scripts touching them stay valid on Redis Cluster):
//! - `P:{room}:seq`: the latest offset (string integer);
//! - `P:{room}:epoch`: the room's epoch;
//! - `P:{room}:log`: a stream of the latest messages, entry id `<offset>-0`, field `m`;
//! - `P:{room}:members`: hash, connection id → member on some node (JSON);
//! - `P:{room}:params`: hash, parameter name → its latest state (JSON);
//! - `P:{room}:clients`: hash, client id → its members in the room on every node;
//! - `P:{room}:def`: the definition of a room created explicitly (`POST /api/rooms`),
//!   the room object as JSON, expiring with the room;
//! - channel `P:room:<room>`: live messages, presence changes, parameter changes and
//!   triggers.
//!
//! Per node: `P:node:<id>` (its command channel), `P:node:<id>:conns` (hash, connection
//! id → connection JSON), `P:node:<id>:clients` (hash, client id → connections),
//! `P:node:<id>:rooms` (set of rooms it announced members in), `P:reap:<id>` (the lock
//! of whoever reaps it). Cluster-wide: `P:nodes` (sorted set, node → last heartbeat ms),
//! `P:rooms` (sorted set, defined room → its expiry in ms, `+inf` for none) and the
//! channel `P:all`. `P` is the prefix, `switchboard` by default.

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn seq(&self, room: &str) -> String {
        format!("{}:{{{room}}}:seq", self.prefix)
    }
    pub fn epoch(&self, room: &str) -> String {
        format!("{}:{{{room}}}:epoch", self.prefix)
    }
    pub fn log(&self, room: &str) -> String {
        format!("{}:{{{room}}}:log", self.prefix)
    }
    pub fn members(&self, room: &str) -> String {
        format!("{}:{{{room}}}:members", self.prefix)
    }
    pub fn room_clients(&self, room: &str) -> String {
        format!("{}:{{{room}}}:clients", self.prefix)
    }
    pub fn params(&self, room: &str) -> String {
        format!("{}:{{{room}}}:params", self.prefix)
    }
    pub fn definition(&self, room: &str) -> String {
        format!("{}:{{{room}}}:def", self.prefix)
    }
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }
    /// The room a room channel belongs to.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":room:")
    }
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }
    pub fn node_conns(&self, node: &str) -> String {
        format!("{}:node:{node}:conns", self.prefix)
    }
    pub fn node_clients(&self, node: &str) -> String {
        format!("{}:node:{node}:clients", self.prefix)
    }
    pub fn node_rooms(&self, node: &str) -> String {
        format!("{}:node:{node}:rooms", self.prefix)
    }
    pub fn reap_lock(&self, node: &str) -> String {
        format!("{}:reap:{node}", self.prefix)
    }
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    pub fn all_channel(&self) -> String {
        format!("{}:all", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_channels_round_trip() {
        let k = Keys::new("sb");
        assert_eq!(k.room_of_channel(&k.room_channel("a:b.c")), Some("a:b.c"));
        assert_eq!(k.room_of_channel(&k.node_channel("n1")), None);
        assert_eq!(k.seq("r"), "sb:{r}:seq");
    }
}
