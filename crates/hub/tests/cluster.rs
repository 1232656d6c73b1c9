//! Cluster rules without Redis: hubs on one `MemoryBus` share presence, directs and
//! server-side commands; a hub whose broker is down keeps serving its own members under
//! a new epoch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{connect, drain, rules, send};
use serde_json::{Value, json};
use switchboard_hub::{Broker, BrokerError, Envelope, Hub, HubConfig, MemoryBus};

fn node(id: &str) -> Hub {
    Hub::new(HubConfig {
        node_id: id.into(),
        empty_room_grace: Duration::from_millis(0),
        ..HubConfig::default()
    })
}

fn of_type<'a>(v: &'a [Value], ty: &str) -> Vec<&'a Value> {
    v.iter().filter(|m| m["type"] == ty).collect()
}

#[tokio::test]
async fn presence_directs_and_commands_cross_hubs() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let r = rules(|_| {});
    let a = connect(&h1, "alice", &r);
    let b = connect(&h2, "bob", &r);
    drain(&a);
    drain(&b);
    send(&h1, &a, json!({"type":"join","room":"r"})).await;
    let out = send(&h2, &b, json!({"type":"join","room":"r"})).await;
    let joined = of_type(&out, "joined")[0];
    assert_eq!(joined["members_count"], 2, "{joined}");
    let got = drain(&a);
    let pj = of_type(&got, "presence_join");
    assert_eq!(pj.len(), 1, "{got:?}");
    assert_eq!(pj[0]["member"]["client_id"], "bob");

    let out = send(&h1, &a, json!({"type":"presence","room":"r","id":1})).await;
    assert_eq!(of_type(&out, "presence")[0]["count"], 2);

    let out = send(
        &h1,
        &a,
        json!({"type":"direct","to":"bob","data":"hi","id":2}),
    )
    .await;
    assert_eq!(of_type(&out, "ack").len(), 1, "{out:?}");
    let got = drain(&b);
    assert_eq!(of_type(&got, "direct")[0]["data"], "hi");
    let out = send(
        &h1,
        &a,
        json!({"type":"direct","to":"nobody","data":1,"id":3}),
    )
    .await;
    assert_eq!(of_type(&out, "error")[0]["code"], "NOT_FOUND");

    assert_eq!(
        h1.connections().await.len(),
        2,
        "connections are cluster-wide"
    );
    assert!(h1.client_info(b.id()).await.is_some());
    h1.send(b.id(), json!("from server")).await.unwrap();
    assert_eq!(of_type(&drain(&b), "direct")[0]["from"], "server");
    h1.broadcast("news", json!(1), &[]);
    tokio::task::yield_now().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if !of_type(&drain(&b), "event").is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "broadcast never crossed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    send(&h2, &b, json!({"type":"leave","room":"r"})).await;
    let got = drain(&a);
    assert_eq!(
        of_type(&got, "presence_leave")[0]["member"]["client_id"],
        "bob"
    );
    let out = send(&h1, &a, json!({"type":"presence","room":"r","id":4})).await;
    assert_eq!(of_type(&out, "presence")[0]["count"], 1);

    h1.disconnect(b.id(), 1000, "bye").await.unwrap();
    assert!(drain(&b).iter().any(|m| m["close"] == 1000));
    assert!(h1.disconnect("missing", 1000, "bye").await.is_err());
}

/// A broker whose backend is gone.
struct Down;

#[async_trait]
impl Broker for Down {
    async fn publish(&self, _: Envelope) -> Result<u64, BrokerError> {
        Err(BrokerError::Unavailable("down".into()))
    }
    async fn subscribe(&self, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn unsubscribe(&self, _: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    fn is_ready(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_node_without_its_broker_serves_its_members_under_a_new_epoch() {
    let h = node("n1");
    h.set_broker(Arc::new(Down));
    assert!(!h.is_ready().await);
    let r = rules(|_| {});
    let a = connect(&h, "a", &r);
    let out = send(&h, &a, json!({"type":"join","room":"r"})).await;
    let before = of_type(&out, "joined")[0]["epoch"].clone();
    let out = send(&h, &a, json!({"type":"publish","room":"r","data":1,"id":1})).await;
    assert_eq!(of_type(&out, "ack")[0]["offset"], 1, "{out:?}");
    assert_eq!(of_type(&out, "message")[0]["offset"], 1);
    let (epoch, offset, _) = h.history("r", None, 10).unwrap();
    assert_ne!(json!(epoch), before, "the hole is marked by a new epoch");
    assert_eq!(offset, 1);
    // A room without members here cannot be served alone: the publish is refused.
    h.create_room(switchboard_hub::RoomSpec {
        id: Some("empty".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(h.publish("empty", json!(1), &[]).await.is_err());
}

#[tokio::test]
async fn params_and_triggers_reach_every_node() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    h1.create_room(switchboard_hub::RoomSpec {
        id: Some("r".into()),
        params: Some(vec![switchboard_hub::ParamSpec {
            name: "gain".into(),
            value: 0.5,
            min: Some(0.0),
            max: Some(1.0),
        }]),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = rules(|_| {});
    let a = connect(&h1, "alice", &r);
    let b = connect(&h2, "bob", &r);
    send(&h1, &a, json!({"type":"join","room":"r"})).await;
    // The room was defined on n1 only: n2 takes its parameters from the cluster.
    send(&h2, &b, json!({"type":"join","room":"r"})).await;
    let out = send(&h2, &b, json!({"type":"sync","room":"r","id":1})).await;
    assert_eq!(
        of_type(&out, "state")[0]["params"][0]["value"],
        0.5,
        "{out:?}"
    );
    drain(&a);
    drain(&b);
    // The realtime queue of the other node sees the room's parameters and triggers.
    let mut rt2 = h2.realtime_queue(8);

    let out = send(
        &h1,
        &a,
        json!({"type":"param","room":"r","param":"gain","value":0.75,"id":2}),
    )
    .await;
    assert_eq!(of_type(&out, "ack").len(), 1, "{out:?}");
    let ev = rt2.pop().expect("a param event on n2");
    assert_eq!(
        (ev.kind, ev.name.as_str(), ev.value),
        (switchboard_hub::RtKind::Param, "gain", 0.75)
    );
    let got = drain(&b);
    let update = of_type(&got, "update");
    assert_eq!(update.len(), 1, "{got:?}");
    assert_eq!(update[0]["value"], 0.75);
    assert_eq!(update[0]["from"], "alice");

    let out = send(
        &h2,
        &b,
        json!({"type":"trigger","room":"r","name":"go","data":{"n":1},"id":3}),
    )
    .await;
    assert_eq!(
        of_type(&out, "trigger").len(),
        1,
        "the sender's node tells its members"
    );
    let got = drain(&a);
    let trigger = of_type(&got, "trigger");
    assert_eq!(trigger.len(), 1, "{got:?}");
    assert_eq!(
        (&trigger[0]["name"], &trigger[0]["from"]),
        (&json!("go"), &json!("bob"))
    );

    // Server-side set on n2 (where the room was auto-created) reaches n1's members.
    h2.set_param(
        "r",
        switchboard_hub::ParamSpec {
            name: "gain".into(),
            value: 0.25,
            min: None,
            max: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(of_type(&drain(&a), "update")[0]["value"], 0.25);

    // A late joiner on a third node sees the latest value.
    let h3 = node("n3");
    bus.attach(&h3, 64);
    let c = connect(&h3, "carol", &r);
    send(&h3, &c, json!({"type":"join","room":"r"})).await;
    let out = send(&h3, &c, json!({"type":"sync","room":"r","id":4})).await;
    assert_eq!(
        of_type(&out, "state")[0]["params"][0]["value"],
        0.25,
        "{out:?}"
    );
}

#[tokio::test]
async fn a_room_defined_on_one_node_is_the_same_room_on_every_node() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let r = rules(|_| {});
    // Bob's node auto-creates "vault" (no code) before it is defined elsewhere.
    let b = connect(&h2, "bob", &r);
    send(&h2, &b, json!({"type":"join","room":"vault"})).await;
    send(&h2, &b, json!({"type":"leave","room":"vault"})).await;
    let info = h1
        .create_room(switchboard_hub::RoomSpec {
            id: Some("vault".into()),
            code: Some(switchboard_hub::CodeSpec::Digits("4321".into())),
            max_connections: Some(2),
            name: Some("The vault".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(info.code.as_deref(), Some("4321"));
    // The definition reached n2's stale copy, in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h2.room_info("vault").and_then(|i| i.code).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "definition not taken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = send(&h2, &b, json!({"type":"join","room":"vault","id":1})).await;
    assert_eq!(of_type(&out, "error")[0]["code"], "INVALID_ROOM", "{out:?}");

    // A third node never saw the room: it takes the definition on first use.
    let h3 = node("n3");
    bus.attach(&h3, 64);
    let c = connect(&h3, "carol", &r);
    let out = send(&h3, &c, json!({"type":"join","room":"vault","id":2})).await;
    assert_eq!(of_type(&out, "error")[0]["code"], "INVALID_ROOM", "{out:?}");
    let out = send(
        &h3,
        &c,
        json!({"type":"join","room":"vault","code":"4321","id":3}),
    )
    .await;
    assert_eq!(of_type(&out, "joined").len(), 1, "{out:?}");
    let out = send(
        &h2,
        &b,
        json!({"type":"join","room":"vault","code":"4321","id":4}),
    )
    .await;
    assert_eq!(of_type(&out, "joined").len(), 1, "{out:?}");
    // max_connections counts every node.
    let d = connect(&h1, "dave", &r);
    let out = send(
        &h1,
        &d,
        json!({"type":"join","room":"vault","code":"4321","id":5}),
    )
    .await;
    assert_eq!(of_type(&out, "error")[0]["code"], "ROOM_FULL", "{out:?}");

    // Listing and describing it on any node: one room, members of every node.
    let on3 = h3.find_room_info("vault").await.unwrap().unwrap();
    assert_eq!((on3.name.as_str(), on3.members_count), ("The vault", 2));
    let listed = h1.list_rooms().await;
    let vault: Vec<_> = listed.iter().filter(|r| r.id == "vault").collect();
    assert_eq!(vault.len(), 1);
    assert_eq!(vault[0].members_count, 2);
    assert_eq!(h1.room_members("vault").await.unwrap().unwrap().len(), 2);

    // A second definition of the same id is refused on any node.
    let again = h2
        .create_room(switchboard_hub::RoomSpec {
            id: Some("vault".into()),
            ..Default::default()
        })
        .await;
    assert!(again.is_err());
    // So is defining a room that already has members on some node.
    let e = connect(&h2, "erin", &r);
    send(&h2, &e, json!({"type":"join","room":"busy"})).await;
    let busy = h1
        .create_room(switchboard_hub::RoomSpec {
            id: Some("busy".into()),
            ..Default::default()
        })
        .await;
    assert!(busy.is_err(), "{busy:?}");
    assert!(
        h1.room_info("busy").is_none(),
        "the refused room is not kept"
    );

    // Closed from a node holding no member: members everywhere get `closed`, and the
    // definition is gone.
    let h4 = node("n4");
    bus.attach(&h4, 64);
    h4.close_room("vault", "done").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut closed = (false, false);
    while closed != (true, true) {
        closed.0 |= !of_type(&drain(&b), "closed").is_empty();
        closed.1 |= !of_type(&drain(&c), "closed").is_empty();
        assert!(
            tokio::time::Instant::now() < deadline,
            "close not seen: {closed:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h4.find_room_info("vault").await.unwrap().is_none());
    assert!(
        h4.close_room("vault", "again").await.is_err(),
        "unknown now"
    );
}

#[tokio::test]
async fn server_side_joins_on_another_node_report_its_answer() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let r = rules(|_| {});
    let b = connect(&h2, "bob", &r);
    h1.create_room(switchboard_hub::RoomSpec {
        id: Some("small".into()),
        max_connections: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    h1.join(b.id(), "small").await.unwrap();
    assert_eq!(of_type(&drain(&b), "joined").len(), 1);
    // The refusals happen on n2 and come back to n1's caller.
    let e = h1.join(b.id(), "nowhere").await.unwrap_err();
    assert_eq!(e.code, switchboard_protocol::ErrorCode::NotFound, "{e:?}");
    let c = connect(&h2, "carol", &r);
    let e = h1.join(c.id(), "small").await.unwrap_err();
    assert_eq!(e.code, switchboard_protocol::ErrorCode::RoomFull, "{e:?}");
    let e = h1.leave(c.id(), "small").await.unwrap_err();
    assert_eq!(e.code, switchboard_protocol::ErrorCode::NotInRoom, "{e:?}");
    h1.leave(b.id(), "small").await.unwrap();
    assert_eq!(of_type(&drain(&b), "left").len(), 1);
}

#[tokio::test]
async fn rest_reaches_a_room_made_by_a_join_on_another_node() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let r = rules(|_| {});
    let a = connect(&h1, "alice", &r);
    send(&h1, &a, json!({"type":"join","room":"open"})).await;
    // n2 never served the room: its REST side still finds it, through its members.
    let info = h2.find_room_info("open").await.unwrap().expect("known");
    assert_eq!(info.members_count, 1);
    assert_eq!(h2.room_members("open").await.unwrap().unwrap().len(), 1);
    h2.publish("open", json!("from n2"), &[]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = drain(&a);
        if let Some(m) = of_type(&got, "message").first() {
            assert_eq!(m["data"], "from n2");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publish never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A room nobody is in, anywhere, stays unknown.
    assert!(h2.find_room_info("nowhere").await.unwrap().is_none());
    assert!(h2.publish("nowhere", json!(1), &[]).await.is_err());
}

#[derive(Default)]
struct Transitions(parking_lot::Mutex<Vec<String>>);

impl switchboard_hub::MembershipObserver for Transitions {
    fn on_membership(&self, change: switchboard_hub::Membership<'_>) {
        use switchboard_hub::Membership;
        let line = match change {
            Membership::ClusterRoom { room, occupied, .. } => format!("{room} occupied={occupied}"),
            Membership::ClusterMember {
                room,
                joined,
                member,
                ..
            } => format!("{room} {} joined={joined}", member.client_id),
            _ => return,
        };
        self.0.lock().push(line);
    }
}

#[tokio::test]
async fn cluster_transitions_are_reported_once_by_the_node_that_made_them() {
    let bus = MemoryBus::new();
    let (h1, h2) = (node("n1"), node("n2"));
    bus.attach(&h1, 64);
    bus.attach(&h2, 64);
    let (t1, t2) = (
        Arc::new(Transitions::default()),
        Arc::new(Transitions::default()),
    );
    h1.set_membership_observer(t1.clone());
    h2.set_membership_observer(t2.clone());
    let r = rules(|_| {});
    let a1 = connect(&h1, "alice", &r);
    let a2 = connect(&h2, "alice", &r);
    let b = connect(&h2, "bob", &r);
    send(&h1, &a1, json!({"type":"join","room":"x"})).await;
    send(&h2, &a2, json!({"type":"join","room":"x"})).await;
    send(&h2, &b, json!({"type":"join","room":"x"})).await;
    send(&h1, &a1, json!({"type":"leave","room":"x"})).await;
    send(&h2, &b, json!({"type":"leave","room":"x"})).await;
    send(&h2, &a2, json!({"type":"leave","room":"x"})).await;
    assert_eq!(
        *t1.0.lock(),
        ["x occupied=true", "x alice joined=true"],
        "alice's second connection and her first leaving are not transitions"
    );
    assert_eq!(
        *t2.0.lock(),
        [
            "x bob joined=true",
            "x bob joined=false",
            "x alice joined=false",
            "x occupied=false"
        ]
    );
}
