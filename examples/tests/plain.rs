//! The hub served without axum answers a real client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_hub::{Hub, HubConfig};
use tokio_tungstenite::tungstenite::Message;

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s")
            .expect("stream ended")
            .expect("read failed");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn plain_tungstenite_transport_serves_the_protocol() {
    let hub = Hub::new(HubConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchboard_examples::serve(hub.clone(), listener));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.send(Message::text(
        json!({"type":"join","room":"r","id":1}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "joined");
    ws.send(Message::text(
        json!({"type":"publish","room":"r","data":"hi","id":2}).to_string(),
    ))
    .await
    .unwrap();
    let m = next_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["offset"].as_u64()),
        (Some("message"), Some(1))
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type":"ack","id":2,"room":"r","offset":1})
    );
    assert_eq!(hub.room_info("r").unwrap().members_count, 1);
}
