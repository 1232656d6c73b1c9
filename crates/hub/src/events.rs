//! What clients did, for the embedding application: an async stream of [`HubEvent`]s and
//! a lock-free, allocation-free queue of [`RtEvent`]s for a real-time thread.
//!
//! Both are off until asked for ([`crate::Hub::events`], [`crate::Hub::realtime_queue`]),
//! and cost one atomic load per event while off.
//!
//! A third outlet, [`MembershipObserver`], hears who connects, disconnects, joins and
//! leaves — exactly once each and in order — for bookkeeping that must never miss a beat
//! (the server's lifecycle webhooks). See [`crate::Hub::set_membership_observer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::Stream;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::connection::Connection;
use switchboard_protocol::Member;

/// Something a client did.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    Connected {
        connection_id: String,
        client_id: String,
    },
    Disconnected {
        connection_id: String,
        client_id: String,
    },
    Joined {
        connection_id: String,
        room: String,
    },
    Left {
        connection_id: String,
        room: String,
    },
    Message {
        connection_id: String,
        room: String,
        offset: u64,
        data: Value,
    },
    Direct {
        connection_id: String,
        to: String,
        data: Value,
    },
    Param {
        connection_id: String,
        room: String,
        param: String,
        value: f64,
        at: Option<i64>,
    },
    Trigger {
        connection_id: String,
        room: String,
        name: String,
        data: Value,
        at: i64,
    },
    /// The subscriber fell behind and missed this many events.
    Lagged(u64),
}

/// A fixed-capacity string that fits in a `Copy` event (longer text is cut at a char
/// boundary).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortStr {
    len: u8,
    bytes: [u8; 32],
}

impl ShortStr {
    /// Copies up to 32 bytes of `s`.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(32);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 32];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        ShortStr {
            len: end as u8,
            bytes,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// Kinds of real-time event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtKind {
    Param,
    Trigger,
}

/// A parameter change or trigger, small and `Copy`, for a real-time (e.g. audio) thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RtEvent {
    pub kind: RtKind,
    pub room: ShortStr,
    /// The parameter or trigger name.
    pub name: ShortStr,
    /// The parameter value (0 for triggers).
    pub value: f64,
    /// When to apply it, ms since the epoch on the server clock (now when not scheduled).
    pub at_ms: i64,
}

/// A change of who is connected or who is in a room (see [`MembershipObserver`]).
#[derive(Debug, Clone, Copy)]
pub enum Membership<'a> {
    /// A connection was registered (any endpoint mode).
    Connected { conn: &'a Arc<Connection> },
    /// A connection ended, after it left its rooms.
    Disconnected { conn: &'a Arc<Connection> },
    /// `conn` became a member of `room`; `first` when the room had no member on this node.
    Joined {
        conn: &'a Arc<Connection>,
        room: &'a str,
        first: bool,
    },
    /// `conn` stopped being a member of `room`; `last` when no member is left on this node.
    Left {
        conn: &'a Arc<Connection>,
        room: &'a str,
        last: bool,
    },
    /// Cluster mode: `room` got its first member on any node (`occupied`), or lost its
    /// last one everywhere. Reported by exactly one node, the one whose change made the
    /// difference (for the members of a dead node: the node that removed them), after
    /// the change reached the broker — not under the room's lock.
    ClusterRoom {
        room: &'a str,
        occupied: bool,
        member: &'a Member,
        /// The endpoint of the member's connection, when this node held it.
        endpoint: Option<&'a str>,
    },
    /// Cluster mode: `member.client_id` got its first connection in `room` counting every
    /// node (`joined`), or its last one there left. Reported by exactly one node.
    ClusterMember {
        room: &'a str,
        joined: bool,
        member: &'a Member,
        endpoint: Option<&'a str>,
    },
}

/// Hears every [`Membership`] change exactly once. Unlike [`HubEvent`]s, nothing is ever
/// dropped, and the changes of one room arrive in the order they happened: joins and
/// leaves are reported under the room's lock. So the observer must be quick, must not
/// block and must not call back into the hub — record and hand off.
pub trait MembershipObserver: Send + Sync + 'static {
    fn on_membership(&self, change: Membership<'_>);
}

/// Fan-out of events to the application.
pub(crate) struct EventSinks {
    tx: broadcast::Sender<HubEvent>,
    rt_enabled: AtomicBool,
    rt: Mutex<Option<rtrb::Producer<RtEvent>>>,
    rt_dropped: std::sync::atomic::AtomicU64,
    membership_on: AtomicBool,
    membership: parking_lot::RwLock<Option<Arc<dyn MembershipObserver>>>,
}

impl EventSinks {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventSinks {
            tx,
            rt_enabled: AtomicBool::new(false),
            rt: Mutex::new(None),
            rt_dropped: Default::default(),
            membership_on: AtomicBool::new(false),
            membership: parking_lot::RwLock::new(None),
        }
    }

    /// Tells the membership observer, if there is one (one atomic load otherwise).
    pub fn membership(&self, change: Membership<'_>) {
        if !self.membership_on.load(Ordering::Acquire) {
            return;
        }
        if let Some(o) = self.membership.read().as_ref() {
            o.on_membership(change);
        }
    }

    pub fn set_membership_observer(&self, observer: Arc<dyn MembershipObserver>) {
        *self.membership.write() = Some(observer);
        self.membership_on.store(true, Ordering::Release);
    }

    /// True when someone listens; check before building an event.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn emit(&self, ev: HubEvent) {
        let _ = self.tx.send(ev);
    }

    pub fn rt_wanted(&self) -> bool {
        self.rt_enabled.load(Ordering::Relaxed)
    }

    /// Pushes without blocking; a full queue drops the event (counted) rather than stall.
    pub fn emit_rt(&self, ev: RtEvent) {
        if let Some(p) = self.rt.lock().as_mut()
            && p.push(ev).is_err()
        {
            self.rt_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rt_dropped(&self) -> u64 {
        self.rt_dropped.load(Ordering::Relaxed)
    }

    pub fn realtime_queue(&self, capacity: usize) -> rtrb::Consumer<RtEvent> {
        let (producer, consumer) = rtrb::RingBuffer::new(capacity.max(1));
        *self.rt.lock() = Some(producer);
        self.rt_enabled.store(true, Ordering::Relaxed);
        consumer
    }

    pub fn subscribe(self: &Arc<Self>) -> impl Stream<Item = HubEvent> + Send + 'static {
        let rx = self.tx.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(ev) => Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((HubEvent::Lagged(n), rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ShortStr;

    #[test]
    fn short_str_cuts_at_a_char_boundary() {
        let s = ShortStr::new(&"é".repeat(20));
        assert_eq!(s.as_str(), "é".repeat(16));
        assert_eq!(ShortStr::new("gain").as_str(), "gain");
    }
}
