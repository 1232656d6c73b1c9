//! Which rooms to rejoin and where each one left off: the bookkeeping behind "no message
//! lost, none twice" across reconnects.
//!
//! For every room it has seen, the client remembers the epoch and the offset of the last
//! message delivered. A rejoin sends `since: {offset, epoch}`; the server answers `joined`
//! with the missed messages in `recovered`, then live messages follow (the server queues
//! `joined` under the room lock, so live ones start right after its `offset`). A message
//! whose offset is not above the last one seen in its room and epoch is a duplicate — seen
//! live before the drop and recovered again, say — and is dropped here.

use std::collections::HashMap;

use switchboard_protocol::{Map, RoomMessage, Since};

/// Where a room left off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// What the client sent when it joined, so that it can join the same way again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JoinedRoom {
    pub code: Option<String>,
    pub meta: Option<Map>,
}

/// What a `joined` means for the application.
#[derive(Debug, Default, PartialEq)]
pub struct JoinOutcome {
    /// Recovered messages to deliver, in offset order, duplicates removed.
    pub deliver: Vec<RoomMessage>,
    /// Set when the client had a position and the server could not recover everything.
    pub incomplete: Option<Position>,
}

/// Rooms the client is in, and positions of every room it has seen.
#[derive(Debug, Default)]
pub struct Rooms {
    joined: HashMap<String, JoinedRoom>,
    positions: HashMap<String, Position>,
}

impl Rooms {
    /// The `since` to send when joining `room`: the last position seen, if any.
    pub fn since(&self, room: &str) -> Option<Since> {
        self.positions.get(room).map(|p| Since {
            offset: p.offset,
            epoch: p.epoch.clone(),
        })
    }

    /// The position of `room`.
    pub fn position(&self, room: &str) -> Option<&Position> {
        self.positions.get(room)
    }

    /// Rooms to rejoin after a reconnect, with how they were joined.
    pub fn joined(&self) -> impl Iterator<Item = (&String, &JoinedRoom)> {
        self.joined.iter()
    }

    /// True while the client counts itself in `room`.
    pub fn is_joined(&self, room: &str) -> bool {
        self.joined.contains_key(room)
    }

    /// A live or recovered message: true when it is new and must be delivered.
    pub fn accept(&mut self, m: &RoomMessage) -> bool {
        match self.positions.get_mut(&m.room) {
            Some(p) if m.offset <= p.offset => false,
            Some(p) => {
                p.offset = m.offset;
                true
            }
            // A message of a room without a position (not joined through this client):
            // nothing to compare against.
            None => true,
        }
    }

    /// A `joined` arrived (first join or rejoin).
    pub fn on_joined(
        &mut self,
        room: &str,
        how: JoinedRoom,
        epoch: &str,
        offset: u64,
        recovered: Vec<RoomMessage>,
        complete: bool,
    ) -> JoinOutcome {
        self.joined.insert(room.to_owned(), how);
        let previous = self.positions.get(room).cloned();
        let mut out = JoinOutcome::default();
        if let Some(prev) = &previous {
            if !complete || prev.epoch != epoch {
                out.incomplete = Some(prev.clone());
            }
            if prev.epoch == epoch {
                let mut recovered = recovered;
                recovered.sort_by_key(|m| m.offset);
                for m in recovered {
                    if self.accept(&m) {
                        out.deliver.push(m);
                    }
                }
            }
        }
        // Live messages follow `joined` and start after its offset.
        self.positions.insert(
            room.to_owned(),
            Position {
                epoch: epoch.to_owned(),
                offset: offset.max(match self.positions.get(room) {
                    Some(p) if p.epoch == epoch => p.offset,
                    _ => 0,
                }),
            },
        );
        out
    }

    /// The client left `room` (or it was closed): it is not rejoined, but its position is
    /// kept so that joining it again recovers from there.
    pub fn forget(&mut self, room: &str) {
        self.joined.remove(room);
    }

    /// How `room` was joined, if the client is in it.
    pub fn how(&self, room: &str) -> Option<&JoinedRoom> {
        self.joined.get(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(room: &str, offset: u64) -> RoomMessage {
        RoomMessage {
            room: room.into(),
            data: json!(offset),
            from: "a".into(),
            connection_id: None,
            offset,
            ts: 0,
        }
    }

    #[test]
    fn recovered_and_live_overlap_is_delivered_once_in_order() {
        let mut r = Rooms::default();
        let out = r.on_joined("r", JoinedRoom::default(), "e1", 2, vec![], true);
        assert_eq!(out, JoinOutcome::default());
        assert!(r.accept(&msg("r", 3)));
        assert!(r.accept(&msg("r", 4)));
        assert!(!r.accept(&msg("r", 4)), "a duplicate is dropped");
        assert_eq!(r.since("r").unwrap().offset, 4);
        // Reconnect: 4 (already seen) and 5..7 recovered, out of order.
        let out = r.on_joined(
            "r",
            JoinedRoom::default(),
            "e1",
            7,
            vec![msg("r", 6), msg("r", 4), msg("r", 5), msg("r", 7)],
            true,
        );
        let got: Vec<u64> = out.deliver.iter().map(|m| m.offset).collect();
        assert_eq!(got, [5, 6, 7]);
        assert_eq!(out.incomplete, None);
        assert!(!r.accept(&msg("r", 7)));
        assert!(r.accept(&msg("r", 8)));
    }

    #[test]
    fn holes_and_new_epochs_are_reported() {
        let mut r = Rooms::default();
        r.on_joined("r", JoinedRoom::default(), "e1", 10, vec![], true);
        let out = r.on_joined(
            "r",
            JoinedRoom::default(),
            "e1",
            50,
            vec![msg("r", 45)],
            false,
        );
        assert_eq!(out.deliver.len(), 1);
        assert_eq!(
            out.incomplete,
            Some(Position {
                epoch: "e1".into(),
                offset: 10
            })
        );
        // The room came back with a new epoch: nothing of the old numbering is delivered.
        let out = r.on_joined(
            "r",
            JoinedRoom::default(),
            "e2",
            3,
            vec![msg("r", 1)],
            false,
        );
        assert!(out.deliver.is_empty());
        assert_eq!(out.incomplete.unwrap().epoch, "e1");
        assert_eq!(r.position("r").unwrap().epoch, "e2");
        assert!(r.accept(&msg("r", 4)));
    }

    #[test]
    fn forgotten_rooms_are_not_rejoined_but_keep_their_position() {
        let mut r = Rooms::default();
        r.on_joined("r", JoinedRoom::default(), "e", 5, vec![], true);
        r.forget("r");
        assert!(!r.is_joined("r"));
        assert_eq!(r.joined().count(), 0);
        assert_eq!(r.since("r").unwrap().offset, 5);
    }
}
