//! A room: its settings, its members, its offset counter, its history ring and its
//! parameters — all behind one short-held lock per room, so rooms never contend with
//! each other and a publish assigns its offset and fans out in one critical section
//! (every member sees one order).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use switchboard_protocol::{Map, Member, ParamState, RoomMessage, ServerMessage};

use crate::connection::Connection;
use crate::endpoint::SlowConsumer;
use crate::frame::SharedFrame;

/// What a room is created with (REST `POST /api/rooms`, [`crate::Hub::create_room`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct RoomSpec {
    /// Room id; generated when absent.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_:.-]{1,128}$"))]
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub max_connections: Option<usize>,
    /// `true` to generate a code, or a code of 4–8 digits.
    pub code: Option<CodeSpec>,
    /// Seconds until the room expires.
    pub ttl_s: Option<u64>,
    pub history_size: Option<usize>,
    /// Seconds a message stays in history (0 = until pushed out by newer ones).
    pub history_ttl_s: Option<u64>,
    pub durable: Option<bool>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub meta: Option<Map>,
    pub params: Option<Vec<ParamSpec>>,
    /// Slow-consumer policy for this room (defaults to the endpoint's).
    pub slow_consumer: Option<SlowConsumer>,
}

/// A room code request: generate one, or use the given digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum CodeSpec {
    Generate(bool),
    Digits(String),
}

/// A parameter definition: its range and initial value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamSpec {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub name: String,
    pub value: f64,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// A room's public description (PROTOCOL §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub max_connections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub meta: Map,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub members_count: usize,
    pub history_size: usize,
    /// Seconds a message stays in history; 0 = no age limit.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub history_ttl_s: u64,
    pub durable: bool,
    pub params: Vec<ParamState>,
    pub slow_consumer: SlowConsumer,
    pub epoch: String,
    pub offset: u64,
}

/// A member: the connection plus what its join added.
#[derive(Debug, Clone)]
pub(crate) struct MemberEntry {
    pub conn: Arc<Connection>,
    pub join_meta: Option<Map>,
    pub joined_at: i64,
}

impl MemberEntry {
    pub fn member(&self) -> Member {
        let mut meta = self.conn.meta();
        if let Some(extra) = &self.join_meta {
            for (k, v) in extra {
                meta.insert(k.clone(), v.clone());
            }
        }
        Member {
            client_id: self.conn.client_id().to_owned(),
            connection_id: self.conn.id().to_owned(),
            name: self.conn.name().map(str::to_owned),
            meta,
            joined_at: self.joined_at,
        }
    }
}

/// Everything about a room that changes; guarded by the room's lock.
#[derive(Debug)]
pub(crate) struct RoomState {
    pub name: String,
    pub description: String,
    pub max_connections: usize,
    pub code: Option<String>,
    pub meta: Map,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub durable: bool,
    /// Created by a join rather than explicitly; dropped when empty for a while.
    pub auto_created: bool,
    pub slow_consumer: SlowConsumer,
    pub history_size: usize,
    /// Age limit of history entries, in ms; 0 = none.
    pub history_ttl_ms: i64,
    pub members: BTreeMap<Arc<str>, MemberEntry>,
    pub epoch: String,
    /// The newest offset members have been sent (what `joined`, `history` and the room
    /// object report).
    pub offset: u64,
    /// The newest offset handed out; ahead of `offset` while durable messages wait for
    /// the store.
    pub assigned: u64,
    /// Durable messages kept by the store but not yet fanned out because an earlier
    /// offset is still being written (`None`: the write failed, skip the offset).
    pub pending: BTreeMap<u64, Option<(RoomMessage, Vec<String>)>>,
    /// The newest `history_size` messages, oldest first, as the same shared frames that
    /// were fanned out (no second copy of each message is kept).
    pub history: VecDeque<Arc<SharedFrame>>,
    pub params: Vec<ParamState>,
    /// When the room last became empty (monotonic ms), for the empty-room grace period.
    pub empty_since: Option<std::time::Instant>,
    pub closed: bool,
}

impl RoomState {
    /// An empty, open room with a new epoch, counted as empty from now (so that a room
    /// nobody manages to join is still cleaned up). Callers set what differs with
    /// struct-update syntax.
    pub fn fresh(
        name: String,
        max_connections: usize,
        slow_consumer: SlowConsumer,
        history_size: usize,
        history_ttl: std::time::Duration,
    ) -> Self {
        RoomState {
            name,
            description: String::new(),
            max_connections: max_connections.max(1),
            code: None,
            meta: Map::new(),
            created_at: crate::clock::now_ms(),
            expires_at: None,
            durable: false,
            auto_created: false,
            slow_consumer,
            history_size,
            history_ttl_ms: history_ttl.as_millis().min(i64::MAX as u128) as i64,
            members: BTreeMap::new(),
            epoch: new_epoch(),
            offset: 0,
            assigned: 0,
            pending: BTreeMap::new(),
            history: VecDeque::new(),
            params: Vec::new(),
            empty_since: Some(std::time::Instant::now()),
            closed: false,
        }
    }

    /// A room as defined on another node of the cluster (its settings; the position is
    /// the cluster's, taken when this node starts serving it).
    pub fn from_definition(def: &RoomInfo) -> Self {
        let mut st = RoomState::fresh(
            def.name.clone(),
            def.max_connections,
            def.slow_consumer,
            def.history_size,
            std::time::Duration::from_secs(def.history_ttl_s),
        );
        st.take_definition(def);
        st.params = def.params.clone();
        st
    }

    /// Takes the settings of a room definition (not its members, position or
    /// parameters).
    pub fn take_definition(&mut self, def: &RoomInfo) {
        self.name = def.name.clone();
        self.description = def.description.clone();
        self.max_connections = def.max_connections.max(1);
        self.code = def.code.clone();
        self.meta = def.meta.clone();
        self.created_at = def.created_at;
        self.expires_at = def.expires_at;
        self.durable = def.durable;
        self.auto_created = false;
        self.slow_consumer = def.slow_consumer;
        self.history_size = def.history_size;
        self.history_ttl_ms = (def.history_ttl_s.saturating_mul(1000)).min(i64::MAX as u64) as i64;
    }

    pub fn info(&self, id: &str) -> RoomInfo {
        RoomInfo {
            id: id.to_owned(),
            name: self.name.clone(),
            description: self.description.clone(),
            max_connections: self.max_connections,
            code: self.code.clone(),
            meta: self.meta.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            members_count: self.members.len(),
            history_size: self.history_size,
            history_ttl_s: (self.history_ttl_ms / 1000) as u64,
            durable: self.durable,
            params: self.params.clone(),
            slow_consumer: self.slow_consumer,
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// Appends a message to the history ring, evicting the oldest past the bound.
    pub fn remember(&mut self, frame: Arc<SharedFrame>) {
        self.expire_history(crate::clock::now_ms());
        if self.history_size == 0 {
            return;
        }
        while self.history.len() >= self.history_size {
            self.history.pop_front();
        }
        self.history.push_back(frame);
    }

    /// Drops history entries older than the room's TTL. Entries are in time order, so
    /// this only ever looks at the front.
    pub fn expire_history(&mut self, now_ms: i64) {
        if self.history_ttl_ms <= 0 {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.history_ttl_ms);
        while self
            .history
            .front()
            .and_then(|f| message_of(f))
            .is_some_and(|m| m.ts < cutoff)
        {
            self.history.pop_front();
        }
    }

    /// The oldest offset still in history, if any.
    pub fn oldest_offset(&self) -> Option<u64> {
        self.history
            .front()
            .and_then(|f| message_of(f).map(|m| m.offset))
    }

    /// Messages with offset > `since`, oldest first, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<RoomMessage> {
        self.history
            .iter()
            .filter_map(|f| message_of(f))
            .filter(|m| m.offset > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest `limit` messages, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<RoomMessage> {
        let skip = self.history.len().saturating_sub(limit);
        self.history
            .iter()
            .skip(skip)
            .filter_map(|f| message_of(f))
            .cloned()
            .collect()
    }

    pub fn param_mut(&mut self, name: &str) -> Option<&mut ParamState> {
        self.params.iter_mut().find(|p| p.name == name)
    }
}

fn message_of(frame: &SharedFrame) -> Option<&RoomMessage> {
    match frame.message() {
        ServerMessage::Message(m) => Some(m),
        _ => None,
    }
}

/// A room registered in the hub.
#[derive(Debug)]
pub struct Room {
    id: Arc<str>,
    state: Mutex<RoomState>,
}

impl Room {
    pub(crate) fn new(id: Arc<str>, state: RoomState) -> Arc<Self> {
        Arc::new(Room {
            id,
            state: Mutex::new(state),
        })
    }

    /// The room id.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock()
    }

    /// The room's public description.
    pub fn info(&self) -> RoomInfo {
        self.state.lock().info(&self.id)
    }
}

/// A fresh epoch: random, so a restarted non-durable room never reuses one.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}
