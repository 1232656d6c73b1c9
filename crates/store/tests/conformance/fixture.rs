//! The backends the suite runs against, each test with a store of its own:
//! memory, SQLite in a temporary directory, and PostgreSQL in a schema made for the test
//! (and dropped after it), so tests run in parallel on one database.
//!
//! PostgreSQL: `postgres://postgres@127.0.0.1:5432/test` unless `SWITCHBOARD_TEST_POSTGRES`
//! names another. When it is unreachable the PostgreSQL tests fail, unless
//! `SWITCHBOARD_SKIP_POSTGRES=1`, which skips them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use switchboard_hub::{PlaybackStore, Store};
use switchboard_store::{StoreOptions, Stores};

/// How long one test may take, store setup and cleanup included.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

/// One test's backend: how to open (and reopen) its store.
#[derive(Clone)]
pub struct Fixture {
    /// The URL `switchboard_store::open` takes (empty for memory).
    pub url: String,
    /// Memory has no URL to reopen: the same stores are handed out each time.
    memory: Option<Stores>,
    /// Keeps the SQLite directory alive until the test ends.
    _dir: Option<Arc<tempfile::TempDir>>,
    /// The PostgreSQL schema to drop afterwards.
    schema: Option<String>,
}

impl Fixture {
    /// Opens the room store (again, for persistent backends: a reopen sees what was
    /// committed).
    pub async fn open(&self) -> Arc<dyn Store> {
        match &self.memory {
            Some(m) => m.rooms.clone(),
            None => switchboard_store::open(&self.url)
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", self.url)),
        }
    }

    /// Opens both stores on the fixture's backend (again, for persistent backends).
    pub async fn open_all(&self) -> Stores {
        match &self.memory {
            Some(m) => m.clone(),
            None => switchboard_store::open_all(&self.url)
                .await
                .unwrap_or_else(|e| panic!("opening {}: {e}", self.url)),
        }
    }

    /// Opens the playback store (again, for persistent backends).
    pub async fn open_playback(&self) -> Arc<dyn PlaybackStore> {
        self.open_all().await.playback
    }

    /// Options that make an unreachable database fail fast.
    pub fn quick_options() -> StoreOptions {
        StoreOptions {
            connect_timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        }
    }
}

fn postgres_base() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

fn skip_postgres() -> bool {
    std::env::var("SWITCHBOARD_SKIP_POSTGRES").is_ok_and(|v| v == "1" || v == "true")
}

async fn admin_connection(base: &str) -> Result<PgConnection, String> {
    let options: PgConnectOptions = base
        .parse()
        .map_err(|e| format!("bad SWITCHBOARD_TEST_POSTGRES `{base}`: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// A fresh fixture, or `None` when PostgreSQL is skipped.
pub async fn fixture(kind: Kind) -> Option<Fixture> {
    match kind {
        Kind::Memory => Some(Fixture {
            url: String::new(),
            memory: Some(Stores::memory()),
            _dir: None,
            schema: None,
        }),
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            Some(Fixture {
                url,
                memory: None,
                _dir: Some(Arc::new(dir)),
                schema: None,
            })
        }
        Kind::Postgres => {
            let base = postgres_base();
            let mut admin = match admin_connection(&base).await {
                Ok(c) => c,
                Err(e) if skip_postgres() => {
                    eprintln!("skipping a PostgreSQL test (SWITCHBOARD_SKIP_POSTGRES=1): {e}");
                    return None;
                }
                Err(e) => panic!(
                    "PostgreSQL is not reachable at {base}: {e}\n\
                     Start PostgreSQL, point SWITCHBOARD_TEST_POSTGRES at one, or set \
                     SWITCHBOARD_SKIP_POSTGRES=1 to skip the PostgreSQL tests."
                ),
            };
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let schema = format!(
                "sbtest_{}_{}_{nanos}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("creating schema {schema} on {base}: {e}"));
            let _ = admin.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            let url = format!("{base}{sep}options[search_path]={schema}");
            Some(Fixture {
                url,
                memory: None,
                _dir: None,
                schema: Some(schema),
            })
        }
    }
}

async fn cleanup(fixture: &Fixture) {
    if let Some(schema) = &fixture.schema
        && let Ok(mut admin) = admin_connection(&postgres_base()).await
    {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// Runs one test body against a fresh fixture of `kind`, bounded by [`TEST_TIMEOUT`],
/// and cleans the fixture up whether the body passed, failed or hung.
pub async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(Fixture) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(fixture) = fixture(kind).await else {
        return;
    };
    // Spawned so that a failing assertion comes back as a JoinError and cleanup still runs.
    let task = tokio::spawn(tokio::time::timeout(TEST_TIMEOUT, body(fixture.clone())));
    let outcome = task.await;
    cleanup(&fixture).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{kind:?} test did not finish within {TEST_TIMEOUT:?}"),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("{kind:?} test task failed: {e}"),
        },
    }
}
