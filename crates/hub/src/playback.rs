//! Where playback state lives: the `PlaybackStore` seam and its in-memory
//! implementation.
//!
//! Sessions, registered connections with their players, and audio zones are scoped by
//! profile. The hub validates requests and broadcasts changes ([`crate::sessions`]); a
//! `PlaybackStore` only keeps the data. `switchboard-store` implements it on SQL.
//!
//! Rules every implementation follows ([`MemoryPlaybackStore`] is the reference):
//! - ids are assigned by the store, start at 1 and are never reused, even after a delete;
//! - re-registering a connection ([`PlaybackStore::register_connection`] again, or
//!   [`PlaybackStore::set_players`]) keeps the `player_id` of every player listed again
//!   with the same name and type ([`keep_player_ids`]); new players get new ids and
//!   players no longer listed are removed;
//! - [`PlaybackStore::mark_gone`] keeps the connection and its players listed with
//!   `alive: false`; registering the same connection id again makes it alive again;
//! - lists come in a stable order: sessions and audio zones by id, connections by
//!   connection id (byte order), players by connection then as registered.

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
    /// Marks every registered connection of every profile gone; returns how many were
    /// alive. For a server starting on a persistent store: no connection of an earlier
    /// process is alive any more. (Not for a cluster whose nodes share one store: it
    /// would mark the other nodes' connections gone too.)
    async fn mark_all_gone(&self) -> Result<u64, StoreError>;
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

    /// The players a connection has after (re-)registering `players`, given the ones it
    /// had (see [`keep_player_ids`]).
    fn players(&mut self, existing: &[Player], players: &[NewPlayer]) -> Vec<Player> {
        keep_player_ids(existing, players)
            .into_iter()
            .zip(players)
            .map(|(kept, p)| Player {
                player_id: kept.unwrap_or_else(|| self.next()),
                name: p.name.clone(),
                kind: p.kind.clone(),
            })
            .collect()
    }
}

/// Which player ids survive a re-registration: for each of `new`, in order, the id of the
/// first existing player with the same name and type not already taken by an earlier one,
/// or `None` when the player needs a new id. Existing players nobody took are removed.
///
/// Matching one by one in order keeps ids stable even when a device lists two players
/// with the same name and type.
pub fn keep_player_ids(existing: &[Player], new: &[NewPlayer]) -> Vec<Option<u64>> {
    let mut taken = vec![false; existing.len()];
    new.iter()
        .map(|n| {
            let i = existing
                .iter()
                .enumerate()
                .position(|(i, e)| !taken[i] && e.name == n.name && e.kind == n.kind)?;
            taken[i] = true;
            Some(existing[i].player_id)
        })
        .collect()
}

/// A new session as [`PlaybackStore::create_session`] creates it: not active, not
/// playing, no position, seek 0, volume 1.0 unless given.
pub fn new_session(session_id: u64, profile: &str, new: &NewSession) -> Session {
    Session {
        session_id,
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
        let id = st.next();
        let session = new_session(id, profile, new);
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
        // Ids are kept only within the same profile: a connection id registered again
        // under another profile starts afresh.
        let existing = match st.connections.get(connection_id) {
            Some((p, c)) if p == profile => c.players.clone(),
            _ => Vec::new(),
        };
        let players = st.players(&existing, &new.players);
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
        let existing = match st.connections.get(connection_id) {
            Some((p, c)) if p == profile => c.players.clone(),
            _ => return Ok(None),
        };
        let new_players = st.players(&existing, players);
        Ok(st.connections.get_mut(connection_id).map(|(_, c)| {
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

    async fn mark_all_gone(&self) -> Result<u64, StoreError> {
        let mut st = self.state.lock();
        let mut n = 0;
        for (_, c) in st.connections.values_mut() {
            n += u64::from(c.alive);
            c.alive = false;
        }
        Ok(n)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn new(name: &str, kind: &str) -> NewPlayer {
        NewPlayer {
            name: name.into(),
            kind: kind.into(),
        }
    }

    fn old(id: u64, name: &str, kind: &str) -> Player {
        Player {
            player_id: id,
            name: name.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn player_ids_are_kept_by_name_and_type_one_for_one() {
        let existing = [
            old(1, "Left", "local"),
            old(2, "Right", "local"),
            old(3, "Left", "local"),
            old(4, "Cast", "chromecast"),
        ];
        let kept = keep_player_ids(
            &existing,
            &[
                new("Right", "local"),
                new("Left", "local"),
                new("Left", "local"),
                new("Left", "local"),
                new("Cast", "airplay"),
                new("Sub", "local"),
            ],
        );
        assert_eq!(kept, [Some(2), Some(1), Some(3), None, None, None]);
        assert_eq!(keep_player_ids(&[], &[new("a", "b")]), [None]);
        assert!(keep_player_ids(&existing, &[]).is_empty());
    }

    #[tokio::test]
    async fn memory_reregistration_keeps_player_ids_and_liveness_rules() {
        let store = MemoryPlaybackStore::new();
        let first = store
            .register_connection(
                "p",
                "c1",
                &NewConnection {
                    name: "Speaker".into(),
                    players: vec![new("Left", "local"), new("Right", "local")],
                },
            )
            .await
            .unwrap();
        let ids: Vec<u64> = first.players.iter().map(|p| p.player_id).collect();
        assert_eq!(store.mark_gone("c1").await.unwrap().as_deref(), Some("p"));
        assert!(!store.connections("p").await.unwrap()[0].alive);
        assert_eq!(store.players("p").await.unwrap().len(), 2);

        let again = store
            .register_connection(
                "p",
                "c1",
                &NewConnection {
                    name: "Speaker 2".into(),
                    players: vec![new("Right", "local"), new("Sub", "local")],
                },
            )
            .await
            .unwrap();
        assert!(again.alive);
        assert_eq!(again.players[0].player_id, ids[1]);
        assert!(!ids.contains(&again.players[1].player_id));

        assert!(
            store
                .set_players("p", "nobody", &[])
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .set_players("other", "c1", &[])
                .await
                .unwrap()
                .is_none()
        );
        let set = store
            .set_players("p", "c1", &[new("Sub", "local")])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.players, [again.players[1].clone()]);
    }
}
