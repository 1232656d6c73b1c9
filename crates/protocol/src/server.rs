//! Messages the server sends (PROTOCOL §3, §5).
//!
//! Replies carry the request's `id`; broadcasts never do. Optional fields are left out of
//! the encoded frame when absent, except `name`/`connection_id` style fields that the
//! contract shows as `null`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::playback::{AudioZoneWithSessions, RegisteredConnection, Session, SessionChanges};
use crate::{ErrorCode, Map, RequestId};

/// A room member as shown in `joined`, `presence` and presence events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    pub client_id: String,
    pub connection_id: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub meta: Map,
    pub joined_at: i64,
}

/// One message of a room, as delivered live, recovered or read from history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomMessage {
    pub room: String,
    pub data: Value,
    /// The sender's client id, or `"server"`.
    pub from: String,
    /// The sending connection, `null` for messages from the server.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub connection_id: Option<String>,
    pub offset: u64,
    pub ts: i64,
}

/// A room parameter with its range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamState {
    pub name: String,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Everything the server sends over a protocol-mode connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first message on every connection.
    Welcome {
        connection_id: String,
        client_id: String,
        node_id: String,
        path: String,
        server_time: i64,
        heartbeat_ms: u64,
        protocol: u32,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_time: Option<i64>,
        server_time: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<u64>,
    },
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        epoch: String,
        offset: u64,
        /// The members, the joiner always among them; at most one presence page in a
        /// big room (see `members_count` and `next_cursor`).
        members: Vec<Member>,
        /// How many members the room has.
        #[serde(default)]
        members_count: usize,
        /// Set when `members` is not the whole room: page on with `presence`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
        recovered: Vec<RoomMessage>,
        recovered_complete: bool,
    },
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
    },
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    Message(RoomMessage),
    Direct {
        from: String,
        connection_id: Option<String>,
        data: Value,
        ts: i64,
    },
    Presence {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        count: usize,
        members: Vec<Member>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    PresenceJoin {
        room: String,
        member: Member,
    },
    PresenceLeave {
        room: String,
        member: Member,
    },
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        epoch: String,
        offset: u64,
        messages: Vec<RoomMessage>,
    },
    Update {
        room: String,
        param: String,
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
        from: String,
    },
    Trigger {
        room: String,
        name: String,
        data: Value,
        at: i64,
        from: String,
        ts: i64,
    },
    State {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        params: Vec<ParamState>,
    },
    ConnectionId {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        connection_id: String,
    },
    /// Messages `from_offset..=to_offset` of `room` were dropped for this connection.
    Gap {
        room: String,
        from_offset: u64,
        to_offset: u64,
    },
    /// A room closed or expired (`room` set), or the server is shutting down.
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Event {
        name: String,
        data: Value,
        ts: i64,
    },
    Visualization {
        data: Vec<f64>,
    },
    DownloadEvent {
        data: Value,
    },
    ScanEvent {
        data: Value,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    /// The profile's sessions (reply to `get_sessions`, and after create/delete).
    Sessions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        sessions: Vec<Session>,
    },
    /// What changed in a session.
    SessionUpdated {
        session_id: u64,
        #[serde(flatten)]
        changes: SessionChanges,
    },
    /// The profile's registered connections.
    Connections {
        connections: Vec<RegisteredConnection>,
    },
    /// The profile's audio zones with their sessions.
    AudioZoneWithSessions {
        audio_zones: Vec<AudioZoneWithSessions>,
    },
    /// Another device moved playback.
    SetSeek {
        session_id: u64,
        seek: f64,
    },
    /// The connection's token expires soon: send `refresh` with a new one before
    /// `expires_at`, or the connection is closed with 4001.
    TokenExpiring {
        /// Milliseconds left when this was sent.
        expires_in_ms: u64,
        /// When the token expires, in ms since the Unix epoch (server clock).
        expires_at: i64,
    },
}

impl ServerMessage {
    /// An `error` reply.
    pub fn error(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            id,
            code,
            message: message.into(),
        }
    }

    /// A plain `ack`.
    pub fn ack(id: Option<RequestId>) -> Self {
        ServerMessage::Ack {
            id,
            room: None,
            offset: None,
        }
    }
}
