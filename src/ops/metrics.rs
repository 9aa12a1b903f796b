//! Prometheus metrics (`GET /metrics`), through the `prometheus-client` crate (the Prometheus
//! project's own Rust client; OpenMetrics text, which Prometheus scrapes natively).
//!
//! One process-wide set, reached with [`metrics()`]; the stages record into it where things
//! happen (the committer for writes and events, lanes for deliveries, the flusher for group
//! commits, the websocket hub for connections, the router for requests). Gauges that describe
//! stored state (subscriptions by status, pending events, the deepest queues, store size) are
//! computed when `/metrics` is scraped.
//!
//! Label cardinality is bounded, and documented in `config/herald.toml` (`[metrics]`):
//! - `topic`: the canonical url of up to [`MAX_TOPIC_LABELS`] topics, in the order they first
//!   fire; later ones are counted under `other`.
//! - `resource_type`: the instance's FHIR version's resource types (a fixed list of 141 to 158).
//! - `route`: the router's matched paths (a fixed list), `method`, `status` class (`2xx`...).
//! - `subscription`: only on the queue gauges, and only for the `metrics.top_subscriptions`
//!   subscriptions with the most pending events (0 turns them off).
//! - `channel` (`rest-hook`, `websocket`), `outcome`, `status`, `from` (`cache`, `store`):
//!   fixed code lists.
//!
//! No label or value ever carries a header value, a token or a payload.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Distinct `topic` label values; the rest are `other`.
pub const MAX_TOPIC_LABELS: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource_type: String,
    pub interaction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceTypeLabels {
    pub resource_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub channel: String,
    pub outcome: String,
}

/// Where a lane's read of a resource version was served from: `cache` or `store`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub from: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

/// Why the listener closed a connection before serving it: `per_client`, `tls_handshake`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub subscription: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 4.6 hours.
    Histogram::new(exponential_buckets(0.0005, 2.0, 25))
}

fn attempt_histogram() -> Histogram {
    // 0.1 ms to about 105 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    topics_seen: Mutex<HashSet<String>>,
    pub writes: Family<WriteLabels, Counter>,
    pub topic_triggers: Family<TopicLabels, Counter>,
    pub events: Family<TopicLabels, Counter>,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_retries: Family<ChannelLabels, Counter>,
    pub dead_letters: Counter,
    pub events_withheld: Family<ResourceTypeLabels, Counter>,
    /// Versions events saw, read for sending (`outbox::versions`), by source.
    pub version_reads: Family<SourceLabels, Counter>,
    pub delivery_latency: Family<ChannelLabels, Histogram, fn() -> Histogram>,
    pub attempt_duration: Family<ChannelLabels, Histogram, fn() -> Histogram>,
    pub criteria_errors: Counter,
    pub websocket_connections: Gauge,
    pub websocket_slow_disconnects: Counter,
    pub flush_duration: Histogram,
    pub flush_batch: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<ChannelLabels, Histogram, fn() -> Histogram>,
    /// Connections the listener holds (plain or TLS, websockets included).
    pub connections_open: Gauge,
    pub connections_rejected: Family<RejectLabels, Counter>,
    /// Bytes of `server.max_body_memory_mib` taken by requests being served (`api::budget`).
    pub body_memory_bytes: Gauge,
    /// Requests waiting for room in that budget before their bodies are read.
    pub body_memory_waiting: Gauge,
    // Computed at scrape time.
    pub subscriptions: Family<StatusLabels, Gauge>,
    pub pending_events: Gauge,
    pub dead_letters_held: Gauge,
    pub queue_depth: Family<SubscriptionLabels, Gauge>,
    pub oldest_pending_age: Family<SubscriptionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub store_size: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("herald");
        let m = Metrics {
            registry: Registry::default(),
            topics_seen: Mutex::new(HashSet::new()),
            writes: Family::default(),
            topic_triggers: Family::default(),
            events: Family::default(),
            deliveries: Family::default(),
            delivery_retries: Family::default(),
            dead_letters: Counter::default(),
            events_withheld: Family::default(),
            version_reads: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            attempt_duration: Family::new_with_constructor(attempt_histogram),
            criteria_errors: Counter::default(),
            websocket_connections: Gauge::default(),
            websocket_slow_disconnects: Counter::default(),
            flush_duration: attempt_histogram(),
            flush_batch: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(attempt_histogram),
            connections_open: Gauge::default(),
            connections_rejected: Family::default(),
            body_memory_bytes: Gauge::default(),
            body_memory_waiting: Gauge::default(),
            subscriptions: Family::default(),
            pending_events: Gauge::default(),
            dead_letters_held: Gauge::default(),
            queue_depth: Family::default(),
            oldest_pending_age: Family::default(),
            store_size: Gauge::default(),
        };
        registry.register("writes", "Resource versions written (create, update, delete), by type", m.writes.clone());
        registry.register("topic_triggers", "Changes or events that fired a topic's trigger", m.topic_triggers.clone());
        registry.register("events", "Subscription events enqueued (one per matching subscription)", m.events.clone());
        registry.register("deliveries", "Notification deliveries by channel and outcome (delivered, failed, dead)", m.deliveries.clone());
        registry.register("delivery_retries", "Delivery attempts scheduled again after a failure", m.delivery_retries.clone());
        registry.register("dead_letters", "Events dead-lettered after the retry schedule was exhausted", m.dead_letters.clone());
        registry.register(
            "events_withheld",
            "Events sent without their focus because the subscriber's grant does not cover it, by focus type",
            m.events_withheld.clone(),
        );
        registry.register(
            "version_reads",
            "Resource versions read to send events (from: cache, shared by every subscriber of a write; store)",
            m.version_reads.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From the event's commit to its endpoint accepting it (or its socket taking it)",
            m.delivery_latency.clone(),
        );
        registry.register("delivery_attempt_seconds", "Duration of one delivery attempt", m.attempt_duration.clone());
        registry.register("criteria_errors", "Topic criteria or filters that could not be evaluated", m.criteria_errors.clone());
        registry.register("websocket_connections", "Open websocket connections", m.websocket_connections.clone());
        registry.register(
            "websocket_slow_disconnects",
            "Sockets closed because they did not keep up",
            m.websocket_slow_disconnects.clone(),
        );
        registry.register(
            "connections_open",
            "Connections the listener holds (plain or TLS, websockets included)",
            m.connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed before being served: per_client (server.max_connections_per_client), tls_handshake",
            m.connections_rejected.clone(),
        );
        registry.register(
            "body_memory_bytes",
            "Bytes of server.max_body_memory_mib held by the bodies of requests being served",
            m.body_memory_bytes.clone(),
        );
        registry.register(
            "body_memory_waiting",
            "Requests waiting for room in server.max_body_memory_mib before their bodies are read",
            m.body_memory_waiting.clone(),
        );
        registry.register("flush_duration_seconds", "Group commit: duration of one store flush", m.flush_duration.clone());
        registry.register("flush_batch_commits", "Group commit: commits made durable by one flush", m.flush_batch.clone());
        registry.register("http_requests", "HTTP requests by method, matched route and status class", m.http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request duration (label channel: api)", m.http_duration.clone());
        registry.register("subscriptions", "Subscriptions by status", m.subscriptions.clone());
        registry.register(
            "pending_events",
            "Events numbered but not yet delivered or dead-lettered, all subscriptions",
            m.pending_events.clone(),
        );
        registry.register("dead_letters_held", "Dead letters kept for operators, all subscriptions", m.dead_letters_held.clone());
        registry.register(
            "queue_depth",
            "Pending events of the subscriptions with the most (metrics.top_subscriptions)",
            m.queue_depth.clone(),
        );
        registry.register(
            "oldest_pending_age_seconds",
            "Age of the oldest pending event of the subscriptions with the most pending",
            m.oldest_pending_age.clone(),
        );
        registry.register("store_size_bytes", "Bytes the sled database occupies on disk", m.store_size.clone());
        Metrics { registry, ..m }
    }

    /// The `topic` label for `url`: itself while fewer than [`MAX_TOPIC_LABELS`] are in use.
    pub fn topic_label(&self, url: &str) -> TopicLabels {
        let mut seen = self.topics_seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(url) || (seen.len() < MAX_TOPIC_LABELS && seen.insert(url.to_owned())) {
            TopicLabels { topic: url.to_owned() }
        } else {
            TopicLabels { topic: "other".to_owned() }
        }
    }

    pub fn write(&self, resource_type: &str, interaction: &str) {
        self.writes.get_or_create(&WriteLabels { resource_type: resource_type.to_owned(), interaction: interaction.to_owned() }).inc();
    }

    pub fn delivery(&self, channel: &str, outcome: &str) {
        self.deliveries.get_or_create(&DeliveryLabels { channel: channel.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    pub fn withheld(&self, resource_type: &str) {
        self.events_withheld.get_or_create(&ResourceTypeLabels { resource_type: resource_type.to_owned() }).inc();
    }

    pub fn channel(channel: &str) -> ChannelLabels {
        ChannelLabels { channel: channel.to_owned() }
    }

    /// The OpenMetrics text of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The process-wide metrics.
/// Adds to a gauge for as long as it lives (an open socket, a request's share of a budget).
pub struct Held {
    gauge: &'static Gauge,
    by: i64,
}

impl Held {
    pub fn add(gauge: &'static Gauge, by: i64) -> Held {
        gauge.inc_by(by);
        Held { gauge, by }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by(self.by);
    }
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
