//! Building blocks for the examples: serving a [`Hub`] over plain tokio-tungstenite,
//! with no HTTP framework at all.
//!
//! The hub does not know about sockets. Anything that implements
//! [`switchboard_hub::Transport`] — here, a tokio-tungstenite `WebSocketStream` over a TCP
//! socket — can be handed to [`switchboard_hub::driver::run`], which does the rest:
//! welcome, requests, fan-out, heartbeats, clean-up.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{
    ConnectInfo, EndpointRules, Hub, Incoming, Outgoing, Transport, TransportError, driver,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};

/// A tokio-tungstenite socket as a hub transport: about thirty lines.
pub struct Plain(pub WebSocketStream<TcpStream>);

impl Transport for Plain {
    async fn recv(&mut self) -> Option<Result<Incoming, TransportError>> {
        Some(match self.0.next().await? {
            Ok(Message::Text(t)) => Ok(Incoming::Text(Bytes::from(t))),
            Ok(Message::Binary(b)) => Ok(Incoming::Binary(b)),
            Ok(Message::Pong(p)) => Ok(Incoming::Pong(p)),
            Ok(Message::Close(f)) => Ok(Incoming::Close(f.map(|f| f.code.into()))),
            Ok(Message::Ping(_) | Message::Frame(_)) => Ok(Incoming::Ping),
            Err(Error::Capacity(_)) => Err(TransportError::TooBig),
            Err(Error::Utf8(_)) => Err(TransportError::InvalidUtf8),
            Err(Error::Protocol(p)) => Err(TransportError::Protocol(p.to_string())),
            Err(e) => Err(TransportError::Io(e.to_string())),
        })
    }

    async fn send_batch(&mut self, batch: &[Outgoing]) -> Result<(), TransportError> {
        for o in batch {
            let msg = match o {
                Outgoing::Text(b) => match std::str::from_utf8(b) {
                    Ok(s) => Message::text(s),
                    Err(_) => continue,
                },
                Outgoing::Binary(b) => Message::Binary(b.clone()),
                // Only produced for transports that offer a compressor; this one does not.
                Outgoing::Compressed { .. } => continue,
                Outgoing::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code: (*code).into(),
                    reason: reason.as_str().into(),
                })),
            };
            if let Err(e) = self.0.feed(msg).await {
                return Err(TransportError::Io(e.to_string()));
            }
        }
        self.0
            .flush()
            .await
            .map_err(|e| TransportError::Io(e.to_string()))
    }

    async fn ping(&mut self, payload: Bytes) -> Result<(), TransportError> {
        self.0
            .send(Message::Ping(payload))
            .await
            .map_err(|e| TransportError::Io(e.to_string()))
    }
}

/// Accepts WebSocket connections on `listener` forever, serving `hub` in protocol mode.
pub async fn serve(hub: Hub, listener: TcpListener) {
    let rules = Arc::new(EndpointRules::new("/"));
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (hub, rules) = (hub.clone(), rules.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let info = ConnectInfo {
                remote_addr: Some(peer),
                ..Default::default()
            };
            let conn = hub.connect(info, rules, None);
            driver::run(&hub, conn, Plain(ws)).await;
        });
    }
}
