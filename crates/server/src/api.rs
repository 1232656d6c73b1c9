//! The REST API (PROTOCOL §8): rooms, messages, connections and broadcasts, on the same
//! port as the WebSocket endpoints.
//!
//! Every handler is a thin shell over a [`Hub`] command, so REST and WebSocket share one
//! code path. Errors use one shape, `{"error":{"code","message"}}`, with the status
//! derived from the code. Access: a bearer token when `api_token` is configured,
//! otherwise loopback peers only.
//!
//! Each handler carries its OpenAPI description (`#[utoipa::path]`) and is mounted with
//! `routes!`, so a route cannot exist without its entry in `GET /api/openapi.json`
//! ([`crate::openapi`] assembles the document; [`crate::api_types`] holds the bodies).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use switchboard_hub::{EndpointRules, Hub, HubError, ParamSpec, RoomSpec};
use switchboard_protocol::ErrorCode;
use switchboard_protocol::playback::{NewAudioZone, NewSession, SessionChanges};

use crate::api_types::{
    AudioZoneBody, AudioZoneList, BroadcastRequest, BroadcastSent, ConnectionBody, ConnectionList,
    ConnectionRef, DirectRequest, DirectSent, ErrorBody, ErrorDetail, History, Joined, Left,
    ParamBody, PlayerList, Presence, PublishRequest, Published, RoomBody, RoomList, SessionBody,
    SessionList, Status,
};
use crate::json_body::JsonBody;
use crate::ws::RemoteAddr;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub hub: Hub,
    pub api_token: Option<String>,
    /// Room defaults for rooms created over REST: those of the default endpoint.
    pub room_defaults: Arc<EndpointRules>,
}

/// The error body every refusal uses.
pub fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message: message.to_owned(),
        },
    };
    (status, Json(body)).into_response()
}

/// A failed API call.
pub struct ApiError(pub StatusCode, pub ErrorCode, pub String);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        // Over REST an unknown room is a 404, not INVALID_ROOM (PROTOCOL §11).
        let code = match e.code {
            ErrorCode::InvalidRoom => ErrorCode::NotFound,
            c => c,
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError(status, code, e.message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        // A body that is not JSON at all keeps its own status (415 without a JSON content
        // type, 413 over the size limit); malformed or mistyped JSON is a 400 like every
        // other validation error.
        let status = match e.status() {
            s @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => s,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, ErrorCode::BadRequest, e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.0, self.1, &self.2)
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
}

type ApiResult = Result<Response, ApiError>;

fn ok<T: serde::Serialize>(v: T) -> ApiResult {
    Ok(Json(v).into_response())
}

fn created<T: serde::Serialize>(v: T) -> ApiResult {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The `{id}` of a path. A segment that does not decode (invalid UTF-8 after
/// percent-decoding) is a 400 in the API's error shape rather than axum's plain text.
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|e| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    e.body_text(),
                )
            })
    }
}

/// The `/api` routes with their OpenAPI descriptions. [`router`] serves them;
/// [`crate::openapi::document`] describes them.
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list_rooms, create_room))
        .routes(routes!(get_room, delete_room))
        .routes(routes!(publish))
        .routes(routes!(history))
        .routes(routes!(presence))
        .routes(routes!(join))
        .routes(routes!(leave))
        .routes(routes!(set_param))
        .routes(routes!(broadcast))
        .routes(routes!(list_connections))
        .routes(routes!(get_connection, disconnect))
        .routes(routes!(connection_rooms))
        .routes(routes!(send_direct))
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, update_session, delete_session))
        .routes(routes!(list_zones, create_zone))
        .routes(routes!(list_players))
        .routes(routes!(openapi_json))
}

/// The `/api` routes, guarded by `guard`.
pub fn router(state: ApiState) -> Router {
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such API route".into(),
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// `GET /api/openapi.json`: the OpenAPI 3.1 document of this API. It is under the same
/// access rule as the rest of `/api` (PROTOCOL §11: the token guards `/api/*`).
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}

/// Bearer token when configured; otherwise loopback peers only.
async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    match &s.api_token {
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return error_response(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "missing or wrong API token",
                );
            }
        }
        None => {
            let loopback = req
                .extensions()
                .get::<RemoteAddr>()
                .is_some_and(|a| a.0.ip().is_loopback());
            if !loopback {
                return error_response(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "no API token is configured, so only loopback peers are served",
                );
            }
        }
    }
    next.run(req).await
}

#[utoipa::path(
    get,
    path = "/api/rooms",
    tag = "rooms",
    responses((status = 200, description = "Every room, sorted by id", body = RoomList)),
)]
async fn list_rooms(State(s): State<ApiState>) -> ApiResult {
    let rooms = s.hub.list_rooms().await;
    ok(RoomList {
        count: rooms.len(),
        rooms,
    })
}

/// Creates a room. Absent limits take the default endpoint's values; a `code` of `true`
/// generates one.
#[utoipa::path(
    post,
    path = "/api/rooms",
    tag = "rooms",
    request_body = RoomSpec,
    responses(
        (status = 201, description = "The new room", body = RoomBody),
        (status = 400, description = "Invalid room id, code, parameter or body", body = ErrorBody),
        (status = 409, description = "A room with this id already exists", body = ErrorBody),
    ),
)]
async fn create_room(
    State(s): State<ApiState>,
    JsonBody(mut spec): JsonBody<RoomSpec>,
) -> ApiResult {
    if let Some(id) = &spec.id
        && s.hub.find_room_info(id).await?.is_some()
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            ErrorCode::BadRequest,
            format!("room `{id}` already exists"),
        ));
    }
    spec.max_connections = spec
        .max_connections
        .or(Some(s.room_defaults.room_max_connections));
    spec.history_size = spec.history_size.or(Some(s.room_defaults.history_size));
    spec.history_ttl_s = spec
        .history_ttl_s
        .or(Some(s.room_defaults.history_ttl.as_secs()));
    spec.slow_consumer = spec.slow_consumer.or(Some(s.room_defaults.slow_consumer));
    let room = s.hub.create_room(spec).await?;
    created(RoomBody { room })
}

#[utoipa::path(
    get,
    path = "/api/rooms/{id}",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    responses(
        (status = 200, description = "The room", body = RoomBody),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn get_room(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    let room = s
        .hub
        .find_room_info(&id)
        .await?
        .ok_or_else(|| not_found(format!("no room `{id}`")))?;
    ok(RoomBody { room })
}

/// Closes a room: its members get `closed`.
#[utoipa::path(
    delete,
    path = "/api/rooms/{id}",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    responses(
        (status = 204, description = "Closed"),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn delete_room(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    s.hub.close_room(&id, "closed").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Publishes to a room as the server (`from: "server"`, `connection_id: null`).
#[utoipa::path(
    post,
    path = "/api/rooms/{id}/messages",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published; the message's offset", body = Published),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn publish(
    State(s): State<ApiState>,
    Id(id): Id,
    JsonBody(b): JsonBody<PublishRequest>,
) -> ApiResult {
    let offset = s.hub.publish(&id, b.data, &b.except).await?;
    ok(Published { offset })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Only messages with a greater offset; absent: the newest `limit` messages.
    since: Option<u64>,
    /// At most this many messages (default 100; values over 1000 read as 1000).
    #[param(minimum = 1)]
    limit: Option<usize>,
}

/// A room's history, oldest first (PROTOCOL §11).
#[utoipa::path(
    get,
    path = "/api/rooms/{id}/history",
    tag = "rooms",
    params(
        ("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The messages", body = History),
        (status = 400, description = "Invalid `since` or `limit`", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn history(
    State(s): State<ApiState>,
    Id(id): Id,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "`limit` must be at least 1".into(),
        ));
    }
    s.hub.cluster_refresh(&id).await;
    let (epoch, offset, messages) = s
        .hub
        .history(&id, q.since, limit.min(1000))
        .ok_or_else(|| not_found(format!("no room `{id}`")))?;
    ok(History {
        epoch,
        offset,
        messages,
    })
}

#[utoipa::path(
    get,
    path = "/api/rooms/{id}/presence",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    responses(
        (status = 200, description = "The room's members", body = Presence),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn presence(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    let members = s
        .hub
        .room_members(&id)
        .await?
        .ok_or_else(|| not_found(format!("no room `{id}`")))?;
    ok(Presence {
        count: members.len(),
        members,
    })
}

/// Joins a connection to an existing room: it gets `joined`, the others `presence_join`.
#[utoipa::path(
    post,
    path = "/api/rooms/{id}/join",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    request_body = ConnectionRef,
    responses(
        (status = 200, description = "Joined", body = Joined),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 403, description = "The connection is in too many rooms, or a hook refused", body = ErrorBody),
        (status = 404, description = "No such room or connection", body = ErrorBody),
        (status = 409, description = "The room is full", body = ErrorBody),
    ),
)]
async fn join(
    State(s): State<ApiState>,
    Id(id): Id,
    JsonBody(b): JsonBody<ConnectionRef>,
) -> ApiResult {
    s.hub.join(&b.connection_id, &id).await?;
    ok(Joined { joined: true })
}

/// Takes a connection out of a room: it gets `left`, the others `presence_leave`.
#[utoipa::path(
    post,
    path = "/api/rooms/{id}/leave",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    request_body = ConnectionRef,
    responses(
        (status = 200, description = "Left", body = Left),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such room or connection, or the connection is not in the room", body = ErrorBody),
    ),
)]
async fn leave(
    State(s): State<ApiState>,
    Id(id): Id,
    JsonBody(b): JsonBody<ConnectionRef>,
) -> ApiResult {
    s.hub.leave(&b.connection_id, &id).await?;
    ok(Left { left: true })
}

/// Defines a parameter or sets its value (and range); members get `update`. The value
/// must lie within `[min, max]` (default `[0, 1]`, or the parameter's current range).
#[utoipa::path(
    post,
    path = "/api/rooms/{id}/params",
    tag = "rooms",
    params(("id" = String, Path, description = "Room id", pattern = "^[A-Za-z0-9_:.-]{1,128}$")),
    request_body = ParamSpec,
    responses(
        (status = 200, description = "The parameter as it now is", body = ParamBody),
        (status = 400, description = "Invalid body, or the value is outside the range", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ),
)]
async fn set_param(
    State(s): State<ApiState>,
    Id(id): Id,
    JsonBody(spec): JsonBody<ParamSpec>,
) -> ApiResult {
    let param = s.hub.set_param(&id, spec).await?;
    ok(ParamBody { param })
}

/// Sends `event {name, data}` to every connection but those in `except`.
#[utoipa::path(
    post,
    path = "/api/broadcast",
    tag = "connections",
    request_body = BroadcastRequest,
    responses(
        (status = 200, description = "How many connections it was queued for", body = BroadcastSent),
        (status = 400, description = "Invalid body", body = ErrorBody),
    ),
)]
async fn broadcast(
    State(s): State<ApiState>,
    JsonBody(b): JsonBody<BroadcastRequest>,
) -> ApiResult {
    let name = b.name.unwrap_or_else(|| "broadcast".into());
    let sent = s.hub.broadcast(&name, b.data, &b.except);
    ok(BroadcastSent { sent })
}

#[utoipa::path(
    get,
    path = "/api/connections",
    tag = "connections",
    responses((status = 200, description = "Every connection", body = ConnectionList)),
)]
async fn list_connections(State(s): State<ApiState>) -> ApiResult {
    let connections = s.hub.connections().await;
    ok(ConnectionList {
        count: connections.len(),
        connections,
    })
}

#[utoipa::path(
    get,
    path = "/api/connections/{id}",
    tag = "connections",
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionBody),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
    ),
)]
async fn get_connection(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    let connection = s
        .hub
        .client_info(&id)
        .await
        .ok_or_else(|| not_found(format!("no connection `{id}`")))?;
    ok(ConnectionBody { connection })
}

/// The rooms a connection is in, as room objects.
#[utoipa::path(
    get,
    path = "/api/connections/{id}/rooms",
    tag = "connections",
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 200, description = "The connection's rooms", body = RoomList),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
    ),
)]
async fn connection_rooms(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    let rooms = s
        .hub
        .user_rooms(&id)
        .ok_or_else(|| not_found(format!("no connection `{id}`")))?;
    ok(RoomList {
        count: rooms.len(),
        rooms,
    })
}

/// Sends the connection `direct {from: "server", connection_id: null, data}`.
#[utoipa::path(
    post,
    path = "/api/connections/{id}/messages",
    tag = "connections",
    params(("id" = String, Path, description = "Connection id")),
    request_body = DirectRequest,
    responses(
        (status = 200, description = "Queued for the connection", body = DirectSent),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
    ),
)]
async fn send_direct(
    State(s): State<ApiState>,
    Id(id): Id,
    JsonBody(b): JsonBody<DirectRequest>,
) -> ApiResult {
    s.hub.send(&id, b.data).await?;
    ok(DirectSent { sent: true })
}

/// Disconnects a connection (close 1000).
#[utoipa::path(
    delete,
    path = "/api/connections/{id}",
    tag = "connections",
    params(("id" = String, Path, description = "Connection id")),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 400, description = "The path does not decode", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody),
    ),
)]
async fn disconnect(State(s): State<ApiState>, Id(id): Id) -> ApiResult {
    s.hub
        .disconnect(&id, 1000, "disconnected by the server")
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ProfileQuery {
    /// The playback profile; `default` when absent or empty.
    profile: Option<String>,
}

impl ProfileQuery {
    fn name(&self) -> &str {
        self.profile
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("default")
    }
}

type Profile = Result<Query<ProfileQuery>, QueryRejection>;

fn profile(q: Profile) -> Result<ProfileQuery, ApiError> {
    Ok(q?.0)
}

fn session_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| not_found(format!("no session `{id}`")))
}

#[utoipa::path(
    get,
    path = "/api/sessions",
    tag = "playback",
    params(ProfileQuery),
    responses(
        (status = 200, description = "The profile's sessions", body = SessionList),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ),
)]
async fn list_sessions(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let sessions = s.hub.sessions(q.name()).await?;
    ok(SessionList {
        count: sessions.len(),
        sessions,
    })
}

/// Creates a session; every connection of the profile gets `sessions`.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "playback",
    params(ProfileQuery),
    request_body = NewSession,
    responses(
        (status = 201, description = "The new session", body = SessionBody),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 404, description = "No such audio zone or player", body = ErrorBody),
    ),
)]
async fn create_session(
    State(s): State<ApiState>,
    q: Profile,
    JsonBody(new): JsonBody<NewSession>,
) -> ApiResult {
    let q = profile(q)?;
    let session = s.hub.create_session(q.name(), new).await?;
    created(SessionBody { session })
}

#[utoipa::path(
    get,
    path = "/api/sessions/{id}",
    tag = "playback",
    params(("id" = u64, Path, description = "Session id"), ProfileQuery),
    responses(
        (status = 200, description = "The session", body = SessionBody),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 404, description = "No such session in this profile", body = ErrorBody),
    ),
)]
async fn get_session(State(s): State<ApiState>, Id(id): Id, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let session = s.hub.session(q.name(), session_id(&id)?).await?;
    ok(SessionBody { session })
}

/// Changes a session: the fields present change, at least one must be given, and none
/// may be `null` or unknown. The profile's other connections get `session_updated`.
#[utoipa::path(
    patch,
    path = "/api/sessions/{id}",
    tag = "playback",
    params(("id" = u64, Path, description = "Session id"), ProfileQuery),
    request_body = SessionChanges,
    responses(
        (status = 200, description = "The session as it now is", body = SessionBody),
        (status = 400, description = "Invalid body or query", body = ErrorBody),
        (status = 404, description = "No such session, audio zone or player", body = ErrorBody),
    ),
)]
async fn update_session(
    State(s): State<ApiState>,
    Id(id): Id,
    q: Profile,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult {
    let q = profile(q)?;
    let Json(body) = body?;
    let changes = crate::session_patch::parse(body)
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m))?;
    let session = s
        .hub
        .update_session(q.name(), session_id(&id)?, changes, None)
        .await?;
    ok(SessionBody { session })
}

/// Deletes a session; every connection of the profile gets `sessions`.
#[utoipa::path(
    delete,
    path = "/api/sessions/{id}",
    tag = "playback",
    params(("id" = u64, Path, description = "Session id"), ProfileQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 404, description = "No such session in this profile", body = ErrorBody),
    ),
)]
async fn delete_session(State(s): State<ApiState>, Id(id): Id, q: Profile) -> ApiResult {
    let q = profile(q)?;
    s.hub.delete_session(q.name(), session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    get,
    path = "/api/audio-zones",
    tag = "playback",
    params(ProfileQuery),
    responses(
        (status = 200, description = "The profile's audio zones with their sessions", body = AudioZoneList),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ),
)]
async fn list_zones(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let audio_zones = s.hub.audio_zones(q.name()).await?;
    ok(AudioZoneList {
        count: audio_zones.len(),
        audio_zones,
    })
}

/// Creates an audio zone; every connection of the profile gets `audio_zone_with_sessions`.
#[utoipa::path(
    post,
    path = "/api/audio-zones",
    tag = "playback",
    params(ProfileQuery),
    request_body = NewAudioZone,
    responses(
        (status = 201, description = "The new audio zone", body = AudioZoneBody),
        (status = 400, description = "Invalid body or query", body = ErrorBody),
        (status = 404, description = "No such player", body = ErrorBody),
    ),
)]
async fn create_zone(
    State(s): State<ApiState>,
    q: Profile,
    JsonBody(new): JsonBody<NewAudioZone>,
) -> ApiResult {
    let q = profile(q)?;
    let audio_zone = s.hub.create_audio_zone(q.name(), new).await?;
    created(AudioZoneBody { audio_zone })
}

#[utoipa::path(
    get,
    path = "/api/players",
    tag = "playback",
    params(ProfileQuery),
    responses(
        (status = 200, description = "The profile's registered players", body = PlayerList),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ),
)]
async fn list_players(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let players = s.hub.players(q.name()).await?;
    ok(PlayerList {
        count: players.len(),
        players,
    })
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    security(),
    responses((status = 200, description = "Up", body = Status)),
)]
pub async fn healthz() -> Response {
    Json(Status { status: "ok" }).into_response()
}

/// `GET /readyz`: the store and broker answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    security(),
    responses(
        (status = 200, description = "The store and broker answer", body = Status),
        (status = 503, description = "The store or broker does not answer", body = Status),
    ),
)]
pub async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.is_ready().await {
        Json(Status { status: "ready" }).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Status {
                status: "not ready",
            }),
        )
            .into_response()
    }
}
