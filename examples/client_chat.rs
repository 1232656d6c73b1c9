//! A chat client on `switchboard-client`: joins a room, prints every message (recovered
//! ones included after a reconnect, each once), publishes the lines you type.
//!
//! ```sh
//! switchboard serve --store memory &
//! cargo run -p switchboard-examples --example client_chat -- ws://127.0.0.1:8080/ws lobby alice
//! ```

use serde_json::json;
use switchboard_client::{Client, ClientOptions, Event, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let room = args.next().unwrap_or_else(|| "lobby".into());
    let name = args.next().unwrap_or_else(|| "rust".into());

    let options = ClientOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    let (client, mut events) = Client::connect(&url, options).await?;
    let joined = client.join(&room).await?;
    println!(
        "joined {room}: {} here, offset {}",
        joined.members_count, joined.offset
    );

    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(m) => println!("#{} {}: {}", m.offset, m.from, m.data),
                Event::Status(Status::Reconnecting { attempt, delay }) => {
                    eprintln!("(reconnecting in {delay:?}, attempt {attempt})")
                }
                Event::Status(s) => eprintln!("({s:?})"),
                Event::RecoveryIncomplete { room, .. } => {
                    eprintln!("(some messages of {room} were lost while away)")
                }
                _ => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        // While disconnected this waits in the client's queue and goes out after the rejoin.
        if let Err(e) = client
            .publish(&room, json!({ "text": line, "name": name }))
            .await
        {
            eprintln!("not sent: {e}");
        }
    }
    client.close().await;
    Ok(())
}
