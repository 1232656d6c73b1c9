//! Playback operations: validation, persistence through the [`PlaybackStore`], and the
//! broadcasts that keep every device of a profile in step (PROTOCOL §4).
//!
//! WebSocket requests ([`crate::dispatch`]) and the REST API call the same methods.
//! Writes are serialized per hub so that "check, then write" cannot interleave, and every
//! value is checked before anything is written, so nothing partial is ever stored.

use std::sync::Arc;

use serde_json::Value;
use switchboard_protocol::playback::{
    AudioZone, AudioZoneWithSessions, NewAudioZone, NewConnection, NewPlayer, NewSession, Player,
    Session, SessionChanges,
};
use switchboard_protocol::{ErrorCode, ServerMessage};

use crate::connection::Connection;
use crate::endpoint::Mode;
use crate::error::{HubError, HubResult};
use crate::frame::{Payload, SharedFrame};
use crate::hub::Hub;
use crate::playback::PlaybackStore;
use crate::store::StoreError;

/// Application code run when an update touches a session played on a player.
pub type PlayerAction = Arc<dyn Fn(&Session, &SessionChanges) + Send + Sync>;

fn internal(e: StoreError) -> HubError {
    HubError::new(ErrorCode::Internal, e.to_string())
}

fn check_volume(v: f64) -> HubResult<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(HubError::bad_request(format!(
            "volume must be within [0, 1], got {v}"
        )));
    }
    Ok(())
}

/// Names are stored as text by every backend: at most 256 bytes, no NUL.
fn check_name(what: &str, name: &str) -> HubResult<()> {
    if name.len() > 256 || name.contains('\0') {
        return Err(HubError::bad_request(format!(
            "{what} must be at most 256 bytes without NUL characters"
        )));
    }
    Ok(())
}

/// Tracks are JSON objects the application defines.
fn check_playlist(playlist: &[Value]) -> HubResult<()> {
    if let Some(i) = playlist.iter().position(|t| !t.is_object()) {
        return Err(HubError::bad_request(format!(
            "playlist[{i}] must be a JSON object (a track)"
        )));
    }
    Ok(())
}

fn check_position(p: u64) -> HubResult<()> {
    if p > i64::MAX as u64 {
        return Err(HubError::bad_request("position is too large"));
    }
    Ok(())
}

fn check_players(players: &[NewPlayer]) -> HubResult<()> {
    for p in players {
        check_name("player names", &p.name)?;
        check_name("player types", &p.kind)?;
    }
    Ok(())
}

fn check_seek(v: f64) -> HubResult<()> {
    if !v.is_finite() || v < 0.0 {
        return Err(HubError::bad_request(format!(
            "seek must be 0 or more, got {v}"
        )));
    }
    Ok(())
}

impl Hub {
    fn playback(&self) -> Arc<dyn PlaybackStore> {
        self.inner.playback.read().clone()
    }

    /// Keeps playback state in `store` instead of memory.
    pub fn set_playback_store(&self, store: Arc<dyn PlaybackStore>) {
        *self.inner.playback.write() = store;
    }

    /// Registers `action` to run whenever an update touches a session played on
    /// `player_id` (the session is in its state after the update).
    pub fn on_player_action(&self, player_id: u64, action: PlayerAction) {
        self.inner
            .player_actions
            .entry(player_id)
            .or_default()
            .push(action);
    }

    /// Queues `msg` for every protocol connection of `profile` except `skip`.
    fn push_profile(&self, profile: &str, msg: ServerMessage, skip: Option<&str>) {
        let payload = Payload::Msg(SharedFrame::new(msg));
        for c in self.inner.connections.iter() {
            if c.profile() == profile && c.endpoint().mode == Mode::Protocol && Some(c.id()) != skip
            {
                c.send(payload.clone());
            }
        }
    }

    /// Sends `download_event {data}` to every connection of a profile.
    pub fn download_event(&self, profile: &str, data: Value) {
        self.push_profile(profile, ServerMessage::DownloadEvent { data }, None);
    }

    /// Sends `scan_event {data}` to every connection of a profile.
    pub fn scan_event(&self, profile: &str, data: Value) {
        self.push_profile(profile, ServerMessage::ScanEvent { data }, None);
    }

    /// A profile's sessions.
    pub async fn sessions(&self, profile: &str) -> HubResult<Vec<Session>> {
        self.playback().sessions(profile).await.map_err(internal)
    }

    /// One session, or NOT_FOUND.
    pub async fn session(&self, profile: &str, id: u64) -> HubResult<Session> {
        self.playback()
            .session(profile, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| HubError::not_found(format!("no session {id} in profile `{profile}`")))
    }

    async fn check_refs(
        &self,
        profile: &str,
        zone: Option<u64>,
        players: Option<&[u64]>,
    ) -> HubResult<()> {
        let store = self.playback();
        if let Some(z) = zone
            && !store
                .audio_zones(profile)
                .await
                .map_err(internal)?
                .iter()
                .any(|a| a.audio_zone_id == z)
        {
            return Err(HubError::not_found(format!("no audio zone {z}")));
        }
        if let Some(ps) = players
            && !ps.is_empty()
        {
            let known = store.players(profile).await.map_err(internal)?;
            if let Some(p) = ps
                .iter()
                .find(|p| !known.iter().any(|k| k.player_id == **p))
            {
                return Err(HubError::not_found(format!("no player {p}")));
            }
        }
        Ok(())
    }

    async fn broadcast_sessions(&self, profile: &str) -> HubResult<()> {
        let sessions = self.sessions(profile).await?;
        self.push_profile(
            profile,
            ServerMessage::Sessions { id: None, sessions },
            None,
        );
        Ok(())
    }

    /// Creates a session; every connection of the profile gets `sessions`.
    pub async fn create_session(&self, profile: &str, new: NewSession) -> HubResult<Session> {
        if let Some(v) = new.volume {
            check_volume(v)?;
        }
        check_name("session names", &new.name)?;
        check_playlist(&new.playlist)?;
        let _write = self.inner.playback_lock.lock().await;
        self.check_refs(profile, new.audio_zone_id, Some(&new.active_players))
            .await?;
        let session = self
            .playback()
            .create_session(profile, &new)
            .await
            .map_err(internal)?;
        self.broadcast_sessions(profile).await?;
        Ok(session)
    }

    /// Changes a session; every other connection of the profile (all but `origin`) gets
    /// `session_updated`, and the player actions of its players run.
    pub async fn update_session(
        &self,
        profile: &str,
        id: u64,
        changes: SessionChanges,
        origin: Option<&str>,
    ) -> HubResult<Session> {
        if let Some(v) = changes.volume {
            check_volume(v)?;
        }
        if let Some(v) = changes.seek {
            check_seek(v)?;
        }
        if let Some(name) = &changes.name {
            check_name("session names", name)?;
        }
        if let Some(playlist) = &changes.playlist {
            check_playlist(playlist)?;
        }
        if let Some(p) = changes.position {
            check_position(p)?;
        }
        if changes.is_empty() {
            return Err(HubError::bad_request("nothing to change"));
        }
        let session = {
            let _write = self.inner.playback_lock.lock().await;
            self.session(profile, id).await?;
            self.check_refs(
                profile,
                changes.audio_zone_id,
                changes.active_players.as_deref(),
            )
            .await?;
            self.playback()
                .update_session(profile, id, &changes)
                .await
                .map_err(internal)?
                .ok_or_else(|| HubError::not_found(format!("no session {id}")))?
        };
        for player in &session.active_players {
            if let Some(actions) = self.inner.player_actions.get(player) {
                for action in actions.iter() {
                    action(&session, &changes);
                }
            }
        }
        self.push_profile(
            profile,
            ServerMessage::SessionUpdated {
                session_id: id,
                changes,
            },
            origin,
        );
        Ok(session)
    }

    /// Deletes a session; every connection of the profile gets `sessions`.
    pub async fn delete_session(&self, profile: &str, id: u64) -> HubResult<()> {
        let _write = self.inner.playback_lock.lock().await;
        if !self
            .playback()
            .delete_session(profile, id)
            .await
            .map_err(internal)?
        {
            return Err(HubError::not_found(format!("no session {id}")));
        }
        self.broadcast_sessions(profile).await
    }

    /// Moves playback: the seek is kept and every other connection of the profile gets
    /// `set_seek`.
    pub async fn set_seek(
        &self,
        profile: &str,
        id: u64,
        seek: f64,
        origin: Option<&str>,
    ) -> HubResult<()> {
        check_seek(seek)?;
        {
            let _write = self.inner.playback_lock.lock().await;
            let changes = SessionChanges {
                seek: Some(seek),
                ..Default::default()
            };
            self.playback()
                .update_session(profile, id, &changes)
                .await
                .map_err(internal)?
                .ok_or_else(|| HubError::not_found(format!("no session {id}")))?;
        }
        self.push_profile(
            profile,
            ServerMessage::SetSeek {
                session_id: id,
                seek,
            },
            origin,
        );
        Ok(())
    }

    async fn broadcast_connections(&self, profile: &str) -> HubResult<()> {
        let connections = self
            .playback()
            .connections(profile)
            .await
            .map_err(internal)?;
        self.push_profile(profile, ServerMessage::Connections { connections }, None);
        Ok(())
    }

    /// Registers a connection and its players; every connection of the profile gets
    /// `connections`.
    pub async fn register_connection(
        &self,
        conn: &Connection,
        new: NewConnection,
    ) -> HubResult<()> {
        check_name("connection names", &new.name)?;
        check_players(&new.players)?;
        {
            let _write = self.inner.playback_lock.lock().await;
            self.playback()
                .register_connection(conn.profile(), conn.id(), &new)
                .await
                .map_err(internal)?;
        }
        conn.set_registered();
        self.broadcast_connections(conn.profile()).await
    }

    /// Replaces a registered connection's players.
    pub async fn register_players(
        &self,
        conn: &Connection,
        players: Vec<NewPlayer>,
    ) -> HubResult<()> {
        check_players(&players)?;
        {
            let _write = self.inner.playback_lock.lock().await;
            self.playback()
                .set_players(conn.profile(), conn.id(), &players)
                .await
                .map_err(internal)?
                .ok_or_else(|| {
                    HubError::not_found("register this connection first (register_connection)")
                })?;
        }
        self.broadcast_connections(conn.profile()).await
    }

    /// Marks a registered connection gone and tells the rest of its profile.
    pub(crate) async fn playback_disconnected(&self, conn: &Connection) {
        if !conn.is_registered() {
            return;
        }
        match self.playback().mark_gone(conn.id()).await {
            Ok(Some(profile)) => {
                let _ = self.broadcast_connections(&profile).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not mark a connection gone"),
        }
    }

    /// A profile's players.
    pub async fn players(&self, profile: &str) -> HubResult<Vec<Player>> {
        self.playback().players(profile).await.map_err(internal)
    }

    /// A profile's audio zones with their sessions.
    pub async fn audio_zones(&self, profile: &str) -> HubResult<Vec<AudioZoneWithSessions>> {
        let store = self.playback();
        let zones = store.audio_zones(profile).await.map_err(internal)?;
        let sessions = store.sessions(profile).await.map_err(internal)?;
        Ok(zones
            .into_iter()
            .map(|z| AudioZoneWithSessions {
                sessions: sessions
                    .iter()
                    .filter(|s| s.audio_zone_id == Some(z.audio_zone_id))
                    .cloned()
                    .collect(),
                audio_zone_id: z.audio_zone_id,
                name: z.name,
                players: z.players,
            })
            .collect())
    }

    /// Creates an audio zone; every connection of the profile gets
    /// `audio_zone_with_sessions`.
    pub async fn create_audio_zone(
        &self,
        profile: &str,
        new: NewAudioZone,
    ) -> HubResult<AudioZone> {
        if new.name.is_empty() {
            return Err(HubError::bad_request("audio zone names must not be empty"));
        }
        check_name("audio zone names", &new.name)?;
        let zone = {
            let _write = self.inner.playback_lock.lock().await;
            self.check_refs(profile, None, Some(&new.players)).await?;
            self.playback()
                .create_audio_zone(profile, &new)
                .await
                .map_err(internal)?
        };
        let audio_zones = self.audio_zones(profile).await?;
        self.push_profile(
            profile,
            ServerMessage::AudioZoneWithSessions { audio_zones },
            None,
        );
        Ok(zone)
    }
}
