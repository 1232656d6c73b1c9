//! The WebSocket endpoints: checking an upgrade request, answering the handshake, and
//! handing the upgraded socket to the hub's connection driver.
//!
//! Every refusal happens here, before the upgrade, as a plain HTTP answer: 400 for a
//! request that is not a WebSocket upgrade, 426 for another protocol version, 403 for a
//! refused origin or a `connect` hook that said no, 401 for a missing or bad token (when
//! the endpoint has `auth`), 429 with `Retry-After` when the client's address is over
//! its connection rate or count, 503 with `Retry-After` when the endpoint is full, the
//! accept rate is exceeded or the server is shutting down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use switchboard_hub::auth::AuthState;
use switchboard_hub::{ConnectInfo, ConnectRequest, Hub, Mode, driver};
use switchboard_protocol::{Encoding, ErrorCode};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::api::error_response;
use crate::config::Endpoint;
use crate::origin;
use crate::ratelimit::{AddressLimits, Refusal};
use crate::transport::WsTransport;

/// The peer address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// tungstenite's read buffer. Its default (128 KiB, zero-filled) would dominate an idle
/// connection's memory; 2 KiB holds a typical request, and a larger frame only makes the
/// buffer grow for as long as it is being read. Measured: 6.2 KiB RSS per idle joined
/// connection with 2 KiB, 8.2 KiB with 4 KiB (docs/benchmarks.md).
const READ_BUFFER: usize = 2048;

/// Frames are gathered up to this size before a socket write, so a batch of small
/// messages costs a few syscalls rather than one per 4 KiB.
const WRITE_BUFFER: usize = 64 * 1024;

/// An endpoint while serving: its settings and its accept-rate bucket.
pub struct EndpointState {
    pub endpoint: Endpoint,
    accepts: Mutex<(f64, Instant)>,
    /// Per-address limits, shared by every endpoint of the server.
    addresses: Arc<AddressLimits>,
}

impl EndpointState {
    pub fn new(endpoint: Endpoint, addresses: Arc<AddressLimits>) -> Arc<Self> {
        let burst = f64::from(endpoint.accepts_per_second.max(1));
        Arc::new(EndpointState {
            endpoint,
            accepts: Mutex::new((burst, Instant::now())),
            addresses,
        })
    }

    /// Takes one accept token; false when the endpoint's accept rate is exceeded.
    fn admit(&self) -> bool {
        let rate = self.endpoint.accepts_per_second;
        if rate == 0 {
            return true;
        }
        let rate = f64::from(rate);
        let mut b = self.accepts.lock();
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn refuse(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    error_response(status, code, message)
}

fn unavailable(message: &str, retry_after_s: u32) -> Response {
    let mut r = refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal,
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

fn refuse_address(refusal: Refusal) -> Response {
    let (message, retry_after_s) = match refusal {
        Refusal::Rate(wait) => (
            "too many new connections from your address; retry shortly".to_owned(),
            wait.as_secs_f64().ceil().max(1.0) as u64,
        ),
        Refusal::Open(n) => (format!("your address already has {n} open connections"), 5),
    };
    let mut r = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        &message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Picks the first encoding the client offered that we speak.
fn choose_encoding(headers: &HeaderMap) -> (Encoding, Option<&'static str>) {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for name in offered {
        if let Some(enc) = Encoding::from_subprotocol(name) {
            return (enc, Some(enc.subprotocol()));
        }
    }
    (Encoding::Json, None)
}

fn query_params(req: &Request) -> HashMap<String, String> {
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Answers an upgrade request on an endpoint path.
pub async fn upgrade(hub: Hub, ep: Arc<EndpointState>, mut req: Request) -> Response {
    let headers = req.headers();
    let is_upgrade = header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket");
    if !is_upgrade {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "this is a WebSocket endpoint: send an upgrade request",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::BadRequest,
            "unsupported WebSocket version; this server speaks 13",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "missing Sec-WebSocket-Key",
        );
    };
    let endpoint = &ep.endpoint;
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(o) if !origin::allowed(o, &endpoint.allowed_origins) => {
            return refuse(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin not allowed",
            );
        }
        None if endpoint.require_origin => {
            return refuse(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "an Origin header is required",
            );
        }
        _ => {}
    }
    if hub.is_shutting_down() {
        return unavailable("the server is shutting down", 5);
    }
    let remote = req.extensions().get::<RemoteAddr>().map(|r| r.0);
    // Per-address limits come before anything costlier, and before the token check, so
    // that guessing tokens counts as connecting.
    let address_slot = match remote.map(|a| ep.addresses.admit(a.ip())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(slot))) => Some(slot),
        Some(Err(refusal)) => return refuse_address(refusal),
    };
    let q = query_params(&req);
    let grant = match &endpoint.auth {
        None => None,
        Some(auth) => match crate::auth::token_from(q.get("token"), req.headers()) {
            Some(token) => match auth.check(token) {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::debug!(path = %endpoint.rules.path, remote = ?remote, error = %e, "token refused");
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::Unauthorized,
                        &e.to_string(),
                    );
                }
            },
            None if auth.required() => {
                let e = crate::auth::AuthError::Missing;
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    &e.to_string(),
                );
            }
            None => None,
        },
    };
    if !ep.admit() {
        return unavailable("too many new connections; retry shortly", 1);
    }
    let Some(slot) = endpoint.rules.try_reserve() else {
        return unavailable("the endpoint is at its connection limit", 5);
    };
    let (encoding, subprotocol) = match endpoint.rules.mode {
        Mode::Protocol => choose_encoding(headers),
        Mode::Raw | Mode::Echo => (Encoding::Json, None),
    };
    // permessage-deflate, when the endpoint enables it and the client offers it.
    let deflate = endpoint
        .compression
        .and_then(|c| crate::deflate::negotiate(headers, &c).map(|a| (a, c)));
    // An authenticated subject wins over the `client_id` query parameter (§3.1).
    let (client_id, meta, auth) = match grant {
        Some(g) => {
            let state = AuthState::from_grant(&g);
            (Some(g.client_id), g.meta, Some(state))
        }
        None => (
            q.get("client_id").filter(|s| !s.is_empty()).cloned(),
            Default::default(),
            None,
        ),
    };
    let info = ConnectInfo {
        client_id,
        name: q.get("name").filter(|s| !s.is_empty()).cloned(),
        profile: q.get("profile").filter(|s| !s.is_empty()).cloned(),
        remote_addr: remote,
        meta,
        encoding,
        auth,
    };
    let connect = ConnectRequest {
        path: endpoint.rules.path.clone(),
        client_id: info.client_id.clone(),
        name: info.name.clone(),
        remote_addr: remote,
        meta: info.meta.clone(),
    };
    if let Err(e) = hub.authorize_connect(&connect).await {
        let status = if e.code == ErrorCode::Unauthorized {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        return refuse(status, e.code, &e.message);
    }

    let extensions = deflate.as_ref().map(|(a, _)| a.response.clone());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let rules = endpoint.rules.clone();
    // Registered before the 101 goes out: a client that has seen the handshake complete
    // is already a member of its endpoint (a raw room has no `welcome` to wait for), and
    // whatever is sent to it meanwhile waits in its bounded queue.
    let conn = hub.connect(info, rules.clone(), Some(slot));
    tokio::spawn(async move {
        let id = conn.id().to_owned();
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(connection_id = %id, error = %e, "upgrade failed");
                hub.disconnected(&conn, None, "upgrade failed").await;
                return;
            }
        };
        if let Some((agreement, config)) = deflate {
            crate::deflate::run(&hub, conn, TokioIo::new(upgraded), &agreement, &config).await;
            return;
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(rules.max_message_size))
            .max_frame_size(Some(rules.max_message_size));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        tracing::info!(connection_id = %id, client_id = conn.client_id(), path = %rules.path, remote = ?remote, "connection opened");
        let ended = driver::run(&hub, conn, WsTransport::new(ws)).await;
        // The address's open-connection count drops only now that the socket is done.
        drop(address_slot);
        tracing::info!(connection_id = %id, code = ?ended.code, reason = %ended.reason, "connection closed");
    });

    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(ext) = extensions {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, ext);
    }
    res
}
