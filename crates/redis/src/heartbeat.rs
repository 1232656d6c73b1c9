//! Node liveness: heartbeats, the connection index and the reaper.
//!
//! Every `heartbeat` the node writes its time into `P:nodes` and rewrites its
//! connection index (`P:node:<id>:conns`, `…:clients`), whose keys expire if it stops.
//! Between heartbeats, connections opening and closing update the index as they happen
//! (through a bounded queue; if it overflows the next heartbeat repairs the index).
//!
//! The reaper runs on every node after its heartbeat: a node whose last heartbeat is
//! older than `node_ttl` is dead. One node (whoever takes `P:reap:<id>` with `SET NX`)
//! removes the dead node's members from every room it announced members in, publishing
//! a presence leave for each so that every node tells its members (`presence_leave`),
//! then deletes the dead node's entries.

use std::collections::HashMap;

use redis::AsyncCommands;
use switchboard_hub::{ConnectionInfo, Hub, PresenceChange, RemoteMember, WeakHub};
use tokio::sync::mpsc;

use crate::broker::{RedisBroker, now_ms};
use crate::error::ClusterError;

/// Index changes written in one pipeline, at most.
const INDEX_BATCH: usize = 256;

pub(crate) fn spawn(
    broker: RedisBroker,
    hub: WeakHub,
    mut index: mpsc::Receiver<(ConnectionInfo, bool)>,
) {
    let writer = broker.clone();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(INDEX_BATCH);
        while index.recv_many(&mut batch, INDEX_BATCH).await > 0 {
            if let Err(e) = write_index(&writer, &batch).await {
                tracing::debug!(error = %e, "connection index update failed; the heartbeat will repair it");
            }
            batch.clear();
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(broker.shared.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(h) = hub.upgrade() else { return };
            if let Err(e) = beat(&broker, &h).await {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                continue;
            }
            if let Err(e) = reap(&broker, &h).await {
                tracing::warn!(error = %e, "reaping dead nodes failed");
            }
        }
    });
}

fn index_ttl_ms(broker: &RedisBroker) -> i64 {
    (broker.shared.config.node_ttl.as_millis() * 3) as i64
}

async fn write_index(
    broker: &RedisBroker,
    batch: &[(ConnectionInfo, bool)],
) -> Result<(), ClusterError> {
    let k = broker.keys();
    let me = broker.node();
    let mut pipe = redis::pipe();
    for (info, open) in batch {
        if *open {
            let json =
                serde_json::to_string(info).map_err(|e| ClusterError::Data(e.to_string()))?;
            pipe.hset(k.node_conns(me), &info.connection_id, json)
                .ignore();
            pipe.hincr(k.node_clients(me), &info.client_id, 1).ignore();
        } else {
            pipe.hdel(k.node_conns(me), &info.connection_id).ignore();
            pipe.hincr(k.node_clients(me), &info.client_id, -1).ignore();
        }
    }
    pipe.pexpire(k.node_conns(me), index_ttl_ms(broker))
        .ignore();
    pipe.pexpire(k.node_clients(me), index_ttl_ms(broker))
        .ignore();
    let mut conn = broker.conn();
    let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
    broker.answered(r)
}

/// Announces the node and rewrites its connection index from the hub's registry.
async fn beat(broker: &RedisBroker, hub: &Hub) -> Result<(), ClusterError> {
    let k = broker.keys();
    let me = broker.node();
    let conns = hub.local_connections();
    let mut clients: HashMap<&str, i64> = HashMap::new();
    for c in &conns {
        *clients.entry(c.client_id.as_str()).or_default() += 1;
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.zadd(k.nodes(), me, now_ms()).ignore();
    pipe.del(k.node_conns(me)).ignore();
    pipe.del(k.node_clients(me)).ignore();
    if !conns.is_empty() {
        let mut fields = Vec::with_capacity(conns.len());
        for c in &conns {
            let json = serde_json::to_string(c).map_err(|e| ClusterError::Data(e.to_string()))?;
            fields.push((c.connection_id.as_str(), json));
        }
        pipe.hset_multiple(k.node_conns(me), &fields).ignore();
        let counts: Vec<(&str, i64)> = clients.into_iter().collect();
        pipe.hset_multiple(k.node_clients(me), &counts).ignore();
    }
    for key in [k.node_conns(me), k.node_clients(me), k.node_rooms(me)] {
        pipe.pexpire(key, index_ttl_ms(broker)).ignore();
    }
    let mut conn = broker.conn();
    let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
    broker.answered(r)
}

/// Removes the members of dead nodes from presence, telling every node; the lifecycle
/// transitions this makes (a room or a client gone from a room) are reported here.
async fn reap(broker: &RedisBroker, hub: &Hub) -> Result<(), ClusterError> {
    let k = broker.keys();
    let mut conn = broker.conn();
    let cutoff = now_ms() - broker.shared.config.node_ttl.as_millis() as i64;
    let dead: Vec<String> = conn.zrangebyscore(k.nodes(), "-inf", cutoff).await?;
    for node in dead.into_iter().filter(|n| n != broker.node()) {
        let locked: Option<String> = redis::cmd("SET")
            .arg(k.reap_lock(&node))
            .arg(broker.node())
            .arg("NX")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await?;
        if locked.is_none() {
            continue;
        }
        let rooms: Vec<String> = conn.smembers(k.node_rooms(&node)).await?;
        let mut left = 0usize;
        for room in rooms {
            let entries: HashMap<String, Vec<u8>> = conn.hgetall(k.members(&room)).await?;
            for entry in entries.into_values() {
                let Ok(m) = serde_json::from_slice::<RemoteMember>(&entry) else {
                    continue;
                };
                if m.node != node {
                    continue;
                }
                let member = m.member;
                let counts = broker
                    .apply_presence(PresenceChange {
                        node: node.clone(),
                        room: room.clone(),
                        joined: false,
                        member: member.clone(),
                        limit: None,
                    })
                    .await?;
                hub.cluster_lifecycle(&room, &member, false, counts, None);
                left += 1;
            }
        }
        let mut pipe = redis::pipe();
        pipe.del(&[
            k.node_conns(&node),
            k.node_clients(&node),
            k.node_rooms(&node),
        ])
        .ignore();
        pipe.zrem(k.nodes(), &node).ignore();
        let () = pipe.query_async(&mut conn).await?;
        tracing::info!(node, members = left, "reaped a dead node");
    }
    Ok(())
}
