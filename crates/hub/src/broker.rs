//! The `Broker` seam: how a room message is sequenced and reaches the room's members on
//! every node of a cluster, and how nodes reach each other's connections.
//!
//! A single process needs no broker: the hub assigns offsets under the room's lock and
//! fans out locally. With a broker (`Hub::set_broker`) the hub hands each publish to
//! [`Broker::publish`], which assigns the room's next offset cluster-wide and delivers the
//! [`Envelope`] to every node subscribed to the room — this one included — where
//! [`crate::Hub::deliver_remote`] fans it out to local members. So every node sees one
//! order and the same offsets.
//!
//! Beyond sequencing, a broker carries what makes several nodes look like one server
//! (see [`crate::cluster`]): the room's position and recent history for a node that
//! starts serving a room ([`Broker::position`]), presence changes, parameter changes and
//! triggers ([`Broker::signal`]), commands for
//! connections held by another node (directs, disconnects, server-side joins, broadcasts,
//! room closes) and the cluster-wide connection list. Every one of those methods has a
//! default that does nothing, so a broker that only sequences stays a few lines long.
//!
//! [`MemoryBus`] is the in-process implementation: several hubs in one process sharing
//! rooms, presence and connections, which is how the seam is tested. `switchboard-redis`
//! implements the same trait over Redis for a cluster of processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::{ParamState, RoomMessage};
use tokio::sync::mpsc;

use crate::cluster::{
    ClusterPosition, Divergence, NodeCommand, PresenceChange, PresenceCounts, RemoteMember,
    RoomSignal,
};
use crate::connection::ConnectionInfo;
use crate::room::RoomInfo;

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backend is unreachable or answered with an error.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A room message travelling between nodes, with the connections it must skip.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The message. Its `offset` is assigned by the broker; on the way in
    /// ([`Broker::publish`]) it holds the newest offset the publishing node has seen, a
    /// floor the broker never hands out an offset at or below (so offsets seen by the
    /// members of a node only ever grow, even after the backend lost its data).
    pub message: RoomMessage,
    /// Connection ids that must not receive it (`exclude_self`, `except`).
    pub except: Vec<String>,
    /// The room's epoch as the broker knows it; empty when the broker keeps no epochs.
    pub epoch: String,
}

/// Cross-node sequencing and fan-out.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the room's next offset and delivers the envelope to every subscribed node.
    /// Returns the offset.
    async fn publish(&self, envelope: Envelope) -> Result<u64, BrokerError>;
    /// This node now has members in `room`: start delivering its messages here. Returns
    /// once messages published from now on will be delivered.
    async fn subscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// This node has no members left in `room`.
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// True while the broker can deliver (readiness checks).
    fn is_ready(&self) -> bool;

    /// Messages from other nodes this node dropped because it fell behind (each time
    /// followed by a resynchronisation), for metrics.
    fn dropped_messages(&self) -> u64 {
        0
    }

    /// The room's epoch, latest offset, newest `limit` messages and members on other
    /// nodes, as the cluster knows them; `None` when the broker keeps no such state.
    /// With `diverged`, this node served the room alone (without the broker): if the
    /// room is still in the epoch the node left, the broker starts a new epoch whose
    /// offsets continue above the node's, so that every client recovering across the
    /// outage learns of the hole; if another node already started one, this node joins
    /// it, its offsets raised above the node's.
    async fn position(
        &self,
        _room: &str,
        _limit: usize,
        _diverged: Option<&Divergence>,
    ) -> Result<Option<ClusterPosition>, BrokerError> {
        Ok(None)
    }

    /// The room's messages with offsets `from..=to` the broker still keeps, oldest
    /// first (empty when it keeps no history).
    async fn messages_between(
        &self,
        _room: &str,
        _from: u64,
        _to: u64,
    ) -> Result<Vec<Envelope>, BrokerError> {
        Ok(Vec::new())
    }

    /// Tells the other nodes that a local member joined or left a room. Returns what
    /// the change did cluster-wide, when the broker counts members.
    async fn presence(
        &self,
        _change: PresenceChange,
    ) -> Result<Option<PresenceCounts>, BrokerError> {
        Ok(None)
    }

    /// Keeps the signal's parameters as the room's current values and passes the signal
    /// to the other nodes serving the room.
    async fn signal(&self, _signal: RoomSignal) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The other nodes holding a connection with this id, or connections of this client
    /// id.
    async fn locate(&self, _target: &str) -> Result<Vec<String>, BrokerError> {
        Ok(Vec::new())
    }

    /// Sends a command to one node, or to every other node when `node` is `None`.
    async fn command(&self, _node: Option<&str>, _cmd: NodeCommand) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The connections held by the other nodes.
    async fn remote_connections(&self) -> Result<Vec<ConnectionInfo>, BrokerError> {
        Ok(Vec::new())
    }

    /// A connection of this node opened (`open`) or closed. Must not wait: called on the
    /// connection's path.
    fn connection_changed(&self, _info: &ConnectionInfo, _open: bool) {}

    /// Keeps the definition of a room created explicitly on this node (its code, limits,
    /// name, meta, expiry) for every node. False when the cluster already has a room of
    /// that id (defined, or with members somewhere).
    async fn define_room(&self, _room: &RoomInfo) -> Result<bool, BrokerError> {
        Ok(true)
    }

    /// The definition of a room created on some node, if any.
    async fn room_definition(&self, _id: &str) -> Result<Option<RoomInfo>, BrokerError> {
        Ok(None)
    }

    /// Every room defined in the cluster, in no particular order.
    async fn room_definitions(&self) -> Result<Vec<RoomInfo>, BrokerError> {
        Ok(Vec::new())
    }

    /// Forgets a room's definition (it was closed). True when the cluster knew the room
    /// (defined, or with members somewhere).
    async fn forget_room(&self, _id: &str) -> Result<bool, BrokerError> {
        Ok(false)
    }

    /// How many members each of `rooms` has on every node, in the same order; `None`
    /// when the broker does not count members.
    async fn member_counts(&self, _rooms: &[String]) -> Result<Option<Vec<usize>>, BrokerError> {
        Ok(None)
    }
}

type NodeList = Vec<(Weak<NodeInner>, mpsc::Sender<Envelope>)>;

/// An in-process message bus connecting several hubs, as Redis connects several nodes.
#[derive(Clone, Default)]
pub struct MemoryBus {
    // An async lock: a publish holds it while it hands the envelope to every node, so
    // each node's channel receives a room's envelopes in offset order even when a
    // channel is full and the send has to wait.
    offsets: Arc<tokio::sync::Mutex<HashMap<String, u64>>>,
    nodes: Arc<Mutex<NodeList>>,
    /// Room → parameter name → its latest value, as shared through [`Broker::signal`].
    params: Arc<Mutex<HashMap<String, BTreeMap<String, ParamState>>>>,
    /// Rooms created explicitly on some node, by id.
    defined: Arc<Mutex<HashMap<String, RoomInfo>>>,
}

struct NodeInner {
    id: String,
    hub: crate::WeakHub,
    rooms: Mutex<HashSet<String>>,
    /// Local members per room, as announced through [`Broker::presence`].
    members: Mutex<HashMap<String, Vec<switchboard_protocol::Member>>>,
}

/// One hub's connection to a [`MemoryBus`].
pub struct MemoryBroker {
    bus: MemoryBus,
    node: Arc<NodeInner>,
}

impl MemoryBus {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects `hub` to the bus: plugs in a broker and starts the task that hands
    /// incoming envelopes to [`crate::Hub::deliver_remote`]. `capacity` bounds the
    /// envelopes waiting for this node; past it the bus waits (backpressure).
    pub fn attach(&self, hub: &crate::Hub, capacity: usize) {
        let node = Arc::new(NodeInner {
            id: hub.node_id().to_owned(),
            hub: hub.downgrade(),
            rooms: Mutex::new(HashSet::new()),
            members: Mutex::new(HashMap::new()),
        });
        let (tx, mut rx) = mpsc::channel::<Envelope>(capacity.max(1));
        self.nodes.lock().push((Arc::downgrade(&node), tx));
        let weak = hub.downgrade();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let Some(hub) = weak.upgrade() else { return };
                hub.deliver_remote(env);
            }
        });
        hub.set_broker(Arc::new(MemoryBroker {
            bus: self.clone(),
            node,
        }));
    }

    /// How many members every node announced in `room`.
    fn member_count(&self, room: &str) -> usize {
        let mut nodes = self.nodes.lock();
        nodes.retain(|(n, _)| n.strong_count() > 0);
        nodes
            .iter()
            .filter_map(|(n, _)| n.upgrade())
            .map(|n| n.members.lock().get(room).map_or(0, Vec::len))
            .sum()
    }

    /// A room's members on every node, and those of one client id.
    fn counts(&self, room: &str, client_id: &str, changed: bool) -> PresenceCounts {
        let mut nodes = self.nodes.lock();
        nodes.retain(|(n, _)| n.strong_count() > 0);
        let (mut room_members, mut client_members) = (0, 0);
        for n in nodes.iter().filter_map(|(n, _)| n.upgrade()) {
            if let Some(list) = n.members.lock().get(room) {
                room_members += list.len();
                client_members += list.iter().filter(|m| m.client_id == client_id).count();
            }
        }
        PresenceCounts {
            refused: false,
            changed,
            room_members,
            client_members,
        }
    }

    /// Every live node except `me`.
    fn others(&self, me: &str) -> Vec<Arc<NodeInner>> {
        let mut nodes = self.nodes.lock();
        nodes.retain(|(n, _)| n.strong_count() > 0);
        nodes
            .iter()
            .filter_map(|(n, _)| n.upgrade())
            .filter(|n| n.id != me)
            .collect()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, mut envelope: Envelope) -> Result<u64, BrokerError> {
        let mut offsets = self.bus.offsets.lock().await;
        let room = envelope.message.room.clone();
        let floor = envelope.message.offset;
        let next = offsets.entry(room.clone()).or_insert(0);
        *next = (*next).max(floor) + 1;
        envelope.message.offset = *next;
        let targets: Vec<_> = {
            let mut nodes = self.bus.nodes.lock();
            nodes.retain(|(n, _)| n.strong_count() > 0);
            nodes
                .iter()
                .filter(|(n, _)| n.upgrade().is_some_and(|n| n.rooms.lock().contains(&room)))
                .map(|(_, tx)| tx.clone())
                .collect()
        };
        for tx in targets {
            // A full channel makes the publisher wait (still holding the sequence
            // lock): backpressure, never loss or reordering.
            let _ = tx.send(envelope.clone()).await;
        }
        Ok(envelope.message.offset)
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        self.node.rooms.lock().insert(room.to_owned());
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        self.node.rooms.lock().remove(room);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn position(
        &self,
        room: &str,
        _limit: usize,
        _diverged: Option<&Divergence>,
    ) -> Result<Option<ClusterPosition>, BrokerError> {
        // The bus keeps no history or epochs; it only shares presence and parameters.
        let remote_members = self
            .bus
            .others(&self.node.id)
            .into_iter()
            .flat_map(|n| {
                let members = n.members.lock().get(room).cloned().unwrap_or_default();
                members.into_iter().map(move |member| RemoteMember {
                    node: n.id.clone(),
                    member,
                })
            })
            .collect::<Vec<_>>();
        let params: Vec<ParamState> = self
            .bus
            .params
            .lock()
            .get(room)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default();
        if remote_members.is_empty() && params.is_empty() {
            return Ok(None);
        }
        Ok(Some(ClusterPosition {
            epoch: None,
            offset: 0,
            messages: Vec::new(),
            remote_members,
            params,
        }))
    }

    async fn presence(
        &self,
        change: PresenceChange,
    ) -> Result<Option<PresenceCounts>, BrokerError> {
        if let Some(limit) = change.limit {
            let here = self.node.members.lock().get(&change.room).is_some_and(|l| {
                l.iter()
                    .any(|m| m.connection_id == change.member.connection_id)
            });
            let counts = self
                .bus
                .counts(&change.room, &change.member.client_id, false);
            if change.joined && !here && counts.room_members >= limit {
                return Ok(Some(PresenceCounts {
                    refused: true,
                    ..counts
                }));
            }
        }
        let changed = {
            let mut members = self.node.members.lock();
            let list = members.entry(change.room.clone()).or_default();
            let before = list.len();
            list.retain(|m| m.connection_id != change.member.connection_id);
            let was_there = list.len() != before;
            if change.joined {
                list.push(change.member.clone());
            }
            was_there != change.joined
        };
        let counts = self
            .bus
            .counts(&change.room, &change.member.client_id, changed);
        for n in self.bus.others(&self.node.id) {
            if let Some(hub) = n.hub.upgrade() {
                hub.apply_presence(change.clone());
            }
        }
        Ok(Some(counts))
    }

    async fn signal(&self, signal: RoomSignal) -> Result<(), BrokerError> {
        if !signal.params.is_empty() {
            let mut params = self.bus.params.lock();
            let room = params.entry(signal.room.clone()).or_default();
            for p in &signal.params {
                room.insert(p.name.clone(), p.clone());
            }
        }
        for n in self.bus.others(&self.node.id) {
            if n.rooms.lock().contains(&signal.room)
                && let Some(hub) = n.hub.upgrade()
            {
                hub.apply_signal(signal.clone());
            }
        }
        Ok(())
    }

    async fn locate(&self, target: &str) -> Result<Vec<String>, BrokerError> {
        Ok(self
            .bus
            .others(&self.node.id)
            .into_iter()
            .filter(|n| {
                n.hub.upgrade().is_some_and(|h| {
                    h.connection(target).is_some() || !h.client_connections(target).is_empty()
                })
            })
            .map(|n| n.id.clone())
            .collect())
    }

    async fn command(&self, node: Option<&str>, cmd: NodeCommand) -> Result<(), BrokerError> {
        for n in self.bus.others(&self.node.id) {
            if node.is_none_or(|id| id == n.id)
                && let Some(hub) = n.hub.upgrade()
            {
                hub.apply_command(cmd.clone()).await;
            }
        }
        Ok(())
    }

    async fn remote_connections(&self) -> Result<Vec<ConnectionInfo>, BrokerError> {
        Ok(self
            .bus
            .others(&self.node.id)
            .into_iter()
            .filter_map(|n| n.hub.upgrade())
            .flat_map(|h| h.local_connections())
            .collect())
    }

    async fn define_room(&self, room: &RoomInfo) -> Result<bool, BrokerError> {
        if self.bus.member_count(&room.id) > 0 {
            return Ok(false);
        }
        let mut defined = self.bus.defined.lock();
        if defined.contains_key(&room.id) {
            return Ok(false);
        }
        defined.insert(room.id.clone(), room.clone());
        Ok(true)
    }

    async fn room_definition(&self, id: &str) -> Result<Option<RoomInfo>, BrokerError> {
        Ok(self.bus.defined.lock().get(id).cloned())
    }

    async fn room_definitions(&self) -> Result<Vec<RoomInfo>, BrokerError> {
        Ok(self.bus.defined.lock().values().cloned().collect())
    }

    async fn forget_room(&self, id: &str) -> Result<bool, BrokerError> {
        let defined = self.bus.defined.lock().remove(id).is_some();
        Ok(defined || self.bus.member_count(id) > 0)
    }

    async fn member_counts(&self, rooms: &[String]) -> Result<Option<Vec<usize>>, BrokerError> {
        Ok(Some(
            rooms.iter().map(|r| self.bus.member_count(r)).collect(),
        ))
    }
}
