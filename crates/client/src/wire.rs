//! Requests to frames and frames to server messages, in either encoding.

use serde_json::Value;
use switchboard_protocol::{ClientMessage, Encoding, RequestId, ServerMessage};
use tokio_tungstenite::tungstenite::Message;

use crate::ClientError;

/// Encodes `msg` with request id `id` as one WebSocket message.
pub fn encode_request(
    id: i64,
    msg: &ClientMessage,
    encoding: Encoding,
) -> Result<Message, ClientError> {
    let fail = |message: String| ClientError::Encode {
        request: msg.type_name(),
        message,
    };
    let mut value = serde_json::to_value(msg).map_err(|e| fail(e.to_string()))?;
    if let Value::Object(obj) = &mut value {
        obj.insert("id".into(), Value::from(id));
    }
    Ok(match encoding {
        Encoding::Json => Message::text(value.to_string()),
        Encoding::MsgPack => {
            Message::binary(rmp_serde::to_vec_named(&value).map_err(|e| fail(e.to_string()))?)
        }
    })
}

/// Decodes one server frame. `None` for frames that are not protocol messages (control
/// frames, or a message type this client does not know — newer servers may add some).
pub fn decode(frame: &Message) -> Option<ServerMessage> {
    let result = match frame {
        Message::Text(t) => {
            serde_json::from_str::<ServerMessage>(t.as_str()).map_err(|e| e.to_string())
        }
        Message::Binary(b) => rmp_serde::from_slice::<ServerMessage>(b).map_err(|e| e.to_string()),
        _ => return None,
    };
    match result {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a frame that is not a known server message");
            None
        }
    }
}

/// The request id a reply carries.
pub fn reply_id(m: &ServerMessage) -> Option<i64> {
    let id = match m {
        ServerMessage::Pong { id, .. }
        | ServerMessage::Joined { id, .. }
        | ServerMessage::Left { id, .. }
        | ServerMessage::Ack { id, .. }
        | ServerMessage::Presence { id, .. }
        | ServerMessage::History { id, .. }
        | ServerMessage::State { id, .. }
        | ServerMessage::ConnectionId { id, .. }
        | ServerMessage::Error { id, .. }
        | ServerMessage::Sessions { id, .. } => id.as_ref(),
        _ => None,
    };
    match id {
        Some(RequestId::Int(n)) => Some(*n),
        _ => None,
    }
}

/// Requests that may be sent twice without changing the outcome: when the connection drops
/// before their reply they are sent again after the reconnect instead of failing.
pub fn is_repeatable(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::Ping { .. }
            | ClientMessage::Join { .. }
            | ClientMessage::Leave { room: Some(_) }
            | ClientMessage::Presence { .. }
            | ClientMessage::History { .. }
            | ClientMessage::SetMeta { .. }
            | ClientMessage::Sync { .. }
            | ClientMessage::GetConnectionId
            | ClientMessage::GetSessions
    )
}

/// The wire `type` of a server message, for error texts.
pub fn type_of(m: &ServerMessage) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_protocol::decode_client;

    #[test]
    fn requests_carry_their_id_in_both_encodings() {
        let msg = ClientMessage::Publish {
            room: "r".into(),
            data: serde_json::json!({"k": [1, 2]}),
            exclude_self: None,
        };
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let frame = encode_request(7, &msg, enc).unwrap();
            assert_eq!(frame.is_binary(), enc == Encoding::MsgPack);
            let back = decode_client(&frame.into_data(), enc).unwrap();
            assert_eq!(back.id, Some(RequestId::Int(7)));
            assert_eq!(back.msg, msg);
        }
    }

    #[test]
    fn replies_are_matched_by_integer_id_and_unknown_types_are_skipped() {
        let m = decode(&Message::text(
            r#"{"type":"ack","id":3,"room":"r","offset":9}"#,
        ))
        .unwrap();
        assert_eq!(reply_id(&m), Some(3));
        assert_eq!(type_of(&m), "ack");
        assert!(decode(&Message::text(r#"{"type":"from_the_future"}"#)).is_none());
        let m = decode(&Message::text(
            r#"{"type":"gap","room":"r","from_offset":1,"to_offset":2}"#,
        ));
        assert_eq!(m.as_ref().and_then(reply_id), None);
    }
}
