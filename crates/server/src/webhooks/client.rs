//! The one HTTP client every webhook call goes through: pooled keep-alive connections,
//! a deadline per call, a cap on how much of an answer is read, optional signatures.
//!
//! Requests go straight to the configured URL: redirects are not followed (a webhook
//! that moved is a configuration error to fix, and a POST must not be replayed
//! elsewhere) and proxy environment variables are not consulted.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::sign::{self, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER};

/// The most of an answer's body that is read; a longer answer is a failed call.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Names the hook or lifecycle event in every request.
pub const EVENT_HEADER: &str = "x-switchboard-event";

/// Could not build the client (e.g. the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("cannot create the webhook HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// Why a call got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Request(String),
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// What the receiver said.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// `Retry-After` in seconds, when the receiver sent one.
    pub retry_after: Option<Duration>,
}

/// One request to send.
pub struct Post<'a> {
    pub url: &'a Url,
    pub event: &'static str,
    pub body: Bytes,
    pub secret: Option<&'a Secret>,
    pub timeout: Duration,
    /// Extra headers (delivery id, attempt number).
    pub headers: &'a [(&'static str, String)],
}

/// A pooled HTTP client for webhooks; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Result<HttpClient, ClientError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(HttpClient { client })
    }

    /// POSTs `post.body` as JSON and reads the answer, all within `post.timeout`.
    pub async fn post(&self, post: Post<'_>) -> Result<Answer, CallError> {
        let deadline = post.timeout;
        match tokio::time::timeout(deadline, self.exchange(post)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(deadline)),
        }
    }

    async fn exchange(&self, post: Post<'_>) -> Result<Answer, CallError> {
        let mut req = self
            .client
            .post(post.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(EVENT_HEADER, post.event);
        for (name, value) in post.headers {
            req = req.header(*name, value.as_str());
        }
        if let Some(secret) = post.secret {
            let ts = unix_seconds();
            req = req
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sign::signature(secret, ts, &post.body));
        }
        let mut resp = req
            .body(post.body)
            .send()
            .await
            .map_err(|e| CallError::Request(describe(e)))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(CallError::TooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CallError::Request(describe(e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body: body.freeze(),
            retry_after,
        })
    }
}

/// reqwest's Display stops at the outermost error ("error sending request"); the cause
/// ("connection refused") is what an operator needs. The URL is left out: it is in the
/// settings already, and a query string may carry a token that must not reach the logs.
fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
