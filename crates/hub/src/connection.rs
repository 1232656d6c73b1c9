//! One connection as the hub sees it: an id, who it is, its rooms, and its outbound queue.
//!
//! The hub never touches a socket. A transport (see [`crate::driver`]) feeds frames in
//! through [`crate::Hub::handle_frame`] and writes out what [`Connection::queue`] hands it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Encoding, Map};

use crate::auth::{AuthState, ExpiryStep};
use crate::clock::now_ms;
use crate::endpoint::{ConnectionSlot, EndpointRules};
use crate::frame::Payload;
use crate::queue::{OutQueue, Pushed};

/// What a transport knows about a new connection before the hub accepts it.
#[derive(Debug, Clone, Default)]
pub struct ConnectInfo {
    /// The authenticated subject or the `client_id` query parameter.
    pub client_id: Option<String>,
    /// A display name (`name` query parameter).
    pub name: Option<String>,
    /// The profile for playback sessions (`profile` query parameter).
    pub profile: Option<String>,
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Initial metadata (e.g. from a token's `meta` claim).
    pub meta: Map,
    /// The negotiated encoding.
    pub encoding: Encoding,
    /// Room permissions and token expiry of an authenticated connection.
    pub auth: Option<AuthState>,
}

#[derive(Debug, Default)]
struct State {
    meta: Map,
    /// Joined rooms, sorted. A short sorted Vec rather than a BTreeSet: most
    /// connections are in one or two rooms, and a B-tree leaf costs ~200 bytes each.
    rooms: Vec<Arc<str>>,
    /// Authenticated connections only (boxed: most connections have none).
    auth: Option<Box<AuthState>>,
}

/// A live connection.
#[derive(Debug)]
pub struct Connection {
    id: Arc<str>,
    client_id: Arc<str>,
    name: Option<String>,
    profile: String,
    remote_addr: Option<SocketAddr>,
    encoding: Encoding,
    endpoint: Arc<EndpointRules>,
    created_at: i64,
    last_seen: AtomicI64,
    rtt_ms: AtomicU64,
    registered: std::sync::atomic::AtomicBool,
    /// Frames and bytes received and written; only this connection's task updates them.
    pub(crate) traffic_in: crate::stats::Traffic,
    pub(crate) traffic_out: crate::stats::Traffic,
    state: Mutex<State>,
    queue: OutQueue,
    _slot: Option<ConnectionSlot>,
}

/// A connection's public description (REST `connection` object).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionInfo {
    pub connection_id: String,
    pub client_id: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub name: Option<String>,
    pub path: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub remote_addr: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub meta: Map,
    pub rooms: Vec<String>,
    pub created_at: i64,
    pub last_seen: i64,
}

impl Connection {
    pub(crate) fn new(
        id: Arc<str>,
        info: ConnectInfo,
        endpoint: Arc<EndpointRules>,
        slot: Option<ConnectionSlot>,
    ) -> Self {
        let now = now_ms();
        let client_id: Arc<str> = match info.client_id {
            Some(c) if !c.is_empty() => c.into(),
            _ => id.clone(),
        };
        Connection {
            queue: OutQueue::new(endpoint.queue_size),
            id,
            client_id,
            name: info.name,
            profile: info.profile.unwrap_or_else(|| "default".into()),
            remote_addr: info.remote_addr,
            encoding: info.encoding,
            endpoint,
            created_at: now,
            last_seen: AtomicI64::new(now),
            rtt_ms: AtomicU64::new(u64::MAX),
            registered: Default::default(),
            traffic_in: Default::default(),
            traffic_out: Default::default(),
            state: Mutex::new(State {
                meta: info.meta,
                rooms: Vec::new(),
                auth: info.auth.map(Box::new),
            }),
            _slot: slot,
        }
    }

    /// The connection id, unique across the cluster and never reused.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The client id (several connections may share one).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The display name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The playback profile.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The encoding frames to and from this connection use.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The endpoint this connection came in on.
    pub fn endpoint(&self) -> &Arc<EndpointRules> {
        &self.endpoint
    }

    /// The peer's address, when the transport knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The outbound queue the transport drains.
    pub fn queue(&self) -> &OutQueue {
        &self.queue
    }

    /// Queues one message for this connection.
    pub fn send(&self, payload: Payload) -> Pushed {
        self.queue.push(payload)
    }

    /// Records a sign of life (any frame, ping or pong).
    pub fn touch(&self) {
        self.last_seen.store(now_ms(), Ordering::Relaxed);
    }

    /// When the connection last showed a sign of life, in ms since the epoch.
    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Records the round-trip time measured by a WebSocket ping/pong.
    pub fn set_rtt_ms(&self, rtt: u64) {
        self.rtt_ms.store(rtt, Ordering::Relaxed);
    }

    /// The last measured round-trip time.
    pub fn rtt_ms(&self) -> Option<u64> {
        match self.rtt_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        }
    }

    pub(crate) fn set_registered(&self) {
        self.registered.store(true, Ordering::Relaxed);
    }

    /// True once the connection registered itself for playback.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The connection's metadata.
    pub fn meta(&self) -> Map {
        self.state.lock().meta.clone()
    }

    pub(crate) fn set_meta(&self, meta: Map) {
        self.state.lock().meta = meta;
    }

    /// The rooms this connection is in.
    pub fn rooms(&self) -> Vec<Arc<str>> {
        self.state.lock().rooms.to_vec()
    }

    pub(crate) fn room_count(&self) -> usize {
        self.state.lock().rooms.len()
    }

    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.state
            .lock()
            .rooms
            .binary_search_by(|r| (**r).cmp(room))
            .is_ok()
    }

    pub(crate) fn add_room(&self, room: Arc<str>) {
        let mut state = self.state.lock();
        if let Err(i) = state.rooms.binary_search(&room) {
            state.rooms.insert(i, room);
        }
    }

    pub(crate) fn remove_room(&self, room: &str) -> bool {
        let mut state = self.state.lock();
        match state.rooms.binary_search_by(|r| (**r).cmp(room)) {
            Ok(i) => {
                state.rooms.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn take_rooms(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut self.state.lock().rooms)
    }

    /// True when the connection may join `room` (always, without authentication).
    pub fn may_join(&self, room: &str) -> bool {
        self.state
            .lock()
            .auth
            .as_ref()
            .is_none_or(|a| a.permissions.may_join(room))
    }

    /// True when the connection may write to `room` (publish, param, trigger).
    pub fn may_publish(&self, room: &str) -> bool {
        self.state
            .lock()
            .auth
            .as_ref()
            .is_none_or(|a| a.permissions.may_publish(room))
    }

    /// True when the connection was authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.state.lock().auth.is_some()
    }

    /// Replaces the connection's permissions and expiry (after `refresh`).
    pub(crate) fn set_auth(&self, auth: AuthState) {
        self.state.lock().auth = Some(Box::new(auth));
    }

    /// What to do about the token's expiry at `now_ms`; a warning is recorded as sent.
    pub(crate) fn expiry_step(&self, now_ms: i64, warn_ms: i64) -> ExpiryStep {
        let mut state = self.state.lock();
        let Some(auth) = state.auth.as_mut() else {
            return ExpiryStep::Wait(None);
        };
        let step = auth.step(now_ms, warn_ms);
        if let ExpiryStep::Warn { .. } = step {
            auth.warned = true;
        }
        step
    }

    /// The public description of this connection.
    pub fn info(&self) -> ConnectionInfo {
        let state = self.state.lock();
        ConnectionInfo {
            connection_id: self.id.to_string(),
            client_id: self.client_id.to_string(),
            name: self.name.clone(),
            path: self.endpoint.path.clone(),
            remote_addr: self.remote_addr.map(|a| a.to_string()),
            meta: state.meta.clone(),
            rooms: state.rooms.iter().map(|r| r.to_string()).collect(),
            created_at: self.created_at,
            last_seen: self.last_seen(),
        }
    }
}
