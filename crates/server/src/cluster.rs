//! Cluster mode (`--redis redis://…`): plugs the Redis engine into the hub.
//!
//! Every node started with the same Redis (and `[cluster] prefix`) shares rooms'
//! offsets, history, presence, direct messages and the REST commands on connections;
//! see `docs/cluster.md`.

use std::time::Duration;

use anyhow::Context;
use switchboard_hub::Hub;
use switchboard_redis::{ClusterConfig, RedisBroker};

use crate::config::Config;

/// Connects `hub` to the cluster at `url`; fails if Redis cannot be reached now.
pub async fn join(hub: &Hub, url: &str, config: &Config) -> anyhow::Result<RedisBroker> {
    let t = &config.cluster;
    if t.heartbeat_ms == 0 || t.node_ttl_ms <= t.heartbeat_ms {
        anyhow::bail!(
            "cluster.node_ttl_ms ({}) must be longer than cluster.heartbeat_ms ({}), which must not be 0",
            t.node_ttl_ms,
            t.heartbeat_ms
        );
    }
    let cluster = ClusterConfig {
        node_id: hub.node_id().to_owned(),
        prefix: t.prefix.clone(),
        heartbeat: Duration::from_millis(t.heartbeat_ms),
        node_ttl: Duration::from_millis(t.node_ttl_ms),
        room_ttl: Duration::from_secs(t.room_ttl_s.max(1)),
        stream_len: t.stream_len,
        ..ClusterConfig::default()
    };
    let shown = switchboard_store::redact_url(url);
    let broker = RedisBroker::start(hub, url, cluster)
        .await
        .with_context(|| format!("cannot join the cluster at {shown}"))?;
    tracing::info!(redis = %shown, node_id = hub.node_id(), "cluster mode");
    Ok(broker)
}
