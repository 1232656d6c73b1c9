//! Serving: the accept loop, the router, and graceful shutdown.
//!
//! We run our own accept loop (rather than `axum::serve`) to set TCP_NODELAY on every
//! socket — batching already happens in the connection writer, so Nagle only adds
//! latency — to tag each request with the peer address, and to stop accepting the
//! moment shutdown begins.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, get};
use hyper_util::rt::TokioIo;
use switchboard_hub::Hub;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::{self, AddressLimits, RestLimiter};
use crate::web;
use crate::webhooks::Webhooks;
use crate::webhooks::metrics::WebhookMetrics;
use crate::ws::{self, EndpointState, RemoteAddr};

/// The HTTP router: endpoints, REST API, health, web pages; `/metrics` renders `metrics`.
pub fn router(hub: &Hub, config: &Config, metrics: Arc<Metrics>) -> Router {
    let mut app = Router::new();
    let addresses = Arc::new(AddressLimits::new(&config.limits));
    for ep in &config.endpoints {
        let state = EndpointState::new(ep.clone(), addresses.clone());
        let hub = hub.clone();
        app = app.route(
            &ep.rules.path,
            any(move |req: Request| ws::upgrade(hub.clone(), state.clone(), req)),
        );
    }
    let default_endpoint = config
        .endpoints
        .iter()
        .find(|e| e.rules.mode == switchboard_hub::Mode::Protocol)
        .map(|e| e.rules.clone())
        .unwrap_or_else(|| Arc::new(switchboard_hub::EndpointRules::new("/ws")));
    let default_ws = default_endpoint.path.clone();
    // The API's outer layers: the per-token rate limit, then CORS outermost so that a
    // preflight is answered without a token (docs/security.md).
    let mut api = api::router(ApiState {
        hub: hub.clone(),
        api_token: config.api_token.clone(),
        room_defaults: default_endpoint,
    })
    .layer(axum::middleware::from_fn_with_state(
        RestLimiter::new(&config.limits, config.api_token.clone()),
        ratelimit::limit_rest,
    ));
    // Checked when the configuration was loaded.
    if let Ok(Some(cors)) = config.cors.layer() {
        api = api.layer(cors);
    }
    app.merge(api)
        .route("/healthz", get(api::healthz))
        .route(
            "/metrics",
            get(crate::metrics::handler).with_state((hub.clone(), metrics)),
        )
        .route("/readyz", get(api::readyz).with_state(hub.clone()))
        .merge(web::router(default_ws))
}

/// How long queued lifecycle webhooks may take to go out at shutdown.
const WEBHOOK_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A running server: its address and a way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Begins a graceful shutdown and waits for it to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`Running::stop`] or a fatal error).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Binds the listener and serves until shutdown is signalled; then drains connections
/// over `config.shutdown_drain` and returns.
pub async fn serve(hub: Hub, config: Arc<Config>) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let metrics = Metrics::install(
        &hub,
        config
            .endpoints
            .iter()
            .map(|e| e.rules.path.clone())
            .collect(),
    );
    let webhooks = Webhooks::install(
        &hub,
        config
            .endpoints
            .iter()
            .filter_map(|e| Some((e.rules.path.clone(), e.hooks.clone()?)))
            .collect(),
        config.webhooks.clone(),
        metrics.scope(WebhookMetrics::register),
    )
    .map_err(std::io::Error::other)?;
    let app = router(&hub, &config, metrics);
    let (tx, mut rx) = watch::channel(false);
    let maintenance = hub.spawn_maintenance();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off briefly
                            // instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let app = app.clone();
                    let limits = config.limits.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(RemoteAddr(peer));
                            let mut app = app.clone();
                            async move { app.call(req.map(axum::body::Body::new)).await }
                        });
                        // The request head must arrive whole, within the handshake
                        // timeout and under the size limit (431 otherwise).
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(hyper_util::rt::TokioTimer::new())
                            .header_read_timeout(limits.handshake_timeout)
                            .max_buf_size(limits.max_header_bytes)
                            .serve_connection(TokioIo::new(tcp), svc)
                            .with_upgrades();
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    });
                }
                _ = rx.changed() => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: draining connections");
        hub.shutdown(config.shutdown_drain).await;
        // Give writers a moment to flush their close frames, bounded.
        if !hub.wait_idle(std::time::Duration::from_secs(3)).await {
            tracing::warn!(
                left = hub.connection_count(),
                "connections still open at exit"
            );
        }
        // Room-vacated and member-left events of the closed connections, bounded so
        // that the process still exits promptly when the receiver is down.
        webhooks.shutdown(WEBHOOK_FLUSH).await;
        maintenance.abort();
    });
    Ok(Running {
        addr,
        shutdown: tx,
        task,
    })
}
