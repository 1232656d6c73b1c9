//! Test fixtures: an in-process server, and a TCP proxy that can cut or silence the link.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_client::{Event, Status};
use switchboard_hub::Hub;
use switchboard_server::config::{Config, FileConfig, Overrides};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(15);

/// Starts a server on 127.0.0.1:0 with `store` (`memory` or a SQLite URL).
pub async fn start(store: &str, toml_text: &str) -> (switchboard_server::Running, Hub) {
    let file: FileConfig = toml::from_str(toml_text).unwrap();
    let over = Overrides {
        listen: Some("127.0.0.1:0".into()),
        store: Some(store.into()),
        node_id: Some("test".into()),
        ..Default::default()
    };
    let mut config = Config::merge(file, over).unwrap();
    config.shutdown_drain = Duration::from_millis(50);
    let stores = switchboard_store::open_all(store).await.unwrap();
    let hub = Hub::with_store(config.hub.clone(), stores.rooms.clone());
    hub.restore().await.unwrap();
    let running = switchboard_server::serve(hub.clone(), Arc::new(config))
        .await
        .unwrap();
    (running, hub)
}

struct Link {
    silent: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A TCP proxy in front of a server: `cut` drops every link (like a network failure with
/// resets), `silence` keeps the links open but forwards nothing (a half-open connection).
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    links: Arc<Mutex<Vec<Link>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            target: Arc::new(Mutex::new(target)),
            links: Arc::new(Mutex::new(Vec::new())),
            refusing: Arc::new(AtomicBool::new(false)),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.refusing.load(Ordering::SeqCst) {
                    continue; // dropping `client` refuses it
                }
                let target = *p.target.lock().unwrap();
                let Ok(server) = TcpStream::connect(target).await else {
                    continue; // dropping `client` refuses it
                };
                let silent = Arc::new(AtomicBool::new(false));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let tasks = vec![
                    tokio::spawn(pump(cr, sw, silent.clone())),
                    tokio::spawn(pump(sr, cw, silent.clone())),
                ];
                p.links.lock().unwrap().push(Link { silent, tasks });
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// While `on`, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    /// Drops every open link.
    pub fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            for t in link.tasks {
                t.abort();
            }
        }
    }

    /// Stops forwarding on every open link, keeping the sockets open.
    pub fn silence(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.silent.store(true, Ordering::SeqCst);
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            continue; // swallowed, like a network that went away without telling anyone
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads events until `pred` matches one, within `WAIT`; returns everything read.
pub async fn until(
    events: &mut switchboard_client::Events,
    mut pred: impl FnMut(&Event) -> bool,
) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) => {
                let done = pred(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("the event stream ended; saw {seen:#?}"),
            Err(_) => panic!("timed out; saw {seen:#?}"),
        }
    }
}

pub fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Status(Status::Connected { .. }))
}

/// The offsets of the room messages among `events`.
pub fn offsets(events: &[Event], room: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.room == room => Some(m.offset),
            _ => None,
        })
        .collect()
}
