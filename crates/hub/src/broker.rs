//! The `Broker` seam: how a room message is sequenced and reaches the room's members on
//! every node of a cluster.
//!
//! A single process needs no broker: the hub assigns offsets under the room's lock and
//! fans out locally. With a broker (`Hub::set_broker`) the hub hands each publish to
//! [`Broker::publish`], which assigns the room's next offset cluster-wide and delivers the
//! [`Envelope`] to every node subscribed to the room — this one included — where
//! [`crate::Hub::deliver_remote`] fans it out to local members. So every node sees one
//! order and the same offsets.
//!
//! [`MemoryBus`] is the in-process implementation: several hubs in one process sharing
//! rooms, which is how the seam is tested. A Redis implementation of the same trait is
//! what a cluster of processes will use.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::RoomMessage;
use tokio::sync::mpsc;

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
    /// The message; its `offset` is assigned by the broker.
    pub message: RoomMessage,
    /// Connection ids that must not receive it (`exclude_self`, `except`).
    pub except: Vec<String>,
}

/// Cross-node sequencing and fan-out.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the room's next offset and delivers the envelope to every subscribed node.
    /// Returns the offset.
    async fn publish(&self, envelope: Envelope) -> Result<u64, BrokerError>;
    /// This node now has members in `room`: start delivering its messages here.
    async fn subscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// This node has no members left in `room`.
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// True while the broker can deliver (readiness checks).
    fn is_ready(&self) -> bool;
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
}

struct NodeInner {
    rooms: Mutex<HashSet<String>>,
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
            rooms: Mutex::new(HashSet::new()),
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
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, mut envelope: Envelope) -> Result<u64, BrokerError> {
        let mut offsets = self.bus.offsets.lock().await;
        let room = envelope.message.room.clone();
        let next = offsets.entry(room.clone()).or_insert(0);
        *next += 1;
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
}
