//! Prometheus metrics of the server.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use fleetnode_state_machine::Phase;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

/// Labels of the host gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    events: Counter,
    waiters: Gauge,
    hosts: Family<PhaseLabels, Gauge>,
    offline: Gauge,
    diverged: Gauge,
}

/// Counts of hosts at one moment, for the gauges.
#[derive(Debug, Default)]
pub struct HostCounts {
    /// Hosts per phase name (revoked hosts excluded).
    pub by_phase: Vec<(&'static str, i64)>,
    /// Hosts offline.
    pub offline: i64,
    /// Hosts diverged.
    pub diverged: i64,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s; long-polls land in the last buckets.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetnode_cp");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route template and method (long-polls included)",
            latency.clone(),
        );
        let events = Counter::default();
        registry.register(
            "events_ingested",
            "Reported events stored and applied to mirrors",
            events.clone(),
        );
        let waiters = Gauge::default();
        registry.register(
            "longpoll_waiters",
            "Long-polls waiting for a desired-state change",
            waiters.clone(),
        );
        let hosts = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "hosts",
            "Registered hosts (not revoked) by mirrored phase",
            hosts.clone(),
        );
        let offline = Gauge::default();
        registry.register(
            "hosts_offline",
            "Hosts with no heartbeat for three intervals",
            offline.clone(),
        );
        let diverged = Gauge::default();
        registry.register(
            "hosts_diverged",
            "Hosts whose reports or heartbeat contradict their mirror",
            diverged.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            events,
            waiters,
            hosts,
            offline,
            diverged,
        }
    }

    /// Records one answered request.
    pub fn observe_request(&self, route: String, method: String, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts stored events.
    pub fn events_ingested(&self, count: usize) {
        self.events.inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// A long-poll started (+1) or ended (-1) waiting.
    pub fn waiters(&self) -> &Gauge {
        &self.waiters
    }

    /// The text exposition, with host gauges set from `counts`.
    pub fn render(&self, counts: &HostCounts) -> String {
        for name in Phase::NAMES {
            let count = counts
                .by_phase
                .iter()
                .find(|(phase, _)| *phase == name)
                .map_or(0, |(_, n)| *n);
            self.hosts
                .get_or_create(&PhaseLabels {
                    phase: name.to_owned(),
                })
                .set(count);
        }
        self.offline.set(counts.offline);
        self.diverged.set(counts.diverged);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
