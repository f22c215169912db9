//! What the agent shows about itself: the reducer's snapshot of the state (published on a
//! `watch` after every input) and the workers' statuses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fleetnode_state_machine::{
    DeadlineKind, Phase, ProbeId, ProbeMode, Revision, State, StorePath, SystemView, Timestamp,
};
use fleetnode_wire::{WorkerStatus, WorkerSummary};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::store::QueueStats;

/// The reducer's view of the agent after its latest input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Agent version.
    pub agent_version: &'static str,
    /// Phase name.
    pub phase: &'static str,
    /// Why the host is reverted or failed, in words.
    pub reason: Option<String>,
    /// Operator hold.
    pub paused: bool,
    /// Target of the work in progress or in place.
    pub target: Option<StorePath>,
    /// What the host runs.
    pub system: SystemView,
    /// Latest directive revision acted upon.
    pub handled_revision: Option<Revision>,
    /// Latest directive revision received.
    pub desired_revision: Option<Revision>,
    /// Seq of the latest event emitted.
    pub last_seq: u64,
    /// Current probe epoch.
    pub probe_epoch: u64,
    /// The event stream id.
    pub stream: u64,
    /// The outbound queue.
    pub queue: QueueStats,
    /// Latest result of each probe in this epoch.
    pub probes: Vec<ProbeStatus>,
    /// The next deadline and why.
    pub next_deadline: Option<(Timestamp, DeadlineKind)>,
    /// The agent's clock when the snapshot was taken.
    pub at: Timestamp,
}

/// Latest result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeStatus {
    /// Probe.
    pub probe: ProbeId,
    /// Its mode.
    pub mode: ProbeMode,
    /// Latest result; `None` before the first one in this epoch.
    pub passing: Option<bool>,
    /// Its explanation.
    pub detail: String,
}

impl Snapshot {
    /// Builds a snapshot of `state`, with the latest probe results the reducer has seen.
    pub fn of(
        state: &State,
        stream: u64,
        queue: QueueStats,
        latest: &BTreeMap<ProbeId, (bool, String)>,
    ) -> Self {
        let host = &state.host;
        let mut probes: Vec<(ProbeId, ProbeMode)> = host
            .policy
            .probes
            .iter()
            .map(|(probe, mode)| (probe.clone(), *mode))
            .collect();
        if !host.policy.probes.contains_key(&ProbeId::control_plane()) {
            probes.push((ProbeId::control_plane(), ProbeMode::Enforce));
            probes.sort_by(|a, b| a.0.cmp(&b.0));
        }
        let probes = probes
            .into_iter()
            .map(|(probe, mode)| {
                let result = latest.get(&probe);
                ProbeStatus {
                    passing: result.map(|(passed, _)| *passed),
                    detail: result.map(|(_, d)| d.clone()).unwrap_or_default(),
                    probe,
                    mode,
                }
            })
            .collect();
        Self {
            agent_version: env!("CARGO_PKG_VERSION"),
            phase: host.phase.name(),
            reason: reason(&host.phase),
            paused: host.paused,
            target: target(&host.phase),
            system: host.system.clone(),
            handled_revision: host.handled,
            desired_revision: host.desired.as_ref().map(|d| d.revision),
            last_seq: host.seq,
            probe_epoch: host.probe_epoch,
            stream,
            queue,
            probes,
            next_deadline: state.next_deadline(),
            at: state.clock,
        }
    }
}

/// The closure the host is working towards or settled on, by phase.
pub fn target(phase: &Phase) -> Option<StorePath> {
    match phase {
        Phase::Idle => None,
        Phase::Realising(p) => Some(p.work.target.clone()),
        Phase::Activating(p) => Some(p.work.target.clone()),
        Phase::Soaking(p) => Some(p.work.target.clone()),
        Phase::Committing(p) => Some(p.work.target.clone()),
        Phase::Deferred(p) => Some(p.work.target.clone()),
        Phase::RollingBack(p) => Some(p.to.clone()),
        Phase::Converged(p) => Some(p.target.clone()),
        Phase::Reverted(p) => Some(p.to.clone()),
        Phase::Failed(p) => p.target.clone(),
    }
}

fn reason(phase: &Phase) -> Option<String> {
    match phase {
        Phase::RollingBack(p) => Some(p.reason.to_string()),
        Phase::Reverted(p) => Some(p.reason.to_string()),
        Phase::Failed(p) => Some(p.reason.to_string()),
        Phase::Idle
        | Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Soaking(_)
        | Phase::Committing(_)
        | Phase::Deferred(_)
        | Phase::Converged(_) => None,
    }
}

/// The status of every worker, shared by the supervisor, the workers and the status readers.
#[derive(Debug, Clone)]
pub struct Workers {
    inner: Arc<Mutex<BTreeMap<&'static str, WorkerSummary>>>,
    metrics: Arc<Metrics>,
}

impl Workers {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::default(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, WorkerSummary>> {
        // A panic while holding this lock cannot leave the map inconsistent: every update is a
        // single insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a worker's status (the last error, if any, is kept for diagnosis).
    pub fn set(&self, name: &'static str, status: WorkerStatus) {
        let mut map = self.lock();
        let first = !map.contains_key(name);
        let entry = map.entry(name).or_insert_with(|| WorkerSummary {
            name: name.to_owned(),
            status,
            restarts: 0,
            last_error: None,
        });
        entry.status = status;
        drop(map);
        if first {
            // Shown as 0 from the start, so a rate over it works before the first fault; the
            // returned guard is only for reading the counter.
            let _ = self
                .metrics
                .worker_restarts
                .get_or_create(&[("worker", name.to_owned())]);
        }
        self.export(name, status);
    }

    /// Records a fault and counts the restart that follows.
    pub fn fault(&self, name: &'static str, error: &str) {
        let mut map = self.lock();
        let entry = map.entry(name).or_insert_with(|| WorkerSummary {
            name: name.to_owned(),
            status: WorkerStatus::Faulted,
            restarts: 0,
            last_error: None,
        });
        entry.status = WorkerStatus::Faulted;
        entry.restarts += 1;
        entry.last_error = Some(fleetnode_state_machine::cap_head(
            error,
            fleetnode_state_machine::MESSAGE_CAP,
        ));
        drop(map);
        self.metrics
            .worker_restarts
            .get_or_create(&[("worker", name.to_owned())])
            .inc();
        self.export(name, WorkerStatus::Faulted);
    }

    /// Every worker, by name.
    pub fn list(&self) -> Vec<WorkerSummary> {
        self.lock().values().cloned().collect()
    }

    fn export(&self, name: &'static str, status: WorkerStatus) {
        for (label, candidate) in [
            ("idle", WorkerStatus::Idle),
            ("running", WorkerStatus::Running),
            ("faulted", WorkerStatus::Faulted),
        ] {
            self.metrics
                .worker_status
                .get_or_create(&[("worker", name.to_owned()), ("status", label.to_owned())])
                .set(i64::from(candidate == status));
        }
    }
}
