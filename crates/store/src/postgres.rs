//! The PostgreSQL store (`postgres://…`).
//!
//! Same schema and rules as the SQLite store. Writes go through the
//! [group-commit writer](crate::writer) on one dedicated connection, so concurrent appends
//! share one transaction and one commit (PostgreSQL's own durability, `synchronous_commit`
//! on by default, applies to that commit). A batch costs a fixed number of round trips
//! whatever its size: rows are sent as arrays and unpacked with `UNNEST`, and offsets and
//! trimming are updated for all touched rooms in one statement each. Reads use a pool of
//! their own.
//!
//! The schema lives in whatever `search_path` the connection has, so several stores can
//! share one database in different schemas (`?options[search_path]=NAME` in the URL).
//!
//! The same struct is also the [`PlaybackStore`](switchboard_hub::PlaybackStore) (in
//! `playback`), in the same database and schema.

mod playback;

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use switchboard_hub::{RoomInfo, Store, StoreError};
use switchboard_protocol::RoomMessage;

use crate::error::{OpenError, redact};
use crate::rows::{
    self, MessageColumns, RoomColumns, clamp_i64, decode_message, decode_room, now_ms,
};
use crate::writer::{Apply, Step, Write, Writer, WriterStats, backend_error};
use crate::{Backend, StoreOptions};

const BACKEND: &str = "postgres";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A [`Store`] and [`PlaybackStore`](switchboard_hub::PlaybackStore) in a PostgreSQL
/// database.
#[derive(Debug)]
pub struct PostgresStore {
    /// Reads, and playback writes (PostgreSQL takes concurrent writers itself); room
    /// writes go through `writer` on a connection of their own.
    pool: PgPool,
    writer: Writer,
    location: String,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and migrates it. Waits at most
    /// `options.connect_timeout` for the server to answer.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<PostgresStore, OpenError> {
        let shown = redact(url);
        let invalid = |reason: String| OpenError::InvalidUrl {
            backend: BACKEND,
            url: shown.clone(),
            reason,
        };
        if Backend::of(url)? != Backend::Postgres {
            return Err(invalid("expected a `postgres://` URL".into()));
        }
        let connect = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
        let connect_error = |source| OpenError::Connect {
            backend: BACKEND,
            url: shown.clone(),
            source,
        };

        let write_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(connect_error)?;

        MIGRATOR
            .run(&write_pool)
            .await
            .map_err(|source| OpenError::Migrate {
                backend: BACKEND,
                url: shown.clone(),
                source,
            })?;

        let pool = PgPoolOptions::new()
            .max_connections(options.read_connections.max(1))
            .acquire_timeout(options.connect_timeout)
            .connect_with(connect)
            .await
            .map_err(connect_error)?;

        let writer = Writer::spawn(
            BACKEND,
            PgWriter { pool: write_pool },
            options.queue_capacity,
            options.max_batch,
        );
        Ok(PostgresStore {
            pool,
            writer,
            location: shown,
        })
    }

    /// `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        BACKEND
    }

    /// The URL this store was opened with (password-redacted).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// How much the group-commit writer has batched so far.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }
}

fn err(e: sqlx::Error) -> StoreError {
    backend_error(BACKEND, &e)
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.writer.is_alive()?;
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn load_rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let rows: Vec<RoomColumns> = sqlx::query_as(
            r#"SELECT r.info::text, r.epoch, r.last_offset,
                      (SELECT MAX(m."offset") FROM messages m WHERE m.room = r.id),
                      r.history_size
               FROM rooms r ORDER BY r.id"#,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.into_iter().map(decode_room).collect()
    }

    async fn save_room(&self, room: &RoomInfo) -> Result<(), StoreError> {
        let row = rows::encode_room(room)?;
        self.writer.submit(Write::SaveRoom(row)).await
    }

    async fn delete_room(&self, id: &str) -> Result<(), StoreError> {
        self.writer.submit(Write::DeleteRoom(id.to_owned())).await
    }

    async fn append(&self, room: &str, messages: &[RoomMessage]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let rows = rows::encode_messages(room, messages)?;
        self.writer.submit(Write::Append(rows)).await
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, StoreError> {
        let limit = clamp_i64(limit as u64);
        let rows: Vec<MessageColumns> = match since {
            Some(since) => sqlx::query_as(
                r#"SELECT "offset", data::text, "from", connection_id, ts FROM messages
                   WHERE room = $1 AND "offset" > $2 ORDER BY "offset" LIMIT $3"#,
            )
            .bind(room)
            .bind(clamp_i64(since))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(err)?,
            None => {
                let mut newest: Vec<MessageColumns> = sqlx::query_as(
                    r#"SELECT "offset", data::text, "from", connection_id, ts FROM messages
                       WHERE room = $1 ORDER BY "offset" DESC LIMIT $2"#,
                )
                .bind(room)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
                newest.reverse();
                newest
            }
        };
        rows.into_iter()
            .map(|cols| decode_message(room, cols))
            .collect()
    }
}

/// The write side: one dedicated connection (a one-connection pool, which also reconnects
/// after the server restarts).
struct PgWriter {
    pool: PgPool,
}

#[async_trait]
impl Apply for PgWriter {
    async fn apply(&self, steps: &[Step<'_>]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for step in steps {
            match step {
                Step::Save(room) => {
                    // A new epoch restarts offsets at 0: the old epoch's messages would
                    // collide with the new ones and inflate the restored offset.
                    sqlx::query(
                        "DELETE FROM messages WHERE room = $1 AND EXISTS \
                         (SELECT 1 FROM rooms WHERE id = $1 AND epoch <> $2)",
                    )
                    .bind(&room.id)
                    .bind(&room.epoch)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO rooms (id, info, epoch, last_offset, history_size, updated_at) \
                         VALUES ($1, $2::json, $3, $4, $5, $6) \
                         ON CONFLICT (id) DO UPDATE SET \
                           info = EXCLUDED.info, \
                           last_offset = CASE WHEN rooms.epoch = EXCLUDED.epoch \
                             THEN GREATEST(rooms.last_offset, EXCLUDED.last_offset) \
                             ELSE EXCLUDED.last_offset END, \
                           epoch = EXCLUDED.epoch, \
                           history_size = EXCLUDED.history_size, \
                           updated_at = EXCLUDED.updated_at",
                    )
                    .bind(&room.id)
                    .bind(&room.info)
                    .bind(&room.epoch)
                    .bind(room.last_offset)
                    .bind(room.history_size)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    // The bound may have shrunk.
                    trim(&mut tx, &[room.id.as_str()]).await?;
                }
                Step::Delete(id) => {
                    sqlx::query("DELETE FROM messages WHERE room = $1")
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM rooms WHERE id = $1")
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                }
                Step::Append { rows, rooms } => {
                    // Rows go as six arrays in one statement: one round trip for the batch.
                    // `plan` removed duplicate keys, which ON CONFLICT DO UPDATE would reject
                    // within a single statement.
                    let room_ids: Vec<&str> = rows.iter().map(|m| m.room.as_str()).collect();
                    let offsets: Vec<i64> = rows.iter().map(|m| m.offset).collect();
                    let data: Vec<&str> = rows.iter().map(|m| m.data.as_str()).collect();
                    let from: Vec<&str> = rows.iter().map(|m| m.from.as_str()).collect();
                    let conns: Vec<Option<&str>> =
                        rows.iter().map(|m| m.connection_id.as_deref()).collect();
                    let ts: Vec<i64> = rows.iter().map(|m| m.ts).collect();
                    sqlx::query(
                        r#"INSERT INTO messages (room, "offset", data, "from", connection_id, ts)
                           SELECT room, "offset", data::json, "from", connection_id, ts
                           FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[],
                                       $5::text[], $6::int8[])
                                AS t(room, "offset", data, "from", connection_id, ts)
                           ON CONFLICT (room, "offset") DO UPDATE SET
                             data = EXCLUDED.data, "from" = EXCLUDED."from",
                             connection_id = EXCLUDED.connection_id, ts = EXCLUDED.ts"#,
                    )
                    .bind(&room_ids)
                    .bind(&offsets)
                    .bind(&data)
                    .bind(&from)
                    .bind(&conns)
                    .bind(&ts)
                    .execute(&mut *tx)
                    .await?;

                    // Track each room's offset in `rooms` so it survives trimming; a room
                    // that was never saved has no row, keeps every message and is not
                    // listed by `load_rooms` (as with `MemoryStore`).
                    let ids: Vec<&str> = rooms.iter().map(|(r, _)| *r).collect();
                    let maxima: Vec<i64> = rooms.iter().map(|(_, o)| *o).collect();
                    sqlx::query(
                        "UPDATE rooms r SET last_offset = GREATEST(r.last_offset, t.max_offset), \
                           updated_at = $3 \
                         FROM UNNEST($1::text[], $2::int8[]) AS t(id, max_offset) \
                         WHERE r.id = t.id",
                    )
                    .bind(&ids)
                    .bind(&maxima)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    trim(&mut tx, &ids).await?;
                }
            }
        }
        tx.commit().await
    }
}

/// Keeps only the newest `history_size` messages of each listed room, in one statement.
///
/// The plan is fixed by the query's shape, whatever the statistics say (and whether
/// PostgreSQL uses a custom or the generic plan of the prepared statement):
/// - the uncorrelated `ARRAY(…)` is an InitPlan, run once per statement;
/// - in it, for each listed room (`r`, by its primary key), `c` finds the cutoff — the
///   newest offset outside the bound — with one backward walk of the `(room, offset)`
///   primary key over the room's `history_size` newest entries (`LIMIT 1 OFFSET`, which
///   PostgreSQL never flattens into the join: once per room, never once per message); no
///   cutoff (the room holds no more than its bound) means nothing to delete;
/// - `d` then reads the room's rows at or below the cutoff by an index range scan (its
///   `OFFSET 0` keeps it from being flattened into a join the planner could reorder);
/// - `ctid = ANY(…)` deletes exactly those rows with a TID scan, never scanning the table.
///
/// So a trim costs the cutoff walk plus one index entry and one row per deleted message.
/// The join form this replaces (`DELETE … USING (rooms + cutoff subquery) WHERE
/// "offset" <= cutoff`) let the planner re-run the cutoff subquery once per message of the
/// room (a join filter over a hash join: quadratic in `history_size`), which benchmarks hit.
///
/// `OFFSET 0` for `history_size` 0 makes the room's newest offset the cutoff: nothing is
/// kept. Rooms without a `rooms` row (never saved) are not trimmed. Row ids are stable
/// within the statement, and this writer is the only one writing `messages`.
async fn trim(tx: &mut Transaction<'static, Postgres>, rooms: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"DELETE FROM messages
           WHERE ctid = ANY (ARRAY(
             SELECT d.ctid
             FROM rooms r
             CROSS JOIN LATERAL (
               SELECT k."offset" AS cutoff FROM messages k WHERE k.room = r.id
               ORDER BY k."offset" DESC LIMIT 1 OFFSET GREATEST(r.history_size, 0)
             ) c
             CROSS JOIN LATERAL (
               SELECT m.ctid FROM messages m
               WHERE m.room = r.id AND m."offset" <= c.cutoff
               OFFSET 0
             ) d
             WHERE r.id = ANY($1::text[])))"#,
    )
    .bind(rooms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
