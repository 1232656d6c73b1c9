//! The application's handle: typed requests, status, clock, and the event stream.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::Stream;
use serde_json::Value;
use switchboard_protocol::playback::{
    NewAudioZone, NewConnection, NewPlayer, NewSession, Session, SessionChanges,
};
use switchboard_protocol::{
    ClientMessage, Map, Member, ParamState, RoomMessage, ServerMessage, Since,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::ClockEstimate;
use crate::driver::{Command, Driver, Outgoing};
use crate::recovery::Position;
use crate::shared::Shared;
use crate::{ClientError, ClientOptions, Event, Status, handshake, wire};

/// A connection to a Switchboard server that reconnects by itself.
///
/// Cheap to clone; all clones drive the same connection. Dropping every clone closes it.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    status: watch::Receiver<Status>,
    request_timeout: Duration,
    url: Arc<str>,
}

/// The events of a client, in the order they happened: a [`Stream`] of [`Event`].
///
/// The buffer holds `event_buffer` events; when it is full the client stops reading the
/// socket until the application catches up (the server then applies its slow-consumer
/// policy), so nothing is dropped on the way. Drop it if you do not want events.
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed and every event was taken.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// How to join a room.
#[derive(Debug, Clone, Default)]
pub struct JoinOptions {
    /// The room's code, when it has one.
    pub code: Option<String>,
    /// Member metadata for this room (merged over the connection's).
    pub meta: Option<Map>,
    /// Recover from this position. By default the client recovers from the last message
    /// it saw in the room, if any.
    pub since: Option<Since>,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub room: String,
    pub epoch: String,
    /// The room's latest offset; live messages continue after it.
    pub offset: u64,
    /// Members (one page in a big room; see `members_count` and `next_cursor`).
    pub members: Vec<Member>,
    pub members_count: usize,
    pub next_cursor: Option<String>,
    /// False when the client had a position and messages since it could not all be
    /// recovered (an [`Event::RecoveryIncomplete`] was emitted too).
    pub recovered_complete: bool,
}

/// One page of a room's members.
#[derive(Debug, Clone, PartialEq)]
pub struct PresencePage {
    pub room: String,
    pub count: usize,
    pub members: Vec<Member>,
    pub next_cursor: Option<String>,
}

/// Messages read from a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub room: String,
    pub epoch: String,
    pub offset: u64,
    pub messages: Vec<RoomMessage>,
}

/// The answer to a `ping`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pong {
    /// The server's clock when it answered (ms since the Unix epoch).
    pub server_time: i64,
    /// This round trip, ms.
    pub rtt_ms: i64,
    /// The server's last WebSocket-level round trip to this connection, when known.
    pub server_rtt_ms: Option<u64>,
}

fn unexpected<T>(request: &'static str, got: &ServerMessage) -> Result<T, ClientError> {
    Err(ClientError::UnexpectedReply {
        request,
        got: wire::type_of(got),
    })
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`) and waits for the first `welcome`, retrying
    /// as the options say. Fails with `Closed` when the client gives up first.
    pub async fn connect(
        url: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events), ClientError> {
        let (client, events) = Client::start(url, options)?;
        client.wait_connected().await?;
        Ok((client, events))
    }

    /// Starts connecting in the background and returns at once; requests made before the
    /// connection is up wait in the queue. Must be called within a Tokio runtime.
    pub fn start(url: &str, options: ClientOptions) -> Result<(Client, Events), ClientError> {
        handshake::check_url(url).map_err(|message| ClientError::Invalid {
            what: "url",
            message,
        })?;
        options.validate()?;
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(options.event_buffer);
        let (status_tx, status_rx) = watch::channel(Status::Connecting { attempt: 0 });
        let shared = Arc::new(Shared::new(options.clock_samples));
        let request_timeout = options.request_timeout;
        let driver = Driver::new(
            url.to_owned(),
            options,
            shared.clone(),
            commands_rx,
            events_tx,
            status_tx,
        );
        tokio::spawn(driver.run());
        Ok((
            Client {
                commands: commands_tx,
                shared,
                status: status_rx,
                request_timeout,
                url: url.into(),
            },
            Events { rx: events_rx },
        ))
    }

    /// The URL this client connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The current status, as a `watch` receiver (`borrow()` for now, `changed()` to wait).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Waits until the client is connected; fails if it gives up or is closed first.
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let mut rx = self.status.clone();
        loop {
            match &*rx.borrow_and_update() {
                Status::Connected { .. } => return Ok(()),
                Status::Failed { reason } => {
                    return Err(ClientError::Closed {
                        reason: reason.clone(),
                    });
                }
                Status::Closed => {
                    return Err(ClientError::Closed {
                        reason: "the client was closed".into(),
                    });
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(ClientError::Closed {
                    reason: "the client stopped".into(),
                });
            }
        }
    }

    /// Closes the connection for good: waiting requests fail with `Closed`. Resolves once
    /// the socket is closed.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Skips the rest of a backoff wait, or starts again after `Failed`.
    pub fn retry_now(&self) {
        let _ = self.commands.try_send(Command::RetryNow);
    }

    // ---- clock ----------------------------------------------------------------------------

    /// The clock estimate: offset of the server clock and round-trip time.
    pub fn clock(&self) -> ClockEstimate {
        self.shared.clock().estimate()
    }

    /// The estimated server time now, ms since the Unix epoch: use it for `at`.
    pub fn server_now(&self) -> i64 {
        self.clock().to_server(SystemTime::now())
    }

    /// The server time at local time `local`.
    pub fn to_server_time(&self, local: SystemTime) -> i64 {
        self.clock().to_server(local)
    }

    /// The local time at which the server clock shows `server_ms` (e.g. an `update.at`).
    pub fn to_local_time(&self, server_ms: i64) -> SystemTime {
        self.clock().to_local(server_ms)
    }

    // ---- state ------------------------------------------------------------------------------

    /// Where `room` left off: epoch and offset of the last message delivered.
    pub fn position(&self, room: &str) -> Option<Position> {
        self.shared.rooms().position(room).cloned()
    }

    /// Rooms the client is in and will rejoin after a reconnect.
    pub fn rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .rooms()
            .joined()
            .map(|(r, _)| r.clone())
            .collect();
        v.sort();
        v
    }

    // ---- requests ---------------------------------------------------------------------------

    /// Sends any request and returns the server's reply (an `error` becomes
    /// [`ClientError::Server`]). Waits in the queue while disconnected.
    pub async fn request(&self, msg: ClientMessage) -> Result<ServerMessage, ClientError> {
        self.request_with_timeout(msg, self.request_timeout).await
    }

    /// [`Client::request`] with its own timeout.
    pub async fn request_with_timeout(
        &self,
        msg: ClientMessage,
        timeout: Duration,
    ) -> Result<ServerMessage, ClientError> {
        let (tx, rx) = oneshot::channel();
        let closed = || ClientError::Closed {
            reason: "the client was closed".into(),
        };
        self.commands
            .send(Command::Request(Outgoing {
                msg,
                reply: tx,
                timeout,
            }))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn ack(&self, msg: ClientMessage) -> Result<(), ClientError> {
        let name = msg.type_name();
        match self.request(msg).await? {
            ServerMessage::Ack { .. } => Ok(()),
            other => unexpected(name, &other),
        }
    }

    /// A `ping`: one clock sample and the round trip.
    pub async fn ping(&self) -> Result<Pong, ClientError> {
        let sent = crate::clock::unix_ms(SystemTime::now());
        let reply = self
            .request(ClientMessage::Ping {
                client_time: Some(sent),
            })
            .await?;
        let received = crate::clock::unix_ms(SystemTime::now());
        match reply {
            ServerMessage::Pong {
                server_time,
                rtt_ms,
                ..
            } => {
                self.shared.clock().sample(sent, received, server_time);
                Ok(Pong {
                    server_time,
                    rtt_ms: received - sent,
                    server_rtt_ms: rtt_ms,
                })
            }
            other => unexpected("ping", &other),
        }
    }

    /// Joins `room`, recovering from the last message seen in it (if any). Recovered
    /// messages are delivered as [`Event::Message`] before this resolves.
    pub async fn join(&self, room: &str) -> Result<Joined, ClientError> {
        self.join_with(room, JoinOptions::default()).await
    }

    /// Joins with a code, metadata or an explicit recovery position.
    pub async fn join_with(&self, room: &str, opts: JoinOptions) -> Result<Joined, ClientError> {
        let reply = self
            .request(ClientMessage::Join {
                room: room.to_owned(),
                code: opts.code,
                since: opts.since,
                meta: opts.meta,
            })
            .await?;
        match reply {
            ServerMessage::Joined {
                room,
                epoch,
                offset,
                members,
                members_count,
                next_cursor,
                recovered_complete,
                ..
            } => Ok(Joined {
                room,
                epoch,
                offset,
                members,
                members_count,
                next_cursor,
                recovered_complete,
            }),
            other => unexpected("join", &other),
        }
    }

    /// Leaves `room` (while disconnected: just stops rejoining it).
    pub async fn leave(&self, room: &str) -> Result<(), ClientError> {
        match self
            .request(ClientMessage::Leave {
                room: Some(room.to_owned()),
            })
            .await?
        {
            ServerMessage::Left { .. } | ServerMessage::Ack { .. } => Ok(()),
            other => unexpected("leave", &other),
        }
    }

    /// Publishes `data` to `room`; returns the message's offset once the server has it
    /// (kept in the store first for a durable room).
    pub async fn publish(&self, room: &str, data: Value) -> Result<u64, ClientError> {
        self.publish_with(room, data, false).await
    }

    /// [`Client::publish`], optionally not delivered back to this connection.
    pub async fn publish_with(
        &self,
        room: &str,
        data: Value,
        exclude_self: bool,
    ) -> Result<u64, ClientError> {
        let reply = self
            .request(ClientMessage::Publish {
                room: room.to_owned(),
                data,
                exclude_self: exclude_self.then_some(true),
            })
            .await?;
        match reply {
            ServerMessage::Ack {
                offset: Some(offset),
                ..
            } => Ok(offset),
            other => unexpected("publish", &other),
        }
    }

    /// Sends `data` to every connection of a client id, or to one connection id.
    pub async fn direct(&self, to: &str, data: Value) -> Result<(), ClientError> {
        self.ack(ClientMessage::Direct {
            to: to.to_owned(),
            data,
        })
        .await
    }

    /// One page of `room`'s members (`cursor` from the previous page's `next_cursor`).
    pub async fn presence(
        &self,
        room: &str,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Result<PresencePage, ClientError> {
        let reply = self
            .request(ClientMessage::Presence {
                room: room.to_owned(),
                cursor,
                limit,
            })
            .await?;
        match reply {
            ServerMessage::Presence {
                room,
                count,
                members,
                next_cursor,
                ..
            } => Ok(PresencePage {
                room,
                count,
                members,
                next_cursor,
            }),
            other => unexpected("presence", &other),
        }
    }

    /// Messages of `room`: after `since` (oldest first), or the newest `limit`.
    pub async fn history(
        &self,
        room: &str,
        since: Option<u64>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let reply = self
            .request(ClientMessage::History {
                room: room.to_owned(),
                since,
                limit,
            })
            .await?;
        match reply {
            ServerMessage::History {
                room,
                epoch,
                offset,
                messages,
                ..
            } => Ok(HistoryPage {
                room,
                epoch,
                offset,
                messages,
            }),
            other => unexpected("history", &other),
        }
    }

    /// Replaces the connection's metadata; it is sent again after every reconnect.
    pub async fn set_meta(&self, meta: Map) -> Result<(), ClientError> {
        self.ack(ClientMessage::SetMeta { meta }).await
    }

    /// Sets a room parameter, at server time `at` when given (see [`Client::server_now`]).
    pub async fn param(
        &self,
        room: &str,
        param: &str,
        value: f64,
        at: Option<i64>,
    ) -> Result<(), ClientError> {
        self.ack(ClientMessage::Param {
            room: room.to_owned(),
            param: param.to_owned(),
            value,
            at,
        })
        .await
    }

    /// Fires a trigger in a room, at server time `at` when given.
    pub async fn trigger(
        &self,
        room: &str,
        name: &str,
        data: Option<Value>,
        at: Option<i64>,
    ) -> Result<(), ClientError> {
        self.ack(ClientMessage::Trigger {
            room: room.to_owned(),
            name: name.to_owned(),
            data,
            at,
        })
        .await
    }

    /// The room's parameters with their ranges.
    pub async fn sync(&self, room: &str) -> Result<Vec<ParamState>, ClientError> {
        match self
            .request(ClientMessage::Sync {
                room: room.to_owned(),
            })
            .await?
        {
            ServerMessage::State { params, .. } => Ok(params),
            other => unexpected("sync", &other),
        }
    }

    /// This connection's id.
    pub async fn connection_id(&self) -> Result<String, ClientError> {
        match self.request(ClientMessage::GetConnectionId).await? {
            ServerMessage::ConnectionId { connection_id, .. } => Ok(connection_id),
            other => unexpected("get_connection_id", &other),
        }
    }

    /// The profile's playback sessions.
    pub async fn sessions(&self) -> Result<Vec<Session>, ClientError> {
        match self.request(ClientMessage::GetSessions).await? {
            ServerMessage::Sessions { sessions, .. } => Ok(sessions),
            other => unexpected("get_sessions", &other),
        }
    }

    /// Creates a playback session (every connection of the profile gets `sessions`).
    pub async fn create_session(&self, session: NewSession) -> Result<(), ClientError> {
        self.ack(ClientMessage::CreateSession { session }).await
    }

    /// Changes some fields of a session.
    pub async fn update_session(
        &self,
        session_id: u64,
        changes: SessionChanges,
    ) -> Result<(), ClientError> {
        self.ack(ClientMessage::UpdateSession {
            session_id,
            changes,
        })
        .await
    }

    /// Deletes a session.
    pub async fn delete_session(&self, session_id: u64) -> Result<(), ClientError> {
        self.ack(ClientMessage::DeleteSession { session_id }).await
    }

    /// Registers this connection and its players.
    pub async fn register_connection(&self, connection: NewConnection) -> Result<(), ClientError> {
        self.ack(ClientMessage::RegisterConnection { connection })
            .await
    }

    /// Replaces this connection's players.
    pub async fn register_players(&self, players: Vec<NewPlayer>) -> Result<(), ClientError> {
        self.ack(ClientMessage::RegisterPlayers { players }).await
    }

    /// Creates an audio zone from players.
    pub async fn create_audio_zone(&self, audio_zone: NewAudioZone) -> Result<(), ClientError> {
        self.ack(ClientMessage::CreateAudioZone { audio_zone })
            .await
    }

    /// Tells the profile's other devices where playback is.
    pub async fn set_seek(&self, session_id: u64, seek: f64) -> Result<(), ClientError> {
        self.ack(ClientMessage::SetSeek { session_id, seek }).await
    }
}
