//! The hub served over plain tokio-tungstenite — no axum, no HTTP router — with a
//! "control surface": a room with parameters that phones set, and a real-time thread
//! that applies them without ever blocking or allocating.
//!
//! Run it, then connect any WebSocket client to ws://127.0.0.1:9001 and send
//! `{"type":"join","room":"stage","code":"<printed code>"}` and
//! `{"type":"param","room":"stage","param":"gain","value":0.8}`.

use std::time::Duration;

use futures_util::StreamExt;
use switchboard_hub::{CodeSpec, Hub, HubConfig, ParamSpec, RoomSpec};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let hub = Hub::new(HubConfig::default());
    let room = hub
        .create_room(RoomSpec {
            id: Some("stage".into()),
            code: Some(CodeSpec::Generate(true)),
            params: Some(vec![ParamSpec {
                name: "gain".into(),
                value: 0.5,
                min: Some(0.0),
                max: Some(1.0),
            }]),
            ..Default::default()
        })
        .await
        .map_err(std::io::Error::other)?;
    println!("room `stage`, code {}", room.code.unwrap_or_default());

    // The real-time side: a plain thread polling a lock-free queue, as an audio callback
    // would. `pop` never blocks or allocates.
    let mut rt = hub.realtime_queue(256);
    std::thread::spawn(move || {
        loop {
            while let Ok(ev) = rt.pop() {
                println!(
                    "[rt] {:?} {} = {} at {}",
                    ev.kind,
                    ev.name.as_str(),
                    ev.value,
                    ev.at_ms
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    // The application side: an async stream of everything clients do.
    let mut events = Box::pin(hub.events());
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            println!("[event] {ev:?}");
        }
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
    println!("listening on ws://{}", listener.local_addr()?);
    hub.spawn_maintenance();
    switchboard_examples::serve(hub, listener).await;
    Ok(())
}
