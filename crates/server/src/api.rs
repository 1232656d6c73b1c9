//! The REST API (PROTOCOL §8): rooms, messages, connections and broadcasts, on the same
//! port as the WebSocket endpoints.
//!
//! Every handler is a thin shell over a [`Hub`] command, so REST and WebSocket share one
//! code path. Errors use one shape, `{"error":{"code","message"}}`, with the status
//! derived from the code. Access: a bearer token when `api_token` is configured,
//! otherwise loopback peers only.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use switchboard_hub::{EndpointRules, Hub, HubError, ParamSpec, RoomSpec};
use switchboard_protocol::ErrorCode;
use switchboard_protocol::playback::{NewAudioZone, NewSession, SessionChanges};

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
    (
        status,
        Json(json!({"error": {"code": code.as_str(), "message": message}})),
    )
        .into_response()
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

fn ok(v: Value) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The `/api` routes, guarded by [`guard`].
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/rooms", get(list_rooms).post(create_room))
        .route("/api/rooms/{id}", get(get_room).delete(delete_room))
        .route("/api/rooms/{id}/messages", post(publish))
        .route("/api/rooms/{id}/history", get(history))
        .route("/api/rooms/{id}/presence", get(presence))
        .route("/api/rooms/{id}/join", post(join))
        .route("/api/rooms/{id}/leave", post(leave))
        .route("/api/rooms/{id}/params", post(set_param))
        .route("/api/broadcast", post(broadcast))
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{id}",
            get(get_connection).delete(disconnect),
        )
        .route("/api/connections/{id}/rooms", get(connection_rooms))
        .route("/api/connections/{id}/messages", post(send_direct))
        .route("/api/sessions", get(list_sessions).post(create_session))
        .route(
            "/api/sessions/{id}",
            get(get_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .route("/api/audio-zones", get(list_zones).post(create_zone))
        .route("/api/players", get(list_players))
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

async fn list_rooms(State(s): State<ApiState>) -> ApiResult {
    let rooms = s.hub.rooms();
    ok(json!({"count": rooms.len(), "rooms": rooms}))
}

async fn create_room(
    State(s): State<ApiState>,
    body: Result<Json<RoomSpec>, JsonRejection>,
) -> ApiResult {
    let Json(mut spec) = body?;
    spec.max_connections = spec
        .max_connections
        .or(Some(s.room_defaults.room_max_connections));
    spec.history_size = spec.history_size.or(Some(s.room_defaults.history_size));
    spec.history_ttl_s = spec
        .history_ttl_s
        .or(Some(s.room_defaults.history_ttl.as_secs()));
    spec.slow_consumer = spec.slow_consumer.or(Some(s.room_defaults.slow_consumer));
    let room = s.hub.create_room(spec).await?;
    Ok((StatusCode::CREATED, Json(json!({"room": room}))).into_response())
}

async fn get_room(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let room = s
        .hub
        .room_info(&id)
        .ok_or_else(|| not_found(format!("no room `{id}`")))?;
    ok(json!({"room": room}))
}

async fn delete_room(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    s.hub.close_room(&id, "closed").await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct DataBody {
    data: Value,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn publish(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<DataBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let offset = s.hub.publish(&id, b.data, &b.except).await?;
    ok(json!({"offset": offset}))
}

#[derive(Deserialize)]
struct HistoryQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn history(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        )
    })?;
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
    ok(json!({"epoch": epoch, "offset": offset, "messages": messages}))
}

async fn presence(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let members = s
        .hub
        .members(&id)
        .ok_or_else(|| not_found(format!("no room `{id}`")))?;
    ok(json!({"count": members.len(), "members": members}))
}

#[derive(Deserialize)]
struct ConnBody {
    connection_id: String,
}

async fn join(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ConnBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    s.hub.join(&b.connection_id, &id).await?;
    ok(json!({"joined": true}))
}

async fn leave(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ConnBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    s.hub.leave(&b.connection_id, &id).await?;
    ok(json!({"left": true}))
}

async fn set_param(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<ParamSpec>, JsonRejection>,
) -> ApiResult {
    let Json(spec) = body?;
    let param = s.hub.set_param(&id, spec).await?;
    ok(json!({"param": param}))
}

async fn broadcast(
    State(s): State<ApiState>,
    body: Result<Json<DataBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    let name = b.name.unwrap_or_else(|| "broadcast".into());
    let sent = s.hub.broadcast(&name, b.data, &b.except);
    ok(json!({"sent": sent}))
}

async fn list_connections(State(s): State<ApiState>) -> ApiResult {
    let conns = s.hub.connections().await;
    ok(json!({"count": conns.len(), "connections": conns}))
}

async fn get_connection(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let c = s
        .hub
        .client_info(&id)
        .await
        .ok_or_else(|| not_found(format!("no connection `{id}`")))?;
    ok(json!({"connection": c}))
}

async fn connection_rooms(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let rooms = s
        .hub
        .user_rooms(&id)
        .ok_or_else(|| not_found(format!("no connection `{id}`")))?;
    ok(json!({"count": rooms.len(), "rooms": rooms}))
}

async fn send_direct(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<DataBody>, JsonRejection>,
) -> ApiResult {
    let Json(b) = body?;
    s.hub.send(&id, b.data).await?;
    ok(json!({"sent": true}))
}

async fn disconnect(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    s.hub
        .disconnect(&id, 1000, "disconnected by the server")
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct ProfileQuery {
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

type Profile = Result<Query<ProfileQuery>, axum::extract::rejection::QueryRejection>;

fn profile(q: Profile) -> Result<ProfileQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        )
    })
}

fn session_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| not_found(format!("no session `{id}`")))
}

async fn list_sessions(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let sessions = s.hub.sessions(q.name()).await?;
    ok(json!({"count": sessions.len(), "sessions": sessions}))
}

async fn create_session(
    State(s): State<ApiState>,
    q: Profile,
    body: Result<Json<NewSession>, JsonRejection>,
) -> ApiResult {
    let q = profile(q)?;
    let Json(new) = body?;
    let session = s.hub.create_session(q.name(), new).await?;
    Ok((StatusCode::CREATED, Json(json!({"session": session}))).into_response())
}

async fn get_session(State(s): State<ApiState>, Path(id): Path<String>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let session = s.hub.session(q.name(), session_id(&id)?).await?;
    ok(json!({"session": session}))
}

async fn update_session(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Profile,
    body: Result<Json<SessionChanges>, JsonRejection>,
) -> ApiResult {
    let q = profile(q)?;
    let Json(changes) = body?;
    let session = s
        .hub
        .update_session(q.name(), session_id(&id)?, changes, None)
        .await?;
    ok(json!({"session": session}))
}

async fn delete_session(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    q: Profile,
) -> ApiResult {
    let q = profile(q)?;
    s.hub.delete_session(q.name(), session_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_zones(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let zones = s.hub.audio_zones(q.name()).await?;
    ok(json!({"count": zones.len(), "audio_zones": zones}))
}

async fn create_zone(
    State(s): State<ApiState>,
    q: Profile,
    body: Result<Json<NewAudioZone>, JsonRejection>,
) -> ApiResult {
    let q = profile(q)?;
    let Json(new) = body?;
    let zone = s.hub.create_audio_zone(q.name(), new).await?;
    Ok((StatusCode::CREATED, Json(json!({"audio_zone": zone}))).into_response())
}

async fn list_players(State(s): State<ApiState>, q: Profile) -> ApiResult {
    let q = profile(q)?;
    let players = s.hub.players(q.name()).await?;
    ok(json!({"count": players.len(), "players": players}))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the store and broker answer.
pub async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.is_ready().await {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
            .into_response()
    }
}
