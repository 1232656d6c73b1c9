//! The command line (PROTOCOL §9): `switchboard [serve] [flags]`.
//!
//! Every flag has a `SWITCHBOARD_…` environment twin; clap resolves flag-over-environment
//! and [`crate::Config::merge`] puts both over the file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchboard_hub::Hub;

use crate::config::{Config, Overrides};

/// Switchboard: a real-time WebSocket hub.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard: a real-time WebSocket hub."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Interactive terminal client: print messages, send lines, /join, /leave, /direct, /who.
    Connect(crate::commands::ConnectArgs),
    /// Print every message of a room as one JSON line.
    Listen(crate::commands::ListenArgs),
    /// Publish one message and wait for its ack.
    Send(crate::commands::SendArgs),
    /// List the Switchboard servers on the local network.
    Discover(crate::commands::DiscoverArgs),
}

/// Flags of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<String>,
    /// TOML configuration file.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store: sqlite://PATH, postgres://…, or memory.
    #[arg(long, env = "SWITCHBOARD_STORE")]
    pub store: Option<String>,
    /// Redis URL: turns on cluster mode.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,
    /// Bearer token required by the REST API.
    #[arg(long, env = "SWITCHBOARD_API_TOKEN")]
    pub api_token: Option<String>,
    /// This node's id.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,
    /// Log filter, e.g. info or switchboard=debug.
    #[arg(long, env = "SWITCHBOARD_LOG")]
    pub log: Option<String>,
}

impl From<ServeArgs> for Overrides {
    fn from(a: ServeArgs) -> Self {
        Overrides {
            listen: a.listen,
            config: a.config,
            store: a.store,
            redis: a.redis,
            api_token: a.api_token,
            node_id: a.node_id,
            log: a.log,
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs `serve` until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.into()).context("configuration")?;
    init_logging(&config);
    match crate::limits::raise_nofile() {
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
    let stores = switchboard_store::open_all(&config.store)
        .await
        .with_context(|| {
            format!(
                "cannot open the store {}",
                switchboard_store::redact_url(&config.store)
            )
        })?;
    let hub = Hub::with_store(config.hub.clone(), stores.rooms.clone());
    hub.set_playback_store(stores.playback.clone());
    if let Some(url) = &config.redis {
        crate::cluster::join(&hub, url, &config).await?;
    } else {
        // One node: no device registered by a previous process is connected any more.
        stores
            .playback
            .mark_all_gone()
            .await
            .context("cannot reset registered connections in the store")?;
    }
    let restored = hub
        .restore()
        .await
        .context("cannot load durable rooms from the store")?;
    tracing::info!(
        store = %switchboard_store::redact_url(&config.store),
        durable_rooms = restored,
        "store ready"
    );
    let config = Arc::new(config);
    let running = crate::server::serve(hub, config.clone())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // LAN discovery answers for as long as the server runs (off unless configured).
    let _discovery = crate::discovery::start(
        &config.discovery,
        crate::discovery::Identity {
            name: String::new(),
            node_id: config.hub.node_id.clone(),
            listen: running.addr,
            path: crate::discovery::default_path(&config),
        },
    )
    .context("cannot start LAN discovery")?;
    let line = format!("listening on http://{}", running.addr);
    tracing::info!("{line}");
    eprintln!("{line}");
    wait_for_signal().await;
    tracing::info!("signal received");
    running.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
