//! `GET /metrics`: Prometheus text, rendered by `metrics-exporter-prometheus`.
//!
//! The hub keeps its own cheap counters ([`switchboard_hub::Snapshot`]); a scrape copies
//! them into a recorder that belongs to this server (not the process-global one, so that
//! several servers in one test process do not mix) and renders it. The two latency
//! histograms are recorded directly through handles the hub was given at start.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::{Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use switchboard_hub::{Hub, LatencySink};

const DELIVERY: &str = "switchboard_delivery_latency_seconds";
const STORE: &str = "switchboard_store_append_seconds";
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The server's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    endpoints: Vec<String>,
}

struct Sink(Histogram);

impl LatencySink for Sink {
    fn record(&self, seconds: f64) {
        self.0.record(seconds);
    }
}

impl Metrics {
    /// A registry for a server with these endpoint paths; hooks the hub's latency
    /// histograms into it.
    pub fn install(hub: &Hub, endpoints: Vec<String>) -> Arc<Metrics> {
        let builder = PrometheusBuilder::new();
        let builder =
            match builder.set_buckets_for_metric(Matcher::Prefix("switchboard_".into()), BUCKETS) {
                Ok(b) => b,
                // Only an empty bucket list fails, and ours is not empty.
                Err(_) => PrometheusBuilder::new(),
            };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let (delivery, store) = metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(
                DELIVERY,
                Unit::Seconds,
                "Publish to socket write, sampled one room message in 16."
            );
            metrics::describe_histogram!(
                STORE,
                Unit::Seconds,
                "Time to append a durable room's message to the store."
            );
            describe_all();
            (metrics::histogram!(DELIVERY), metrics::histogram!(STORE))
        });
        hub.set_latency_sinks(Box::new(Sink(delivery)), Box::new(Sink(store)));
        Arc::new(Metrics {
            recorder,
            handle,
            endpoints,
        })
    }

    /// Runs `f` with this registry as the recorder: metric handles it creates
    /// (`metrics::counter!` and the like) record here from then on.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Copies the hub's figures into the registry and renders Prometheus text.
    pub fn render(&self, hub: &Hub) -> String {
        let snap = hub.snapshot();
        metrics::with_local_recorder(&self.recorder, || {
            for path in &self.endpoints {
                let n = snap.connections.get(path).copied().unwrap_or(0);
                metrics::gauge!("switchboard_connections", "endpoint" => path.clone())
                    .set(n as f64);
            }
            metrics::gauge!("switchboard_rooms").set(snap.rooms as f64);
            metrics::gauge!("switchboard_room_members").set(snap.members as f64);
            metrics::gauge!("switchboard_queued_messages").set(snap.queued as f64);
            metrics::counter!("switchboard_connections_accepted_total").absolute(snap.accepted);
            metrics::counter!("switchboard_messages_in_total").absolute(snap.frames_in);
            metrics::counter!("switchboard_bytes_in_total").absolute(snap.bytes_in);
            metrics::counter!("switchboard_messages_out_total").absolute(snap.frames_out);
            metrics::counter!("switchboard_bytes_out_total").absolute(snap.bytes_out);
            metrics::counter!("switchboard_published_total").absolute(snap.published);
            metrics::counter!("switchboard_slow_consumer_drops_total")
                .absolute(snap.slow_consumer_drops);
            for (code, n) in &snap.errors {
                metrics::counter!("switchboard_errors_total", "code" => *code).absolute(*n);
            }
            for (code, n) in &snap.closes {
                metrics::counter!("switchboard_closes_total", "code" => code.to_string())
                    .absolute(*n);
            }
            if let Some((ready, dropped)) = hub.cluster_status() {
                metrics::gauge!("switchboard_cluster_ready").set(if ready { 1.0 } else { 0.0 });
                metrics::counter!("switchboard_cluster_dropped_total").absolute(dropped);
            }
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn describe_all() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("switchboard_connections", "Open connections, per endpoint.");
    describe_gauge!("switchboard_rooms", "Rooms that exist.");
    describe_gauge!(
        "switchboard_room_members",
        "Room memberships (a connection in 3 rooms counts 3)."
    );
    describe_gauge!(
        "switchboard_queued_messages",
        "Messages waiting in outbound queues."
    );
    describe_counter!(
        "switchboard_connections_accepted_total",
        "Connections accepted since start."
    );
    describe_counter!(
        "switchboard_messages_in_total",
        "Frames received from clients."
    );
    describe_counter!(
        "switchboard_bytes_in_total",
        Unit::Bytes,
        "Payload bytes received from clients."
    );
    describe_counter!(
        "switchboard_messages_out_total",
        "Frames written to clients."
    );
    describe_counter!(
        "switchboard_bytes_out_total",
        Unit::Bytes,
        "Payload bytes written to clients."
    );
    describe_counter!("switchboard_published_total", "Room messages published.");
    describe_counter!(
        "switchboard_slow_consumer_drops_total",
        "Messages dropped or conflated by slow-consumer policies."
    );
    describe_counter!("switchboard_errors_total", "Error replies sent, by code.");
    describe_counter!(
        "switchboard_closes_total",
        "Connections ended, by close code (0: no close frame)."
    );
    describe_gauge!(
        "switchboard_cluster_ready",
        "Cluster mode: 1 while Redis answers and the pub/sub connection is up."
    );
    describe_counter!(
        "switchboard_cluster_dropped_total",
        "Cluster mode: messages from other nodes dropped because this node fell behind (each time followed by a resynchronisation)."
    );
}

/// `GET /metrics`.
pub async fn handler(State((hub, metrics)): State<(Hub, Arc<Metrics>)>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(&hub),
    )
        .into_response()
}
