//! The server over real sockets, driven by tokio-tungstenite as an outside client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_hub::Hub;
use switchboard_server::config::{Config, FileConfig, Overrides};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

async fn start(toml_text: &str) -> (switchboard_server::Running, Hub) {
    let file: FileConfig = toml::from_str(toml_text).unwrap();
    let over = Overrides {
        listen: Some("127.0.0.1:0".into()),
        store: Some("memory".into()),
        ..Default::default()
    };
    let mut config = Config::merge(file, over).unwrap();
    config.shutdown_drain = Duration::from_millis(100);
    let hub = Hub::new(config.hub.clone());
    let running = switchboard_server::serve(hub.clone(), Arc::new(config))
        .await
        .unwrap();
    (running, hub)
}

async fn connect(addr: std::net::SocketAddr, path: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")),
    )
    .await
    .unwrap()
    .unwrap();
    ws
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("timed out")
        .expect("ended")
        .expect("error")
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match next(ws).await {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Binary(b) => return rmp_serde::from_slice(&b).unwrap(),
            _ => {}
        }
    }
}

/// Reads until a message of type `ty` arrives.
async fn until(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Reads until the server's close frame; returns its code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close within the wait")
        {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(WsError::Protocol(_))) | None => return None,
            Some(Err(e)) => panic!("unexpected error {e}"),
        }
    }
}

#[tokio::test]
async fn msgpack_clients_get_binary_maps_and_talk_to_json_clients() {
    let (srv, _) = start("").await;
    let mut req = format!("ws://{}/ws", srv.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("switchboard.msgpack"),
    );
    let (mut mp, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "switchboard.msgpack"
    );
    let welcome = next(&mut mp).await;
    assert!(
        matches!(welcome, Message::Binary(_)),
        "msgpack frames are binary"
    );
    let mut js = connect(srv.addr, "/ws").await;
    next_json(&mut js).await;
    let join = rmp_serde::to_vec_named(&json!({"type":"join","room":"m","id":1})).unwrap();
    mp.send(Message::Binary(join.into())).await.unwrap();
    assert_eq!(next_json(&mut mp).await["type"], "joined");
    send(&mut js, json!({"type":"join","room":"m"})).await;
    until(&mut js, "joined").await;
    send(&mut js, json!({"type":"publish","room":"m","data":{"n":7}})).await;
    let m = until(&mut mp, "message").await;
    assert_eq!(m["data"], json!({"n":7}));
    srv.stop().await;
}

#[tokio::test]
async fn oversized_messages_close_1009_and_errors_keep_the_connection() {
    let (srv, _) = start("[[endpoint]]\npath = \"/ws\"\nmax_message_size = 1024\n").await;
    let mut ws = connect(srv.addr, "/ws").await;
    next_json(&mut ws).await;
    send(&mut ws, json!({"type":"nope","id":"x"})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("BAD_REQUEST"), Some("x"))
    );
    let big = json!({"type":"publish","room":"r","data":"x".repeat(2000)});
    let _ = ws.send(Message::text(big.to_string())).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    srv.stop().await;
}

#[tokio::test]
async fn full_endpoints_answer_503_with_retry_after() {
    let (srv, _) = start("[[endpoint]]\npath = \"/ws\"\nmax_connections = 1\n").await;
    let mut first = connect(srv.addr, "/ws").await;
    next_json(&mut first).await;
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", srv.addr)).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    srv.stop().await;
}

#[tokio::test]
async fn plain_http_and_wrong_versions_are_refused() {
    let (srv, _) = start("").await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(text.starts_with("http/1.1 426"), "{text}");
    assert!(text.contains("sec-websocket-version: 13"), "{text}");
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
    srv.stop().await;
}

#[tokio::test]
async fn a_stalled_reader_is_closed_4008_and_the_others_get_everything() {
    let (srv, hub) = start("[[endpoint]]\npath = \"/ws\"\nqueue_size = 16\n").await;
    // The stalled client: a raw socket with a tiny receive buffer that completes the
    // handshake and then never reads again.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(srv.addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws", srv.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    next(&mut stalled).await;
    send(&mut stalled, json!({"type":"join","room":"s"})).await;
    let mut reader = connect(srv.addr, "/ws").await;
    next_json(&mut reader).await;
    send(&mut reader, json!({"type":"join","room":"s"})).await;
    until(&mut reader, "joined").await;
    let payload = "y".repeat(4000);
    let total = 400u64;
    for i in 0..total {
        send(
            &mut reader,
            json!({"type":"publish","room":"s","data":{"i":i,"p":payload}}),
        )
        .await;
    }
    let mut last = 0;
    while last < total {
        let m = until(&mut reader, "message").await;
        let off = m["offset"].as_u64().unwrap();
        assert_eq!(off, last + 1, "the reading client misses nothing");
        last = off;
    }
    // The stalled connection was dropped by the server, bounding its memory.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.room_info("s").unwrap().members_count > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(close_code(&mut stalled).await, Some(4008));
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_sends_closed_then_1001() {
    let (srv, _) = start("").await;
    let mut ws = connect(srv.addr, "/ws").await;
    next_json(&mut ws).await;
    let stop = tokio::spawn(srv.stop());
    let closed = until(&mut ws, "closed").await;
    assert_eq!(closed["reason"], "shutdown");
    assert!(closed["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(close_code(&mut ws).await, Some(u16::from(CloseCode::Away)));
    tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_count_traffic_errors_and_closes() {
    let (srv, _) = start("").await;
    let mut ws = connect(srv.addr, "/ws").await;
    next_json(&mut ws).await;
    send(&mut ws, json!({"type":"join","room":"m","id":1})).await;
    until(&mut ws, "joined").await;
    for i in 0..3 {
        send(&mut ws, json!({"type":"publish","room":"m","data":i})).await;
        until(&mut ws, "message").await;
    }
    send(&mut ws, json!({"type":"nope"})).await;
    until(&mut ws, "error").await;
    let text = http_get(srv.addr, "/metrics").await;
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
    };
    assert_eq!(value("switchboard_connections{endpoint=\"/ws\"}"), 1.0);
    assert_eq!(value("switchboard_published_total"), 3.0);
    assert_eq!(value("switchboard_errors_total{code=\"BAD_REQUEST\"}"), 1.0);
    assert!(value("switchboard_messages_in_total") >= 5.0);
    // welcome + joined + 3 messages + error, at least.
    assert!(value("switchboard_messages_out_total") >= 6.0);
    assert_eq!(value("switchboard_rooms"), 1.0);
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = http_get(srv.addr, "/metrics").await;
        if text.contains("switchboard_closes_total{code=\"1000\"} 1") {
            assert!(
                text.contains("switchboard_connections{endpoint=\"/ws\"} 0"),
                "{text}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "close never counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.stop().await;
}

/// A plain HTTP/1.1 GET; returns the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}
