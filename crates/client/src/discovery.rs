//! LAN discovery: finding Switchboard servers on the local network segment without any
//! internet service.
//!
//! The client sends the UDP datagram `{"type":"discover"}` to the discovery port — as a
//! broadcast to the whole segment (`255.255.255.255`) and to the loopback network (for a
//! server on this machine) — and every server with `[discovery] enabled = true` answers it,
//! unicast, with `{"type":"server","name","node_id","url","version"}`. Probes are repeated
//! a few times within the timeout because UDP may lose a datagram.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// The discovery port servers listen on by default.
pub const DEFAULT_PORT: u16 = 47800;

/// The largest datagram either side reads; anything longer is not a discovery message.
pub const MAX_DATAGRAM: usize = 1024;

/// The probe a client sends.
pub const PROBE: &[u8] = br#"{"type":"discover"}"#;

/// A server's answer to a probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's configured name (its node id when none is set).
    pub name: String,
    pub node_id: String,
    /// The WebSocket URL of its default endpoint.
    pub url: String,
    /// The server's version.
    pub version: String,
}

/// The `server` datagram, with its `type` tag.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Datagram {
    /// A probe.
    Discover,
    /// An answer.
    Server(ServerInfo),
}

/// Discovery could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("could not send a single probe: {0}")]
    Send(std::io::Error),
}

/// Finds every server answering on `port` within `timeout`: broadcast on the local
/// segment, plus this machine. Servers are listed in the order they answered, each once.
pub async fn discover(port: u16, timeout: Duration) -> Result<Vec<ServerInfo>, DiscoveryError> {
    let targets = [
        SocketAddr::from((Ipv4Addr::BROADCAST, port)),
        SocketAddr::from((Ipv4Addr::new(127, 255, 255, 255), port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ];
    discover_at(&targets, timeout).await
}

/// Probes the given addresses (unicast or broadcast) and collects answers for `timeout`.
pub async fn discover_at(
    targets: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<ServerInfo>, DiscoveryError> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(DiscoveryError::Socket)?;
    socket.set_broadcast(true).map_err(DiscoveryError::Socket)?;
    let deadline = Instant::now() + timeout;
    // Three rounds of probes spread over the first half of the wait.
    let spacing = timeout / 6;
    let mut next_probe = Instant::now();
    let mut rounds = 0;
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if rounds < 3 && Instant::now() >= next_probe {
            let mut last_error = None;
            let mut sent = 0;
            for t in targets {
                // A host without a route for broadcast refuses that one target only.
                match socket.send_to(PROBE, t).await {
                    Ok(_) => sent += 1,
                    Err(e) => last_error = Some(e),
                }
            }
            if sent == 0
                && rounds == 0
                && let Some(e) = last_error
            {
                return Err(DiscoveryError::Send(e));
            }
            rounds += 1;
            next_probe = Instant::now() + spacing;
        }
        let wake = if rounds < 3 {
            next_probe.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                match serde_json::from_slice::<Datagram>(&buf[..n]) {
                    Ok(Datagram::Server(info)) => {
                        if seen.insert((info.node_id.clone(), info.url.clone())) {
                            found.push(info);
                        }
                    }
                    _ => tracing::debug!(%from, "ignoring a datagram that is not a server answer"),
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Ok(found);
                }
            }
        }
    }
}

/// The server to use: the one remembered in `remember` if it still accepts WebSocket
/// connections, else the first one discovery finds (which is then remembered). `None`
/// when neither works.
pub async fn locate(
    port: u16,
    timeout: Duration,
    remember: Option<&Path>,
) -> Result<Option<String>, DiscoveryError> {
    if let Some(path) = remember
        && let Some(url) = crate::remember::load(path)
    {
        let opts = crate::ClientOptions {
            connect_timeout: timeout,
            ..Default::default()
        };
        if let Ok((mut ws, _)) = crate::handshake::open(url.clone(), opts).await {
            let _ = ws.close(None).await;
            return Ok(Some(url));
        }
        tracing::info!(%url, "the remembered server does not answer; discovering");
    }
    let found = discover(port, timeout).await?;
    let Some(first) = found.into_iter().next() else {
        return Ok(None);
    };
    if let Some(path) = remember
        && let Err(e) = crate::remember::save(path, &first.url)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remember the server");
    }
    Ok(Some(first.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_have_the_contract_shape() {
        let probe: Datagram = serde_json::from_slice(PROBE).unwrap();
        assert!(matches!(probe, Datagram::Discover));
        let answer = Datagram::Server(ServerInfo {
            name: "kitchen".into(),
            node_id: "n1".into(),
            url: "ws://10.0.0.2:8080/ws".into(),
            version: "0.1.0".into(),
        });
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"type":"server","name":"kitchen","node_id":"n1",
                "url":"ws://10.0.0.2:8080/ws","version":"0.1.0"})
        );
    }
}
