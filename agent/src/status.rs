//! What the agent shows about itself: one [`AgentStatus`] (the wire type the admin socket, the
//! heartbeat and the CLI share), built by the event loop from its state, and the workers'
//! statuses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fleetnode_state_machine::{
    MESSAGE_CAP, Phase, ProbeId, ProbeMode, State, StorePath, Timestamp, cap_head,
};
use fleetnode_wire::{
    AgentStatus, MAX_PROBES, MAX_WORKERS, NextDeadline, ProbeSummary, QueueSummary, WorkerStatus,
    WorkerSummary,
};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The latest status, published by the event loop after every input that changed it.
pub type StatusWatch = watch::Receiver<Arc<AgentStatus>>;

/// The latest result of each probe in the current epoch, as the event loop saw them: whether
/// it passed and its detail.
pub type LatestProbes = BTreeMap<ProbeId, (bool, String)>;

/// Builds the status of the agent whose state is `state`, at `at`.
pub fn build(
    state: &State,
    stream: u64,
    queue: QueueSummary,
    latest: &LatestProbes,
    workers: Vec<WorkerSummary>,
    at: Timestamp,
) -> AgentStatus {
    let host = &state.host;
    let mut workers = workers;
    workers.truncate(MAX_WORKERS);
    AgentStatus {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        at,
        phase: host.phase.kind(),
        reason: reason(&host.phase).cloned(),
        paused: host.paused,
        handled_revision: host.handled,
        desired_revision: host.desired.as_ref().map(|d| d.revision),
        target: target(&host.phase),
        system: host.system.clone(),
        stream,
        last_seq: host.seq,
        probe_epoch: host.probe_epoch,
        queue,
        probes: probes(state, latest),
        workers,
        next_deadline: state
            .next_deadline()
            .map(|(at, kind)| NextDeadline { at, kind }),
    }
}

/// Every configured probe (the built-in control-plane probe included) with its latest result.
fn probes(state: &State, latest: &LatestProbes) -> Vec<ProbeSummary> {
    let policy = &state.host.policy;
    let mut probes: Vec<(ProbeId, ProbeMode)> = policy
        .probes
        .iter()
        .map(|(probe, mode)| (probe.clone(), *mode))
        .collect();
    if !policy.probes.contains_key(&ProbeId::control_plane()) {
        probes.push((ProbeId::control_plane(), ProbeMode::Enforce));
        probes.sort_by(|a, b| a.0.cmp(&b.0));
    }
    probes.truncate(MAX_PROBES);
    probes
        .into_iter()
        .map(|(probe, mode)| {
            let result = latest.get(&probe);
            ProbeSummary {
                passing: result.map(|(passed, _)| *passed),
                detail: result
                    .map(|(_, detail)| cap_head(detail, MESSAGE_CAP))
                    .unwrap_or_default(),
                probe,
                mode,
            }
        })
        .collect()
}

/// The systemd status line for a status.
pub fn line(status: &AgentStatus) -> String {
    let mut line = format!("phase {}", status.phase);
    if let Some(target) = &status.target {
        line.push_str(&format!(", target {}", target.name()));
    }
    if status.paused {
        line.push_str(", paused");
    }
    if status.queue.depth > 0 {
        line.push_str(&format!(", {} events queued", status.queue.depth));
    }
    line
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

fn reason(phase: &Phase) -> Option<&fleetnode_state_machine::Reason> {
    match phase {
        Phase::RollingBack(p) => Some(&p.reason),
        Phase::Reverted(p) => Some(&p.reason),
        Phase::Failed(p) => Some(&p.reason),
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
