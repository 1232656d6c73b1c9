//! The node's pub/sub connection.
//!
//! One task owns it. It subscribes to this node's command channel, the all-nodes
//! channel and every room the hub asks for ([`SubCommand`]), and hands what arrives to
//! the hub in arrival order: room messages to `Hub::deliver_remote` (after fetching from
//! the room's stream any offsets the node missed), presence changes to
//! `Hub::apply_presence`, commands to `Hub::apply_command` (in their own task: a command
//! may subscribe, which goes through this very task).
//!
//! The connection speaks RESP3, so published messages arrive as push frames handed to a
//! callback (see `connect`) that never waits: it puts them in a bounded queue
//! (`ClusterConfig::inbox`, [`INBOX`] messages by default). If the hub falls that far behind (a node starved of CPU), further
//! messages are dropped and counted, and once the queue has drained the node
//! resynchronises every room as after a reconnection: missed room messages come back
//! from the streams or are reported as `gap`, presence and parameters are re-read.
//! Memory stays bounded whatever the publishers do.
//!
//! When the connection drops (Redis restarted or unreachable; noticed by the
//! disconnection push or by a failed `PING` every heartbeat) the node is not ready; the
//! task reconnects with exponential backoff, resubscribes everything and asks the hub to
//! resynchronise its rooms (`Hub::cluster_resync`), which recovers missed messages,
//! reports what is gone as `gap` and starts new epochs where needed. Nothing is buffered
//! meanwhile: publishes fail over to local delivery in the hub.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use switchboard_hub::{Envelope, WeakHub};
use tokio::sync::{mpsc, oneshot};

use crate::broker::RedisBroker;
use crate::error::ClusterError;
use crate::wire::{self, NodeWire, RoomWire};

/// Missing offsets fetched from a stream at once, at most (more is reported as a gap).
const MAX_FILL: u64 = 10_000;

/// Messages received but not yet handed to the hub, at most (the default of
/// `ClusterConfig::inbox`).
pub const INBOX: usize = 16_384;

/// A subscription change; the reply says whether it is in effect now.
pub enum SubCommand {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String, oneshot::Sender<bool>),
}

/// One live pub/sub connection and what it received.
pub(crate) struct Link {
    conn: MultiplexedConnection,
    inbox: mpsc::Receiver<PushInfo>,
}

/// Opens a RESP3 connection whose pushes land in a bounded queue; pushes that do not
/// fit are counted in `dropped` (the connection's reader never waits for the hub).
pub(crate) async fn connect(broker: &RedisBroker) -> Result<Link, ClusterError> {
    let (tx, inbox) = mpsc::channel::<PushInfo>(broker.shared.config.inbox.max(1));
    let dropped = broker.shared.pubsub_dropped.clone();
    let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
        let wanted = matches!(info.kind, PushKind::Message | PushKind::Disconnection);
        // Subscription confirmations and the like are not wanted.
        if wanted && tx.try_send(info).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    };
    let timeout = broker.shared.config.response_timeout;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_push_sender(push);
    let mut conn = broker
        .shared
        .pubsub_client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    conn.subscribe(&[
        broker.keys().node_channel(broker.node()),
        broker.keys().all_channel(),
    ])
    .await?;
    Ok(Link { conn, inbox })
}

/// Starts the task on a connected link.
pub(crate) fn spawn(
    broker: RedisBroker,
    hub: WeakHub,
    link: Link,
    commands: mpsc::Receiver<SubCommand>,
) {
    broker.shared.subscribed.store(true, Ordering::Relaxed);
    tokio::spawn(run(broker, hub, link, commands));
}

async fn run(
    broker: RedisBroker,
    hub: WeakHub,
    mut link: Link,
    mut commands: mpsc::Receiver<SubCommand>,
) {
    let mut rooms: HashSet<String> = HashSet::new();
    let dropped: Arc<AtomicU64> = broker.shared.pubsub_dropped.clone();
    let mut seen_dropped = dropped.load(Ordering::Relaxed);
    let mut liveness = tokio::time::interval(broker.shared.config.heartbeat);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Connected: serve messages and subscription changes.
        loop {
            tokio::select! {
                push = link.inbox.recv() => {
                    let Some(push) = push else { break };
                    if push.kind == PushKind::Disconnection {
                        break;
                    }
                    let Some(h) = hub.upgrade() else { return };
                    if let Some(msg) = redis::Msg::from_push_info(push) {
                        handle(&broker, &h, msg).await;
                    }
                    let now = dropped.load(Ordering::Relaxed);
                    if now != seen_dropped && link.inbox.is_empty() {
                        tracing::warn!(
                            dropped = now - seen_dropped,
                            "this node fell behind its Redis messages; resynchronising rooms"
                        );
                        seen_dropped = now;
                        tokio::spawn(async move { h.cluster_resync().await });
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    change(&broker, &mut link.conn, &mut rooms, cmd).await;
                }
                _ = liveness.tick() => {
                    // A link that went silent without a disconnection (half-open).
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<String>(&mut link.conn);
                    if !matches!(
                        tokio::time::timeout(broker.shared.config.response_timeout, ping).await,
                        Ok(Ok(_))
                    ) {
                        break;
                    }
                }
            }
        }
        broker.shared.subscribed.store(false, Ordering::Relaxed);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        // Disconnected: keep the wanted set current while retrying with backoff.
        let mut backoff = Duration::from_millis(100);
        link = loop {
            let attempt = async {
                let mut link = connect(&broker).await?;
                if !rooms.is_empty() {
                    let channels: Vec<String> = rooms
                        .iter()
                        .map(|r| broker.keys().room_channel(r))
                        .collect();
                    link.conn.subscribe(channels).await?;
                }
                Ok::<_, ClusterError>(link)
            };
            match tokio::time::timeout(broker.shared.config.response_timeout * 2, attempt).await {
                Ok(Ok(link)) => break link,
                Ok(Err(e)) => tracing::debug!(error = %e, "Redis reconnection failed"),
                Err(_) => tracing::debug!("Redis reconnection timed out"),
            }
            let wake = tokio::time::sleep(backoff);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    () = &mut wake => break,
                    cmd = commands.recv() => {
                        let Some(cmd) = cmd else { return };
                        change_offline(&mut rooms, cmd);
                    }
                }
            }
            backoff = (backoff * 2).min(broker.shared.config.max_backoff);
        };
        seen_dropped = dropped.load(Ordering::Relaxed);
        broker.shared.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(
            rooms = rooms.len(),
            "Redis pub/sub reconnected; resynchronising rooms"
        );
        let Some(h) = hub.upgrade() else { return };
        // In its own task: resync publishes presence and reads positions through the
        // command connection, while this task goes on delivering.
        tokio::spawn(async move { h.cluster_resync().await });
    }
}

async fn change(
    broker: &RedisBroker,
    conn: &mut MultiplexedConnection,
    rooms: &mut HashSet<String>,
    cmd: SubCommand,
) {
    let timeout = broker.shared.config.response_timeout;
    match cmd {
        SubCommand::Subscribe(room, reply) => {
            let channel = broker.keys().room_channel(&room);
            rooms.insert(room);
            let ok = matches!(
                tokio::time::timeout(timeout, conn.subscribe(channel)).await,
                Ok(Ok(()))
            );
            let _ = reply.send(ok);
        }
        SubCommand::Unsubscribe(room, reply) => {
            let channel = broker.keys().room_channel(&room);
            rooms.remove(&room);
            let ok = matches!(
                tokio::time::timeout(timeout, conn.unsubscribe(channel)).await,
                Ok(Ok(()))
            );
            let _ = reply.send(ok);
        }
    }
}

/// While disconnected: remember the change for the resubscription, report it not in
/// effect yet.
fn change_offline(rooms: &mut HashSet<String>, cmd: SubCommand) {
    match cmd {
        SubCommand::Subscribe(room, reply) => {
            rooms.insert(room);
            let _ = reply.send(false);
        }
        SubCommand::Unsubscribe(room, reply) => {
            rooms.remove(&room);
            let _ = reply.send(true);
        }
    }
}

async fn handle(broker: &RedisBroker, hub: &switchboard_hub::Hub, msg: redis::Msg) {
    let channel = msg.get_channel_name();
    let payload = msg.get_payload_bytes();
    if let Some(room) = broker.keys().room_of_channel(channel) {
        match wire::decode_room(payload) {
            Ok(RoomWire::Message {
                o,
                e,
                message,
                except,
            }) => {
                deliver(broker, hub, room, wire::envelope(o, e, message, except)).await;
            }
            Ok(RoomWire::Presence(change)) => hub.apply_presence(change),
            Ok(RoomWire::Signal(signal)) => hub.apply_signal(signal),
            Err(e) => tracing::warn!(room, error = %e, "undecodable message on a room channel"),
        }
        return;
    }
    match serde_json::from_slice::<NodeWire>(payload) {
        Ok(w) if w.from == broker.node() && channel == broker.keys().all_channel() => {}
        Ok(w) => {
            let hub = hub.clone();
            tokio::spawn(async move { hub.apply_command(w.command).await });
        }
        Err(e) => tracing::warn!(channel, error = %e, "undecodable node command"),
    }
}

/// Hands a room message to the hub, first filling in offsets this node missed.
async fn deliver(broker: &RedisBroker, hub: &switchboard_hub::Hub, room: &str, env: Envelope) {
    if hub.is_diverged(room) {
        // This node served the room alone during an outage: start the next epoch first.
        hub.resync_room(room).await;
    }
    let Some((epoch, offset)) = hub.room_cursor(room) else {
        return;
    };
    let next = env.message.offset;
    if epoch == env.epoch && next > offset + 1 {
        let from = offset + 1;
        let to = next - 1;
        let fill_from = to.saturating_sub(MAX_FILL - 1).max(from);
        match broker.range(room, fill_from, to).await {
            Ok(missed) => {
                for m in missed {
                    if m.epoch == epoch {
                        if let Some((_, at)) = hub.room_cursor(room)
                            && m.message.offset > at + 1
                        {
                            hub.mark_gap(room, at + 1, m.message.offset - 1);
                        }
                        hub.deliver_remote(m);
                    }
                }
            }
            Err(e) => tracing::warn!(room, error = %e, "cannot fetch missed messages"),
        }
        if let Some((_, at)) = hub.room_cursor(room)
            && at < to
        {
            hub.mark_gap(room, at + 1, to);
        }
    }
    hub.deliver_remote(env);
}
