//! What travels on the channels and sits in the streams (JSON).
//!
//! A room channel carries [`RoomWire`]: messages (assembled by the publish script, see
//! [`crate::scripts::PUBLISH`]), presence changes and signals (parameter changes,
//! triggers). A node's channel and the all-nodes
//! channel carry [`NodeWire`] commands.

use serde::{Deserialize, Serialize};
use switchboard_hub::{Envelope, NodeCommand, PresenceChange, RoomSignal};
use switchboard_protocol::RoomMessage;

/// One item on a room channel (and, for messages, in the room's stream).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum RoomWire {
    /// A numbered message.
    #[serde(rename = "m")]
    Message {
        /// Offset.
        o: u64,
        /// Epoch.
        e: String,
        message: RoomMessage,
        except: Vec<String>,
    },
    /// A member joined or left on some node.
    #[serde(rename = "p")]
    Presence(PresenceChange),
    /// A parameter defined or set, or a trigger, on some node.
    #[serde(rename = "s")]
    Signal(RoomSignal),
}

/// The part of a message the publishing node encodes; the script prepends offset and
/// epoch.
#[derive(Serialize)]
struct Body<'a> {
    message: &'a RoomMessage,
    except: &'a [String],
}

/// The body of a message for [`crate::scripts::PUBLISH`]: a JSON object without its
/// opening brace.
pub fn message_body(message: &RoomMessage, except: &[String]) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(&Body { message, except })?;
    Ok(json.get(1..).unwrap_or_default().to_owned())
}

/// Decodes a room channel payload or stream entry.
pub fn decode_room(payload: &[u8]) -> Result<RoomWire, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// A decoded message as the hub takes it.
pub fn envelope(o: u64, e: String, mut message: RoomMessage, except: Vec<String>) -> Envelope {
    message.offset = o;
    Envelope {
        message,
        except,
        epoch: e,
    }
}

/// A command between nodes, with its sender (the all-nodes channel reaches the sender
/// too, which ignores its own).
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeWire {
    pub from: String,
    pub command: NodeCommand,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_completes_into_a_message() {
        let m = RoomMessage {
            room: "r".into(),
            data: serde_json::json!({"n": 12345678901234567u64, "s": "\"}"}),
            from: "c".into(),
            connection_id: Some("x".into()),
            offset: 0,
            ts: 1_700_000_000_000,
        };
        let body = message_body(&m, &["x".into()]).unwrap();
        let payload = format!("{{\"k\":\"m\",\"o\":7,\"e\":\"ep\",{body}");
        match decode_room(payload.as_bytes()).unwrap() {
            RoomWire::Message {
                o,
                e,
                message,
                except,
            } => {
                assert_eq!((o, e.as_str()), (7, "ep"));
                assert_eq!(message.data, m.data, "large integers survive");
                assert_eq!(except, vec!["x".to_owned()]);
            }
            RoomWire::Presence(_) | RoomWire::Signal(_) => panic!("decoded as another kind"),
        }
    }
}
