//! The long-poll worker: follows the host's desired state.
//!
//! It asks with the revision it last applied (none after a start, so the server answers at
//! once), reconnects as soon as an answer arrives, and backs off on errors. A changed answer
//! becomes `DirectiveReceived` (the state machine ignores a repeat of a recorded revision) and,
//! when the control plane's `paused` flag flips (or on the first answer) and differs from the
//! state, `PauseRequested`/`ResumeRequested`. A local pause through the admin listener therefore
//! holds until the control plane changes its own flag or the agent restarts.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, Revision};
use fleetnode_wire::DesiredAnswer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::{Client, LONGPOLL_WAIT_SECS, retry_plan};
use crate::backoff::Backoff;
use crate::input::{Input, InputSender, WorkerError};
use crate::runtime::status::Snapshot;

/// First delay after a failed poll.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay between polls (also the pace for credential and version errors).
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Runs until `cancel`.
pub async fn run(
    client: Arc<Client>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let mut known: Option<Revision> = None;
    let mut control_plane_paused: Option<bool> = None;
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    loop {
        let answer = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            answer = client.desired(known, LONGPOLL_WAIT_SECS) => answer,
        };
        let delay = match answer {
            Ok(answer) => {
                backoff.reset();
                if answer.changed || known.is_none() {
                    let paused = snapshot.borrow().paused;
                    let flipped = control_plane_paused != Some(answer.desired.paused);
                    control_plane_paused = Some(answer.desired.paused);
                    for input in inputs_for(&answer, flipped, paused) {
                        inputs
                            .send(input)
                            .await
                            .map_err(|_| WorkerError::new("the reducer stopped"))?;
                    }
                }
                debug!(revision = %answer.desired.revision, changed = answer.changed, "desired state");
                known = Some(answer.desired.revision);
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

/// The inputs one answer produces, in order: a pause before the directive (so nothing starts),
/// a resume after it.
fn inputs_for(answer: &DesiredAnswer, flipped: bool, state_paused: bool) -> Vec<Input> {
    let mut out = Vec::new();
    let wanted = answer.desired.paused;
    let toggle = flipped && wanted != state_paused;
    if toggle && wanted {
        out.push(Input::Event(Event::PauseRequested));
    }
    if let Some(directive) = &answer.desired.directive {
        out.push(Input::Event(Event::DirectiveReceived(directive.clone())));
    }
    if toggle && !wanted {
        out.push(Input::Event(Event::ResumeRequested));
    }
    out
}

#[cfg(test)]
mod tests;
