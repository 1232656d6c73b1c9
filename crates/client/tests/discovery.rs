//! LAN discovery in-process: servers answering probes on 127.0.0.1, and the remembered
//! server tried first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use switchboard_server::config::DiscoveryConfig;
use switchboard_server::discovery::{Identity, start};

fn identity(node: &str, port: u16) -> Identity {
    Identity {
        name: String::new(),
        node_id: node.into(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        path: "/ws".into(),
    }
}

#[tokio::test]
async fn finds_every_server_sharing_the_discovery_port() {
    let first = start(
        &DiscoveryConfig {
            enabled: true,
            port: Some(0),
            name: Some("kitchen".into()),
        },
        identity("n1", 8001),
    )
    .unwrap()
    .unwrap();
    let port = first.port;
    let _second = start(
        &DiscoveryConfig {
            enabled: true,
            port: Some(port),
            name: None,
        },
        identity("n2", 8002),
    )
    .unwrap()
    .unwrap();
    let mut found = switchboard_client::discover(port, Duration::from_millis(600))
        .await
        .unwrap();
    found.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let got: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|s| (s.name.as_str(), s.node_id.as_str(), s.url.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("kitchen", "n1", "ws://127.0.0.1:8001/ws"),
            ("n2", "n2", "ws://127.0.0.1:8002/ws")
        ]
    );
    assert_eq!(found[0].version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn garbage_is_ignored_and_disabled_discovery_does_not_bind() {
    assert!(
        start(&DiscoveryConfig::default(), identity("x", 1))
            .unwrap()
            .is_none()
    );
    let d = start(
        &DiscoveryConfig {
            enabled: true,
            port: Some(0),
            name: None,
        },
        identity("g", 9),
    )
    .unwrap()
    .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b"\xff\x00garbage"[..],
        b"{}",
        b"{\"type\":\"server\"}",
        &[b'x'; 4000],
    ] {
        sock.send_to(junk, ("127.0.0.1", d.port)).await.unwrap();
    }
    // Still answering after the junk.
    let found = switchboard_client::discover_at(
        &[format!("127.0.0.1:{}", d.port).parse().unwrap()],
        Duration::from_millis(400),
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    let mut buf = [0u8; 64];
    let nothing = tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await;
    assert!(nothing.is_err(), "junk got an answer");
}

#[tokio::test]
async fn locate_tries_the_remembered_server_then_discovers_and_remembers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("last-server");
    // Remembered: a server that is gone.
    switchboard_client::remember::save(&file, "ws://127.0.0.1:1/ws").unwrap();
    let d = start(
        &DiscoveryConfig {
            enabled: true,
            port: Some(0),
            name: None,
        },
        identity("live", 4242),
    )
    .unwrap()
    .unwrap();
    let url = switchboard_client::locate(d.port, Duration::from_millis(500), Some(&file))
        .await
        .unwrap();
    assert_eq!(url.as_deref(), Some("ws://127.0.0.1:4242/ws"));
    assert_eq!(
        switchboard_client::remember::load(&file).as_deref(),
        Some("ws://127.0.0.1:4242/ws")
    );
}
