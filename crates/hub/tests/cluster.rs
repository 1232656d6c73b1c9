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

    let out = send(
        &h1,
        &a,
        json!({"type":"param","room":"r","param":"gain","value":0.75,"id":2}),
    )
    .await;
    assert_eq!(of_type(&out, "ack").len(), 1, "{out:?}");
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
