//! The store conformance suite (`suite.rs`) run against every backend (`fixture.rs`):
//! memory, SQLite (a temporary file) and PostgreSQL (a schema per test), one test per case
//! and backend; then what only the SQL stores promise: typed open errors, group commit,
//! WAL mode.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/test` unless `SWITCHBOARD_TEST_POSTGRES`
//! says otherwise; unreachable, its tests fail unless `SWITCHBOARD_SKIP_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixture;
mod suite;

use std::sync::Arc;
use std::time::Duration;

use fixture::{Fixture, Kind, run};
use switchboard_hub::Store;
use switchboard_store::{Backend, OpenError, PostgresStore, SqliteStore, StoreOptions};

/// One test per (backend, case): `store` cases get a freshly opened store, `fixture` cases
/// the fixture itself (to reopen it).
macro_rules! backend {
    ($name:ident, $kind:expr, store: [$($case:ident),* $(,)?], fixture: [$($fcase:ident),* $(,)?]) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    run($kind, |f: Fixture| async move { suite::$case(f.open().await).await }).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $fcase() {
                    run($kind, suite::$fcase).await;
                }
            )*
            /// The whole suite on one store, as a single caller would see it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn whole_suite_on_one_store() {
                run($kind, |f: Fixture| async move { suite::conformance(f.open().await).await })
                    .await;
            }
        }
    };
}

backend!(memory, Kind::Memory,
    store: [ping, room_round_trip, append_and_history, odd_payloads_round_trip,
            same_offset_twice_keeps_one, trims_to_history_size, delete_room,
            unsaved_room_keeps_history, concurrent_appends],
    fixture: []);

backend!(sqlite, Kind::Sqlite,
    store: [ping, room_round_trip, append_and_history, odd_payloads_round_trip,
            same_offset_twice_keeps_one, trims_to_history_size, delete_room,
            unsaved_room_keeps_history, concurrent_appends, new_epoch_starts_over],
    fixture: [offsets_continue_after_reopen]);

backend!(postgres, Kind::Postgres,
    store: [ping, room_round_trip, append_and_history, odd_payloads_round_trip,
            same_offset_twice_keeps_one, trims_to_history_size, delete_room,
            unsaved_room_keeps_history, concurrent_appends, new_epoch_starts_over],
    fixture: [offsets_continue_after_reopen]);

/// `sqlite::memory:` is a working store of its own (one private database per open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_passes_the_suite() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let a = switchboard_store::open("sqlite::memory:").await.unwrap();
        let b = switchboard_store::open("sqlite::memory:").await.unwrap();
        suite::conformance(a.clone()).await;
        assert!(
            b.load_rooms().await.unwrap().is_empty(),
            "in-memory stores are separate"
        );
    })
    .await
    .expect("timed out");
}

/// Concurrent appends are group-committed: fewer transactions than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commits_concurrent_appends() {
    run(Kind::Sqlite, |f: Fixture| async move {
        let concrete = Arc::new(
            SqliteStore::open(&f.url, &StoreOptions::default())
                .await
                .unwrap(),
        );
        assert_eq!(concrete.backend_name(), "sqlite");
        suite::concurrent_appends(concrete.clone() as Arc<dyn Store>).await;
        let stats = concrete.writer_stats();
        // 5 saves + 1000 appends.
        assert_eq!(stats.writes, 1005, "{stats:?}");
        assert!(
            stats.batches < stats.writes,
            "no group commit happened: {stats:?}"
        );
        assert!(stats.largest_batch > 1, "{stats:?}");
        eprintln!("sqlite group commit: {stats:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_group_commits_concurrent_appends() {
    run(Kind::Postgres, |f: Fixture| async move {
        let concrete = Arc::new(
            PostgresStore::connect(&f.url, &StoreOptions::default())
                .await
                .unwrap(),
        );
        assert_eq!(concrete.backend_name(), "postgres");
        suite::concurrent_appends(concrete.clone() as Arc<dyn Store>).await;
        let stats = concrete.writer_stats();
        assert_eq!(stats.writes, 1005, "{stats:?}");
        assert!(
            stats.batches < stats.writes,
            "no group commit happened: {stats:?}"
        );
        eprintln!("postgres group commit: {stats:?}");
    })
    .await;
}

/// The file is created with its directory, in WAL mode, and offsets far out of the range
/// a `since` can name are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_is_created_in_wal_mode() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/deeper/switchboard.db");
        let url = format!("sqlite://{}", path.display());
        let store = switchboard_store::open(&url).await.unwrap();
        assert!(path.exists(), "the database file was not created");
        store.ping().await.unwrap();
        assert!(
            store
                .history("r", Some(u64::MAX), 10)
                .await
                .unwrap()
                .is_empty()
        );

        use sqlx::Connection;
        let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut raw)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        raw.close().await.unwrap();
    })
    .await
    .expect("timed out");
}

/// Bad URLs and unreachable databases give typed errors that say what was wrong, and never
/// show a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_give_typed_errors() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let quick = Fixture::quick_options();
        let open = |url: &'static str| {
            let quick = quick.clone();
            async move {
                match switchboard_store::open_with(url, &quick).await {
                    Ok(_) => panic!("`{url}` opened"),
                    Err(e) => e,
                }
            }
        };

        let e = open("mysql://root@localhost/db").await;
        assert!(matches!(e, OpenError::UnsupportedScheme { .. }), "{e:?}");
        assert!(e.to_string().contains("mysql://root@localhost/db"), "{e}");
        assert!(matches!(
            open("").await,
            OpenError::UnsupportedScheme { .. }
        ));
        assert!(matches!(
            open("switchboard.db").await,
            OpenError::UnsupportedScheme { .. }
        ));
        assert!(matches!(
            Backend::of("redis://x"),
            Err(OpenError::UnsupportedScheme { .. })
        ));
        assert_eq!(Backend::of("memory").unwrap(), Backend::Memory);
        assert_eq!(Backend::of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgresql://h/db").unwrap(), Backend::Postgres);

        let e = open("sqlite://").await;
        assert!(
            matches!(
                e,
                OpenError::InvalidUrl {
                    backend: "sqlite",
                    ..
                }
            ),
            "{e:?}"
        );
        let e = open("sqlite://x.db?frobnicate=1").await;
        assert!(
            matches!(
                e,
                OpenError::InvalidUrl {
                    backend: "sqlite",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("frobnicate"), "{e}");

        // A path whose "directory" is a file cannot be created.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let url = format!("sqlite://{}/sub/store.db", file.display());
        let e = match switchboard_store::open(&url).await {
            Ok(_) => panic!("opened a database under a file"),
            Err(e) => e,
        };
        assert!(matches!(e, OpenError::CreateDir { .. }), "{e:?}");
        assert!(e.to_string().contains("plain-file"), "{e}");

        // A file that is not a database.
        let url = format!("sqlite://{}", file.display());
        let e = match switchboard_store::open(&url).await {
            Ok(_) => panic!("opened a file that is not a database"),
            Err(e) => e,
        };
        assert!(
            matches!(e, OpenError::Connect { .. } | OpenError::Migrate { .. }),
            "{e:?}"
        );

        let e = open("postgres://user@host:notaport/db").await;
        assert!(
            matches!(
                e,
                OpenError::InvalidUrl {
                    backend: "postgres",
                    ..
                }
            ),
            "{e:?}"
        );

        // Nothing listens on port 1: refused, retried until the connect timeout, then a
        // typed error naming the URL without its password.
        let started = std::time::Instant::now();
        let e = open("postgres://user:hunter2@127.0.0.1:1/db").await;
        assert!(
            matches!(
                e,
                OpenError::Connect {
                    backend: "postgres",
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    })
    .await
    .expect("timed out");
}

/// `memory` opens the hub's in-memory store.
#[tokio::test]
async fn memory_url_opens_a_memory_store() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let store = switchboard_store::open("memory").await.unwrap();
        store.ping().await.unwrap();
        suite::room_round_trip(store).await;
    })
    .await
    .expect("timed out");
}
