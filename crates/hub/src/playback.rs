//! Where playback state lives: the `PlaybackStore` seam and its in-memory
//! implementation.
//!
//! Sessions, registered connections with their players, and audio zones are scoped by
//! profile. The hub validates requests and broadcasts changes ([`crate::sessions`]); a
//! `PlaybackStore` only keeps the data. `switchboard-store` implements it on SQL.

use std::collections::BTreeMap;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::playback::{
    AudioZone, NewAudioZone, NewConnection, NewPlayer, NewSession, Player, RegisteredConnection,
    Session, SessionChanges,
};

use crate::store::StoreError;

/// Persistence for the playback domain. Every method is one transaction: it either
/// happens whole or not at all.
#[async_trait]
pub trait PlaybackStore: Send + Sync + 'static {
    /// The profile's sessions, by id.
    async fn sessions(&self, profile: &str) -> Result<Vec<Session>, StoreError>;
    /// One session of the profile.
    async fn session(&self, profile: &str, id: u64) -> Result<Option<Session>, StoreError>;
    /// Creates a session (already validated).
    async fn create_session(&self, profile: &str, new: &NewSession) -> Result<Session, StoreError>;
    /// Applies changes (already validated); `None` when the session does not exist.
    async fn update_session(
        &self,
        profile: &str,
        id: u64,
        changes: &SessionChanges,
    ) -> Result<Option<Session>, StoreError>;
    /// Deletes a session; false when it did not exist.
    async fn delete_session(&self, profile: &str, id: u64) -> Result<bool, StoreError>;
    /// Registers (or re-registers) a connection with its players.
    async fn register_connection(
        &self,
        profile: &str,
        connection_id: &str,
        new: &NewConnection,
    ) -> Result<RegisteredConnection, StoreError>;
    /// Replaces a registered connection's players; `None` when it is not registered.
    async fn set_players(
        &self,
        profile: &str,
        connection_id: &str,
        players: &[NewPlayer],
    ) -> Result<Option<RegisteredConnection>, StoreError>;
    /// Marks a connection gone; returns its profile when it was registered.
    async fn mark_gone(&self, connection_id: &str) -> Result<Option<String>, StoreError>;
    /// The profile's registered connections, alive and gone.
    async fn connections(&self, profile: &str) -> Result<Vec<RegisteredConnection>, StoreError>;
    /// The profile's players.
    async fn players(&self, profile: &str) -> Result<Vec<Player>, StoreError>;
    /// Creates an audio zone (already validated).
    async fn create_audio_zone(
        &self,
        profile: &str,
        new: &NewAudioZone,
    ) -> Result<AudioZone, StoreError>;
    /// The profile's audio zones.
    async fn audio_zones(&self, profile: &str) -> Result<Vec<AudioZone>, StoreError>;
}

#[derive(Default)]
struct State {
    next_id: u64,
    sessions: BTreeMap<u64, Session>,
    connections: BTreeMap<String, (String, RegisteredConnection)>,
    zones: BTreeMap<u64, (String, AudioZone)>,
}

impl State {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn players(&mut self, players: &[NewPlayer]) -> Vec<Player> {
        players
            .iter()
            .map(|p| Player {
                player_id: self.next(),
                name: p.name.clone(),
                kind: p.kind.clone(),
            })
            .collect()
    }
}

/// A [`PlaybackStore`] in memory: nothing survives the process.
#[derive(Default)]
pub struct MemoryPlaybackStore {
    state: Mutex<State>,
}

impl MemoryPlaybackStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Applies validated changes to a session.
pub fn apply_changes(s: &mut Session, c: &SessionChanges) {
    if let Some(v) = &c.name {
        s.name = v.clone();
    }
    if let Some(v) = c.active {
        s.active = v;
    }
    if let Some(v) = c.playing {
        s.playing = v;
    }
    if let Some(v) = c.position {
        s.position = Some(v);
    }
    if let Some(v) = c.seek {
        s.seek = v;
    }
    if let Some(v) = c.volume {
        s.volume = v;
    }
    if let Some(v) = &c.playlist {
        s.playlist = v.clone();
    }
    if let Some(v) = c.audio_zone_id {
        s.audio_zone_id = Some(v);
    }
    if let Some(v) = &c.active_players {
        s.active_players = v.clone();
    }
}

#[async_trait]
impl PlaybackStore for MemoryPlaybackStore {
    async fn sessions(&self, profile: &str) -> Result<Vec<Session>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .sessions
            .values()
            .filter(|s| s.profile == profile)
            .cloned()
            .collect())
    }

    async fn session(&self, profile: &str, id: u64) -> Result<Option<Session>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .sessions
            .get(&id)
            .filter(|s| s.profile == profile)
            .cloned())
    }

    async fn create_session(&self, profile: &str, new: &NewSession) -> Result<Session, StoreError> {
        let mut st = self.state.lock();
        let session = Session {
            session_id: st.next(),
            profile: profile.to_owned(),
            name: new.name.clone(),
            active: false,
            playing: false,
            position: None,
            seek: 0.0,
            volume: new.volume.unwrap_or(1.0),
            playlist: new.playlist.clone(),
            audio_zone_id: new.audio_zone_id,
            active_players: new.active_players.clone(),
        };
        st.sessions.insert(session.session_id, session.clone());
        Ok(session)
    }

    async fn update_session(
        &self,
        profile: &str,
        id: u64,
        changes: &SessionChanges,
    ) -> Result<Option<Session>, StoreError> {
        let mut st = self.state.lock();
        Ok(st
            .sessions
            .get_mut(&id)
            .filter(|s| s.profile == profile)
            .map(|s| {
                apply_changes(s, changes);
                s.clone()
            }))
    }

    async fn delete_session(&self, profile: &str, id: u64) -> Result<bool, StoreError> {
        let mut st = self.state.lock();
        let found = st.sessions.get(&id).is_some_and(|s| s.profile == profile);
        if found {
            st.sessions.remove(&id);
        }
        Ok(found)
    }

    async fn register_connection(
        &self,
        profile: &str,
        connection_id: &str,
        new: &NewConnection,
    ) -> Result<RegisteredConnection, StoreError> {
        let mut st = self.state.lock();
        let players = st.players(&new.players);
        let conn = RegisteredConnection {
            connection_id: connection_id.to_owned(),
            name: new.name.clone(),
            alive: true,
            players,
        };
        st.connections
            .insert(connection_id.to_owned(), (profile.to_owned(), conn.clone()));
        Ok(conn)
    }

    async fn set_players(
        &self,
        profile: &str,
        connection_id: &str,
        players: &[NewPlayer],
    ) -> Result<Option<RegisteredConnection>, StoreError> {
        let mut st = self.state.lock();
        let new_players = st.players(players);
        Ok(st
            .connections
            .get_mut(connection_id)
            .filter(|(p, _)| p == profile)
            .map(|(_, c)| {
                c.players = new_players;
                c.clone()
            }))
    }

    async fn mark_gone(&self, connection_id: &str) -> Result<Option<String>, StoreError> {
        let mut st = self.state.lock();
        Ok(st.connections.get_mut(connection_id).map(|(p, c)| {
            c.alive = false;
            p.clone()
        }))
    }

    async fn connections(&self, profile: &str) -> Result<Vec<RegisteredConnection>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .connections
            .values()
            .filter(|(p, _)| p == profile)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn players(&self, profile: &str) -> Result<Vec<Player>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .connections
            .values()
            .filter(|(p, _)| p == profile)
            .flat_map(|(_, c)| c.players.iter().cloned())
            .collect())
    }

    async fn create_audio_zone(
        &self,
        profile: &str,
        new: &NewAudioZone,
    ) -> Result<AudioZone, StoreError> {
        let mut st = self.state.lock();
        let zone = AudioZone {
            audio_zone_id: st.next(),
            name: new.name.clone(),
            players: new.players.clone(),
        };
        st.zones
            .insert(zone.audio_zone_id, (profile.to_owned(), zone.clone()));
        Ok(zone)
    }

    async fn audio_zones(&self, profile: &str) -> Result<Vec<AudioZone>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .zones
            .values()
            .filter(|(p, _)| p == profile)
            .map(|(_, z)| z.clone())
            .collect())
    }
}
