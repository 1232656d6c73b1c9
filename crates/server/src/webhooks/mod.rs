//! HTTP webhooks: the application's backend decides on, and hears about, what clients do.
//!
//! Two kinds, configured separately (docs/webhooks.md has the whole contract):
//!
//! - **Synchronous hooks** (`hooks.*` of an `[[endpoint]]`): `connect`, `join`, `publish`,
//!   `direct` and `close` are POSTed to the backend while the client waits; the answer
//!   allows, rewrites or rejects ([`sync`]). This is the hub's [`switchboard_hub::Hooks`]
//!   trait implemented over HTTP.
//! - **Lifecycle webhooks** (`[webhooks]`): room occupied and vacated, member joined and
//!   left, client online and offline, sent after the fact through a bounded queue with
//!   retries ([`lifecycle`] derives them from the hub's membership changes, [`delivery`]
//!   sends them).
//!
//! Where to start: [`Webhooks::install`] wires both into a hub from the checked
//! [`settings`]; [`client`] is the shared HTTP client and [`sign`] the HMAC signature
//! scheme both kinds use; [`metrics`] lists what `/metrics` shows.

pub mod client;
pub mod delivery;
pub mod lifecycle;
pub mod metrics;
pub mod settings;
pub mod sign;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::Hub;
use tokio::task::JoinHandle;

pub use client::ClientError;
pub use settings::{
    EndpointHooks, HooksTable, LifecycleEvent, LifecycleSettings, SettingError, SyncHook,
    WebhooksTable,
};
pub use sign::{Secret, VerifyError, signature, verify};

use self::client::HttpClient;
use self::delivery::Delivery;
use self::lifecycle::Tracker;
use self::metrics::WebhookMetrics;
use self::sync::HttpHooks;

/// The webhooks of a running server; [`Webhooks::shutdown`] flushes what is queued.
#[derive(Default)]
pub struct Webhooks {
    lifecycle: Option<Lifecycle>,
}

struct Lifecycle {
    delivery: Arc<Delivery>,
    tracker: Arc<Tracker>,
    timers: JoinHandle<()>,
}

impl Webhooks {
    /// Registers the synchronous hooks of `endpoints` (path and settings) on `hub` and,
    /// with `lifecycle` settings, starts lifecycle deliveries. Does nothing — and leaves
    /// any hooks the application set alone — when neither is configured. Must run inside
    /// a tokio runtime; `metrics` comes from [`crate::metrics::Metrics::scope`].
    pub fn install(
        hub: &Hub,
        endpoints: Vec<(String, EndpointHooks)>,
        lifecycle: Option<Arc<LifecycleSettings>>,
        metrics: WebhookMetrics,
    ) -> Result<Webhooks, ClientError> {
        if endpoints.is_empty() && lifecycle.is_none() {
            return Ok(Webhooks::default());
        }
        let client = HttpClient::new()?;
        let metrics = Arc::new(metrics);
        if !endpoints.is_empty() {
            tracing::info!(
                endpoints = ?endpoints.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
                "synchronous webhooks on"
            );
            hub.set_hooks(Arc::new(HttpHooks::new(
                endpoints,
                client.clone(),
                metrics.clone(),
            )));
        }
        let lifecycle = lifecycle.map(|settings| {
            tracing::info!(url = %redact(&settings.url), "lifecycle webhooks on");
            let delivery = Delivery::start(settings.clone(), client, metrics);
            // Cluster mode is known here: the broker is plugged in before webhooks.
            let cluster = hub.cluster_status().is_some();
            let tracker = Tracker::new(settings, delivery.clone(), hub.node_id(), cluster);
            hub.set_membership_observer(tracker.clone());
            Lifecycle {
                timers: tokio::spawn(tracker.clone().run_timers()),
                delivery,
                tracker,
            }
        });
        Ok(Webhooks { lifecycle })
    }

    /// Lifecycle events queued or in flight (0 without lifecycle webhooks).
    pub fn pending(&self) -> usize {
        self.lifecycle.as_ref().map_or(0, |l| l.delivery.depth())
    }

    /// At shutdown, after the connections are gone: gives queued lifecycle events up to
    /// `within` to be delivered, then stops. Offline notices still in their grace period
    /// are not sent.
    pub async fn shutdown(self, within: Duration) {
        let Some(l) = self.lifecycle else {
            return;
        };
        l.tracker.close();
        let left = l.delivery.drain(within).await;
        l.timers.abort();
        if left > 0 {
            tracing::warn!(
                undelivered = left,
                "lifecycle webhook events still queued at exit were dropped"
            );
        }
    }
}

/// The URL without user info or query, for logs.
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.set_query(None);
    u.to_string()
}
