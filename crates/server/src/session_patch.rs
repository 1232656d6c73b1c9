//! Reading the body of `PATCH /api/sessions/{id}` strictly.
//!
//! [`SessionChanges`] reads an absent field and a `null` alike (both "unchanged") and
//! ignores fields it does not know, which suits the WebSocket `update_session` message.
//! Over REST that leniency hides mistakes: `{"volum": 0.5}` or `{"name": null}` would
//! change nothing and say nothing. So a REST update names at least one known field and
//! gives each a value; anything else is a 400 that says which field is wrong.

use serde_json::Value;
use switchboard_protocol::playback::SessionChanges;

/// The fields a session update may carry, taken from [`SessionChanges`] itself (every
/// field set, serialized), so a field added there is accepted here too.
fn known_fields() -> Vec<String> {
    let all = SessionChanges {
        name: Some(String::new()),
        active: Some(false),
        playing: Some(false),
        position: Some(0),
        seek: Some(0.0),
        volume: Some(0.0),
        playlist: Some(Vec::new()),
        audio_zone_id: Some(0),
        active_players: Some(Vec::new()),
    };
    match serde_json::to_value(all) {
        Ok(Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// Checks the shape of an update and reads it; the error is the message for the client.
pub fn parse(body: Value) -> Result<SessionChanges, String> {
    let Value::Object(fields) = &body else {
        return Err("a session update must be a JSON object".into());
    };
    let known = known_fields();
    for (name, value) in fields {
        if !known.iter().any(|k| k == name) {
            return Err(format!(
                "unknown field `{name}`; a session update may set {}",
                known.join(", ")
            ));
        }
        if value.is_null() {
            return Err(format!("`{name}` must not be null"));
        }
    }
    if fields.is_empty() {
        return Err("nothing to change: give at least one field".into());
    }
    crate::json_body::read(body)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde_json::json;

    #[test]
    fn reads_known_fields() {
        let c = parse(json!({"volume": 0.5, "name": "x"})).unwrap();
        assert_eq!(c.volume, Some(0.5));
        assert_eq!(c.name.as_deref(), Some("x"));
    }

    #[test]
    fn every_field_of_session_changes_is_known() {
        for f in [
            "name",
            "active",
            "playing",
            "position",
            "seek",
            "volume",
            "playlist",
            "audio_zone_id",
            "active_players",
        ] {
            assert!(super::known_fields().iter().any(|k| k == f), "{f}");
        }
    }

    #[test]
    fn rejects_unknown_null_empty_and_mistyped() {
        let e = parse(json!({"volum": 0.5})).unwrap_err();
        assert!(e.contains("unknown field `volum`"), "{e}");
        let e = parse(json!({"name": null})).unwrap_err();
        assert!(e.contains("`name` must not be null"), "{e}");
        let e = parse(json!({})).unwrap_err();
        assert!(e.contains("nothing to change"), "{e}");
        assert!(parse(json!([1])).is_err());
        assert!(parse(json!({"volume": "loud"})).is_err());
    }
}
