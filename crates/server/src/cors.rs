//! CORS for the REST API (the `[cors]` table).
//!
//! Off by default: without `allowed_origins` no CORS header is ever sent, so browsers
//! only let pages served by Switchboard itself call `/api/*`. With it, preflights
//! (`OPTIONS`) are answered before the API token check — browsers never send credentials
//! on a preflight — and the actual request still needs the token. Origins use the same
//! patterns as an endpoint's `allowed_origins` (exact, or `https://*.example.com`).

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::origin;

/// The `[cors]` table, as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser; empty = CORS off. `"*"` allows any
    /// origin (refused together with `allow_credentials`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Methods allowed in preflights.
    pub allowed_methods: Option<Vec<String>>,
    /// Request headers allowed in preflights.
    pub allowed_headers: Option<Vec<String>>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight, in seconds.
    pub max_age_s: Option<u64>,
}

const DEFAULT_METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "OPTIONS"];
const DEFAULT_HEADERS: [&str; 2] = ["authorization", "content-type"];

impl CorsConfig {
    /// The layer for `/api/*`, or `None` when CORS is off. Errors are `(key, message)`.
    pub fn layer(&self) -> Result<Option<CorsLayer>, (String, String)> {
        if self.allowed_origins.is_empty() {
            return Ok(None);
        }
        let any = self.allowed_origins.iter().any(|o| o == "*");
        if any && self.allow_credentials {
            return Err((
                "allowed_origins".into(),
                "`*` cannot be combined with allow_credentials".into(),
            ));
        }
        for o in &self.allowed_origins {
            if o.is_empty() || o.contains(char::is_whitespace) || HeaderValue::from_str(o).is_err()
            {
                return Err(("allowed_origins".into(), format!("`{o}` is not an origin")));
            }
        }
        let methods = match &self.allowed_methods {
            Some(m) => m.clone(),
            None => DEFAULT_METHODS.iter().map(|s| (*s).to_owned()).collect(),
        }
        .iter()
        .map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                (
                    "allowed_methods".to_owned(),
                    format!("`{m}` is not a method"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let headers = match &self.allowed_headers {
            Some(h) => h.clone(),
            None => DEFAULT_HEADERS.iter().map(|s| (*s).to_owned()).collect(),
        }
        .iter()
        .map(|h| {
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                (
                    "allowed_headers".to_owned(),
                    format!("`{h}` is not a header name"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
        let patterns = self.allowed_origins.clone();
        let allow = if any {
            AllowOrigin::any()
        } else {
            AllowOrigin::predicate(move |o: &HeaderValue, _| {
                o.to_str().is_ok_and(|o| origin::allowed(o, &patterns))
            })
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods(methods)
                .allow_headers(headers)
                .allow_credentials(self.allow_credentials)
                .max_age(Duration::from_secs(self.max_age_s.unwrap_or(600))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_origins_and_mistakes_are_refused() {
        assert!(CorsConfig::default().layer().unwrap().is_none());
        let bad = |c: CorsConfig| c.layer().err().map(|e| e.0);
        assert_eq!(
            bad(CorsConfig {
                allowed_origins: vec!["*".into()],
                allow_credentials: true,
                ..Default::default()
            }),
            Some("allowed_origins".into())
        );
        assert_eq!(
            bad(CorsConfig {
                allowed_origins: vec!["https://a.example".into()],
                allowed_methods: Some(vec!["GE T".into()]),
                ..Default::default()
            }),
            Some("allowed_methods".into())
        );
        assert!(
            CorsConfig {
                allowed_origins: vec!["https://*.example.com".into()],
                ..Default::default()
            }
            .layer()
            .unwrap()
            .is_some()
        );
    }
}
