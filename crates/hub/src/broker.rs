//! The `Broker` seam: how a room message reaches the room's members on other nodes.
//!
//! A single process needs no broker: the hub assigns offsets and fans out locally
//! ([`LocalBroker`], the default, does nothing and is always ready). A cluster plugs in a
//! broker (`switchboard-redis`) that forwards each locally published message to every
//! other node subscribed to the room; those nodes hand it to
//! [`crate::Hub::deliver_remote`], which fans it out to their local members.

use async_trait::async_trait;
use switchboard_protocol::RoomMessage;

/// A broker failure.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The backend is unreachable or answered with an error.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Cross-node fan-out.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Forwards a message that was published and delivered on this node.
    async fn publish(&self, message: &RoomMessage) -> Result<(), BrokerError>;
    /// This node now has members in `room`: start receiving its messages.
    async fn subscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// This node has no members left in `room`.
    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError>;
    /// True while the broker can deliver (readiness checks).
    fn is_ready(&self) -> bool;
}

/// The single-process broker: nothing to forward, always ready.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalBroker;

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, _message: &RoomMessage) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn subscribe(&self, _room: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    async fn unsubscribe(&self, _room: &str) -> Result<(), BrokerError> {
        Ok(())
    }
    fn is_ready(&self) -> bool {
        true
    }
}
