//! Conversions between the hub's types and table rows, shared by both backends.
//!
//! Encoding happens in the caller's task (before a write is queued), so the writer task
//! spends its time on SQL only, and a value that cannot be stored fails its own caller
//! instead of a whole group commit.

use std::time::{SystemTime, UNIX_EPOCH};

use switchboard_hub::{RoomInfo, StoreError};
use switchboard_protocol::RoomMessage;

/// A `messages` row, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct MessageRow {
    pub room: String,
    pub offset: i64,
    /// The message's `data` as JSON text.
    pub data: String,
    pub from: String,
    pub connection_id: Option<String>,
    pub ts: i64,
}

/// A `rooms` row, ready to bind.
#[derive(Debug, Clone)]
pub(crate) struct RoomRow {
    pub id: String,
    /// The whole `RoomInfo` as JSON text.
    pub info: String,
    pub epoch: String,
    pub last_offset: i64,
    pub history_size: i64,
}

/// The columns `history` selects, in order: offset, data, from, connection_id, ts.
pub(crate) type MessageColumns = (i64, String, String, Option<String>, i64);

/// The columns `load_rooms` selects, in order: info, epoch, last_offset, max message
/// offset, history_size.
pub(crate) type RoomColumns = (String, String, i64, Option<i64>, i64);

pub(crate) fn encode_room(info: &RoomInfo) -> Result<RoomRow, StoreError> {
    let json = serde_json::to_string(info)
        .map_err(|e| StoreError::Backend(format!("room `{}`: cannot encode: {e}", info.id)))?;
    Ok(RoomRow {
        id: info.id.clone(),
        info: json,
        epoch: info.epoch.clone(),
        last_offset: to_i64(info.offset, "offset")?,
        history_size: to_i64(info.history_size as u64, "history_size")?,
    })
}

pub(crate) fn encode_messages(
    room: &str,
    messages: &[RoomMessage],
) -> Result<Vec<MessageRow>, StoreError> {
    messages
        .iter()
        .map(|m| {
            Ok(MessageRow {
                // The `room` argument is the key the hub asked for; a message's own `room`
                // field is not trusted to match it.
                room: room.to_owned(),
                offset: to_i64(m.offset, "offset")?,
                data: serde_json::to_string(&m.data).map_err(|e| {
                    StoreError::Backend(format!("room `{room}`: cannot encode message: {e}"))
                })?,
                from: m.from.clone(),
                connection_id: m.connection_id.clone(),
                ts: m.ts,
            })
        })
        .collect()
}

pub(crate) fn decode_message(room: &str, cols: MessageColumns) -> Result<RoomMessage, StoreError> {
    let (offset, data, from, connection_id, ts) = cols;
    Ok(RoomMessage {
        room: room.to_owned(),
        data: serde_json::from_str(&data).map_err(|e| {
            StoreError::Backend(format!(
                "room `{room}`: stored message {offset} is not valid JSON: {e}"
            ))
        })?,
        from,
        connection_id,
        offset: from_i64(offset),
        ts,
    })
}

/// A stored room as the hub restores it: its offset is the highest it ever reached in this
/// epoch (the stored info, the tracked `last_offset` and the newest kept message), so
/// offsets continue after a restart. A restored room has no members yet.
pub(crate) fn decode_room(cols: RoomColumns) -> Result<RoomInfo, StoreError> {
    let (info, epoch, last_offset, max_message, history_size) = cols;
    let mut room: RoomInfo = serde_json::from_str(&info)
        .map_err(|e| StoreError::Backend(format!("a stored room is unreadable: {e}")))?;
    room.epoch = epoch;
    room.history_size = usize::try_from(history_size).unwrap_or(room.history_size);
    room.offset = room
        .offset
        .max(from_i64(last_offset))
        .max(max_message.map_or(0, from_i64));
    room.members_count = 0;
    Ok(room)
}

/// SQL integers are signed 64-bit; an offset past `i64::MAX` cannot be stored.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Backend(format!("{what} {value} is too large to store")))
}

fn from_i64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A bound for SQL `LIMIT`/`OFFSET`: anything past `i64::MAX` means "no bound" anyway.
pub(crate) fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
