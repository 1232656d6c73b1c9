//! JWT authentication of WebSocket connections (an endpoint's `auth.*` settings).
//!
//! [`JwtAuth`] is built once per endpoint from its [`AuthConfig`] — an HS256 secret, a
//! PEM public key (RS256/ES256 and relatives) or a JWKS file — and checks the token a
//! client presents at the upgrade (`token` query parameter or `Authorization: Bearer`)
//! and later with `refresh`. A valid token becomes a [`Grant`]: `sub` is the connection's
//! `client_id`, the `meta` claim its metadata, the `rooms`/`publish` claims the room
//! patterns it may join and write to, `exp` the moment it is closed with 4001 unless
//! refreshed. Everything else about the connection is the hub's business.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;
use switchboard_hub::{Grant, HubError, Permissions, TokenVerifier};
use switchboard_protocol::{ErrorCode, Map};

/// An endpoint's `auth` table, as written in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256 (or HS384/HS512 via `algorithms`).
    pub jwt_secret: Option<String>,
    /// A PEM public key file (RSA, EC or Ed25519), relative to the config file's folder.
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file (`{"keys":[…]}`), relative to the config file's folder; tokens pick
    /// their key by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// Accepted `alg` values; by default the one the key implies (HS256, RS256, ES256 for
    /// P-256, ES384 for P-384, EdDSA).
    pub algorithms: Option<Vec<String>>,
    /// `false` admits connections without a token too (a token given must still be valid).
    pub required: Option<bool>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: Option<u64>,
    /// Refuse tokens without `exp`.
    pub require_exp: Option<bool>,
    /// How long before `exp` the client gets `token_expiring`.
    pub expiry_warning_ms: Option<u64>,
    /// Claim holding the connection's metadata (an object).
    pub meta_claim: Option<String>,
    /// Claim holding the room patterns the connection may join (a list of strings).
    pub rooms_claim: Option<String>,
    /// Claim holding the room patterns the connection may write to.
    pub publish_claim: Option<String>,
}

/// Why a token was refused; always answered as `UNAUTHORIZED` (HTTP 401 or close 4001).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "a token is required: pass it as the `token` query parameter or an `Authorization: Bearer` header"
    )]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's `{0}` claim is missing or wrong")]
    Claim(String),
    #[error("tokens signed with {0} are not accepted here")]
    Algorithm(String),
    #[error("no key with id `{0}`")]
    UnknownKey(String),
    #[error("malformed token: {0}")]
    Malformed(String),
}

impl From<AuthError> for HubError {
    fn from(e: AuthError) -> Self {
        HubError::new(ErrorCode::Unauthorized, e.to_string())
    }
}

/// One verification key with the algorithms it may be used with.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The claim names a token's grant is read from.
#[derive(Debug, Clone)]
struct Claims {
    meta: String,
    rooms: String,
    publish: String,
}

/// A configured JWT check.
pub struct JwtAuth {
    keys: Vec<Key>,
    required: bool,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
    require_exp: bool,
    expiry_warning: Duration,
    claims: Claims,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("JwtAuth")
            .field("keys", &self.keys.len())
            .field("required", &self.required)
            .finish()
    }
}

/// The family of a key, to check `algorithms` against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

/// The kind of key an algorithm needs; `None` for algorithms this server does not know.
fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Some(Family::Hmac),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        _ => None,
    }
}

impl JwtAuth {
    /// Builds the check from an endpoint's `auth` table; key files are read relative to
    /// `base` (the config file's folder). Errors name the offending key.
    pub fn from_config(c: &AuthConfig, base: &Path) -> Result<JwtAuth, (String, String)> {
        let err = |k: &str, m: String| (k.to_owned(), m);
        let configured: Option<Vec<Algorithm>> = match &c.algorithms {
            None => None,
            Some(names) if names.is_empty() => {
                return Err(err("algorithms", "must not be empty".into()));
            }
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        Algorithm::from_str(n)
                            .map_err(|_| err("algorithms", format!("unknown algorithm `{n}`")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let sources = [
            c.jwt_secret.is_some(),
            c.jwt_public_key.is_some(),
            c.jwks_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(err(
                "jwt_secret",
                "set exactly one of `jwt_secret`, `jwt_public_key` and `jwks_file`".into(),
            ));
        }
        // The algorithms a key accepts: the configured ones (all of its family), or the
        // one the key implies.
        let pick = |k: &str, fam: Family, implied: Algorithm| -> Result<Vec<Algorithm>, _> {
            match &configured {
                None => Ok(vec![implied]),
                Some(algs) => match algs.iter().find(|a| family(**a) != Some(fam)) {
                    Some(bad) => Err(err(
                        k,
                        format!("algorithm {bad:?} does not fit this kind of key"),
                    )),
                    None => Ok(algs.clone()),
                },
            }
        };
        let mut keys = Vec::new();
        if let Some(secret) = &c.jwt_secret {
            if secret.is_empty() {
                return Err(err("jwt_secret", "must not be empty".into()));
            }
            if secret.len() < 32 {
                tracing::warn!(
                    "auth.jwt_secret is shorter than 32 bytes; a short HS256 secret can be guessed offline from any token"
                );
            }
            keys.push(Key {
                kid: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
                algorithms: pick("jwt_secret", Family::Hmac, Algorithm::HS256)?,
            });
        }
        if let Some(path) = &c.jwt_public_key {
            let path = base.join(path);
            let pem = std::fs::read(&path).map_err(|e| {
                err(
                    "jwt_public_key",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let (key, fam, implied) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                (k, Family::Rsa, Algorithm::RS256)
            } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
                (k, Family::Ec, Algorithm::ES256)
            } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                (k, Family::Ed, Algorithm::EdDSA)
            } else {
                return Err(err(
                    "jwt_public_key",
                    format!(
                        "{} is not a PEM RSA, EC or Ed25519 public key",
                        path.display()
                    ),
                ));
            };
            keys.push(Key {
                kid: None,
                key,
                algorithms: pick("jwt_public_key", fam, implied)?,
            });
        }
        if let Some(path) = &c.jwks_file {
            let path = base.join(path);
            let text = std::fs::read(&path)
                .map_err(|e| err("jwks_file", format!("cannot read {}: {e}", path.display())))?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
                err(
                    "jwks_file",
                    format!("{} is not a JWK set: {e}", path.display()),
                )
            })?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    err(
                        "jwks_file",
                        format!("key {:?}: {e}", jwk.common.key_id.as_deref().unwrap_or("")),
                    )
                })?;
                let (fam, implied) = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => (Family::Rsa, Algorithm::RS256),
                    AlgorithmParameters::EllipticCurve(p) => match p.curve {
                        EllipticCurve::P384 => (Family::Ec, Algorithm::ES384),
                        _ => (Family::Ec, Algorithm::ES256),
                    },
                    AlgorithmParameters::OctetKeyPair(_) => (Family::Ed, Algorithm::EdDSA),
                    AlgorithmParameters::OctetKey(_) => (Family::Hmac, Algorithm::HS256),
                    _ => {
                        return Err(err(
                            "jwks_file",
                            "a key of a type this server does not support".into(),
                        ));
                    }
                };
                // A key that names its algorithm is used with that one only.
                let named = jwk
                    .common
                    .key_algorithm
                    .and_then(|ka| serde_json::to_value(ka).ok())
                    .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()));
                let algorithms = match named {
                    Some(a) if family(a) == Some(fam) => vec![a],
                    Some(a) => {
                        return Err(err(
                            "jwks_file",
                            format!("key algorithm {a:?} does not fit the key"),
                        ));
                    }
                    None => pick("jwks_file", fam, implied)?,
                };
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                    algorithms,
                });
            }
            if keys.is_empty() {
                return Err(err(
                    "jwks_file",
                    format!("{} holds no keys", path.display()),
                ));
            }
        }
        let name = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
        Ok(JwtAuth {
            keys,
            required: c.required.unwrap_or(true),
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            leeway_s: c.leeway_s.unwrap_or(0),
            require_exp: c.require_exp.unwrap_or(true),
            expiry_warning: Duration::from_millis(c.expiry_warning_ms.unwrap_or(30_000)),
            claims: Claims {
                meta: name(&c.meta_claim, "meta"),
                rooms: name(&c.rooms_claim, "rooms"),
                publish: name(&c.publish_claim, "publish"),
            },
        })
    }

    /// Whether connections without a token are refused.
    pub fn required(&self) -> bool {
        self.required
    }

    /// How long before expiry a client is warned.
    pub fn expiry_warning(&self) -> Duration {
        self.expiry_warning
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_s;
        v.validate_nbf = true;
        v.required_spec_claims = HashSet::new();
        if self.require_exp {
            v.required_spec_claims.insert("exp".to_owned());
        }
        match &self.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// Checks a token and reads its grant.
    pub fn check(&self, token: &str) -> Result<Grant, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) if self.keys.iter().any(|k| k.kid.is_some()) => {
                let found: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if found.is_empty() {
                    return Err(AuthError::UnknownKey(kid.clone()));
                }
                found
            }
            _ => self.keys.iter().collect(),
        };
        let candidates: Vec<&Key> = candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let validation = self.validation(header.alg);
        let mut last = AuthError::BadSignature;
        for k in candidates {
            match decode::<Map>(token, &k.key, &validation) {
                Ok(data) => return self.grant(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::InvalidIssuer => return Err(AuthError::Claim("iss".into())),
                        ErrorKind::InvalidAudience => return Err(AuthError::Claim("aud".into())),
                        ErrorKind::MissingRequiredClaim(c) => {
                            return Err(AuthError::Claim(c.clone()));
                        }
                        _ => AuthError::Malformed(e.to_string()),
                    }
                }
            }
        }
        Err(last)
    }

    fn grant(&self, mut claims: Map) -> Result<Grant, AuthError> {
        let client_id = match claims.remove("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s,
            _ => return Err(AuthError::Claim("sub".into())),
        };
        let meta = match claims.remove(&self.claims.meta) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Err(AuthError::Claim(self.claims.meta.clone())),
        };
        let patterns = |claims: &mut Map, name: &str| -> Result<Option<Vec<String>>, AuthError> {
            match claims.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(AuthError::Claim(name.to_owned())),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(AuthError::Claim(name.to_owned())),
            }
        };
        let join = patterns(&mut claims, &self.claims.rooms)?;
        let publish = patterns(&mut claims, &self.claims.publish)?;
        let expires_at = match claims.get("exp") {
            Some(Value::Number(n)) => n.as_f64().map(|s| (s * 1000.0) as i64),
            _ => None,
        };
        Ok(Grant {
            client_id,
            meta,
            permissions: Permissions { join, publish },
            expires_at,
        })
    }
}

impl TokenVerifier for JwtAuth {
    fn verify(&self, token: &str) -> Result<Grant, HubError> {
        self.check(token).map_err(HubError::from)
    }
}

/// The token of an upgrade request: the `token` query parameter, else a bearer
/// `Authorization` header.
pub fn token_from<'a>(query: Option<&'a String>, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(t) = query.filter(|t| !t.is_empty()) {
        return Some(t.as_str());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "unit-test-secret-unit-test-secret";

    fn hs(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn auth(extra: impl FnOnce(&mut AuthConfig)) -> JwtAuth {
        let mut c = AuthConfig {
            jwt_secret: Some(SECRET.into()),
            ..Default::default()
        };
        extra(&mut c);
        JwtAuth::from_config(&c, Path::new(".")).unwrap()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn a_valid_token_grants_its_claims() {
        let a = auth(|_| {});
        let exp = now() + 600;
        let g = a
            .check(&hs(json!({"sub":"u1","exp":exp,"meta":{"role":"x"},"rooms":["team:*"],"publish":["team:chat"]})))
            .unwrap();
        assert_eq!(g.client_id, "u1");
        assert_eq!(g.meta.get("role"), Some(&json!("x")));
        assert_eq!(g.expires_at, Some(exp * 1000));
        assert!(g.permissions.may_join("team:a") && !g.permissions.may_join("other"));
        assert!(g.permissions.may_publish("team:chat") && !g.permissions.may_publish("team:a"));
    }

    #[test]
    fn bad_tokens_say_why() {
        let a = auth(|_| {});
        assert_eq!(
            a.check(&hs(json!({"sub":"u","exp":now()-5}))),
            Err(AuthError::Expired)
        );
        assert_eq!(
            a.check(&hs(json!({"sub":"u"}))),
            Err(AuthError::Claim("exp".into()))
        );
        assert_eq!(
            a.check(&hs(json!({"exp":now()+60}))),
            Err(AuthError::Claim("sub".into()))
        );
        assert_eq!(
            a.check(&hs(json!({"sub":"u","exp":now()+60,"rooms":"all"}))),
            Err(AuthError::Claim("rooms".into()))
        );
        assert!(matches!(a.check("nope"), Err(AuthError::Malformed(_))));
        let other = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub":"u","exp":now()+60}),
            &EncodingKey::from_secret(b"another-secret"),
        )
        .unwrap();
        assert_eq!(a.check(&other), Err(AuthError::BadSignature));
        // A token naming another algorithm than the key's is refused before any check:
        // no "alg confusion" between an HMAC secret and a public key.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub":"u","exp":now()+60}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(a.check(&hs512), Err(AuthError::Algorithm(_))));
    }

    #[test]
    fn issuer_audience_and_optional_exp() {
        let a = auth(|c| {
            c.issuer = Some("me".into());
            c.audience = Some("sb".into());
            c.require_exp = Some(false);
        });
        assert!(
            a.check(&hs(json!({"sub":"u","iss":"me","aud":"sb"})))
                .is_ok()
        );
        assert_eq!(
            a.check(&hs(json!({"sub":"u","iss":"you","aud":"sb"}))),
            Err(AuthError::Claim("iss".into()))
        );
        assert_eq!(
            a.check(&hs(json!({"sub":"u","iss":"me","aud":"other"}))),
            Err(AuthError::Claim("aud".into()))
        );
    }

    #[test]
    fn config_mistakes_are_refused() {
        let bad = |c: AuthConfig| JwtAuth::from_config(&c, Path::new(".")).unwrap_err().0;
        assert_eq!(bad(AuthConfig::default()), "jwt_secret");
        assert_eq!(
            bad(AuthConfig {
                jwt_secret: Some(SECRET.into()),
                algorithms: Some(vec!["RS256".into()]),
                ..Default::default()
            }),
            "jwt_secret"
        );
        assert_eq!(
            bad(AuthConfig {
                jwt_secret: Some(SECRET.into()),
                algorithms: Some(vec!["XX1".into()]),
                ..Default::default()
            }),
            "algorithms"
        );
        assert_eq!(
            bad(AuthConfig {
                jwt_public_key: Some("/nonexistent/key.pem".into()),
                ..Default::default()
            }),
            "jwt_public_key"
        );
    }

    #[test]
    fn token_comes_from_the_query_or_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(token_from(None, &h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(token_from(None, &h), Some("abc"));
        let q = "xyz".to_owned();
        assert_eq!(token_from(Some(&q), &h), Some("xyz"));
    }
}
