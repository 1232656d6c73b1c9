//! What an authenticated connection may do, and how long its credentials last.
//!
//! The hub does not read tokens itself. A transport (the server's JWT check, or an
//! embedding application's own) turns credentials into a [`Grant`] before the connection
//! is registered, and the endpoint may carry a [`TokenVerifier`] so that a client can
//! replace its token mid-connection with `refresh`. From the grant the hub keeps a small
//! per-connection [`AuthState`]: the room [`Permissions`] checked at `join` and at every
//! write to a room (`publish`, `param`, `trigger`), and the expiry that the connection
//! driver watches — a `token_expiring` warning first, then close 4001.

use std::fmt;

use switchboard_protocol::Map;

use crate::error::HubError;

/// Room patterns a connection is limited to; `None` means "any room".
///
/// A pattern is a room id in which `*` stands for any run of characters (possibly
/// empty): `chat:*` allows `chat:lobby` and `chat:` but not `chatter`; `*` allows all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Rooms that may be joined.
    pub join: Option<Vec<String>>,
    /// Rooms that may be written to (`publish`, `param`, `trigger`); `None` falls back to
    /// `join`.
    pub publish: Option<Vec<String>>,
}

impl Permissions {
    /// True when `room` may be joined.
    pub fn may_join(&self, room: &str) -> bool {
        allowed(self.join.as_deref(), room)
    }

    /// True when `room` may be written to.
    pub fn may_publish(&self, room: &str) -> bool {
        allowed(self.publish.as_deref().or(self.join.as_deref()), room)
    }
}

fn allowed(patterns: Option<&[String]>, room: &str) -> bool {
    patterns.is_none_or(|ps| ps.iter().any(|p| glob(p.as_bytes(), room.as_bytes())))
}

/// `*`-only glob matching, iterative (no recursion, no backtracking blow-up): the last
/// `*` seen is the only one that ever needs to absorb more characters.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// What verified credentials say about a connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// The authenticated subject; becomes the connection's `client_id`.
    pub client_id: String,
    /// Metadata carried by the credentials (the connection's initial `meta`).
    pub meta: Map,
    /// Room restrictions.
    pub permissions: Permissions,
    /// When the credentials expire, in ms since the Unix epoch; `None` for never.
    pub expires_at: Option<i64>,
}

/// Verifies a token presented with `refresh` (the server plugs in its JWT check).
pub trait TokenVerifier: Send + Sync {
    /// The grant of a valid token, or an `UNAUTHORIZED` error saying what is wrong.
    fn verify(&self, token: &str) -> Result<Grant, HubError>;
}

impl fmt::Debug for dyn TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenVerifier")
    }
}

/// An authenticated connection's current permissions and expiry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthState {
    pub permissions: Permissions,
    /// Expiry in ms since the Unix epoch, if any.
    pub expires_at: Option<i64>,
    /// Whether `token_expiring` was sent for the current expiry.
    pub warned: bool,
}

impl AuthState {
    /// The state for a fresh grant.
    pub fn from_grant(grant: &Grant) -> Self {
        AuthState {
            permissions: grant.permissions.clone(),
            expires_at: grant.expires_at,
            warned: false,
        }
    }
}

/// What the driver should do about a connection's expiry at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryStep {
    /// Nothing to do now; look again at this time (ms since the epoch), if any.
    Wait(Option<i64>),
    /// Send `token_expiring` now.
    Warn { expires_at: i64 },
    /// The token has expired: close 4001.
    Expired,
}

impl AuthState {
    /// The next step for an expiry watched with a warning `warn_ms` before it.
    pub fn step(&self, now_ms: i64, warn_ms: i64) -> ExpiryStep {
        let Some(exp) = self.expires_at else {
            return ExpiryStep::Wait(None);
        };
        if now_ms >= exp {
            ExpiryStep::Expired
        } else if !self.warned && now_ms >= exp - warn_ms {
            ExpiryStep::Warn { expires_at: exp }
        } else if self.warned {
            ExpiryStep::Wait(Some(exp))
        } else {
            ExpiryStep::Wait(Some(exp - warn_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_ids_with_star_anywhere() {
        let m = |p: &str, t: &str| glob(p.as_bytes(), t.as_bytes());
        assert!(m("chat:*", "chat:lobby"));
        assert!(m("chat:*", "chat:"));
        assert!(!m("chat:*", "chatter"));
        assert!(m("*", "anything"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exact2"));
        assert!(m("*:public", "team-1:public"));
        // Many stars against a long id stay linear-ish rather than exponential.
        let long = "a".repeat(128);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn publish_falls_back_to_join_patterns() {
        let p = Permissions {
            join: Some(vec!["team:*".into()]),
            publish: None,
        };
        assert!(p.may_join("team:1") && p.may_publish("team:1"));
        assert!(!p.may_join("other") && !p.may_publish("other"));
        let p = Permissions {
            join: Some(vec!["team:*".into()]),
            publish: Some(vec!["team:chat".into()]),
        };
        assert!(p.may_join("team:news") && !p.may_publish("team:news"));
        assert!(p.may_publish("team:chat"));
        assert!(Permissions::default().may_publish("x"));
    }

    #[test]
    fn expiry_warns_once_then_expires() {
        let mut s = AuthState {
            expires_at: Some(10_000),
            ..Default::default()
        };
        assert_eq!(s.step(1_000, 2_000), ExpiryStep::Wait(Some(8_000)));
        assert_eq!(
            s.step(8_500, 2_000),
            ExpiryStep::Warn { expires_at: 10_000 }
        );
        s.warned = true;
        assert_eq!(s.step(8_600, 2_000), ExpiryStep::Wait(Some(10_000)));
        assert_eq!(s.step(10_000, 2_000), ExpiryStep::Expired);
        assert_eq!(AuthState::default().step(0, 1), ExpiryStep::Wait(None));
    }
}
