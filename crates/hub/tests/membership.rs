//! The membership observer hears every connect, disconnect, join and leave exactly once,
//! with the room's first and last member flagged — the ground truth the server's
//! lifecycle webhooks are built on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use serde_json::json;
use switchboard_hub::{Membership, MembershipObserver};

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl MembershipObserver for Recorder {
    fn on_membership(&self, change: Membership<'_>) {
        let line = match change {
            Membership::Connected { conn } => format!("connected {}", conn.client_id()),
            Membership::Disconnected { conn } => format!("disconnected {}", conn.client_id()),
            Membership::Joined { conn, room, first } => {
                format!("joined {} {room} first={first}", conn.client_id())
            }
            Membership::Left { conn, room, last } => {
                format!("left {} {room} last={last}", conn.client_id())
            }
            Membership::ClusterRoom { room, occupied, .. } => {
                format!("cluster room {room} occupied={occupied}")
            }
            Membership::ClusterMember {
                room,
                joined,
                member,
                ..
            } => format!("cluster member {} {room} joined={joined}", member.client_id),
        };
        self.0.lock().push(line);
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

#[tokio::test]
async fn joins_and_leaves_are_told_once_with_first_and_last() {
    let hub = hub();
    let rec = Arc::new(Recorder::default());
    hub.set_membership_observer(rec.clone());
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    assert_eq!(rec.take(), ["connected a", "connected b"]);

    send(&hub, &a, json!({"type": "join", "room": "r"})).await;
    send(&hub, &b, json!({"type": "join", "room": "r"})).await;
    // Joining a room one is in already changes nothing and is not told again.
    send(&hub, &a, json!({"type": "join", "room": "r"})).await;
    assert_eq!(
        rec.take(),
        ["joined a r first=true", "joined b r first=false"]
    );

    send(&hub, &a, json!({"type": "leave", "room": "r"})).await;
    // A refused leave (not a member any more) is not told either.
    send(&hub, &a, json!({"type": "leave", "room": "r"})).await;
    assert_eq!(rec.take(), ["left a r last=false"]);

    send(&hub, &a, json!({"type": "join", "room": "s"})).await;
    hub.disconnected(&b, Some(1000), "bye").await;
    hub.disconnected(&a, Some(1000), "bye").await;
    assert_eq!(
        rec.take(),
        [
            "joined a s first=true",
            "left b r last=true",
            "disconnected b",
            "left a s last=true",
            "disconnected a",
        ]
    );
}

#[tokio::test]
async fn closing_a_room_tells_every_member_left_and_flags_the_last() {
    let hub = hub();
    let rec = Arc::new(Recorder::default());
    hub.set_membership_observer(rec.clone());
    let r = rules(|_| {});
    let a = connect(&hub, "a", &r);
    let b = connect(&hub, "b", &r);
    send(&hub, &a, json!({"type": "join", "room": "r"})).await;
    send(&hub, &b, json!({"type": "join", "room": "r"})).await;
    rec.take();
    hub.close_room("r", "closed").await.unwrap();
    let mut left = rec.take();
    assert_eq!(left.len(), 2);
    assert!(left.pop().unwrap().ends_with("last=true"));
    assert!(left.pop().unwrap().ends_with("last=false"));
    // Their later disconnects do not leave the closed room a second time.
    hub.disconnected(&a, None, "").await;
    hub.disconnected(&b, None, "").await;
    assert_eq!(rec.take(), ["disconnected a", "disconnected b"]);
}
