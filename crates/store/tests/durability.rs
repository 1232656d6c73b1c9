//! "Acknowledged means kept", tested the hard way: a child process appends to a SQLite
//! store from several tasks and prints each offset once `append` has returned; the parent
//! kills it with SIGKILL mid-stream, reopens the file and checks that every acknowledged
//! offset is there.
//!
//! The child is this same test binary, re-run with `--ignored --exact child_appender` and
//! the database URL in `SWITCHBOARD_STORE_CHILD_URL`. It runs in the temporary directory
//! and opens `sqlite://kill.db`, so this also checks that a relative path is taken from the
//! working directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_hub::{RoomInfo, SlowConsumer};
use switchboard_protocol::RoomMessage;

const CHILD_ENV: &str = "SWITCHBOARD_STORE_CHILD_URL";
const ROOM: &str = "durable";
/// How many acknowledgements the parent waits for before it kills the child.
const KILL_AFTER_ACKS: usize = 300;

fn room() -> RoomInfo {
    RoomInfo {
        id: ROOM.into(),
        name: ROOM.into(),
        description: String::new(),
        max_connections: 10,
        code: None,
        meta: Default::default(),
        created_at: 0,
        expires_at: None,
        members_count: 0,
        history_size: 1_000_000,
        history_ttl_s: 0,
        durable: true,
        params: Vec::new(),
        slow_consumer: SlowConsumer::Disconnect,
        epoch: "e1".into(),
        offset: 0,
    }
}

#[test]
fn acked_appends_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.db");
    let url = format!("sqlite://{}", path.display());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "sqlite://kill.db")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child appender");

    // Read acknowledgements on a thread so that a silent child cannot hang the test.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(offset) = line.strip_prefix("ACKED ")
                && tx.send(offset.trim().parse().unwrap()).is_err()
            {
                break;
            }
        }
    });

    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < KILL_AFTER_ACKS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(offset) => {
                acked.insert(offset);
            }
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped acknowledging after {} acks: {e}",
                    acked.len()
                );
            }
        }
    }
    // SIGKILL while the child is still writing: no destructor, no flush, no checkpoint.
    child.kill().expect("kill the child");
    child.wait().unwrap();
    // Whatever was acknowledged before the kill and is still in the pipe counts too.
    reader.join().unwrap();
    acked.extend(rx.try_iter());
    assert!(
        path.exists(),
        "the relative path was not taken from the working directory"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = switchboard_store::open(&url)
            .await
            .expect("reopen after kill -9");
        let kept: BTreeSet<u64> = store
            .history(ROOM, Some(0), 10_000_000)
            .await
            .unwrap()
            .iter()
            .map(|m| m.offset)
            .collect();
        let lost: Vec<_> = acked.difference(&kept).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged messages lost after kill -9 (of {}): {lost:?}",
            lost.len(),
            acked.len()
        );
        let info = store.load_rooms().await.unwrap();
        let info = info.iter().find(|r| r.id == ROOM).expect("room survives");
        assert!(info.offset >= *acked.last().unwrap());
        eprintln!(
            "kill -9: {} acked, {} kept, restored offset {}",
            acked.len(),
            kept.len(),
            info.offset
        );
    });
}

/// The child side of [`acked_appends_survive_kill_9`]; does nothing when run directly.
#[test]
#[ignore = "run by acked_appends_survive_kill_9 as a child process"]
fn child_appender() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let store = switchboard_store::open(&url).await.unwrap();
        store.save_room(&room()).await.unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        // Bounded even if nobody kills it.
        let stop = Instant::now() + Duration::from_secs(60);
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (store, next, out) = (store.clone(), next.clone(), out.clone());
                tokio::spawn(async move {
                    while Instant::now() < stop {
                        let offset = next.fetch_add(1, Ordering::SeqCst) + 1;
                        let m = RoomMessage {
                            room: ROOM.into(),
                            data: json!({"task": t, "offset": offset}),
                            from: format!("t{t}"),
                            connection_id: None,
                            offset,
                            ts: 0,
                        };
                        store.append(ROOM, &[m]).await.unwrap();
                        let mut out = out.lock().unwrap();
                        writeln!(out, "ACKED {offset}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}
