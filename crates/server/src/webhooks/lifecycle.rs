//! Lifecycle events: who came online, who is in which room — derived from the hub's
//! membership changes and handed to [`super::delivery`].
//!
//! The hub tells the [`Tracker`] every connect, disconnect, join and leave, exactly once
//! and (per room) in order, under the room's lock; the tracker keeps just enough state to
//! turn those into the events a backend wants:
//!
//! - `room_occupied` / `room_vacated`: a room got its first member / lost its last one.
//! - `member_joined` / `member_left`: per **client id** — the first connection of a client
//!   to join a room, the last one of that client to leave it. A user with three tabs in a
//!   room is one member, joined once and left once.
//! - `client_online`: a client id got its first connection, and was not within the grace
//!   period of an earlier one (a reconnect within the grace is invisible).
//! - `client_offline`: a client id's last connection closed and none came back within
//!   `offline_grace_ms` — one event however many tabs it had.
//!
//! In a cluster, rooms and members are counted on every node: the hub reports
//! `ClusterRoom` / `ClusterMember` changes, decided atomically in Redis, so exactly one
//! node sends each `room_occupied`, `room_vacated`, `member_joined` and `member_left`
//! (for the members of a node that died: the node that removed them). `client_online`
//! and `client_offline` stay per node: a client with connections on two nodes is online
//! on each.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use switchboard_hub::{Connection, Membership, MembershipObserver};
use switchboard_protocol::Member;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::delivery::{Delivery, Job};
use super::settings::{LifecycleEvent, LifecycleSettings};

/// The body of a lifecycle delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `room_occupied`, `room_vacated`, `member_joined`, `member_left`, `client_online`,
    /// `client_offline`.
    pub event: &'static str,
    /// Unique per event and the same on every attempt: receivers drop duplicates by it.
    pub id: String,
    /// Increases by one per event of this node (since it started), in the order the
    /// events happened.
    pub seq: u64,
    pub node_id: String,
    /// When it happened, ms since the epoch.
    pub ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub client_id: String,
    /// The connection that caused it (for `client_offline`: the last one to close).
    pub connection_id: String,
    /// That connection's endpoint path.
    pub endpoint: String,
    /// `client_offline`: when the last connection closed, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_since: Option<i64>,
}

#[derive(Debug)]
struct Client {
    /// Open connections of this client id.
    conns: u32,
    /// Bumped whenever a pending offline notice is armed or cancelled; a timer carrying
    /// an older value is stale.
    generation: u64,
    /// Set while the last connection is closed and the grace is running.
    pending: Option<Gone>,
}

#[derive(Debug, Clone)]
struct Gone {
    connection_id: String,
    endpoint: String,
    at_ms: i64,
}

#[derive(Debug)]
struct Timer {
    due: Instant,
    client_id: Arc<str>,
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    seq: u64,
    /// room → client id → that client's connections in the room.
    members: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    clients: HashMap<Arc<str>, Client>,
    /// Pending offline notices, in due order: the grace is one fixed length, so a timer
    /// armed later is never due earlier.
    timers: VecDeque<Timer>,
    closed: bool,
}

/// Turns membership changes into lifecycle events.
pub struct Tracker {
    settings: Arc<LifecycleSettings>,
    delivery: Arc<Delivery>,
    node_id: String,
    /// Distinguishes this process's event ids from those of an earlier run of the node.
    boot: String,
    track_members: bool,
    track_clients: bool,
    /// Cluster mode: room and member events come from the cluster's counts.
    cluster: bool,
    state: Mutex<State>,
    wake: Notify,
}

impl Tracker {
    pub fn new(
        settings: Arc<LifecycleSettings>,
        delivery: Arc<Delivery>,
        node_id: &str,
        cluster: bool,
    ) -> Arc<Tracker> {
        let ev = settings.events;
        Arc::new(Tracker {
            track_members: ev.contains(LifecycleEvent::MemberJoined)
                || ev.contains(LifecycleEvent::MemberLeft),
            track_clients: ev.contains(LifecycleEvent::ClientOnline)
                || ev.contains(LifecycleEvent::ClientOffline),
            settings,
            delivery,
            node_id: node_id.to_owned(),
            cluster,
            boot: format!("{:08x}", rand::random::<u32>()),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        })
    }

    /// Sends the offline notices when their grace has run out; runs until [`Tracker::close`].
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = {
                let st = self.state.lock();
                if st.closed {
                    return;
                }
                st.timers.front().map(|t| t.due)
            };
            match next {
                // `Notify` keeps a wake-up sent while we were not waiting, so a timer
                // armed between the check above and this wait is not missed.
                None => self.wake.notified().await,
                Some(due) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        () = self.wake.notified() => {}
                    }
                }
            }
            self.fire_due(Instant::now());
        }
    }

    /// Stops the timers. Offline notices still in their grace are not sent: at shutdown
    /// clients are not offline, they are moving to another node or waiting for this one.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.timers.clear();
        drop(st);
        self.wake.notify_one();
    }

    fn fire_due(&self, now: Instant) {
        let mut st = self.state.lock();
        while st.timers.front().is_some_and(|t| t.due <= now) {
            let Some(t) = st.timers.pop_front() else {
                break;
            };
            let gone = match st.clients.get(&t.client_id) {
                Some(c) if c.generation == t.generation && c.conns == 0 => c.pending.clone(),
                _ => None,
            };
            let Some(gone) = gone else {
                continue;
            };
            st.clients.remove(&t.client_id);
            self.emit(
                &mut st,
                LifecycleEvent::ClientOffline,
                &t.client_id,
                |seq, id, ts| Notice {
                    event: LifecycleEvent::ClientOffline.as_str(),
                    id,
                    seq,
                    node_id: self.node_id.clone(),
                    ts,
                    room: None,
                    client_id: t.client_id.to_string(),
                    connection_id: gone.connection_id,
                    endpoint: gone.endpoint,
                    offline_since: Some(gone.at_ms),
                },
            );
        }
    }

    /// Numbers and queues an event if it is enabled. Called with the state locked, so
    /// numbering and queueing happen in the order of the changes.
    fn emit(
        &self,
        st: &mut State,
        event: LifecycleEvent,
        key: &str,
        build: impl FnOnce(u64, String, i64) -> Notice,
    ) {
        if !self.settings.events.contains(event) {
            return;
        }
        st.seq += 1;
        let seq = st.seq;
        let id = format!("{}.{}.{}", self.node_id, self.boot, seq);
        let notice = build(seq, id, switchboard_hub::clock::now_ms());
        self.delivery.enqueue(key, Job { notice });
    }

    fn notice(
        &self,
        event: LifecycleEvent,
        conn: &Connection,
        room: Option<&str>,
    ) -> impl FnOnce(u64, String, i64) -> Notice {
        let node_id = self.node_id.clone();
        let client_id = conn.client_id().to_owned();
        let connection_id = conn.id().to_owned();
        let endpoint = conn.endpoint().path.clone();
        let room = room.map(str::to_owned);
        move |seq, id, ts| Notice {
            event: event.as_str(),
            id,
            seq,
            node_id,
            ts,
            room,
            client_id,
            connection_id,
            endpoint,
            offline_since: None,
        }
    }

    fn connected(&self, conn: &Connection) {
        if !self.track_clients {
            return;
        }
        let mut st = self.state.lock();
        let client_id = conn.client_id();
        let fresh = match st.clients.get_mut(client_id) {
            Some(c) => {
                c.conns += 1;
                if c.pending.take().is_some() {
                    // Back within the grace: the armed offline notice goes stale.
                    c.generation += 1;
                }
                false
            }
            None => {
                st.clients.insert(
                    client_id.into(),
                    Client {
                        conns: 1,
                        generation: 0,
                        pending: None,
                    },
                );
                true
            }
        };
        if fresh {
            let build = self.notice(LifecycleEvent::ClientOnline, conn, None);
            self.emit(&mut st, LifecycleEvent::ClientOnline, client_id, build);
        }
    }

    fn disconnected(&self, conn: &Connection) {
        if !self.track_clients {
            return;
        }
        let mut st = self.state.lock();
        if st.closed {
            return;
        }
        let due = Instant::now() + self.settings.offline_grace;
        let client_id = conn.client_id();
        let Some(c) = st.clients.get_mut(client_id) else {
            return;
        };
        c.conns = c.conns.saturating_sub(1);
        if c.conns > 0 {
            return;
        }
        c.generation += 1;
        c.pending = Some(Gone {
            connection_id: conn.id().to_owned(),
            endpoint: conn.endpoint().path.clone(),
            at_ms: switchboard_hub::clock::now_ms(),
        });
        let generation = c.generation;
        let was_idle = st.timers.is_empty();
        st.timers.push_back(Timer {
            due,
            client_id: client_id.into(),
            generation,
        });
        drop(st);
        if was_idle {
            self.wake.notify_one();
        }
    }

    fn joined(&self, conn: &Connection, room: &str, first: bool) {
        if self.cluster {
            return;
        }
        let mut st = self.state.lock();
        if first {
            let build = self.notice(LifecycleEvent::RoomOccupied, conn, Some(room));
            self.emit(&mut st, LifecycleEvent::RoomOccupied, room, build);
        }
        if !self.track_members {
            return;
        }
        if !st.members.contains_key(room) {
            st.members.insert(room.into(), HashMap::new());
        }
        let Some(clients) = st.members.get_mut(room) else {
            return;
        };
        let first_of_client = match clients.get_mut(conn.client_id()) {
            Some(n) => {
                *n += 1;
                false
            }
            None => {
                clients.insert(conn.client_id().into(), 1);
                true
            }
        };
        if first_of_client {
            let build = self.notice(LifecycleEvent::MemberJoined, conn, Some(room));
            self.emit(&mut st, LifecycleEvent::MemberJoined, room, build);
        }
    }

    fn left(&self, conn: &Connection, room: &str, last: bool) {
        if self.cluster {
            return;
        }
        let mut st = self.state.lock();
        if self.track_members {
            let mut gone = false;
            if let Some(clients) = st.members.get_mut(room) {
                if let Some(n) = clients.get_mut(conn.client_id()) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        clients.remove(conn.client_id());
                        gone = true;
                    }
                }
                if clients.is_empty() {
                    st.members.remove(room);
                }
            }
            if gone {
                let build = self.notice(LifecycleEvent::MemberLeft, conn, Some(room));
                self.emit(&mut st, LifecycleEvent::MemberLeft, room, build);
            }
        }
        if last {
            let build = self.notice(LifecycleEvent::RoomVacated, conn, Some(room));
            self.emit(&mut st, LifecycleEvent::RoomVacated, room, build);
        }
    }
}

impl Tracker {
    /// A room or member transition counted on every node of the cluster.
    fn cluster_change(
        &self,
        event: LifecycleEvent,
        room: &str,
        member: &Member,
        endpoint: Option<&str>,
    ) {
        let mut st = self.state.lock();
        let node_id = self.node_id.clone();
        let notice = |seq, id, ts| Notice {
            event: event.as_str(),
            id,
            seq,
            node_id,
            ts,
            room: Some(room.to_owned()),
            client_id: member.client_id.clone(),
            connection_id: member.connection_id.clone(),
            endpoint: endpoint.unwrap_or_default().to_owned(),
            offline_since: None,
        };
        self.emit(&mut st, event, room, notice);
    }
}

impl MembershipObserver for Tracker {
    fn on_membership(&self, change: Membership<'_>) {
        match change {
            Membership::Connected { conn } => self.connected(conn),
            Membership::Disconnected { conn } => self.disconnected(conn),
            Membership::Joined { conn, room, first } => self.joined(conn, room, first),
            Membership::Left { conn, room, last } => self.left(conn, room, last),
            Membership::ClusterRoom {
                room,
                occupied,
                member,
                endpoint,
            } => {
                let event = if occupied {
                    LifecycleEvent::RoomOccupied
                } else {
                    LifecycleEvent::RoomVacated
                };
                self.cluster_change(event, room, member, endpoint);
            }
            Membership::ClusterMember {
                room,
                joined,
                member,
                endpoint,
            } => {
                let event = if joined {
                    LifecycleEvent::MemberJoined
                } else {
                    LifecycleEvent::MemberLeft
                };
                self.cluster_change(event, room, member, endpoint);
            }
        }
    }
}
