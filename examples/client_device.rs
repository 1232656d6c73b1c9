//! A device on the LAN: finds the server by itself (the last one that worked first, else
//! discovery), stays connected, and applies parameter changes at the server time they are
//! scheduled for, using the client's clock estimate.
//!
//! ```sh
//! printf '[discovery]\nenabled = true\nname = "studio"\n' > sb.toml
//! switchboard serve --store memory --config sb.toml &
//! cargo run -p switchboard-examples --example client_device -- stage
//! # elsewhere: switchboard send ws://127.0.0.1:8080/ws --room stage '{"cue": 1}'
//! ```

use std::time::Duration;

use switchboard_client::{Client, ClientOptions, Event, ServerMessage, Status, discovery};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let room = std::env::args().nth(1).unwrap_or_else(|| "stage".into());
    let remember = std::env::temp_dir().join("switchboard-device-last-server");

    let Some(url) = switchboard_client::locate(
        discovery::DEFAULT_PORT,
        Duration::from_secs(2),
        Some(&remember),
    )
    .await?
    else {
        eprintln!("no Switchboard server found on this network");
        std::process::exit(1);
    };
    println!("using {url}");

    let options = ClientOptions {
        client_id: Some("device-1".into()),
        name: Some("device".into()),
        remember: Some(remember),
        ..Default::default()
    };
    let (client, mut events) = Client::connect(&url, options).await?;
    client.join(&room).await?;

    while let Some(event) = events.recv().await {
        match event {
            Event::Status(Status::Connected { connection_id, .. }) => {
                println!("connected ({connection_id}); clock {:?}", client.clock())
            }
            Event::Status(s) => println!("status: {s:?}"),
            Event::Message(m) => println!("message #{}: {}", m.offset, m.data),
            Event::Server(ServerMessage::Update {
                param, value, at, ..
            }) => {
                // `at` is on the server's clock: wait until our estimate of it gets there.
                let wait = at.map_or(Duration::ZERO, |at| client.clock().until(at));
                let param = param.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    println!("apply {param} = {value}");
                });
            }
            _ => {}
        }
    }
    Ok(())
}
