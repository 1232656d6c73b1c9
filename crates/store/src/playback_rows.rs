//! Conversions between the playback types and table rows, shared by both backends (the
//! playback counterpart of `rows`).
//!
//! The rules themselves — what a new session looks like, which player ids survive a
//! re-registration — are the hub's ([`switchboard_hub::playback`]), so that every store
//! behaves exactly as `MemoryPlaybackStore` does.

use serde_json::Value;
use switchboard_hub::StoreError;
use switchboard_hub::playback::keep_player_ids;
use switchboard_protocol::playback::{
    AudioZone, NewPlayer, Player, RegisteredConnection, Session, SessionChanges,
};

use crate::rows::to_i64;

/// The columns every session query selects, in order (PostgreSQL casts the JSON ones to
/// text).
pub(crate) type SessionColumns = (
    i64,         // id
    String,      // profile
    String,      // name
    bool,        // active
    bool,        // playing
    Option<i64>, // position
    f64,         // seek
    f64,         // volume
    String,      // playlist (JSON)
    Option<i64>, // audio_zone_id
    String,      // active_players (JSON)
);

/// A `playback_sessions` row without its id, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub profile: String,
    pub name: String,
    pub active: bool,
    pub playing: bool,
    pub position: Option<i64>,
    pub seek: f64,
    pub volume: f64,
    pub playlist: String,
    pub audio_zone_id: Option<i64>,
    pub active_players: String,
}

/// A partial update, ready to bind: `None` leaves the column as it is.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChangesRow {
    pub name: Option<String>,
    pub active: Option<bool>,
    pub playing: Option<bool>,
    pub position: Option<i64>,
    pub seek: Option<f64>,
    pub volume: Option<f64>,
    pub playlist: Option<String>,
    pub audio_zone_id: Option<i64>,
    pub active_players: Option<String>,
}

/// The columns `connections` selects: one row per player (a connection without players
/// has one row of NULLs), ordered by connection then player.
pub(crate) type ConnectionColumns = (
    String,         // connection_id
    String,         // name
    bool,           // alive
    Option<i64>,    // player id
    Option<String>, // player name
    Option<String>, // player kind
);

/// The columns `audio_zones` selects: one row per zone player (NULL for a zone without).
pub(crate) type ZoneColumns = (i64, String, Option<i64>);

/// The columns a player query selects: id, name, kind.
pub(crate) type PlayerColumns = (i64, String, String);

/// A stored id as the wire carries it.
pub(crate) fn from_id(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

/// An id from the wire as SQL compares it: past `i64::MAX` it cannot name a stored row.
pub(crate) fn id_arg(id: u64) -> Option<i64> {
    i64::try_from(id).ok()
}

fn ids_to_i64(ids: &[u64], what: &str) -> Result<Vec<i64>, StoreError> {
    ids.iter().map(|&id| to_i64(id, what)).collect()
}

fn json_text(encoded: serde_json::Result<String>, what: &str) -> Result<String, StoreError> {
    encoded.map_err(|e| StoreError::Backend(format!("cannot encode the {what}: {e}")))
}

pub(crate) fn encode_session(s: &Session) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        profile: s.profile.clone(),
        name: s.name.clone(),
        active: s.active,
        playing: s.playing,
        position: s.position.map(|p| to_i64(p, "position")).transpose()?,
        seek: s.seek,
        volume: s.volume,
        playlist: json_text(serde_json::to_string(&s.playlist), "playlist")?,
        audio_zone_id: s
            .audio_zone_id
            .map(|z| to_i64(z, "audio_zone_id"))
            .transpose()?,
        active_players: json_text(
            serde_json::to_string(&ids_to_i64(&s.active_players, "player id")?),
            "players",
        )?,
    })
}

pub(crate) fn encode_changes(c: &SessionChanges) -> Result<ChangesRow, StoreError> {
    Ok(ChangesRow {
        name: c.name.clone(),
        active: c.active,
        playing: c.playing,
        position: c.position.map(|p| to_i64(p, "position")).transpose()?,
        seek: c.seek,
        volume: c.volume,
        playlist: c
            .playlist
            .as_ref()
            .map(|p| json_text(serde_json::to_string(p), "playlist"))
            .transpose()?,
        audio_zone_id: c
            .audio_zone_id
            .map(|z| to_i64(z, "audio_zone_id"))
            .transpose()?,
        active_players: c
            .active_players
            .as_ref()
            .map(|ps| {
                json_text(
                    serde_json::to_string(&ids_to_i64(ps, "player id")?),
                    "players",
                )
            })
            .transpose()?,
    })
}

pub(crate) fn decode_session(cols: SessionColumns) -> Result<Session, StoreError> {
    let (id, profile, name, active, playing, position, seek, volume, playlist, zone, players) =
        cols;
    let unreadable = |what: &str, e: serde_json::Error| {
        StoreError::Backend(format!(
            "session {id}: the stored {what} is unreadable: {e}"
        ))
    };
    let playlist: Vec<Value> =
        serde_json::from_str(&playlist).map_err(|e| unreadable("playlist", e))?;
    let active_players: Vec<u64> =
        serde_json::from_str(&players).map_err(|e| unreadable("active_players", e))?;
    Ok(Session {
        session_id: from_id(id),
        profile,
        name,
        active,
        playing,
        position: position.map(from_id),
        seek,
        volume,
        playlist,
        audio_zone_id: zone.map(from_id),
        active_players,
    })
}

/// Groups `connections` rows (ordered by connection) into connections with players.
pub(crate) fn group_connections(rows: Vec<ConnectionColumns>) -> Vec<RegisteredConnection> {
    let mut out: Vec<RegisteredConnection> = Vec::new();
    for (connection_id, name, alive, pid, pname, pkind) in rows {
        if out.last().is_none_or(|c| c.connection_id != connection_id) {
            out.push(RegisteredConnection {
                connection_id,
                name,
                alive,
                players: Vec::new(),
            });
        }
        if let (Some(id), Some(name), Some(kind), Some(conn)) = (pid, pname, pkind, out.last_mut())
        {
            conn.players.push(Player {
                player_id: from_id(id),
                name,
                kind,
            });
        }
    }
    out
}

/// Groups `audio_zones` rows (ordered by zone) into zones with their player ids.
pub(crate) fn group_zones(rows: Vec<ZoneColumns>) -> Vec<AudioZone> {
    let mut out: Vec<AudioZone> = Vec::new();
    for (id, name, player) in rows {
        let id = from_id(id);
        if out.last().is_none_or(|z| z.audio_zone_id != id) {
            out.push(AudioZone {
                audio_zone_id: id,
                name,
                players: Vec::new(),
            });
        }
        if let (Some(p), Some(zone)) = (player, out.last_mut()) {
            zone.players.push(from_id(p));
        }
    }
    out
}

pub(crate) fn decode_player((id, name, kind): PlayerColumns) -> Player {
    Player {
        player_id: from_id(id),
        name,
        kind,
    }
}

/// One player row to write back after a (re-)registration: its position in the list, the
/// id it keeps (`None`: the database assigns one) and what it is.
pub(crate) struct PlayerPlan<'a> {
    pub ord: i64,
    pub keep: Option<i64>,
    pub player: &'a NewPlayer,
}

/// The rows a connection's players become, given the ones it had: ids kept by name and
/// type as [`keep_player_ids`] decides.
pub(crate) fn plan_players<'a>(
    existing: &[Player],
    players: &'a [NewPlayer],
) -> Result<Vec<PlayerPlan<'a>>, StoreError> {
    keep_player_ids(existing, players)
        .into_iter()
        .zip(players)
        .enumerate()
        .map(|(ord, (keep, player))| {
            Ok(PlayerPlan {
                ord: to_i64(ord as u64, "player position")?,
                keep: keep.map(|id| to_i64(id, "player id")).transpose()?,
                player,
            })
        })
        .collect()
}

/// The audio zone's player ids, ready to bind.
pub(crate) fn zone_players(players: &[u64]) -> Result<Vec<i64>, StoreError> {
    ids_to_i64(players, "player id")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn grouping_keeps_order_and_empty_parents() {
        let rows: Vec<ConnectionColumns> = vec![
            ("a".into(), "A".into(), true, None, None, None),
            (
                "b".into(),
                "B".into(),
                false,
                Some(3),
                Some("x".into()),
                Some("t".into()),
            ),
            (
                "b".into(),
                "B".into(),
                false,
                Some(1),
                Some("y".into()),
                Some("t".into()),
            ),
        ];
        let conns = group_connections(rows);
        assert_eq!(conns.len(), 2);
        assert!(conns[0].players.is_empty());
        let ids: Vec<u64> = conns[1].players.iter().map(|p| p.player_id).collect();
        assert_eq!(ids, [3, 1]);
        assert!(!conns[1].alive);

        let zones = group_zones(vec![
            (1, "z1".into(), None),
            (2, "z2".into(), Some(5)),
            (2, "z2".into(), Some(5)),
        ]);
        assert_eq!(zones[0].players, Vec::<u64>::new());
        assert_eq!(zones[1].players, [5, 5]);
    }

    #[test]
    fn ids_past_i64_name_nothing() {
        assert_eq!(id_arg(u64::MAX), None);
        assert_eq!(id_arg(7), Some(7));
        let changes = SessionChanges {
            position: Some(u64::MAX),
            ..Default::default()
        };
        assert!(encode_changes(&changes).is_err());
    }
}
