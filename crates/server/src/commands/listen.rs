//! `switchboard listen URL --room R`: print every message of the rooms as one JSON line
//! (the `message` object, `type` included), across reconnects, each exactly once.
//!
//! Status changes and recovery holes are reported on stderr, so stdout stays pure JSON.

use std::io::Write;
use std::process::ExitCode;

use switchboard_client::{Client, Event, ServerMessage, Status};

use super::ListenArgs;

pub async fn run(args: ListenArgs) -> anyhow::Result<ExitCode> {
    let (client, mut events) = Client::start(&args.url, super::options(args.name.clone(), None))?;
    // Joins wait in the queue until the first connection; a refusal ends the command.
    let (refused_tx, mut refused) = tokio::sync::mpsc::channel::<String>(args.room.len().max(1));
    for room in &args.room {
        let client = client.clone();
        let room = room.clone();
        let refused_tx = refused_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = client.join(&room).await {
                let _ = refused_tx.send(format!("cannot join {room}: {e}")).await;
            }
        });
    }
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    Event::Message(m) => {
                        let line = serde_json::to_string(&ServerMessage::Message(m))?;
                        let mut out = stdout.lock();
                        writeln!(out, "{line}")?;
                        out.flush()?;
                        seen += 1;
                        if args.count.is_some_and(|n| seen >= n) {
                            break;
                        }
                    }
                    Event::Status(Status::Failed { reason }) => {
                        eprintln!("switchboard: gave up: {reason}");
                        return Ok(ExitCode::FAILURE);
                    }
                    Event::Status(s) => eprintln!("* {}", super::connect::describe_status(&s)),
                    Event::RecoveryIncomplete { room, since, offset, .. } => eprintln!(
                        "* {room}: messages after {since} up to {offset} could not all be recovered"
                    ),
                    Event::RejoinFailed { room, code, message } => {
                        eprintln!("switchboard: cannot rejoin {room}: {code}: {message}");
                        return Ok(ExitCode::FAILURE);
                    }
                    Event::Server(_) => {}
                }
            }
            Some(why) = refused.recv() => {
                eprintln!("switchboard: {why}");
                client.close().await;
                return Ok(ExitCode::FAILURE);
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}
