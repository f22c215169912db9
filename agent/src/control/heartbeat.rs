//! The heartbeat worker: sends the agent's status every interval, and right away when a new
//! probe epoch begins. Its success or failure is the result of the built-in `control-plane`
//! probe, tagged with the current probe epoch.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, MESSAGE_CAP, ProbeId, ProbeResult, cap_head};
use fleetnode_wire::{AgentStatus, WorkerStatus};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Client;
use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};
use crate::metrics::Metrics;
use crate::runtime::status::{StatusWatch, Workers};

/// This worker's name in statuses.
pub const NAME: &str = "heartbeat";

/// What the heartbeat worker needs.
#[derive(Debug, Clone)]
pub struct HeartbeatContext {
    /// The client.
    pub client: Arc<Client>,
    /// Interval between heartbeats.
    pub interval: Duration,
    /// The event loop's status.
    pub status: StatusWatch,
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
    let gone = |cancel: &CancellationToken| {
        if cancel.is_cancelled() {
            Ok(())
        } else {
            Err(WorkerError::new("the event loop stopped"))
        }
    };
    let mut timer = tokio::time::interval(ctx.interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut epoch = ctx.status.borrow_and_update().probe_epoch;
    loop {
        ctx.workers.set(NAME, WorkerStatus::Idle);
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = timer.tick() => {}
            changed = ctx.status.changed() => {
                if changed.is_err() {
                    return gone(&cancel);
                }
                let now = ctx.status.borrow_and_update().probe_epoch;
                if now == epoch {
                    continue;
                }
                epoch = now;
                timer.reset();
            }
        }
        ctx.workers.set(NAME, WorkerStatus::Running);
        let status = current(&ctx);
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            result = ctx.client.heartbeat(&status) => result,
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
            epoch: status.probe_epoch,
            passed,
            detail: cap_head(&detail, MESSAGE_CAP),
        };
        if inputs
            .send(Input::Event(Event::ProbeResult(result)))
            .await
            .is_err()
        {
            return gone(&cancel);
        }
    }
}

/// The status to send now: the event loop's latest, with the workers and the time as of now.
pub fn current(ctx: &HeartbeatContext) -> AgentStatus {
    let mut status = AgentStatus::clone(&ctx.status.borrow());
    status.at = ctx.clock.now();
    status.workers = ctx.workers.list();
    status.workers.truncate(fleetnode_wire::MAX_WORKERS);
    status
}

#[cfg(test)]
mod tests;
