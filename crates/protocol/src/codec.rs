//! Turning frames into messages and back, in either encoding.
//!
//! Decoding goes through a `serde_json::Value` first. That costs one extra pass but lets
//! every failure be reported precisely — a frame that is not JSON, an `id` that is too
//! long, a missing `type`, an unknown `type`, a missing or mistyped field — each with the
//! request id when one could be read, which is what PROTOCOL §11 asks for.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{ClientMessage, MAX_ID_LEN, Request, RequestId};
use crate::codes::ErrorCode;

/// How messages are encoded on a connection, chosen by subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `switchboard.json`: JSON in text frames (the default).
    #[default]
    Json,
    /// `switchboard.msgpack`: MessagePack maps in binary frames.
    MsgPack,
}

impl Encoding {
    /// The subprotocol names, in the server's order of preference.
    pub const SUBPROTOCOLS: [&'static str; 2] = ["switchboard.json", "switchboard.msgpack"];

    /// The encoding a subprotocol name stands for.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name {
            "switchboard.json" => Some(Encoding::Json),
            "switchboard.msgpack" => Some(Encoding::MsgPack),
            _ => None,
        }
    }

    /// The subprotocol name of this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => "switchboard.json",
            Encoding::MsgPack => "switchboard.msgpack",
        }
    }

    /// True when frames of this encoding are binary frames.
    pub fn is_binary(self) -> bool {
        matches!(self, Encoding::MsgPack)
    }
}

/// A frame that could not be understood, already shaped as the `error` to send back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The request id, when it could be read and was valid.
    pub id: Option<RequestId>,
    /// Always [`ErrorCode::BadRequest`] today; kept explicit for the reply.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

impl DecodeError {
    fn bad(id: Option<RequestId>, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }
}

/// Deepest nesting of arrays and maps a frame may have (serde_json's own limit).
const MAX_DEPTH: usize = 128;

/// Decodes one client frame.
pub fn decode_client(frame: &[u8], encoding: Encoding) -> Result<Request, DecodeError> {
    let value: Value = match encoding {
        Encoding::Json => serde_json::from_slice(frame)
            .map_err(|e| DecodeError::bad(None, format!("malformed JSON: {e}")))?,
        Encoding::MsgPack => {
            // The same nesting limit as serde_json's (128): rmp_serde's own default (1024)
            // is deep enough to overflow a 2 MiB task stack with a 64 KiB frame.
            let mut de = rmp_serde::Deserializer::new(frame);
            de.set_max_depth(MAX_DEPTH);
            Value::deserialize(&mut de)
                .map_err(|e| DecodeError::bad(None, format!("malformed MessagePack: {e}")))?
        }
    };
    decode_value(value)
}

/// Decodes a client message that is already a JSON value.
pub fn decode_value(mut value: Value) -> Result<Request, DecodeError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(DecodeError::bad(None, "a message must be an object"));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_LEN => Some(RequestId::Str(s)),
        Some(Value::String(_)) => {
            return Err(DecodeError::bad(
                None,
                format!("`id` is longer than {MAX_ID_LEN} characters"),
            ));
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Some(RequestId::Int(i)),
            None => {
                return Err(DecodeError::bad(
                    None,
                    "`id` must be an integer or a string",
                ));
            }
        },
        Some(_) => {
            return Err(DecodeError::bad(
                None,
                "`id` must be an integer or a string",
            ));
        }
    };
    match obj.get("type") {
        None => return Err(DecodeError::bad(id, "missing field `type`")),
        Some(Value::String(t)) if ClientMessage::TYPES.contains(&t.as_str()) => {}
        Some(Value::String(t)) => {
            return Err(DecodeError::bad(id, format!("unknown message type `{t}`")));
        }
        Some(_) => return Err(DecodeError::bad(id, "`type` must be a string")),
    }
    match serde_json::from_value::<ClientMessage>(value) {
        Ok(msg) => Ok(Request { id, msg }),
        Err(e) => Err(DecodeError::bad(id, e.to_string())),
    }
}

/// Encodes any serializable message (normally a [`crate::ServerMessage`]) as one frame
/// payload.
pub fn encode<T: Serialize + ?Sized>(msg: &T, encoding: Encoding) -> Result<Bytes, EncodeError> {
    match encoding {
        Encoding::Json => Ok(Bytes::from(serde_json::to_vec(msg)?)),
        Encoding::MsgPack => Ok(Bytes::from(rmp_serde::to_vec_named(msg)?)),
    }
}

/// Encoding failed: only possible for values JSON cannot represent (e.g. NaN).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    #[error("MessagePack encoding failed: {0}")]
    MsgPack(#[from] rmp_serde::encode::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ServerMessage, Since};
    use serde_json::json;

    fn decode(s: &str) -> Result<Request, DecodeError> {
        decode_client(s.as_bytes(), Encoding::Json)
    }

    #[test]
    fn decodes_a_join_with_recovery_and_numeric_code() {
        let r = decode(
            r#"{"type":"join","id":7,"room":"r1","code":1234,"since":{"offset":3,"epoch":"e"}}"#,
        )
        .unwrap();
        assert_eq!(r.id, Some(RequestId::Int(7)));
        assert_eq!(
            r.msg,
            ClientMessage::Join {
                room: "r1".into(),
                code: Some("1234".into()),
                since: Some(Since {
                    offset: 3,
                    epoch: "e".into()
                }),
                meta: None,
            }
        );
    }

    #[test]
    fn ignores_unknown_fields() {
        let r = decode(r#"{"type":"ping","client_time":5,"extra":[1,2]}"#).unwrap();
        assert_eq!(
            r.msg,
            ClientMessage::Ping {
                client_time: Some(5)
            }
        );
    }

    #[test]
    fn malformed_json_is_bad_request_without_id() {
        let e = decode("{nope").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, None);
    }

    #[test]
    fn unknown_type_keeps_the_id() {
        let e = decode(r#"{"type":"teleport","id":"a"}"#).unwrap_err();
        assert_eq!(e.id, Some(RequestId::Str("a".into())));
        assert!(e.message.contains("teleport"));
    }

    #[test]
    fn missing_type_keeps_the_id() {
        let e = decode(r#"{"id":"x","room":"r"}"#).unwrap_err();
        assert_eq!(e.id, Some("x".into()));
        assert!(e.message.contains("type"));
    }

    #[test]
    fn missing_and_mistyped_fields_are_reported() {
        let e = decode(r#"{"type":"publish","id":1,"room":"r"}"#).unwrap_err();
        assert!(e.message.contains("data"), "{}", e.message);
        assert_eq!(e.id, Some(RequestId::Int(1)));
        let e = decode(r#"{"type":"param","room":"r","param":"p","value":"high"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn overlong_id_is_rejected_without_echoing_it() {
        let id = "x".repeat(65);
        let e = decode(&format!(r#"{{"type":"ping","id":"{id}"}}"#)).unwrap_err();
        assert_eq!(e.id, None);
        assert!(decode(&format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(64))).is_ok());
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(decode("[1,2]").is_err());
        assert!(decode("\"join\"").is_err());
    }

    #[test]
    fn msgpack_round_trips_a_publish() {
        let frame =
            rmp_serde::to_vec_named(&json!({"type":"publish","room":"r","data":{"k":1},"id":"p"}))
                .unwrap();
        let r = decode_client(&frame, Encoding::MsgPack).unwrap();
        assert_eq!(r.id, Some("p".into()));
        assert!(matches!(r.msg, ClientMessage::Publish { .. }));
    }

    #[test]
    fn server_messages_encode_with_their_type_and_without_absent_fields() {
        let bytes = encode(&ServerMessage::ack(None), Encoding::Json).unwrap();
        assert_eq!(&bytes[..], br#"{"type":"ack"}"#);
        let m = ServerMessage::error(Some(3.into()), ErrorCode::NotInRoom, "join first");
        let v: Value = serde_json::from_slice(&encode(&m, Encoding::Json).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","id":3,"code":"NOT_IN_ROOM","message":"join first"})
        );
    }

    #[test]
    fn session_updates_carry_only_what_changed() {
        let r = decode(
            r#"{"type":"update_session","id":1,"session_id":4,"volume":0.5,"playing":true}"#,
        )
        .unwrap();
        let ClientMessage::UpdateSession {
            session_id,
            changes,
        } = r.msg
        else {
            panic!("not an update");
        };
        assert_eq!(session_id, 4);
        assert_eq!(
            (changes.volume, changes.playing, changes.name.as_deref()),
            (Some(0.5), Some(true), None)
        );
        let out = ServerMessage::SessionUpdated {
            session_id,
            changes,
        };
        let v: Value = serde_json::from_slice(&encode(&out, Encoding::Json).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"type":"session_updated","session_id":4,"volume":0.5,"playing":true})
        );
    }

    #[test]
    fn server_messages_decode_from_msgpack() {
        let m = ServerMessage::Gap {
            room: "r".into(),
            from_offset: 2,
            to_offset: 4,
        };
        let bytes = encode(&m, Encoding::MsgPack).unwrap();
        let back: ServerMessage = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// Frames nested as deep as `max_message_size` allows must be refused, not recursed
    /// into until the stack overflows (a server task has a 2 MiB stack).
    #[test]
    fn deeply_nested_frames_do_not_overflow_a_small_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let mut mp = vec![0x91u8; 65_000];
                mp.push(0xc0);
                let mut json = "[".repeat(65_000).into_bytes();
                json.extend(std::iter::repeat_n(b']', 65_000));
                (
                    decode_client(&mp, Encoding::MsgPack).is_err(),
                    decode_client(&json, Encoding::Json).is_err(),
                )
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), (true, true));
    }
}
