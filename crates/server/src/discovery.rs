//! LAN discovery: answering `{"type":"discover"}` datagrams on a UDP port (PROTOCOL §11).
//!
//! Off by default (`[discovery] enabled = true` turns it on). The socket is bound to every
//! interface, so both broadcast and unicast probes arrive; SO_REUSEADDR and SO_REUSEPORT
//! let several servers on one machine share the port (a broadcast reaches all of them).
//! Each probe is answered unicast with the server's name, node id, version and the
//! WebSocket URL of its default endpoint, with the host part chosen for the prober: the
//! address this machine uses to reach it when the server listens on every interface.
//!
//! The task never panics on garbage: anything that is not a small JSON probe is ignored,
//! and answers are rate-limited so the port cannot be used to flood a third party.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use switchboard_client::discovery::{DEFAULT_PORT, Datagram, MAX_DATAGRAM, ServerInfo};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::config::DiscoveryConfig;

/// Answers per second at most; probes beyond it are dropped.
const MAX_ANSWERS_PER_SECOND: u32 = 200;

/// The running responder.
pub struct Discovery {
    /// The UDP port it answers on (useful when configured as 0).
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Stops answering.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the responder says about this server.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub node_id: String,
    /// Where the HTTP/WebSocket server listens.
    pub listen: SocketAddr,
    /// The path of the default protocol endpoint, e.g. `/ws`.
    pub path: String,
}

fn bind(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(socket.into())
}

/// The path of the default protocol endpoint (the first in protocol mode), for the URL.
pub fn default_path(config: &crate::config::Config) -> String {
    config
        .endpoints
        .iter()
        .find(|e| e.rules.mode == switchboard_hub::Mode::Protocol)
        .map_or_else(|| "/ws".to_owned(), |e| e.rules.path.clone())
}

/// Starts answering probes as configured; `None` when discovery is off.
pub fn start(config: &DiscoveryConfig, identity: Identity) -> std::io::Result<Option<Discovery>> {
    if !config.enabled {
        return Ok(None);
    }
    let socket = bind(config.port.unwrap_or(DEFAULT_PORT))?;
    let port = socket.local_addr()?.port();
    let name = config
        .name
        .clone()
        .or_else(|| Some(identity.name.clone()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| identity.node_id.clone());
    let identity = Identity { name, ..identity };
    tracing::info!(port, name = %identity.name, "answering LAN discovery probes");
    let task = tokio::spawn(respond(socket, identity));
    Ok(Some(Discovery { port, task }))
}

async fn respond(socket: UdpSocket, me: Identity) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut window = Instant::now();
    let mut answered = 0u32;
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier answers surface here on some systems; never spin.
                tracing::debug!(error = %e, "discovery receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if n >= buf.len() || !matches!(serde_json::from_slice(&buf[..n]), Ok(Datagram::Discover)) {
            continue;
        }
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            answered = 0;
        }
        if answered >= MAX_ANSWERS_PER_SECOND {
            continue;
        }
        let Some(host) = host_for(me.listen.ip(), peer) else {
            continue;
        };
        answered += 1;
        let answer = Datagram::Server(ServerInfo {
            name: me.name.clone(),
            node_id: me.node_id.clone(),
            url: format!(
                "ws://{}{}",
                SocketAddr::new(host, me.listen.port()),
                me.path
            ),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        let Ok(bytes) = serde_json::to_vec(&answer) else {
            continue;
        };
        if let Err(e) = socket.send_to(&bytes, peer).await {
            tracing::debug!(%peer, error = %e, "cannot answer a discovery probe");
        }
    }
}

/// The host a prober at `peer` should connect to, or `None` when it cannot reach this
/// server at all (it listens on loopback and the probe came from another machine).
fn host_for(listen: IpAddr, peer: SocketAddr) -> Option<IpAddr> {
    if listen.is_loopback() {
        return peer.ip().is_loopback().then_some(listen);
    }
    if !listen.is_unspecified() {
        return Some(listen);
    }
    if peer.ip().is_loopback() {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    // "Connecting" a UDP socket sends nothing; it only asks the routing table which local
    // address faces the peer.
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect(peer).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_host_is_one_the_prober_can_reach() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lan: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(host_for(loopback, lo), Some(loopback));
        assert_eq!(host_for(loopback, lan), None);
        let fixed: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(host_for(fixed, lan), Some(fixed));
        assert_eq!(
            host_for(IpAddr::V4(Ipv4Addr::UNSPECIFIED), lo),
            Some(loopback)
        );
    }
}
