//! The controller's Prometheus metrics (the `prometheus-client` registry, OpenMetrics text): API
//! requests and their latency, recordings created, job state changes and the time from a recording's
//! stop to its MP4, webhooks, recorders lost; at scrape time the live nodes, the jobs running on them,
//! the NATS connection and the work waiting in each queue.

use fleet_protocol::{JobRecord, JobState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    stream: String,
    consumer: String,
}

/// What the work queues hold for one consumer: waiting, and delivered but not yet acknowledged.
pub struct QueueDepth {
    pub stream: String,
    pub consumer: String,
    pub pending: u64,
    pub in_progress: u64,
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteStatus, Counter>,
    http_duration: Family<RouteLabel, Histogram>,
    recordings_created: Counter,
    transitions: Family<StateLabel, Counter>,
    time_to_mp4: Histogram,
    webhooks_delivered: Counter,
    webhooks_failed: Counter,
    recorders_lost: Counter,
    nodes: Family<RoleLabel, Gauge>,
    running_jobs: Gauge,
    nats_connected: Gauge,
    queue_pending: Family<QueueLabel, Gauge>,
    queue_in_progress: Family<QueueLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14)));
        // From 5 s to an hour: the target is 15 s for an hour-long meeting.
        let time_to_mp4 = Histogram::new([5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]);
        let metrics = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration,
            recordings_created: Counter::default(),
            transitions: Family::default(),
            time_to_mp4,
            webhooks_delivered: Counter::default(),
            webhooks_failed: Counter::default(),
            recorders_lost: Counter::default(),
            nodes: Family::default(),
            running_jobs: Gauge::default(),
            nats_connected: Gauge::default(),
            queue_pending: Family::default(),
            queue_in_progress: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("fleet");
        r.register("http_requests", "API requests by route and status", metrics.http_requests.clone());
        r.register_with_unit("http_request_duration", "API request latency by route", Unit::Seconds, metrics.http_duration.clone());
        r.register("recordings_created", "Recordings started through any of the APIs", metrics.recordings_created.clone());
        r.register("job_transitions", "Job state changes seen by this controller's event sink", metrics.transitions.clone());
        r.register_with_unit(
            "time_to_mp4",
            "From a recording's stop (finalizing) to its MP4 being complete",
            Unit::Seconds,
            metrics.time_to_mp4.clone(),
        );
        r.register("webhooks_delivered", "Webhooks the receiver acknowledged", metrics.webhooks_delivered.clone());
        r.register("webhooks_failed", "Webhooks given up on after their retries", metrics.webhooks_failed.clone());
        r.register("recorders_lost", "Recordings moved to another recorder because theirs stopped answering", metrics.recorders_lost.clone());
        r.register("nodes", "Live nodes in the registry by role", metrics.nodes.clone());
        r.register("running_jobs", "Jobs running on live nodes", metrics.running_jobs.clone());
        r.register("nats_connected", "1 while connected to NATS", metrics.nats_connected.clone());
        r.register("queue_pending", "Messages waiting in a work queue for a consumer", metrics.queue_pending.clone());
        r.register("queue_in_progress", "Messages a consumer's workers hold, not yet acknowledged", metrics.queue_in_progress.clone());
        for state in JobState::ALL {
            let _ = metrics.transitions.get_or_create(&StateLabel { state: state.as_str().into() });
        }
        Metrics { registry, ..metrics }
    }

    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        self.http_requests.get_or_create(&RouteStatus { route: route.into(), status: status.to_string() }).inc();
        self.http_duration.get_or_create(&RouteLabel { route: route.into() }).observe(took.as_secs_f64());
    }

    pub fn recording_created(&self) {
        self.recordings_created.inc();
    }

    pub fn webhook_sent(&self, delivered: bool) {
        if delivered {
            self.webhooks_delivered.inc()
        } else {
            self.webhooks_failed.inc()
        };
    }

    pub fn recorder_lost(&self) {
        self.recorders_lost.inc();
    }

    /// A job changed state; a completed one also gives the wait from its stop to its MP4.
    pub fn state_transition(&self, state: JobState, record: &JobRecord) {
        self.transitions.get_or_create(&StateLabel { state: state.as_str().into() }).inc();
        if state == JobState::Complete
            && let Some(seconds) = stop_to_complete_s(record)
        {
            self.time_to_mp4.observe(seconds);
        }
    }

    /// The registry as text, with the scrape-time gauges set first.
    pub fn render(&self, nodes_by_role: &[(String, usize)], running_jobs: usize, nats_connected: bool, queues: &[QueueDepth]) -> String {
        self.nodes.clear();
        for (role, count) in nodes_by_role {
            self.nodes.get_or_create(&RoleLabel { role: role.clone() }).set(*count as i64);
        }
        self.running_jobs.set(running_jobs as i64);
        self.nats_connected.set(nats_connected as i64);
        for queue in queues {
            let label = QueueLabel { stream: queue.stream.clone(), consumer: queue.consumer.clone() };
            self.queue_pending.get_or_create(&label).set(queue.pending as i64);
            self.queue_in_progress.get_or_create(&label).set(queue.in_progress as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Seconds from a job's first `finalizing` (its stop) to its `complete`, from its state log.
fn stop_to_complete_s(record: &JobRecord) -> Option<f64> {
    let at = |state: JobState| record.state_log.iter().find(|c| c.state == state).map(|c| c.at_ms);
    let (stopped, complete) = (at(JobState::Finalizing)?, at(JobState::Complete)?);
    Some(complete.saturating_sub(stopped) as f64 / 1000.0)
}
