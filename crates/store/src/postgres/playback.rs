//! The playback half of the PostgreSQL store: [`PlaybackStore`] in the same database (and
//! schema) as the rooms, so one `--store` URL keeps both.
//!
//! PostgreSQL takes concurrent writers itself, so playback writes do not queue behind the
//! group-commit writer: they run on the shared pool, each trait method in one transaction
//! (or one statement). Where a method reads before it writes (re-registering a connection
//! keeps its players' ids), it first locks the connection's row, so two writers for the
//! same connection take turns instead of both deciding from the same old state. Reads are
//! one statement each, so each sees one consistent snapshot.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};
use switchboard_hub::playback::new_session;
use switchboard_hub::{PlaybackStore, StoreError};
use switchboard_protocol::playback::{
    AudioZone, NewAudioZone, NewConnection, NewPlayer, NewSession, Player, RegisteredConnection,
    Session, SessionChanges,
};

use super::{PostgresStore, err};
use crate::playback_rows::{
    ConnectionColumns, PlayerColumns, SessionColumns, ZoneColumns, decode_player, decode_session,
    encode_changes, encode_session, from_id, group_connections, group_zones, id_arg, plan_players,
    zone_players,
};
use crate::rows::now_ms;

/// Session columns in [`SessionColumns`] order.
macro_rules! session_columns {
    () => {
        "id, profile, name, active, playing, position, seek, volume, playlist::text, \
         audio_zone_id, active_players::text"
    };
}

/// The connection's profile, name and liveness, its row locked until the transaction
/// ends; `None` when it never registered.
async fn lock_connection(
    tx: &mut Transaction<'static, Postgres>,
    connection_id: &str,
) -> Result<Option<(String, String, bool)>, StoreError> {
    sqlx::query_as(
        "SELECT profile, name, alive FROM playback_connections \
         WHERE connection_id = $1 FOR UPDATE",
    )
    .bind(connection_id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(err)
}

async fn players_of(
    tx: &mut Transaction<'static, Postgres>,
    connection_id: &str,
) -> Result<Vec<Player>, StoreError> {
    let rows: Vec<PlayerColumns> = sqlx::query_as(
        "SELECT id, name, kind FROM playback_players WHERE connection_id = $1 ORDER BY ord",
    )
    .bind(connection_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(err)?;
    Ok(rows.into_iter().map(decode_player).collect())
}

/// Replaces a connection's players with `players`, keeping the ids of `existing` ones
/// listed again by name and type. Returns them as stored, in order.
async fn replace_players(
    tx: &mut Transaction<'static, Postgres>,
    connection_id: &str,
    existing: &[Player],
    players: &[NewPlayer],
) -> Result<Vec<Player>, StoreError> {
    let plan = plan_players(existing, players)?;
    sqlx::query("DELETE FROM playback_players WHERE connection_id = $1")
        .bind(connection_id)
        .execute(&mut **tx)
        .await
        .map_err(err)?;
    let mut out = Vec::with_capacity(plan.len());
    for p in plan {
        let query = match p.keep {
            // A kept player is written back under its id.
            Some(id) => sqlx::query_scalar(
                "INSERT INTO playback_players (id, connection_id, ord, name, kind) \
                 VALUES ($5, $1, $2, $3, $4) RETURNING id",
            )
            .bind(connection_id)
            .bind(p.ord)
            .bind(&p.player.name)
            .bind(&p.player.kind)
            .bind(id),
            None => sqlx::query_scalar(
                "INSERT INTO playback_players (connection_id, ord, name, kind) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(connection_id)
            .bind(p.ord)
            .bind(&p.player.name)
            .bind(&p.player.kind),
        };
        let id: i64 = query.fetch_one(&mut **tx).await.map_err(err)?;
        out.push(Player {
            player_id: from_id(id),
            name: p.player.name.clone(),
            kind: p.player.kind.clone(),
        });
    }
    Ok(out)
}

#[async_trait]
impl PlaybackStore for PostgresStore {
    async fn sessions(&self, profile: &str) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionColumns> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM playback_sessions WHERE profile = $1 ORDER BY id"
        ))
        .bind(profile)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.into_iter().map(decode_session).collect()
    }

    async fn session(&self, profile: &str, id: u64) -> Result<Option<Session>, StoreError> {
        let Some(id) = id_arg(id) else {
            return Ok(None);
        };
        let row: Option<SessionColumns> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM playback_sessions WHERE id = $1 AND profile = $2"
        ))
        .bind(id)
        .bind(profile)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        row.map(decode_session).transpose()
    }

    async fn create_session(&self, profile: &str, new: &NewSession) -> Result<Session, StoreError> {
        let mut session = new_session(0, profile, new);
        let row = encode_session(&session)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO playback_sessions (profile, name, active, playing, position, seek, \
               volume, playlist, audio_zone_id, active_players) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9, $10::json) RETURNING id",
        )
        .bind(&row.profile)
        .bind(&row.name)
        .bind(row.active)
        .bind(row.playing)
        .bind(row.position)
        .bind(row.seek)
        .bind(row.volume)
        .bind(&row.playlist)
        .bind(row.audio_zone_id)
        .bind(&row.active_players)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        session.session_id = from_id(id);
        Ok(session)
    }

    async fn update_session(
        &self,
        profile: &str,
        id: u64,
        changes: &SessionChanges,
    ) -> Result<Option<Session>, StoreError> {
        let Some(id) = id_arg(id) else {
            return Ok(None);
        };
        let c = encode_changes(changes)?;
        // One statement: a column changes only when its new value was given (as
        // `apply_changes` does), and the row comes back as it is afterwards.
        let row: Option<SessionColumns> = sqlx::query_as(concat!(
            "UPDATE playback_sessions SET \
               name = COALESCE($3, name), active = COALESCE($4, active), \
               playing = COALESCE($5, playing), position = COALESCE($6, position), \
               seek = COALESCE($7, seek), volume = COALESCE($8, volume), \
               playlist = COALESCE($9::json, playlist), \
               audio_zone_id = COALESCE($10, audio_zone_id), \
               active_players = COALESCE($11::json, active_players) \
             WHERE id = $1 AND profile = $2 RETURNING ",
            session_columns!()
        ))
        .bind(id)
        .bind(profile)
        .bind(c.name)
        .bind(c.active)
        .bind(c.playing)
        .bind(c.position)
        .bind(c.seek)
        .bind(c.volume)
        .bind(c.playlist)
        .bind(c.audio_zone_id)
        .bind(c.active_players)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        row.map(decode_session).transpose()
    }

    async fn delete_session(&self, profile: &str, id: u64) -> Result<bool, StoreError> {
        let Some(id) = id_arg(id) else {
            return Ok(false);
        };
        let done = sqlx::query("DELETE FROM playback_sessions WHERE id = $1 AND profile = $2")
            .bind(id)
            .bind(profile)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn register_connection(
        &self,
        profile: &str,
        connection_id: &str,
        new: &NewConnection,
    ) -> Result<RegisteredConnection, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(err)?;
        // A new connection is inserted (and so locked) at once; an existing one is locked
        // before its players are read. A concurrent first registration of the same id
        // makes the insert wait for it, then find its row.
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO playback_connections \
               (connection_id, profile, name, alive, registered_at, updated_at) \
             VALUES ($1, $2, $3, TRUE, $4, $4) \
             ON CONFLICT (connection_id) DO NOTHING RETURNING connection_id",
        )
        .bind(connection_id)
        .bind(profile)
        .bind(&new.name)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err)?;
        let existing = if inserted.is_some() {
            Vec::new()
        } else {
            let current = lock_connection(&mut tx, connection_id).await?;
            // Ids are kept only within the same profile: a connection id registered
            // again under another profile starts afresh.
            let existing = match current {
                Some((p, _, _)) if p == profile => players_of(&mut tx, connection_id).await?,
                _ => Vec::new(),
            };
            sqlx::query(
                "UPDATE playback_connections SET profile = $2, name = $3, alive = TRUE, \
                   updated_at = $4 WHERE connection_id = $1",
            )
            .bind(connection_id)
            .bind(profile)
            .bind(&new.name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            existing
        };
        let players = replace_players(&mut tx, connection_id, &existing, &new.players).await?;
        tx.commit().await.map_err(err)?;
        Ok(RegisteredConnection {
            connection_id: connection_id.to_owned(),
            name: new.name.clone(),
            alive: true,
            players,
        })
    }

    async fn set_players(
        &self,
        profile: &str,
        connection_id: &str,
        players: &[NewPlayer],
    ) -> Result<Option<RegisteredConnection>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let (name, alive) = match lock_connection(&mut tx, connection_id).await? {
            Some((p, name, alive)) if p == profile => (name, alive),
            // Dropping the transaction rolls it back; nothing was written.
            _ => return Ok(None),
        };
        let existing = players_of(&mut tx, connection_id).await?;
        sqlx::query("UPDATE playback_connections SET updated_at = $2 WHERE connection_id = $1")
            .bind(connection_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let players = replace_players(&mut tx, connection_id, &existing, players).await?;
        tx.commit().await.map_err(err)?;
        Ok(Some(RegisteredConnection {
            connection_id: connection_id.to_owned(),
            name,
            alive,
            players,
        }))
    }

    async fn mark_gone(&self, connection_id: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "UPDATE playback_connections SET alive = FALSE, updated_at = $2 \
             WHERE connection_id = $1 RETURNING profile",
        )
        .bind(connection_id)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(err)
    }

    async fn mark_all_gone(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE playback_connections SET alive = FALSE, updated_at = $1 WHERE alive",
        )
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected())
    }

    async fn connections(&self, profile: &str) -> Result<Vec<RegisteredConnection>, StoreError> {
        let rows: Vec<ConnectionColumns> = sqlx::query_as(
            r#"SELECT c.connection_id, c.name, c.alive, p.id, p.name, p.kind
               FROM playback_connections c
               LEFT JOIN playback_players p ON p.connection_id = c.connection_id
               WHERE c.profile = $1 ORDER BY c.connection_id COLLATE "C", p.ord"#,
        )
        .bind(profile)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(group_connections(rows))
    }

    async fn players(&self, profile: &str) -> Result<Vec<Player>, StoreError> {
        let rows: Vec<PlayerColumns> = sqlx::query_as(
            r#"SELECT p.id, p.name, p.kind FROM playback_players p
               JOIN playback_connections c ON c.connection_id = p.connection_id
               WHERE c.profile = $1 ORDER BY c.connection_id COLLATE "C", p.ord"#,
        )
        .bind(profile)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(rows.into_iter().map(decode_player).collect())
    }

    async fn create_audio_zone(
        &self,
        profile: &str,
        new: &NewAudioZone,
    ) -> Result<AudioZone, StoreError> {
        let players = zone_players(&new.players)?;
        // One statement: the zone and its players, in order, or nothing.
        let id: i64 = sqlx::query_scalar(
            "WITH zone AS ( \
               INSERT INTO playback_audio_zones (profile, name) VALUES ($1, $2) RETURNING id \
             ), members AS ( \
               INSERT INTO playback_audio_zone_players (audio_zone_id, ord, player_id) \
               SELECT zone.id, t.ord - 1, t.player_id \
               FROM zone, UNNEST($3::int8[]) WITH ORDINALITY AS t(player_id, ord) \
             ) \
             SELECT id FROM zone",
        )
        .bind(profile)
        .bind(&new.name)
        .bind(&players)
        .fetch_one(&self.pool)
        .await
        .map_err(err)?;
        Ok(AudioZone {
            audio_zone_id: from_id(id),
            name: new.name.clone(),
            players: new.players.clone(),
        })
    }

    async fn audio_zones(&self, profile: &str) -> Result<Vec<AudioZone>, StoreError> {
        let rows: Vec<ZoneColumns> = sqlx::query_as(
            "SELECT z.id, z.name, zp.player_id FROM playback_audio_zones z \
             LEFT JOIN playback_audio_zone_players zp ON zp.audio_zone_id = z.id \
             WHERE z.profile = $1 ORDER BY z.id, zp.ord",
        )
        .bind(profile)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        Ok(group_zones(rows))
    }
}
