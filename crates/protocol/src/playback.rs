//! The playback domain on the wire: shared sessions, registered connections with their
//! players, and audio zones (PROTOCOL §4, §11). Everything here is scoped by profile.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A playback session shared by the devices of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub session_id: u64,
    pub profile: String,
    pub name: String,
    pub active: bool,
    pub playing: bool,
    /// Index of the current track in `playlist`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub position: Option<u64>,
    /// Seconds into the current track.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    pub seek: f64,
    /// 0.0 to 1.0.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub volume: f64,
    /// Tracks, as JSON objects the application defines.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub playlist: Vec<Value>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub audio_zone_id: Option<u64>,
    pub active_players: Vec<u64>,
}

/// What `create_session` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct NewSession {
    #[cfg_attr(feature = "openapi", schema(max_length = 256, pattern = "^[^\\x00]*$"))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub playlist: Vec<Value>,
    pub active_players: Vec<u64>,
    pub audio_zone_id: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub volume: Option<f64>,
}

/// A partial session update: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(max_length = 256, pattern = "^[^\\x00]*$", nullable = false)
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub playing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(maximum = 9223372036854775807_u64, nullable = false)
    )]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, nullable = false))]
    pub seek: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0.0, maximum = 1.0, nullable = false)
    )]
    pub volume: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>, nullable = false))]
    pub playlist: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub audio_zone_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub active_players: Option<Vec<u64>>,
}

impl SessionChanges {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        *self == SessionChanges::default()
    }
}

/// A player as a device registers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPlayer {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// A registered player.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Player {
    pub player_id: u64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// What `register_connection` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewConnection {
    pub name: String,
    #[serde(default)]
    pub players: Vec<NewPlayer>,
}

/// A registered connection, alive or gone, with its players.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredConnection {
    pub connection_id: String,
    pub name: String,
    pub alive: bool,
    pub players: Vec<Player>,
}

/// What `create_audio_zone` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAudioZone {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 256, pattern = "^[^\\x00]*$")
    )]
    pub name: String,
    #[serde(default)]
    pub players: Vec<u64>,
}

/// An audio zone: players that play together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudioZone {
    pub audio_zone_id: u64,
    pub name: String,
    pub players: Vec<u64>,
}

/// An audio zone with the sessions playing in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudioZoneWithSessions {
    pub audio_zone_id: u64,
    pub name: String,
    pub players: Vec<u64>,
    pub sessions: Vec<Session>,
}
