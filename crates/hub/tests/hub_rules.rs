//! The hub's rules, exercised without sockets: a connection is registered with
//! `Hub::connect` and its outbound queue is read directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{connect, drain, hub, rules, send, types};

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_hub::{
    Connection, Decision, HookSet, Hooks, Hub, HubConfig, HubEvent, ParamSpec, RoomSpec, RtKind,
    SlowConsumer,
};

#[tokio::test]
async fn publish_assigns_consecutive_offsets_and_acks() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    send(&hub, &a, json!({"type":"join","room":"x"})).await;
    send(&hub, &b, json!({"type":"join","room":"x"})).await;
    drain(&a);
    for i in 1..=3u64 {
        let got = send(
            &hub,
            &a,
            json!({"type":"publish","room":"x","data":i,"id":i}),
        )
        .await;
        assert_eq!(got[0]["offset"], i);
        assert_eq!(got[1], json!({"type":"ack","id":i,"room":"x","offset":i}));
    }
    let got = send(
        &hub,
        &a,
        json!({"type":"publish","room":"x","data":4,"exclude_self":true}),
    )
    .await;
    assert!(
        got.is_empty(),
        "exclude_self and no id: nothing back, got {got:?}"
    );
    let offsets: Vec<_> = drain(&b)
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn room_rules_give_the_right_errors() {
    let hub = hub();
    let r = rules(|r| {
        r.max_rooms_per_connection = 1;
        r.room_max_connections = 1;
    });
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    let e = send(&hub, &a, json!({"type":"join","room":"bad room","id":1})).await;
    assert_eq!(e[0]["code"], "BAD_REQUEST");
    assert_eq!(e[0]["id"], 1);
    send(&hub, &a, json!({"type":"join","room":"one"})).await;
    let e = send(&hub, &a, json!({"type":"join","room":"two"})).await;
    assert_eq!(e[0]["code"], "FORBIDDEN");
    let e = send(&hub, &b, json!({"type":"join","room":"one"})).await;
    assert_eq!(e[0]["code"], "ROOM_FULL");
    let e = send(&hub, &b, json!({"type":"publish","room":"one","data":1})).await;
    assert_eq!(e[0]["code"], "NOT_IN_ROOM");
    let e = send(
        &hub,
        &b,
        json!({"type":"publish","room":"nowhere","data":1}),
    )
    .await;
    assert_eq!(e[0]["code"], "INVALID_ROOM");
    let e = send(&hub, &b, json!({"type":"direct","to":"nobody","data":1})).await;
    assert_eq!(e[0]["code"], "NOT_FOUND");
    // The connection goes on after every error.
    let ok = send(&hub, &b, json!({"type":"ping","id":"p"})).await;
    assert_eq!(ok[0]["type"], "pong");
}

#[tokio::test]
async fn disabled_events_and_auto_create_off() {
    let hub = hub();
    let r = rules(|r| {
        r.auto_create_rooms = false;
        r.events = switchboard_hub::EventSet::from_names(["join", "ping"]).unwrap();
    });
    let a = connect(&hub, "a", &r);
    let e = send(&hub, &a, json!({"type":"join","room":"new","id":1})).await;
    assert_eq!(e[0]["code"], "INVALID_ROOM");
    let e = send(
        &hub,
        &a,
        json!({"type":"publish","room":"new","data":1,"id":2}),
    )
    .await;
    assert_eq!(e[0]["code"], "FORBIDDEN");
    hub.create_room(RoomSpec {
        id: Some("new".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let j = send(&hub, &a, json!({"type":"join","room":"new","id":3})).await;
    assert_eq!(j[0]["type"], "joined");
}

#[tokio::test]
async fn presence_pages_and_events() {
    let hub = hub();
    let r = rules(|_| {});
    let conns: Vec<_> = (0..5)
        .map(|i| connect(&hub, &format!("c{i}"), &r))
        .collect();
    for c in &conns {
        send(&hub, c, json!({"type":"join","room":"p"})).await;
    }
    // The first member saw the four later joins, and nobody saw their own.
    assert_eq!(types(&drain(&conns[0])), vec!["presence_join"; 4]);
    assert!(drain(&conns[4]).is_empty());
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..5 {
        let mut req = json!({"type":"presence","room":"p","limit":2,"id":"q"});
        if !cursor.is_null() {
            req["cursor"] = cursor.clone();
        }
        let page = send(&hub, &conns[0], req).await.remove(0);
        assert_eq!(page["count"], 5);
        seen.extend(
            page["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["client_id"].clone()),
        );
        cursor = page.get("next_cursor").cloned().unwrap_or(Value::Null);
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    send(&hub, &conns[4], json!({"type":"leave","room":"p"})).await;
    let left = drain(&conns[0]);
    assert_eq!(left[0]["type"], "presence_leave");
    assert_eq!(left[0]["member"]["client_id"], "c4");
}

#[tokio::test]
async fn direct_reaches_every_connection_of_a_client() {
    let hub = hub();
    let r = rules(|_| {});
    let a1 = connect(&hub, "alice", &r);
    let a2 = connect(&hub, "alice", &r);
    let b = connect(&hub, "bob", &r);
    let ack = send(
        &hub,
        &b,
        json!({"type":"direct","to":"alice","data":"hi","id":1}),
    )
    .await;
    assert_eq!(ack[0], json!({"type":"ack","id":1}));
    for c in [&a1, &a2] {
        let got = drain(c);
        assert_eq!(got[0]["type"], "direct");
        assert_eq!(got[0]["from"], "bob");
        assert_eq!(got[0]["data"], "hi");
    }
    send(
        &hub,
        &b,
        json!({"type":"direct","to":a2.id(),"data":"only you"}),
    )
    .await;
    assert!(drain(&a1).is_empty());
    assert_eq!(drain(&a2)[0]["data"], "only you");
}

#[tokio::test]
async fn codes_are_checked_and_rate_limited_per_address() {
    let hub = hub();
    let r = rules(|_| {});
    let info = hub
        .create_room(RoomSpec {
            id: Some("coded".into()),
            code: Some(switchboard_hub::CodeSpec::Generate(true)),
            ..Default::default()
        })
        .await
        .unwrap();
    let code = info.code.clone().unwrap();
    assert_eq!(code.len(), 4);
    assert!(info.expires_at.is_some(), "coded rooms expire by default");
    let a = connect(&hub, "a", &r);
    let e = send(&hub, &a, json!({"type":"join","room":"coded"})).await;
    assert_eq!(e[0]["code"], "INVALID_ROOM");
    let wrong = if code == "0000" { "1111" } else { "0000" };
    for _ in 0..5 {
        let e = send(&hub, &a, json!({"type":"join","room":"coded","code":wrong})).await;
        assert_eq!(e[0]["code"], "INVALID_ROOM");
    }
    let e = send(&hub, &a, json!({"type":"join","room":"coded","code":code})).await;
    assert_eq!(
        e[0]["code"], "RATE_LIMITED",
        "limited even with the right code"
    );
}

#[tokio::test]
async fn rooms_expire_and_members_are_told() {
    let hub = hub();
    let r = rules(|_| {});
    hub.create_room(RoomSpec {
        id: Some("short".into()),
        ttl_s: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let a = connect(&hub, "a", &r);
    send(&hub, &a, json!({"type":"join","room":"short"})).await;
    hub.maintain().await;
    let got = drain(&a);
    assert_eq!(
        got[0],
        json!({"type":"closed","room":"short","reason":"expired"})
    );
    assert!(hub.room_info("short").is_none());
    // Auto-created rooms vanish once empty past the grace period (0 here).
    send(&hub, &a, json!({"type":"join","room":"auto"})).await;
    send(&hub, &a, json!({"type":"leave","room":"auto"})).await;
    hub.maintain().await;
    assert!(hub.room_info("auto").is_none());
}

#[tokio::test]
async fn params_are_validated_and_broadcast() {
    let hub = hub();
    let r = rules(|_| {});
    hub.create_room(RoomSpec {
        id: Some("stage".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    hub.set_param(
        "stage",
        ParamSpec {
            name: "gain".into(),
            value: 0.5,
            min: Some(0.0),
            max: Some(2.0),
        },
    )
    .await
    .unwrap();
    let mut rt = hub.realtime_queue(8);
    let a = connect(&hub, "a", &r);
    send(&hub, &a, json!({"type":"join","room":"stage"})).await;
    let e = send(
        &hub,
        &a,
        json!({"type":"param","room":"stage","param":"gain","value":3,"id":1}),
    )
    .await;
    assert_eq!(e[0]["code"], "BAD_REQUEST");
    let e = send(
        &hub,
        &a,
        json!({"type":"param","room":"stage","param":"nope","value":1,"id":1}),
    )
    .await;
    assert_eq!(e[0]["code"], "NOT_FOUND");
    let got = send(
        &hub,
        &a,
        json!({"type":"param","room":"stage","param":"gain","value":1.5,"at":99,"id":2}),
    )
    .await;
    assert_eq!(
        got[0],
        json!({"type":"update","room":"stage","param":"gain","value":1.5,"at":99,"from":"a"})
    );
    assert_eq!(got[1], json!({"type":"ack","id":2}));
    let state = send(&hub, &a, json!({"type":"sync","room":"stage","id":3})).await;
    assert_eq!(
        state[0]["params"],
        json!([{"name":"gain","value":1.5,"min":0.0,"max":2.0}])
    );
    let ev = rt.pop().unwrap();
    assert_eq!(
        (ev.kind, ev.name.as_str(), ev.value, ev.at_ms),
        (RtKind::Param, "gain", 1.5, 99)
    );
    let t = send(
        &hub,
        &a,
        json!({"type":"trigger","room":"stage","name":"flash"}),
    )
    .await;
    assert_eq!(t[0]["type"], "trigger");
    assert_eq!(t[0]["data"], Value::Null);
    assert_eq!(rt.pop().unwrap().kind, RtKind::Trigger);
}

#[tokio::test]
async fn recovery_returns_what_was_missed() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let j = send(&hub, &a, json!({"type":"join","room":"h"})).await;
    let epoch = j[0]["epoch"].clone();
    for i in 1..=5 {
        send(&hub, &a, json!({"type":"publish","room":"h","data":i})).await;
    }
    let b = connect(&hub, "b", &r);
    let j = send(
        &hub,
        &b,
        json!({"type":"join","room":"h","since":{"offset":2,"epoch":epoch}}),
    )
    .await;
    let rec: Vec<_> = j[0]["recovered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(rec, vec![json!(3), json!(4), json!(5)]);
    assert_eq!(j[0]["recovered_complete"], true);
    let c = connect(&hub, "c", &r);
    let j = send(
        &hub,
        &c,
        json!({"type":"join","room":"h","since":{"offset":2,"epoch":"other"}}),
    )
    .await;
    assert_eq!(j[0]["recovered_complete"], false);
    drain(&a);
    let h = send(
        &hub,
        &a,
        json!({"type":"history","room":"h","since":3,"limit":1}),
    )
    .await;
    assert_eq!(h[0]["messages"], json!([h[0]["messages"][0].clone()]));
    assert_eq!(h[0]["messages"][0]["offset"], 4);
}

#[tokio::test]
async fn drop_policy_sends_gap_for_a_full_queue() {
    let hub = hub();
    let r = rules(|r| {
        r.queue_size = 4;
        r.slow_consumer = SlowConsumer::Drop;
    });
    let slow = connect(&hub, "slow", &r);
    let fast = connect(&hub, "fast", &r);
    send(&hub, &slow, json!({"type":"join","room":"d"})).await;
    send(&hub, &fast, json!({"type":"join","room":"d"})).await;
    drain(&slow);
    for i in 0..10 {
        send(&hub, &fast, json!({"type":"publish","room":"d","data":i})).await;
    }
    let got = drain(&slow);
    assert_eq!(
        got[0],
        json!({"type":"gap","room":"d","from_offset":1,"to_offset":6})
    );
    let offsets: Vec<_> = got[1..]
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![7, 8, 9, 10]);
}

struct Censor;

#[async_trait::async_trait]
impl Hooks for Censor {
    fn interests(&self) -> HookSet {
        HookSet::MESSAGE | HookSet::JOIN
    }
    async fn on_message(&self, _c: &Arc<Connection>, _room: &str, data: &Value) -> Decision {
        match data.as_str() {
            Some("forbidden") => Decision::forbid("no"),
            Some(s) => Decision::Rewrite(json!(s.to_uppercase())),
            None => Decision::Allow,
        }
    }
    async fn on_join(
        &self,
        _c: &Arc<Connection>,
        room: &str,
        _m: Option<&switchboard_protocol::Map>,
    ) -> Decision {
        if room == "vip" {
            Decision::forbid("members only")
        } else {
            Decision::Allow
        }
    }
}

#[tokio::test]
async fn hooks_can_reject_and_rewrite() {
    let hub = hub();
    hub.set_hooks(Arc::new(Censor));
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let e = send(&hub, &a, json!({"type":"join","room":"vip","id":1})).await;
    assert_eq!(e[0]["code"], "FORBIDDEN");
    send(&hub, &a, json!({"type":"join","room":"open"})).await;
    let e = send(
        &hub,
        &a,
        json!({"type":"publish","room":"open","data":"forbidden","id":2}),
    )
    .await;
    assert_eq!(
        e,
        vec![json!({"type":"error","id":2,"code":"FORBIDDEN","message":"no"})]
    );
    let got = send(
        &hub,
        &a,
        json!({"type":"publish","room":"open","data":"hello"}),
    )
    .await;
    assert_eq!(got[0]["data"], "HELLO");
    assert_eq!(got[0]["offset"], 1, "a rejected publish takes no offset");
}

#[tokio::test]
async fn events_stream_reports_what_clients_do() {
    let hub = hub();
    let mut events = Box::pin(hub.events());
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    send(&hub, &a, json!({"type":"join","room":"e"})).await;
    send(
        &hub,
        &a,
        json!({"type":"publish","room":"e","data":{"k":1}}),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(matches!(&got[0], HubEvent::Connected { client_id, .. } if client_id == "a"));
    assert!(matches!(&got[1], HubEvent::Joined { room, .. } if room == "e"));
    assert!(
        matches!(&got[2], HubEvent::Message { offset: 1, data, .. } if data == &json!({"k":1}))
    );
}

#[tokio::test]
async fn leave_without_room_acks_then_closes_1000() {
    let hub = hub();
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    send(&hub, &a, json!({"type":"join","room":"z"})).await;
    send(&hub, &b, json!({"type":"join","room":"z"})).await;
    drain(&a);
    let got = send(&hub, &a, json!({"type":"leave","id":"bye"})).await;
    assert_eq!(
        got,
        vec![json!({"type":"ack","id":"bye"}), json!({"close":1000})]
    );
    assert_eq!(drain(&b)[0]["type"], "presence_leave");
}

#[tokio::test]
async fn shutdown_tells_every_connection_with_jitter() {
    let hub = hub();
    let r = rules(|_| {});
    let conns: Vec<_> = (0..4)
        .map(|i| connect(&hub, &format!("c{i}"), &r))
        .collect();
    hub.shutdown(Duration::from_millis(40)).await;
    for c in &conns {
        let got = drain(c);
        assert_eq!(got[0]["type"], "closed");
        assert_eq!(got[0]["reason"], "shutdown");
        assert!(got[0]["retry_after_ms"].as_u64().unwrap() >= 1000);
        assert_eq!(got[1], json!({"close":1001}));
    }
    assert!(hub.is_shutting_down());
}

#[tokio::test]
async fn durable_rooms_come_back_from_the_store() {
    let store: Arc<dyn switchboard_hub::Store> = Arc::new(switchboard_hub::MemoryStore::new());
    let first = Hub::with_store(HubConfig::default(), store.clone());
    first
        .create_room(RoomSpec {
            id: Some("keep".into()),
            durable: Some(true),
            history_size: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    first
        .set_param(
            "keep",
            ParamSpec {
                name: "level".into(),
                value: 4.0,
                min: Some(0.0),
                max: Some(10.0),
            },
        )
        .await
        .unwrap();
    for i in 0..5 {
        first.publish("keep", json!(i), &[]).await.unwrap();
    }
    let epoch = first.room_info("keep").unwrap().epoch;

    let second = Hub::with_store(HubConfig::default(), store);
    assert_eq!(second.restore().await.unwrap(), 1);
    let info = second.room_info("keep").unwrap();
    assert_eq!((info.offset, info.epoch.as_str()), (5, epoch.as_str()));
    assert_eq!(info.params[0].value, 4.0);
    let (_, _, history) = second.history("keep", None, 10).unwrap();
    let offsets: Vec<_> = history.iter().map(|m| m.offset).collect();
    assert_eq!(
        offsets,
        vec![3, 4, 5],
        "the ring keeps the newest history_size messages"
    );
    assert_eq!(second.publish("keep", json!("next"), &[]).await.unwrap(), 6);
}

#[tokio::test]
async fn hubs_on_one_bus_share_rooms_with_one_order() {
    let bus = switchboard_hub::MemoryBus::new();
    let (h1, h2) = (hub(), hub());
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let r = rules(|_| {});
    let a = connect(&h1, "a", &r);
    let b = connect(&h2, "b", &r);
    send(&h1, &a, json!({"type":"join","room":"bus"})).await;
    send(&h2, &b, json!({"type":"join","room":"bus"})).await;
    let offsets = |v: Vec<Value>| -> Vec<u64> {
        v.into_iter()
            .filter(|m| m["type"] == "message")
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for i in 0..3 {
        seen_a.extend(offsets(
            send(
                &h1,
                &a,
                json!({"type":"publish","room":"bus","data":i,"exclude_self":true}),
            )
            .await,
        ));
        seen_b.extend(offsets(
            send(&h2, &b, json!({"type":"publish","room":"bus","data":i})).await,
        ));
    }
    // Delivery crosses a task; wait for all six on the far side.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen_b.len() < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only got {seen_b:?}"
        );
        seen_b.extend(offsets(drain(&b)));
        tokio::task::yield_now().await;
    }
    assert_eq!(
        seen_b,
        vec![1, 2, 3, 4, 5, 6],
        "one order, offsets from the bus"
    );
    while seen_a.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only got {seen_a:?}"
        );
        seen_a.extend(offsets(drain(&a)));
        tokio::task::yield_now().await;
    }
    assert_eq!(seen_a, vec![2, 4, 6], "exclude_self crosses nodes");
}

#[tokio::test]
async fn history_entries_expire_after_the_room_ttl() {
    let hub = hub();
    hub.create_room(RoomSpec {
        id: Some("ttl".into()),
        history_ttl_s: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    hub.publish("ttl", json!("old"), &[]).await.unwrap();
    // Wait (bounded) until the first message is past its TTL, then publish another.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while hub.history("ttl", None, 10).unwrap().2.len() == 1 {
        assert!(tokio::time::Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.publish("ttl", json!("new"), &[]).await.unwrap();
    let (_, offset, messages) = hub.history("ttl", None, 10).unwrap();
    assert_eq!(offset, 2, "offsets continue");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].data, json!("new"));
    assert_eq!(hub.room_info("ttl").unwrap().history_ttl_s, 1);
}

#[tokio::test]
async fn big_rooms_stop_broadcasting_presence_events() {
    let hub = hub();
    let r = rules(|r| r.presence_events_max_members = 2);
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    let c = connect(&hub, "c", &r);
    send(&hub, &a, json!({"type":"join","room":"big"})).await;
    send(&hub, &b, json!({"type":"join","room":"big"})).await;
    assert_eq!(
        types(&drain(&a)),
        vec!["presence_join"],
        "2 members: still announced"
    );
    let joined = send(&hub, &c, json!({"type":"join","room":"big"})).await;
    assert_eq!(
        joined[0]["members"].as_array().unwrap().len(),
        3,
        "joined lists everyone"
    );
    assert!(drain(&a).is_empty(), "3 members: over the limit, no event");
    send(&hub, &c, json!({"type":"leave","room":"big"})).await;
    assert!(
        drain(&a).is_empty(),
        "leaving a room over the limit is quiet too"
    );
    send(&hub, &b, json!({"type":"leave","room":"big"})).await;
    assert_eq!(types(&drain(&a)), vec!["presence_leave"]);
}

#[tokio::test]
async fn joining_a_big_room_lists_one_page_including_the_joiner() {
    let hub = hub();
    let r = rules(|r| {
        r.room_max_connections = 1000;
        r.presence_events_max_members = 0;
    });
    let conns: Vec<_> = (0..150)
        .map(|i| connect(&hub, &format!("c{i:03}"), &r))
        .collect();
    let mut last = Value::Null;
    for c in &conns {
        last = send(&hub, c, json!({"type":"join","room":"big"}))
            .await
            .remove(0);
    }
    let members = last["members"].as_array().unwrap();
    assert_eq!(members.len(), 100);
    assert_eq!(last["members_count"], 150);
    let me = conns[149].id();
    assert!(
        members.iter().any(|m| m["connection_id"] == me),
        "the joiner is listed"
    );
    let cursor = last["next_cursor"].clone();
    assert!(cursor.is_string());
    let page = send(
        &hub,
        &conns[149],
        json!({"type":"presence","room":"big","cursor":cursor,"limit":1000}),
    )
    .await;
    assert_eq!(
        page[0]["members"].as_array().unwrap().len(),
        51,
        "the rest, from the cursor on"
    );
}

/// A store that is slow for some messages and refuses others, to test ordering.
struct Fickle(switchboard_hub::MemoryStore);

#[async_trait::async_trait]
impl switchboard_hub::Store for Fickle {
    async fn ping(&self) -> Result<(), switchboard_hub::StoreError> {
        Ok(())
    }
    async fn load_rooms(
        &self,
    ) -> Result<Vec<switchboard_hub::RoomInfo>, switchboard_hub::StoreError> {
        self.0.load_rooms().await
    }
    async fn save_room(
        &self,
        room: &switchboard_hub::RoomInfo,
    ) -> Result<(), switchboard_hub::StoreError> {
        self.0.save_room(room).await
    }
    async fn delete_room(&self, id: &str) -> Result<(), switchboard_hub::StoreError> {
        self.0.delete_room(id).await
    }
    async fn append(
        &self,
        room: &str,
        messages: &[switchboard_protocol::RoomMessage],
    ) -> Result<(), switchboard_hub::StoreError> {
        match messages[0].data.as_str() {
            Some("boom") => return Err(switchboard_hub::StoreError::Backend("disk full".into())),
            Some("slow") => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => {}
        }
        self.0.append(room, messages).await
    }
    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<switchboard_protocol::RoomMessage>, switchboard_hub::StoreError> {
        self.0.history(room, since, limit).await
    }
}

#[tokio::test]
async fn durable_messages_are_seen_only_once_kept_and_in_offset_order() {
    let hub = Hub::with_store(
        HubConfig::default(),
        Arc::new(Fickle(switchboard_hub::MemoryStore::new())),
    );
    hub.create_room(RoomSpec {
        id: Some("d".into()),
        durable: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = rules(|_| {});
    let member = connect(&hub, "m", &r);
    send(&hub, &member, json!({"type":"join","room":"d"})).await;
    // "slow" takes offset 1 but is kept after "fast" (offset 2): the member must still
    // see 1 before 2, and nothing before its store write finished.
    let (h1, h2) = (hub.clone(), hub.clone());
    let slow = tokio::spawn(async move { h1.publish("d", json!("slow"), &[]).await });
    // On this single-threaded test runtime, one yield runs `slow` up to its store write.
    tokio::task::yield_now().await;
    let fast = tokio::spawn(async move { h2.publish("d", json!("fast"), &[]).await });
    assert_eq!(fast.await.unwrap().unwrap(), 2);
    assert!(drain(&member).is_empty(), "offset 2 waits for offset 1");
    assert_eq!(slow.await.unwrap().unwrap(), 1);
    let got: Vec<_> = drain(&member)
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![1, 2]);
    // A message the store refuses is never delivered; its offset is skipped.
    let err = hub.publish("d", json!("boom"), &[]).await.unwrap_err();
    assert_eq!(err.code, switchboard_protocol::ErrorCode::Internal);
    assert_eq!(hub.publish("d", json!("after"), &[]).await.unwrap(), 4);
    let got: Vec<_> = drain(&member)
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    assert_eq!(got, vec![(4, json!("after"))]);
    let (_, offset, history) = hub.history("d", None, 10).unwrap();
    assert_eq!(offset, 4);
    assert_eq!(
        history.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
}

#[tokio::test]
async fn one_connection_pipelines_durable_publishes_and_gets_every_ack() {
    let hub = Hub::with_store(
        HubConfig::default(),
        Arc::new(Fickle(switchboard_hub::MemoryStore::new())),
    );
    hub.create_room(RoomSpec {
        id: Some("p".into()),
        durable: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = rules(|_| {});
    let publisher = connect(&hub, "pub", &r);
    let member = connect(&hub, "m", &r);
    send(&hub, &publisher, json!({"type":"join","room":"p"})).await;
    send(&hub, &member, json!({"type":"join","room":"p"})).await;
    drain(&publisher);
    // The first publish is slow to store; the connection does not wait for it before
    // handling the next one, and the member still sees offset 1 before offset 2.
    let first = send(
        &hub,
        &publisher,
        json!({"type":"publish","room":"p","data":"slow","id":1}),
    )
    .await;
    assert!(
        first.is_empty(),
        "handling returned before the store write: {first:?}"
    );
    let mut acks: Vec<(u64, u64)> = Vec::new();
    acks.extend(
        send(
            &hub,
            &publisher,
            json!({"type":"publish","room":"p","data":"fast","id":2}),
        )
        .await
        .into_iter()
        .filter(|m| m["type"] == "ack")
        .map(|m| (m["id"].as_u64().unwrap(), m["offset"].as_u64().unwrap())),
    );
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 || acks.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {seen:?} and acks {acks:?}"
        );
        seen.extend(
            drain(&member)
                .into_iter()
                .filter(|m| m["type"] == "message")
                .map(|m| m["offset"].as_u64().unwrap()),
        );
        acks.extend(
            drain(&publisher)
                .into_iter()
                .filter(|m| m["type"] == "ack")
                .map(|m| (m["id"].as_u64().unwrap(), m["offset"].as_u64().unwrap())),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![1, 2]);
    acks.sort_unstable();
    assert_eq!(acks, vec![(1, 1), (2, 2)]);
}
