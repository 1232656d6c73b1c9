//! Reading a REST request body: a JSON object, read into the operation's type.
//!
//! Two rules beyond plain `serde_json`, so that the server accepts exactly what the
//! OpenAPI document ([`crate::openapi`]) describes:
//! - the body must be an object: serde would otherwise read `[1, 2]` into a struct
//!   field by field, which no client means;
//! - a whole number written with a fraction (`100.0`) is an integer, as JSON Schema
//!   says, so it is read as one. The free-form fields (`data`, `meta`, `playlist`) are
//!   the application's own JSON and are passed on untouched.
//!
//! Errors name the field that is wrong (`params[0].value: invalid type …`).

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};
use switchboard_protocol::ErrorCode;

use crate::api::ApiError;

/// Top-level fields whose value is the application's JSON, never rewritten.
const FREE_FORM: &[&str] = &["data", "meta", "playlist"];

/// Past 2^53 an `f64` no longer holds every integer, so larger floats are left alone.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// A request body read with [`read`].
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<Value>::from_request(req, state).await?;
        read(value)
            .map(JsonBody)
            .map_err(|m| ApiError(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m))
    }
}

/// Reads a body into `T`; the error is the message for the client.
pub fn read<T: DeserializeOwned>(mut value: Value) -> Result<T, String> {
    let Value::Object(fields) = &mut value else {
        return Err("the body must be a JSON object".into());
    };
    for (name, v) in fields.iter_mut() {
        if !FREE_FORM.contains(&name.as_str()) {
            whole_numbers(v);
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })
}

fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                // Exact by the bound above; `-0.0` becomes 0.
                *n = if f >= 0.0 {
                    Number::from(f as u64)
                } else {
                    Number::from(f as i64)
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(m) => m.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::read;
    use serde::Deserialize;
    use serde_json::{Value, json};

    #[derive(Debug, Deserialize)]
    struct Body {
        n: u64,
        #[serde(default)]
        list: Vec<u64>,
        #[serde(default)]
        x: Option<f64>,
        #[serde(default)]
        data: Value,
    }

    #[test]
    fn whole_floats_are_integers_outside_free_form_fields() {
        let b: Body =
            read(json!({"n": 3.0, "list": [1.0, 2], "x": 2.0, "data": {"v": 2.0}})).unwrap();
        assert_eq!((b.n, b.list, b.x), (3, vec![1, 2], Some(2.0)));
        assert!(b.data["v"].is_f64(), "data is passed on as sent");
    }

    #[test]
    fn fractions_arrays_and_wrong_types_are_refused_with_the_field() {
        let e = read::<Body>(json!({"n": 3.5})).unwrap_err();
        assert!(e.starts_with("n: invalid type"), "{e}");
        let e = read::<Body>(json!({"n": 1, "list": [1, "x"]})).unwrap_err();
        assert!(e.starts_with("list[1]:"), "{e}");
        let e = read::<Body>(json!([3, []])).unwrap_err();
        assert_eq!(e, "the body must be a JSON object");
        let e = read::<Body>(json!({})).unwrap_err();
        assert!(e.contains("missing field `n`"), "{e}");
    }
}
