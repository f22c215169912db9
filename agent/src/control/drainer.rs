//! The outbound drainer: delivers queued events to the control plane in seq order.
//!
//! It reads the store read-only, posts batches of up to [`MAX_BATCH_EVENTS`], and tells the
//! reducer what was acknowledged (`Input::Acked`), so the store keeps a single writer. It sleeps
//! when the queue is empty until the applier kicks it after an enqueue.
//!
//! Failures: network errors, 5xx, 408 and 429 back off exponentially with full jitter (capped at
//! [`BACKOFF_CAP`]) and honour `Retry-After`; 401/403 and 426 retry at the cap and log an error
//! every time; nothing is dropped for them. Any other 4xx means an event is at fault: a batch is
//! retried one event at a time, and an event refused on its own is dead-lettered
//! (`Input::DeadLettered`), which puts a gap in its place so delivery goes on.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{GapCause, OutboundEvent, Report};
use fleetnode_wire::{EventBatch, MAX_BATCH_EVENTS, MAX_BODY_BYTES, WorkerStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::{Client, retry_plan};
use crate::backoff::Backoff;
use crate::input::{Input, InputSender, WorkerError};
use crate::runtime::status::Workers;
use crate::store::StoreReader;

/// This worker's name in statuses.
pub const NAME: &str = "drainer";
/// First delay after a failed delivery.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Most encoded event bytes in one batch: the body cap less room for the envelope.
pub const BATCH_MAX_BYTES: usize = MAX_BODY_BYTES - 16 * 1024;
/// How long to wait for the reducer to record a dead letter before looking again.
const DEAD_LETTER_POLL: Duration = Duration::from_secs(1);

/// What the drainer needs.
#[derive(Debug, Clone)]
pub struct DrainerContext {
    /// The client.
    pub client: Arc<Client>,
    /// Read-only view of the queue.
    pub reader: StoreReader,
    /// The event stream id.
    pub stream: u64,
    /// Kicked after every enqueue.
    pub kick: Arc<Notify>,
    /// Worker statuses.
    pub workers: Workers,
}

/// Runs until `cancel`.
pub async fn run(
    ctx: DrainerContext,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let gone = || {
        if cancel.is_cancelled() {
            Ok(())
        } else {
            Err(WorkerError::new("the reducer stopped"))
        }
    };
    let mut acked: u64 = 0;
    // Events up to this seq are sent one at a time, after a batch was refused.
    let mut solo_until: u64 = 0;
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    loop {
        let limit = if acked < solo_until {
            1
        } else {
            MAX_BATCH_EVENTS
        };
        let batch = ctx
            .reader
            .batch_after(acked, limit, BATCH_MAX_BYTES)
            .map_err(|e| WorkerError::new(format!("cannot read the outbound queue: {e}")))?;
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            ctx.workers.set(NAME, WorkerStatus::Idle);
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = ctx.kick.notified() => continue,
            }
        };
        let (first, last) = (first.seq, last.seq);
        ctx.workers.set(NAME, WorkerStatus::Running);
        let request = EventBatch {
            stream: ctx.stream,
            events: batch,
        };
        let result = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            result = ctx.client.post_events(&request) => result,
        };
        let delay = match result {
            Ok(ack) if ack.acked_through >= first => {
                backoff.reset();
                debug!(
                    first,
                    last,
                    acked_through = ack.acked_through,
                    "events delivered"
                );
                acked = acked.max(ack.acked_through);
                if inputs
                    .send(Input::Acked {
                        through: ack.acked_through,
                    })
                    .await
                    .is_err()
                {
                    return gone();
                }
                continue;
            }
            Ok(ack) => {
                error!(
                    first,
                    acked_through = ack.acked_through,
                    "the control plane acknowledged nothing of the batch; it may have lost events this agent no longer holds"
                );
                backoff.next_delay().max(BACKOFF_CAP / 2)
            }
            Err(e) if e.refuses_the_content() && request.events.len() > 1 => {
                warn!(first, last, error = %e, "batch refused; sending its events one at a time");
                solo_until = last;
                continue;
            }
            Err(e) if e.refuses_the_content() => {
                let event = &request.events[0];
                if is_dead_letter_gap(event) {
                    error!(seq = event.seq, error = %e, "the control plane refuses even the gap that replaces a dead letter; retrying at the slowest pace");
                    BACKOFF_CAP
                } else {
                    let code = e.code();
                    error!(seq = event.seq, report = event.report.name(), code, error = %e,
                        "the control plane refused the event for good; it is kept as a dead letter");
                    if inputs
                        .send(Input::DeadLettered {
                            seq: event.seq,
                            code,
                        })
                        .await
                        .is_err()
                    {
                        return gone();
                    }
                    let letter = Input::DeadLettered {
                        seq: event.seq,
                        code: e.code(),
                    };
                    if !wait_for_dead_letter(&ctx, letter, &inputs, &cancel).await? {
                        return gone();
                    }
                    continue;
                }
            }
            Err(e) => {
                let retry = retry_plan(&e, &mut backoff);
                let retry_in_ms = retry.delay.as_millis() as u64;
                if retry.needs_a_person {
                    error!(first, last, error = %e, retry_in_ms, "{}", retry.advice);
                } else {
                    warn!(first, last, error = %e, retry_in_ms, "{}", retry.advice);
                }
                retry.delay
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn is_dead_letter_gap(event: &OutboundEvent) -> bool {
    matches!(
        event.report,
        Report::Gap {
            cause: GapCause::DeadLettered { .. },
            ..
        }
    )
}

/// Waits until the reducer replaced the refused event with its gap (or it left the queue).
/// The request is sent again after each poll that still finds the event, so a dead letter
/// whose store write failed is retried instead of stalling delivery. False when the reducer
/// is gone.
async fn wait_for_dead_letter(
    ctx: &DrainerContext,
    letter: Input,
    inputs: &InputSender,
    cancel: &CancellationToken,
) -> Result<bool, WorkerError> {
    let Input::DeadLettered { seq, code } = letter else {
        return Ok(true);
    };
    loop {
        let current = ctx
            .reader
            .get(seq)
            .map_err(|e| WorkerError::new(format!("cannot read the outbound queue: {e}")))?;
        match current {
            None => return Ok(true),
            Some(event) if is_dead_letter_gap(&event) => return Ok(true),
            Some(_) => {}
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(true),
            () = ctx.kick.notified() => continue,
            () = tokio::time::sleep(DEAD_LETTER_POLL) => {}
        }
        let again = Input::DeadLettered {
            seq,
            code: code.clone(),
        };
        if inputs.send(again).await.is_err() {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests;
