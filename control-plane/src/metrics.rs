//! Prometheus metrics of the server.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use fleetnode_state_machine::Phase;
use fleetnode_wire::{HostCounts as RolloutHostCounts, RolloutId, RolloutPhase};

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

/// Labels of the retention metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetentionLabels {
    kind: &'static str,
}

/// Labels of the rollout host gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutHostLabels {
    rollout: String,
    state: String,
}

/// How many rollouts get per-rollout host gauges: the newest, so the label set stays bounded
/// however many rollouts the store holds.
pub const METRICS_ROLLOUTS: usize = 10;

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
    rollouts: Family<PhaseLabels, Gauge>,
    rollout_hosts: Family<RolloutHostLabels, Gauge>,
    rollout_halts: Counter,
    pruned: Family<RetentionLabels, Counter>,
    pruning_last_pass: Family<RetentionLabels, Gauge>,
    prunable: Family<RetentionLabels, Gauge>,
}

/// Counts of rollouts at one moment, for the gauges.
#[derive(Debug, Default)]
pub struct RolloutCounts {
    /// Rollouts per phase name.
    pub by_phase: Vec<(&'static str, i64)>,
    /// Hosts per state of each of the newest [`METRICS_ROLLOUTS`] rollouts.
    pub hosts: Vec<(RolloutId, RolloutHostCounts)>,
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
        let rollouts = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollouts", "Rollouts by phase", rollouts.clone());
        let rollout_hosts = Family::<RolloutHostLabels, Gauge>::default();
        registry.register(
            "rollout_hosts",
            "Hosts of each of the newest rollouts by state in the rollout",
            rollout_hosts.clone(),
        );
        let rollout_halts = Counter::default();
        registry.register(
            "rollout_halts",
            "Rollouts halted because failures exceeded their budget (since the server started)",
            rollout_halts.clone(),
        );
        let pruned = Family::<RetentionLabels, Counter>::default();
        registry.register(
            "retention_pruned",
            "Records removed by retention, by kind (events, desired_history, audit)",
            pruned.clone(),
        );
        let pruning_last_pass = Family::<RetentionLabels, Gauge>::default();
        registry.register(
            "retention_last_pass_timestamp_seconds",
            "When the last complete retention pass of each kind ended (Unix time)",
            pruning_last_pass.clone(),
        );
        let prunable = Family::<RetentionLabels, Gauge>::default();
        registry.register(
            "retention_dry_run_prunable",
            "Records the last dry-run pass of each kind would have removed",
            prunable.clone(),
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
            rollouts,
            rollout_hosts,
            rollout_halts,
            pruned,
            pruning_last_pass,
            prunable,
        }
    }

    /// Records a complete retention pass of one kind: what it removed, or in a dry run what
    /// it would have, and when it ended.
    pub fn retention_pass(
        &self,
        kind: &'static str,
        removed: u64,
        dry_run: bool,
        ended_at_secs: i64,
    ) {
        let labels = RetentionLabels { kind };
        if dry_run {
            self.prunable
                .get_or_create(&labels)
                .set(i64::try_from(removed).unwrap_or(i64::MAX));
        } else {
            self.pruned.get_or_create(&labels).inc_by(removed);
        }
        self.pruning_last_pass
            .get_or_create(&labels)
            .set(ended_at_secs);
    }

    /// Counts a rollout that halted.
    pub fn rollout_halted(&self) {
        self.rollout_halts.inc();
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

    /// The text exposition, with host gauges set from `counts` and rollout gauges from
    /// `rollouts`.
    pub fn render(&self, counts: &HostCounts, rollouts: &RolloutCounts) -> String {
        self.set_rollouts(rollouts);
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

impl Metrics {
    fn set_rollouts(&self, counts: &RolloutCounts) {
        for name in RolloutPhase::NAMES {
            let count = counts
                .by_phase
                .iter()
                .find(|(phase, _)| *phase == name)
                .map_or(0, |(_, n)| *n);
            self.rollouts
                .get_or_create(&PhaseLabels {
                    phase: name.to_owned(),
                })
                .set(count);
        }
        // Rollouts that are no longer among the newest leave the exposition.
        self.rollout_hosts.clear();
        for (id, hosts) in &counts.hosts {
            let states = [
                ("pending", hosts.pending),
                ("in-flight", hosts.in_flight),
                ("converged", hosts.converged),
                ("failed", hosts.failed),
                ("taken-out", hosts.taken_out),
                ("rolling-back", hosts.rolling_back),
                ("rolled-back", hosts.rolled_back),
            ];
            for (state, count) in states {
                self.rollout_hosts
                    .get_or_create(&RolloutHostLabels {
                        rollout: id.to_string(),
                        state: state.to_owned(),
                    })
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
