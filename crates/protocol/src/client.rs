//! Messages a client sends (PROTOCOL §4).
//!
//! A frame decodes into a [`Request`]: the optional request `id` plus one
//! [`ClientMessage`]. Unknown fields are ignored so that newer clients can talk to older
//! servers.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::Map;
use crate::playback::{NewAudioZone, NewConnection, NewPlayer, NewSession, SessionChanges};

/// The longest string `id` a request may carry.
pub const MAX_ID_LEN: usize = 64;

/// A request id: a short string or an integer, echoed back unchanged in the reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// An integer id.
    Int(i64),
    /// A string id of at most [`MAX_ID_LEN`] characters.
    Str(String),
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        RequestId::Str(s.to_owned())
    }
}

impl From<i64> for RequestId {
    fn from(n: i64) -> Self {
        RequestId::Int(n)
    }
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request id, when the client gave one.
    pub id: Option<RequestId>,
    /// What the client asks for.
    pub msg: ClientMessage,
}

/// Where a recovering client left off: the last offset it saw in a given epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The last offset the client received.
    pub offset: u64,
    /// The room epoch that offset belongs to.
    pub epoch: String,
}

/// Everything a client can ask of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Clock and liveness probe; answered with `pong`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_time: Option<i64>,
    },
    /// Join a room, optionally recovering what was missed since an offset.
    Join {
        room: String,
        #[serde(
            default,
            deserialize_with = "string_or_number",
            skip_serializing_if = "Option::is_none"
        )]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        meta: Option<Map>,
    },
    /// Leave one room, or every room and close the connection when `room` is absent.
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
    },
    /// Publish `data` to a room's members.
    Publish {
        room: String,
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exclude_self: Option<bool>,
    },
    /// Send `data` to every connection of a client id, or to one connection id.
    Direct { to: String, data: Value },
    /// One page of a room's members.
    Presence {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Messages from a room's history.
    History {
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Replace the connection's metadata.
    SetMeta { meta: Map },
    /// Set a room parameter, optionally scheduled at a server time.
    Param {
        room: String,
        param: String,
        value: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
    },
    /// Fire a named trigger in a room, optionally scheduled at a server time.
    Trigger {
        room: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
    },
    /// The room's parameter state.
    Sync { room: String },
    /// The connection's own id.
    GetConnectionId,
    /// The profile's playback sessions.
    GetSessions,
    /// Create a playback session in the connection's profile.
    CreateSession { session: NewSession },
    /// Change some fields of a session.
    UpdateSession {
        session_id: u64,
        #[serde(flatten)]
        changes: SessionChanges,
    },
    /// Delete a session.
    DeleteSession { session_id: u64 },
    /// Register this connection and its players.
    RegisterConnection { connection: NewConnection },
    /// Replace this connection's players.
    RegisterPlayers { players: Vec<NewPlayer> },
    /// Create an audio zone from players.
    CreateAudioZone { audio_zone: NewAudioZone },
    /// Tell the profile's other devices where playback is.
    SetSeek { session_id: u64, seek: f64 },
    /// Replace the connection's token before it expires (authenticated endpoints).
    Refresh { token: String },
}

impl ClientMessage {
    /// Every `type` a client may send, in wire spelling.
    pub const TYPES: &'static [&'static str] = &[
        "ping",
        "join",
        "leave",
        "publish",
        "direct",
        "presence",
        "history",
        "set_meta",
        "param",
        "trigger",
        "sync",
        "get_connection_id",
        "get_sessions",
        "create_session",
        "update_session",
        "delete_session",
        "register_connection",
        "register_players",
        "create_audio_zone",
        "set_seek",
        "refresh",
    ];

    /// The wire `type` of this message.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Direct { .. } => "direct",
            ClientMessage::Presence { .. } => "presence",
            ClientMessage::History { .. } => "history",
            ClientMessage::SetMeta { .. } => "set_meta",
            ClientMessage::Param { .. } => "param",
            ClientMessage::Trigger { .. } => "trigger",
            ClientMessage::Sync { .. } => "sync",
            ClientMessage::GetConnectionId => "get_connection_id",
            ClientMessage::GetSessions => "get_sessions",
            ClientMessage::CreateSession { .. } => "create_session",
            ClientMessage::UpdateSession { .. } => "update_session",
            ClientMessage::DeleteSession { .. } => "delete_session",
            ClientMessage::RegisterConnection { .. } => "register_connection",
            ClientMessage::RegisterPlayers { .. } => "register_players",
            ClientMessage::CreateAudioZone { .. } => "create_audio_zone",
            ClientMessage::SetSeek { .. } => "set_seek",
            ClientMessage::Refresh { .. } => "refresh",
        }
    }
}

/// Room codes travel as strings, but a client that sends `"code": 1234` means the same.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Str(String),
        Num(u64),
    }
    Ok(Option::<Code>::deserialize(d)?.map(|c| match c {
        Code::Str(s) => s,
        Code::Num(n) => n.to_string(),
    }))
}
