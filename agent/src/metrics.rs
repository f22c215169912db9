//! The agent's Prometheus metrics, served by the admin listener at `GET /metrics`.
//!
//! Every metric is prefixed `fleetnode_agent_`. The event loop updates state, transition, queue
//! and probe metrics after each commit; the control-plane client counts requests; the supervisor
//! updates worker metrics.

use std::sync::atomic::AtomicU64;

use fleetnode_state_machine::{Phase, PhaseKind, Timestamp};
use fleetnode_wire::QueueSummary;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// 1 for the phase the host is in, 0 for the others.
    pub phase: Family<Labels1, Gauge>,
    /// 1 while the operator hold is on.
    pub paused: Gauge,
    /// Reported transitions by report name.
    pub transitions: Family<Labels1, Counter>,
    /// Inputs `step` refused, by kind.
    pub refused_inputs: Family<Labels1, Counter>,
    /// Switches that ended, by purpose and outcome.
    pub switches: Family<Labels2, Counter>,
    /// Rollbacks begun (or found done by a reboot), by reason code.
    pub rollbacks: Family<Labels1, Counter>,
    /// Events waiting for delivery.
    pub queue_depth: Gauge,
    /// Their encoded size.
    pub queue_bytes: Gauge,
    /// Age of the oldest waiting event, in seconds (0 when the queue is empty).
    pub queue_oldest_age_seconds: Gauge<f64, AtomicU64>,
    /// Probe observations dropped by compaction.
    pub queue_compacted: Counter,
    /// Dead letters kept.
    pub dead_letters: Gauge,
    /// Requests to the control plane by endpoint and status (`error` for no response).
    pub requests: Family<Labels2, Counter>,
    /// Latest result per probe: 1 passing, 0 failing, -1 no result in this epoch.
    pub probe_status: Family<Labels1, Gauge>,
    /// Unix time of the last acknowledged heartbeat, in seconds.
    pub last_heartbeat_seconds: Gauge,
    /// 1 for each worker's current status (idle, running, faulted).
    pub worker_status: Family<Labels2, Gauge>,
    /// Worker restarts after a fault.
    pub worker_restarts: Family<Labels1, Counter>,
    /// Failed writes to the durable store (each is retried).
    pub store_errors: Counter,
    /// Answers of the control plane that break the protocol, by kind.
    pub protocol_errors: Family<Labels1, Counter>,
    /// Moves from one control-plane address to the next after it did not answer.
    pub control_plane_moves: Counter,
    /// 1 for the control-plane address in use, 0 for the other configured ones.
    pub control_plane_current: Family<Labels1, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Sets the queue gauges; the age of the oldest event is taken at `now`.
    pub fn export_queue(&self, queue: &QueueSummary, now: Timestamp) {
        self.queue_depth.set(queue.depth as i64);
        self.queue_bytes.set(queue.bytes as i64);
        self.dead_letters.set(queue.dead_letters as i64);
        let age = queue
            .oldest_at
            .map_or(0.0, |at| now.since(at).0 as f64 / 1000.0);
        self.queue_oldest_age_seconds.set(age);
    }

    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fleetnode_agent");
        let m = Self {
            registry: Registry::default(),
            phase: Family::default(),
            paused: Gauge::default(),
            transitions: Family::default(),
            refused_inputs: Family::default(),
            switches: Family::default(),
            rollbacks: Family::default(),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            queue_oldest_age_seconds: Gauge::default(),
            queue_compacted: Counter::default(),
            dead_letters: Gauge::default(),
            requests: Family::default(),
            probe_status: Family::default(),
            last_heartbeat_seconds: Gauge::default(),
            worker_status: Family::default(),
            worker_restarts: Family::default(),
            store_errors: Counter::default(),
            protocol_errors: Family::default(),
            control_plane_moves: Counter::default(),
            control_plane_current: Family::default(),
        };
        let build = Family::<Labels1, Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION").to_owned())])
            .set(1);
        registry.register("build_info", "Agent version", build);
        registry.register("phase", "Current phase (1 = in it)", m.phase.clone());
        registry.register("paused", "Operator hold is on", m.paused.clone());
        registry.register(
            "transitions",
            "Reported transitions by report",
            m.transitions.clone(),
        );
        registry.register(
            "refused_inputs",
            "Inputs the state machine refused, by kind",
            m.refused_inputs.clone(),
        );
        registry.register(
            "switches",
            "Switches that ended, by purpose and outcome",
            m.switches.clone(),
        );
        registry.register("rollbacks", "Rollbacks by reason", m.rollbacks.clone());
        registry.register(
            "queue_depth",
            "Events waiting for delivery",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_bytes",
            "Encoded size of the waiting events",
            m.queue_bytes.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest waiting event",
            m.queue_oldest_age_seconds.clone(),
        );
        registry.register(
            "queue_compacted",
            "Probe observations dropped by queue compaction",
            m.queue_compacted.clone(),
        );
        registry.register("dead_letters", "Dead letters kept", m.dead_letters.clone());
        registry.register(
            "requests",
            "Requests to the control plane by endpoint and status",
            m.requests.clone(),
        );
        registry.register(
            "probe_status",
            "Latest probe result: 1 passing, 0 failing, -1 none yet",
            m.probe_status.clone(),
        );
        registry.register(
            "last_heartbeat_seconds",
            "Unix time of the last acknowledged heartbeat",
            m.last_heartbeat_seconds.clone(),
        );
        registry.register(
            "worker_status",
            "Worker status (1 = current)",
            m.worker_status.clone(),
        );
        registry.register(
            "worker_restarts",
            "Worker restarts after a fault",
            m.worker_restarts.clone(),
        );
        registry.register(
            "store_errors",
            "Failed writes to the durable store",
            m.store_errors.clone(),
        );
        registry.register(
            "protocol_errors",
            "Answers of the control plane that break the protocol, by kind",
            m.protocol_errors.clone(),
        );
        registry.register(
            "control_plane_moves",
            "Moves to the next control-plane address after one did not answer",
            m.control_plane_moves.clone(),
        );
        registry.register(
            "control_plane_current",
            "Control-plane address in use (1 = current)",
            m.control_plane_current.clone(),
        );
        Self { registry, ..m }
    }

    /// Marks `current` as the phase the host is in.
    pub fn set_phase(&self, current: PhaseKind) {
        for kind in Phase::KINDS {
            self.phase
                .get_or_create(&[("phase", kind.name().to_owned())])
                .set(i64::from(kind == current));
        }
    }

    /// Counts a request to the control plane.
    pub fn request(&self, endpoint: &'static str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.requests
            .get_or_create(&[("endpoint", endpoint.to_owned()), ("status", status)])
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_labels() {
        let m = Metrics::new();
        m.set_phase(PhaseKind::Idle);
        m.request("events", Some(503));
        m.transitions
            .get_or_create(&[("report", "paused".to_owned())])
            .inc();
        let text = m.render();
        assert!(
            text.contains("fleetnode_agent_phase{phase=\"idle\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fleetnode_agent_phase{phase=\"converged\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("fleetnode_agent_requests_total{endpoint=\"events\",status=\"503\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fleetnode_agent_build_info{version="),
            "{text}"
        );
        assert!(text.contains("fleetnode_agent_transitions_total{report=\"paused\"} 1"));
    }
}
