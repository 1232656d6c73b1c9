//! Several nodes, one hub as far as clients can tell: what the hub does with a
//! [`crate::Broker`] beyond sequencing messages.
//!
//! Where to start: `Hub::cluster_enter` (a node starts serving a room: subscribe, then
//! take the cluster's epoch, offset, history, remote members and parameters),
//! [`Hub::apply_presence`], [`Hub::apply_signal`] and [`Hub::apply_command`] (what other
//! nodes send this one), and
//! [`Hub::cluster_resync`] (after the broker was unreachable).
//!
//! Rules kept here:
//! - A node subscribes to a room before its first local member is added and
//!   unsubscribes only after re-checking, under the same per-room guard, that no member
//!   came back meanwhile; so a room with local members is always subscribed.
//! - Members on other nodes are cached per room ([`RemoteMember`]), filled when the
//!   node starts serving the room and kept current by presence changes; `joined`,
//!   `presence` and presence events use it without asking the broker.
//! - Parameters and triggers (`update`, `trigger`) carry no offset: the node where they
//!   are raised tells its own members at once and hands a [`RoomSignal`] to the broker,
//!   which keeps the room's parameter values (for nodes that start serving the room
//!   later) and passes the signal to the other nodes serving it.
//! - While the broker is unreachable a node keeps serving rooms that have local members
//!   on its own, under a new local epoch (the room *diverged*); when the broker is back
//!   the room gets a new cluster-wide epoch whose offsets continue above every offset a
//!   member saw, so whoever recovers across the outage gets `recovered_complete: false`.
//! - Messages a subscribed node missed while the epoch stayed the same are fetched from
//!   the broker's history and delivered in order; what history no longer has is reported
//!   to the members as `gap`. Messages a node served alone go to the cluster after the
//!   outage, numbered in the new epoch ([`Hub::cluster_resync`]).
//! - Rooms created explicitly are defined cluster-wide ([`Broker::define_room`]); a node
//!   makes its copy of such a room from the definition the first time it is asked about
//!   it ([`Hub::find_room`]), so codes and limits hold on every node.
//! - A command whose caller waits for the outcome (a routed REST join or leave) carries a
//!   [`ReplyTo`]; the node that ran it answers with [`NodeCommand::Done`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_protocol::{ErrorCode, Member, ParamState, ServerMessage};
use tokio::sync::{OwnedMutexGuard, oneshot};

use crate::broker::{Broker, Envelope};
use crate::connection::ConnectionInfo;
use crate::error::{HubError, HubResult};
use crate::frame::{Payload, SharedFrame};
use crate::hub::{Hub, fan_out};
use crate::room::{Room, RoomInfo, RoomState, new_epoch};

/// Shards of the per-room subscription guard.
const GUARD_SHARDS: usize = 64;

/// What the cluster knows about a room.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPosition {
    /// The room's epoch; `None` when the broker keeps no epochs.
    pub epoch: Option<String>,
    /// The room's latest offset.
    pub offset: u64,
    /// The newest messages, oldest first (with the connections each one skips).
    pub messages: Vec<Envelope>,
    /// Members on other nodes.
    pub remote_members: Vec<RemoteMember>,
    /// The room's parameters as the cluster last saw them set.
    pub params: Vec<ParamState>,
}

/// A room this node served alone while the broker was unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The newest offset this node's members saw.
    pub floor: u64,
    /// The room's epoch when the node began serving it alone.
    pub left_epoch: String,
}

/// A member of a room connected to another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteMember {
    pub node: String,
    pub member: Member,
}

/// What a presence change did cluster-wide: whether it changed anything (a join of a
/// member already announced does not), and the room's members and the client's members
/// in the room on every node after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceCounts {
    /// The join was refused: the room is at its `limit`.
    pub refused: bool,
    pub changed: bool,
    pub room_members: usize,
    pub client_members: usize,
}

/// A local member joined or left a room; the other nodes tell their members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub node: String,
    pub room: String,
    pub joined: bool,
    pub member: Member,
    /// A join refused when the room already has this many members on every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A room event without an offset raised on one node (a parameter defined or set, a
/// trigger): the other nodes serving the room update their parameters and pass the
/// message to their members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSignal {
    pub node: String,
    pub room: String,
    /// Parameters to define or overwrite (and to keep for nodes joining the room later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamState>,
    /// What the room's members get (`update`, `trigger`); `None` to only share the
    /// parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ServerMessage>,
}

/// Something a node asks another node to do to connections or rooms it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum NodeCommand {
    /// `direct` to a connection id, or to every connection of a client id.
    Direct {
        to: String,
        from: String,
        connection_id: Option<String>,
        data: Value,
        ts: i64,
    },
    /// Close a connection.
    Disconnect {
        connection_id: String,
        code: u16,
        reason: String,
    },
    /// Server-side join (no code needed); the outcome goes back to `reply_to`.
    Join {
        connection_id: String,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<ReplyTo>,
    },
    /// Server-side leave; the outcome goes back to `reply_to`.
    Leave {
        connection_id: String,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<ReplyTo>,
    },
    /// The outcome of a command that asked for one.
    Done {
        request: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<CommandError>,
    },
    /// A room was created explicitly on some node: a node holding a copy of that id
    /// (made by a join before the room was defined) takes the definition.
    RoomDefined { room: Box<RoomInfo> },
    /// `event` to every protocol connection but those listed.
    Broadcast {
        name: String,
        data: Value,
        except: Vec<String>,
    },
    /// Close a room: its members get `closed`.
    CloseRoom { room: String, reason: String },
}

/// Where the outcome of a command goes: the asking node and its request number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyTo {
    pub node: String,
    pub request: u64,
}

/// Why a command failed on the node that ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

/// Missed messages fetched at once when a node catches up, at most (older ones are
/// reported as a gap).
const MAX_FILL: u64 = 10_000;

/// How long a node waits for another node to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

type PendingReplies = HashMap<u64, oneshot::Sender<Result<(), HubError>>>;

/// The hub's cluster bookkeeping (empty and unused without a broker).
pub(crate) struct ClusterState {
    guards: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Room → connection id → member on another node.
    remote: DashMap<Arc<str>, BTreeMap<String, RemoteMember>>,
    /// Rooms served alone while the broker was unreachable, with the epoch they left.
    diverged: Mutex<HashMap<Arc<str>, String>>,
    /// Rooms whose parameters changed here while the broker was unreachable.
    unshared: Mutex<HashSet<Arc<str>>>,
    /// Commands sent to other nodes whose outcome this node waits for.
    pending: Mutex<PendingReplies>,
    next_request: AtomicU64,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            guards: (0..GUARD_SHARDS)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            remote: DashMap::new(),
            diverged: Mutex::new(HashMap::new()),
            unshared: Mutex::new(HashSet::new()),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        }
    }
}

impl ClusterState {
    fn guard(&self, room: &str) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        let i = (h.finish() as usize) % self.guards.len();
        self.guards[i].clone()
    }

    /// Members of `room` on other nodes.
    pub(crate) fn remote_members(&self, room: &str) -> Vec<Member> {
        self.remote
            .get(room)
            .map(|m| m.values().map(|r| r.member.clone()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn remote_count(&self, room: &str) -> usize {
        self.remote.get(room).map_or(0, |m| m.len())
    }
}

impl Hub {
    /// The cluster broker, if one is plugged in.
    pub(crate) fn broker(&self) -> Option<Arc<dyn Broker>> {
        self.inner.broker.read().clone()
    }

    /// In a cluster: whether the broker can deliver now, and how many messages from
    /// other nodes this node dropped so far (for metrics). `None` alone.
    pub fn cluster_status(&self) -> Option<(bool, u64)> {
        let broker = self.broker()?;
        Some((broker.is_ready(), broker.dropped_messages()))
    }

    /// Called before a member is added to `room`: makes sure this node is subscribed
    /// and, if it had no member there yet, takes the cluster's view of the room. The
    /// guard must be held until the member is in the room.
    pub(crate) async fn cluster_enter(&self, room: &Arc<Room>) -> Option<OwnedMutexGuard<()>> {
        let broker = self.broker()?;
        let guard = self.inner.cluster.guard(room.id()).lock_owned().await;
        if room.lock().members.is_empty() {
            if let Err(e) = broker.subscribe(room.id()).await {
                tracing::warn!(room = room.id(), error = %e, "broker subscribe failed");
            }
            self.sync_room(&broker, room).await;
        }
        Some(guard)
    }

    /// Called after the last local member left `room` (or it closed): unsubscribes,
    /// unless a member came back meanwhile.
    pub(crate) async fn cluster_release(&self, room_id: &str) {
        let Some(broker) = self.broker() else { return };
        let _guard = self.inner.cluster.guard(room_id).lock_owned().await;
        if self
            .room(room_id)
            .is_some_and(|r| !r.lock().members.is_empty())
        {
            return;
        }
        if let Err(e) = broker.unsubscribe(room_id).await {
            tracing::warn!(room = room_id, error = %e, "broker unsubscribe failed");
        }
        self.inner.cluster.remote.remove(room_id);
    }

    /// Tells the other nodes a local member joined or left `room`; with `endpoint` (the
    /// member's connection's), also reports the cluster-wide lifecycle transitions this
    /// change made (first or last member of the room, of the client in the room).
    pub(crate) async fn cluster_presence(
        &self,
        room: &str,
        member: Member,
        joined: bool,
        endpoint: Option<&str>,
    ) {
        let Some(broker) = self.broker() else { return };
        let change = PresenceChange {
            node: self.node_id().to_owned(),
            room: room.to_owned(),
            joined,
            member: member.clone(),
            limit: None,
        };
        match broker.presence(change).await {
            Ok(Some(counts)) if endpoint.is_some() => {
                self.cluster_lifecycle(room, &member, joined, counts, endpoint);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(room, error = %e, "presence change not shared with the cluster");
            }
        }
    }

    /// A new member of `room` takes its place in the broker before it is added here:
    /// the broker refuses it when the room has `limit` members on every node
    /// (`ROOM_FULL`), else announces it. Returns the room's members on every node, or
    /// `None` when the broker does not count or cannot be reached (the caller then
    /// checks the limit itself and announces the member afterwards).
    pub(crate) async fn cluster_reserve(
        &self,
        room: &str,
        member: Member,
        limit: usize,
        endpoint: &str,
    ) -> HubResult<Option<usize>> {
        let Some(broker) = self.broker() else {
            return Ok(None);
        };
        let change = PresenceChange {
            node: self.node_id().to_owned(),
            room: room.to_owned(),
            joined: true,
            member: member.clone(),
            limit: Some(limit),
        };
        match broker.presence(change).await {
            Ok(Some(counts)) if counts.refused => Err(HubError::new(
                ErrorCode::RoomFull,
                format!("room `{room}` is full ({limit} members)"),
            )),
            Ok(Some(counts)) => {
                self.cluster_lifecycle(room, &member, true, counts, Some(endpoint));
                Ok(Some(counts.room_members))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(room, error = %e, "cannot reserve a place in the cluster");
                Ok(None)
            }
        }
    }

    /// Tells the membership observer what a presence change did cluster-wide (see
    /// [`crate::Membership::ClusterRoom`]). Called by the node that made the change, or
    /// by the broker for members of a dead node it removed.
    pub fn cluster_lifecycle(
        &self,
        room: &str,
        member: &Member,
        joined: bool,
        counts: PresenceCounts,
        endpoint: Option<&str>,
    ) {
        if !counts.changed {
            return;
        }
        use crate::events::Membership;
        let events = &self.inner.events;
        if joined && counts.room_members == 1 {
            events.membership(Membership::ClusterRoom {
                room,
                occupied: true,
                member,
                endpoint,
            });
        }
        if counts.client_members == usize::from(joined) {
            events.membership(Membership::ClusterMember {
                room,
                joined,
                member,
                endpoint,
            });
        }
        if !joined && counts.room_members == 0 {
            events.membership(Membership::ClusterRoom {
                room,
                occupied: false,
                member,
                endpoint,
            });
        }
    }

    /// Shares parameters and/or a room event with the other nodes serving `room`.
    pub(crate) async fn cluster_signal(
        &self,
        room: &str,
        params: Vec<ParamState>,
        message: Option<ServerMessage>,
    ) {
        let Some(broker) = self.broker() else { return };
        let signal = RoomSignal {
            node: self.node_id().to_owned(),
            room: room.to_owned(),
            params,
            message,
        };
        let shares_params = !signal.params.is_empty();
        if let Err(e) = broker.signal(signal).await {
            tracing::warn!(room, error = %e, "room event not shared with the cluster");
            if shares_params {
                // Shared again at the resynchronisation, before the cluster's values
                // are read back, so the change made during the outage is not lost.
                self.inner.cluster.unshared.lock().insert(room.into());
            }
        }
    }

    /// A parameter change or trigger from another node: updates the room's parameters
    /// and tells local members, as if it had been raised here.
    pub fn apply_signal(&self, signal: RoomSignal) {
        if signal.node == self.node_id() {
            return;
        }
        let Some(room) = self.room(&signal.room) else {
            return;
        };
        if !signal.params.is_empty() {
            let changed = {
                let mut st = room.lock();
                let changed = merge_params(&mut st, signal.params);
                if signal.message.is_none() {
                    // Values shared without a message (a room definition, a node back
                    // from an outage): members still learn what changed.
                    announce_params(&st, room.id(), &changed);
                }
                (!changed.is_empty() && st.durable).then_some(())
            };
            if changed.is_some() {
                let hub = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = hub.persist_params(&room).await {
                        tracing::warn!(room = room.id(), error = %e, "cannot keep parameters from the cluster");
                    }
                });
            }
        }
        if let Some(msg) = signal.message {
            // The realtime queue of every node sees the room's parameters and triggers
            // (the `HubEvent` stream reports only what happened on this node).
            match &msg {
                ServerMessage::Update {
                    room,
                    param,
                    value,
                    at,
                    ..
                } => self.emit_rt(crate::events::RtKind::Param, room, param, *value, *at),
                ServerMessage::Trigger { room, name, at, .. } => {
                    self.emit_rt(crate::events::RtKind::Trigger, room, name, 0.0, Some(*at));
                }
                _ => {}
            }
            if let Some(room) = self.room(&signal.room) {
                self.room_event(&room, msg);
            }
        }
    }

    /// Takes the cluster's position of `room` (rotating its epoch first if this node
    /// served it alone during an outage).
    async fn sync_room(&self, broker: &Arc<dyn Broker>, room: &Arc<Room>) {
        // Taken, not read: of concurrent resynchronisations only one hands the messages
        // served alone to the cluster.
        let left_epoch = self.inner.cluster.diverged.lock().remove(room.id());
        let diverged = left_epoch.is_some();
        let (limit, divergence, alone) = {
            let st = room.lock();
            // History was cleared when the room diverged: what it holds now is what
            // this node served alone.
            let alone = if diverged {
                st.latest(st.history.len())
            } else {
                Vec::new()
            };
            let divergence = left_epoch.clone().map(|left_epoch| Divergence {
                floor: st.offset,
                left_epoch,
            });
            (st.history_size.max(1), divergence, alone)
        };
        match broker.position(room.id(), limit, divergence.as_ref()).await {
            Ok(Some(mut pos)) => {
                self.fill_missed(broker, room, &mut pos).await;
                self.apply_position(room, pos);
                if !alone.is_empty() {
                    self.share_alone(broker, room, alone).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(epoch) = left_epoch {
                    self.inner
                        .cluster
                        .diverged
                        .lock()
                        .insert(room.id_arc().clone(), epoch);
                }
                tracing::warn!(room = room.id(), error = %e, "cannot read the room's cluster state");
            }
        }
    }

    /// After an outage: the messages this node's members got while the room was served
    /// here alone go to the cluster, numbered in the room's new epoch, so members on
    /// other nodes get them too (this node's current members, who have them, are
    /// skipped). Nothing published during an outage is lost for members who stayed
    /// connected; those who recover across it get `recovered_complete: false`, since
    /// the offsets changed.
    async fn share_alone(
        &self,
        broker: &Arc<dyn Broker>,
        room: &Room,
        alone: Vec<switchboard_protocol::RoomMessage>,
    ) {
        let except: Vec<String> = room
            .lock()
            .members
            .keys()
            .map(|id| id.to_string())
            .collect();
        let count = alone.len();
        for mut message in alone {
            message.offset = room.lock().offset;
            let envelope = Envelope {
                message,
                except: except.clone(),
                epoch: String::new(),
            };
            if let Err(e) = broker.publish(envelope).await {
                tracing::warn!(room = room.id(), error = %e, "messages served alone not shared with the cluster");
                return;
            }
        }
        tracing::info!(
            room = room.id(),
            messages = count,
            "messages served alone during the outage shared with the cluster"
        );
    }

    /// Members here missed more than the newest messages a position carries (this node
    /// was cut off, or fell behind, for a while): fetches the older missed ones too, as
    /// far as the broker still has them, so that only what is really gone is a gap.
    async fn fill_missed(&self, broker: &Arc<dyn Broker>, room: &Room, pos: &mut ClusterPosition) {
        let at = {
            let st = room.lock();
            if st.members.is_empty() || pos.epoch.as_deref() != Some(st.epoch.as_str()) {
                return;
            }
            st.offset
        };
        let first = pos
            .messages
            .first()
            .map_or(pos.offset + 1, |m| m.message.offset);
        if pos.offset <= at || first <= at + 1 {
            return;
        }
        let to = first - 1;
        let from = (at + 1).max(to.saturating_sub(MAX_FILL - 1));
        match broker.messages_between(room.id(), from, to).await {
            Ok(mut older) => {
                older.retain(|e| pos.epoch.as_deref() == Some(e.epoch.as_str()));
                older.append(&mut pos.messages);
                pos.messages = older;
            }
            Err(e) => tracing::warn!(room = room.id(), error = %e, "cannot fetch missed messages"),
        }
    }

    /// Brings the local room in line with the cluster's view of it.
    fn apply_position(&self, room: &Arc<Room>, pos: ClusterPosition) {
        let mut st = room.lock();
        self.replace_remote_members(room.id(), &st, pos.remote_members);
        let changed = merge_params(&mut st, pos.params);
        announce_params(&st, room.id(), &changed);
        let Some(epoch) = pos.epoch else { return };
        if st.members.is_empty() {
            // Nobody here has seen anything of this room: take it as it is.
            st.epoch = epoch;
            st.offset = pos.offset;
            st.assigned = pos.offset;
            st.history.clear();
            for env in pos.messages {
                st.remember(SharedFrame::new(ServerMessage::Message(env.message)));
            }
            return;
        }
        if st.epoch != epoch {
            // A new epoch (the broker lost its data, or some node served the room alone):
            // offsets carry on above what members saw; recovery across it is incomplete.
            // None of its messages reached this node's members yet (a live one would
            // have moved the room to it): they get those above what they saw, such as
            // what another node served alone during the outage.
            st.epoch = epoch;
            st.history.clear();
            for env in pos.messages {
                if env.message.offset > st.offset {
                    st.offset = env.message.offset;
                    fan_out(room, &mut st, env.message, &env.except);
                }
            }
            st.offset = st.offset.max(pos.offset);
            st.assigned = st.offset;
            return;
        }
        if pos.offset <= st.offset {
            return;
        }
        // Same epoch, messages missed while the subscription was down: deliver what
        // history still has, in order, and report the rest as a gap.
        for env in pos.messages {
            if env.message.offset <= st.offset {
                continue;
            }
            if env.message.offset > st.offset + 1 {
                send_gap(&st, room.id(), st.offset + 1, env.message.offset - 1);
            }
            st.offset = env.message.offset;
            st.assigned = st.assigned.max(st.offset);
            fan_out(room, &mut st, env.message, &env.except);
        }
        if pos.offset > st.offset {
            send_gap(&st, room.id(), st.offset + 1, pos.offset);
            st.offset = pos.offset;
            st.assigned = st.assigned.max(st.offset);
        }
    }

    /// Replaces the cached remote members of a room; members that appeared or vanished
    /// meanwhile are announced to the local members.
    fn replace_remote_members(&self, room: &str, st: &RoomState, fresh: Vec<RemoteMember>) {
        let me = self.node_id();
        let fresh: BTreeMap<String, RemoteMember> = fresh
            .into_iter()
            .filter(|r| r.node != me)
            .map(|r| (r.member.connection_id.clone(), r))
            .collect();
        let old = self
            .inner
            .cluster
            .remote
            .insert(room.into(), fresh.clone())
            .unwrap_or_default();
        if st.members.is_empty() {
            return;
        }
        for (id, r) in &old {
            if !fresh.contains_key(id) {
                presence_notice(st, room, r.member.clone(), false);
            }
        }
        for (id, r) in &fresh {
            if !old.contains_key(id) {
                presence_notice(st, room, r.member.clone(), true);
            }
        }
    }

    /// A presence change from another node: updates the cache and tells local members.
    pub fn apply_presence(&self, change: PresenceChange) {
        if change.node == self.node_id() {
            return;
        }
        let Some(room) = self.room(&change.room) else {
            return;
        };
        let st = room.lock();
        let changed = {
            let mut entry = self
                .inner
                .cluster
                .remote
                .entry(room.id_arc().clone())
                .or_default();
            let id = change.member.connection_id.clone();
            if change.joined {
                entry
                    .insert(
                        id,
                        RemoteMember {
                            node: change.node.clone(),
                            member: change.member.clone(),
                        },
                    )
                    .is_none()
            } else {
                entry.remove(&id).is_some()
            }
        };
        if changed {
            presence_notice(&st, &change.room, change.member, change.joined);
        }
    }

    /// Where a room stands on this node: its epoch and latest offset.
    pub fn room_cursor(&self, room: &str) -> Option<(String, u64)> {
        let r = self.room(room)?;
        let st = r.lock();
        Some((st.epoch.clone(), st.offset))
    }

    /// Tells every local member of `room` that `from..=to` will not reach them, and moves
    /// the room past it.
    pub fn mark_gap(&self, room: &str, from: u64, to: u64) {
        let Some(r) = self.room(room) else { return };
        let mut st = r.lock();
        if to <= st.offset {
            return;
        }
        send_gap(&st, room, from.max(st.offset + 1), to);
        st.offset = to;
        st.assigned = st.assigned.max(to);
    }

    /// True when `room` was served alone while the broker was unreachable.
    pub fn is_diverged(&self, room: &str) -> bool {
        self.inner.cluster.diverged.lock().contains_key(room)
    }

    /// After the broker was unreachable: re-reads the cluster's view of every room with
    /// local members (missed messages, remote members, epochs), re-announces the local
    /// members and connections (the broker may have lost them).
    pub async fn cluster_resync(&self) {
        let Some(broker) = self.broker() else { return };
        // Parameters changed here during the outage go out first, so that reading the
        // rooms back below does not overwrite them with older values.
        let unshared: Vec<Arc<str>> = self.inner.cluster.unshared.lock().drain().collect();
        for id in unshared {
            if let Some(room) = self.room(&id) {
                let params = room.lock().params.clone();
                self.cluster_signal(&id, params, None).await;
            }
        }
        let rooms: Vec<Arc<Room>> = self
            .inner
            .rooms
            .iter()
            .filter(|r| !r.lock().members.is_empty())
            .map(|r| r.clone())
            .collect();
        for room in rooms {
            let members: Vec<Member> = room
                .lock()
                .members
                .values()
                .map(crate::room::MemberEntry::member)
                .collect();
            for m in members {
                // Re-announced, not new: no lifecycle event.
                self.cluster_presence(room.id(), m, true, None).await;
            }
            self.sync_room(&broker, &room).await;
        }
        for c in self.inner.connections.iter() {
            broker.connection_changed(&c.info(), true);
        }
        // Definitions of explicitly created rooms, in case the broker lost them (a
        // definition still there, or a room defined again elsewhere, is left alone).
        let defined: Vec<RoomInfo> = self
            .inner
            .rooms
            .iter()
            .filter(|r| !r.lock().auto_created)
            .map(|r| r.info())
            .collect();
        for info in defined {
            if let Err(e) = broker.define_room(&info).await {
                tracing::warn!(room = info.id, error = %e, "cannot share a room definition again");
            }
        }
    }

    /// In a cluster, brings a room this node serves no member of up to date (its copy
    /// is not kept current without a subscription), e.g. before answering a REST
    /// history request. Nothing to do alone or when the room has local members.
    pub async fn cluster_refresh(&self, room: &str) {
        let Some(broker) = self.broker() else { return };
        let Ok(Some(r)) = self.find_room_anywhere(room).await else {
            return;
        };
        let _guard = self.inner.cluster.guard(room).lock_owned().await;
        if r.lock().members.is_empty() {
            self.sync_room(&broker, &r).await;
        }
    }

    /// Re-reads the cluster's view of one room (used when a broker notices the room
    /// diverged or missed messages).
    pub async fn resync_room(&self, room: &str) {
        let (Some(broker), Some(r)) = (self.broker(), self.room(room)) else {
            return;
        };
        self.sync_room(&broker, &r).await;
    }

    /// Publishing while the broker is unreachable: a room with local members is served
    /// by this node alone, under a new local epoch; other rooms refuse the publish.
    pub(crate) fn diverge(&self, room: &Room, why: &crate::broker::BrokerError) -> HubResult<()> {
        let mut st = room.lock();
        if st.members.is_empty() {
            return Err(HubError::new(
                switchboard_protocol::ErrorCode::Internal,
                format!("cluster unavailable, message not delivered: {why}"),
            ));
        }
        let mut diverged = self.inner.cluster.diverged.lock();
        if !diverged.contains_key(room.id()) {
            diverged.insert(room.id_arc().clone(), st.epoch.clone());
            tracing::warn!(room = room.id(), error = %why, "broker unreachable: serving the room on this node alone");
            st.epoch = new_epoch();
            st.history.clear();
            if st.assigned > st.offset {
                // Messages this node had numbered by the broker that never came back
                // through it: the members will not get them.
                send_gap(&st, room.id(), st.offset + 1, st.assigned);
                st.offset = st.assigned;
            }
        }
        Ok(())
    }

    /// Runs a command another node sent to this one, on local connections and rooms only.
    pub async fn apply_command(&self, cmd: NodeCommand) {
        let result = match cmd {
            NodeCommand::Direct {
                to,
                from,
                connection_id,
                data,
                ts,
            } => {
                let targets = match self.connection(&to) {
                    Some(c) => vec![c],
                    None => self.client_connections(&to),
                };
                let frame = Payload::Msg(SharedFrame::new(ServerMessage::Direct {
                    from,
                    connection_id,
                    data,
                    ts,
                }));
                for t in targets {
                    t.send(frame.clone());
                }
                Ok(())
            }
            NodeCommand::Disconnect {
                connection_id,
                code,
                reason,
            } => self.disconnect_local(&connection_id, code, &reason),
            NodeCommand::Join {
                connection_id,
                room,
                reply_to,
            } => {
                let r = self.join_local(&connection_id, &room).await;
                self.reply(reply_to, &r).await;
                r
            }
            NodeCommand::Leave {
                connection_id,
                room,
                reply_to,
            } => {
                let r = self.leave_local(&connection_id, &room).await;
                self.reply(reply_to, &r).await;
                r
            }
            NodeCommand::Done { request, error } => {
                let waiter = self.inner.cluster.pending.lock().remove(&request);
                if let Some(tx) = waiter {
                    let _ = tx.send(match error {
                        None => Ok(()),
                        Some(e) => Err(HubError::new(e.code, e.message)),
                    });
                }
                Ok(())
            }
            NodeCommand::RoomDefined { room } => {
                self.apply_definition(&room);
                Ok(())
            }
            NodeCommand::Broadcast { name, data, except } => {
                self.broadcast_local(&name, data, &except);
                Ok(())
            }
            NodeCommand::CloseRoom { room, reason } => {
                if self.room(&room).is_some() {
                    self.close_room_local(&room, &reason).await
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "command from another node not applied");
        }
    }

    /// Sends `cmd` to the nodes holding `target` (a connection or client id); false when
    /// no node has it.
    pub(crate) async fn route(&self, target: &str, cmd: NodeCommand) -> HubResult<bool> {
        let Some(broker) = self.broker() else {
            return Ok(false);
        };
        let nodes = broker.locate(target).await.map_err(unavailable)?;
        for node in &nodes {
            broker
                .command(Some(node), cmd.clone())
                .await
                .map_err(unavailable)?;
        }
        Ok(!nodes.is_empty())
    }

    /// Sends a command built by `make` to the node holding connection `target` and waits
    /// for its outcome. `Ok(false)` when no other node holds it.
    pub(crate) async fn route_and_wait(
        &self,
        target: &str,
        make: impl FnOnce(ReplyTo) -> NodeCommand,
    ) -> HubResult<bool> {
        let Some(broker) = self.broker() else {
            return Ok(false);
        };
        let nodes = broker.locate(target).await.map_err(unavailable)?;
        let Some(node) = nodes.into_iter().next() else {
            return Ok(false);
        };
        let request = self
            .inner
            .cluster
            .next_request
            .fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.cluster.pending.lock().insert(request, tx);
        let cmd = make(ReplyTo {
            node: self.node_id().to_owned(),
            request,
        });
        let outcome = async {
            broker
                .command(Some(&node), cmd)
                .await
                .map_err(unavailable)?;
            match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                _ => Err(HubError::new(
                    ErrorCode::Internal,
                    format!("node `{node}` did not answer within {COMMAND_TIMEOUT:?}"),
                )),
            }
        }
        .await;
        self.inner.cluster.pending.lock().remove(&request);
        outcome.map(|()| true)
    }

    /// Sends the outcome of a command to the node that asked for it.
    async fn reply(&self, to: Option<ReplyTo>, outcome: &HubResult<()>) {
        let (Some(to), Some(broker)) = (to, self.broker()) else {
            return;
        };
        let done = NodeCommand::Done {
            request: to.request,
            error: outcome.as_ref().err().map(|e| CommandError {
                code: e.code,
                message: e.message.clone(),
            }),
        };
        if let Err(e) = broker.command(Some(&to.node), done).await {
            tracing::warn!(node = to.node, error = %e, "cannot answer a command");
        }
    }

    // ---- room definitions ------------------------------------------------------------

    /// A room by id, on this node or defined on another one (then made here from its
    /// definition). `Ok(None)`: no such room anywhere. Fails only when the cluster
    /// cannot be asked: a room with a code must never be taken for an unknown one.
    pub async fn find_room(&self, id: &str) -> HubResult<Option<Arc<Room>>> {
        if let Some(r) = self.room(id) {
            return Ok(Some(r));
        }
        let Some(broker) = self.broker() else {
            return Ok(None);
        };
        match broker.room_definition(id).await {
            Ok(Some(def)) => Ok(Some(self.room_from_definition(def).await)),
            Ok(None) => Ok(None),
            Err(e) => Err(HubError::new(
                ErrorCode::Internal,
                format!("cluster unavailable, cannot look room `{id}` up: {e}"),
            )),
        }
    }

    /// For the REST API: like [`Hub::find_room`], and also a room made by a join on
    /// another node (it has members somewhere but no definition), of which this node
    /// then holds a copy with default settings, dropped again when it has stayed empty
    /// for the grace period.
    pub(crate) async fn find_room_anywhere(&self, id: &str) -> HubResult<Option<Arc<Room>>> {
        if let Some(r) = self.find_room(id).await? {
            return Ok(Some(r));
        }
        let Some(broker) = self.broker() else {
            return Ok(None);
        };
        let elsewhere = broker
            .member_counts(&[id.to_owned()])
            .await
            .map_err(unavailable)?
            .and_then(|c| c.first().copied())
            .unwrap_or(0);
        if elsewhere == 0 || !switchboard_protocol::room_id::is_valid(id) {
            return Ok(None);
        }
        // Default settings: this copy only carries REST requests until a member joins.
        let room = self.auto_room(id, &crate::EndpointRules::new("/"));
        Ok(Some(room))
    }

    /// Makes this node's copy of a room defined on another node.
    async fn room_from_definition(&self, def: RoomInfo) -> Arc<Room> {
        let key: Arc<str> = def.id.as_str().into();
        let mut made = false;
        let room = self
            .inner
            .rooms
            .entry(key.clone())
            .or_insert_with(|| {
                made = true;
                Room::new(key, RoomState::from_definition(&def))
            })
            .clone();
        if made && def.durable {
            // This node's store keeps the room too, so that it is restored here.
            if let Err(e) = self.inner.store.save_room(&room.info()).await {
                tracing::warn!(room = room.id(), error = %e, "cannot keep a cluster room in the store");
            }
        }
        room
    }

    /// Another node defined a room this node may hold a copy of (made by a join before
    /// the definition existed): the copy takes the definition's settings.
    fn apply_definition(&self, def: &RoomInfo) {
        if let Some(room) = self.room(&def.id) {
            room.lock().take_definition(def);
        }
    }

    /// Shares the definition of a room just created here. Fails when the cluster
    /// already has a room of that id or cannot be reached.
    pub(crate) async fn cluster_define(&self, info: &RoomInfo) -> HubResult<()> {
        let Some(broker) = self.broker() else {
            return Ok(());
        };
        match broker.define_room(info).await {
            Ok(true) => {
                self.tell_all(NodeCommand::RoomDefined {
                    room: Box::new(info.clone()),
                });
                Ok(())
            }
            Ok(false) => Err(HubError::new(
                ErrorCode::BadRequest,
                format!("room `{}` already exists", info.id),
            )),
            Err(e) => Err(HubError::new(
                ErrorCode::Internal,
                format!("cluster unavailable, room not created: {e}"),
            )),
        }
    }

    /// Every room: this node's, and those defined on other nodes, with members counted
    /// on every node.
    pub async fn list_rooms(&self) -> Vec<RoomInfo> {
        let mut rooms = self.rooms();
        let Some(broker) = self.broker() else {
            return rooms;
        };
        match broker.room_definitions().await {
            Ok(defs) => {
                let known: HashSet<String> = rooms.iter().map(|r| r.id.clone()).collect();
                rooms.extend(defs.into_iter().filter(|d| !known.contains(&d.id)));
            }
            Err(e) => tracing::warn!(error = %e, "cannot list the cluster's rooms"),
        }
        let ids: Vec<String> = rooms.iter().map(|r| r.id.clone()).collect();
        match broker.member_counts(&ids).await {
            Ok(Some(counts)) => {
                for (r, n) in rooms.iter_mut().zip(counts) {
                    r.members_count = n;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot count the cluster's members"),
        }
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// A room's description, wherever it was defined, with members of every node.
    pub async fn find_room_info(&self, id: &str) -> HubResult<Option<RoomInfo>> {
        let Some(room) = self.find_room_anywhere(id).await? else {
            return Ok(None);
        };
        let mut info = room.info();
        if let Some(broker) = self.broker() {
            match broker.member_counts(&[info.id.clone()]).await {
                Ok(Some(counts)) => info.members_count = counts.first().copied().unwrap_or(0),
                Ok(None) => info.members_count += self.inner.cluster.remote_count(id),
                Err(e) => {
                    tracing::warn!(room = id, error = %e, "cannot count the cluster's members")
                }
            }
        }
        Ok(Some(info))
    }

    /// A room's members on every node.
    pub async fn room_members(&self, id: &str) -> HubResult<Option<Vec<Member>>> {
        if self.find_room_anywhere(id).await?.is_none() {
            return Ok(None);
        }
        self.cluster_refresh(id).await;
        let Some(room) = self.room(id) else {
            return Ok(None);
        };
        let st = room.lock();
        let (members, _, _) = self.presence_page(id, &st, None, usize::MAX);
        Ok(Some(members))
    }

    /// Sends `cmd` to every other node, in the background.
    pub(crate) fn tell_all(&self, cmd: NodeCommand) {
        let Some(broker) = self.broker() else { return };
        tokio::spawn(async move {
            if let Err(e) = broker.command(None, cmd).await {
                tracing::warn!(error = %e, "command not sent to the other nodes");
            }
        });
    }

    /// Connections of the other nodes (none without a broker).
    pub(crate) async fn remote_connections(&self) -> Vec<ConnectionInfo> {
        let Some(broker) = self.broker() else {
            return Vec::new();
        };
        broker.remote_connections().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the other nodes' connections");
            Vec::new()
        })
    }

    /// Tells the broker a local connection opened or closed.
    pub(crate) fn cluster_connection(&self, conn: &crate::Connection, open: bool) {
        if let Some(b) = self.broker() {
            b.connection_changed(&conn.info(), open);
        }
    }

    /// One page of a room's members on every node, in connection-id order.
    pub(crate) fn presence_page(
        &self,
        room: &str,
        st: &RoomState,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<Member>, usize, Option<String>) {
        let remote = self.inner.cluster.remote.get(room);
        let empty = BTreeMap::new();
        let remote = remote.as_deref().unwrap_or(&empty);
        let after = |id: &str| cursor.is_none_or(|c| id > c);
        let mut all: Vec<(String, Member)> = st
            .members
            .iter()
            .filter(|(id, _)| after(id))
            .map(|(id, m)| (id.to_string(), m.member()))
            .chain(
                remote
                    .iter()
                    .filter(|(id, _)| after(id) && !st.members.contains_key(id.as_str()))
                    .map(|(id, r)| (id.clone(), r.member.clone())),
            )
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let count = st.members.len() + remote.len();
        let next_cursor = if all.len() > limit {
            all.truncate(limit);
            all.last().map(|(id, _)| id.clone())
        } else {
            None
        };
        (
            all.into_iter().map(|(_, m)| m).collect(),
            count,
            next_cursor,
        )
    }
}

/// Defines or overwrites parameters with the cluster's values; returns those whose
/// value changed.
fn merge_params(st: &mut RoomState, params: Vec<ParamState>) -> Vec<ParamState> {
    let mut changed = Vec::new();
    for p in params {
        match st.param_mut(&p.name) {
            Some(mine) if *mine == p => {}
            Some(mine) => {
                if mine.value != p.value {
                    changed.push(p.clone());
                }
                *mine = p;
            }
            None => st.params.push(p),
        }
    }
    changed
}

/// Tells the room's members of parameter values taken from the cluster.
fn announce_params(st: &RoomState, room: &str, changed: &[ParamState]) {
    for p in changed {
        let update = Payload::msg(ServerMessage::Update {
            room: room.to_owned(),
            param: p.name.clone(),
            value: p.value,
            at: None,
            from: "server".into(),
        });
        for m in st.members.values() {
            m.conn.send(update.clone());
        }
    }
}

fn unavailable(e: crate::broker::BrokerError) -> HubError {
    HubError::new(switchboard_protocol::ErrorCode::Internal, e.to_string())
}

fn presence_notice(st: &RoomState, room: &str, member: Member, joined: bool) {
    let msg = if joined {
        ServerMessage::PresenceJoin {
            room: room.to_owned(),
            member,
        }
    } else {
        ServerMessage::PresenceLeave {
            room: room.to_owned(),
            member,
        }
    };
    let notice = Payload::Msg(SharedFrame::new(msg));
    for m in st.members.values() {
        m.conn.send(notice.clone());
    }
}

fn send_gap(st: &RoomState, room: &str, from: u64, to: u64) {
    let notice = Payload::msg(ServerMessage::Gap {
        room: room.to_owned(),
        from_offset: from,
        to_offset: to,
    });
    for m in st.members.values() {
        m.conn.send(notice.clone());
    }
}
