//! Helpers shared by the hub's socket-free tests: a connection is registered with
//! `Hub::connect` and its outbound queue is read directly.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_hub::{ConnectInfo, Connection, EndpointRules, Hub, HubConfig, Outgoing};
use switchboard_protocol::Encoding;

pub fn hub() -> Hub {
    Hub::new(HubConfig {
        node_id: "t".into(),
        empty_room_grace: Duration::from_millis(0),
        ..HubConfig::default()
    })
}

pub fn rules(f: impl FnOnce(&mut EndpointRules)) -> Arc<EndpointRules> {
    let mut r = EndpointRules::new("/ws");
    f(&mut r);
    Arc::new(r)
}

pub fn connect(hub: &Hub, client: &str, rules: &Arc<EndpointRules>) -> Arc<Connection> {
    connect_profile(hub, client, "default", rules)
}

/// A connection of `client` in playback profile `profile`.
pub fn connect_profile(
    hub: &Hub,
    client: &str,
    profile: &str,
    rules: &Arc<EndpointRules>,
) -> Arc<Connection> {
    let c = hub.connect(
        ConnectInfo {
            client_id: Some(client.into()),
            profile: Some(profile.into()),
            remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
            ..Default::default()
        },
        rules.clone(),
        None,
    );
    drain(&c); // the welcome
    c
}

/// Everything queued for `c`, decoded.
pub fn drain(c: &Connection) -> Vec<Value> {
    let mut out = Vec::new();
    c.queue().drain_into(&mut out, Encoding::Json);
    out.into_iter()
        .map(|o| match o {
            Outgoing::Text(b) => serde_json::from_slice(&b).unwrap(),
            Outgoing::Close(code, _) => json!({"close": code}),
            Outgoing::Binary(_) => json!("binary"),
            Outgoing::Compressed { .. } => json!("compressed"),
        })
        .collect()
}

pub async fn send(hub: &Hub, c: &Arc<Connection>, v: Value) -> Vec<Value> {
    hub.handle_frame(c, v.to_string().as_bytes()).await;
    drain(c)
}

pub fn types(v: &[Value]) -> Vec<&str> {
    v.iter()
        .map(|m| m["type"].as_str().unwrap_or("?"))
        .collect()
}
