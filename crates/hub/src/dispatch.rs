//! Client requests: one frame in, replies and broadcasts queued out.
//!
//! [`Hub::handle_frame`] decodes a frame, checks that its type is enabled on the
//! endpoint, and calls the handler for it. Every handler returns the typed reply (or
//! `None` for a plain `ack`); errors become `error` messages carrying the request's
//! `id`. Nothing here closes the connection except `leave` without a room.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;
use switchboard_protocol::{
    ClientMessage, CloseCode, ErrorCode, Map, Request, RequestId, RoomMessage, ServerMessage,
    decode_client,
};

use crate::auth::AuthState;
use crate::clock::now_ms;
use crate::connection::Connection;
use crate::error::{HubError, HubResult};
use crate::events::{HubEvent, RtKind};
use crate::frame::{Payload, SharedFrame};
use crate::hooks::{Decision, HookSet};
use crate::hub::{Hub, JoinArgs, Sequenced};

/// Default and largest page for `presence` and `history`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// What a handler answers.
enum Outcome {
    /// This typed reply (carrying the request's id).
    Reply(ServerMessage),
    /// An `ack` when the request had an id, with the room and offset when known.
    Ack {
        room: Option<String>,
        offset: Option<u64>,
    },
    /// The handler already queued its reply.
    Replied,
}

type Reply = HubResult<Outcome>;

fn ack() -> Reply {
    Ok(Outcome::Ack {
        room: None,
        offset: None,
    })
}

impl Hub {
    /// Handles one protocol-mode frame from `conn`.
    pub async fn handle_frame(&self, conn: &Arc<Connection>, frame: &[u8]) {
        let req = match decode_client(frame, conn.encoding()) {
            Ok(req) => req,
            Err(e) => {
                self.reply_error(conn, e.id, HubError::new(e.code, e.message))
                    .await;
                return;
            }
        };
        self.handle_request(conn, req).await;
    }

    /// Handles one decoded request from `conn`.
    pub async fn handle_request(&self, conn: &Arc<Connection>, req: Request) {
        let Request { id, msg } = req;
        // `refresh` keeps an authenticated connection alive; it is never disabled.
        if !matches!(msg, ClientMessage::Refresh { .. })
            && !conn.endpoint().events.allows(msg.type_name())
        {
            let err = HubError::forbidden(format!(
                "`{}` is not enabled on this endpoint",
                msg.type_name()
            ));
            self.reply_error(conn, id, err).await;
            return;
        }
        // `leave` without a room ends the connection: ack first, then close 1000.
        if let ClientMessage::Leave { room: None } = &msg {
            for room in conn.rooms() {
                let _ = self.leave_room(conn, &room).await;
            }
            if id.is_some() {
                conn.send(Payload::msg(ServerMessage::ack(id)));
            }
            conn.queue().close(CloseCode::NORMAL.0, "leave");
            return;
        }
        let result = match msg {
            ClientMessage::Ping { client_time } => {
                self.on_ping(conn, id.clone(), client_time).await
            }
            ClientMessage::Join {
                room,
                code,
                since,
                meta,
            } => self
                .join_room(
                    conn,
                    JoinArgs {
                        id: id.clone(),
                        room: &room,
                        code: code.as_deref(),
                        since: since.as_ref(),
                        meta,
                        trusted: false,
                    },
                )
                .await
                // `joined` is queued by join_room itself, under the room lock.
                .map(|()| Outcome::Replied),
            ClientMessage::Leave { room: Some(room) } => {
                self.leave_room(conn, &room).await.map(|()| {
                    Outcome::Reply(ServerMessage::Left {
                        id: id.clone(),
                        room,
                    })
                })
            }
            ClientMessage::Leave { room: None } => ack(),
            ClientMessage::Publish {
                room,
                data,
                exclude_self,
            } => {
                self.on_publish(conn, id.clone(), &room, data, exclude_self.unwrap_or(false))
                    .await
            }
            ClientMessage::Direct { to, data } => self.on_direct(conn, &to, data).await,
            ClientMessage::Presence {
                room,
                cursor,
                limit,
            } => self.on_presence(conn, id.clone(), &room, cursor, limit),
            ClientMessage::History { room, since, limit } => {
                self.on_history(conn, id.clone(), &room, since, limit)
            }
            ClientMessage::SetMeta { meta } => self.on_set_meta(conn, meta),
            ClientMessage::Param {
                room,
                param,
                value,
                at,
            } => self.on_param(conn, &room, param, value, at).await,
            ClientMessage::Trigger {
                room,
                name,
                data,
                at,
            } => self.on_trigger(conn, &room, name, data, at).await,
            ClientMessage::Sync { room } => self.on_sync(conn, id.clone(), &room),
            ClientMessage::GetConnectionId => Ok(Outcome::Reply(ServerMessage::ConnectionId {
                id: id.clone(),
                connection_id: conn.id().to_owned(),
            })),
            ClientMessage::GetSessions => self.sessions(conn.profile()).await.map(|sessions| {
                Outcome::Reply(ServerMessage::Sessions {
                    id: id.clone(),
                    sessions,
                })
            }),
            ClientMessage::CreateSession { session } => self
                .create_session(conn.profile(), session)
                .await
                .and_then(|_| ack()),
            ClientMessage::UpdateSession {
                session_id,
                changes,
            } => self
                .update_session(conn.profile(), session_id, changes, Some(conn.id()))
                .await
                .and_then(|_| ack()),
            ClientMessage::DeleteSession { session_id } => self
                .delete_session(conn.profile(), session_id)
                .await
                .and_then(|()| ack()),
            ClientMessage::RegisterConnection { connection } => self
                .register_connection(conn, connection)
                .await
                .and_then(|()| ack()),
            ClientMessage::RegisterPlayers { players } => self
                .register_players(conn, players)
                .await
                .and_then(|()| ack()),
            ClientMessage::CreateAudioZone { audio_zone } => self
                .create_audio_zone(conn.profile(), audio_zone)
                .await
                .and_then(|_| ack()),
            ClientMessage::SetSeek { session_id, seek } => self
                .set_seek(conn.profile(), session_id, seek, Some(conn.id()))
                .await
                .and_then(|()| ack()),
            ClientMessage::Refresh { token } => self.on_refresh(conn, &token),
        };
        match result {
            Ok(Outcome::Ack { room, offset }) => {
                if id.is_some() {
                    conn.send(Payload::msg(ServerMessage::Ack { id, room, offset }));
                }
            }
            Ok(Outcome::Reply(reply)) => {
                conn.send(Payload::msg(reply));
            }
            Ok(Outcome::Replied) => {}
            Err(e) => self.reply_error(conn, id, e).await,
        }
    }

    /// Answers a frame dropped by the connection's message limit: `RATE_LIMITED`, with
    /// the request's `id` when it can be read.
    pub(crate) async fn reject_rate_limited(&self, conn: &Arc<Connection>, frame: &[u8]) {
        let id = match decode_client(frame, conn.encoding()) {
            Ok(req) => req.id,
            Err(e) => e.id,
        };
        let err = HubError::new(
            ErrorCode::RateLimited,
            "too many messages; slow down or the connection will be closed (4029)",
        );
        self.reply_error(conn, id, err).await;
    }

    /// `refresh`: a new token for the same subject replaces the connection's permissions
    /// and expiry.
    fn on_refresh(&self, conn: &Connection, token: &str) -> Reply {
        let Some(verifier) = conn.endpoint().verifier.clone() else {
            return Err(HubError::forbidden(
                "this endpoint does not use authentication",
            ));
        };
        let grant = verifier.verify(token)?;
        // A connection's client id never changes: members and directs are keyed by it.
        if grant.client_id != conn.client_id() {
            return Err(HubError::new(
                ErrorCode::Unauthorized,
                "the new token is for another subject; reconnect to change identity",
            ));
        }
        conn.set_auth(AuthState::from_grant(&grant));
        ack()
    }

    async fn reply_error(&self, conn: &Arc<Connection>, id: Option<RequestId>, e: HubError) {
        self.inner.stats.error(e.code);
        if let Some(h) = self.hook(HookSet::ERROR) {
            h.on_error(conn, e.code, &e.message).await;
        }
        conn.send(Payload::msg(ServerMessage::error(id, e.code, e.message)));
    }

    async fn on_ping(
        &self,
        conn: &Arc<Connection>,
        id: Option<RequestId>,
        client_time: Option<i64>,
    ) -> Reply {
        if let Some(h) = self.hook(HookSet::PING) {
            h.on_ping(conn).await;
        }
        Ok(Outcome::Reply(ServerMessage::Pong {
            id,
            client_time,
            server_time: now_ms(),
            rtt_ms: conn.rtt_ms(),
        }))
    }

    async fn on_publish(
        &self,
        conn: &Arc<Connection>,
        id: Option<RequestId>,
        room_id: &str,
        mut data: Value,
        exclude_self: bool,
    ) -> Reply {
        let room = self.member_room(conn, room_id)?;
        may_write(conn, room_id)?;
        if let Some(h) = self.hook(HookSet::MESSAGE) {
            match h.on_message(conn, room_id, &data).await {
                Decision::Allow => {}
                Decision::Rewrite(new) => data = new,
                Decision::Reject { code, message } => return Err(HubError::new(code, message)),
            }
        }
        let event_data = self.inner.events.wanted().then(|| data.clone());
        let me = conn.id();
        let except = if exclude_self {
            vec![me.to_owned()]
        } else {
            Vec::new()
        };
        if !self.has_broker() {
            let message = RoomMessage {
                room: room_id.to_owned(),
                data,
                from: conn.client_id().to_owned(),
                connection_id: Some(me.to_owned()),
                offset: 0,
                ts: now_ms(),
            };
            self.inner.stats.published.fetch_add(1, Ordering::Relaxed);
            match self.sequence_local(&room, message, &except)? {
                Sequenced::Delivered(offset) => {
                    self.emit_message(me, room_id, offset, event_data);
                    return Ok(Outcome::Ack {
                        room: Some(room_id.to_owned()),
                        offset: Some(offset),
                    });
                }
                Sequenced::Durable(pending) => {
                    // The store write is committed in the background so that this
                    // connection can go on reading: its next publishes join the same
                    // group commit. The ack (or error) is sent when the write is done.
                    let permit = self.durable_permit().await;
                    let (hub, conn, room_id) = (self.clone(), conn.clone(), room_id.to_owned());
                    tokio::spawn(async move {
                        let result = hub.commit_durable(&room, pending).await;
                        drop(permit);
                        match result {
                            Ok(offset) => {
                                hub.emit_message(conn.id(), &room_id, offset, event_data);
                                if id.is_some() {
                                    conn.send(Payload::msg(ServerMessage::Ack {
                                        id,
                                        room: Some(room_id),
                                        offset: Some(offset),
                                    }));
                                }
                            }
                            Err(e) => hub.reply_error(&conn, id, e).await,
                        }
                    });
                    return Ok(Outcome::Replied);
                }
            }
        }
        let offset = self
            .deliver(&room, data, conn.client_id(), Some(me), &except)
            .await?;
        self.emit_message(me, room_id, offset, event_data);
        Ok(Outcome::Ack {
            room: Some(room_id.to_owned()),
            offset: Some(offset),
        })
    }

    fn emit_message(&self, connection_id: &str, room: &str, offset: u64, data: Option<Value>) {
        if let Some(data) = data {
            self.inner.events.emit(HubEvent::Message {
                connection_id: connection_id.to_owned(),
                room: room.to_owned(),
                offset,
                data,
            });
        }
    }

    async fn on_direct(&self, conn: &Arc<Connection>, to: &str, mut data: Value) -> Reply {
        let targets = match self.connection(to) {
            Some(c) => vec![c],
            None => self.client_connections(to),
        };
        // In a cluster the target may be (also) on other nodes.
        let remote_nodes = match self.broker() {
            Some(b) if self.connection(to).is_none() => b
                .locate(to)
                .await
                .map_err(|e| HubError::new(ErrorCode::Internal, e.to_string()))?,
            _ => Vec::new(),
        };
        if targets.is_empty() && remote_nodes.is_empty() {
            return Err(HubError::not_found(format!(
                "no client or connection `{to}`"
            )));
        }
        if let Some(h) = self.hook(HookSet::DIRECT) {
            match h.on_direct(conn, to, &data).await {
                Decision::Allow => {}
                Decision::Rewrite(new) => data = new,
                Decision::Reject { code, message } => return Err(HubError::new(code, message)),
            }
        }
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Direct {
                connection_id: conn.id().to_owned(),
                to: to.to_owned(),
                data: data.clone(),
            });
        }
        let ts = now_ms();
        if let Some(b) = self.broker() {
            for node in &remote_nodes {
                let cmd = crate::cluster::NodeCommand::Direct {
                    to: to.to_owned(),
                    from: conn.client_id().to_owned(),
                    connection_id: Some(conn.id().to_owned()),
                    data: data.clone(),
                    ts,
                };
                b.command(Some(node), cmd)
                    .await
                    .map_err(|e| HubError::new(ErrorCode::Internal, e.to_string()))?;
            }
        }
        let frame = Payload::Msg(SharedFrame::new(ServerMessage::Direct {
            from: conn.client_id().to_owned(),
            connection_id: Some(conn.id().to_owned()),
            data,
            ts,
        }));
        for t in targets {
            t.send(frame.clone());
        }
        ack()
    }

    fn on_presence(
        &self,
        conn: &Connection,
        id: Option<RequestId>,
        room_id: &str,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> Reply {
        let room = self.member_room(conn, room_id)?;
        let limit = page_limit(limit)?;
        let st = room.lock();
        // Members of every node (cluster), in connection-id order.
        let (members, count, next_cursor) =
            self.presence_page(room_id, &st, cursor.as_deref(), limit);
        Ok(Outcome::Reply(ServerMessage::Presence {
            id,
            room: room_id.to_owned(),
            count,
            members,
            next_cursor,
        }))
    }

    fn on_history(
        &self,
        conn: &Connection,
        id: Option<RequestId>,
        room_id: &str,
        since: Option<u64>,
        limit: Option<u32>,
    ) -> Reply {
        let room = self.member_room(conn, room_id)?;
        let limit = page_limit(limit)?;
        let mut st = room.lock();
        st.expire_history(now_ms());
        let messages = match since {
            Some(s) => st.since(s, limit),
            None => st.latest(limit),
        };
        Ok(Outcome::Reply(ServerMessage::History {
            id,
            room: room_id.to_owned(),
            epoch: st.epoch.clone(),
            offset: st.offset,
            messages,
        }))
    }

    fn on_set_meta(&self, conn: &Connection, meta: Map) -> Reply {
        conn.set_meta(meta);
        ack()
    }

    async fn on_param(
        &self,
        conn: &Connection,
        room_id: &str,
        param: String,
        value: f64,
        at: Option<i64>,
    ) -> Reply {
        let room = self.member_room(conn, room_id)?;
        may_write(conn, room_id)?;
        let state = {
            let mut st = room.lock();
            let p = st.param_mut(&param).ok_or_else(|| {
                HubError::not_found(format!("room `{room_id}` has no parameter `{param}`"))
            })?;
            if !value.is_finite() || value < p.min || value > p.max {
                return Err(HubError::bad_request(format!(
                    "`{param}` must be within [{}, {}], got {value}",
                    p.min, p.max
                )));
            }
            p.value = value;
            p.clone()
        };
        self.persist_params(&room).await?;
        let update = ServerMessage::Update {
            room: room_id.to_owned(),
            param: param.clone(),
            value,
            at,
            from: conn.client_id().to_owned(),
        };
        if self.has_broker() {
            self.room_event(&room, update.clone());
            self.cluster_signal(room_id, vec![state], Some(update))
                .await;
        } else {
            self.room_event(&room, update);
        }
        self.emit_rt(RtKind::Param, room_id, &param, value, at);
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Param {
                connection_id: conn.id().to_owned(),
                room: room_id.to_owned(),
                param,
                value,
                at,
            });
        }
        ack()
    }

    async fn on_trigger(
        &self,
        conn: &Connection,
        room_id: &str,
        name: String,
        data: Option<Value>,
        at: Option<i64>,
    ) -> Reply {
        let room = self.member_room(conn, room_id)?;
        may_write(conn, room_id)?;
        let ts = now_ms();
        let at = at.unwrap_or(ts);
        let data = data.unwrap_or(Value::Null);
        if self.inner.events.wanted() {
            self.inner.events.emit(HubEvent::Trigger {
                connection_id: conn.id().to_owned(),
                room: room_id.to_owned(),
                name: name.clone(),
                data: data.clone(),
                at,
            });
        }
        self.emit_rt(RtKind::Trigger, room_id, &name, 0.0, Some(at));
        let trigger = ServerMessage::Trigger {
            room: room_id.to_owned(),
            name,
            data,
            at,
            from: conn.client_id().to_owned(),
            ts,
        };
        if self.has_broker() {
            self.room_event(&room, trigger.clone());
            self.cluster_signal(room_id, Vec::new(), Some(trigger))
                .await;
        } else {
            self.room_event(&room, trigger);
        }
        ack()
    }

    fn on_sync(&self, conn: &Connection, id: Option<RequestId>, room_id: &str) -> Reply {
        let room = self.member_room(conn, room_id)?;
        let params = room.lock().params.clone();
        Ok(Outcome::Reply(ServerMessage::State {
            id,
            room: room_id.to_owned(),
            params,
        }))
    }
}

/// Writes to a room (`publish`, `param`, `trigger`) need the token's permission.
fn may_write(conn: &Connection, room_id: &str) -> HubResult<()> {
    if conn.may_publish(room_id) {
        Ok(())
    } else {
        Err(HubError::forbidden(format!(
            "your token does not allow writing to room `{room_id}`"
        )))
    }
}

fn page_limit(limit: Option<u32>) -> HubResult<usize> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(HubError::new(
            ErrorCode::BadRequest,
            "`limit` must be at least 1",
        )),
        n => Ok(n.min(MAX_PAGE) as usize),
    }
}
