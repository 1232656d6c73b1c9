//! Request signatures: HMAC-SHA256 over the timestamp and the raw body.
//!
//! Each signed request carries two headers:
//!
//! ```text
//! X-Switchboard-Timestamp: 1732246800                 (Unix seconds, when it was sent)
//! X-Switchboard-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<raw body>")>
//! ```
//!
//! The timestamp is part of the signed text, so a receiver that refuses timestamps older
//! than a few minutes cannot be fed a recorded request again. A retried delivery is signed
//! afresh with the time of that attempt. [`verify`] is the receiver's side, for Rust
//! receivers and for the tests; docs/webhooks.md has the same recipe in Python.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";

type HmacSha256 = Hmac<Sha256>;

/// A shared secret, ready to sign with. Its `Debug` output never shows it, so settings
/// can be logged.
#[derive(Clone)]
pub struct Secret(HmacSha256);

impl Secret {
    /// A secret from its bytes; `None` for an empty one (which would sign nothing).
    pub fn new(bytes: impl AsRef<[u8]>) -> Option<Self> {
        let key = bytes.as_ref();
        if key.is_empty() {
            return None;
        }
        <HmacSha256 as KeyInit>::new_from_slice(key)
            .ok()
            .map(Secret)
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The `X-Switchboard-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or malformed {TIMESTAMP_HEADER} header")]
    BadTimestamp,
    #[error("the request is {age_s} s away from now, more than the {tolerance_s} s allowed")]
    Stale { age_s: i64, tolerance_s: i64 },
    #[error("missing or malformed {SIGNATURE_HEADER} header")]
    BadSignatureHeader,
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a request's headers against its raw body: the timestamp must be within
/// `tolerance_s` of `now_s` and the signature must match (compared in constant time).
pub fn verify(
    secret: &Secret,
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp_header
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::BadTimestamp)?;
    let age_s = (now_s - ts).abs();
    if age_s > tolerance_s {
        return Err(VerifyError::Stale { age_s, tolerance_s });
    }
    let tag = signature_header
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(VerifyError::BadSignatureHeader)?;
    secret
        .mac(ts, body)
        .verify_slice(&tag)
        .map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s).unwrap()
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference computed independently:
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"1700000000.{\"a\":1}",hashlib.sha256).hexdigest())'
        let s = signature(&secret("s3cret"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
        assert!(Secret::new("").is_none());
    }

    #[test]
    fn verify_accepts_the_signed_body_only() {
        let key = secret("k");
        let body = br#"{"event":"client_offline"}"#;
        let sig = signature(&key, 1000, body);
        assert_eq!(
            verify(&key, Some("1000"), Some(&sig), body, 1010, 300),
            Ok(())
        );
        assert_eq!(
            verify(&key, Some("1000"), Some(&sig), b"{}", 1010, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&secret("other"), Some("1000"), Some(&sig), body, 1010, 300),
            Err(VerifyError::Mismatch)
        );
        // The timestamp is signed: moving it forward to pass the age check breaks it.
        assert_eq!(
            verify(&key, Some("2000"), Some(&sig), body, 2000, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&key, Some("1000"), Some(&sig), body, 5000, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(&key, None, Some(&sig), body, 1000, 300),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(&key, Some("1000"), Some("md5=00"), body, 1000, 300),
            Err(VerifyError::BadSignatureHeader)
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        assert_eq!(format!("{:?}", secret("hunter2")), "Secret(***)");
    }
}
