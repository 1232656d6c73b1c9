//! The store conformance suite — rooms (`suite.rs`) and playback (`playback.rs`) — run
//! against every backend (`fixture.rs`): memory, SQLite (a temporary file) and PostgreSQL
//! (a schema per test), one test per case and backend; then what only the SQL stores
//! promise: typed open errors, group commit, WAL mode.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432/test` unless `SWITCHBOARD_TEST_POSTGRES`
//! says otherwise; unreachable, its tests fail unless `SWITCHBOARD_SKIP_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixture;
mod playback;
mod suite;

use std::sync::Arc;
use std::time::Duration;

use fixture::{Fixture, Kind, run};
use switchboard_hub::Store;
use switchboard_store::{Backend, OpenError, PostgresStore, SqliteStore, StoreOptions};

/// One test per (backend, case): `store` cases get a freshly opened room store, `playback`
/// cases a freshly opened playback store, `fixture` cases (rooms) and `playback_fixture`
/// cases the fixture itself (to reopen it).
macro_rules! backend {
    ($name:ident, $kind:expr,
     store: [$($case:ident),* $(,)?],
     fixture: [$($fcase:ident),* $(,)?],
     playback: [$($pcase:ident),* $(,)?],
     playback_fixture: [$($pfcase:ident),* $(,)?]) => {
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
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $pcase() {
                    run($kind, |f: Fixture| async move {
                        playback::$pcase(f.open_playback().await).await
                    })
                    .await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $pfcase() {
                    run($kind, playback::$pfcase).await;
                }
            )*
            /// The whole room suite on one store, as a single caller would see it.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn whole_suite_on_one_store() {
                run($kind, |f: Fixture| async move { suite::conformance(f.open().await).await })
                    .await;
            }
            /// The whole playback suite on one store.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn whole_playback_suite_on_one_store() {
                run($kind, |f: Fixture| async move {
                    playback::conformance(f.open_playback().await).await
                })
                .await;
            }
        }
    };
}

/// Every case, on every backend. The lists are the same for all three: memory follows
/// the SQL stores' rules.
macro_rules! every_backend {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            backend!($name, $kind,
                store: [ping, room_round_trip, append_and_history, odd_payloads_round_trip,
                        same_offset_twice_keeps_one, trims_to_history_size,
                        trims_many_rooms_at_once, large_append_keeps_every_row, delete_room,
                        unsaved_room_keeps_history, concurrent_appends, new_epoch_starts_over],
                fixture: [offsets_continue_after_reopen],
                playback: [sessions_crud_scoped_by_profile,
                           partial_updates_change_only_given_fields, playlist_json_round_trips,
                           unknown_ids, register_connection_assigns_player_ids,
                           reregistration_keeps_ids_by_name, set_players_needs_registration,
                           mark_gone_keeps_connection_listed, players_by_profile,
                           audio_zones_with_players, concurrent_creates,
                           mark_all_gone_at_start],
                playback_fixture: [playback_survives_reopen]);
        )*
    };
}

every_backend! {
    memory => Kind::Memory,
    sqlite => Kind::Sqlite,
    postgres => Kind::Postgres,
}

/// `sqlite::memory:` is a working store of its own (one private database per open), for
/// rooms and playback alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_passes_the_suite() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let a = switchboard_store::open_all("sqlite::memory:")
            .await
            .unwrap();
        let b = switchboard_store::open_all("sqlite::memory:")
            .await
            .unwrap();
        assert_eq!(a.backend, Backend::Sqlite);
        suite::conformance(a.rooms.clone()).await;
        playback::conformance(a.playback.clone()).await;
        assert!(
            b.rooms.load_rooms().await.unwrap().is_empty(),
            "in-memory stores are separate"
        );
        assert!(b.playback.sessions("crud").await.unwrap().is_empty());
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

/// Several rooms with different bounds trimmed in shared group commits: the multi-room
/// trim statement keeps each room's own newest messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_trims_rooms_batched_together() {
    run(Kind::Sqlite, |f: Fixture| async move {
        let concrete = Arc::new(
            SqliteStore::open(&f.url, &StoreOptions::default())
                .await
                .unwrap(),
        );
        suite::trims_many_rooms_at_once(concrete.clone() as Arc<dyn Store>).await;
        let stats = concrete.writer_stats();
        assert!(
            stats.largest_batch > 1,
            "no group commit happened: {stats:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_trims_rooms_batched_together() {
    run(Kind::Postgres, |f: Fixture| async move {
        let concrete = Arc::new(
            PostgresStore::connect(&f.url, &StoreOptions::default())
                .await
                .unwrap(),
        );
        suite::trims_many_rooms_at_once(concrete.clone() as Arc<dyn Store>).await;
        let stats = concrete.writer_stats();
        assert!(
            stats.largest_batch > 1,
            "no group commit happened: {stats:?}"
        );
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

/// `memory` opens the hub's in-memory stores.
#[tokio::test]
async fn memory_url_opens_a_memory_store() {
    tokio::time::timeout(fixture::TEST_TIMEOUT, async {
        let store = switchboard_store::open("memory").await.unwrap();
        store.ping().await.unwrap();
        suite::room_round_trip(store).await;
        let all = switchboard_store::open_all("memory").await.unwrap();
        assert_eq!(all.backend, Backend::Memory);
        suite::room_round_trip(all.rooms).await;
        playback::sessions_crud_scoped_by_profile(all.playback).await;
    })
    .await
    .expect("timed out");
}

/// Playback writes share SQLite's single write connection with the group-commit writer:
/// interleaved with a stream of concurrent appends, both complete and nothing is lost
/// (no `database is locked`, no deadlock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_playback_writes_interleave_with_group_commit() {
    run(Kind::Sqlite, |f: Fixture| async move {
        let stores = f.open_all().await;
        let appends = tokio::spawn(suite::concurrent_appends(stores.rooms.clone()));
        playback::concurrent_creates(stores.playback.clone()).await;
        playback::reregistration_keeps_ids_by_name(stores.playback.clone()).await;
        appends.await.unwrap();
        assert_eq!(
            stores.playback.sessions("concurrent").await.unwrap().len(),
            20
        );
    })
    .await;
}
