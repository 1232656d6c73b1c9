//! Delivering lifecycle events: a bounded queue, a few workers, retries with exponential
//! backoff.
//!
//! The queue is split into `concurrency` shards, each a bounded channel drained by one
//! worker that delivers one event at a time. An event goes to the shard of its key (the
//! room, or the client id for client events), so the events of one room — or of one
//! client — reach the receiver in the order they happened, retries included, while
//! different rooms are delivered in parallel.
//!
//! Nothing here waits on the hub: [`Delivery::enqueue`] never blocks, and an event that
//! finds its shard full is dropped and counted (`dropped`), so memory stays bounded by
//! `queue_size` however long the receiver is down. An attempt that fails — no answer
//! within `timeout_ms`, a network error, `408`, `429` or `5xx` — is retried after
//! `retry_backoff_ms` × 2ⁿ (with jitter, at most `retry_backoff_max_ms`, longer if the
//! receiver's `Retry-After` asks for it, within that cap), up to `max_attempts` attempts.
//! Any other status is a refusal that no retry would change: the event is given up.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::client::{Answer, CallError, HttpClient, Post};
use super::lifecycle::Notice;
use super::metrics::{CallOutcome, EventOutcome, HookLabel, LogThrottle, WebhookMetrics};
use super::settings::LifecycleSettings;

/// The header carrying the event's id (the same on every attempt).
pub const DELIVERY_HEADER: &str = "x-switchboard-delivery";
/// The header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "x-switchboard-attempt";

/// One event to deliver.
#[derive(Debug)]
pub struct Job {
    pub notice: Notice,
}

/// What one attempt amounted to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Delivered,
    Retry(Option<Duration>),
    GiveUp,
}

fn classify(result: &Result<Answer, CallError>) -> Verdict {
    match result {
        Ok(a) if (200..300).contains(&a.status) => Verdict::Delivered,
        Ok(a) if a.status == 408 || a.status == 429 || a.status >= 500 => {
            Verdict::Retry(a.retry_after)
        }
        Ok(_) => Verdict::GiveUp,
        Err(CallError::Timeout(_) | CallError::Request(_)) => Verdict::Retry(None),
        Err(CallError::TooLarge) => Verdict::GiveUp,
    }
}

/// The wait before attempt `attempt + 1`: `base × 2^(attempt−1)`, capped at `max`, then
/// "equal jitter" (a random point in its upper half) so that events that failed together
/// do not all come back at the same instant.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << exp).min(max);
    let half = full / 2;
    half + Duration::from_nanos(rand::random_range(0..=(full - half).as_nanos() as u64))
}

/// What the workers share.
struct Shared {
    settings: Arc<LifecycleSettings>,
    client: HttpClient,
    metrics: Arc<WebhookMetrics>,
    /// Events queued or in flight.
    depth: AtomicUsize,
    idle: Notify,
    warn_failed: LogThrottle,
}

/// The lifecycle delivery queue and its workers.
pub struct Delivery {
    shared: Arc<Shared>,
    shards: Vec<mpsc::Sender<Job>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    closing: AtomicBool,
    warn_dropped: LogThrottle,
}

impl Delivery {
    /// Starts the workers (needs a tokio runtime).
    pub fn start(
        settings: Arc<LifecycleSettings>,
        client: HttpClient,
        metrics: Arc<WebhookMetrics>,
    ) -> Arc<Delivery> {
        let n = settings.concurrency.max(1);
        let per_shard = settings.queue_size.div_ceil(n).max(1);
        let shared = Arc::new(Shared {
            settings,
            client,
            metrics,
            depth: AtomicUsize::new(0),
            idle: Notify::new(),
            warn_failed: LogThrottle::default(),
        });
        let mut shards = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::channel(per_shard);
            shards.push(tx);
            workers.push(tokio::spawn(work(shared.clone(), rx)));
        }
        Arc::new(Delivery {
            shared,
            shards,
            workers: Mutex::new(workers),
            closing: AtomicBool::new(false),
            warn_dropped: LogThrottle::default(),
        })
    }

    /// Queues an event for delivery without waiting; false (and counted as dropped) when
    /// its shard is full or shutdown has begun. `key` picks the shard.
    pub fn enqueue(&self, key: &str, job: Job) -> bool {
        let m = &self.shared.metrics;
        if self.closing.load(Ordering::Acquire) {
            m.event(EventOutcome::Dropped);
            return false;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let shard = (h.finish() % self.shards.len() as u64) as usize;
        let Some(tx) = self.shards.get(shard) else {
            return false;
        };
        let depth = self.shared.depth.fetch_add(1, Ordering::AcqRel) + 1;
        match tx.try_send(job) {
            Ok(()) => {
                m.queue_depth(depth);
                true
            }
            Err(e) => {
                self.shared.depth.fetch_sub(1, Ordering::AcqRel);
                m.event(EventOutcome::Dropped);
                if let Some(held_back) = self.warn_dropped.ready() {
                    let job = match &e {
                        mpsc::error::TrySendError::Full(j)
                        | mpsc::error::TrySendError::Closed(j) => j,
                    };
                    tracing::warn!(
                        event = job.notice.event,
                        queue_size = self.shared.settings.queue_size,
                        similar_drops_not_logged = held_back,
                        "lifecycle webhook queue full: event dropped"
                    );
                }
                false
            }
        }
    }

    /// Events queued or in flight.
    pub fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::Acquire)
    }

    /// Stops taking events and gives the queued ones up to `within` to be delivered;
    /// then stops the workers. Returns how many were left undelivered (counted as
    /// dropped).
    pub async fn drain(&self, within: Duration) -> usize {
        self.closing.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            // Registered before the check, so a worker finishing in between still wakes us.
            idle.as_mut().enable();
            if self.depth() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        for w in self.workers.lock().drain(..) {
            w.abort();
        }
        let left = self.shared.depth.swap(0, Ordering::AcqRel);
        for _ in 0..left {
            self.shared.metrics.event(EventOutcome::Dropped);
        }
        self.shared.metrics.queue_depth(0);
        left
    }
}

async fn work(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    while let Some(job) = rx.recv().await {
        deliver(&shared, job).await;
        let left = shared
            .depth
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        shared.metrics.queue_depth(left);
        if left == 0 {
            shared.idle.notify_waiters();
        }
    }
}

/// Delivers one event, retrying as the settings say.
async fn deliver(shared: &Shared, job: Job) {
    let s = &shared.settings;
    let m = &shared.metrics;
    let notice = job.notice;
    let body = match serde_json::to_vec(&notice) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::error!(event = notice.event, error = %e, "cannot encode a lifecycle event");
            m.event(EventOutcome::GivenUp);
            return;
        }
    };
    for attempt in 1..=s.max_attempts {
        let headers = [
            (DELIVERY_HEADER, notice.id.clone()),
            (ATTEMPT_HEADER, attempt.to_string()),
        ];
        let started = Instant::now();
        let result = shared
            .client
            .post(Post {
                url: &s.url,
                event: notice.event,
                body: body.clone(),
                secret: s.secret.as_ref(),
                timeout: s.timeout,
                headers: &headers,
            })
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let verdict = classify(&result);
        let outcome = match (&verdict, &result) {
            (Verdict::Delivered, _) => CallOutcome::Delivered,
            (_, Err(CallError::Timeout(_))) => CallOutcome::Timeout,
            _ => CallOutcome::Failed,
        };
        m.call(HookLabel::Lifecycle, outcome, seconds);
        let why = || match &result {
            Ok(a) => format!("status {}", a.status),
            Err(e) => e.to_string(),
        };
        match verdict {
            Verdict::Delivered => {
                m.event(EventOutcome::Delivered);
                return;
            }
            Verdict::Retry(after) if attempt < s.max_attempts => {
                m.event(EventOutcome::Retried);
                let mut wait = backoff(attempt, s.backoff, s.backoff_max);
                if let Some(asked) = after {
                    wait = wait.max(asked).min(s.backoff_max);
                }
                tracing::debug!(event = notice.event, id = %notice.id, attempt, error = %why(), retry_in = ?wait, "lifecycle webhook attempt failed");
                tokio::time::sleep(wait).await;
            }
            Verdict::Retry(_) | Verdict::GiveUp => {
                m.event(EventOutcome::GivenUp);
                if let Some(held_back) = shared.warn_failed.ready() {
                    tracing::warn!(
                        event = notice.event,
                        id = %notice.id,
                        attempts = attempt,
                        error = %why(),
                        similar_failures_not_logged = held_back,
                        "lifecycle webhook given up"
                    );
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::settings::LifecycleEvents;
    use crate::webhooks::sign::{self, SIGNATURE_HEADER, Secret, TIMESTAMP_HEADER};
    use axum::http::{HeaderMap, StatusCode};
    use reqwest::Url;
    use tokio::sync::Semaphore;

    /// A fake receiver: answers each request with the next status of `script` (then 200),
    /// optionally holding every answer until a permit is released, and records what came.
    #[derive(Clone)]
    struct Backend {
        seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
        script: Arc<Mutex<std::collections::VecDeque<u16>>>,
        gate: Option<Arc<Semaphore>>,
        arrived: Arc<Notify>,
    }

    impl Backend {
        async fn start(script: &[u16], gated: bool) -> (Backend, Url) {
            let b = Backend {
                seen: Default::default(),
                script: Arc::new(Mutex::new(script.iter().copied().collect())),
                gate: gated.then(|| Arc::new(Semaphore::new(0))),
                arrived: Arc::new(Notify::new()),
            };
            let state = b.clone();
            let app = axum::Router::new().route(
                "/events",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let b = state.clone();
                    async move {
                        b.seen.lock().push((headers, body));
                        b.arrived.notify_one();
                        if let Some(g) = &b.gate {
                            g.acquire().await.unwrap().forget();
                        }
                        let status = b.script.lock().pop_front().unwrap_or(200);
                        StatusCode::from_u16(status).unwrap()
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url =
                Url::parse(&format!("http://{}/events", listener.local_addr().unwrap())).unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (b, url)
        }

        fn count(&self) -> usize {
            self.seen.lock().len()
        }

        async fn wait_for(&self, n: usize) {
            tokio::time::timeout(Duration::from_secs(5), async {
                while self.count() < n {
                    let arrived = self.arrived.notified();
                    if self.count() >= n {
                        break;
                    }
                    arrived.await;
                }
            })
            .await
            .expect("the backend did not get the expected requests in time");
        }
    }

    fn settings(url: Url, queue_size: usize, max_attempts: u32) -> Arc<LifecycleSettings> {
        Arc::new(LifecycleSettings {
            url,
            events: LifecycleEvents::all(),
            secret: Secret::new("queue-secret"),
            offline_grace: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            max_attempts,
            backoff: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            queue_size,
            concurrency: 1,
        })
    }

    fn job(n: u64) -> Job {
        Job {
            notice: Notice {
                event: "room_occupied",
                id: format!("test.0.{n}"),
                seq: n,
                node_id: "test".into(),
                ts: 0,
                room: Some(format!("room-{n}")),
                client_id: "c".into(),
                connection_id: "conn".into(),
                endpoint: "/ws".into(),
                offline_since: None,
            },
        }
    }

    fn start(s: Arc<LifecycleSettings>) -> Arc<Delivery> {
        Delivery::start(
            s,
            HttpClient::new().unwrap(),
            Arc::new(WebhookMetrics::register()),
        )
    }

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    #[tokio::test]
    async fn a_failed_attempt_is_retried_with_the_same_id_and_a_fresh_signature() {
        let (backend, url) = Backend::start(&[500, 503], false).await;
        let s = settings(url, 10, 5);
        let d = start(s.clone());
        assert!(d.enqueue("room-1", job(1)));
        assert_eq!(
            d.drain(Duration::from_secs(5)).await,
            0,
            "delivered in time"
        );
        let seen = backend.seen.lock().clone();
        assert_eq!(seen.len(), 3, "two failures, then delivered");
        let secret = s.secret.as_ref().unwrap();
        for (i, (h, body)) in seen.iter().enumerate() {
            assert_eq!(header(h, DELIVERY_HEADER), "test.0.1");
            assert_eq!(header(h, ATTEMPT_HEADER), (i + 1).to_string());
            assert_eq!(header(h, "x-switchboard-event"), "room_occupied");
            let verified = sign::verify(
                secret,
                h.get(TIMESTAMP_HEADER).and_then(|v| v.to_str().ok()),
                h.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()),
                body,
                crate::webhooks::client::unix_seconds(),
                60,
            );
            assert_eq!(verified, Ok(()));
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["event"], "room_occupied");
            assert_eq!(v["room"], "room-1");
            assert_eq!(v["seq"], 1);
        }
    }

    #[tokio::test]
    async fn attempts_stop_at_the_limit_and_refusals_are_not_retried() {
        let (backend, url) = Backend::start(&[503, 503, 503, 503], false).await;
        let d = start(settings(url, 10, 3));
        assert!(d.enqueue("a", job(1)));
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(backend.count(), 3, "max_attempts = 3");

        let (backend, url) = Backend::start(&[404], false).await;
        let d = start(settings(url, 10, 5));
        assert!(d.enqueue("a", job(1)));
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        assert_eq!(backend.count(), 1, "a 404 will not change with retries");
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_events_instead_of_growing() {
        let (backend, url) = Backend::start(&[], true).await;
        let d = start(settings(url, 1, 1));
        assert!(d.enqueue("k", job(1)));
        // The worker has taken job 1 and waits for the receiver's answer.
        backend.wait_for(1).await;
        assert!(d.enqueue("k", job(2)), "one event may wait");
        assert!(
            !d.enqueue("k", job(3)),
            "the second waiting event is dropped"
        );
        assert_eq!(d.depth(), 2);
        if let Some(g) = &backend.gate {
            g.add_permits(10);
        }
        assert_eq!(d.drain(Duration::from_secs(5)).await, 0);
        let ids: Vec<String> = backend
            .seen
            .lock()
            .iter()
            .map(|(h, _)| header(h, DELIVERY_HEADER).to_owned())
            .collect();
        assert_eq!(ids, ["test.0.1", "test.0.2"]);
        assert!(!d.enqueue("k", job(4)), "nothing is taken after shutdown");
    }

    #[tokio::test]
    async fn drain_gives_up_on_a_receiver_that_never_answers() {
        let (backend, url) = Backend::start(&[], true).await;
        let d = start(settings(url, 10, 1));
        assert!(d.enqueue("k", job(1)));
        assert!(d.enqueue("k", job(2)));
        backend.wait_for(1).await;
        let started = Instant::now();
        assert_eq!(d.drain(Duration::from_millis(200)).await, 2);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn answer(status: u16) -> Result<Answer, CallError> {
        Ok(Answer {
            status,
            body: Bytes::new(),
            retry_after: None,
        })
    }

    #[test]
    fn statuses_are_retried_or_given_up_as_documented() {
        assert_eq!(classify(&answer(200)), Verdict::Delivered);
        assert_eq!(classify(&answer(204)), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(classify(&answer(s)), Verdict::Retry(None), "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410] {
            assert_eq!(classify(&answer(s)), Verdict::GiveUp, "{s}");
        }
        let timeout = Err(CallError::Timeout(Duration::from_secs(1)));
        assert_eq!(classify(&timeout), Verdict::Retry(None));
        let refused = Err(CallError::Request("connection refused".into()));
        assert_eq!(classify(&refused), Verdict::Retry(None));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..200 {
            let b1 = backoff(1, base, max);
            assert!(b1 >= Duration::from_millis(50) && b1 <= base, "{b1:?}");
            let b3 = backoff(3, base, max);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b9 = backoff(9, base, max);
            assert!(b9 >= Duration::from_millis(500) && b9 <= max);
            assert!(backoff(u32::MAX, base, max) <= max);
        }
    }
}
