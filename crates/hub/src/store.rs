//! The `Store` seam: where durable rooms and their history are kept.
//!
//! The hub keeps every room's recent history in memory (the ring in [`crate::room`]);
//! a `Store` is what makes a *durable* room survive a restart. A publish to a durable
//! room is acknowledged only after [`Store::append`] returned. `switchboard-store`
//! implements this trait on SQLite and PostgreSQL; [`MemoryStore`] keeps everything in
//! process (tests, `--store memory`).

use std::collections::{BTreeMap, HashMap};

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
#[derive(Debug, Default)]
pub struct MemoryStore {
    rooms: Mutex<HashMap<String, RoomInfo>>,
    history: Mutex<HashMap<String, BTreeMap<u64, RoomMessage>>>,
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
        Ok(self.rooms.lock().values().cloned().collect())
    }

    async fn save_room(&self, room: &RoomInfo) -> Result<(), StoreError> {
        self.rooms.lock().insert(room.id.clone(), room.clone());
        Ok(())
    }

    async fn delete_room(&self, id: &str) -> Result<(), StoreError> {
        self.rooms.lock().remove(id);
        self.history.lock().remove(id);
        Ok(())
    }

    async fn append(&self, room: &str, messages: &[RoomMessage]) -> Result<(), StoreError> {
        let mut all = self.history.lock();
        let ring = all.entry(room.to_owned()).or_default();
        for m in messages {
            ring.insert(m.offset, m.clone());
        }
        if let Some(info) = self.rooms.lock().get_mut(room)
            && let Some(last) = messages.last()
        {
            info.offset = info.offset.max(last.offset);
            // Keep the stored history within the room's bound.
            while ring.len() > info.history_size.max(1) {
                ring.pop_first();
            }
        }
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RoomMessage>, StoreError> {
        let all = self.history.lock();
        let Some(ring) = all.get(room) else {
            return Ok(Vec::new());
        };
        Ok(match since {
            Some(s) => ring
                .range(s + 1..)
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
