//! [`RedisBroker`]: the hub's [`Broker`] on Redis.
//!
//! Commands go through one `ConnectionManager` (multiplexed, reconnecting); the pub/sub
//! side is the [`crate::subscriber`] task, reached through a bounded channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use switchboard_hub::{
    Broker, BrokerError, ClusterPosition, ConnectionInfo, Divergence, Envelope, Hub, NodeCommand,
    PresenceChange, PresenceCounts, RemoteMember, RoomInfo, RoomSignal,
};
use tokio::sync::{mpsc, oneshot};

use crate::error::ClusterError;
use crate::keys::Keys;
use crate::subscriber::SubCommand;
use crate::wire::{self, NodeWire, RoomWire};

/// Cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (unique in the cluster).
    pub node_id: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// How often the node announces itself and refreshes its entries.
    pub heartbeat: Duration,
    /// A node silent for this long is dead: its members leave presence everywhere.
    pub node_ttl: Duration,
    /// How long a room's offset, epoch and history outlive its last publish.
    pub room_ttl: Duration,
    /// Longest wait for one Redis command.
    pub response_timeout: Duration,
    /// Longest pause between two reconnection attempts.
    pub max_backoff: Duration,
    /// Messages kept per room in its Redis stream (what recovery on any node can reach;
    /// a room's own `history_size` bounds what it serves).
    pub stream_len: usize,
    /// Messages received on the pub/sub connection and not yet handed to the hub, at
    /// most; past it messages are dropped and the node resynchronises its rooms.
    pub inbox: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "node-1".into(),
            prefix: "switchboard".into(),
            heartbeat: Duration::from_secs(10),
            node_ttl: Duration::from_secs(30),
            room_ttl: Duration::from_secs(24 * 3600),
            response_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(5),
            stream_len: 1000,
            inbox: crate::subscriber::INBOX,
        }
    }
}

/// Connection-index changes waiting for the index writer, at most.
const INDEX_QUEUE: usize = 4096;
/// Subscription requests waiting for the subscriber task, at most.
const SUB_QUEUE: usize = 1024;

pub(crate) struct Shared {
    pub config: ClusterConfig,
    pub keys: Keys,
    /// The same server, spoken to in RESP3 (the pub/sub connection).
    pub pubsub_client: redis::Client,
    /// Messages dropped because this node fell behind its pub/sub connection.
    pub pubsub_dropped: Arc<AtomicU64>,
    pub conn: ConnectionManager,
    publish: redis::Script,
    position: redis::Script,
    define: redis::Script,
    presence: redis::Script,
    /// The pub/sub connection is up and subscribed.
    pub subscribed: AtomicBool,
    /// The last command on `conn` succeeded.
    pub commands_ok: AtomicBool,
    pub sub_tx: mpsc::Sender<SubCommand>,
    pub index_tx: mpsc::Sender<(ConnectionInfo, bool)>,
}

/// The Redis broker of one node.
#[derive(Clone)]
pub struct RedisBroker {
    pub(crate) shared: Arc<Shared>,
}

impl RedisBroker {
    /// Connects to Redis at `url`, plugs the broker into `hub` and starts the node's
    /// tasks (subscriber, heartbeat and reaper, connection index). Fails if Redis cannot
    /// be reached now; later outages are survived.
    pub async fn start(hub: &Hub, url: &str, config: ClusterConfig) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(ClusterError::Url)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(config.response_timeout)
            .set_response_timeout(config.response_timeout)
            .set_number_of_retries(1)
            .set_max_delay(config.max_backoff.as_millis() as u64);
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await?;
        let (sub_tx, sub_rx) = mpsc::channel(SUB_QUEUE);
        let (index_tx, index_rx) = mpsc::channel(INDEX_QUEUE);
        // The pub/sub connection speaks RESP3: messages arrive as pushes, which this
        // engine can bound (see `crate::subscriber`).
        let mut info =
            redis::IntoConnectionInfo::into_connection_info(url).map_err(ClusterError::Url)?;
        info.redis.protocol = redis::ProtocolVersion::RESP3;
        let pubsub_client = redis::Client::open(info).map_err(ClusterError::Url)?;
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.prefix),
            pubsub_client,
            pubsub_dropped: Arc::new(AtomicU64::new(0)),
            config,
            conn,
            publish: redis::Script::new(crate::scripts::PUBLISH),
            position: redis::Script::new(crate::scripts::POSITION),
            define: redis::Script::new(crate::scripts::DEFINE),
            presence: redis::Script::new(crate::scripts::PRESENCE),
            subscribed: AtomicBool::new(false),
            commands_ok: AtomicBool::new(true),
            sub_tx,
            index_tx,
        });
        let broker = RedisBroker { shared };
        let link = crate::subscriber::connect(&broker).await?;
        crate::subscriber::spawn(broker.clone(), hub.downgrade(), link, sub_rx);
        crate::heartbeat::spawn(broker.clone(), hub.downgrade(), index_rx);
        hub.set_broker(Arc::new(broker.clone()));
        Ok(broker)
    }

    /// A handle on the command connection.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    pub(crate) fn node(&self) -> &str {
        &self.shared.config.node_id
    }

    /// Records whether Redis answered, for readiness.
    pub(crate) fn answered<T>(&self, r: redis::RedisResult<T>) -> Result<T, ClusterError> {
        self.shared.commands_ok.store(r.is_ok(), Ordering::Relaxed);
        r.map_err(ClusterError::from)
    }

    fn ttl_ms(&self) -> u64 {
        self.shared.config.room_ttl.as_millis() as u64
    }

    async fn sub(
        &self,
        make: impl FnOnce(oneshot::Sender<bool>) -> SubCommand,
    ) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .sub_tx
            .send(make(tx))
            .await
            .map_err(|_| BrokerError::Unavailable("subscriber stopped".into()))?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(BrokerError::Unavailable(
                "not subscribed now; will be on reconnection".into(),
            )),
        }
    }

    /// Messages of `room` with offsets `from..=to` still in its stream, oldest first.
    pub(crate) async fn range(
        &self,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Envelope>, ClusterError> {
        let mut conn = self.conn();
        let reply: redis::RedisResult<Vec<StreamEntry>> = redis::cmd("XRANGE")
            .arg(self.keys().log(room))
            .arg(format!("{from}-0"))
            .arg(format!("{to}-0"))
            .query_async(&mut conn)
            .await;
        let entries = self.answered(reply)?;
        Ok(entries
            .into_iter()
            .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
            .filter_map(|payload| match wire::decode_room(&payload) {
                Ok(RoomWire::Message {
                    o,
                    e,
                    message,
                    except,
                }) => Some(wire::envelope(o, e, message, except)),
                _ => None,
            })
            .collect())
    }

    /// Runs the presence script for a change (of this node's member, or of a dead
    /// node's member being reaped).
    pub(crate) async fn apply_presence(
        &self,
        change: PresenceChange,
    ) -> Result<PresenceCounts, ClusterError> {
        let k = self.keys();
        let room = change.room.clone();
        let id = change.member.connection_id.clone();
        let client = change.member.client_id.clone();
        let joined = change.joined;
        let limit = change.limit;
        let entry = serde_json::to_string(&RemoteMember {
            node: change.node.clone(),
            member: change.member.clone(),
        })
        .map_err(|e| ClusterError::Data(e.to_string()))?;
        let payload = serde_json::to_string(&RoomWire::Presence(change))
            .map_err(|e| ClusterError::Data(e.to_string()))?;
        let mut conn = self.conn();
        let r: redis::RedisResult<(i64, usize, usize)> = self
            .shared
            .presence
            .key(k.members(&room))
            .key(k.room_clients(&room))
            .arg(if joined { "1" } else { "0" })
            .arg(&id)
            .arg(entry)
            .arg(&client)
            .arg(self.ttl_ms())
            .arg(k.room_channel(&room))
            .arg(payload)
            .arg(limit.map(|l| l.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await;
        let (changed, room_members, client_members) = self.answered(r)?;
        Ok(PresenceCounts {
            refused: changed == -1,
            changed: changed == 1,
            room_members,
            client_members,
        })
    }

    /// Live nodes other than this one.
    pub(crate) async fn other_nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn();
        let since = now_ms() - self.shared.config.node_ttl.as_millis() as i64;
        let nodes: redis::RedisResult<Vec<String>> =
            conn.zrangebyscore(self.keys().nodes(), since, "+inf").await;
        let me = self.node();
        Ok(self
            .answered(nodes)?
            .into_iter()
            .filter(|n| n != me)
            .collect())
    }
}

/// One stream entry as XRANGE returns it: id and field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, envelope: Envelope) -> Result<u64, BrokerError> {
        let room = envelope.message.room.clone();
        let body = wire::message_body(&envelope.message, &envelope.except)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let k = self.keys();
        let mut conn = self.conn();
        let history = self.shared.config.stream_len;
        let reply: redis::RedisResult<(u64, String)> = self
            .shared
            .publish
            .key(k.seq(&room))
            .key(k.epoch(&room))
            .key(k.log(&room))
            .arg(envelope.message.offset)
            .arg(fresh_epoch())
            .arg(history)
            .arg(self.ttl_ms())
            .arg(k.room_channel(&room))
            .arg(body)
            .invoke_async(&mut conn)
            .await;
        let (offset, _epoch) = self.answered(reply)?;
        Ok(offset)
    }

    async fn subscribe(&self, room: &str) -> Result<(), BrokerError> {
        let room = room.to_owned();
        self.sub(|reply| SubCommand::Subscribe(room, reply)).await
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), BrokerError> {
        let room = room.to_owned();
        self.sub(|reply| SubCommand::Unsubscribe(room, reply)).await
    }

    fn is_ready(&self) -> bool {
        self.shared.subscribed.load(Ordering::Relaxed)
            && self.shared.commands_ok.load(Ordering::Relaxed)
    }

    /// Messages this node dropped because it fell behind its pub/sub connection (each
    /// episode is followed by a resynchronisation of its rooms).
    fn dropped_messages(&self) -> u64 {
        self.shared.pubsub_dropped.load(Ordering::Relaxed)
    }

    async fn position(
        &self,
        room: &str,
        limit: usize,
        diverged: Option<&Divergence>,
    ) -> Result<Option<ClusterPosition>, BrokerError> {
        let k = self.keys();
        let mut conn = self.conn();
        type Position = (String, u64, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);
        let reply: redis::RedisResult<Position> = self
            .shared
            .position
            .key(k.seq(room))
            .key(k.epoch(room))
            .key(k.log(room))
            .key(k.members(room))
            .key(k.params(room))
            .arg(fresh_epoch())
            .arg(limit.max(1))
            .arg(diverged.map(|d| d.floor.to_string()).unwrap_or_default())
            .arg(self.ttl_ms())
            .arg(diverged.map(|d| d.left_epoch.as_str()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await;
        let (epoch, offset, log, members, params) = self.answered(reply)?;
        let mut messages: Vec<Envelope> = log
            .iter()
            .filter_map(|p| match wire::decode_room(p) {
                Ok(RoomWire::Message {
                    o,
                    e,
                    message,
                    except,
                }) if e == epoch => Some(wire::envelope(o, e, message, except)),
                _ => None,
            })
            .collect();
        messages.reverse();
        let remote_members = members
            .iter()
            .filter_map(|m| serde_json::from_slice::<RemoteMember>(m).ok())
            .filter(|m| m.node != self.node())
            .collect();
        let params = params
            .iter()
            .filter_map(|p| serde_json::from_slice(p).ok())
            .collect();
        Ok(Some(ClusterPosition {
            epoch: Some(epoch),
            offset,
            messages,
            remote_members,
            params,
        }))
    }

    async fn messages_between(
        &self,
        room: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<Envelope>, BrokerError> {
        Ok(self.range(room, from, to).await?)
    }

    async fn presence(
        &self,
        change: PresenceChange,
    ) -> Result<Option<PresenceCounts>, BrokerError> {
        let joined = change.joined;
        let room = change.room.clone();
        let counts = self.apply_presence(change).await?;
        if joined {
            // The reaper's list of rooms this node announced members in.
            let mut conn = self.conn();
            let r: redis::RedisResult<()> =
                conn.sadd(self.keys().node_rooms(self.node()), &room).await;
            self.answered(r)?;
        }
        Ok(Some(counts))
    }

    async fn signal(&self, signal: RoomSignal) -> Result<(), BrokerError> {
        let k = self.keys();
        let room = signal.room.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !signal.params.is_empty() {
            for p in &signal.params {
                let state = serde_json::to_string(p)
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                pipe.hset(k.params(&room), &p.name, state).ignore();
            }
            pipe.pexpire(k.params(&room), self.ttl_ms() as i64).ignore();
        }
        let payload = serde_json::to_string(&RoomWire::Signal(signal))
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        pipe.publish(k.room_channel(&room), payload).ignore();
        let mut conn = self.conn();
        let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        self.answered(r)?;
        Ok(())
    }

    async fn locate(&self, target: &str) -> Result<Vec<String>, BrokerError> {
        let nodes = self.other_nodes().await?;
        if nodes.is_empty() {
            return Ok(nodes);
        }
        let k = self.keys();
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.hexists(k.node_conns(n), target);
            pipe.hget(k.node_clients(n), target);
        }
        let mut conn = self.conn();
        let r: redis::RedisResult<Vec<(bool, Option<i64>)>> = async {
            let flat: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let mut out = Vec::new();
            for pair in flat.chunks(2) {
                let has: bool = redis::from_redis_value(&pair[0])?;
                let count: Option<i64> = redis::from_redis_value(&pair[1])?;
                out.push((has, count));
            }
            Ok(out)
        }
        .await;
        let found = self.answered(r)?;
        Ok(nodes
            .into_iter()
            .zip(found)
            .filter(|(_, (has, count))| *has || count.is_some_and(|c| c > 0))
            .map(|(n, _)| n)
            .collect())
    }

    async fn command(&self, node: Option<&str>, command: NodeCommand) -> Result<(), BrokerError> {
        let payload = serde_json::to_string(&NodeWire {
            from: self.node().to_owned(),
            command,
        })
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let channel = match node {
            Some(n) => self.keys().node_channel(n),
            None => self.keys().all_channel(),
        };
        let mut conn = self.conn();
        let r: redis::RedisResult<i64> = conn.publish(channel, payload).await;
        self.answered(r)?;
        Ok(())
    }

    async fn remote_connections(&self) -> Result<Vec<ConnectionInfo>, BrokerError> {
        let nodes = self.other_nodes().await?;
        let mut pipe = redis::pipe();
        for n in &nodes {
            pipe.hvals(self.keys().node_conns(n));
        }
        let mut conn = self.conn();
        let r: redis::RedisResult<Vec<Vec<Vec<u8>>>> = pipe.query_async(&mut conn).await;
        Ok(self
            .answered(r)?
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_slice(&v).ok())
            .collect())
    }

    async fn define_room(&self, room: &RoomInfo) -> Result<bool, BrokerError> {
        let k = self.keys();
        let json =
            serde_json::to_string(room).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let ttl = room.expires_at.map(|t| (t - now_ms()).max(1));
        let score = room
            .expires_at
            .map_or_else(|| "+inf".to_owned(), |t| t.to_string());
        let mut conn = self.conn();
        // The script (not a pipeline: a pipelined EVALSHA does not load the script
        // into a Redis that lost it).
        let r: redis::RedisResult<i64> = self
            .shared
            .define
            .key(k.definition(&room.id))
            .key(k.members(&room.id))
            .arg(json)
            .arg(ttl.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await;
        let defined = self.answered(r)?;
        if defined == 1 {
            // The index for listing; NX keeps the expiry of an entry already there.
            let r: redis::RedisResult<()> = redis::cmd("ZADD")
                .arg(k.rooms())
                .arg("NX")
                .arg(score)
                .arg(&room.id)
                .query_async(&mut conn)
                .await;
            self.answered(r)?;
        }
        Ok(defined == 1)
    }

    async fn room_definition(&self, id: &str) -> Result<Option<RoomInfo>, BrokerError> {
        let mut conn = self.conn();
        let r: redis::RedisResult<Option<Vec<u8>>> = conn.get(self.keys().definition(id)).await;
        Ok(self
            .answered(r)?
            .and_then(|json| serde_json::from_slice(&json).ok()))
    }

    async fn room_definitions(&self) -> Result<Vec<RoomInfo>, BrokerError> {
        let k = self.keys();
        let mut conn = self.conn();
        let r: redis::RedisResult<((), Vec<String>)> = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(k.rooms())
            .arg("-inf")
            .arg(now_ms())
            .cmd("ZRANGE")
            .arg(k.rooms())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await;
        let ((), ids) = self.answered(r)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.get(k.definition(id));
        }
        let r: redis::RedisResult<Vec<Option<Vec<u8>>>> = pipe.query_async(&mut conn).await;
        Ok(self
            .answered(r)?
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_slice(&json).ok())
            .collect())
    }

    async fn forget_room(&self, id: &str) -> Result<bool, BrokerError> {
        let k = self.keys();
        let mut conn = self.conn();
        let r: redis::RedisResult<(i64, bool)> = redis::pipe()
            .del(k.definition(id))
            .zrem(k.rooms(), id)
            .ignore()
            .exists(k.members(id))
            .query_async(&mut conn)
            .await;
        let (deleted, has_members) = self.answered(r)?;
        Ok(deleted > 0 || has_members)
    }

    async fn member_counts(&self, rooms: &[String]) -> Result<Option<Vec<usize>>, BrokerError> {
        if rooms.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut pipe = redis::pipe();
        for r in rooms {
            pipe.hlen(self.keys().members(r));
        }
        let mut conn = self.conn();
        let r: redis::RedisResult<Vec<usize>> = pipe.query_async(&mut conn).await;
        Ok(Some(self.answered(r)?))
    }

    fn connection_changed(&self, info: &ConnectionInfo, open: bool) {
        // Never waits: when the writer is this far behind, the next heartbeat rewrites
        // the whole index anyway.
        if self.shared.index_tx.try_send((info.clone(), open)).is_err() {
            tracing::debug!("connection index update deferred to the next heartbeat");
        }
    }
}
