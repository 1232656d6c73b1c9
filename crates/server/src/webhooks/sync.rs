//! Synchronous hooks: [`HttpHooks`] implements the hub's [`Hooks`] trait by POSTing each
//! hooked event to the endpoint's URL and turning the answer into a [`Decision`]
//! (PROTOCOL §10):
//!
//! | answer | decision |
//! |---|---|
//! | 2xx, empty body or a JSON object without `data` | allow unchanged |
//! | 2xx with `{"data": …}` | allow with that data (publish and direct) |
//! | 403 with `{"error": {"code", "message"}}` | reject with that error (`FORBIDDEN` by default) |
//! | anything else, no answer within `timeout_ms`, an unreadable 2xx body | `fail_open` decides: allow, or reject with `INTERNAL` |
//!
//! The hub awaits the decision inside the task of the connection that made the request,
//! before any room lock is taken, so a slow backend holds up that one client's request
//! and nobody else's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use switchboard_hub::{ConnectRequest, Connection, Decision, HookSet, Hooks};
use switchboard_protocol::{ErrorCode, Map};
use tokio::sync::Semaphore;

use super::client::{Answer, CallError, HttpClient, Post};
use super::metrics::{CallOutcome, HookLabel, LogThrottle, WebhookMetrics};
use super::settings::{EndpointHooks, SyncHook};

/// The body of a synchronous hook call.
#[derive(Debug, Serialize)]
pub struct HookCall<'a> {
    pub event: &'static str,
    pub endpoint: &'a str,
    /// `null` for `connect`: the connection does not exist yet.
    pub connection_id: Option<&'a str>,
    /// For `connect`, the `client_id` the client asked for (`null` when none).
    pub client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a Value>,
    /// The connection's metadata.
    pub meta: &'a Map,
    /// `join`: the metadata the join carried for this room, when it carried any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_meta: Option<&'a Map>,
    /// `connect`: the `name` query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// `connect`: the client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// `close`: the close code, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// `close`: why the connection ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// When the call was made, ms since the epoch.
    pub ts: i64,
}

/// A failed call, before the failure policy applies.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("unexpected status {0}")]
    Status(u16),
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
}

/// Turns an answer into a decision, or says why it is not one.
pub fn interpret(hook: SyncHook, answer: &Answer) -> Result<Decision, HookFailure> {
    match answer.status {
        200..=299 => {
            if answer.body.iter().all(u8::is_ascii_whitespace) {
                return Ok(Decision::Allow);
            }
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(Value::Object(mut o)) => Ok(match o.remove("data") {
                    Some(data) => Decision::Rewrite(data),
                    None => Decision::Allow,
                }),
                Ok(_) => Err(HookFailure::BadAnswer("not a JSON object".into())),
                Err(e) => Err(HookFailure::BadAnswer(e.to_string())),
            }
        }
        403 => {
            let error = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|mut v| v.get_mut("error").map(Value::take));
            let code = error
                .as_ref()
                .and_then(|e| e.get("code"))
                .and_then(|c| serde_json::from_value::<ErrorCode>(c.clone()).ok())
                .unwrap_or(ErrorCode::Forbidden);
            let message = error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map_or_else(
                    || format!("refused by the {} hook", hook.as_str()),
                    str::to_owned,
                );
            Ok(Decision::Reject { code, message })
        }
        status => Err(HookFailure::Status(status)),
    }
}

/// One endpoint's hooks while serving.
struct EndpointRuntime {
    path: String,
    settings: EndpointHooks,
    in_flight: Semaphore,
    /// One per hook, so that a failing `publish` hook does not hide a failing `join`.
    warn: [LogThrottle; 5],
}

/// The HTTP implementation of the hub's hooks, for every endpoint that has `hooks.*`.
pub struct HttpHooks {
    endpoints: HashMap<String, Arc<EndpointRuntime>>,
    interests: HookSet,
    client: HttpClient,
    metrics: Arc<WebhookMetrics>,
}

impl HttpHooks {
    /// Hooks for `endpoints` (path and settings).
    pub fn new(
        endpoints: impl IntoIterator<Item = (String, EndpointHooks)>,
        client: HttpClient,
        metrics: Arc<WebhookMetrics>,
    ) -> HttpHooks {
        let mut interests = HookSet::NONE;
        let mut map = HashMap::new();
        for (path, settings) in endpoints {
            for (hook, bit) in [
                (SyncHook::Connect, HookSet::CONNECT),
                (SyncHook::Join, HookSet::JOIN),
                (SyncHook::Publish, HookSet::MESSAGE),
                (SyncHook::Direct, HookSet::DIRECT),
                (SyncHook::Close, HookSet::CLOSE),
            ] {
                if settings.url(hook).is_some() {
                    interests = interests | bit;
                }
            }
            map.insert(
                path.clone(),
                Arc::new(EndpointRuntime {
                    in_flight: Semaphore::new(settings.max_in_flight),
                    path,
                    settings,
                    warn: Default::default(),
                }),
            );
        }
        HttpHooks {
            endpoints: map,
            interests,
            client,
            metrics,
        }
    }

    /// The endpoint's runtime when it calls `hook`.
    fn endpoint(&self, path: &str, hook: SyncHook) -> Option<&Arc<EndpointRuntime>> {
        self.endpoints
            .get(path)
            .filter(|ep| ep.settings.url(hook).is_some())
    }

    /// Calls `hook` and applies the failure policy.
    async fn decide(&self, ep: &EndpointRuntime, hook: SyncHook, call: &HookCall<'_>) -> Decision {
        let started = Instant::now();
        let result = self.call(ep, hook, call).await;
        let seconds = started.elapsed().as_secs_f64();
        let label = HookLabel::Sync(hook);
        match result {
            Ok(decision) => {
                let outcome = match &decision {
                    Decision::Allow => CallOutcome::Allow,
                    Decision::Rewrite(_) => CallOutcome::Rewrite,
                    Decision::Reject { .. } => CallOutcome::Reject,
                };
                self.metrics.call(label, outcome, seconds);
                decision
            }
            Err(failure) => {
                let outcome = match failure {
                    HookFailure::Call(CallError::Timeout(_)) => CallOutcome::Timeout,
                    _ => CallOutcome::Failed,
                };
                self.metrics.call(label, outcome, seconds);
                if let Some(held_back) = ep.warn[hook.index()].ready() {
                    tracing::warn!(
                        endpoint = %ep.path,
                        hook = hook.as_str(),
                        error = %failure,
                        fail_open = ep.settings.fail_open,
                        similar_failures_not_logged = held_back,
                        "webhook failed"
                    );
                }
                if ep.settings.fail_open {
                    Decision::Allow
                } else {
                    // The client learns that the hook failed, not how: the backend's
                    // address and errors are the operator's business.
                    Decision::Reject {
                        code: ErrorCode::Internal,
                        message: format!("the {} hook is unavailable; try again", hook.as_str()),
                    }
                }
            }
        }
    }

    async fn call(
        &self,
        ep: &EndpointRuntime,
        hook: SyncHook,
        call: &HookCall<'_>,
    ) -> Result<Decision, HookFailure> {
        let Some(url) = ep.settings.url(hook) else {
            return Ok(Decision::Allow);
        };
        let body = serde_json::to_vec(call)
            .map_err(|e| HookFailure::BadAnswer(format!("cannot encode the call: {e}")))?;
        let timeout = ep.settings.timeout;
        let exchange = async {
            // Waiting for a free slot counts against the hook's timeout: under overload
            // the client gets the failure policy's answer on time rather than a queue.
            let _permit = ep
                .in_flight
                .acquire()
                .await
                .map_err(|_| CallError::Request("shutting down".into()))?;
            self.client
                .post(Post {
                    url,
                    event: hook.as_str(),
                    body: Bytes::from(body),
                    secret: ep.settings.secret.as_ref(),
                    timeout,
                    headers: &[],
                })
                .await
        };
        let answer = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(CallError::Timeout(timeout).into()),
        };
        interpret(hook, &answer)
    }
}

fn call_for<'a>(hook: SyncHook, conn: &'a Connection, meta: &'a Map) -> HookCall<'a> {
    HookCall {
        event: hook.as_str(),
        endpoint: &conn.endpoint().path,
        connection_id: Some(conn.id()),
        client_id: Some(conn.client_id()),
        room: None,
        to: None,
        data: None,
        meta,
        join_meta: None,
        name: None,
        remote_addr: None,
        code: None,
        reason: None,
        ts: switchboard_hub::clock::now_ms(),
    }
}

#[async_trait]
impl Hooks for HttpHooks {
    fn interests(&self) -> HookSet {
        self.interests
    }

    async fn on_connect(&self, req: &ConnectRequest) -> Decision {
        let Some(ep) = self.endpoint(&req.path, SyncHook::Connect) else {
            return Decision::Allow;
        };
        let call = HookCall {
            event: SyncHook::Connect.as_str(),
            endpoint: &req.path,
            connection_id: None,
            client_id: req.client_id.as_deref(),
            room: None,
            to: None,
            data: None,
            meta: &req.meta,
            join_meta: None,
            name: req.name.as_deref(),
            remote_addr: req.remote_addr.map(|a| a.to_string()),
            code: None,
            reason: None,
            ts: switchboard_hub::clock::now_ms(),
        };
        self.decide(ep, SyncHook::Connect, &call).await
    }

    async fn on_message(&self, conn: &Arc<Connection>, room: &str, data: &Value) -> Decision {
        let Some(ep) = self.endpoint(&conn.endpoint().path, SyncHook::Publish) else {
            return Decision::Allow;
        };
        let meta = conn.meta();
        let call = HookCall {
            room: Some(room),
            data: Some(data),
            ..call_for(SyncHook::Publish, conn, &meta)
        };
        self.decide(ep, SyncHook::Publish, &call).await
    }

    async fn on_direct(&self, conn: &Arc<Connection>, to: &str, data: &Value) -> Decision {
        let Some(ep) = self.endpoint(&conn.endpoint().path, SyncHook::Direct) else {
            return Decision::Allow;
        };
        let meta = conn.meta();
        let call = HookCall {
            to: Some(to),
            data: Some(data),
            ..call_for(SyncHook::Direct, conn, &meta)
        };
        self.decide(ep, SyncHook::Direct, &call).await
    }

    async fn on_join(
        &self,
        conn: &Arc<Connection>,
        room: &str,
        join_meta: Option<&Map>,
    ) -> Decision {
        let Some(ep) = self.endpoint(&conn.endpoint().path, SyncHook::Join) else {
            return Decision::Allow;
        };
        let meta = conn.meta();
        let call = HookCall {
            room: Some(room),
            join_meta,
            ..call_for(SyncHook::Join, conn, &meta)
        };
        self.decide(ep, SyncHook::Join, &call).await
    }

    async fn on_close(&self, conn: &Arc<Connection>, code: Option<u16>, reason: &str) {
        let Some(ep) = self.endpoint(&conn.endpoint().path, SyncHook::Close) else {
            return;
        };
        let meta = conn.meta();
        let call = HookCall {
            code,
            reason: Some(reason),
            ..call_for(SyncHook::Close, conn, &meta)
        };
        // A notification: the answer changes nothing, but failures are still counted
        // and logged.
        let _ = self.decide(ep, SyncHook::Close, &call).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after: None,
        }
    }

    #[test]
    fn answers_become_decisions() {
        let d = |status, body| interpret(SyncHook::Publish, &answer(status, body));
        assert_eq!(d(200, "{}").unwrap(), Decision::Allow);
        assert_eq!(d(200, "").unwrap(), Decision::Allow);
        assert_eq!(d(204, "").unwrap(), Decision::Allow);
        assert_eq!(d(200, r#"{"ok":true}"#).unwrap(), Decision::Allow);
        assert_eq!(
            d(200, r#"{"data":{"x":1}}"#).unwrap(),
            Decision::Rewrite(serde_json::json!({"x": 1}))
        );
        assert_eq!(
            d(200, r#"{"data":null}"#).unwrap(),
            Decision::Rewrite(Value::Null)
        );
        assert_eq!(
            d(
                403,
                r#"{"error":{"code":"RATE_LIMITED","message":"slow down"}}"#
            )
            .unwrap(),
            Decision::Reject {
                code: ErrorCode::RateLimited,
                message: "slow down".into()
            }
        );
        assert_eq!(
            d(403, "nope").unwrap(),
            Decision::Reject {
                code: ErrorCode::Forbidden,
                message: "refused by the publish hook".into()
            }
        );
        assert_eq!(
            d(403, r#"{"error":{"code":"NO_SUCH_CODE"}}"#).unwrap(),
            Decision::Reject {
                code: ErrorCode::Forbidden,
                message: "refused by the publish hook".into()
            }
        );
        assert!(matches!(d(500, "{}"), Err(HookFailure::Status(500))));
        assert!(matches!(d(401, "{}"), Err(HookFailure::Status(401))));
        assert!(matches!(d(302, ""), Err(HookFailure::Status(302))));
        assert!(matches!(d(200, "[1]"), Err(HookFailure::BadAnswer(_))));
        assert!(matches!(d(200, "{"), Err(HookFailure::BadAnswer(_))));
    }
}
