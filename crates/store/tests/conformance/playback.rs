//! The playback part of the conformance suite: what every `PlaybackStore` must do, written
//! once against `Arc<dyn PlaybackStore>` and run on every backend (see `main.rs`).
//!
//! `MemoryPlaybackStore` is the reference; the SQL stores must behave the same. Each case
//! uses profiles (and connection ids) of its own, so cases may also share one store
//! ([`conformance`] runs them all in turn on one).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use switchboard_hub::PlaybackStore;
use switchboard_hub::playback::apply_changes;
use switchboard_protocol::playback::{
    AudioZone, NewAudioZone, NewConnection, NewPlayer, NewSession, Player, RegisteredConnection,
    Session, SessionChanges,
};

use crate::fixture::Fixture;

/// Every case that needs only a store, in turn.
pub async fn conformance(store: Arc<dyn PlaybackStore>) {
    sessions_crud_scoped_by_profile(store.clone()).await;
    partial_updates_change_only_given_fields(store.clone()).await;
    playlist_json_round_trips(store.clone()).await;
    unknown_ids(store.clone()).await;
    register_connection_assigns_player_ids(store.clone()).await;
    reregistration_keeps_ids_by_name(store.clone()).await;
    set_players_needs_registration(store.clone()).await;
    mark_gone_keeps_connection_listed(store.clone()).await;
    players_by_profile(store.clone()).await;
    audio_zones_with_players(store.clone()).await;
    concurrent_creates(store.clone()).await;
    // Last: it marks every other case's connections gone too.
    mark_all_gone_at_start(store).await;
}

pub fn new_session(name: &str) -> NewSession {
    NewSession {
        name: name.to_owned(),
        playlist: vec![
            json!({"title": "One", "url": "https://example.com/1.mp3", "duration": 182.5}),
            json!({"title": "Two", "tags": ["a", "b"]}),
        ],
        active_players: vec![7, 3],
        audio_zone_id: Some(2),
        volume: Some(0.25),
    }
}

pub fn player(name: &str, kind: &str) -> NewPlayer {
    NewPlayer {
        name: name.to_owned(),
        kind: kind.to_owned(),
    }
}

pub fn connection(name: &str, players: &[(&str, &str)]) -> NewConnection {
    NewConnection {
        name: name.to_owned(),
        players: players.iter().map(|(n, k)| player(n, k)).collect(),
    }
}

fn ids(players: &[Player]) -> Vec<u64> {
    players.iter().map(|p| p.player_id).collect()
}

fn names(players: &[Player]) -> Vec<(&str, &str)> {
    players
        .iter()
        .map(|p| (p.name.as_str(), p.kind.as_str()))
        .collect()
}

/// Asserts that every id is distinct and not 0.
fn assert_distinct(ids: &[u64], what: &str) {
    let set: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(set.len(), ids.len(), "{what}: ids repeat: {ids:?}");
    assert!(!set.contains(&0), "{what}: id 0 handed out: {ids:?}");
}

async fn connection_of(
    store: &Arc<dyn PlaybackStore>,
    profile: &str,
    id: &str,
) -> Option<RegisteredConnection> {
    store
        .connections(profile)
        .await
        .expect("connections")
        .into_iter()
        .find(|c| c.connection_id == id)
}

/// Sessions are created with the documented defaults, listed by id, read back field for
/// field, deleted — and a profile never sees or touches another's.
pub async fn sessions_crud_scoped_by_profile(store: Arc<dyn PlaybackStore>) {
    let (p, other) = ("crud", "crud-other");
    let a = store.create_session(p, &new_session("A")).await.unwrap();
    let b = store
        .create_session(
            p,
            &NewSession {
                name: "B".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let o = store
        .create_session(other, &new_session("Other"))
        .await
        .unwrap();
    assert_distinct(&[a.session_id, b.session_id, o.session_id], "sessions");

    // The documented defaults.
    let want_a = Session {
        session_id: a.session_id,
        profile: p.into(),
        name: "A".into(),
        active: false,
        playing: false,
        position: None,
        seek: 0.0,
        volume: 0.25,
        playlist: new_session("A").playlist,
        audio_zone_id: Some(2),
        active_players: vec![7, 3],
    };
    assert_eq!(a, want_a);
    assert_eq!(b.volume, 1.0, "volume defaults to 1.0");
    assert!(b.playlist.is_empty() && b.active_players.is_empty());
    assert_eq!(b.audio_zone_id, None);

    // Read back, listed by id, scoped by profile.
    assert_eq!(
        store.session(p, a.session_id).await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(store.sessions(p).await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(
        store.sessions(other).await.unwrap(),
        std::slice::from_ref(&o)
    );
    assert!(store.sessions("crud-nobody").await.unwrap().is_empty());

    // Another profile cannot read, change or delete them.
    assert_eq!(store.session(other, a.session_id).await.unwrap(), None);
    let rename = SessionChanges {
        name: Some("hijacked".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_session(other, a.session_id, &rename)
            .await
            .unwrap(),
        None
    );
    assert!(!store.delete_session(other, a.session_id).await.unwrap());
    assert_eq!(
        store.session(p, a.session_id).await.unwrap(),
        Some(a.clone())
    );

    // Delete.
    assert!(store.delete_session(p, a.session_id).await.unwrap());
    assert_eq!(store.session(p, a.session_id).await.unwrap(), None);
    assert_eq!(store.sessions(p).await.unwrap(), std::slice::from_ref(&b));
    assert!(
        !store.delete_session(p, a.session_id).await.unwrap(),
        "deleting twice"
    );
    assert_eq!(store.sessions(other).await.unwrap(), [o]);

    // A deleted id is never handed out again.
    let c = store.create_session(p, &new_session("C")).await.unwrap();
    assert!(c.session_id > a.session_id && c.session_id > b.session_id);
    assert_eq!(store.sessions(p).await.unwrap(), [b, c]);
}

/// An update changes exactly the fields it carries (as `apply_changes` does), returns the
/// session as it is afterwards, and keeps floats exact.
pub async fn partial_updates_change_only_given_fields(store: Arc<dyn PlaybackStore>) {
    let p = "partial";
    let created = store
        .create_session(p, &new_session("Partial"))
        .await
        .unwrap();
    let id = created.session_id;
    let mut want = created.clone();

    let steps: Vec<SessionChanges> = vec![
        SessionChanges {
            playing: Some(true),
            ..Default::default()
        },
        SessionChanges {
            position: Some(1),
            seek: Some(0.1 + 0.2),
            ..Default::default()
        },
        SessionChanges {
            name: Some("Renamed ✓ «ü»".into()),
            active: Some(true),
            ..Default::default()
        },
        SessionChanges {
            volume: Some(1.0 / 3.0),
            ..Default::default()
        },
        // Falsy values are values: they are written, not skipped.
        SessionChanges {
            playing: Some(false),
            position: Some(0),
            seek: Some(0.0),
            volume: Some(0.0),
            active_players: Some(Vec::new()),
            playlist: Some(Vec::new()),
            ..Default::default()
        },
        SessionChanges {
            playlist: Some(vec![json!({"title": "Only"})]),
            audio_zone_id: Some(9),
            active_players: Some(vec![4, 4, 1]),
            ..Default::default()
        },
        // Nothing to change: nothing changes.
        SessionChanges::default(),
        SessionChanges {
            name: Some(String::new()),
            active: Some(false),
            playing: Some(true),
            position: Some(12),
            seek: Some(1e-9),
            volume: Some(1.0),
            playlist: Some(vec![json!({"n": 1}), json!({"n": 2})]),
            audio_zone_id: Some(1),
            active_players: Some(vec![2]),
        },
    ];
    for (i, changes) in steps.iter().enumerate() {
        apply_changes(&mut want, changes);
        let got = store.update_session(p, id, changes).await.unwrap();
        assert_eq!(got.as_ref(), Some(&want), "step {i}: returned {changes:?}");
        assert_eq!(
            store.session(p, id).await.unwrap().as_ref(),
            Some(&want),
            "step {i}: read back"
        );
    }
    // Spot checks that do not lean on `apply_changes`.
    let now = store.session(p, id).await.unwrap().unwrap();
    assert_eq!(now.position, Some(12));
    assert_eq!(now.seek, 1e-9);
    assert_eq!(now.audio_zone_id, Some(1));
    assert_eq!(now.profile, p);
    assert_eq!(now.session_id, id);

    // Other sessions are untouched.
    let other = store
        .create_session(p, &new_session("Other"))
        .await
        .unwrap();
    store
        .update_session(
            p,
            id,
            &SessionChanges {
                name: Some("again".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store.session(p, other.session_id).await.unwrap(),
        Some(other)
    );
}

/// Tracks are application JSON: kept exactly, through create and update.
pub async fn playlist_json_round_trips(store: Arc<dyn PlaybackStore>) {
    let p = "json";
    let playlist: Vec<Value> = vec![
        json!({"title": "emoji 🎛️ and accents é ü 中文", "artist": "Ærøskøbing"}),
        json!({"title": "nul \u{0} control \u{1} quote \" backslash \\ tab \t"}),
        json!({"nested": {"deep": [1, [2, [3, {"deeper": {"x": null}}]]]}, "": "empty key"}),
        json!({"big": u64::MAX, "small": i64::MIN, "float": 0.1, "huge": 1.5e300}),
        json!({"bool": true, "list": [], "obj": {}}),
        json!({"long": "x".repeat(32 * 1024)}),
        json!("a bare string track"),
        json!(42),
    ];
    let created = store
        .create_session(
            p,
            &NewSession {
                name: "名前 🎵".into(),
                playlist: playlist.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.playlist, playlist);
    assert_eq!(created.name, "名前 🎵");
    let read = store.session(p, created.session_id).await.unwrap().unwrap();
    assert_eq!(read.playlist, playlist);
    assert_eq!(read.name, "名前 🎵");

    let reversed: Vec<Value> = playlist.iter().rev().cloned().collect();
    let updated = store
        .update_session(
            p,
            created.session_id,
            &SessionChanges {
                playlist: Some(reversed.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.playlist, reversed);
    assert_eq!(store.sessions(p).await.unwrap()[0].playlist, reversed);
}

/// Ids that name nothing: `None` / `false`, never an error, whatever their size.
pub async fn unknown_ids(store: Arc<dyn PlaybackStore>) {
    let p = "unknown";
    let real = store.create_session(p, &new_session("real")).await.unwrap();
    let change = SessionChanges {
        playing: Some(true),
        ..Default::default()
    };
    for id in [
        0,
        real.session_id + 1_000_000,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX,
    ] {
        assert_eq!(store.session(p, id).await.unwrap(), None, "session {id}");
        assert_eq!(
            store.update_session(p, id, &change).await.unwrap(),
            None,
            "update {id}"
        );
        assert!(!store.delete_session(p, id).await.unwrap(), "delete {id}");
    }
    // Nothing was created or changed by the misses.
    assert_eq!(store.sessions(p).await.unwrap(), [real]);
    assert_eq!(
        store.mark_gone("unknown-never-registered").await.unwrap(),
        None
    );
    assert!(store.connections(p).await.unwrap().is_empty());
}

/// Registering gives every player an id, keeps their order, and lists the connection.
pub async fn register_connection_assigns_player_ids(store: Arc<dyn PlaybackStore>) {
    let p = "register";
    let got = store
        .register_connection(
            p,
            "reg-conn-1",
            &connection(
                "Living room 🛋️",
                &[("Left", "local"), ("Right", "local"), ("TV", "chromecast")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(got.connection_id, "reg-conn-1");
    assert_eq!(got.name, "Living room 🛋️");
    assert!(got.alive);
    assert_eq!(
        names(&got.players),
        [("Left", "local"), ("Right", "local"), ("TV", "chromecast")]
    );
    assert_distinct(&ids(&got.players), "players");

    assert_eq!(
        store.connections(p).await.unwrap(),
        std::slice::from_ref(&got)
    );
    assert_eq!(store.players(p).await.unwrap(), got.players);

    // No players is fine too.
    let bare = store
        .register_connection(p, "reg-conn-2", &connection("Bare", &[]))
        .await
        .unwrap();
    assert!(bare.players.is_empty());
    assert_eq!(store.connections(p).await.unwrap(), [got.clone(), bare]);
    assert_eq!(store.players(p).await.unwrap(), got.players);

    // Another profile sees none of it.
    assert!(
        store
            .connections("register-other")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.players("register-other").await.unwrap().is_empty());

    // Another connection's players get ids of their own.
    let more = store
        .register_connection(
            "register-other",
            "reg-conn-3",
            &connection("Other", &[("Left", "local")]),
        )
        .await
        .unwrap();
    let mut all = ids(&got.players);
    all.extend(ids(&more.players));
    assert_distinct(&all, "players of two connections");

    // The same connection id registering under another profile moves there and starts
    // afresh: its old profile no longer lists it, and no player id carries over.
    let moved = store
        .register_connection(
            "register-moved",
            "reg-conn-1",
            &connection("Moved", &[("Left", "local")]),
        )
        .await
        .unwrap();
    assert!(!all.contains(&moved.players[0].player_id));
    assert_eq!(
        store.connections("register-moved").await.unwrap(),
        std::slice::from_ref(&moved)
    );
    let left: Vec<String> = store
        .connections(p)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.connection_id)
        .collect();
    assert_eq!(left, ["reg-conn-2"]);
    assert!(store.players(p).await.unwrap().is_empty());
}

/// Re-registering keeps the id of every player listed again with the same name and type;
/// new players get new ids; players no longer listed are gone.
pub async fn reregistration_keeps_ids_by_name(store: Arc<dyn PlaybackStore>) {
    let p = "rereg";
    let c = "rereg-conn";
    let first = store
        .register_connection(
            p,
            c,
            &connection(
                "Kitchen",
                &[
                    ("Left", "local"),
                    ("Right", "local"),
                    ("Cast", "chromecast"),
                    ("Old", "local"),
                ],
            ),
        )
        .await
        .unwrap();
    let id_of = |players: &[Player], name: &str, kind: &str| {
        players
            .iter()
            .find(|p| p.name == name && p.kind == kind)
            .map(|p| p.player_id)
            .unwrap()
    };
    let (left, right, cast, old) = (
        id_of(&first.players, "Left", "local"),
        id_of(&first.players, "Right", "local"),
        id_of(&first.players, "Cast", "chromecast"),
        id_of(&first.players, "Old", "local"),
    );

    // New order, one new player, one whose type changed, one dropped; renamed device.
    let second = store
        .register_connection(
            p,
            c,
            &connection(
                "Kitchen 2",
                &[
                    ("Right", "local"),
                    ("Sub", "local"),
                    ("Left", "local"),
                    ("Cast", "airplay"),
                ],
            ),
        )
        .await
        .unwrap();
    assert_eq!(second.name, "Kitchen 2");
    assert!(second.alive);
    assert_eq!(
        names(&second.players),
        [
            ("Right", "local"),
            ("Sub", "local"),
            ("Left", "local"),
            ("Cast", "airplay")
        ],
        "players in the order given"
    );
    assert_eq!(second.players[0].player_id, right, "Right keeps its id");
    assert_eq!(second.players[2].player_id, left, "Left keeps its id");
    let sub = second.players[1].player_id;
    let airplay = second.players[3].player_id;
    for new in [sub, airplay] {
        assert!(
            ![left, right, cast, old].contains(&new),
            "a new player got an old id"
        );
    }
    assert_ne!(sub, airplay);
    // Only the connection's current players are listed.
    assert_eq!(
        store.connections(p).await.unwrap(),
        std::slice::from_ref(&second)
    );
    assert_eq!(store.players(p).await.unwrap(), second.players);

    // `set_players` follows the same rule; a repeated name keeps one id and gets one new.
    let third = store
        .set_players(
            p,
            c,
            &[
                player("Left", "local"),
                player("Left", "local"),
                player("Sub", "local"),
            ],
        )
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(third.name, "Kitchen 2", "set_players keeps the name");
    assert_eq!(third.players[0].player_id, left);
    assert_eq!(third.players[2].player_id, sub);
    let twin = third.players[1].player_id;
    assert!(![left, right, cast, old, sub, airplay].contains(&twin));
    assert_eq!(
        store.connections(p).await.unwrap(),
        std::slice::from_ref(&third)
    );
    assert_eq!(store.players(p).await.unwrap(), third.players);

    // Registering the same list again changes nothing.
    let same = store
        .register_connection(
            p,
            c,
            &connection(
                "Kitchen 2",
                &[("Left", "local"), ("Left", "local"), ("Sub", "local")],
            ),
        )
        .await
        .unwrap();
    assert_eq!(same, third);

    // A gone connection registering again keeps its ids too, and is alive again.
    assert_eq!(store.mark_gone(c).await.unwrap().as_deref(), Some(p));
    let back = store
        .register_connection(p, c, &connection("Kitchen 3", &[("Sub", "local")]))
        .await
        .unwrap();
    assert!(back.alive);
    assert_eq!(ids(&back.players), [sub]);
    assert_eq!(store.connections(p).await.unwrap(), [back]);
}

/// `set_players` replaces the players of a registered connection only.
pub async fn set_players_needs_registration(store: Arc<dyn PlaybackStore>) {
    let p = "setp";
    assert_eq!(
        store
            .set_players(p, "setp-nobody", &[player("X", "local")])
            .await
            .unwrap(),
        None
    );
    assert!(store.connections(p).await.unwrap().is_empty());
    assert!(store.players(p).await.unwrap().is_empty());

    let reg = store
        .register_connection(p, "setp-conn", &connection("Desk", &[("A", "local")]))
        .await
        .unwrap();
    // Registered in another profile: not this one's to change.
    assert_eq!(
        store
            .set_players("setp-other", "setp-conn", &[player("B", "local")])
            .await
            .unwrap(),
        None
    );
    assert!(store.connections("setp-other").await.unwrap().is_empty());
    assert_eq!(
        store.connections(p).await.unwrap(),
        std::slice::from_ref(&reg)
    );

    let set = store
        .set_players(
            p,
            "setp-conn",
            &[player("B", "local"), player("A", "local")],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.connection_id, "setp-conn");
    assert_eq!(set.name, "Desk");
    assert!(set.alive);
    assert_eq!(set.players[1].player_id, reg.players[0].player_id);
    assert_eq!(
        store.connections(p).await.unwrap(),
        std::slice::from_ref(&set)
    );

    // An empty list removes every player.
    let none = store
        .set_players(p, "setp-conn", &[])
        .await
        .unwrap()
        .unwrap();
    assert!(none.players.is_empty());
    assert!(store.players(p).await.unwrap().is_empty());
    assert_eq!(store.connections(p).await.unwrap(), [none]);
}

/// A gone connection stays listed, players and all, with `alive: false`.
pub async fn mark_gone_keeps_connection_listed(store: Arc<dyn PlaybackStore>) {
    let p = "gone";
    let reg = store
        .register_connection(
            p,
            "gone-conn",
            &connection("Phone", &[("Speaker", "local"), ("Car", "bluetooth")]),
        )
        .await
        .unwrap();
    let stay = store
        .register_connection(p, "gone-stay", &connection("Tablet", &[]))
        .await
        .unwrap();

    assert_eq!(
        store.mark_gone("gone-conn").await.unwrap().as_deref(),
        Some(p)
    );
    let listed = connection_of(&store, p, "gone-conn")
        .await
        .expect("still listed");
    assert!(!listed.alive);
    assert_eq!(listed.players, reg.players);
    assert_eq!(listed.name, "Phone");
    assert_eq!(
        connection_of(&store, p, "gone-stay").await,
        Some(stay),
        "others stay alive"
    );
    assert_eq!(store.players(p).await.unwrap(), reg.players);

    // Twice is harmless; unknown ids name no profile.
    assert_eq!(
        store.mark_gone("gone-conn").await.unwrap().as_deref(),
        Some(p)
    );
    assert_eq!(store.mark_gone("gone-never").await.unwrap(), None);

    // `set_players` on a gone connection keeps it gone.
    let set = store
        .set_players(p, "gone-conn", &[player("Speaker", "local")])
        .await
        .unwrap()
        .unwrap();
    assert!(!set.alive);
    assert_eq!(set.players, reg.players[..1]);

    // Registering again brings it back.
    let back = store
        .register_connection(
            p,
            "gone-conn",
            &connection("Phone", &[("Speaker", "local")]),
        )
        .await
        .unwrap();
    assert!(back.alive);
    assert!(connection_of(&store, p, "gone-conn").await.unwrap().alive);
}

/// Players and connections are listed per profile: connections by connection id (byte
/// order), players by connection and then as registered.
pub async fn players_by_profile(store: Arc<dyn PlaybackStore>) {
    let p = "players";
    // Registered out of order; byte order puts "players-B" before "players-a".
    let b = store
        .register_connection(
            p,
            "players-b",
            &connection("B", &[("b2", "local"), ("b1", "local")]),
        )
        .await
        .unwrap();
    let a = store
        .register_connection(p, "players-a", &connection("A", &[("a1", "cast")]))
        .await
        .unwrap();
    let upper = store
        .register_connection(p, "players-B", &connection("B upper", &[("B1", "local")]))
        .await
        .unwrap();
    let other = store
        .register_connection(
            "players-other",
            "players-c",
            &connection("C", &[("c1", "local")]),
        )
        .await
        .unwrap();
    store.mark_gone("players-b").await.unwrap();

    let conns = store.connections(p).await.unwrap();
    let order: Vec<&str> = conns.iter().map(|c| c.connection_id.as_str()).collect();
    assert_eq!(order, ["players-B", "players-a", "players-b"]);

    let mut want = upper.players.clone();
    want.extend(a.players.clone());
    want.extend(b.players.clone());
    assert_eq!(store.players(p).await.unwrap(), want, "gone ones included");
    assert_eq!(store.players("players-other").await.unwrap(), other.players);
    assert!(store.players("players-none").await.unwrap().is_empty());
}

/// Audio zones keep their players in order and are listed by id, per profile.
pub async fn audio_zones_with_players(store: Arc<dyn PlaybackStore>) {
    let p = "zones";
    let reg = store
        .register_connection(
            p,
            "zones-conn",
            &connection("Hi-fi", &[("L", "local"), ("R", "local"), ("Sub", "local")]),
        )
        .await
        .unwrap();
    let pids = ids(&reg.players);

    let all = store
        .create_audio_zone(
            p,
            &NewAudioZone {
                name: "Everything 🔊".into(),
                players: vec![pids[2], pids[0], pids[1]],
            },
        )
        .await
        .unwrap();
    assert_eq!(all.name, "Everything 🔊");
    assert_eq!(all.players, [pids[2], pids[0], pids[1]]);
    let empty = store
        .create_audio_zone(
            p,
            &NewAudioZone {
                name: "Empty".into(),
                players: Vec::new(),
            },
        )
        .await
        .unwrap();
    let elsewhere = store
        .create_audio_zone(
            "zones-other",
            &NewAudioZone {
                name: "Elsewhere".into(),
                players: vec![pids[0]],
            },
        )
        .await
        .unwrap();
    assert_distinct(
        &[
            all.audio_zone_id,
            empty.audio_zone_id,
            elsewhere.audio_zone_id,
        ],
        "zones",
    );

    assert_eq!(
        store.audio_zones(p).await.unwrap(),
        [all.clone(), empty.clone()]
    );
    assert_eq!(store.audio_zones("zones-other").await.unwrap(), [elsewhere]);
    assert!(store.audio_zones("zones-none").await.unwrap().is_empty());

    // A zone keeps naming its players when their device re-registers without them.
    store
        .set_players(p, "zones-conn", &[player("L", "local")])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.audio_zones(p).await.unwrap(), [all, empty]);
}

/// `mark_all_gone` (a server starting on a persistent store) marks every connection of
/// every profile gone, keeping them and their players listed; they come back alive, with
/// their player ids, when they register again.
pub async fn mark_all_gone_at_start(store: Arc<dyn PlaybackStore>) {
    let (p, q) = ("allgone", "allgone-other");
    let one = store
        .register_connection(p, "allgone-1", &connection("One", &[("a", "local")]))
        .await
        .unwrap();
    let two = store
        .register_connection(p, "allgone-2", &connection("Two", &[]))
        .await
        .unwrap();
    let three = store
        .register_connection(q, "allgone-3", &connection("Three", &[("b", "cast")]))
        .await
        .unwrap();
    store.mark_gone("allgone-2").await.unwrap();

    let n = store.mark_all_gone().await.unwrap();
    assert!(n >= 2, "only {n} connections were alive");
    let gone = |mut c: RegisteredConnection| {
        c.alive = false;
        c
    };
    assert_eq!(
        store.connections(p).await.unwrap(),
        [gone(one.clone()), gone(two)]
    );
    assert_eq!(store.connections(q).await.unwrap(), [gone(three)]);
    assert_eq!(store.players(p).await.unwrap(), one.players);
    assert_eq!(store.mark_all_gone().await.unwrap(), 0, "none left alive");

    let back = store
        .register_connection(p, "allgone-1", &connection("One", &[("a", "local")]))
        .await
        .unwrap();
    assert_eq!(back, one);
}

/// 20 tasks create sessions, zones and connections at once: everything lands, once, with
/// distinct ids.
pub async fn concurrent_creates(store: Arc<dyn PlaybackStore>) {
    const TASKS: usize = 20;
    let p = "concurrent";
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let session = store
                    .create_session(p, &new_session(&format!("s{t}")))
                    .await
                    .expect("create_session");
                let zone = store
                    .create_audio_zone(
                        p,
                        &NewAudioZone {
                            name: format!("z{t}"),
                            players: vec![t as u64 + 1],
                        },
                    )
                    .await
                    .expect("create_audio_zone");
                let conn = store
                    .register_connection(
                        p,
                        &format!("concurrent-{t:02}"),
                        &connection(&format!("c{t}"), &[("one", "local"), ("two", "local")]),
                    )
                    .await
                    .expect("register_connection");
                (session, zone, conn)
            })
        })
        .collect();
    let mut made = Vec::new();
    for task in tasks {
        made.push(task.await.expect("task"));
    }

    let session_ids: Vec<u64> = made.iter().map(|(s, _, _)| s.session_id).collect();
    assert_distinct(&session_ids, "concurrent sessions");
    let zone_ids: Vec<u64> = made.iter().map(|(_, z, _)| z.audio_zone_id).collect();
    assert_distinct(&zone_ids, "concurrent zones");
    let player_ids: Vec<u64> = made.iter().flat_map(|(_, _, c)| ids(&c.players)).collect();
    assert_eq!(player_ids.len(), TASKS * 2);
    assert_distinct(&player_ids, "concurrent players");

    let mut sessions: Vec<Session> = made.iter().map(|(s, _, _)| s.clone()).collect();
    sessions.sort_by_key(|s| s.session_id);
    assert_eq!(store.sessions(p).await.unwrap(), sessions);
    let mut zones: Vec<AudioZone> = made.iter().map(|(_, z, _)| z.clone()).collect();
    zones.sort_by_key(|z| z.audio_zone_id);
    assert_eq!(store.audio_zones(p).await.unwrap(), zones);
    let conns: Vec<RegisteredConnection> = made.iter().map(|(_, _, c)| c.clone()).collect();
    assert_eq!(
        store.connections(p).await.unwrap(),
        conns,
        "connection ids are zero-padded, so task order is byte order"
    );

    // Concurrent updates of one session: each is whole; the last one wins.
    let target = sessions[0].session_id;
    let updates: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let changes = SessionChanges {
                    name: Some(format!("u{t}")),
                    position: Some(t as u64),
                    ..Default::default()
                };
                store
                    .update_session(p, target, &changes)
                    .await
                    .expect("update")
                    .expect("exists")
            })
        })
        .collect();
    for u in updates {
        let s = u.await.unwrap();
        assert_eq!(s.name, format!("u{}", s.position.unwrap()), "a torn update");
    }
    let s = store.session(p, target).await.unwrap().unwrap();
    assert_eq!(s.name, format!("u{}", s.position.unwrap()), "a torn update");
}

/// Reopening a persistent store: sessions, connections (alive or gone) with their player
/// ids, audio zones — and durable rooms in the same store — are all still there; ids
/// continue without reuse, and re-registering keeps player ids across the restart.
pub async fn playback_survives_reopen(fixture: Fixture) {
    let p = "reopen";
    let (session, deleted, alive, gone, zone) = {
        let stores = fixture.open_all().await;
        let store = stores.playback;
        let session = store.create_session(p, &new_session("Kept")).await.unwrap();
        let deleted = store.create_session(p, &new_session("Gone")).await.unwrap();
        assert!(store.delete_session(p, deleted.session_id).await.unwrap());
        let session = store
            .update_session(
                p,
                session.session_id,
                &SessionChanges {
                    playing: Some(true),
                    seek: Some(42.125),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        let alive = store
            .register_connection(
                p,
                "reopen-a",
                &connection("A", &[("L", "local"), ("R", "local")]),
            )
            .await
            .unwrap();
        let gone = store
            .register_connection(p, "reopen-b", &connection("B", &[("X", "cast")]))
            .await
            .unwrap();
        store.mark_gone("reopen-b").await.unwrap();
        let zone = store
            .create_audio_zone(
                p,
                &NewAudioZone {
                    name: "Zone".into(),
                    players: ids(&alive.players),
                },
            )
            .await
            .unwrap();
        // A durable room in the same store.
        stores
            .rooms
            .save_room(&crate::suite::room("reopen-room", 10))
            .await
            .unwrap();
        (session, deleted, alive, gone, zone)
    };

    let stores = fixture.open_all().await;
    let store = stores.playback;
    assert_eq!(
        store.sessions(p).await.unwrap(),
        std::slice::from_ref(&session)
    );
    let mut gone_listed = gone.clone();
    gone_listed.alive = false;
    assert_eq!(
        store.connections(p).await.unwrap(),
        [alive.clone(), gone_listed]
    );
    let mut players = alive.players.clone();
    players.extend(gone.players.clone());
    assert_eq!(store.players(p).await.unwrap(), players);
    assert_eq!(
        store.audio_zones(p).await.unwrap(),
        std::slice::from_ref(&zone)
    );
    assert!(
        crate::suite::loaded(&stores.rooms, "reopen-room")
            .await
            .is_some(),
        "rooms and playback live in the same store"
    );

    // Ids continue past everything handed out before, deleted ones included.
    let next = store.create_session(p, &new_session("Next")).await.unwrap();
    assert!(next.session_id > session.session_id.max(deleted.session_id));
    let next_zone = store
        .create_audio_zone(
            p,
            &NewAudioZone {
                name: "Next".into(),
                players: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert!(next_zone.audio_zone_id > zone.audio_zone_id);

    // The device comes back after the restart: same player ids, alive again.
    let back = store
        .register_connection(
            p,
            "reopen-b",
            &connection("B", &[("X", "cast"), ("Y", "cast")]),
        )
        .await
        .unwrap();
    assert!(back.alive);
    assert_eq!(back.players[0].player_id, gone.players[0].player_id);
    let all_before: Vec<u64> = ids(&alive.players)
        .into_iter()
        .chain(ids(&gone.players))
        .collect();
    assert!(!all_before.contains(&back.players[1].player_id));
}
