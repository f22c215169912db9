//! The inputs a worker sends besides the state machine's events: acknowledgements, dead
//! letters, requests for a snapshot and for the status. Those whose sender waits on the loop's
//! write are answered on their oneshot once the write is durable.

use fleetnode_state_machine::{Event, ResyncCause, queue};
use tokio::sync::oneshot;
use tracing::{debug, error};

use super::{Cancelled, EventLoop};
use crate::input::{Input, Written};
use crate::runtime::record::log_report;
use crate::store::DeadLetterOutcome;

impl EventLoop {
    /// Handles one input.
    pub async fn handle(&mut self, input: Input) -> Result<(), Cancelled> {
        match input {
            Input::Event(event) => self.event(event).await,
            Input::Acked { through } => {
                match self.store.ack(through) {
                    Ok(removed) => debug!(through, removed, "events acknowledged"),
                    Err(e) => error!(through, error = %e, "cannot drop acknowledged events"),
                }
                self.publish();
                Ok(())
            }
            Input::DeadLettered { seq, code, done } => {
                let written = self.dead_letter(seq, &code).await?;
                // The drainer may have stopped meanwhile; nothing to do then.
                let _ = done.send(written);
                self.publish();
                Ok(())
            }
            Input::Resync {
                log_end,
                cause,
                done,
            } => self.resync(log_end, cause, done).await,
            Input::Status(reply) => {
                // The asker may have given up waiting; nothing to do then.
                let _ = reply.send(self.status());
                Ok(())
            }
        }
    }

    /// Moves a refused event to the dead letters, its gap in its place, and records a snapshot
    /// when the refused event was one the control plane's mirror cannot do without.
    async fn dead_letter(&mut self, seq: u64, code: &str) -> Result<Written, Cancelled> {
        let now = self.clock.now();
        let refused = self.store.reader().get(seq).ok().flatten();
        match self.store.dead_letter(seq, code, now) {
            Ok(DeadLetterOutcome::Moved(gap)) => {
                log_report(&gap, self.state.host.phase.name());
                self.drainer.notify_one();
                if refused.is_some_and(|event| queue::dead_letter_needs_snapshot(&event)) {
                    let cause = ResyncCause::DeadLettered { seq };
                    self.resync(0, cause, None).await?;
                }
                Ok(Written::Done)
            }
            Ok(DeadLetterOutcome::NotQueued) => {
                debug!(seq, "dead letter for an event no longer queued");
                Ok(Written::Done)
            }
            Err(e) => {
                error!(seq, error = %e, "cannot move the event to the dead letters");
                Ok(Written::Failed)
            }
        }
    }

    /// Records a snapshot for the control plane (see `docs/protocol.md`, "Resync") and tells
    /// `done` its seq once it is durable.
    async fn resync(
        &mut self,
        log_end: u64,
        cause: ResyncCause,
        done: Option<oneshot::Sender<Option<u64>>>,
    ) -> Result<(), Cancelled> {
        let before = self.state.host.seq;
        self.event(Event::ResyncRequested { log_end, cause })
            .await?;
        let seq = (self.state.host.seq > before).then_some(self.state.host.seq);
        if let Some(done) = done {
            // The drainer may have stopped meanwhile; nothing to do then.
            let _ = done.send(seq);
        }
        Ok(())
    }
}
