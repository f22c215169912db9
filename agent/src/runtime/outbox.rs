//! The event loop's outboxes: commands made durable but not yet taken by their worker. The
//! loop never waits for a worker; a command waits here, in order, until the worker's bounded
//! channel has a slot.

use std::collections::VecDeque;

use fleetnode_state_machine::Command;
use tokio::sync::mpsc;
use tracing::{debug, error};

/// Commands waiting for one worker beyond which the loop says the worker looks stuck. The
/// machine never has more than a handful outstanding; the outbox is never cut, since dropping
/// a command would strand the host.
pub(super) const OUTBOX_ALARM: usize = 32;

/// Which worker an outbox feeds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Worker {
    /// The activation worker.
    Activation,
    /// The probe worker.
    Probes,
}

/// Commands made durable but not yet taken by their worker, in order.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) activation: VecDeque<Command>,
    pub(super) probes: VecDeque<Command>,
    alarmed: bool,
}

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.activation.is_empty() && self.probes.is_empty()
    }

    /// Hands the first command waiting for `worker` through a reserved slot of its channel.
    pub(super) fn hand(&mut self, permit: Option<mpsc::Permit<'_, Command>>, worker: Worker) {
        let queue = match worker {
            Worker::Activation => &mut self.activation,
            Worker::Probes => &mut self.probes,
        };
        match (permit, queue.pop_front()) {
            (Some(permit), Some(command)) => permit.send(command),
            // The worker's channel is closed only at shutdown; its commands are decided
            // again from the persisted state at the next start.
            (None, Some(command)) => debug!(
                ?command,
                ?worker,
                "worker gone; command dropped at shutdown"
            ),
            (_, None) => {}
        }
    }

    pub(super) fn check(&mut self) {
        let waiting = self.activation.len().max(self.probes.len());
        if waiting > OUTBOX_ALARM && !self.alarmed {
            error!(
                waiting,
                "a worker has not taken its commands for a long time; it may be stuck"
            );
            self.alarmed = true;
        } else if waiting <= OUTBOX_ALARM / 2 {
            self.alarmed = false;
        }
    }
}
