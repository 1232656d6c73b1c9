//! The playback domain on the wire: shared sessions, registered connections with their
//! players, and audio zones (PROTOCOL §4, §11). Everything here is scoped by profile.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A playback session shared by the devices of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub session_id: u64,
    pub profile: String,
    pub name: String,
    pub active: bool,
    pub playing: bool,
    /// Index of the current track in `playlist`.
    pub position: Option<u64>,
    /// Seconds into the current track.
    pub seek: f64,
    /// 0.0 to 1.0.
    pub volume: f64,
    /// Tracks, as JSON objects the application defines.
    pub playlist: Vec<Value>,
    pub audio_zone_id: Option<u64>,
    pub active_players: Vec<u64>,
}

/// What `create_session` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewSession {
    pub name: String,
    pub playlist: Vec<Value>,
    pub active_players: Vec<u64>,
    pub audio_zone_id: Option<u64>,
    pub volume: Option<f64>,
}

/// A partial session update: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionChanges {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seek: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playlist: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_zone_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
pub struct NewAudioZone {
    pub name: String,
    #[serde(default)]
    pub players: Vec<u64>,
}

/// An audio zone: players that play together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioZone {
    pub audio_zone_id: u64,
    pub name: String,
    pub players: Vec<u64>,
}

/// An audio zone with the sessions playing in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioZoneWithSessions {
    pub audio_zone_id: u64,
    pub name: String,
    pub players: Vec<u64>,
    pub sessions: Vec<Session>,
}
