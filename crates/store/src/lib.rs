//! Durable state for Switchboard: the hub's [`Store`] (rooms and their history) and
//! [`PlaybackStore`] (playback sessions, registered connections and their players, audio
//! zones) traits on SQLite (the embedded default) and PostgreSQL.
//!
//! Where to start:
//! - [`open_all`] turns a `--store` URL (`memory`, `sqlite://PATH`, `sqlite:///abs/path`,
//!   `sqlite::memory:`, `postgres://…`) into [`Stores`]: both stores on the same backend
//!   (one SQL store object behind both). It connects, creates the SQLite file if missing
//!   and runs the embedded migrations (`migrations/<backend>/`). [`open`] gives the room
//!   store alone.
//! - [`writer`] is the heart of it: every write goes through one writer task per store
//!   that **group-commits** whatever is queued — many concurrent `append`s, one
//!   transaction, one fsync. This is what makes "acknowledged means kept" affordable.
//! - [`sqlite`] and [`postgres`] hold the SQL for each backend; `rows` converts between
//!   the hub's types and table rows.
//!
//! Both backends share the same schema: `rooms` (one row per durable room, its
//! [`RoomInfo`](switchboard_hub::RoomInfo) as JSON plus the columns appends need) and
//! `messages` (primary key `(room, offset)`), trimmed to each room's `history_size`; and
//! for playback `playback_sessions`, `playback_connections`, `playback_players`,
//! `playback_audio_zones` and `playback_audio_zone_players`, with database-assigned ids.
//! Playback writes are rare: they do not go through the group-commit writer but run one
//! transaction per call (on SQLite on the writer's own connection, so there is still only
//! one writer).

pub mod error;
pub(crate) mod playback_rows;
pub mod postgres;
pub(crate) mod rows;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{MemoryPlaybackStore, MemoryStore, PlaybackStore, Store};

pub use error::OpenError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use writer::WriterStats;

/// Tuning for a SQL store; [`Default`] suits a single server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Writes waiting for the writer task before callers wait too (back-pressure instead of
    /// unbounded memory when the disk or the database falls behind).
    pub queue_capacity: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Connections for reads (`history`, `load_rooms`, `ping`, playback lists) and, on
    /// PostgreSQL, playback writes; room writes use a connection of their own.
    pub read_connections: u32,
    /// How long to wait for the database: at start, and for a connection afterwards.
    pub connect_timeout: Duration,
    /// SQLite only: how long a statement waits for a lock held by another process.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_capacity: 4096,
            max_batch: 256,
            read_connections: 4,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Which kind of store a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `memory`: [`MemoryStore`], nothing survives the process.
    Memory,
    /// `sqlite:…`
    Sqlite,
    /// `postgres://…` or `postgresql://…`
    Postgres,
}

impl Backend {
    /// The backend a store URL names, without connecting.
    pub fn of(url: &str) -> Result<Backend, OpenError> {
        let url = url.trim();
        if url == "memory" || url == "memory://" {
            Ok(Backend::Memory)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(OpenError::UnsupportedScheme {
                url: error::redact(url),
            })
        }
    }

    /// A short name for logs and metrics: `memory`, `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Both stores a `--store` URL names, on the same backend: for SQL URLs one store object
/// (one connection pool, one migrated schema) serves as both.
#[derive(Clone)]
pub struct Stores {
    /// Durable rooms and their history, for `Hub::with_store`.
    pub rooms: Arc<dyn Store>,
    /// Playback sessions, connections, players and audio zones, for
    /// `Hub::set_playback_store`.
    pub playback: Arc<dyn PlaybackStore>,
    /// Which backend both live in.
    pub backend: Backend,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Both stores in one object (e.g. a [`SqliteStore`] or [`PostgresStore`]).
    pub fn shared<S: Store + PlaybackStore>(store: Arc<S>, backend: Backend) -> Stores {
        Stores {
            rooms: store.clone(),
            playback: store,
            backend,
        }
    }

    /// A fresh [`MemoryStore`] and [`MemoryPlaybackStore`]: nothing survives the process.
    pub fn memory() -> Stores {
        Stores {
            rooms: Arc::new(MemoryStore::new()),
            playback: Arc::new(MemoryPlaybackStore::new()),
            backend: Backend::Memory,
        }
    }
}

/// Opens both stores a `--store` URL names, with [`StoreOptions::default`].
///
/// Must be called inside a tokio runtime: SQL stores spawn their writer task.
pub async fn open_all(url: &str) -> Result<Stores, OpenError> {
    open_all_with(url, &StoreOptions::default()).await
}

/// Opens both stores a URL names, with the given tuning.
pub async fn open_all_with(url: &str, options: &StoreOptions) -> Result<Stores, OpenError> {
    let url = url.trim();
    Ok(match Backend::of(url)? {
        Backend::Memory => Stores::memory(),
        Backend::Sqlite => Stores::shared(
            Arc::new(SqliteStore::open(url, options).await?),
            Backend::Sqlite,
        ),
        Backend::Postgres => Stores::shared(
            Arc::new(PostgresStore::connect(url, options).await?),
            Backend::Postgres,
        ),
    })
}

/// Opens the room store a `--store` URL names, with [`StoreOptions::default`]. (The
/// playback store on the same backend comes with [`open_all`].)
///
/// Must be called inside a tokio runtime: SQL stores spawn their writer task.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the room store a URL names, with the given tuning.
pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    Ok(open_all_with(url, options).await?.rooms)
}

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    error::redact(url)
}
