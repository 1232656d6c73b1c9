//! The client subcommands of the built binary, driven through pipes against an in-process
//! server: `listen`, `send`, `connect` (interactive) and `discover`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_hub::Hub;
use switchboard_server::config::{Config, DiscoveryConfig, FileConfig, Overrides};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn start_on(listen: &str) -> (switchboard_server::Running, Hub) {
    let over = Overrides {
        listen: Some(listen.into()),
        store: Some("memory".into()),
        ..Default::default()
    };
    let mut config = Config::merge(FileConfig::default(), over).unwrap();
    config.shutdown_drain = Duration::from_millis(50);
    let hub = Hub::new(config.hub.clone());
    let running = switchboard_server::serve(hub.clone(), Arc::new(config))
        .await
        .unwrap();
    (running, hub)
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn lines(child: &mut Child) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().unwrap()).lines()
}

/// Reads stdout lines until one contains `needle`.
async fn line_with(out: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match out.next_line().await.unwrap() {
                Some(l) if l.contains(needle) => return l,
                Some(_) => {}
                None => panic!("stdout ended before {needle:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?}"))
}

/// Waits until `room` has `n` members.
async fn members(hub: &Hub, room: &str, n: usize) {
    tokio::time::timeout(WAIT, async {
        while hub.members(room).map_or(0, |m| m.len()) != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("members never arrived");
}

#[tokio::test]
async fn listen_prints_json_lines_and_send_prints_the_ack() {
    let (srv, hub) = start_on("127.0.0.1:0").await;
    let url = format!("ws://{}/ws", srv.addr);
    let mut listen = spawn(&["listen", &url, "--room", "r", "--count", "3"]);
    let mut out = lines(&mut listen);
    members(&hub, "r", 1).await;
    for msg in [r#"{"k":1}"#, "plain words", "7"] {
        let send = tokio::time::timeout(
            WAIT,
            Command::new(BIN)
                .args(["send", &url, "--room", "r", msg])
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            send.status.success(),
            "{}",
            String::from_utf8_lossy(&send.stderr)
        );
        let ack: Value = serde_json::from_slice(&send.stdout).unwrap();
        assert_eq!(ack["type"], "ack");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let l = line_with(&mut out, "").await;
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    assert!(
        got.iter()
            .all(|m| m["type"] == "message" && m["room"] == "r")
    );
    let data: Vec<&Value> = got.iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!({"k":1}), &json!("plain words"), &json!(7)]);
    let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3]);
    let status = tokio::time::timeout(WAIT, listen.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "listen exits after --count");
    srv.stop().await;
}

#[tokio::test]
async fn send_waits_for_a_server_that_starts_late_and_fails_clearly_without_one() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("ws://{addr}/ws");
    let late = Command::new(BIN)
        .args(["send", &url, "--room", "r", "hi", "--timeout-ms", "10000"])
        .output();
    let server = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        start_on(&addr.to_string()).await
    };
    let (out, (srv, hub)) = tokio::join!(late, server);
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.history("r", None, 10).unwrap().2.len(), 1);
    srv.stop().await;

    let out = Command::new(BIN)
        .args(["send", &url, "--room", "r", "hi", "--timeout-ms", "600"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no ack within 600 ms"), "{err}");
    assert!(err.contains("refused"), "the reason is given: {err}");
}

#[tokio::test]
async fn the_interactive_client_prints_messages_and_runs_commands() {
    let (srv, hub) = start_on("127.0.0.1:0").await;
    let url = format!("ws://{}/ws", srv.addr);
    let mut child = spawn(&["connect", &url, "--room", "lobby", "--name", "bob"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = lines(&mut child);
    line_with(&mut out, "* joined lobby").await;
    hub.publish("lobby", json!({"text": "hi bob", "name": "ann"}), &[])
        .await
        .unwrap();
    line_with(&mut out, "[lobby] ann: hi bob").await;
    stdin.write_all(b"hello all\n").await.unwrap();
    line_with(&mut out, "[lobby] bob: hello all").await;
    let history = hub.history("lobby", None, 10).unwrap();
    assert_eq!(
        history.2[1].data,
        json!({"text": "hello all", "name": "bob"})
    );
    stdin.write_all(b"/who\n").await.unwrap();
    line_with(&mut out, "* 1 in lobby: bob").await;
    stdin.write_all(b"/join side\n").await.unwrap();
    line_with(&mut out, "* joined side").await;
    stdin.write_all(b"in the side room\n").await.unwrap();
    line_with(&mut out, "[side] bob: in the side room").await;
    stdin.write_all(b"/leave side\n").await.unwrap();
    line_with(&mut out, "* left side").await;
    let me = hub.members("lobby").unwrap()[0].connection_id.clone();
    stdin
        .write_all(format!("/direct {me} note to self\n").as_bytes())
        .await
        .unwrap();
    line_with(&mut out, "[direct] bob: note to self").await;
    stdin.write_all(b"/bogus\n").await.unwrap();
    line_with(&mut out, "/join ROOM").await;
    drop(stdin); // end of input: exit
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    srv.stop().await;
}

#[tokio::test]
async fn discover_lists_servers_and_fails_when_none_answers() {
    let d = switchboard_server::discovery::start(
        &DiscoveryConfig {
            enabled: true,
            port: Some(0),
            name: Some("studio".into()),
        },
        switchboard_server::discovery::Identity {
            name: String::new(),
            node_id: "n7".into(),
            listen: "127.0.0.1:8123".parse().unwrap(),
            path: "/ws".into(),
        },
    )
    .unwrap()
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "discover",
            "--port",
            &d.port.to_string(),
            "--timeout-ms",
            "500",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        line,
        json!({"name":"studio","node_id":"n7","url":"ws://127.0.0.1:8123/ws","version":env!("CARGO_PKG_VERSION")})
    );
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args([
            "discover",
            "--port",
            &free.to_string(),
            "--timeout-ms",
            "300",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}
