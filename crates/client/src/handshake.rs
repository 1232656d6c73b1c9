//! Opening one connection: the upgrade request (query parameters, subprotocol), the
//! server's answer (503 `Retry-After`, refusals), and the `welcome` that must come first.

use std::time::Duration;

use futures_util::StreamExt;
use switchboard_protocol::ServerMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ClientOptions;
use crate::backoff::parse_retry_after;
use crate::wire;

/// The socket type of a connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The `welcome` fields the client uses.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub connection_id: String,
    pub client_id: String,
    pub server_time: i64,
}

/// Why an attempt failed.
#[derive(Debug)]
pub struct AttemptError {
    pub reason: String,
    /// The server asked to wait this long (503 `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (401/403/404 answers, a bad URL).
    pub terminal: bool,
}

impl AttemptError {
    fn retry(reason: impl Into<String>) -> Self {
        AttemptError {
            reason: reason.into(),
            retry_after: None,
            terminal: false,
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass unchanged).
fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL with the identity query parameters of the options appended.
pub fn full_url(url: &str, opts: &ClientOptions) -> String {
    let mut out = url.to_owned();
    for (key, value) in [
        ("client_id", &opts.client_id),
        ("name", &opts.name),
        ("profile", &opts.profile),
        ("token", &opts.token),
    ] {
        if let Some(v) = value {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(key);
            out.push('=');
            out.push_str(&encode_query(v));
        }
    }
    out
}

/// Checks that `url` is a WebSocket URL the client can open.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(format!("`{url}` is not a ws:// or wss:// URL"));
    }
    url.into_client_request()
        .map(|_| ())
        .map_err(|e| format!("`{url}`: {e}"))
}

/// Opens a connection and waits for `welcome`, all within `opts.connect_timeout`.
pub async fn open(url: String, opts: ClientOptions) -> Result<(Ws, Welcome), AttemptError> {
    match tokio::time::timeout(opts.connect_timeout, open_inner(&url, &opts)).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::retry(format!(
            "no welcome within {:?}",
            opts.connect_timeout
        ))),
    }
}

async fn open_inner(url: &str, opts: &ClientOptions) -> Result<(Ws, Welcome), AttemptError> {
    let mut request = full_url(url, opts)
        .into_client_request()
        .map_err(|e| AttemptError {
            reason: format!("invalid URL: {e}"),
            retry_after: None,
            terminal: true,
        })?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(opts.encoding.subprotocol()),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_message_size))
        .max_frame_size(Some(opts.max_message_size));
    let (mut ws, _response) =
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                return Err(AttemptError {
                    reason: format!("the server answered HTTP {status} {body}")
                        .trim_end()
                        .to_owned(),
                    retry_after,
                    // Credentials, origin or path problems do not fix themselves.
                    terminal: matches!(status, 400 | 401 | 403 | 404),
                });
            }
            Err(e) => return Err(AttemptError::retry(e.to_string())),
        };
    loop {
        match ws.next().await {
            Some(Ok(frame @ (Message::Text(_) | Message::Binary(_)))) => {
                return match wire::decode(&frame) {
                    Some(ServerMessage::Welcome {
                        connection_id,
                        client_id,
                        server_time,
                        ..
                    }) => Ok((
                        ws,
                        Welcome {
                            connection_id,
                            client_id,
                            server_time,
                        },
                    )),
                    _ => Err(AttemptError::retry(
                        "the server's first message was not `welcome`",
                    )),
                };
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(AttemptError::retry(match frame {
                    Some(f) => format!("closed before welcome: {} {}", u16::from(f.code), f.reason),
                    None => "closed before welcome".into(),
                }));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(AttemptError::retry(e.to_string())),
            None => return Err(AttemptError::retry("closed before welcome")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_goes_into_the_query_encoded() {
        let opts = ClientOptions {
            name: Some("Zoë & co".into()),
            client_id: Some("dev-1".into()),
            ..Default::default()
        };
        assert_eq!(
            full_url("ws://h:1/ws", &opts),
            "ws://h:1/ws?client_id=dev-1&name=Zo%C3%AB%20%26%20co"
        );
        assert_eq!(
            full_url("ws://h:1/ws?x=1", &ClientOptions::default()),
            "ws://h:1/ws?x=1"
        );
        assert!(check_url("http://h/ws").is_err());
        assert!(check_url("ws://h:1/ws").is_ok());
    }
}
