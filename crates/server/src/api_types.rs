//! The JSON bodies of the REST API (PROTOCOL §8, §11) as types.
//!
//! The handlers in [`crate::api`] answer with these types rather than ad-hoc JSON, and the
//! OpenAPI document ([`crate::openapi`]) is derived from the same types, so what the
//! document promises is what the server sends. Room, connection and playback objects
//! themselves are the hub's and protocol's types.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use switchboard_hub::{ConnectionInfo, RoomInfo};
use switchboard_protocol::playback::{AudioZone, AudioZoneWithSessions, Player, Session};
use switchboard_protocol::{ErrorCode, Member, ParamState, RoomMessage};
use utoipa::ToSchema;

/// Every refusal: `{"error":{"code","message"}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, as a code from PROTOCOL §5 and a readable message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// `ok` (healthz), `ready` or `not ready` (readyz).
    pub status: &'static str,
}

// -- requests -------------------------------------------------------------------------------

/// A field that must be present; `null` is a value like any other. (Without this, serde
/// reads a missing `Value` field as `null`, so a forgotten `data` would go unnoticed.)
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Value::deserialize(d)
}

/// `POST /api/rooms/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishRequest {
    /// Any JSON value; delivered as the message's `data`.
    #[serde(deserialize_with = "present")]
    pub data: Value,
    /// Connection ids that do not get the message.
    #[serde(default)]
    pub except: Vec<String>,
}

/// `POST /api/broadcast`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BroadcastRequest {
    /// The event's name; `broadcast` when absent or `null`.
    #[serde(default)]
    pub name: Option<String>,
    /// Any JSON value; delivered as the event's `data`.
    #[serde(deserialize_with = "present")]
    pub data: Value,
    /// Connection ids that do not get the event.
    #[serde(default)]
    pub except: Vec<String>,
}

/// `POST /api/connections/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DirectRequest {
    /// Any JSON value; delivered as the `direct` message's `data`.
    #[serde(deserialize_with = "present")]
    pub data: Value,
}

/// `POST /api/rooms/{id}/join` and `/leave`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConnectionRef {
    pub connection_id: String,
}

// -- answers --------------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoomBody {
    pub room: RoomInfo,
}

/// The offset the published message got.
#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub offset: u64,
}

/// `GET /api/rooms/{id}/history`: messages oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct History {
    pub epoch: String,
    /// The room's newest offset.
    pub offset: u64,
    pub messages: Vec<RoomMessage>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Presence {
    pub members: Vec<Member>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    /// Always `true`.
    pub joined: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Left {
    /// Always `true`.
    pub left: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParamBody {
    pub param: ParamState,
}

/// `POST /api/broadcast`: how many connections the event was queued for.
#[derive(Debug, Serialize, ToSchema)]
pub struct BroadcastSent {
    pub sent: usize,
}

/// `POST /api/connections/{id}/messages`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectSent {
    /// Always `true`.
    pub sent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub connections: Vec<ConnectionInfo>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionBody {
    pub connection: ConnectionInfo,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionBody {
    pub session: Session,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudioZoneList {
    pub audio_zones: Vec<AudioZoneWithSessions>,
    pub count: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudioZoneBody {
    pub audio_zone: AudioZone,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlayerList {
    pub players: Vec<Player>,
    pub count: usize,
}

/// The names of the schemas that only ever describe answers. The document marks them
/// `additionalProperties: false`: an answer carries exactly the fields listed. (Request
/// schemas stay open: unknown fields in a request are ignored, except in a session
/// update, which rejects them.)
pub const ANSWER_SCHEMAS: &[&str] = &[
    "ErrorBody",
    "ErrorDetail",
    "Status",
    "RoomList",
    "RoomBody",
    "RoomInfo",
    "ParamState",
    "Published",
    "History",
    "RoomMessage",
    "Presence",
    "Member",
    "Joined",
    "Left",
    "ParamBody",
    "BroadcastSent",
    "DirectSent",
    "ConnectionList",
    "ConnectionBody",
    "ConnectionInfo",
    "SessionList",
    "SessionBody",
    "Session",
    "AudioZoneList",
    "AudioZoneWithSessions",
    "AudioZoneBody",
    "AudioZone",
    "PlayerList",
    "Player",
];
