//! The SQLite store: the embedded default (`sqlite://switchboard.db`).
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so a commit returns
//! only after the WAL is fsynced — an acknowledged message survives `kill -9` and a power
//! cut. That fsync is the expensive part of a write, which is why all writes go through
//! one connection owned by the [group-commit writer](crate::writer): many concurrent
//! appends share one transaction and one fsync. Reads use a small pool of their own; WAL
//! lets them run while the writer commits.
//!
//! `sqlite::memory:` (tests) is one private database per store: since every connection to
//! it must be the same one, reads and writes share the writer's single connection.
//!
//! The same struct is also the [`PlaybackStore`](switchboard_hub::PlaybackStore) (in
//! `playback`), on the same file and the same single write connection.

mod playback;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use switchboard_hub::{RoomInfo, Store, StoreError};
use switchboard_protocol::RoomMessage;

use crate::error::{OpenError, redact};
use crate::rows::{
    self, MessageColumns, MessageRow, RoomColumns, clamp_i64, decode_message, decode_room, now_ms,
};
use crate::writer::{Apply, Step, Write, Writer, WriterStats, backend_error};
use crate::{Backend, StoreOptions};

const BACKEND: &str = "sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A [`Store`] and [`PlaybackStore`](switchboard_hub::PlaybackStore) in a SQLite file (or
/// in memory, for tests).
#[derive(Debug)]
pub struct SqliteStore {
    reader: SqlitePool,
    /// The one write connection (a one-connection pool): the group-commit writer's, also
    /// taken by playback writes so that this process never has two SQLite writers.
    write: SqlitePool,
    writer: Writer,
    location: String,
}

/// Where a `sqlite:` URL points.
enum Target {
    Memory,
    File(PathBuf),
}

fn target(url: &str) -> Target {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let memory_mode = params.split('&').any(|p| p == "mode=memory");
    if database == ":memory:" || memory_mode {
        Target::Memory
    } else {
        Target::File(PathBuf::from(database))
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite:` URL names and migrates it.
    ///
    /// `sqlite://PATH` is relative to the working directory, `sqlite:///abs/path` absolute,
    /// `sqlite::memory:` a fresh private in-memory database. A missing parent directory is
    /// created.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<SqliteStore, OpenError> {
        let shown = redact(url);
        let invalid = |reason: String| OpenError::InvalidUrl {
            backend: BACKEND,
            url: shown.clone(),
            reason,
        };
        if Backend::of(url)? != Backend::Sqlite {
            return Err(invalid("expected a `sqlite:` URL".into()));
        }
        let target = target(url);
        if let Target::File(path) = &target {
            if path.as_os_str().is_empty() {
                return Err(invalid(
                    "no file path (use sqlite://PATH, sqlite:///ABSOLUTE/PATH or sqlite::memory:)"
                        .into(),
                ));
            }
            create_parent(path).map_err(|source| OpenError::CreateDir {
                url: shown.clone(),
                path: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                source,
            })?;
        }

        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| invalid(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout);

        let connect_error = |source| OpenError::Connect {
            backend: BACKEND,
            url: shown.clone(),
            source,
        };
        // One connection for all writes, kept open for the life of the store: an in-memory
        // database lives only as long as a connection to it does.
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
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

        let reader = match target {
            Target::Memory => write_pool.clone(),
            Target::File(_) => SqlitePoolOptions::new()
                .max_connections(options.read_connections.max(1))
                .acquire_timeout(options.connect_timeout)
                .connect_with(connect)
                .await
                .map_err(connect_error)?,
        };

        let writer = Writer::spawn(
            BACKEND,
            SqliteWriter {
                pool: write_pool.clone(),
            },
            options.queue_capacity,
            options.max_batch,
        );
        Ok(SqliteStore {
            reader,
            write: write_pool,
            writer,
            location: shown,
        })
    }

    /// `"sqlite"`.
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

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

fn err(e: sqlx::Error) -> StoreError {
    backend_error(BACKEND, &e)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.writer.is_alive()?;
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn load_rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let rows: Vec<RoomColumns> = sqlx::query_as(
            r#"SELECT r.info, r.epoch, r.last_offset,
                      (SELECT MAX(m."offset") FROM messages m WHERE m.room = r.id),
                      r.history_size
               FROM rooms r ORDER BY r.id"#,
        )
        .fetch_all(&self.reader)
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
                r#"SELECT "offset", data, "from", connection_id, ts FROM messages
                   WHERE room = ?1 AND "offset" > ?2 ORDER BY "offset" LIMIT ?3"#,
            )
            .bind(room)
            .bind(clamp_i64(since))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(err)?,
            None => {
                let mut newest: Vec<MessageColumns> = sqlx::query_as(
                    r#"SELECT "offset", data, "from", connection_id, ts FROM messages
                       WHERE room = ?1 ORDER BY "offset" DESC LIMIT ?2"#,
                )
                .bind(room)
                .bind(limit)
                .fetch_all(&self.reader)
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

/// The write side: owns the single write connection (through a one-connection pool, which
/// also reconnects if it is ever lost).
struct SqliteWriter {
    pool: SqlitePool,
}

#[async_trait]
impl Apply for SqliteWriter {
    async fn apply(&self, steps: &[Step<'_>]) -> Result<(), sqlx::Error> {
        // IMMEDIATE takes the write lock up front, so a concurrent writer in another process
        // (a backup, an admin shell) makes us wait `busy_timeout` at BEGIN rather than fail
        // half-way through the batch.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now = now_ms();
        for step in steps {
            match step {
                Step::Save(room) => {
                    // A new epoch restarts offsets at 0: the old epoch's messages would
                    // collide with the new ones and inflate the restored offset.
                    sqlx::query(
                        "DELETE FROM messages WHERE room = ?1 AND EXISTS \
                         (SELECT 1 FROM rooms WHERE id = ?1 AND epoch <> ?2)",
                    )
                    .bind(&room.id)
                    .bind(&room.epoch)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO rooms (id, info, epoch, last_offset, history_size, updated_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT (id) DO UPDATE SET \
                           info = excluded.info, \
                           last_offset = CASE WHEN rooms.epoch = excluded.epoch \
                             THEN MAX(rooms.last_offset, excluded.last_offset) \
                             ELSE excluded.last_offset END, \
                           epoch = excluded.epoch, \
                           history_size = excluded.history_size, \
                           updated_at = excluded.updated_at",
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
                    trim(&mut tx, &room.id, room.history_size).await?;
                }
                Step::Delete(id) => {
                    sqlx::query("DELETE FROM messages WHERE room = ?1")
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM rooms WHERE id = ?1")
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                }
                Step::Append { rows, rooms } => {
                    insert_messages(&mut tx, rows).await?;
                    for (room, max_offset) in rooms {
                        // Track the offset in `rooms` so it survives trimming; a room that
                        // was never saved has no row, keeps every message and is not listed
                        // by `load_rooms` (as with `MemoryStore`).
                        let history_size: Option<i64> = sqlx::query_scalar(
                            "UPDATE rooms SET last_offset = MAX(last_offset, ?2), updated_at = ?3 \
                             WHERE id = ?1 RETURNING history_size",
                        )
                        .bind(*room)
                        .bind(*max_offset)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(history_size) = history_size {
                            trim(&mut tx, room, history_size).await?;
                        }
                    }
                }
            }
        }
        tx.commit().await
    }
}

/// Most rows one `INSERT` carries: 6 parameters a row stays far below SQLite's limit on
/// bound parameters (999 before SQLite 3.32). A power of two, see [`insert_messages`].
const MAX_ROWS_PER_INSERT: usize = 64;

/// `INSERT … VALUES` upserts for 1, 2, 4, … [`MAX_ROWS_PER_INSERT`] rows, indexed by the
/// power of two: a handful of distinct statements, each prepared once and kept in the
/// connection's statement cache.
static INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let row = "(?, ?, ?, ?, ?, ?)";
    (0..=MAX_ROWS_PER_INSERT.trailing_zeros())
        .map(|power| {
            let values = vec![row; 1 << power].join(", ");
            format!(
                r#"INSERT INTO messages (room, "offset", data, "from", connection_id, ts)
                   VALUES {values}
                   ON CONFLICT (room, "offset") DO UPDATE SET
                     data = excluded.data, "from" = excluded."from",
                     connection_id = excluded.connection_id, ts = excluded.ts"#
            )
        })
        .collect()
});

/// Inserts (or replaces) a batch's rows with as few statements as possible: a statement's
/// fixed cost (binding, stepping, going through the connection's worker thread) dominates
/// a row's. Rows go in chunks of [`MAX_ROWS_PER_INSERT`], then the rest in decreasing
/// powers of two (e.g. 7 rows: 4 + 2 + 1), so that only a few distinct statements exist.
/// `plan` removed duplicate keys and sorted the rows; upserting them in that order in one
/// statement or in several gives the same result.
async fn insert_messages(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &[&MessageRow],
) -> Result<(), sqlx::Error> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_ROWS_PER_INSERT);
        // The largest power of two not above n.
        let power = n.ilog2();
        let (chunk, tail) = rest.split_at(1 << power);
        let sql: &'static str = INSERTS[power as usize].as_str();
        let mut query = sqlx::query(sql);
        for m in chunk {
            query = query
                .bind(m.room.as_str())
                .bind(m.offset)
                .bind(m.data.as_str())
                .bind(m.from.as_str())
                .bind(m.connection_id.as_deref())
                .bind(m.ts);
        }
        query.execute(&mut **tx).await?;
        rest = tail;
    }
    Ok(())
}

/// Keeps only the newest `history_size` messages of a room.
async fn trim(
    tx: &mut Transaction<'static, Sqlite>,
    room: &str,
    history_size: i64,
) -> Result<(), sqlx::Error> {
    // The subquery finds the newest offset that falls outside the bound (NULL when the room
    // holds no more than `history_size`, which deletes nothing); everything at or below it
    // goes. Both walk the (room, offset) primary key. The subquery names no column of the
    // outer query, so SQLite runs it once per statement (`SCALAR SUBQUERY`, not
    // `CORRELATED`, in EXPLAIN QUERY PLAN): unlike a join form on PostgreSQL it cannot be
    // re-run once per message.
    sqlx::query(
        r#"DELETE FROM messages WHERE room = ?1 AND "offset" <=
             (SELECT "offset" FROM messages WHERE room = ?1
              ORDER BY "offset" DESC LIMIT 1 OFFSET ?2)"#,
    )
    .bind(room)
    .bind(history_size.max(0))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
