//! `switchboard-bench`: the load generator and benchmark scenarios of Switchboard.
//!
//! It speaks the wire protocol (PROTOCOL.md) as an outside client would — JSON text
//! frames over WebSocket — and depends on no other Switchboard crate, so it measures
//! the server exactly as clients see it.
//!
//! Where to start reading:
//! - `conn.rs`: opening many connections (paced, bounded, from many source addresses);
//! - `idle.rs`, `fanout.rs`, `echo.rs`, `durable.rs`, `compression.rs`: the scenarios,
//!   one per file;
//! - `baseline.rs`: the minimal reference server measured next to Switchboard;
//! - `compare.rs`: the headline mode running every scenario against both servers;
//! - `stats.rs`, `report.rs`, `procfs.rs`: histograms and medians, output, /proc readings.

#![forbid(unsafe_code)]

mod baseline;
mod compare;
mod compression;
mod conn;
mod durable;
mod echo;
mod fanout;
mod idle;
mod procfs;
mod redis_stats;
mod report;
mod stats;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator and benchmarks for Switchboard"
)]
struct Cli {
    /// Print the result as one JSON line on stdout (the table goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Memory per idle, joined connection (server RSS before/after N connections).
    Idle(idle::Args),
    /// One publisher, N subscribers: throughput, latency, loss, CPU per message.
    Fanout(fanout::Args),
    /// Round trips through an echo endpoint.
    Echo(echo::Args),
    /// Acknowledged publishes/s and ack latency for a durable (or ordinary) room.
    Durable(durable::Args),
    /// The minimal reference server (plain tokio-tungstenite) to compare against.
    BaselineServer(baseline::Args),
    /// Run the scenarios against Switchboard and the baseline; print medians and ratios.
    Compare(compare::Args),
    /// Fan-out with permessage-deflate on and off: wire bytes, CPU, rate, latency.
    Compression(compression::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_files_limit();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole context chain: "what failed: because: because".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Thousands of sockets need thousands of descriptors: lift the soft limit to the hard
/// one (children such as the servers started by `compare` inherit it).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 4096 => {
            eprintln!("note: open files limited to {limit}; large runs will fail to connect")
        }
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot raise the open files limit: {e}"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    // The baseline server handles SIGINT/SIGTERM itself (clean exit); everything else
    // stops at once, dropping — and so killing — any child process and connection.
    let work = async {
        match &cli.command {
            Command::Idle(args) => idle::run(args).await?.emit(json),
            Command::Fanout(args) => fanout::run(args).await?.emit(json),
            Command::Echo(args) => echo::run(args).await?.emit(json),
            Command::Durable(args) => durable::run(args).await?.emit(json),
            Command::BaselineServer(args) => baseline::run(args).await,
            Command::Compare(args) => compare::run(args, json).await,
            Command::Compression(args) => compression::run(args).await?.emit(json),
        }
    };
    if matches!(cli.command, Command::BaselineServer(_)) {
        return work.await;
    }
    tokio::select! {
        result = work => result,
        signal = interrupted() => bail!("interrupted by {}", signal?),
    }
}

/// Waits for SIGINT or SIGTERM and names it.
async fn interrupted() -> Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok("SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
