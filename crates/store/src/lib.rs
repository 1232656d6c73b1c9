//! Durable rooms and history for Switchboard: the hub's [`Store`] trait on SQLite (the
//! embedded default) and PostgreSQL.
//!
//! Where to start:
//! - [`open`] turns a `--store` URL (`memory`, `sqlite://PATH`, `sqlite:///abs/path`,
//!   `sqlite::memory:`, `postgres://…`) into an `Arc<dyn Store>`: it connects, creates the
//!   SQLite file if missing and runs the embedded migrations (`migrations/<backend>/`).
//! - [`writer`] is the heart of it: every write goes through one writer task per store
//!   that **group-commits** whatever is queued — many concurrent `append`s, one
//!   transaction, one fsync. This is what makes "acknowledged means kept" affordable.
//! - [`sqlite`] and [`postgres`] hold the SQL for each backend; `rows` converts between
//!   the hub's types and table rows.
//!
//! Both backends share the same schema: `rooms` (one row per durable room, its
//! [`RoomInfo`](switchboard_hub::RoomInfo) as JSON plus the columns appends need) and
//! `messages` (primary key `(room, offset)`), trimmed to each room's `history_size`.

pub mod error;
pub mod postgres;
pub(crate) mod rows;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::{MemoryStore, Store};

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
    /// Connections for reads (`history`, `load_rooms`, `ping`); writes use their own one.
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

/// Opens the store a `--store` URL names, with [`StoreOptions::default`].
///
/// Must be called inside a tokio runtime: SQL stores spawn their writer task.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, OpenError> {
    open_with(url, &StoreOptions::default()).await
}

/// Opens the store a URL names, with the given tuning.
pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    let url = url.trim();
    Ok(match Backend::of(url)? {
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Sqlite => Arc::new(SqliteStore::open(url, options).await?),
        Backend::Postgres => Arc::new(PostgresStore::connect(url, options).await?),
    })
}

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    error::redact(url)
}
