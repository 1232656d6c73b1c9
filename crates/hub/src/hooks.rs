//! Hooks: application code that sees — and may veto or rewrite — what clients do.
//!
//! Implement [`Hooks`], say which methods you implemented in [`Hooks::interests`], and
//! register it with [`crate::Hub::set_hooks`]. The hub calls only the methods named in
//! `interests`, so an application that hooks `publish` alone adds nothing to joins, pings
//! or anything else. The server's HTTP webhooks are one more implementation of this trait.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use switchboard_protocol::{ErrorCode, Map};

use crate::connection::Connection;

/// Which hook methods an implementation wants called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet(u16);

impl HookSet {
    pub const CONNECT: HookSet = HookSet(1);
    pub const MESSAGE: HookSet = HookSet(1 << 1);
    pub const DIRECT: HookSet = HookSet(1 << 2);
    pub const JOIN: HookSet = HookSet(1 << 3);
    pub const LEAVE: HookSet = HookSet(1 << 4);
    pub const CLOSE: HookSet = HookSet(1 << 5);
    pub const ERROR: HookSet = HookSet(1 << 6);
    pub const PING: HookSet = HookSet(1 << 7);
    pub const PONG: HookSet = HookSet(1 << 8);
    /// No hooks.
    pub const NONE: HookSet = HookSet(0);

    /// True when every hook of `other` is in `self`.
    pub fn contains(self, other: HookSet) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for HookSet {
    type Output = HookSet;
    fn bitor(self, rhs: HookSet) -> HookSet {
        HookSet(self.0 | rhs.0)
    }
}

/// A hook's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Go on unchanged.
    Allow,
    /// Go on with this `data` instead (publish and direct only; elsewhere like `Allow`).
    Rewrite(Value),
    /// Stop: the client gets this error and nothing is delivered.
    Reject { code: ErrorCode, message: String },
}

impl Decision {
    /// A rejection with code `FORBIDDEN`.
    pub fn forbid(message: impl Into<String>) -> Self {
        Decision::Reject {
            code: ErrorCode::Forbidden,
            message: message.into(),
        }
    }
}

/// A connection asking to be accepted, before the upgrade completes.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub path: String,
    pub client_id: Option<String>,
    pub name: Option<String>,
    pub remote_addr: Option<std::net::SocketAddr>,
    pub meta: Map,
}

/// Application hooks. Every method has a default that allows; list the ones you
/// implement in [`Hooks::interests`].
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// The methods the hub should call.
    fn interests(&self) -> HookSet;

    /// A connection wants in. `Reject` refuses it at the upgrade (HTTP 403).
    async fn on_connect(&self, _req: &ConnectRequest) -> Decision {
        Decision::Allow
    }
    /// A publish to `room`; may rewrite `data`.
    async fn on_message(&self, _conn: &Arc<Connection>, _room: &str, _data: &Value) -> Decision {
        Decision::Allow
    }
    /// A direct message to `to`; may rewrite `data`.
    async fn on_direct(&self, _conn: &Arc<Connection>, _to: &str, _data: &Value) -> Decision {
        Decision::Allow
    }
    /// A join of `room`.
    async fn on_join(&self, _conn: &Arc<Connection>, _room: &str, _meta: Option<&Map>) -> Decision {
        Decision::Allow
    }
    /// A connection left `room` (notification; the verdict is ignored).
    async fn on_leave(&self, _conn: &Arc<Connection>, _room: &str) {}
    /// A connection closed (notification).
    async fn on_close(&self, _conn: &Arc<Connection>, _code: Option<u16>, _reason: &str) {}
    /// A request failed with an error (notification).
    async fn on_error(&self, _conn: &Arc<Connection>, _code: ErrorCode, _message: &str) {}
    /// A protocol `ping` arrived (notification).
    async fn on_ping(&self, _conn: &Arc<Connection>) {}
    /// A WebSocket pong arrived, with the measured round trip (notification).
    async fn on_pong(&self, _conn: &Arc<Connection>, _rtt_ms: Option<u64>) {}
}
