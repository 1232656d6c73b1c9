//! `switchboard send URL --room R MESSAGE`: publish one message, print its ack as a JSON
//! line, and exit 0 — or exit 1 with the reason when no ack came within `--timeout-ms`.
//!
//! It keeps trying until the deadline: a server that is not up yet, restarting or
//! refusing connections for a moment (503) is waited for with the client's backoff. A
//! publish whose connection dropped before the ack is sent again, so the message is
//! delivered at least once.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_client::{Client, ClientError, ErrorCode, Event, Status};
use tokio::time::Instant;

use super::SendArgs;

pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + timeout;
    let mut options = super::options(args.name.clone(), None);
    options.request_timeout = timeout.clamp(Duration::from_millis(100), Duration::from_secs(5));
    options.connect_timeout = options.request_timeout;
    let (client, mut events) = Client::start(&args.url, options)?;
    // The last reason a connection failed, to explain a timeout.
    let last_problem = Arc::new(Mutex::new(None::<String>));
    let recorder = {
        let last_problem = last_problem.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Status(
                    Status::Disconnected { reason, .. } | Status::Failed { reason },
                ) = event
                {
                    *last_problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
                }
            }
        })
    };
    let data = super::parse_data(&args.message);
    let mut pause = Duration::from_millis(100);
    let outcome = loop {
        let attempt = async {
            client.join(&args.room).await?;
            client.publish(&args.room, data.clone()).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(offset)) => break Ok(offset),
            Ok(Err(e)) if retryable(&e) => {
                tracing::debug!(error = %e, "send: retrying");
                if Instant::now() + pause >= deadline {
                    break Err(e.to_string());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Ok(Err(e)) => break Err(e.to_string()),
            Err(_) => {
                let why = last_problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .map(|r| format!(" (last problem: {r})"))
                    .unwrap_or_default();
                break Err(format!("no ack within {} ms{why}", args.timeout_ms));
            }
        }
    };
    client.close().await;
    recorder.abort();
    match outcome {
        Ok(offset) => {
            println!(
                "{}",
                serde_json::json!({"type": "ack", "room": args.room, "offset": offset})
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("switchboard: send to {} failed: {message}", args.url);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Failures worth another try before the deadline.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Disconnected { .. } | ClientError::Timeout { .. } => true,
        ClientError::Server { code, .. } => {
            matches!(code, ErrorCode::RateLimited | ErrorCode::Internal)
        }
        _ => false,
    }
}
