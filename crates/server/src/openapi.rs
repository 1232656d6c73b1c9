//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the REST API, generated from the
//! code.
//!
//! Where it comes from:
//! - each handler in [`crate::api`] carries `#[utoipa::path]` and is mounted through
//!   `utoipa_axum::routes!`, so the routes and their descriptions are one list;
//! - the bodies are the types of [`crate::api_types`], the hub's room and connection
//!   objects and the protocol's playback objects, which derive `ToSchema` under their
//!   `openapi` feature (the server turns it on; the core crates stay lean without it);
//! - `refine` then states what derive attributes cannot: the rules every `/api`
//!   operation shares (bearer token, 401/403; 413/415 for JSON bodies), closed answer
//!   objects, the room code's `true | "digits"` shape, and the upper bound of unsigned
//!   integers.
//!
//! The document is built once, on first use, and served as the same bytes afterwards.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api_types::ANSWER_SCHEMAS;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard REST API",
        description = "Rooms, messages, connections and playback sessions of a Switchboard \
            server (PROTOCOL §8, §11). Every `/api` route needs `Authorization: Bearer <api \
            token>` when the server has an `api_token`; without one, only loopback peers are \
            served (others get 403). Errors are `{\"error\":{\"code\",\"message\"}}`."
    ),
    paths(crate::api::healthz, crate::api::readyz),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    tags(
        (name = "rooms", description = "Rooms, their messages, history, presence and parameters"),
        (name = "connections", description = "Connected clients, direct messages and broadcasts"),
        (name = "playback", description = "Shared playback sessions, audio zones and players, per profile"),
        (name = "meta", description = "Health and this document"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The server's `api_token`. Without a configured token the API \
                         serves loopback peers only, with no credentials.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as JSON.
pub fn build() -> Value {
    let (_, described) = crate::api::routes().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(described);
    let mut value = serde_json::to_value(&doc).unwrap_or_else(|_| json!({}));
    refine(&mut value);
    value
}

/// The document as served: built once, then the same bytes every time.
pub fn document() -> Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| Bytes::from(serde_json::to_vec(&build()).unwrap_or_default()))
        .clone()
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// What the derive cannot say; see the module documentation.
fn refine(doc: &mut Value) {
    bound_unsigned(doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                if path.starts_with("/api/") {
                    api_operation_rules(op);
                } else {
                    // /healthz and /readyz are open whatever the API token.
                    op.insert("security".into(), json!([]));
                }
            }
        }
        paths.insert("/metrics".into(), metrics_path());
    }
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in ANSWER_SCHEMAS {
        if let Some(s) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
            s.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    // A session update must change something and names only known fields
    // (crate::session_patch).
    if let Some(s) = schemas
        .get_mut("SessionChanges")
        .and_then(Value::as_object_mut)
    {
        s.insert("minProperties".into(), json!(1));
        s.insert("additionalProperties".into(), Value::Bool(false));
    }
    // `code` is `true` (generate one), `false` (none) or 4 to 8 digits.
    schemas.insert(
        "CodeSpec".into(),
        json!({
            "description": "`true` to generate a code, `false` for none, or a code of 4 to 8 digits",
            "oneOf": [
                {"type": "boolean"},
                {"type": "string", "pattern": "^[0-9]{4,8}$"}
            ]
        }),
    );
}

/// The rules every `/api` operation shares: the guard's 401/403, and for a JSON body
/// the extractor's 413/415.
fn api_operation_rules(op: &mut Map<String, Value>) {
    let has_body = op.contains_key("requestBody");
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    responses.entry("401").or_insert_with(|| {
        error_response("An API token is configured and this one is missing or wrong")
    });
    responses.entry("403").or_insert_with(|| {
        error_response("No API token is configured and the peer is not on loopback")
    });
    if has_body {
        responses
            .entry("413")
            .or_insert_with(|| error_response("The body is over the size limit"));
        responses
            .entry("415")
            .or_insert_with(|| error_response("The body is not `application/json`"));
    }
}

fn metrics_path() -> Value {
    json!({
        "get": {
            "tags": ["meta"],
            "summary": "Prometheus metrics",
            "operationId": "metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}
                }
            }
        }
    })
}

/// Unsigned integers (`minimum` of 0 or more) get their real upper bound, `u64::MAX`: a larger
/// number does not fit the field and is refused with a 400, so the document says so. Their
/// format becomes `uint64` (the whole u64 range is accepted, beyond `int64`'s).
fn bound_unsigned(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            let integer = match m.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer
                && m.get("minimum")
                    .and_then(Value::as_f64)
                    .is_some_and(|v| v >= 0.0)
                && !m.contains_key("maximum")
            {
                m.insert("maximum".into(), json!(u64::MAX));
                // utoipa spells u64 as `int64`, whose range stops at i64::MAX.
                if m.get("format").is_some_and(|f| f == "int64") {
                    m.insert("format".into(), json!("uint64"));
                }
            }
            for v in m.values_mut() {
                bound_unsigned(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
        ops.sort();
        ops
    }

    #[test]
    fn documents_every_route_of_the_protocol() {
        let doc = build();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let want = [
            ("GET", "/api/rooms"),
            ("POST", "/api/rooms"),
            ("GET", "/api/rooms/{id}"),
            ("DELETE", "/api/rooms/{id}"),
            ("POST", "/api/rooms/{id}/messages"),
            ("GET", "/api/rooms/{id}/history"),
            ("GET", "/api/rooms/{id}/presence"),
            ("POST", "/api/rooms/{id}/join"),
            ("POST", "/api/rooms/{id}/leave"),
            ("POST", "/api/rooms/{id}/params"),
            ("POST", "/api/broadcast"),
            ("GET", "/api/connections"),
            ("GET", "/api/connections/{id}"),
            ("DELETE", "/api/connections/{id}"),
            ("GET", "/api/connections/{id}/rooms"),
            ("POST", "/api/connections/{id}/messages"),
            ("GET", "/api/sessions"),
            ("POST", "/api/sessions"),
            ("GET", "/api/sessions/{id}"),
            ("PATCH", "/api/sessions/{id}"),
            ("DELETE", "/api/sessions/{id}"),
            ("GET", "/api/audio-zones"),
            ("POST", "/api/audio-zones"),
            ("GET", "/api/players"),
            ("GET", "/api/openapi.json"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
        ];
        let mut want: Vec<(String, String)> = want
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        want.sort();
        assert_eq!(operations(&doc), want);
    }

    #[test]
    fn api_operations_declare_the_guard_and_errors() {
        let doc = build();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                if path.starts_with("/api/") {
                    for status in ["401", "403"] {
                        assert!(responses.contains_key(status), "{method} {path} {status}");
                    }
                    if op.get("requestBody").is_some() {
                        assert!(responses.contains_key("415"), "{method} {path}");
                    }
                } else {
                    assert_eq!(op["security"], json!([]), "{path} is open");
                }
            }
        }
    }

    #[test]
    fn answer_schemas_exist_and_are_closed() {
        let doc = build();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ANSWER_SCHEMAS {
            let s = schemas
                .get(*name)
                .unwrap_or_else(|| panic!("{name} is not in the document"));
            assert_eq!(s["additionalProperties"], false, "{name}");
        }
        // Requests stay open, except the session update.
        assert!(schemas["RoomSpec"].get("additionalProperties").is_none());
        assert_eq!(schemas["SessionChanges"]["additionalProperties"], false);
        assert_eq!(schemas["SessionChanges"]["minProperties"], 1);
    }

    #[test]
    fn always_present_fields_are_required() {
        let doc = build();
        let s = &doc["components"]["schemas"];
        let required = |name: &str| -> Vec<String> {
            s[name]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(required("Member").contains(&"name".to_owned()));
        assert!(required("RoomMessage").contains(&"connection_id".to_owned()));
        assert!(required("Session").contains(&"audio_zone_id".to_owned()));
        assert!(required("RoomInfo").contains(&"history_ttl_s".to_owned()));
        assert!(!required("RoomInfo").contains(&"code".to_owned()));
        assert!(required("PublishRequest").contains(&"data".to_owned()));
    }

    #[test]
    fn unsigned_integers_are_bounded() {
        let doc = build();
        let text = doc.to_string();
        fn check(v: &Value, text: &str) {
            match v {
                Value::Object(m) => {
                    if m.get("minimum").and_then(Value::as_f64) == Some(0.0)
                        && m.get("type")
                            .is_some_and(|t| t.to_string().contains("integer"))
                    {
                        assert!(m.contains_key("maximum"), "unbounded in {text}");
                    }
                    m.values().for_each(|v| check(v, text));
                }
                Value::Array(a) => a.iter().for_each(|v| check(v, text)),
                _ => {}
            }
        }
        check(&doc["components"], "components");
        assert!(text.contains("18446744073709551615"));
    }

    #[test]
    fn document_bytes_are_the_built_document() {
        let served: Value = serde_json::from_slice(&document()).unwrap();
        assert_eq!(served, build());
    }
}
