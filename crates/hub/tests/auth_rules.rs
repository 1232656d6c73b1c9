//! What an authenticated connection may do, without sockets: room permissions from its
//! grant, `refresh` through the endpoint's verifier, and the hub-wide room limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{drain, hub, rules, send};

use std::sync::Arc;

use serde_json::json;
use switchboard_hub::auth::AuthState;
use switchboard_hub::{
    ConnectInfo, Connection, EndpointRules, Grant, Hub, HubConfig, HubError, Permissions,
    TokenVerifier,
};
use switchboard_protocol::ErrorCode;

/// Accepts tokens of the form `sub:pattern` granting `pattern` for joins.
struct FakeVerifier;

impl TokenVerifier for FakeVerifier {
    fn verify(&self, token: &str) -> Result<Grant, HubError> {
        let (sub, pattern) = token
            .split_once(':')
            .ok_or_else(|| HubError::new(ErrorCode::Unauthorized, "bad token"))?;
        Ok(Grant {
            client_id: sub.into(),
            permissions: Permissions {
                join: Some(vec![pattern.into()]),
                publish: None,
            },
            ..Default::default()
        })
    }
}

fn authed(hub: &Hub, r: &Arc<EndpointRules>, sub: &str, perms: Permissions) -> Arc<Connection> {
    let c = hub.connect(
        ConnectInfo {
            client_id: Some(sub.into()),
            auth: Some(AuthState {
                permissions: perms,
                ..Default::default()
            }),
            ..Default::default()
        },
        r.clone(),
        None,
    );
    drain(&c);
    c
}

#[tokio::test]
async fn grants_limit_joins_and_writes() {
    let hub = hub();
    let r = rules(|_| {});
    let c = authed(
        &hub,
        &r,
        "u",
        Permissions {
            join: Some(vec!["team:*".into()]),
            publish: Some(vec!["team:chat".into()]),
        },
    );
    let got = send(&hub, &c, json!({"type":"join","room":"lobby","id":1})).await;
    assert_eq!(got[0]["code"], "FORBIDDEN");
    send(&hub, &c, json!({"type":"join","room":"team:news"})).await;
    send(&hub, &c, json!({"type":"join","room":"team:chat"})).await;
    let got = send(
        &hub,
        &c,
        json!({"type":"publish","room":"team:news","data":1,"id":2}),
    )
    .await;
    assert_eq!(got[0]["code"], "FORBIDDEN");
    let got = send(
        &hub,
        &c,
        json!({"type":"publish","room":"team:chat","data":1,"id":3}),
    )
    .await;
    assert!(got.iter().any(|m| m["type"] == "ack"), "{got:?}");
    // A server-side join is not limited by the grant.
    hub.create_room(switchboard_hub::RoomSpec {
        id: Some("lobby".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    hub.join(c.id(), "lobby").await.unwrap();
}

#[tokio::test]
async fn refresh_goes_through_the_endpoint_verifier() {
    let hub = hub();
    let r = rules(|r| r.verifier = Some(Arc::new(FakeVerifier)));
    let c = authed(
        &hub,
        &r,
        "u",
        Permissions {
            join: Some(vec!["a".into()]),
            publish: None,
        },
    );
    let got = send(&hub, &c, json!({"type":"join","room":"b","id":1})).await;
    assert_eq!(got[0]["code"], "FORBIDDEN");
    let got = send(&hub, &c, json!({"type":"refresh","token":"u:b","id":2})).await;
    assert_eq!(got, vec![json!({"type":"ack","id":2})]);
    let got = send(&hub, &c, json!({"type":"join","room":"b","id":3})).await;
    assert_eq!(got[0]["type"], "joined");
    let got = send(&hub, &c, json!({"type":"refresh","token":"other:b","id":4})).await;
    assert_eq!(got[0]["code"], "UNAUTHORIZED");
    let got = send(&hub, &c, json!({"type":"refresh","token":"garbage","id":5})).await;
    assert_eq!(got[0]["code"], "UNAUTHORIZED");
    // Without a verifier, refresh is forbidden even when `events` leaves it out.
    let plain = rules(|r| {
        r.events = switchboard_hub::EventSet::from_names(["join"]).unwrap();
    });
    let p = authed(&hub, &plain, "v", Permissions::default());
    let got = send(&hub, &p, json!({"type":"refresh","token":"v:x","id":6})).await;
    assert_eq!(got[0]["code"], "FORBIDDEN");
    assert!(
        got[0]["message"]
            .as_str()
            .unwrap()
            .contains("authentication")
    );
}

#[tokio::test]
async fn the_hub_holds_at_most_max_rooms() {
    let hub = Hub::new(HubConfig {
        max_rooms: 2,
        ..HubConfig::default()
    });
    let r = rules(|_| {});
    let c = authed(&hub, &r, "u", Permissions::default());
    send(&hub, &c, json!({"type":"join","room":"r1"})).await;
    send(&hub, &c, json!({"type":"join","room":"r2"})).await;
    let got = send(&hub, &c, json!({"type":"join","room":"r3","id":1})).await;
    assert_eq!(got[0]["code"], "FORBIDDEN");
    let err = hub
        .create_room(switchboard_hub::RoomSpec::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
}
