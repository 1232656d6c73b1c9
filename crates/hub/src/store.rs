//! The `Store` seam: where durable rooms and their history are kept.
//!
//! The hub keeps every room's recent history in memory (the ring in [`crate::room`]);
//! a `Store` is what makes a *durable* room survive a restart. A publish to a durable
//! room is acknowledged only after [`Store::append`] returned. `switchboard-store`
//! implements this trait on SQLite and PostgreSQL; [`MemoryStore`] keeps everything in
//! process (tests, `--store memory`).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use async_trait::async_trait;
use parking_lot::Mutex;
use switchboard_protocol::RoomMessage;

use crate::room::RoomInfo;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (connection lost, disk full, …).
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Persistence for durable rooms.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the store is reachable (readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Every durable room, with its epoch and last offset, for restoring at start.
    async fn load_rooms(&self) -> Result<Vec<RoomInfo>, StoreError>;
    /// Creates or replaces a durable room's settings.
    async fn save_room(&self, room: &RoomInfo) -> Result<(), StoreError>;
    /// Forgets a room and its history.
    async fn delete_room(&self, id: &str) -> Result<(), StoreError>;
    /// Appends messages (in offset order) to a room's history; returns once they are kept.
    async fn append(&self, room: &str, messages: &[RoomMessage]) -> Result<(), StoreError>;
    /// Messages with offset > `since` (or the newest when `None`), oldest first.
    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, StoreError>;
}

/// A [`Store`] that keeps everything in memory: nothing survives the process.
///
/// Follows the same rules as the SQL stores in `switchboard-store` (the shared
/// conformance suite runs on all of them):
/// - a saved room keeps at most its newest `history_size` messages (0 keeps none),
///   trimmed on every append and when a save shrinks the bound;
/// - saving a room again with the same epoch never moves its offset backwards; saving it
///   with a new epoch drops the old epoch's messages and takes the new offset;
/// - appends to a room that was never saved are kept, untrimmed, but the room is not
///   listed by `load_rooms`;
/// - `load_rooms` lists rooms by id, with no members and the highest offset reached.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    rooms: BTreeMap<String, RoomInfo>,
    history: HashMap<String, BTreeMap<u64, RoomMessage>>,
}

impl MemoryState {
    /// Drops a saved room's oldest messages beyond its bound.
    fn trim(&mut self, room: &str) {
        let (Some(info), Some(ring)) = (self.rooms.get(room), self.history.get_mut(room)) else {
            return;
        };
        while ring.len() > info.history_size {
            ring.pop_first();
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let st = self.state.lock();
        Ok(st
            .rooms
            .values()
            .map(|info| {
                let mut info = info.clone();
                if let Some((&last, _)) = st.history.get(&info.id).and_then(|r| r.last_key_value())
                {
                    info.offset = info.offset.max(last);
                }
                info.members_count = 0;
                info
            })
            .collect())
    }

    async fn save_room(&self, room: &RoomInfo) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        let mut info = room.clone();
        match st.rooms.get(&room.id) {
            // A save taken before the latest appends must not move the offset back.
            Some(old) if old.epoch == room.epoch => info.offset = info.offset.max(old.offset),
            // A new epoch restarts offsets: the old epoch's messages would collide.
            Some(_) => {
                st.history.remove(&room.id);
            }
            None => {}
        }
        st.rooms.insert(room.id.clone(), info);
        // The bound may have shrunk.
        st.trim(&room.id);
        Ok(())
    }

    async fn delete_room(&self, id: &str) -> Result<(), StoreError> {
        let mut st = self.state.lock();
        st.rooms.remove(id);
        st.history.remove(id);
        Ok(())
    }

    async fn append(&self, room: &str, messages: &[RoomMessage]) -> Result<(), StoreError> {
        let Some(last) = messages.iter().map(|m| m.offset).max() else {
            return Ok(());
        };
        let mut st = self.state.lock();
        let ring = st.history.entry(room.to_owned()).or_default();
        for m in messages {
            ring.insert(m.offset, m.clone());
        }
        if let Some(info) = st.rooms.get_mut(room) {
            info.offset = info.offset.max(last);
            st.trim(room);
        }
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, StoreError> {
        let st = self.state.lock();
        let Some(ring) = st.history.get(room) else {
            return Ok(Vec::new());
        };
        Ok(match since {
            Some(s) => ring
                .range((Bound::Excluded(s), Bound::Unbounded))
                .take(limit)
                .map(|(_, m)| m.clone())
                .collect(),
            None => {
                let skip = ring.len().saturating_sub(limit);
                ring.values().skip(skip).cloned().collect()
            }
        })
    }
}
