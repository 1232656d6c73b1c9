//! The node's pub/sub connection.
//!
//! One task owns it. It subscribes to this node's command channel, the all-nodes
//! channel and every room the hub asks for ([`SubCommand`]), and hands what arrives to
//! the hub in arrival order: room messages to `Hub::deliver_remote` (after fetching from
//! the room's stream any offsets the node missed), presence changes to
//! `Hub::apply_presence`, commands to `Hub::apply_command` (in their own task: a command
//! may subscribe, which goes through this very task).
//!
//! When the connection drops (Redis restarted or unreachable) the node is not ready; the
//! task reconnects with exponential backoff, resubscribes everything and asks the hub to
//! resynchronise its rooms (`Hub::cluster_resync`), which recovers missed messages,
//! reports what is gone as `gap` and starts new epochs where needed. Nothing is buffered
//! meanwhile: publishes fail over to local delivery in the hub.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSub, PubSubSink};
use switchboard_hub::{Envelope, WeakHub};
use tokio::sync::{mpsc, oneshot};

use crate::broker::RedisBroker;
use crate::error::ClusterError;
use crate::wire::{self, NodeWire, RoomWire};

/// Missing offsets fetched from a stream at once, at most (more is reported as a gap).
const MAX_FILL: u64 = 10_000;

/// A subscription change; the reply says whether it is in effect now.
pub enum SubCommand {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String, oneshot::Sender<bool>),
}

/// Subscribes the node's own channels on `pubsub` and starts the task.
pub(crate) async fn spawn(
    broker: RedisBroker,
    hub: WeakHub,
    pubsub: PubSub,
    commands: mpsc::Receiver<SubCommand>,
) -> Result<(), ClusterError> {
    let (mut sink, stream) = pubsub.split();
    subscribe_node(&broker, &mut sink).await?;
    broker.shared.subscribed.store(true, Ordering::Relaxed);
    tokio::spawn(run(broker, hub, sink, stream, commands));
    Ok(())
}

async fn subscribe_node(broker: &RedisBroker, sink: &mut PubSubSink) -> Result<(), ClusterError> {
    sink.subscribe(broker.keys().node_channel(broker.node()))
        .await?;
    sink.subscribe(broker.keys().all_channel()).await?;
    Ok(())
}

async fn run(
    broker: RedisBroker,
    hub: WeakHub,
    mut sink: PubSubSink,
    mut stream: redis::aio::PubSubStream,
    mut commands: mpsc::Receiver<SubCommand>,
) {
    let mut rooms: HashSet<String> = HashSet::new();
    loop {
        // Connected: serve messages and subscription changes.
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(h) = hub.upgrade() else { return };
                    handle(&broker, &h, msg).await;
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    change(&broker, &mut sink, &mut rooms, cmd).await;
                }
            }
        }
        broker.shared.subscribed.store(false, Ordering::Relaxed);
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        // Disconnected: keep the wanted set current while retrying with backoff.
        let mut backoff = Duration::from_millis(100);
        let (new_sink, new_stream) = loop {
            let attempt = async {
                let pubsub = broker.shared.client.get_async_pubsub().await?;
                let (mut sink, stream) = pubsub.split();
                subscribe_node(&broker, &mut sink).await?;
                for room in &rooms {
                    sink.subscribe(broker.keys().room_channel(room)).await?;
                }
                Ok::<_, ClusterError>((sink, stream))
            };
            match tokio::time::timeout(broker.shared.config.response_timeout * 2, attempt).await {
                Ok(Ok(pair)) => break pair,
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
        sink = new_sink;
        stream = new_stream;
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
    sink: &mut PubSubSink,
    rooms: &mut HashSet<String>,
    cmd: SubCommand,
) {
    let timeout = broker.shared.config.response_timeout;
    match cmd {
        SubCommand::Subscribe(room, reply) => {
            let channel = broker.keys().room_channel(&room);
            rooms.insert(room);
            let ok = matches!(
                tokio::time::timeout(timeout, sink.subscribe(channel)).await,
                Ok(Ok(()))
            );
            let _ = reply.send(ok);
        }
        SubCommand::Unsubscribe(room, reply) => {
            let channel = broker.keys().room_channel(&room);
            rooms.remove(&room);
            let ok = matches!(
                tokio::time::timeout(timeout, sink.unsubscribe(channel)).await,
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
