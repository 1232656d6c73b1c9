//! Playback sessions, players and audio zones, scoped by profile (socket-free).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{connect_profile, drain, hub, rules, send, types};
use serde_json::json;

#[tokio::test]
async fn sessions_are_scoped_by_profile_and_updates_skip_the_sender() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect_profile(&hub, "a", "home", &r);
    let b = connect_profile(&hub, "b", "home", &r);
    let other = connect_profile(&hub, "c", "work", &r);
    let got = send(&hub, &a, json!({"type":"create_session","id":1,"session":{"name":"Kitchen","playlist":[{"title":"One"}],"volume":0.4}})).await;
    assert_eq!(types(&got), vec!["sessions", "ack"]);
    let session = &got[0]["sessions"][0];
    assert_eq!(
        (session["name"].as_str(), session["volume"].as_f64()),
        (Some("Kitchen"), Some(0.4))
    );
    assert_eq!(session["profile"], "home");
    let id = session["session_id"].as_u64().unwrap();
    assert_eq!(types(&drain(&b)), vec!["sessions"]);
    assert!(drain(&other).is_empty(), "another profile hears nothing");

    let got = send(
        &hub,
        &a,
        json!({"type":"update_session","id":2,"session_id":id,"playing":true,"seek":12.5}),
    )
    .await;
    assert_eq!(
        got,
        vec![json!({"type":"ack","id":2})],
        "the sender gets only its ack"
    );
    assert_eq!(
        drain(&b),
        vec![json!({"type":"session_updated","session_id":id,"playing":true,"seek":12.5})]
    );

    let got = send(&hub, &other, json!({"type":"get_sessions","id":3})).await;
    assert_eq!(got[0], json!({"type":"sessions","id":3,"sessions":[]}));
    let got = send(&hub, &b, json!({"type":"get_sessions","id":4})).await;
    assert_eq!(got[0]["sessions"][0]["seek"], 12.5);

    send(
        &hub,
        &b,
        json!({"type":"set_seek","session_id":id,"seek":30}),
    )
    .await;
    assert_eq!(
        drain(&a),
        vec![json!({"type":"set_seek","session_id":id,"seek":30.0})]
    );

    let got = send(
        &hub,
        &a,
        json!({"type":"delete_session","id":5,"session_id":id}),
    )
    .await;
    assert_eq!(got[0], json!({"type":"sessions","sessions":[]}));
    assert_eq!(drain(&b)[0]["sessions"], json!([]));
}

#[tokio::test]
async fn bad_values_and_unknown_ids_change_nothing() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect_profile(&hub, "a", "p", &r);
    let e = send(
        &hub,
        &a,
        json!({"type":"create_session","id":1,"session":{"name":"x","volume":1.5}}),
    )
    .await;
    assert_eq!(e[0]["code"], "BAD_REQUEST");
    let e = send(
        &hub,
        &a,
        json!({"type":"create_session","id":1,"session":{"name":"x","audio_zone_id":99}}),
    )
    .await;
    assert_eq!(e[0]["code"], "NOT_FOUND");
    assert!(
        hub.sessions("p").await.unwrap().is_empty(),
        "nothing partial was written"
    );
    let s = hub.create_session("p", Default::default()).await.unwrap();
    drain(&a);
    for (bad, code) in [
        (json!({"volume": -0.1}), "BAD_REQUEST"),
        (json!({"seek": -1}), "BAD_REQUEST"),
        (json!({"active_players": [42]}), "NOT_FOUND"),
    ] {
        let mut req = json!({"type":"update_session","id":"u","session_id":s.session_id});
        req.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let e = send(&hub, &a, req).await;
        assert_eq!(e[0]["code"], code, "{e:?}");
    }
    let e = send(
        &hub,
        &a,
        json!({"type":"update_session","id":"u","session_id":777,"playing":true}),
    )
    .await;
    assert_eq!(e[0]["code"], "NOT_FOUND");
    assert_eq!(
        hub.session("p", s.session_id).await.unwrap(),
        s,
        "unchanged"
    );
}

#[tokio::test]
async fn registered_connections_players_zones_and_actions() {
    let hub = hub();
    let r = rules(|_| {});
    let speaker = connect_profile(&hub, "speaker", "p", &r);
    let phone = connect_profile(&hub, "phone", "p", &r);
    let got = send(&hub, &speaker, json!({"type":"register_connection","id":1,"connection":{"name":"Speaker","players":[{"name":"Left","type":"local"}]}})).await;
    assert_eq!(types(&got), vec!["connections", "ack"]);
    let conns = got[0]["connections"].as_array().unwrap();
    assert_eq!(conns[0]["alive"], true);
    let player = conns[0]["players"][0]["player_id"].as_u64().unwrap();
    assert_eq!(conns[0]["players"][0]["type"], "local");
    assert_eq!(types(&drain(&phone)), vec!["connections"]);

    let got = send(&hub, &phone, json!({"type":"create_audio_zone","id":2,"audio_zone":{"name":"Downstairs","players":[player]}})).await;
    assert_eq!(got[0]["type"], "audio_zone_with_sessions");
    let zone = got[0]["audio_zones"][0]["audio_zone_id"].as_u64().unwrap();
    drain(&speaker);

    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    hub.on_player_action(
        player,
        Arc::new(move |s, changes| {
            assert_eq!(changes.playing, Some(true));
            assert!(s.playing);
            seen.fetch_add(1, Ordering::SeqCst);
        }),
    );
    let got = send(&hub, &phone, json!({"type":"create_session","session":{"name":"Mix","active_players":[player],"audio_zone_id":zone}})).await;
    let sid = got[0]["sessions"][0]["session_id"].as_u64().unwrap();
    send(
        &hub,
        &phone,
        json!({"type":"update_session","session_id":sid,"playing":true}),
    )
    .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the player's action ran once"
    );
    let zones = hub.audio_zones("p").await.unwrap();
    assert_eq!(zones[0].sessions[0].session_id, sid);

    drain(&phone);
    hub.disconnected(&speaker, Some(1000), "bye").await;
    let got = drain(&phone);
    assert_eq!(got[0]["type"], "connections");
    assert_eq!(
        got[0]["connections"][0]["alive"], false,
        "a gone device is marked, not hidden"
    );

    hub.download_event("p", json!({"progress": 0.5}));
    assert_eq!(
        drain(&phone),
        vec![json!({"type":"download_event","data":{"progress":0.5}})]
    );
}

#[tokio::test]
async fn values_every_backend_can_store_are_checked_first() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect_profile(&hub, "a", "p", &r);
    for bad in [
        json!({"type":"create_session","id":1,"session":{"name":"nul\u{0}here"}}),
        json!({"type":"create_session","id":1,"session":{"name":"x","playlist":["not a track"]}}),
        json!({"type":"register_connection","id":1,"connection":{"name":"x","players":[{"name":"p\u{0}","type":"t"}]}}),
    ] {
        let e = send(&hub, &a, bad.clone()).await;
        assert_eq!(e[0]["code"], "BAD_REQUEST", "{bad}");
    }
    let s = hub.create_session("p", Default::default()).await.unwrap();
    drain(&a);
    let e = send(
        &hub,
        &a,
        json!({"type":"update_session","id":2,"session_id":s.session_id,"position":u64::MAX}),
    )
    .await;
    assert_eq!(e[0]["code"], "BAD_REQUEST");
    let e = send(
        &hub,
        &a,
        json!({"type":"update_session","id":3,"session_id":s.session_id}),
    )
    .await;
    assert_eq!(
        e[0]["code"], "BAD_REQUEST",
        "an update that changes nothing"
    );
}
