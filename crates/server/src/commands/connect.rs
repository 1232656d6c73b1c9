//! `switchboard connect URL [--room R] [--name N]`: an interactive terminal client.
//!
//! Incoming messages are printed as `[room] from: text`; a line you type is published to
//! the current room as `{"text": line, "name": N}` (the shape the chat page shows). Lines
//! starting with `/` are commands — see [`HELP`]. It reconnects by itself and rejoins its
//! rooms without losing or repeating messages. End of input (Ctrl-D) or `/quit` exits.

use std::process::ExitCode;

use serde_json::{Value, json};
use switchboard_client::{Client, Event, ServerMessage, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::ConnectArgs;

/// The commands, as `/help` prints them.
pub const HELP: &str = "\
commands:
  /join ROOM            join a room and make it the current one
  /leave [ROOM]         leave a room (default: the current one)
  /room ROOM            make a joined room the current one
  /direct TO MESSAGE    send a direct message to a client id or connection id
  /who [ROOM]           list the members of a room
  /rooms                list the rooms you are in
  /quit                 exit
anything else is published to the current room";

/// A one-line description of a status, for stderr.
pub fn describe_status(s: &Status) -> String {
    match s {
        Status::Connecting { attempt: 0 } => "connecting".into(),
        Status::Connecting { attempt } => format!("connecting (retry {attempt})"),
        Status::Connected {
            connection_id,
            client_id,
        } => format!("connected as {client_id} ({connection_id})"),
        Status::Disconnected { reason, code } => match code {
            Some(c) => format!("disconnected: {reason} ({c})"),
            None => format!("disconnected: {reason}"),
        },
        Status::Reconnecting { attempt, delay } => {
            format!(
                "reconnecting in {} ms (attempt {attempt})",
                delay.as_millis()
            )
        }
        Status::Failed { reason } => format!("gave up: {reason}"),
        Status::Closed => "closed".into(),
    }
}

fn text_of(data: &Value) -> String {
    match data {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("text") {
            Some(Value::String(s)) => s.clone(),
            _ => data.to_string(),
        },
        other => other.to_string(),
    }
}

fn sender(from: &str, data: &Value) -> String {
    match data.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => from.to_owned(),
    }
}

/// How an event is shown; `None` for events not worth a line.
fn render(event: &Event) -> Option<String> {
    Some(match event {
        Event::Message(m) => format!(
            "[{}] {}: {}",
            m.room,
            sender(&m.from, &m.data),
            text_of(&m.data)
        ),
        Event::Status(s) => format!("* {}", describe_status(s)),
        Event::RecoveryIncomplete {
            room,
            since,
            offset,
            ..
        } => {
            format!("* {room}: some messages after {since} (up to {offset}) could not be recovered")
        }
        Event::RejoinFailed {
            room,
            code,
            message,
        } => {
            format!("* could not rejoin {room}: {code}: {message}")
        }
        Event::Server(m) => match m {
            ServerMessage::Direct { from, data, .. } => {
                format!("[direct] {}: {}", sender(from, data), text_of(data))
            }
            ServerMessage::PresenceJoin { room, member } => format!(
                "* {} joined {room}",
                member
                    .name
                    .clone()
                    .unwrap_or_else(|| member.client_id.clone())
            ),
            ServerMessage::PresenceLeave { room, member } => format!(
                "* {} left {room}",
                member
                    .name
                    .clone()
                    .unwrap_or_else(|| member.client_id.clone())
            ),
            ServerMessage::Joined {
                room,
                members_count,
                offset,
                ..
            } => {
                format!("* joined {room} ({members_count} here, offset {offset})")
            }
            ServerMessage::Closed {
                room: Some(room),
                reason,
                ..
            } => {
                format!("* room {room} closed: {reason}")
            }
            ServerMessage::Closed {
                room: None, reason, ..
            } => format!("* server: {reason}"),
            ServerMessage::Gap {
                room,
                from_offset,
                to_offset,
            } => {
                format!("* {room}: messages {from_offset}..={to_offset} were dropped")
            }
            ServerMessage::Event { name, data, .. } => format!("[event {name}] {data}"),
            ServerMessage::Update {
                room, param, value, ..
            } => format!("[{room}] {param} = {value}"),
            ServerMessage::Trigger {
                room, name, data, ..
            } => format!("[{room}] trigger {name} {data}"),
            ServerMessage::Error { code, message, .. } => format!("* error {code}: {message}"),
            _ => return None,
        },
    })
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let (client, mut events) = Client::start(
        &args.url,
        super::options(args.name.clone(), args.client_id.clone()),
    )?;
    let printer = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Some(line) = render(&event) {
                println!("{line}");
            }
        }
    });
    let mut current = args.room.clone();
    if let Some(room) = &current {
        if let Err(e) = client.join(room).await {
            println!("* cannot join {room}: {e}");
            current = None;
        }
    } else {
        println!("* no room yet: /join ROOM (or /help)");
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if !handle_line(&client, &mut current, line, args.name.as_deref()).await {
            break;
        }
    }
    client.close().await;
    let _ = printer.await;
    Ok(ExitCode::SUCCESS)
}

/// Runs one input line; false to exit.
async fn handle_line(
    client: &Client,
    current: &mut Option<String>,
    line: &str,
    name: Option<&str>,
) -> bool {
    let (cmd, rest) = match line.strip_prefix('/') {
        Some(c) => {
            let mut parts = c.splitn(2, char::is_whitespace);
            (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("").trim(),
            )
        }
        None => ("", line),
    };
    let target = |rest: &str| -> Option<String> {
        if rest.is_empty() {
            current.clone()
        } else {
            Some(rest.to_owned())
        }
    };
    match cmd {
        "" => {
            let Some(room) = current.as_deref() else {
                println!("* no current room: /join ROOM first");
                return true;
            };
            let mut data = json!({ "text": line });
            if let Some(n) = name {
                data["name"] = json!(n);
            }
            if let Err(e) = client.publish(room, data).await {
                println!("* not sent: {e}");
            }
        }
        "join" if !rest.is_empty() => match client.join(rest).await {
            Ok(_) => *current = Some(rest.to_owned()),
            Err(e) => println!("* cannot join {rest}: {e}"),
        },
        "leave" => match target(rest) {
            Some(room) => match client.leave(&room).await {
                Ok(()) => {
                    println!("* left {room}");
                    if current.as_deref() == Some(room.as_str()) {
                        *current = client.rooms().into_iter().next();
                    }
                }
                Err(e) => println!("* cannot leave {room}: {e}"),
            },
            None => println!("* not in a room"),
        },
        "room" if !rest.is_empty() => {
            if client.rooms().iter().any(|r| r == rest) {
                *current = Some(rest.to_owned());
            } else {
                println!("* not in {rest}: /join it first");
            }
        }
        "direct" => {
            let mut parts = rest.splitn(2, char::is_whitespace);
            match (parts.next(), parts.next()) {
                (Some(to), Some(text)) if !to.is_empty() => {
                    let mut data = json!({ "text": text.trim() });
                    if let Some(n) = name {
                        data["name"] = json!(n);
                    }
                    match client.direct(to, data).await {
                        Ok(()) => println!("* sent to {to}"),
                        Err(e) => println!("* not sent: {e}"),
                    }
                }
                _ => println!("* usage: /direct TO MESSAGE"),
            }
        }
        "who" => match target(rest) {
            Some(room) => match client.presence(&room, None, Some(1000)).await {
                Ok(page) => {
                    let names: Vec<String> = page
                        .members
                        .iter()
                        .map(|m| match &m.name {
                            Some(n) => format!("{n} ({})", m.client_id),
                            None => m.client_id.clone(),
                        })
                        .collect();
                    println!("* {} in {room}: {}", page.count, names.join(", "));
                }
                Err(e) => println!("* cannot list {room}: {e}"),
            },
            None => println!("* not in a room"),
        },
        "rooms" => println!("* rooms: {}", client.rooms().join(", ")),
        "quit" | "exit" => return false,
        _ => println!("{HELP}"),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_the_name_and_text() {
        let m = switchboard_client::RoomMessage {
            room: "lobby".into(),
            data: json!({"text": "hi", "name": "ann"}),
            from: "c1".into(),
            connection_id: None,
            offset: 1,
            ts: 0,
        };
        assert_eq!(render(&Event::Message(m)).unwrap(), "[lobby] ann: hi");
        assert_eq!(text_of(&json!(5)), "5");
        assert_eq!(sender("c2", &json!("plain")), "c2");
    }
}
