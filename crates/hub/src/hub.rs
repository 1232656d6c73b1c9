//! The [`Hub`]: registries of connections and rooms, and every operation on them.
//!
//! Client requests enter through [`Hub::handle_frame`] (see [`crate::dispatch`]); the
//! embedding application and the REST API use the server-side commands below
//! (`create_room`, `publish`, `broadcast`, …). Both end in the same few primitives —
//! `Hub::join_room`, `Hub::leave_room`, `Hub::deliver` — so a message published
//! over REST and one published over WebSocket take the same path.
//!
//! Registries are sharded maps (`DashMap`); per-room state sits behind the room's own
//! lock. No lock is global.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::Stream;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use switchboard_protocol::{
    CloseCode, ErrorCode, Map, ParamState, RequestId, RoomMessage, ServerMessage, Since, room_id,
};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::codes::{CodeGuard, generate_code, is_valid_code};
use crate::connection::{ConnectInfo, Connection, ConnectionInfo};
use crate::endpoint::{ConnectionSlot, EndpointRules, Mode, SlowConsumer};
use crate::error::{HubError, HubResult};
use crate::events::{
    EventSinks, HubEvent, Membership, MembershipObserver, RtEvent, RtKind, ShortStr,
};
use crate::frame::{Payload, SharedFrame};
use crate::hooks::{ConnectRequest, Decision, HookSet, Hooks};
use crate::queue::RoomTag;
use crate::room::{CodeSpec, MemberEntry, ParamSpec, Room, RoomInfo, RoomSpec, RoomState};
use crate::store::{MemoryStore, Store};

/// Hub-wide settings (per-endpoint ones are in [`EndpointRules`]).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This node's id, shown in `welcome` and part of every connection id.
    pub node_id: String,
    /// How long an empty auto-created room lives on.
    pub empty_room_grace: Duration,
    /// Default lifetime of rooms with a code.
    pub coded_room_ttl: Duration,
    /// Digits of generated room codes.
    pub code_digits: usize,
    /// Wrong room codes an address may try at once …
    pub code_attempts_burst: u32,
    /// … and how fast that allowance comes back (one per this period).
    pub code_attempts_refill: Duration,
    /// Buffered hub events per subscriber.
    pub event_capacity: usize,
    /// How often expiry and clean-up run.
    pub maintenance_interval: Duration,
    /// Most rooms the hub holds at once; creating one more (by `join` or the API) is
    /// refused with `FORBIDDEN`.
    pub max_rooms: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            node_id: "node-1".into(),
            empty_room_grace: Duration::from_secs(60),
            coded_room_ttl: Duration::from_secs(24 * 3600),
            code_digits: 4,
            code_attempts_burst: 5,
            code_attempts_refill: Duration::from_secs(60),
            event_capacity: 1024,
            maintenance_interval: Duration::from_secs(1),
            max_rooms: 100_000,
        }
    }
}

pub(crate) struct Inner {
    pub config: HubConfig,
    boot: String,
    next_conn: AtomicU64,
    pub connections: DashMap<Arc<str>, Arc<Connection>>,
    clients: DashMap<Arc<str>, Vec<Arc<Connection>>>,
    pub rooms: DashMap<Arc<str>, Arc<Room>>,
    raw_rooms: DashMap<String, Arc<Mutex<Vec<Arc<Connection>>>>>,
    hooks: RwLock<Option<Arc<dyn Hooks>>>,
    hook_set: std::sync::atomic::AtomicU16,
    pub events: Arc<EventSinks>,
    pub store: Arc<dyn Store>,
    pub(crate) broker: RwLock<Option<Arc<dyn Broker>>>,
    pub(crate) cluster: crate::cluster::ClusterState,
    codes: CodeGuard,
    shutting_down: AtomicBool,
    pub playback: RwLock<Arc<dyn crate::playback::PlaybackStore>>,
    pub player_actions: DashMap<u64, Vec<crate::sessions::PlayerAction>>,
    /// Serializes playback writes so that validation and write cannot interleave.
    pub playback_lock: tokio::sync::Mutex<()>,
    pub stats: crate::stats::Stats,
    durable_inflight: Arc<tokio::sync::Semaphore>,
}

/// The outcome of numbering a message on a single node.
pub(crate) enum Sequenced {
    /// Fanned out already, at this offset.
    Delivered(u64),
    /// Numbered; to be committed to the store before anyone sees it.
    Durable(PendingDurable),
}

/// A numbered durable message waiting for its store write.
pub(crate) struct PendingDurable {
    pub message: RoomMessage,
    pub except: Vec<String>,
}

/// Durable publishes being committed in the background at once, per hub.
const DURABLE_IN_FLIGHT: usize = 4096;

/// A handle that does not keep the hub alive; see [`Hub::downgrade`].
#[derive(Clone)]
pub struct WeakHub(std::sync::Weak<Inner>);

impl WeakHub {
    /// The hub, if it still exists.
    pub fn upgrade(&self) -> Option<Hub> {
        self.0.upgrade().map(|inner| Hub { inner })
    }
}

/// A join request, from a client or the server side.
pub(crate) struct JoinArgs<'a> {
    pub id: Option<RequestId>,
    pub room: &'a str,
    pub code: Option<&'a str>,
    pub since: Option<&'a Since>,
    pub meta: Option<Map>,
    /// Server-side joins skip the room code.
    pub trusted: bool,
}

/// The hub. Cheap to clone: every clone is a handle on the same hub.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node_id", &self.inner.config.node_id)
            .field("connections", &self.inner.connections.len())
            .field("rooms", &self.inner.rooms.len())
            .finish()
    }
}

impl Hub {
    /// A hub with an in-memory store and no broker (one process).
    pub fn new(config: HubConfig) -> Self {
        Self::with_store(config, Arc::new(MemoryStore::new()))
    }

    /// A hub keeping durable rooms in `store`.
    pub fn with_store(config: HubConfig, store: Arc<dyn Store>) -> Self {
        let codes = CodeGuard::new(config.code_attempts_burst, config.code_attempts_refill);
        let events = Arc::new(EventSinks::new(config.event_capacity));
        Hub {
            inner: Arc::new(Inner {
                boot: format!("{:08x}", rand::random::<u32>()),
                config,
                next_conn: AtomicU64::new(1),
                connections: DashMap::new(),
                clients: DashMap::new(),
                rooms: DashMap::new(),
                raw_rooms: DashMap::new(),
                hooks: RwLock::new(None),
                hook_set: Default::default(),
                events,
                store,
                broker: RwLock::new(None),
                cluster: Default::default(),
                codes,
                shutting_down: AtomicBool::new(false),
                playback: RwLock::new(Arc::new(crate::playback::MemoryPlaybackStore::new())),
                player_actions: DashMap::new(),
                playback_lock: tokio::sync::Mutex::new(()),
                stats: Default::default(),
                durable_inflight: Arc::new(tokio::sync::Semaphore::new(DURABLE_IN_FLIGHT)),
            }),
        }
    }

    /// The hub's settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node_id
    }

    /// Registers the application's hooks (replacing any earlier ones).
    pub fn set_hooks(&self, hooks: Arc<dyn Hooks>) {
        self.inner
            .hook_set
            .store(hook_bits(hooks.interests()), Ordering::Release);
        *self.inner.hooks.write() = Some(hooks);
    }

    /// A weak handle, for tasks that must not keep the hub alive.
    pub fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.inner))
    }

    /// The hub's counters.
    pub fn stats(&self) -> &crate::stats::Stats {
        &self.inner.stats
    }

    /// Where publish→write latency samples and store-append durations are recorded.
    pub fn set_latency_sinks(
        &self,
        delivery: Box<dyn crate::stats::LatencySink>,
        store: Box<dyn crate::stats::LatencySink>,
    ) {
        *self.inner.stats.delivery.write() = Some(delivery);
        *self.inner.stats.store.write() = Some(store);
    }

    /// Current figures for a metrics scrape: the folded totals of ended connections plus
    /// the live ones.
    pub fn snapshot(&self) -> crate::stats::Snapshot {
        use crate::stats::{ERROR_CODES, Snapshot};
        let st = &self.inner.stats;
        let (mut frames_in, mut bytes_in) = st.ended_in.get();
        let (mut frames_out, mut bytes_out) = st.ended_out.get();
        let mut snap = Snapshot::default();
        for c in self.inner.connections.iter() {
            let (f, b) = c.traffic_in.get();
            frames_in += f;
            bytes_in += b;
            let (f, b) = c.traffic_out.get();
            frames_out += f;
            bytes_out += b;
            *snap
                .connections
                .entry(c.endpoint().path.clone())
                .or_default() += 1;
            snap.slow_consumer_drops += c.queue().dropped();
            snap.queued += c.queue().len() as u64;
        }
        for r in self.inner.rooms.iter() {
            snap.members += r.lock().members.len() as u64;
        }
        snap.rooms = self.inner.rooms.len() as u64;
        snap.frames_in = frames_in;
        snap.bytes_in = bytes_in;
        snap.frames_out = frames_out;
        snap.bytes_out = bytes_out;
        snap.slow_consumer_drops += st.ended_drops.load(Ordering::Relaxed);
        snap.published = st.published.load(Ordering::Relaxed);
        snap.accepted = st.accepted.load(Ordering::Relaxed);
        snap.errors = ERROR_CODES
            .iter()
            .zip(&st.errors)
            .map(|(c, n)| (c.as_str(), n.load(Ordering::Relaxed)))
            .collect();
        snap.closes = st.closes.lock().iter().map(|(k, v)| (*k, *v)).collect();
        snap
    }

    /// Plugs in a cluster broker.
    pub fn set_broker(&self, broker: Arc<dyn Broker>) {
        *self.inner.broker.write() = Some(broker);
    }

    /// The hooks to call for `which`, if any are registered for it.
    pub(crate) fn hook(&self, which: HookSet) -> Option<Arc<dyn Hooks>> {
        let bits = self.inner.hook_set.load(Ordering::Acquire);
        if bits & hook_bits(which) == 0 {
            return None;
        }
        self.inner.hooks.read().clone()
    }

    /// True when the store and broker answer (readiness).
    pub async fn is_ready(&self) -> bool {
        let broker_ok = self
            .inner
            .broker
            .read()
            .as_ref()
            .is_none_or(|b| b.is_ready());
        broker_ok && self.inner.store.ping().await.is_ok()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    // ---- events -------------------------------------------------------------------

    /// A stream of everything clients do, from now on.
    pub fn events(&self) -> impl Stream<Item = HubEvent> + Send + 'static {
        self.inner.events.subscribe()
    }

    /// A lock-free queue of parameter changes and triggers for a real-time thread.
    /// The consumer never blocks or allocates; when it falls `capacity` events behind,
    /// new events are dropped and counted ([`Hub::realtime_dropped`]). Calling this
    /// again replaces the previous queue.
    pub fn realtime_queue(&self, capacity: usize) -> rtrb::Consumer<RtEvent> {
        self.inner.events.realtime_queue(capacity)
    }

    /// Real-time events dropped because the consumer fell behind.
    pub fn realtime_dropped(&self) -> u64 {
        self.inner.events.rt_dropped()
    }

    /// Registers the observer told about every connect, disconnect, join and leave
    /// (replacing any earlier one); see [`MembershipObserver`].
    pub fn set_membership_observer(&self, observer: Arc<dyn MembershipObserver>) {
        self.inner.events.set_membership_observer(observer);
    }

    // ---- connections ----------------------------------------------------------------

    /// Asks the `connect` hook whether a connection may be accepted. The server calls
    /// this before completing the upgrade, so a refusal is an HTTP error.
    pub async fn authorize_connect(&self, req: &ConnectRequest) -> HubResult<()> {
        if let Some(h) = self.hook(HookSet::CONNECT) {
            match h.on_connect(req).await {
                Decision::Reject { code, message } => return Err(HubError::new(code, message)),
                Decision::Allow | Decision::Rewrite(_) => {}
            }
        }
        Ok(())
    }

    /// Registers a new connection and queues its `welcome` (protocol mode).
    pub fn connect(
        &self,
        info: ConnectInfo,
        endpoint: Arc<EndpointRules>,
        slot: Option<ConnectionSlot>,
    ) -> Arc<Connection> {
        let n = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let id: Arc<str> =
            format!("{}.{}.{:x}", self.inner.config.node_id, self.inner.boot, n).into();
        let conn = Arc::new(Connection::new(id.clone(), info, endpoint.clone(), slot));
        self.inner.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.inner.connections.insert(id, conn.clone());
        self.inner
            .clients
            .entry(conn.client_id().into())
            .or_default()
            .push(conn.clone());
        match endpoint.mode {
            Mode::Protocol => {
                conn.send(Payload::msg(ServerMessage::Welcome {
                    connection_id: conn.id().to_owned(),
                    client_id: conn.client_id().to_owned(),
                    node_id: self.inner.config.node_id.clone(),
                    path: endpoint.path.clone(),
                    server_time: now_ms(),
                    heartbeat_ms: endpoint.ping_interval.as_millis() as u64,
                    protocol: switchboard_protocol::PROTOCOL_VERSION,
                }));
            }
            Mode::Raw => {
                self.inner
                    .raw_rooms
                    .entry(raw_key(&endpoint))
                    .or_default()
                    .lock()
                    .push(conn.clone());
            }
            Mode::Echo => {}
        }
        self.inner
            .events
            .membership(Membership::Connected { conn: &conn });
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Connected {
                connection_id: conn.id().to_owned(),
                client_id: conn.client_id().to_owned(),
            });
        }
        tracing::debug!(connection_id = conn.id(), client_id = conn.client_id(), path = %endpoint.path, "connection registered");
        if endpoint.mode == Mode::Protocol {
            self.cluster_connection(&conn, true);
        }
        conn
    }

    /// Forgets a connection that ended: leaves its rooms (telling the other members) and
    /// runs the `close` hook. The transport driver calls this once, at the end.
    pub async fn disconnected(&self, conn: &Arc<Connection>, code: Option<u16>, reason: &str) {
        if self.inner.connections.remove(conn.id()).is_none() {
            return;
        }
        if conn.endpoint().mode == Mode::Protocol {
            self.cluster_connection(conn, false);
        }
        let st = &self.inner.stats;
        let (f, b) = conn.traffic_in.get();
        st.ended_in.add(f, b);
        let (f, b) = conn.traffic_out.get();
        st.ended_out.add(f, b);
        st.ended_drops
            .fetch_add(conn.queue().dropped(), Ordering::Relaxed);
        st.closed(code);
        if let dashmap::Entry::Occupied(mut e) = self.inner.clients.entry(conn.client_id().into()) {
            e.get_mut().retain(|c| !Arc::ptr_eq(c, conn));
            if e.get().is_empty() {
                e.remove();
            }
        }
        if conn.endpoint().mode == Mode::Raw
            && let Some(members) = self.inner.raw_rooms.get(&raw_key(conn.endpoint()))
        {
            members.lock().retain(|c| !Arc::ptr_eq(c, conn));
        }
        for room in conn.take_rooms() {
            self.remove_member(&room, conn).await;
        }
        self.playback_disconnected(conn).await;
        self.inner
            .events
            .membership(Membership::Disconnected { conn });
        if let Some(h) = self.hook(HookSet::CLOSE) {
            h.on_close(conn, code, reason).await;
        }
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Disconnected {
                connection_id: conn.id().to_owned(),
                client_id: conn.client_id().to_owned(),
            });
        }
    }

    /// A connection by id.
    pub fn connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.inner.connections.get(id).map(|c| c.clone())
    }

    /// Every connection of a client id.
    pub fn client_connections(&self, client_id: &str) -> Vec<Arc<Connection>> {
        self.inner
            .clients
            .get(client_id)
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    /// A connection's description (`client_info`), on any node of the cluster.
    pub async fn client_info(&self, id: &str) -> Option<ConnectionInfo> {
        if let Some(c) = self.connection(id) {
            return Some(c.info());
        }
        self.remote_connections()
            .await
            .into_iter()
            .find(|c| c.connection_id == id)
    }

    /// Every connection's description, on every node of the cluster.
    pub async fn connections(&self) -> Vec<ConnectionInfo> {
        let mut all = self.local_connections();
        all.extend(self.remote_connections().await);
        all
    }

    /// The description of every connection of this node.
    pub fn local_connections(&self) -> Vec<ConnectionInfo> {
        self.inner.connections.iter().map(|c| c.info()).collect()
    }

    /// The rooms a connection is in (`user_rooms`).
    pub fn user_rooms(&self, id: &str) -> Option<Vec<RoomInfo>> {
        let conn = self.connection(id)?;
        Some(
            conn.rooms()
                .iter()
                .filter_map(|r| self.room(r).map(|room| room.info()))
                .collect(),
        )
    }

    /// Closes a connection, on whichever node holds it: what is queued is written, then
    /// a close frame.
    pub async fn disconnect(&self, id: &str, code: u16, reason: &str) -> HubResult<()> {
        if self.connection(id).is_some() {
            return self.disconnect_local(id, code, reason);
        }
        let cmd = crate::cluster::NodeCommand::Disconnect {
            connection_id: id.to_owned(),
            code,
            reason: reason.to_owned(),
        };
        if self.route(id, cmd).await? {
            return Ok(());
        }
        Err(HubError::not_found(format!("no connection `{id}`")))
    }

    pub(crate) fn disconnect_local(&self, id: &str, code: u16, reason: &str) -> HubResult<()> {
        let conn = self
            .connection(id)
            .ok_or_else(|| HubError::not_found(format!("no connection `{id}`")))?;
        conn.queue().close(code, reason);
        Ok(())
    }

    /// Sends `data` to one connection, on whichever node holds it, as a `direct` from
    /// `server`.
    pub async fn send(&self, id: &str, data: Value) -> HubResult<()> {
        let ts = now_ms();
        if let Some(conn) = self.connection(id) {
            conn.send(Payload::msg(ServerMessage::Direct {
                from: "server".into(),
                connection_id: None,
                data,
                ts,
            }));
            return Ok(());
        }
        let cmd = crate::cluster::NodeCommand::Direct {
            to: id.to_owned(),
            from: "server".into(),
            connection_id: None,
            data,
            ts,
        };
        if self.route(id, cmd).await? {
            return Ok(());
        }
        Err(HubError::not_found(format!("no connection `{id}`")))
    }

    /// Sends `event {name, data}` to every protocol connection of the cluster except
    /// those listed; returns how many connections of this node got it.
    pub fn broadcast(&self, name: &str, data: Value, except: &[String]) -> usize {
        if self.has_broker() {
            self.tell_all(crate::cluster::NodeCommand::Broadcast {
                name: name.to_owned(),
                data: data.clone(),
                except: except.to_vec(),
            });
        }
        self.broadcast_local(name, data, except)
    }

    pub(crate) fn broadcast_local(&self, name: &str, data: Value, except: &[String]) -> usize {
        let frame = SharedFrame::new(ServerMessage::Event {
            name: name.to_owned(),
            data,
            ts: now_ms(),
        });
        self.push_all(&Payload::Msg(frame), except)
    }

    /// Sends `visualization {data}` to every protocol connection.
    pub fn visualization(&self, data: Vec<f64>) -> usize {
        let frame = SharedFrame::new(ServerMessage::Visualization { data });
        self.push_all(&Payload::Msg(frame), &[])
    }

    fn push_all(&self, payload: &Payload, except: &[String]) -> usize {
        let mut n = 0;
        for c in self.inner.connections.iter() {
            if c.endpoint().mode == Mode::Protocol && !except.iter().any(|e| e == c.id()) {
                c.send(payload.clone());
                n += 1;
            }
        }
        n
    }

    // ---- rooms ----------------------------------------------------------------------

    /// A room by id.
    pub fn room(&self, id: &str) -> Option<Arc<Room>> {
        self.inner.rooms.get(id).map(|r| r.clone())
    }

    /// A room's description.
    pub fn room_info(&self, id: &str) -> Option<RoomInfo> {
        self.room(id).map(|r| r.info())
    }

    /// Every room's description.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<_> = self.inner.rooms.iter().map(|r| r.info()).collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    /// A room's epoch, latest offset and history: messages after `since`, or the newest
    /// ones, oldest first, at most `limit`.
    pub fn history(
        &self,
        id: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Option<(String, u64, Vec<RoomMessage>)> {
        let room = self.room(id)?;
        let mut st = room.lock();
        st.expire_history(now_ms());
        let messages = match since {
            Some(s) => st.since(s, limit),
            None => st.latest(limit),
        };
        Some((st.epoch.clone(), st.offset, messages))
    }

    /// A room's members.
    pub fn members(&self, id: &str) -> Option<Vec<switchboard_protocol::Member>> {
        let room = self.room(id)?;
        let st = room.lock();
        Some(st.members.values().map(MemberEntry::member).collect())
    }

    /// Creates a room explicitly (REST, embedding).
    pub async fn create_room(&self, spec: RoomSpec) -> HubResult<RoomInfo> {
        self.check_room_limit()?;
        let id = match spec.id {
            Some(id) if room_id::is_valid(&id) => id,
            Some(id) => return Err(HubError::bad_request(format!("invalid room id `{id}`"))),
            None => format!("room-{:08x}", rand::random::<u32>()),
        };
        let code = match spec.code {
            None | Some(CodeSpec::Generate(false)) => None,
            Some(CodeSpec::Generate(true)) => Some(generate_code(self.inner.config.code_digits)),
            Some(CodeSpec::Digits(d)) if is_valid_code(&d) => Some(d),
            Some(CodeSpec::Digits(d)) => {
                return Err(HubError::bad_request(format!(
                    "room code `{d}` must be 4 to 8 digits"
                )));
            }
        };
        let ttl = match (spec.ttl_s, &code) {
            (Some(s), _) => Some(Duration::from_secs(s)),
            (None, Some(_)) => Some(self.inner.config.coded_room_ttl),
            (None, None) => None,
        };
        let mut params = Vec::new();
        for p in spec.params.unwrap_or_default() {
            params.push(param_state(&p)?);
        }
        let fresh = RoomState::fresh(
            spec.name.unwrap_or_else(|| id.clone()),
            spec.max_connections.unwrap_or(100),
            spec.slow_consumer.unwrap_or_default(),
            spec.history_size.unwrap_or(100),
            Duration::from_secs(spec.history_ttl_s.unwrap_or(0)),
        );
        let state = RoomState {
            description: spec.description.unwrap_or_default(),
            code,
            meta: spec.meta.unwrap_or_default(),
            expires_at: ttl.map(|t| {
                let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
                fresh.created_at.saturating_add(ms)
            }),
            durable: spec.durable.unwrap_or(false),
            params,
            ..fresh
        };
        let key: Arc<str> = id.clone().into();
        let room = Room::new(key.clone(), state);
        match self.inner.rooms.entry(key) {
            dashmap::Entry::Occupied(_) => {
                return Err(HubError::bad_request(format!("room `{id}` already exists")));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(room.clone());
            }
        }
        let info = room.info();
        if let Err(e) = self.cluster_define(&info).await {
            self.inner.rooms.remove(id.as_str());
            return Err(e);
        }
        if info.durable
            && let Err(e) = self.inner.store.save_room(&info).await
        {
            self.inner.rooms.remove(id.as_str());
            if let Some(broker) = self.broker() {
                let _ = broker.forget_room(&id).await;
            }
            return Err(HubError::new(ErrorCode::Internal, e.to_string()));
        }
        if !info.params.is_empty() {
            // Nodes that serve the room later take its parameters from the cluster.
            self.cluster_signal(&id, info.params.clone(), None).await;
        }
        Ok(info)
    }

    /// Closes a room on every node: members get `closed {room, reason}` and are removed.
    pub async fn close_room(&self, id: &str, reason: &str) -> HubResult<()> {
        let Some(broker) = self.broker() else {
            return self.close_room_local(id, reason).await;
        };
        let known = broker.forget_room(id).await.map_err(|e| {
            HubError::new(
                ErrorCode::Internal,
                format!("cluster unavailable, room not closed: {e}"),
            )
        })?;
        self.tell_all(crate::cluster::NodeCommand::CloseRoom {
            room: id.to_owned(),
            reason: reason.to_owned(),
        });
        if self.room(id).is_some() {
            self.close_room_local(id, reason).await?;
        } else if !known {
            return Err(HubError::not_found(format!("no room `{id}`")));
        }
        Ok(())
    }

    pub(crate) async fn close_room_local(&self, id: &str, reason: &str) -> HubResult<()> {
        let (_, room) = self
            .inner
            .rooms
            .remove(id)
            .ok_or_else(|| HubError::not_found(format!("no room `{id}`")))?;
        let (members, durable) = {
            let mut st = room.lock();
            st.closed = true;
            let members = std::mem::take(&mut st.members);
            let n = members.len();
            for (i, m) in members.values().enumerate() {
                self.inner.events.membership(Membership::Left {
                    conn: &m.conn,
                    room: id,
                    last: i + 1 == n,
                });
            }
            (members, st.durable)
        };
        let notice = Payload::Msg(SharedFrame::new(ServerMessage::Closed {
            room: Some(id.to_owned()),
            reason: reason.to_owned(),
            retry_after_ms: None,
        }));
        for m in members.values() {
            m.conn.remove_room(id);
            m.conn.send(notice.clone());
        }
        if durable && let Err(e) = self.inner.store.delete_room(id).await {
            tracing::warn!(room = id, error = %e, "failed to delete a durable room from the store");
        }
        if self.has_broker() {
            for m in members.values() {
                let endpoint = m.conn.endpoint().path.clone();
                self.cluster_presence(id, m.member(), false, Some(&endpoint))
                    .await;
            }
            self.cluster_release(id).await;
        }
        Ok(())
    }

    /// Finds a room for a join, creating it when the endpoint allows.
    async fn room_for_join(&self, id: &str, endpoint: &EndpointRules) -> HubResult<Arc<Room>> {
        if let Some(r) = self.find_room(id).await? {
            return Ok(r);
        }
        if !endpoint.auto_create_rooms {
            return Err(HubError::invalid_room(id));
        }
        self.check_room_limit()?;
        Ok(self.auto_room(id, endpoint))
    }

    /// The room `id`, made with `rules`' settings and marked auto-created (dropped when
    /// it has stayed empty for the grace period) if it does not exist yet.
    pub(crate) fn auto_room(&self, id: &str, rules: &EndpointRules) -> Arc<Room> {
        let key: Arc<str> = id.into();
        self.inner
            .rooms
            .entry(key.clone())
            .or_insert_with(|| {
                let fresh = RoomState::fresh(
                    id.to_owned(),
                    rules.room_max_connections,
                    rules.slow_consumer,
                    rules.history_size,
                    rules.history_ttl,
                );
                Room::new(
                    key,
                    RoomState {
                        auto_created: true,
                        ..fresh
                    },
                )
            })
            .clone()
    }

    /// Refuses to create a room once the hub holds `max_rooms` (checked before the
    /// insert, so concurrent creations may overshoot by a few; the bound is on memory).
    fn check_room_limit(&self) -> HubResult<()> {
        if self.inner.rooms.len() >= self.inner.config.max_rooms {
            return Err(HubError::forbidden(format!(
                "the server holds its maximum of {} rooms",
                self.inner.config.max_rooms
            )));
        }
        Ok(())
    }

    /// Joins `conn` to `room`: checks the rules, adds the member, queues `joined` for it
    /// and `presence_join` for the others. `code` is checked unless `trusted` (a
    /// server-side join).
    pub(crate) async fn join_room(
        &self,
        conn: &Arc<Connection>,
        join: JoinArgs<'_>,
    ) -> HubResult<()> {
        let JoinArgs {
            id,
            room: room_id,
            code,
            since,
            meta,
            trusted,
        } = join;
        if !room_id::is_valid(room_id) {
            return Err(HubError::bad_request(format!(
                "invalid room id `{room_id}`"
            )));
        }
        if !trusted && !conn.may_join(room_id) {
            return Err(HubError::forbidden(format!(
                "your token does not allow joining room `{room_id}`"
            )));
        }
        let already = conn.in_room(room_id);
        if !already && conn.room_count() >= conn.endpoint().max_rooms_per_connection {
            return Err(HubError::forbidden(format!(
                "a connection may join at most {} rooms",
                conn.endpoint().max_rooms_per_connection
            )));
        }
        let room = self.room_for_join(room_id, conn.endpoint()).await?;
        if !trusted {
            self.check_code(conn, &room, room_id, code)?;
        }
        if let Some(h) = self.hook(HookSet::JOIN)
            && let Decision::Reject { code, message } =
                h.on_join(conn, room_id, meta.as_ref()).await
        {
            return Err(HubError::new(code, message));
        }
        // With a broker: subscribed and in step with the cluster before the member is in.
        let _cluster_guard = self.cluster_enter(&room).await;
        let entry = MemberEntry {
            conn: conn.clone(),
            join_meta: meta,
            joined_at: now_ms(),
        };
        // In a cluster a new member takes its place in the broker first, which checks
        // the member limit over every node atomically and counts the room's members.
        let reserved = if !already && _cluster_guard.is_some() {
            let max = room.lock().max_connections;
            self.cluster_reserve(room_id, entry.member(), max, &conn.endpoint().path)
                .await?
        } else {
            None
        };
        let closed = room.lock().closed;
        if closed {
            if reserved.is_some() {
                // Closed meanwhile: give the place back (with its lifecycle events).
                self.cluster_presence(room_id, entry.member(), false, Some(&conn.endpoint().path))
                    .await;
            }
            return Err(HubError::invalid_room(room_id));
        }
        let announced = {
            let mut st = room.lock();
            if st.closed {
                if reserved.is_some() {
                    let (hub, room, member) = (self.clone(), room_id.to_owned(), entry.member());
                    let endpoint = conn.endpoint().path.clone();
                    tokio::spawn(async move {
                        hub.cluster_presence(&room, member, false, Some(&endpoint))
                            .await;
                    });
                }
                return Err(HubError::invalid_room(room_id));
            }
            if !already
                && reserved.is_none()
                && st.members.len() + self.inner.cluster.remote_count(room_id) >= st.max_connections
            {
                return Err(HubError::new(
                    ErrorCode::RoomFull,
                    format!("room `{room_id}` is full ({} members)", st.max_connections),
                ));
            }
            let member = entry.member();
            let first_here = st.members.is_empty();
            // Other nodes hear of the join too (only in a cluster: no copy otherwise),
            // now if the broker could not take it first.
            let announced = (!already && reserved.is_none() && _cluster_guard.is_some())
                .then(|| member.clone());
            if st.members.insert(conn.id_arc().clone(), entry).is_none() {
                // Told under the lock: the observer sees this room's joins and leaves
                // in the order they happen.
                self.inner.events.membership(Membership::Joined {
                    conn,
                    room: room_id,
                    first: first_here,
                });
            }
            st.empty_since = None;
            if !already && st.members.len() <= conn.endpoint().presence_events_max_members {
                let notice = Payload::Msg(SharedFrame::new(ServerMessage::PresenceJoin {
                    room: room_id.to_owned(),
                    member,
                }));
                for (cid, m) in &st.members {
                    if cid.as_ref() != conn.id() {
                        m.conn.send(notice.clone());
                    }
                }
            }
            st.expire_history(now_ms());
            let (recovered, recovered_complete) = recover(&st, since);
            // Queued while the room is locked: no message of this room can slip in
            // between, so the client sees `joined` first and then every later offset.
            let (mut members, mut next_cursor) = first_members(&st, conn.id());
            let remote = self.inner.cluster.remote_members(room_id);
            if !remote.is_empty() {
                (members, _, next_cursor) = self.presence_page(room_id, &st, None, 100);
                if !members.iter().any(|m| m.connection_id == conn.id())
                    && let Some(mine) = st.members.get(conn.id())
                {
                    members.push(mine.member());
                }
            }
            // The broker's count is exact; the cache of remote members may lag a little.
            let members_count = reserved.unwrap_or(st.members.len() + remote.len());
            conn.send(Payload::msg(ServerMessage::Joined {
                id,
                room: room_id.to_owned(),
                epoch: st.epoch.clone(),
                offset: st.offset,
                members,
                members_count,
                next_cursor,
                recovered,
                recovered_complete,
            }));
            announced
        };
        conn.add_room(room.id_arc().clone());
        drop(_cluster_guard);
        if let Some(member) = announced {
            self.cluster_presence(room_id, member, true, Some(&conn.endpoint().path))
                .await;
        }
        if !already && self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Joined {
                connection_id: conn.id().to_owned(),
                room: room_id.to_owned(),
            });
        }
        Ok(())
    }

    fn check_code(
        &self,
        conn: &Connection,
        room: &Room,
        room_id: &str,
        code: Option<&str>,
    ) -> HubResult<()> {
        let expected = room.lock().code.clone();
        let ip = conn
            .remote_addr()
            .map(|a| crate::ratelimit::address_key(a.ip()));
        if code.is_some()
            && let Some(ip) = ip
            && self.inner.codes.is_limited(ip)
        {
            return Err(HubError::new(
                ErrorCode::RateLimited,
                "too many wrong room codes from this address; try again later",
            ));
        }
        match expected {
            None => Ok(()),
            Some(want) if code == Some(want.as_str()) => Ok(()),
            Some(_) => {
                if code.is_some()
                    && let Some(ip) = ip
                {
                    self.inner.codes.record_failure(ip);
                }
                Err(HubError::new(
                    ErrorCode::InvalidRoom,
                    format!("room `{room_id}` needs the right code"),
                ))
            }
        }
    }

    /// Removes `conn` from `room`'s members and tells the others; true if it was there.
    async fn remove_member(&self, room_id: &str, conn: &Arc<Connection>) -> bool {
        let Some(room) = self.room(room_id) else {
            return false;
        };
        let now_empty = {
            let mut st = room.lock();
            let Some(entry) = st.members.remove(conn.id()) else {
                return false;
            };
            self.inner.events.membership(Membership::Left {
                conn,
                room: room_id,
                last: st.members.is_empty(),
            });
            let quiet = st.members.len() >= conn.endpoint().presence_events_max_members;
            let notice = Payload::Msg(SharedFrame::new(ServerMessage::PresenceLeave {
                room: room_id.to_owned(),
                member: entry.member(),
            }));
            if !quiet {
                for m in st.members.values() {
                    m.conn.send(notice.clone());
                }
            }
            let now_empty = st.members.is_empty();
            if now_empty {
                st.empty_since = Some(Instant::now());
            }
            (now_empty, entry.member())
        };
        let (now_empty, member) = now_empty;
        self.cluster_presence(room_id, member, false, Some(&conn.endpoint().path))
            .await;
        if now_empty {
            self.cluster_release(room_id).await;
        }
        if let Some(h) = self.hook(HookSet::LEAVE) {
            h.on_leave(conn, room_id).await;
        }
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Left {
                connection_id: conn.id().to_owned(),
                room: room_id.to_owned(),
            });
        }
        true
    }

    /// Takes `conn` out of `room`.
    pub(crate) async fn leave_room(&self, conn: &Arc<Connection>, room_id: &str) -> HubResult<()> {
        if !room_id::is_valid(room_id) {
            return Err(HubError::bad_request(format!(
                "invalid room id `{room_id}`"
            )));
        }
        if self.room(room_id).is_none() {
            return Err(HubError::invalid_room(room_id));
        }
        if !conn.remove_room(room_id) {
            return Err(HubError::not_in_room(room_id));
        }
        self.remove_member(room_id, conn).await;
        Ok(())
    }

    /// Joins a connection to a room from the server side (no code needed), on whichever
    /// node holds it; the connection gets `joined`, the others `presence_join`.
    pub async fn join(&self, connection_id: &str, room: &str) -> HubResult<()> {
        if self.connection(connection_id).is_none() {
            let routed = self
                .route_and_wait(connection_id, |reply_to| {
                    crate::cluster::NodeCommand::Join {
                        connection_id: connection_id.to_owned(),
                        room: room.to_owned(),
                        reply_to: Some(reply_to),
                    }
                })
                .await?;
            if routed {
                return Ok(());
            }
        }
        self.join_local(connection_id, room).await
    }

    pub(crate) async fn join_local(&self, connection_id: &str, room: &str) -> HubResult<()> {
        let conn = self
            .connection(connection_id)
            .ok_or_else(|| HubError::not_found(format!("no connection `{connection_id}`")))?;
        if self.find_room_anywhere(room).await?.is_none() {
            return Err(HubError::not_found(format!("no room `{room}`")));
        }
        self.join_room(
            &conn,
            JoinArgs {
                id: None,
                room,
                code: None,
                since: None,
                meta: None,
                trusted: true,
            },
        )
        .await
    }

    /// Takes a connection out of a room from the server side, on whichever node holds
    /// it; it gets `left`.
    pub async fn leave(&self, connection_id: &str, room: &str) -> HubResult<()> {
        if self.connection(connection_id).is_none() {
            let routed = self
                .route_and_wait(connection_id, |reply_to| {
                    crate::cluster::NodeCommand::Leave {
                        connection_id: connection_id.to_owned(),
                        room: room.to_owned(),
                        reply_to: Some(reply_to),
                    }
                })
                .await?;
            if routed {
                return Ok(());
            }
        }
        self.leave_local(connection_id, room).await
    }

    pub(crate) async fn leave_local(&self, connection_id: &str, room: &str) -> HubResult<()> {
        let conn = self
            .connection(connection_id)
            .ok_or_else(|| HubError::not_found(format!("no connection `{connection_id}`")))?;
        self.leave_room(&conn, room).await?;
        conn.send(Payload::msg(ServerMessage::Left {
            id: None,
            room: room.to_owned(),
        }));
        Ok(())
    }

    /// The room for a room-scoped request by `conn`: it must exist and `conn` must be in it.
    pub(crate) fn member_room(&self, conn: &Connection, room_id: &str) -> HubResult<Arc<Room>> {
        if !room_id::is_valid(room_id) {
            return Err(HubError::bad_request(format!(
                "invalid room id `{room_id}`"
            )));
        }
        let room = self
            .room(room_id)
            .ok_or_else(|| HubError::invalid_room(room_id))?;
        if !conn.in_room(room_id) {
            return Err(HubError::not_in_room(room_id));
        }
        Ok(room)
    }

    // ---- messages -----------------------------------------------------------------

    /// Publishes `data` to a room as the server (REST, embedding); returns the offset.
    pub async fn publish(&self, room: &str, data: Value, except: &[String]) -> HubResult<u64> {
        let r = self
            .find_room_anywhere(room)
            .await?
            .ok_or_else(|| HubError::not_found(format!("no room `{room}`")))?;
        self.deliver(&r, data, "server", None, except).await
    }

    /// Publishes a message to a room and returns its offset. Durable rooms return only
    /// once the store has the message.
    ///
    /// Alone, the hub assigns the offset, records the message in history and queues it
    /// for every member not in `except` — all under the room's lock, so every member sees
    /// one order. With a broker, the broker assigns the offset cluster-wide and the
    /// message comes back through [`Hub::deliver_remote`] on every node, this one too.
    pub(crate) async fn deliver(
        &self,
        room: &Arc<Room>,
        data: Value,
        from: &str,
        connection_id: Option<&str>,
        except: &[String],
    ) -> HubResult<u64> {
        let message = RoomMessage {
            room: room.id().to_owned(),
            data,
            from: from.to_owned(),
            connection_id: connection_id.map(str::to_owned),
            offset: 0,
            ts: now_ms(),
        };
        let broker = self.inner.broker.read().clone();
        self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
        let Some(broker) = broker else {
            return self.deliver_local(room, message, except).await;
        };
        if self.is_diverged(room.id()) {
            // Served alone during an outage: start the room's next cluster epoch first.
            self.resync_room(room.id()).await;
        }
        let (durable, floor) = {
            let st = room.lock();
            (st.durable, st.offset)
        };
        let mut envelope = crate::broker::Envelope {
            message,
            except: except.to_vec(),
            epoch: String::new(),
        };
        envelope.message.offset = floor;
        let kept = durable.then(|| envelope.message.clone());
        let offset = match broker.publish(envelope.clone()).await {
            Ok(offset) => {
                // Numbered, on its way back to this node: should the broker go away
                // before it arrives, the members are told they missed it (`diverge`).
                let mut st = room.lock();
                st.assigned = st.assigned.max(offset);
                offset
            }
            Err(e) => {
                // Keep serving this node's members; the room's epoch tells of the hole.
                self.diverge(room, &e)?;
                return self.deliver_local(room, envelope.message, except).await;
            }
        };
        if let Some(mut message) = kept {
            message.offset = offset;
            self.append_to_store(room, &message).await?;
        }
        Ok(offset)
    }

    /// The single-node path of [`Hub::deliver`].
    ///
    /// A non-durable message is numbered and fanned out in one critical section. A
    /// durable one is numbered, then written to the store with the room unlocked (so
    /// concurrent publishes share a group commit), and only then fanned out — in offset
    /// order, through the room's reorder buffer: a message is never seen before it is
    /// kept, so a crash can never hand a seen offset to a different message. If the
    /// store write fails, the publisher gets `INTERNAL` and that offset is skipped.
    async fn deliver_local(
        &self,
        room: &Arc<Room>,
        message: RoomMessage,
        except: &[String],
    ) -> HubResult<u64> {
        match self.sequence_local(room, message, except)? {
            Sequenced::Delivered(offset) => Ok(offset),
            Sequenced::Durable(pending) => self.commit_durable(room, pending).await,
        }
    }

    /// The synchronous half of [`Hub::deliver_local`]: numbers the message; a
    /// non-durable one is fanned out at once, a durable one is handed back to be
    /// committed with [`Hub::commit_durable`].
    pub(crate) fn sequence_local(
        &self,
        room: &Arc<Room>,
        mut message: RoomMessage,
        except: &[String],
    ) -> HubResult<Sequenced> {
        let mut st = room.lock();
        if st.closed {
            return Err(HubError::invalid_room(room.id()));
        }
        st.assigned = st.assigned.max(st.offset) + 1;
        message.offset = st.assigned;
        if st.durable {
            return Ok(Sequenced::Durable(PendingDurable {
                message,
                except: except.to_vec(),
            }));
        }
        st.offset = message.offset;
        let offset = message.offset;
        fan_out(room, &mut st, message, except);
        Ok(Sequenced::Delivered(offset))
    }

    /// The asynchronous half: writes a numbered durable message to the store, then fans
    /// out whatever the reorder buffer now allows, in offset order.
    pub(crate) async fn commit_durable(
        &self,
        room: &Arc<Room>,
        pending: PendingDurable,
    ) -> HubResult<u64> {
        let PendingDurable { message, except } = pending;
        let offset = message.offset;
        let appended = self.append_to_store(room, &message).await;
        let mut st = room.lock();
        st.pending
            .insert(offset, appended.is_ok().then_some((message, except)));
        loop {
            let due = st.offset + 1;
            let Some(next) = st.pending.remove(&due) else {
                break;
            };
            st.offset += 1;
            if let Some((m, except)) = next {
                fan_out(room, &mut st, m, &except);
            }
        }
        drop(st);
        appended.map(|()| offset)
    }

    /// Room for one more durable publish being committed in the background (bounded per
    /// hub, so a flood of durable publishes waits instead of piling up tasks).
    pub(crate) async fn durable_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner
            .durable_inflight
            .clone()
            .acquire_owned()
            .await
            .ok()
    }

    /// True when publishes go through a cluster broker.
    pub(crate) fn has_broker(&self) -> bool {
        self.inner.broker.read().is_some()
    }

    async fn append_to_store(&self, room: &Room, message: &RoomMessage) -> HubResult<()> {
        let started = Instant::now();
        self.inner
            .store
            .append(room.id(), std::slice::from_ref(message))
            .await
            .map_err(|e| HubError::new(ErrorCode::Internal, e.to_string()))?;
        self.inner
            .stats
            .record_store(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Fans out a message sequenced by the broker to this node's members of its room.
    /// Envelopes at or below the room's current offset (duplicates) are ignored.
    pub fn deliver_remote(&self, envelope: crate::broker::Envelope) {
        let Some(room) = self.room(&envelope.message.room) else {
            return;
        };
        let mut st = room.lock();
        if envelope.message.offset <= st.offset {
            // A duplicate, or a message of an epoch this node has already left behind.
            return;
        }
        if !envelope.epoch.is_empty() && envelope.epoch != st.epoch {
            // The cluster moved to a new epoch (the broker lost its data, or a node
            // served the room alone): older history belongs to the old one.
            st.epoch = envelope.epoch;
            st.history.clear();
        }
        st.offset = envelope.message.offset;
        st.assigned = st.assigned.max(st.offset);
        fan_out(&room, &mut st, envelope.message, &envelope.except);
    }

    /// Queues a non-offset room event (`update`, `trigger`) for every member.
    pub(crate) fn room_event(&self, room: &Room, msg: ServerMessage) {
        let payload = Payload::Msg(SharedFrame::new(msg));
        let st = room.lock();
        for m in st.members.values() {
            m.conn.send(payload.clone());
        }
    }

    /// Defines a parameter (with `min`/`max`) or sets its value, and tells the members.
    pub async fn set_param(&self, room: &str, spec: ParamSpec) -> HubResult<ParamState> {
        let r = self
            .find_room_anywhere(room)
            .await?
            .ok_or_else(|| HubError::not_found(format!("no room `{room}`")))?;
        // Without local members this node's copy of the parameters may be stale.
        self.cluster_refresh(room).await;
        let state = {
            let mut st = r.lock();
            match st.param_mut(&spec.name) {
                Some(p) => {
                    let min = spec.min.unwrap_or(p.min);
                    let max = spec.max.unwrap_or(p.max);
                    let checked = param_state(&ParamSpec {
                        name: p.name.clone(),
                        value: spec.value,
                        min: Some(min),
                        max: Some(max),
                    })?;
                    *p = checked.clone();
                    checked
                }
                None => {
                    let p = param_state(&spec)?;
                    st.params.push(p.clone());
                    p
                }
            }
        };
        self.persist_params(&r).await?;
        let update = ServerMessage::Update {
            room: room.to_owned(),
            param: state.name.clone(),
            value: state.value,
            at: None,
            from: "server".into(),
        };
        if self.has_broker() {
            self.room_event(&r, update.clone());
            self.cluster_signal(room, vec![state.clone()], Some(update))
                .await;
        } else {
            self.room_event(&r, update);
        }
        self.emit_rt(RtKind::Param, room, &state.name, state.value, None);
        Ok(state)
    }

    /// Saves a durable room's settings and parameters; other rooms need nothing.
    pub(crate) async fn persist_params(&self, room: &Room) -> HubResult<()> {
        let info = {
            let st = room.lock();
            if !st.durable {
                return Ok(());
            }
            st.info(room.id())
        };
        self.inner
            .store
            .save_room(&info)
            .await
            .map_err(|e| HubError::new(ErrorCode::Internal, e.to_string()))
    }

    /// Loads the durable rooms kept in the store — settings, parameters, epoch, next
    /// offset and recent history — so they carry on where they were. Call once at start,
    /// before accepting connections. Returns how many rooms were restored.
    pub async fn restore(&self) -> Result<usize, crate::store::StoreError> {
        let rooms = self.inner.store.load_rooms().await?;
        let n = rooms.len();
        for info in rooms {
            let history = self
                .inner
                .store
                .history(&info.id, None, info.history_size)
                .await?;
            let offset = history
                .last()
                .map_or(info.offset, |m| m.offset.max(info.offset));
            let key: Arc<str> = info.id.as_str().into();
            let fresh = RoomState::fresh(
                info.name,
                info.max_connections,
                info.slow_consumer,
                info.history_size,
                Duration::from_secs(info.history_ttl_s),
            );
            let state = RoomState {
                description: info.description,
                code: info.code,
                meta: info.meta,
                created_at: info.created_at,
                expires_at: info.expires_at,
                durable: true,
                epoch: info.epoch,
                offset,
                assigned: offset,
                history: history
                    .into_iter()
                    .map(|m| SharedFrame::new(ServerMessage::Message(m)))
                    .collect(),
                params: info.params,
                ..fresh
            };
            self.inner.rooms.insert(key.clone(), Room::new(key, state));
        }
        Ok(n)
    }

    pub(crate) fn emit_rt(
        &self,
        kind: RtKind,
        room: &str,
        name: &str,
        value: f64,
        at: Option<i64>,
    ) {
        if self.inner.events.rt_wanted() {
            self.inner.events.emit_rt(RtEvent {
                kind,
                room: ShortStr::new(room),
                name: ShortStr::new(name),
                value,
                at_ms: at.unwrap_or_else(now_ms),
            });
        }
    }

    /// Relays a raw-mode frame to the other connections of the endpoint's room.
    pub fn relay_raw(&self, conn: &Arc<Connection>, bytes: bytes::Bytes, text: bool) {
        let Some(members) = self.inner.raw_rooms.get(&raw_key(conn.endpoint())) else {
            return;
        };
        let payload = Payload::Raw { bytes, text };
        for c in members.lock().iter() {
            if !Arc::ptr_eq(c, conn) {
                c.send(payload.clone());
            }
        }
    }

    // ---- shutdown -----------------------------------------------------------------

    /// Begins a graceful shutdown: every connection gets `closed {reason: "shutdown",
    /// retry_after_ms}` and close 1001, spread evenly over `drain` so that clients do not
    /// all come back at once; each gets its own jittered `retry_after_ms`. Resolves when
    /// the last close has been queued.
    pub async fn shutdown(&self, drain: Duration) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let mut conns: Vec<_> = self.inner.connections.iter().map(|c| c.clone()).collect();
        if conns.is_empty() {
            return;
        }
        {
            use rand::seq::SliceRandom;
            conns.shuffle(&mut rand::rng());
        }
        let start = tokio::time::Instant::now();
        let n = conns.len() as u32;
        let drain_ms = drain.as_millis().max(1) as u64;
        for (i, conn) in conns.iter().enumerate() {
            tokio::time::sleep_until(start + drain * (i as u32) / n).await;
            if conn.endpoint().mode == Mode::Protocol {
                let retry_after_ms = 1_000 + rand::random_range(0..drain_ms.max(1_000));
                conn.send(Payload::msg(ServerMessage::Closed {
                    room: None,
                    reason: "shutdown".into(),
                    retry_after_ms: Some(retry_after_ms),
                }));
            }
            conn.queue()
                .close(CloseCode::GOING_AWAY.0, "server shutdown");
        }
    }

    /// Waits until every connection has ended, at most `timeout`; true if all did.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.inner.connections.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    // ---- maintenance --------------------------------------------------------------

    /// Starts the background task that expires rooms past their TTL, drops empty
    /// auto-created rooms after the grace period and prunes rate-limit state. It stops
    /// when the last handle on the hub is dropped.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.config.maintenance_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Hub { inner }.maintain().await;
            }
        })
    }

    /// One round of maintenance (see [`Hub::spawn_maintenance`]).
    pub async fn maintain(&self) {
        let now = now_ms();
        let grace = self.inner.config.empty_room_grace;
        let mut expired = Vec::new();
        let mut abandoned = Vec::new();
        for r in self.inner.rooms.iter() {
            let st = r.lock();
            if st.expires_at.is_some_and(|t| t <= now) {
                expired.push(r.key().clone());
            } else if st.auto_created
                && !st.durable
                && st.members.is_empty()
                && st.empty_since.is_some_and(|t| t.elapsed() >= grace)
            {
                abandoned.push(r.key().clone());
            }
        }
        for id in expired {
            let _ = self.close_room(&id, "expired").await;
        }
        for id in abandoned {
            // Re-check under the map's entry lock: someone may have joined meanwhile.
            self.inner.rooms.remove_if(&id, |_, r| {
                let st = r.lock();
                st.members.is_empty() && st.empty_since.is_some_and(|t| t.elapsed() >= grace)
            });
        }
        self.inner.codes.prune();
    }

    /// The address a connection's code guesses are counted against.
    pub fn code_limited(&self, ip: IpAddr) -> bool {
        self.inner.codes.is_limited(ip)
    }
}

/// Queues one shared frame of `message` for every member not in `except` and keeps it in
/// the history ring. Called with the room locked.
pub(crate) fn fan_out(room: &Room, st: &mut RoomState, message: RoomMessage, except: &[String]) {
    let tag = RoomTag {
        room: room.id_arc().clone(),
        offset: message.offset,
        key: match st.slow_consumer {
            SlowConsumer::Conflate => conflation_key(&message.data),
            _ => None,
        },
        policy: st.slow_consumer,
    };
    let frame = if message
        .offset
        .is_multiple_of(crate::stats::LATENCY_SAMPLE_EVERY)
    {
        SharedFrame::sampled(ServerMessage::Message(message))
    } else {
        SharedFrame::new(ServerMessage::Message(message))
    };
    for (cid, m) in &st.members {
        if !except.iter().any(|e| **e == **cid) {
            m.conn.queue().push_room(Payload::Msg(frame.clone()), &tag);
        }
    }
    st.remember(frame);
}

fn hook_bits(set: HookSet) -> u16 {
    // HookSet is a bit set; compare through its public API.
    let all = [
        HookSet::CONNECT,
        HookSet::MESSAGE,
        HookSet::DIRECT,
        HookSet::JOIN,
        HookSet::LEAVE,
        HookSet::CLOSE,
        HookSet::ERROR,
        HookSet::PING,
        HookSet::PONG,
    ];
    all.iter()
        .enumerate()
        .filter(|(_, h)| set.contains(**h))
        .fold(0, |acc, (i, _)| acc | (1 << i))
}

fn raw_key(endpoint: &EndpointRules) -> String {
    format!("{}\u{0}{}", endpoint.path, endpoint.raw_room)
}

/// The `data.key` a conflating room merges on (strings and numbers).
fn conflation_key(data: &Value) -> Option<Arc<str>> {
    match data.get("key")? {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

fn check_range(name: &str, value: f64, min: f64, max: f64) -> HubResult<()> {
    if !value.is_finite() || value < min || value > max {
        return Err(HubError::bad_request(format!(
            "`{name}` must be within [{min}, {max}], got {value}"
        )));
    }
    Ok(())
}

fn param_state(spec: &ParamSpec) -> HubResult<ParamState> {
    let min = spec.min.unwrap_or(0.0);
    let max = spec.max.unwrap_or(1.0);
    if !(min.is_finite() && max.is_finite()) || min > max {
        return Err(HubError::bad_request(format!(
            "parameter `{}` needs finite min <= max",
            spec.name
        )));
    }
    if spec.name.is_empty() || spec.name.len() > 128 {
        return Err(HubError::bad_request("parameter names are 1 to 128 bytes"));
    }
    check_range(&spec.name, spec.value, min, max)?;
    Ok(ParamState {
        name: spec.name.clone(),
        value: spec.value,
        min,
        max,
    })
}

/// Members listed in `joined`: at most one presence page, so that joining a big room
/// costs one bounded frame; the joiner is always included. The cursor continues after
/// the last listed member in connection-id order.
fn first_members(st: &RoomState, me: &str) -> (Vec<switchboard_protocol::Member>, Option<String>) {
    const PAGE: usize = 100;
    if st.members.len() <= PAGE {
        return (st.members.values().map(MemberEntry::member).collect(), None);
    }
    let mut members: Vec<_> = st.members.values().take(PAGE - 1).collect();
    let cursor = members.last().map(|m| m.conn.id().to_owned());
    if !members.iter().any(|m| m.conn.id() == me)
        && let Some(mine) = st.members.get(me)
    {
        members.push(mine);
    }
    (
        members.into_iter().map(MemberEntry::member).collect(),
        cursor,
    )
}

/// What a joining client missed since `since`, and whether that is everything.
fn recover(st: &RoomState, since: Option<&Since>) -> (Vec<RoomMessage>, bool) {
    let Some(since) = since else {
        return (Vec::new(), true);
    };
    if since.epoch != st.epoch || since.offset > st.offset {
        return (Vec::new(), false);
    }
    if since.offset == st.offset {
        return (Vec::new(), true);
    }
    let complete = st
        .oldest_offset()
        .is_some_and(|oldest| oldest <= since.offset + 1);
    (st.since(since.offset, usize::MAX), complete)
}
