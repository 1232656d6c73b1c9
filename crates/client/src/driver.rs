//! The task that owns the socket. Every [`crate::Client`] handle talks to it through a
//! channel; it alone writes, reads, reconnects and keeps the bookkeeping, so there is no
//! lock around the connection and the order of events is the order things happened.
//!
//! Its life is a loop over three phases:
//!
//! 1. **connect** ([`crate::handshake::open`]): requests that arrive meanwhile are queued;
//! 2. **session**: after `welcome` it sends the last `set_meta`, rejoins every room with
//!    `since`, then writes what was queued — in that order, so a queued `publish` finds
//!    its room; then it reads frames, writes requests, pings, and watches for silence;
//! 3. **wait**: the backoff delay (or the server's `retry_after_ms` / `Retry-After`), still
//!    queueing requests. After `max_retries` failed attempts, or a terminal refusal, the
//!    client is `Failed` and waits for `retry_now` or `close`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{ClientMessage, ErrorCode, ServerMessage};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use crate::backoff::backoff_delay;
use crate::clock::unix_ms;
use crate::handshake::{self, Ws};
use crate::recovery::JoinedRoom;
use crate::shared::Shared;
use crate::{ClientError, ClientOptions, Event, Status, wire};

/// What a request's future receives.
pub type Reply = Result<ServerMessage, ClientError>;

/// A message from a handle to the driver.
pub enum Command {
    /// Send a request; the reply (or error) goes back on `reply`.
    Request(Outgoing),
    /// Close for good; `done` fires when the socket is closed.
    Close(oneshot::Sender<()>),
    /// Skip the backoff wait, or start again after `Failed`.
    RetryNow,
}

/// A request from the application.
pub struct Outgoing {
    pub msg: ClientMessage,
    pub reply: oneshot::Sender<Reply>,
    pub timeout: Duration,
}

/// What a request in flight is for.
enum Kind {
    /// The application's; its reply goes back on the sender.
    User(oneshot::Sender<Reply>),
    /// A rejoin after a reconnect.
    Rejoin,
    /// The `set_meta` replayed after a reconnect.
    Meta,
    /// A clock and liveness ping, sent at this local time (ms).
    Ping(i64),
}

struct InFlight {
    msg: ClientMessage,
    kind: Kind,
    timeout: Duration,
    deadline: Instant,
}

/// How a session ended.
struct End {
    reason: String,
    code: Option<u16>,
}

pub struct Driver {
    url: String,
    opts: ClientOptions,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    status: watch::Sender<Status>,
    /// Requests waiting for a connection, oldest first.
    queue: VecDeque<Outgoing>,
    in_flight: HashMap<i64, InFlight>,
    deadlines: BTreeSet<(Instant, i64)>,
    next_id: i64,
    /// The last `set_meta`, replayed after every reconnect.
    meta: Option<switchboard_protocol::Map>,
    /// A delay the server asked for (`closed.retry_after_ms`, `Retry-After`).
    retry_after: Option<Duration>,
    attempt: u32,
    closing: Option<Vec<oneshot::Sender<()>>>,
}

impl Driver {
    pub fn new(
        url: String,
        opts: ClientOptions,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        status: watch::Sender<Status>,
    ) -> Self {
        Driver {
            url,
            opts,
            shared,
            commands,
            events,
            status,
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_id: 1,
            meta: None,
            retry_after: None,
            attempt: 0,
            closing: None,
        }
    }

    async fn emit(&self, event: Event) {
        // A dropped receiver means the application does not want events: not an error.
        let _ = self.events.send(event).await;
    }

    async fn set_status(&self, status: Status) {
        self.status.send_replace(status.clone());
        self.emit(Event::Status(status)).await;
    }

    /// Runs until the client is closed (or every handle is dropped).
    pub async fn run(mut self) {
        loop {
            if self.closing.is_some() {
                break;
            }
            self.set_status(Status::Connecting {
                attempt: self.attempt,
            })
            .await;
            let mut terminal = false;
            match self.connect_phase().await {
                Some(Ok((mut ws, welcome))) => {
                    let end = self.session(&mut ws, welcome).await;
                    self.set_status(Status::Disconnected {
                        reason: end.reason.clone(),
                        code: end.code,
                    })
                    .await;
                    if let Some(code) = end.code {
                        terminal = self.opts.terminal_close_codes.contains(&code);
                    }
                    self.requeue_in_flight();
                    if terminal {
                        self.fail(&format!(
                            "closed with {code:?}: {}",
                            end.reason,
                            code = end.code
                        ))
                        .await;
                        if !self.failed_phase().await {
                            break;
                        }
                        continue;
                    }
                }
                Some(Err(e)) => {
                    self.set_status(Status::Disconnected {
                        reason: e.reason.clone(),
                        code: None,
                    })
                    .await;
                    if e.retry_after.is_some() {
                        self.retry_after = e.retry_after;
                    }
                    if e.terminal {
                        self.fail(&e.reason).await;
                        if !self.failed_phase().await {
                            break;
                        }
                        continue;
                    }
                }
                None => break, // closed while connecting
            }
            if self.closing.is_some() {
                break;
            }
            let out_of_retries = self.opts.max_retries.is_some_and(|max| self.attempt >= max);
            if !self.opts.reconnect || out_of_retries {
                let reason = if self.opts.reconnect {
                    format!("gave up after {} attempts", self.attempt + 1)
                } else {
                    "disconnected and reconnecting is off".into()
                };
                self.fail(&reason).await;
                if !self.failed_phase().await {
                    break;
                }
                continue;
            }
            let delay = self.retry_after.take().unwrap_or_else(|| {
                backoff_delay(self.attempt, self.opts.retry_delay, self.opts.max_delay)
            });
            self.attempt += 1;
            self.set_status(Status::Reconnecting {
                attempt: self.attempt,
                delay,
            })
            .await;
            if !self.wait_phase(delay).await {
                break;
            }
        }
        self.fail_all("the client was closed");
        self.set_status(Status::Closed).await;
        for done in self.closing.take().unwrap_or_default() {
            let _ = done.send(());
        }
    }

    // ---- offline phases ---------------------------------------------------------------

    /// Opens a connection while queueing requests. `None` when closed meanwhile.
    async fn connect_phase(
        &mut self,
    ) -> Option<Result<(Ws, handshake::Welcome), handshake::AttemptError>> {
        let open = handshake::open(self.url.clone(), self.opts.clone());
        tokio::pin!(open);
        loop {
            tokio::select! {
                result = &mut open => return Some(result),
                cmd = self.commands.recv() => {
                    self.offline_command(cmd);
                    if self.closing.is_some() {
                        return None;
                    }
                }
            }
        }
    }

    /// Waits `delay` while queueing requests. False when closed meanwhile.
    async fn wait_phase(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                cmd = self.commands.recv() => {
                    if matches!(cmd, Some(Command::RetryNow)) {
                        return true;
                    }
                    self.offline_command(cmd);
                    if self.closing.is_some() {
                        return false;
                    }
                }
            }
        }
    }

    /// `Failed`: requests fail at once until `retry_now` (true) or `close` (false).
    async fn failed_phase(&mut self) -> bool {
        loop {
            match self.commands.recv().await {
                Some(Command::RetryNow) => {
                    self.attempt = 0;
                    return true;
                }
                Some(Command::Request(o)) => {
                    let _ = o.reply.send(Err(ClientError::Closed {
                        reason: "the client stopped reconnecting; call retry_now()".into(),
                    }));
                }
                Some(Command::Close(done)) => {
                    self.closing = Some(vec![done]);
                    return false;
                }
                None => {
                    self.closing = Some(Vec::new());
                    return false;
                }
            }
        }
    }

    async fn fail(&mut self, reason: &str) {
        self.fail_all(reason);
        self.set_status(Status::Failed {
            reason: reason.to_owned(),
        })
        .await;
    }

    fn fail_all(&mut self, reason: &str) {
        let err = || ClientError::Closed {
            reason: reason.to_owned(),
        };
        for (_, f) in self.in_flight.drain() {
            if let Kind::User(tx) = f.kind {
                let _ = tx.send(Err(err()));
            }
        }
        self.deadlines.clear();
        for o in self.queue.drain(..) {
            let _ = o.reply.send(Err(err()));
        }
    }

    /// A command while there is no connection.
    fn offline_command(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(Command::Request(o)) => self.enqueue(o),
            Some(Command::Close(done)) => self.closing = Some(vec![done]),
            Some(Command::RetryNow) => {}
            None => self.closing = Some(Vec::new()),
        }
    }

    fn enqueue(&mut self, o: Outgoing) {
        match &o.msg {
            // Leaving while disconnected: forget the room, nothing to tell the server.
            ClientMessage::Leave { room: Some(room) } => {
                self.shared.rooms().forget(room);
                let _ = o.reply.send(Ok(ServerMessage::Left {
                    id: None,
                    room: room.clone(),
                }));
            }
            _ if self.queue.len() >= self.opts.queue_limit => {
                let _ = o.reply.send(Err(ClientError::QueueFull {
                    limit: self.opts.queue_limit,
                }));
            }
            msg => {
                if let ClientMessage::SetMeta { meta } = msg {
                    self.meta = Some(meta.clone());
                }
                self.queue.push_back(o);
            }
        }
    }

    /// After a session: requests whose reply will never come are sent again when safe,
    /// failed otherwise. Internal ones are redone by the next session anyway.
    fn requeue_in_flight(&mut self) {
        let mut ids: Vec<i64> = self.in_flight.keys().copied().collect();
        ids.sort_unstable();
        let mut again = Vec::new();
        for id in ids {
            let Some(f) = self.in_flight.remove(&id) else {
                continue;
            };
            if let Kind::User(reply) = f.kind {
                if wire::is_repeatable(&f.msg) && self.closing.is_none() {
                    again.push(Outgoing {
                        msg: f.msg,
                        reply,
                        timeout: f.timeout,
                    });
                } else {
                    let _ = reply.send(Err(ClientError::Disconnected {
                        request: f.msg.type_name(),
                    }));
                }
            }
        }
        self.deadlines.clear();
        for o in again.into_iter().rev() {
            self.queue.push_front(o);
        }
    }

    // ---- the session --------------------------------------------------------------------

    async fn session(&mut self, ws: &mut Ws, welcome: handshake::Welcome) -> End {
        self.attempt = 0;
        self.retry_after = None;
        self.shared
            .clock()
            .rough(welcome.server_time, unix_ms(SystemTime::now()));
        // Before `Connected`, so whoever sees it connected finds the file written.
        if let Some(path) = &self.opts.remember
            && let Err(e) = crate::remember::save(path, &self.url)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remember the server");
        }
        self.set_status(Status::Connected {
            connection_id: welcome.connection_id.clone(),
            client_id: welcome.client_id.clone(),
        })
        .await;
        if let Err(end) = self.resume(ws).await {
            return end;
        }
        let mut last_seen = Instant::now();
        let mut next_ping = Instant::now();
        let mut quick_pings = 3u32;
        loop {
            let dead_at = last_seen + self.opts.liveness_timeout;
            let mut wake = dead_at.min(next_ping);
            if let Some((deadline, _)) = self.deadlines.first() {
                wake = wake.min(*deadline);
            }
            tokio::select! {
                frame = ws.next() => {
                    match frame {
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = match frame {
                                Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                                None => (None, String::new()),
                            };
                            // Let tungstenite answer the close, bounded.
                            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                            return End {
                                reason: if reason.is_empty() { "closed by the server".into() } else { reason },
                                code,
                            };
                        }
                        Some(Ok(frame)) => {
                            if let Some(m) = wire::decode(&frame) {
                                self.on_message(m).await;
                            }
                        }
                        Some(Err(e)) => return End { reason: e.to_string(), code: None },
                        None => return End { reason: "the connection ended".into(), code: None },
                    }
                    // After handling (which may have waited for the application), so time
                    // spent not reading is never mistaken for silence.
                    last_seen = Instant::now();
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Request(o)) => {
                        if let Err(end) = self.write_user(ws, o).await {
                            return end;
                        }
                    }
                    Some(Command::RetryNow) => {}
                    Some(Command::Close(done)) => {
                        self.closing = Some(vec![done]);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            ws.close(Some(CloseFrame { code: WsCloseCode::Normal, reason: "client closed".into() })),
                        ).await;
                        return End { reason: "closed by the client".into(), code: Some(1000) };
                    }
                    None => {
                        self.closing = Some(Vec::new());
                        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                        return End { reason: "every client handle was dropped".into(), code: Some(1000) };
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= dead_at {
                        return End {
                            reason: format!("nothing received for {:?}", self.opts.liveness_timeout),
                            code: None,
                        };
                    }
                    if now >= next_ping {
                        let sent = unix_ms(SystemTime::now());
                        let ping = ClientMessage::Ping { client_time: Some(sent) };
                        if let Err(end) = self.write(ws, ping, Kind::Ping(sent), self.opts.liveness_timeout).await {
                            return end;
                        }
                        // A few quick samples first, so the clock estimate settles fast.
                        let every = if quick_pings > 0 {
                            quick_pings -= 1;
                            Duration::from_millis(200).min(self.opts.ping_interval)
                        } else {
                            self.opts.ping_interval
                        };
                        next_ping = now + every;
                    }
                    if let Some(end) = self.expire(now) {
                        return end;
                    }
                }
            }
        }
    }

    /// Right after `welcome`: metadata, rooms (with recovery), then the queue.
    async fn resume(&mut self, ws: &mut Ws) -> Result<(), End> {
        if let Some(meta) = self.meta.clone() {
            let msg = ClientMessage::SetMeta { meta };
            self.write(ws, msg, Kind::Meta, self.opts.request_timeout)
                .await?;
        }
        let rejoins: Vec<ClientMessage> = {
            let rooms = self.shared.rooms();
            rooms
                .joined()
                .map(|(room, how)| ClientMessage::Join {
                    room: room.clone(),
                    code: how.code.clone(),
                    since: rooms.since(room),
                    meta: how.meta.clone(),
                })
                .collect()
        };
        for msg in rejoins {
            self.write(ws, msg, Kind::Rejoin, self.opts.request_timeout)
                .await?;
        }
        while let Some(o) = self.queue.pop_front() {
            self.write_user(ws, o).await?;
        }
        Ok(())
    }

    async fn write_user(&mut self, ws: &mut Ws, o: Outgoing) -> Result<(), End> {
        if let ClientMessage::SetMeta { meta } = &o.msg {
            self.meta = Some(meta.clone());
        }
        let timeout = o.timeout;
        self.write(ws, o.msg, Kind::User(o.reply), timeout).await
    }

    /// Writes one request and records it as in flight.
    async fn write(
        &mut self,
        ws: &mut Ws,
        msg: ClientMessage,
        kind: Kind,
        timeout: Duration,
    ) -> Result<(), End> {
        let id = self.next_id;
        self.next_id += 1;
        let wire_msg = match &msg {
            ClientMessage::Join {
                room,
                code,
                since: None,
                meta,
            } => ClientMessage::Join {
                room: room.clone(),
                code: code.clone(),
                since: self.shared.rooms().since(room),
                meta: meta.clone(),
            },
            other => other.clone(),
        };
        let frame = match wire::encode_request(id, &wire_msg, self.opts.encoding) {
            Ok(f) => f,
            Err(e) => {
                if let Kind::User(tx) = kind {
                    let _ = tx.send(Err(e));
                }
                return Ok(());
            }
        };
        let deadline = Instant::now() + timeout;
        self.in_flight.insert(
            id,
            InFlight {
                msg,
                kind,
                timeout,
                deadline,
            },
        );
        self.deadlines.insert((deadline, id));
        // A write that cannot finish means the peer stopped reading: treat it like silence.
        match tokio::time::timeout(self.opts.liveness_timeout, ws.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End {
                reason: e.to_string(),
                code: None,
            }),
            Err(_) => Err(End {
                reason: format!(
                    "a write did not finish within {:?}",
                    self.opts.liveness_timeout
                ),
                code: None,
            }),
        }
    }

    /// Fails requests whose reply is overdue. A rejoin without an answer means the
    /// connection is not usable: it ends the session.
    fn expire(&mut self, now: Instant) -> Option<End> {
        let mut end = None;
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(f) = self.in_flight.remove(&id) else {
                continue;
            };
            match f.kind {
                Kind::User(tx) => {
                    let _ = tx.send(Err(ClientError::Timeout {
                        request: f.msg.type_name(),
                        timeout: f.timeout,
                    }));
                }
                Kind::Rejoin | Kind::Meta => {
                    end = Some(End {
                        reason: format!("no reply to `{}` after reconnecting", f.msg.type_name()),
                        code: None,
                    });
                }
                // Liveness is judged by silence, not by one late pong.
                Kind::Ping(_) => {}
            }
        }
        end
    }

    // ---- incoming -----------------------------------------------------------------------

    async fn on_message(&mut self, m: ServerMessage) {
        if let Some(id) = wire::reply_id(&m)
            && let Some(f) = self.in_flight.remove(&id)
        {
            self.deadlines.remove(&(f.deadline, id));
            self.on_reply(f, m).await;
            return;
        }
        match m {
            ServerMessage::Message(msg) => {
                if self.shared.rooms().accept(&msg) {
                    self.emit(Event::Message(msg)).await;
                }
            }
            // A join made for this connection by the server (REST API).
            ServerMessage::Joined { .. } => {
                let _ = self.on_joined(m, JoinedRoom::default()).await;
            }
            ServerMessage::Left { ref room, .. } => {
                self.shared.rooms().forget(room);
                self.emit(Event::Server(m)).await;
            }
            ServerMessage::Closed {
                ref room,
                retry_after_ms,
                ..
            } => {
                match room {
                    Some(room) => self.shared.rooms().forget(room),
                    None => self.retry_after = retry_after_ms.map(Duration::from_millis),
                }
                self.emit(Event::Server(m)).await;
            }
            ServerMessage::Welcome { .. } => {}
            other => self.emit(Event::Server(other)).await,
        }
    }

    async fn on_reply(&mut self, f: InFlight, m: ServerMessage) {
        match (f.kind, m) {
            (Kind::Ping(sent), ServerMessage::Pong { server_time, .. }) => {
                self.shared
                    .clock()
                    .sample(sent, unix_ms(SystemTime::now()), server_time);
            }
            (Kind::Ping(_) | Kind::Meta, _) => {}
            (kind, m @ ServerMessage::Joined { .. }) => {
                let how = match &f.msg {
                    ClientMessage::Join { code, meta, .. } => JoinedRoom {
                        code: code.clone(),
                        meta: meta.clone(),
                    },
                    _ => JoinedRoom::default(),
                };
                let joined = self.on_joined(m, how).await;
                if let Kind::User(tx) = kind {
                    let _ = tx.send(Ok(joined));
                }
            }
            (Kind::Rejoin, ServerMessage::Error { code, message, .. }) => {
                if let ClientMessage::Join { room, .. } = f.msg {
                    self.shared.rooms().forget(&room);
                    self.emit(Event::RejoinFailed {
                        room,
                        code,
                        message,
                    })
                    .await;
                }
            }
            (Kind::Rejoin, _) => {}
            (Kind::User(tx), ServerMessage::Left { id, room }) => {
                self.shared.rooms().forget(&room);
                let _ = tx.send(Ok(ServerMessage::Left { id, room }));
            }
            (Kind::User(tx), ServerMessage::Error { code, message, .. }) => {
                // Leaving a room the server no longer counts us in is done, not an error.
                if let ClientMessage::Leave { room: Some(room) } = &f.msg
                    && matches!(code, ErrorCode::NotInRoom | ErrorCode::InvalidRoom)
                {
                    self.shared.rooms().forget(room);
                    let _ = tx.send(Ok(ServerMessage::Left {
                        id: None,
                        room: room.clone(),
                    }));
                    return;
                }
                let _ = tx.send(Err(ClientError::Server { code, message }));
            }
            (Kind::User(tx), other) => {
                let _ = tx.send(Ok(other));
            }
        }
    }

    /// Records a `joined`, delivers what it recovered, and returns it without `recovered`
    /// (those messages went out as `Message` events, duplicates removed).
    async fn on_joined(&mut self, m: ServerMessage, how: JoinedRoom) -> ServerMessage {
        let ServerMessage::Joined {
            id,
            room,
            epoch,
            offset,
            members,
            members_count,
            next_cursor,
            recovered,
            recovered_complete,
        } = m
        else {
            return m;
        };
        let outcome = self.shared.rooms().on_joined(
            &room,
            how,
            &epoch,
            offset,
            recovered,
            recovered_complete,
        );
        let joined = ServerMessage::Joined {
            id,
            room: room.clone(),
            epoch: epoch.clone(),
            offset,
            members,
            members_count,
            next_cursor,
            recovered: Vec::new(),
            recovered_complete,
        };
        self.emit(Event::Server(joined.clone())).await;
        if let Some(prev) = outcome.incomplete {
            self.emit(Event::RecoveryIncomplete {
                room,
                previous_epoch: prev.epoch,
                since: prev.offset,
                epoch,
                offset,
                recovered: outcome.deliver.len(),
            })
            .await;
        }
        for msg in outcome.deliver {
            self.emit(Event::Message(msg)).await;
        }
        joined
    }
}
