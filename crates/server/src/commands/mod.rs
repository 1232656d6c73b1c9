//! The client-side subcommands of the `switchboard` binary (PROTOCOL §11), built on
//! `switchboard-client`:
//!
//! - [`connect`]: an interactive terminal client;
//! - [`listen`] and [`send`]: for scripts, JSON lines on stdout;
//! - [`discover`]: lists the servers on the local network.
//!
//! Each returns the process exit code and prints its own errors to stderr.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use switchboard_client::ClientOptions;

use crate::cli::Command;

pub mod connect;
pub mod discover;
pub mod listen;
pub mod send;

/// `switchboard connect URL [--room R] [--name N]`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:8080/ws.
    pub url: String,
    /// Room to join at start (lines you type are published to it).
    #[arg(long)]
    pub room: Option<String>,
    /// Your display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Client id (reuse it to receive direct messages on every connection of yours).
    #[arg(long)]
    pub client_id: Option<String>,
}

/// `switchboard listen URL --room R`.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:8080/ws.
    pub url: String,
    /// Room to listen to (repeat for several).
    #[arg(long, required = true)]
    pub room: Vec<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
}

/// `switchboard send URL --room R MESSAGE`.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:8080/ws.
    pub url: String,
    /// Room to publish to.
    #[arg(long)]
    pub room: String,
    /// The message: JSON if it parses as JSON, else sent as a string.
    pub message: String,
    /// Give up (exit 1) when no ack came within this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
}

/// `switchboard discover [--port P] [--timeout-ms T]`.
#[derive(Debug, Clone, Args)]
pub struct DiscoverArgs {
    /// UDP discovery port.
    #[arg(long, default_value_t = switchboard_client::discovery::DEFAULT_PORT)]
    pub port: u16,
    /// How long to collect answers.
    #[arg(long, default_value_t = 2_000)]
    pub timeout_ms: u64,
}

/// Runs a client subcommand (`serve` is handled by [`crate::cli::serve`]).
pub async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Connect(a) => connect::run(a).await,
        Command::Listen(a) => listen::run(a).await,
        Command::Send(a) => send::run(a).await,
        Command::Discover(a) => discover::run(a).await,
        Command::Serve(_) => {
            eprintln!("switchboard: serve is not a client command");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Client options for a command-line client: reconnect quickly, never give up (scripts
/// bound their own time).
pub(crate) fn options(name: Option<String>, client_id: Option<String>) -> ClientOptions {
    ClientOptions {
        name,
        client_id,
        retry_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A message given on the command line: JSON when it parses, else a string.
pub(crate) fn parse_data(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_messages_are_json_when_they_parse() {
        assert_eq!(parse_data(r#"{"a":1}"#), serde_json::json!({"a":1}));
        assert_eq!(parse_data("42"), serde_json::json!(42));
        assert_eq!(parse_data("hello there"), serde_json::json!("hello there"));
    }
}
