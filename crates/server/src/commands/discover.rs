//! `switchboard discover`: one JSON line per server that answers, exit 0 if any did.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::DiscoverArgs;

pub async fn run(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let servers = switchboard_client::discover(args.port, timeout)
        .await
        .context("discovery failed")?;
    for s in &servers {
        println!("{}", serde_json::to_string(s)?);
    }
    if servers.is_empty() {
        eprintln!(
            "switchboard: no server answered on UDP port {} within {} ms",
            args.port, args.timeout_ms
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
