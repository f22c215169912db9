//! The outbound drainer: delivers queued events to the control plane in seq order.
//!
//! It reads the store read-only, posts batches of up to [`MAX_BATCH_EVENTS`], and tells the
//! event loop what was acknowledged (`Input::Acked`), so the store keeps a single writer. It
//! sleeps when the queue is empty until the event loop wakes it after a commit with new events.
//!
//! Failures: network errors, 5xx, 408 and 429 back off exponentially with full jitter (capped at
//! [`BACKOFF_CAP`]) and honour `Retry-After`; 401/403, 426 and other 4xx retry at the cap and
//! log an error every time; nothing is dropped for them. Only a refusal of the content itself
//! ([`fleetnode_wire::RetryClass::Content`]) means an event is at fault: a batch is retried one
//! event at a time, and an event refused on its own is dead-lettered (`Input::DeadLettered`),
//! which puts a gap in its place so delivery goes on: the event loop answers once the gap is
//! durable, or that its write failed, and then the dead letter is asked for again after
//! [`DEAD_LETTER_RETRY`] (the event is not sent to the control plane again meanwhile).
//!
//! Acknowledgements: `acked_through` between the batch's first and last seq acknowledges that
//! far. One below the first seq acknowledges nothing; one beyond the last seq sent is a protocol
//! error of the control plane (it claims events it was never sent) and is refused: nothing is
//! dropped. Both are logged as errors and the batch is sent again after the next backoff delay,
//! or at once when a new event is queued.
//!
//! Resync (`docs/protocol.md`, "Resync"): when the control plane answers `resync_required`, or
//! acknowledges a seq beyond every event the agent has (refused, never applied), the drainer
//! asks the event loop for a snapshot and goes on sending from it: the events before it are
//! covered by it, and its acknowledgement drops them.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{GapCause, OutboundEvent, Report, ResyncCause};
use fleetnode_wire::{EventBatch, MAX_BATCH_EVENTS, MAX_BODY_BYTES, RetryClass, WorkerStatus};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::{Client, retry_plan};
use crate::backoff::Backoff;
use crate::input::{Input, InputSender, WorkerError, Written};
use crate::status::Workers;
use crate::store::StoreReader;

/// This worker's name in statuses.
pub const NAME: &str = "drainer";
/// First delay after a failed delivery.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Most encoded event bytes in one batch: the body cap less room for the envelope.
pub const BATCH_MAX_BYTES: usize = MAX_BODY_BYTES - 16 * 1024;
/// How long to wait before asking again for a dead letter the event loop could not write.
pub const DEAD_LETTER_RETRY: Duration = Duration::from_secs(1);

/// What the drainer needs.
#[derive(Debug, Clone)]
pub struct DrainerContext {
    /// The client.
    pub client: Arc<Client>,
    /// Read-only view of the queue.
    pub reader: StoreReader,
    /// The event stream id.
    pub stream: u64,
    /// Woken after every commit with new events.
    pub new_events: Arc<Notify>,
    /// Worker statuses.
    pub workers: Workers,
}

/// Runs until `cancel`.
pub async fn run(
    ctx: DrainerContext,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let mut drainer = Drainer {
        ctx,
        inputs,
        cancel,
        acked: 0,
        one_by_one_through: 0,
        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
    };
    loop {
        let batch = drainer.next_batch()?;
        if batch.is_empty() {
            drainer.ctx.workers.set(NAME, WorkerStatus::Idle);
            tokio::select! {
                () = drainer.cancel.cancelled() => return Ok(()),
                () = drainer.ctx.new_events.notified() => continue,
            }
        }
        drainer.ctx.workers.set(NAME, WorkerStatus::Running);
        match drainer.deliver(batch).await? {
            Next::Now => {}
            Next::After(delay) => tokio::select! {
                () = drainer.cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            },
            Next::AfterOrNewEvent(delay) => tokio::select! {
                () = drainer.cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
                () = drainer.ctx.new_events.notified() => {}
            },
            Next::Stop => return Ok(()),
        }
    }
}

/// What the drainer does after a delivery attempt.
enum Next {
    /// Go on at once.
    Now,
    /// Try again after this long.
    After(Duration),
    /// Try again after this long, or as soon as a new event is queued.
    AfterOrNewEvent(Duration),
    /// Shutdown.
    Stop,
}

/// The drainer's own bookkeeping between deliveries.
struct Drainer {
    ctx: DrainerContext,
    inputs: InputSender,
    cancel: CancellationToken,
    /// Every seq up to this one is acknowledged.
    acked: u64,
    /// Events up to this seq are sent one at a time, after a batch was refused.
    one_by_one_through: u64,
    backoff: Backoff,
}

impl Drainer {
    /// The next events to send: a batch, or one alone while a refused batch is picked apart.
    fn next_batch(&self) -> Result<Vec<OutboundEvent>, WorkerError> {
        let limit = if self.acked < self.one_by_one_through {
            1
        } else {
            MAX_BATCH_EVENTS
        };
        self.ctx
            .reader
            .batch_after(self.acked, limit, BATCH_MAX_BYTES)
            .map_err(|e| WorkerError::Queue(e.to_string()))
    }

    /// Posts one batch and handles the answer.
    async fn deliver(&mut self, events: Vec<OutboundEvent>) -> Result<Next, WorkerError> {
        let (first, last) = match (events.first(), events.last()) {
            (Some(first), Some(last)) => (first.seq, last.seq),
            (None, _) | (_, None) => return Ok(Next::Now),
        };
        let request = EventBatch {
            stream: self.ctx.stream,
            events,
        };
        let result = tokio::select! {
            () = self.cancel.cancelled() => return Ok(Next::Stop),
            result = self.ctx.client.post_events(&request) => result,
        };
        match result {
            Ok(ack) if ack.acked_through > self.newest(last)? => {
                let acked = ack.acked_through;
                self.ctx.client.protocol_error("ack-beyond-agent");
                error!(
                    first,
                    last,
                    acked_through = acked,
                    "the control plane acknowledged a seq beyond every event this agent has; refused and never applied; sending a snapshot"
                );
                self.resync(acked, ResyncCause::AckBeyondAgent { acked })
                    .await
            }
            Ok(ack) if ack.acked_through > last => {
                self.ctx.client.protocol_error("ack-beyond-batch");
                error!(
                    first,
                    last,
                    acked_through = ack.acked_through,
                    "the control plane acknowledged seqs this agent never sent it; the acknowledgement is refused and the batch is sent again (a control-plane bug, or a host restored from a snapshot)"
                );
                Ok(Next::AfterOrNewEvent(self.backoff.next_delay()))
            }
            Ok(ack) if ack.acked_through >= first => {
                self.backoff.reset();
                debug!(
                    first,
                    last,
                    acked_through = ack.acked_through,
                    "events delivered"
                );
                self.acked = self.acked.max(ack.acked_through);
                self.send(Input::Acked {
                    through: ack.acked_through,
                })
                .await
            }
            Ok(ack) => {
                error!(
                    first,
                    acked_through = ack.acked_through,
                    "the control plane acknowledged nothing of the batch; it may have lost events this agent no longer holds"
                );
                Ok(Next::AfterOrNewEvent(self.backoff.next_delay()))
            }
            Err(e) if e.class() == RetryClass::Resync => {
                if matches!(request.events[0].report, Report::Snapshot { .. }) {
                    error!(first, error = %e, "the control plane asks for a snapshot although the batch begins with one; retrying at the slowest pace");
                    return Ok(Next::After(BACKOFF_CAP));
                }
                let log_end = e.body_seq().unwrap_or(0);
                warn!(
                    first,
                    log_end,
                    "the control plane's log of this stream ends before these events; sending a snapshot"
                );
                self.resync(log_end, ResyncCause::ControlPlaneLog { log_end })
                    .await
            }
            Err(e) if e.refuses_the_content() && request.events.len() > 1 => {
                warn!(first, last, error = %e, "batch refused; sending its events one at a time");
                self.one_by_one_through = last;
                Ok(Next::Now)
            }
            Err(e) if e.refuses_the_content() => self.refused(&request.events[0], &e).await,
            Err(e) => {
                let retry = retry_plan(&e, &mut self.backoff);
                let retry_in_ms = retry.delay.as_millis() as u64;
                if retry.needs_a_person {
                    error!(first, last, error = %e, retry_in_ms, "{}", retry.advice);
                } else {
                    warn!(first, last, error = %e, retry_in_ms, "{}", retry.advice);
                }
                Ok(Next::After(retry.delay))
            }
        }
    }

    /// The control plane refused `event` on its own, for good: it becomes a dead letter (and
    /// its gap goes in its place), unless it is such a gap already.
    async fn refused(
        &mut self,
        event: &OutboundEvent,
        error: &super::RequestError,
    ) -> Result<Next, WorkerError> {
        if is_dead_letter_gap(event) {
            error!(seq = event.seq, error = %error, "the control plane refuses even the gap that replaces a dead letter; retrying at the slowest pace");
            return Ok(Next::After(BACKOFF_CAP));
        }
        let code = error.code();
        error!(seq = event.seq, report = event.report.name(), code, error = %error,
            "the control plane refused the event for good; it is kept as a dead letter");
        loop {
            match self.dead_letter(event.seq, &code).await? {
                Some(Written::Done) => return Ok(Next::Now),
                Some(Written::Failed) => {}
                None => return Ok(Next::Stop),
            }
            // The store refused the write: ask again, without sending the event again.
            tokio::select! {
                () = self.cancel.cancelled() => return Ok(Next::Stop),
                () = tokio::time::sleep(DEAD_LETTER_RETRY) => {}
            }
        }
    }

    /// Asks the event loop to dead-letter `seq` and waits for its answer; `None` on shutdown.
    async fn dead_letter(&self, seq: u64, code: &str) -> Result<Option<Written>, WorkerError> {
        let (done, answer) = oneshot::channel();
        let letter = Input::DeadLettered {
            seq,
            code: code.to_owned(),
            done,
        };
        if let Next::Stop = self.send(letter).await? {
            return Ok(None);
        }
        tokio::select! {
            () = self.cancel.cancelled() => Ok(None),
            written = answer => match written {
                Ok(written) => Ok(Some(written)),
                Err(_) => self.gone().map(|_| None),
            },
        }
    }

    /// The newest seq the agent has: its newest queued event (`last`, sent, at least).
    fn newest(&self, last: u64) -> Result<u64, WorkerError> {
        let newest = self
            .ctx
            .reader
            .last_seq()
            .map_err(|e| WorkerError::Queue(e.to_string()))?;
        Ok(newest.unwrap_or(last).max(last))
    }

    /// Asks the event loop for a snapshot and goes on from it.
    async fn resync(&mut self, log_end: u64, cause: ResyncCause) -> Result<Next, WorkerError> {
        let (done, answer) = oneshot::channel();
        let input = Input::Resync {
            log_end,
            cause,
            done: Some(done),
        };
        if let Next::Stop = self.send(input).await? {
            return Ok(Next::Stop);
        }
        let seq = tokio::select! {
            () = self.cancel.cancelled() => return Ok(Next::Stop),
            seq = answer => seq,
        };
        match seq {
            Ok(Some(seq)) => {
                // Everything before the snapshot is covered by it.
                self.acked = self.acked.max(seq.saturating_sub(1));
                self.one_by_one_through = 0;
                Ok(Next::Now)
            }
            // The state machine refused (it said why in the log): try again later.
            Ok(None) => Ok(Next::After(BACKOFF_CAP)),
            Err(_) => self.gone(),
        }
    }

    async fn send(&self, input: Input) -> Result<Next, WorkerError> {
        match self.inputs.send(input).await {
            Ok(()) => Ok(Next::Now),
            Err(_) => self.gone(),
        }
    }

    /// The event loop is gone: a shutdown, or a fault when nobody asked for one.
    fn gone(&self) -> Result<Next, WorkerError> {
        if self.cancel.is_cancelled() {
            Ok(Next::Stop)
        } else {
            Err(WorkerError::LoopStopped)
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

#[cfg(test)]
mod tests;
