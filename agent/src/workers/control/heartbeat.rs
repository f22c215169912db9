//! The heartbeat worker: sends the agent's status every interval, and right away when a new
//! probe epoch begins. Its success or failure is the result of the built-in `control-plane`
//! probe, tagged with the current probe epoch.
//!
//! A failed heartbeat is retried like every other request ([`super::retry_plan`]): the next one
//! waits for the interval or the retry delay, whichever is longer, so a `Retry-After` is
//! honoured (up to [`super::RETRY_AFTER_CAP`]) and refused credentials or another protocol
//! version are retried at [`BACKOFF_CAP`]. A new probe epoch sends at once, but never before
//! the wait the control plane asked for is over. A `resync_required` answer is a heartbeat that
//! reached the control plane: the agent records a snapshot for it (`docs/protocol.md`,
//! "Resync").

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, MESSAGE_CAP, ProbeId, ProbeResult, ResyncCause, cap_head};
use fleetnode_wire::{AgentStatus, RetryClass, WorkerStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::{Client, retry_plan};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};
use crate::metrics::Metrics;
use crate::status::{StatusWatch, Workers};

/// This worker's name in statuses.
pub const NAME: &str = "heartbeat";
/// First retry delay after a failed heartbeat (the interval is the floor).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay, and the pace for refused credentials and another protocol version.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

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
            Err(WorkerError::LoopStopped)
        }
    };
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    // When the next heartbeat is due, and the earliest the control plane lets us send one.
    let mut next = Instant::now();
    let mut allowed = next;
    let mut epoch = ctx.status.borrow_and_update().probe_epoch;
    loop {
        ctx.workers.set(NAME, WorkerStatus::Idle);
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(next) => {}
            changed = ctx.status.changed() => {
                if changed.is_err() {
                    return gone(&cancel);
                }
                let now = ctx.status.borrow_and_update().probe_epoch;
                if now != epoch {
                    epoch = now;
                    next = Instant::now().max(allowed);
                }
                continue;
            }
        }
        ctx.workers.set(NAME, WorkerStatus::Running);
        let status = current(&ctx);
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            result = ctx.client.heartbeat(&status) => result,
        };
        let sent = Instant::now();
        let (passed, detail) = match result {
            Ok(ack) => {
                backoff.reset();
                next = sent + ctx.interval;
                allowed = sent;
                let secs = crate::clock::wall_ms() / 1000;
                ctx.metrics.last_heartbeat_seconds.set(secs as i64);
                debug!(desired_revision = %ack.desired_revision, "heartbeat acknowledged");
                (true, "heartbeat acknowledged".to_owned())
            }
            Err(e) if e.class() == RetryClass::Resync => {
                // The control plane answered, and asks for a snapshot: it is reachable.
                backoff.reset();
                next = sent + ctx.interval;
                allowed = sent;
                let log_end = e.body_seq().unwrap_or(0);
                warn!(
                    log_end,
                    "the control plane lacks events of this stream; sending a snapshot"
                );
                let resync = Input::Resync {
                    log_end,
                    cause: ResyncCause::ControlPlaneLog { log_end },
                    done: None,
                };
                if inputs.send(resync).await.is_err() {
                    return gone(&cancel);
                }
                (true, "the control plane asked for a snapshot".to_owned())
            }
            Err(e) => {
                let retry = retry_plan(&e, &mut backoff);
                let delay = retry.delay.max(ctx.interval);
                next = sent + delay;
                allowed = sent + retry.delay;
                let retry_in_ms = delay.as_millis() as u64;
                if retry.needs_a_person {
                    error!(error = %e, retry_in_ms, "{}", retry.advice);
                } else {
                    warn!(error = %e, retry_in_ms, "{}", retry.advice);
                }
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
