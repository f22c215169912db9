//! The heartbeat worker: sends the agent's summary every interval, and right away when a new
//! probe epoch begins. Its success or failure is the result of the built-in `control-plane`
//! probe, tagged with the current probe epoch.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, MESSAGE_CAP, ProbeId, ProbeResult, cap_head};
use fleetnode_wire::{
    Heartbeat, MAX_PROBES, MAX_WORKERS, ProbeSummary, QueueSummary, WorkerStatus,
};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Client;
use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};
use crate::metrics::Metrics;
use crate::runtime::status::{Snapshot, Workers};

/// This worker's name in statuses.
pub const NAME: &str = "heartbeat";

/// What the heartbeat worker needs.
#[derive(Debug, Clone)]
pub struct HeartbeatContext {
    /// The client.
    pub client: Arc<Client>,
    /// Interval between heartbeats.
    pub interval: Duration,
    /// The reducer's snapshots.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Worker statuses.
    pub workers: Workers,
    /// The agent's clock.
    pub clock: Clock,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs until `cancel`.
pub async fn run(
    mut ctx: HeartbeatContext,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let mut timer = tokio::time::interval(ctx.interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut epoch = ctx.snapshot.borrow_and_update().probe_epoch;
    loop {
        ctx.workers.set(NAME, WorkerStatus::Idle);
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = timer.tick() => {}
            changed = ctx.snapshot.changed() => {
                if changed.is_err() {
                    return if cancel.is_cancelled() { Ok(()) } else { Err(WorkerError::new("the reducer stopped")) };
                }
                let now = ctx.snapshot.borrow_and_update().probe_epoch;
                if now == epoch {
                    continue;
                }
                epoch = now;
                timer.reset();
            }
        }
        ctx.workers.set(NAME, WorkerStatus::Running);
        let snapshot = ctx.snapshot.borrow().clone();
        let heartbeat = build(&snapshot, &ctx);
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            result = ctx.client.heartbeat(&heartbeat) => result,
        };
        let (passed, detail) = match result {
            Ok(ack) => {
                let secs = crate::clock::wall_ms() / 1000;
                ctx.metrics.last_heartbeat_seconds.set(secs as i64);
                debug!(desired_revision = %ack.desired_revision, "heartbeat acknowledged");
                (true, "heartbeat acknowledged".to_owned())
            }
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                (false, format!("heartbeat failed: {e}"))
            }
        };
        let result = ProbeResult {
            probe: ProbeId::control_plane(),
            epoch: snapshot.probe_epoch,
            passed,
            detail: cap_head(&detail, MESSAGE_CAP),
        };
        if inputs
            .send(Input::Event(Event::ProbeResult(result)))
            .await
            .is_err()
        {
            return if cancel.is_cancelled() {
                Ok(())
            } else {
                Err(WorkerError::new("the reducer stopped"))
            };
        }
    }
}

/// The heartbeat message for a snapshot.
pub fn build(snapshot: &Snapshot, ctx: &HeartbeatContext) -> Heartbeat {
    let now = ctx.clock.now();
    let queue = QueueSummary {
        depth: snapshot.queue.depth,
        bytes: snapshot.queue.bytes,
        oldest_age_ms: snapshot.queue.oldest_at.map(|at| now.since(at)),
        dead_letters: snapshot.queue.dead_letters,
    };
    let probes = snapshot
        .probes
        .iter()
        .take(MAX_PROBES)
        .map(|p| ProbeSummary {
            probe: p.probe.clone(),
            mode: p.mode,
            passing: p.passing,
            detail: cap_head(&p.detail, MESSAGE_CAP),
        })
        .collect();
    let mut workers = ctx.workers.list();
    workers.truncate(MAX_WORKERS);
    Heartbeat {
        agent_version: snapshot.agent_version.to_owned(),
        sent_at: now,
        phase: snapshot.phase.to_owned(),
        paused: snapshot.paused,
        handled_revision: snapshot.handled_revision,
        desired_revision: snapshot.desired_revision,
        target: snapshot.target.clone(),
        system: snapshot.system.clone(),
        stream: snapshot.stream,
        last_seq: snapshot.last_seq,
        queue,
        probes,
        workers,
    }
}

#[cfg(test)]
mod tests;
