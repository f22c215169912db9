//! The long-poll worker: follows the host's desired state.
//!
//! It asks with the revision it last saw (none after a start, so the server answers at once),
//! asks again as soon as an answer arrives, and backs off on errors. Every answer becomes
//! [`Event::DesiredObserved`], changed or not: what changed (a new directive, the control
//! plane's hold) is the state machine's call.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, Revision};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::{Client, LONGPOLL_WAIT_SECS, retry_plan};
use crate::backoff::Backoff;
use crate::input::{Input, InputSender, WorkerError};

/// This worker's name in statuses.
pub const NAME: &str = "longpoll";
/// First delay after a failed poll.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between polls (also the pace for credential and version errors).
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Runs until `cancel`.
pub async fn run(
    client: Arc<Client>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let mut known: Option<Revision> = None;
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    loop {
        let answer = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            answer = client.desired(known, LONGPOLL_WAIT_SECS) => answer,
        };
        let delay = match answer {
            Ok(answer) => {
                backoff.reset();
                debug!(revision = %answer.desired.revision, changed = answer.changed, "desired state");
                known = Some(answer.desired.revision);
                let event = Input::Event(Event::DesiredObserved(answer.desired));
                inputs
                    .send(event)
                    .await
                    .map_err(|_| WorkerError::new("the event loop stopped"))?;
                continue;
            }
            Err(e) => {
                let retry = retry_plan(&e, &mut backoff);
                let retry_in_ms = retry.delay.as_millis() as u64;
                if retry.needs_a_person {
                    error!(error = %e, retry_in_ms, "{}", retry.advice);
                } else {
                    warn!(error = %e, retry_in_ms, "{}", retry.advice);
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

#[cfg(test)]
mod tests;
