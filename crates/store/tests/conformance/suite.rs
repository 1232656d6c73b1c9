//! The conformance suite: what every `Store` must do, written once against
//! `Arc<dyn Store>` and run on every backend (see `main.rs`).
//!
//! Each case uses room ids of its own, so cases may also share one store
//! ([`conformance`] runs them all in turn on one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use switchboard_hub::{RoomInfo, SlowConsumer, Store};
use switchboard_protocol::{ParamState, RoomMessage};

use crate::fixture::Fixture;

/// Every case that needs only a store, in turn.
pub async fn conformance(store: Arc<dyn Store>) {
    ping(store.clone()).await;
    room_round_trip(store.clone()).await;
    append_and_history(store.clone()).await;
    odd_payloads_round_trip(store.clone()).await;
    same_offset_twice_keeps_one(store.clone()).await;
    trims_to_history_size(store.clone()).await;
    trims_many_rooms_at_once(store.clone()).await;
    large_append_keeps_every_row(store.clone()).await;
    delete_room(store.clone()).await;
    unsaved_room_keeps_history(store.clone()).await;
    new_epoch_starts_over(store.clone()).await;
    concurrent_appends(store).await;
}

pub fn room(id: &str, history_size: usize) -> RoomInfo {
    let mut meta = serde_json::Map::new();
    meta.insert("owner".into(), json!("ada"));
    meta.insert("tags".into(), json!(["a", "b"]));
    RoomInfo {
        id: id.to_owned(),
        name: format!("Room {id}"),
        description: "a durable room".into(),
        max_connections: 50,
        code: Some("4821".into()),
        meta,
        created_at: 1_700_000_000_000,
        expires_at: Some(1_700_086_400_000),
        // Restored rooms have no members; saving one with none keeps equality simple.
        members_count: 0,
        history_size,
        history_ttl_s: 3600,
        durable: true,
        params: vec![ParamState {
            name: "volume".into(),
            value: 0.5,
            min: 0.0,
            max: 1.0,
        }],
        slow_consumer: SlowConsumer::Conflate,
        epoch: format!("epoch-{id}"),
        offset: 0,
    }
}

pub fn message(room: &str, offset: u64) -> RoomMessage {
    RoomMessage {
        room: room.to_owned(),
        data: json!({"n": offset, "text": format!("message {offset}")}),
        from: format!("client-{}", offset % 3),
        connection_id: offset.is_multiple_of(2).then(|| format!("conn-{offset}")),
        offset,
        ts: 1_700_000_000_000 + offset as i64,
    }
}

pub fn messages(room: &str, offsets: impl IntoIterator<Item = u64>) -> Vec<RoomMessage> {
    offsets.into_iter().map(|o| message(room, o)).collect()
}

pub fn offsets(messages: &[RoomMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

pub async fn loaded(store: &Arc<dyn Store>, id: &str) -> Option<RoomInfo> {
    store
        .load_rooms()
        .await
        .expect("load_rooms")
        .into_iter()
        .find(|r| r.id == id)
}

pub async fn all_history(store: &Arc<dyn Store>, room: &str) -> Vec<RoomMessage> {
    store
        .history(room, Some(0), 1_000_000)
        .await
        .expect("history")
}

pub async fn ping(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

/// Saved rooms come back field for field; saving again replaces.
pub async fn room_round_trip(store: Arc<dyn Store>) {
    let a = room("rt-a", 100);
    let mut b = room("rt-b", 7);
    b.code = None;
    b.expires_at = None;
    b.meta = serde_json::Map::new();
    b.params = Vec::new();
    b.slow_consumer = SlowConsumer::Disconnect;
    b.offset = 42;
    b.history_ttl_s = 0;
    store.save_room(&a).await.unwrap();
    store.save_room(&b).await.unwrap();

    assert_eq!(loaded(&store, "rt-a").await.as_ref(), Some(&a));
    assert_eq!(loaded(&store, "rt-b").await.as_ref(), Some(&b));

    let mut a2 = a.clone();
    a2.name = "Renamed".into();
    a2.history_size = 10;
    a2.meta.insert("extra".into(), json!({"nested": [1, 2, 3]}));
    store.save_room(&a2).await.unwrap();
    assert_eq!(loaded(&store, "rt-a").await.as_ref(), Some(&a2));
    assert!(loaded(&store, "rt-missing").await.is_none());
}

/// History with `since` (ascending, at most `limit`) and without (the newest, oldest first).
pub async fn append_and_history(store: Arc<dyn Store>) {
    let id = "hist";
    store.save_room(&room(id, 100)).await.unwrap();
    store.append(id, &messages(id, 1..=3)).await.unwrap();
    store.append(id, &messages(id, 4..=4)).await.unwrap();
    store.append(id, &messages(id, 5..=10)).await.unwrap();
    store.append(id, &[]).await.unwrap();

    let all = store.history(id, None, 100).await.unwrap();
    assert_eq!(all, messages(id, 1..=10), "every message, field for field");

    let h = |since, limit| {
        let store = store.clone();
        async move { offsets(&store.history(id, since, limit).await.unwrap()) }
    };
    assert_eq!(h(None, 3).await, [8, 9, 10], "newest 3, oldest first");
    assert_eq!(h(None, 1).await, [10]);
    assert_eq!(h(None, 0).await, Vec::<u64>::new());
    assert_eq!(h(Some(0), 4).await, [1, 2, 3, 4], "since 0: from the start");
    assert_eq!(h(Some(7), 100).await, [8, 9, 10]);
    assert_eq!(h(Some(3), 2).await, [4, 5]);
    assert_eq!(
        h(Some(10), 100).await,
        Vec::<u64>::new(),
        "nothing after the last"
    );
    assert_eq!(h(Some(1 << 40), 100).await, Vec::<u64>::new());
    assert_eq!(h(Some(5), 0).await, Vec::<u64>::new());
    assert_eq!(
        offsets(&store.history("hist-unknown", None, 10).await.unwrap()),
        Vec::<u64>::new(),
        "an unknown room has no history"
    );

    let info = loaded(&store, id).await.expect("room listed");
    assert_eq!(
        info.offset, 10,
        "load_rooms reports the last appended offset"
    );
    assert_eq!(info.epoch, "epoch-hist");
}

/// Message data is kept exactly: unicode, escapes, big numbers, deep nesting, large text.
pub async fn odd_payloads_round_trip(store: Arc<dyn Store>) {
    let id = "odd";
    store.save_room(&room(id, 100)).await.unwrap();
    let payloads: Vec<Value> = vec![
        json!(null),
        json!("plain string"),
        json!("nul \u{0} and control \u{1} and quote \" and backslash \\"),
        json!("emoji 🎛️ and accents é ü 中文"),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5e300),
        json!(0.1),
        json!([1, [2, [3, [4, {"deep": true}]]]]),
        json!({"z": 1, "a": 2, "m": {"": "empty key"}}),
        json!("x".repeat(64 * 1024)),
    ];
    let sent: Vec<RoomMessage> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, data)| RoomMessage {
            room: id.into(),
            data,
            from: "server".into(),
            connection_id: None,
            offset: i as u64 + 1,
            ts: -5,
        })
        .collect();
    store.append(id, &sent).await.unwrap();
    assert_eq!(store.history(id, None, 100).await.unwrap(), sent);
}

/// Appending an offset again replaces it (a retried append is harmless).
pub async fn same_offset_twice_keeps_one(store: Arc<dyn Store>) {
    let id = "dup";
    store.save_room(&room(id, 100)).await.unwrap();
    store.append(id, &messages(id, 1..=3)).await.unwrap();
    let mut again = message(id, 2);
    again.data = json!("second write");
    store.append(id, &[again.clone()]).await.unwrap();
    let all = all_history(&store, id).await;
    assert_eq!(offsets(&all), [1, 2, 3]);
    assert_eq!(all[1], again);
}

/// Stored history keeps the newest `history_size` messages; offsets are not lost.
pub async fn trims_to_history_size(store: Arc<dyn Store>) {
    let id = "trim";
    store.save_room(&room(id, 5)).await.unwrap();
    for o in 1..=7 {
        store.append(id, &messages(id, o..=o)).await.unwrap();
    }
    store.append(id, &messages(id, 8..=12)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [8, 9, 10, 11, 12]);
    assert_eq!(
        offsets(&store.history(id, None, 100).await.unwrap()),
        [8, 9, 10, 11, 12]
    );
    assert_eq!(
        offsets(&store.history(id, Some(2), 2).await.unwrap()),
        [8, 9],
        "a `since` older than what is kept starts at the oldest kept"
    );
    assert_eq!(loaded(&store, id).await.unwrap().offset, 12);

    // A smaller bound applies as soon as it is saved.
    let mut smaller = room(id, 2);
    smaller.offset = 12;
    store.save_room(&smaller).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [11, 12]);
    assert_eq!(loaded(&store, id).await.unwrap().offset, 12);
    store.append(id, &messages(id, 13..=13)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [12, 13]);

    // One append larger than the bound keeps only its newest messages.
    store.append(id, &messages(id, 14..=20)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [19, 20]);
    assert_eq!(loaded(&store, id).await.unwrap().offset, 20);

    // No history at all: nothing is kept, and the offset still counts on.
    let none = "trim-zero";
    store.save_room(&room(none, 0)).await.unwrap();
    store.append(none, &messages(none, 1..=4)).await.unwrap();
    assert_eq!(
        offsets(&all_history(&store, none).await),
        Vec::<u64>::new(),
        "history_size 0 keeps nothing"
    );
    assert!(store.history(none, None, 10).await.unwrap().is_empty());
    assert_eq!(loaded(&store, none).await.unwrap().offset, 4);
    store.append(none, &messages(none, 5..=5)).await.unwrap();
    assert_eq!(loaded(&store, none).await.unwrap().offset, 5);

    // A bigger bound keeps what is still there and lets history grow again.
    let mut bigger = room(id, 4);
    bigger.offset = 20;
    store.save_room(&bigger).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [19, 20]);
    store.append(id, &messages(id, 21..=22)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [19, 20, 21, 22]);
}

/// Concurrent appends to rooms with different bounds — so that one group commit carries
/// several rooms and trims them together — keep exactly each room's newest
/// `history_size` messages: no room is trimmed by another's bound, `history_size` 0 keeps
/// nothing, a bound larger than the history keeps everything, and a room that was never
/// saved is not trimmed at all. Offsets arrive out of order across tasks.
pub async fn trims_many_rooms_at_once(store: Arc<dyn Store>) {
    const PER_ROOM: u64 = 40;
    const TASKS_PER_ROOM: u64 = 4;
    // (room, history_size); `None`: never saved.
    let rooms: [(&str, Option<usize>); 7] = [
        ("multi-0", Some(0)),
        ("multi-1", Some(1)),
        ("multi-3", Some(3)),
        ("multi-10", Some(10)),
        ("multi-39", Some(39)),
        ("multi-big", Some(1000)),
        ("multi-unsaved", None),
    ];
    for (id, size) in rooms {
        if let Some(size) = size {
            store.save_room(&room(id, size)).await.unwrap();
        }
    }
    let tasks = rooms.len() * TASKS_PER_ROOM as usize;
    let start = Arc::new(tokio::sync::Barrier::new(tasks));
    let handles: Vec<_> = rooms
        .iter()
        .flat_map(|&(id, _)| (0..TASKS_PER_ROOM).map(move |t| (id, t)))
        .map(|(id, t)| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                // Task t appends t+1, t+1+TASKS_PER_ROOM, …: interleaved with the others.
                for offset in (t + 1..=PER_ROOM).step_by(TASKS_PER_ROOM as usize) {
                    store
                        .append(id, &messages(id, offset..=offset))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("append task");
    }

    for (id, size) in rooms {
        let keep = size.map_or(PER_ROOM, |s| (s as u64).min(PER_ROOM));
        let want: Vec<u64> = (PER_ROOM - keep + 1..=PER_ROOM).collect();
        assert_eq!(
            offsets(&all_history(&store, id).await),
            want,
            "room {id} (history_size {size:?})"
        );
        assert_eq!(
            store.history(id, None, 1000).await.unwrap(),
            messages(id, want.iter().copied()),
            "room {id}: newest first, whole messages"
        );
        match size {
            Some(_) => assert_eq!(loaded(&store, id).await.unwrap().offset, PER_ROOM, "{id}"),
            None => assert!(loaded(&store, id).await.is_none()),
        }
    }

    // Shrinking one room's bound trims that room only, even while others are appended to.
    let mut smaller = room("multi-10", 2);
    smaller.offset = PER_ROOM;
    let next = messages("multi-3", PER_ROOM + 1..=PER_ROOM + 1);
    let (saved, appended) =
        tokio::join!(store.save_room(&smaller), store.append("multi-3", &next),);
    saved.unwrap();
    appended.unwrap();
    assert_eq!(
        offsets(&all_history(&store, "multi-10").await),
        [PER_ROOM - 1, PER_ROOM]
    );
    assert_eq!(
        offsets(&all_history(&store, "multi-3").await),
        [PER_ROOM - 1, PER_ROOM, PER_ROOM + 1]
    );
    assert_eq!(
        offsets(&all_history(&store, "multi-39").await),
        (2..=PER_ROOM).collect::<Vec<_>>()
    );
}

/// One append of more rows than a single SQL statement carries (SQLite splits a batch's
/// inserts into multi-row statements) keeps every row, field for field, then trims.
pub async fn large_append_keeps_every_row(store: Arc<dyn Store>) {
    let unsaved = "large-unsaved";
    store
        .append(unsaved, &messages(unsaved, 1..=131))
        .await
        .unwrap();
    assert_eq!(
        all_history(&store, unsaved).await,
        messages(unsaved, 1..=131)
    );

    let id = "large";
    store.save_room(&room(id, 150)).await.unwrap();
    store.append(id, &messages(id, 1..=200)).await.unwrap();
    assert_eq!(all_history(&store, id).await, messages(id, 51..=200));
    // Replaying part of it (a retried append) replaces rows without duplicating them.
    let mut again = messages(id, 120..=200);
    for m in &mut again {
        m.data = json!({"again": m.offset});
    }
    store.append(id, &again).await.unwrap();
    let all = all_history(&store, id).await;
    assert_eq!(offsets(&all), (51..=200).collect::<Vec<_>>());
    assert_eq!(all[69..], again[..]);
    assert_eq!(loaded(&store, id).await.unwrap().offset, 200);
}

/// Deleting a room forgets it and its history; its id can be used afresh.
pub async fn delete_room(store: Arc<dyn Store>) {
    let id = "del";
    store.save_room(&room(id, 100)).await.unwrap();
    store.append(id, &messages(id, 1..=5)).await.unwrap();
    store.save_room(&room("del-other", 100)).await.unwrap();
    store
        .append("del-other", &messages("del-other", 1..=2))
        .await
        .unwrap();

    store.delete_room(id).await.unwrap();
    assert!(
        loaded(&store, id).await.is_none(),
        "deleted room still listed"
    );
    assert!(store.history(id, None, 100).await.unwrap().is_empty());
    assert!(store.history(id, Some(0), 100).await.unwrap().is_empty());
    // Other rooms are untouched.
    assert_eq!(offsets(&all_history(&store, "del-other").await), [1, 2]);
    assert!(loaded(&store, "del-other").await.is_some());

    // Deleting what is not there is fine.
    store.delete_room(id).await.unwrap();
    store.delete_room("del-never-existed").await.unwrap();

    // Recreated: starts from nothing.
    store.save_room(&room(id, 100)).await.unwrap();
    assert_eq!(loaded(&store, id).await.unwrap().offset, 0);
    assert!(all_history(&store, id).await.is_empty());
}

/// Appends to a room that was never saved are kept but the room is not listed.
pub async fn unsaved_room_keeps_history(store: Arc<dyn Store>) {
    let id = "unsaved";
    store.append(id, &messages(id, 1..=3)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [1, 2, 3]);
    assert!(loaded(&store, id).await.is_none());
}

/// 50 tasks append at once to 5 rooms: every message lands exactly once, in offset order.
/// Offsets are allocated the way the hub does (under the room's counter, then appended
/// outside it), so appends can arrive slightly out of order.
pub async fn concurrent_appends(store: Arc<dyn Store>) {
    const ROOMS: usize = 5;
    const TASKS: usize = 50;
    const APPENDS: usize = 20;
    let ids: Vec<String> = (0..ROOMS).map(|r| format!("conc-{r}")).collect();
    for id in &ids {
        store.save_room(&room(id, 100_000)).await.unwrap();
    }
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..ROOMS).map(|_| AtomicU64::new(0)).collect());
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let counters = counters.clone();
            let start = start.clone();
            let id = ids[t % ROOMS].clone();
            tokio::spawn(async move {
                start.wait().await;
                for i in 0..APPENDS {
                    // Every fifth append carries two messages.
                    let n = if i % 5 == 0 { 2 } else { 1 };
                    let first = counters[t % ROOMS].fetch_add(n, Ordering::SeqCst) + 1;
                    let batch: Vec<RoomMessage> = (first..first + n)
                        .map(|offset| RoomMessage {
                            room: id.clone(),
                            data: json!({"task": t, "i": i, "offset": offset}),
                            from: format!("task-{t}"),
                            connection_id: Some(format!("c{t}")),
                            offset,
                            ts: offset as i64,
                        })
                        .collect();
                    store.append(&id, &batch).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("append task");
    }

    let per_room = (TASKS / ROOMS * APPENDS) as u64 + (TASKS / ROOMS * APPENDS / 5) as u64;
    for (r, id) in ids.iter().enumerate() {
        let all = all_history(&store, id).await;
        assert_eq!(
            offsets(&all),
            (1..=per_room).collect::<Vec<_>>(),
            "room {id}: every offset exactly once, in order"
        );
        // Each append's messages are all there, once: (task, i) → how many.
        let mut per_append: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for m in &all {
            assert_eq!(
                m.data["offset"],
                json!(m.offset),
                "room {id}: data matches its offset"
            );
            let task = m.data["task"].as_u64().unwrap();
            assert_eq!(
                task as usize % ROOMS,
                r,
                "room {id}: a message of another room"
            );
            *per_append
                .entry((task, m.data["i"].as_u64().unwrap()))
                .or_default() += 1;
        }
        assert_eq!(per_append.len(), TASKS / ROOMS * APPENDS);
        for ((task, i), n) in per_append {
            assert_eq!(
                n,
                if i % 5 == 0 { 2 } else { 1 },
                "room {id}: task {task} append {i}"
            );
        }
        assert_eq!(loaded(&store, id).await.unwrap().offset, per_room);
    }
}

/// Reopening a persistent store: rooms, epochs, history and offsets are all still there,
/// and offsets continue where they stopped — even when trimming left no message behind.
pub async fn offsets_continue_after_reopen(fixture: Fixture) {
    let id = "reopen";
    let none = "reopen-zero";
    {
        let store = fixture.open().await;
        store.save_room(&room(id, 3)).await.unwrap();
        store.save_room(&room(none, 0)).await.unwrap();
        store.append(id, &messages(id, 1..=10)).await.unwrap();
        store.append(none, &messages(none, 1..=6)).await.unwrap();
    }
    {
        let store = fixture.open().await;
        let info = loaded(&store, id).await.expect("room survives a reopen");
        let mut want = room(id, 3);
        want.offset = 10;
        assert_eq!(info, want, "same room, same epoch, offset continues");
        assert_eq!(offsets(&all_history(&store, id).await), [8, 9, 10]);
        assert_eq!(
            store.history(id, None, 10).await.unwrap(),
            messages(id, 8..=10)
        );
        assert_eq!(loaded(&store, none).await.unwrap().offset, 6);
        // The hub continues from the restored offset.
        store.append(id, &messages(id, 11..=11)).await.unwrap();
    }
    let store = fixture.open().await;
    assert_eq!(loaded(&store, id).await.unwrap().offset, 11);
    assert_eq!(offsets(&all_history(&store, id).await), [9, 10, 11]);
}

/// A room saved with a new epoch starts over: its old offsets and history belong to the
/// old epoch.
pub async fn new_epoch_starts_over(store: Arc<dyn Store>) {
    let id = "epoch";
    store.save_room(&room(id, 100)).await.unwrap();
    store.append(id, &messages(id, 1..=5)).await.unwrap();
    // Same epoch, stale offset: the stored offset does not go backwards.
    store.save_room(&room(id, 100)).await.unwrap();
    assert_eq!(loaded(&store, id).await.unwrap().offset, 5);

    let mut fresh = room(id, 100);
    fresh.epoch = "epoch-2".into();
    store.save_room(&fresh).await.unwrap();
    let info = loaded(&store, id).await.unwrap();
    assert_eq!((info.epoch.as_str(), info.offset), ("epoch-2", 0));
    assert!(all_history(&store, id).await.is_empty());
    store.append(id, &messages(id, 1..=2)).await.unwrap();
    assert_eq!(offsets(&all_history(&store, id).await), [1, 2]);
    assert_eq!(loaded(&store, id).await.unwrap().offset, 2);
}
