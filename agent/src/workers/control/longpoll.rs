//! The long-poll worker: follows the host's desired state.
//!
//! It asks with the revision it last saw (none after a start, so the server answers at once)
//! and backs off on errors. Every answer becomes [`Event::DesiredObserved`], changed or not:
//! what changed (a new directive, the control plane's hold) is the state machine's call.
//!
//! Pacing: an answer with a new revision is followed by the next poll at once. An answer that
//! brings no new revision (`changed: false`, or `changed: true` with the revision the agent
//! sent as `known`: the agent judges by the revision, never by the flag) is *early* when the
//! server answered it in less than half the wait the agent asked for. After an early answer the
//! next poll starts no sooner than [`Pace`] after this one began: 1 s, doubling with each early
//! answer in a row up to 60 s, and back to 1 s after an answer with a new revision or one the
//! server held. A server that answers every poll at once therefore gets one poll a minute from
//! each host, not one per round trip.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, Revision};
use tokio::time::Instant;
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
/// Shortest time between the starts of two polls when the first was answered early.
pub const PACE_MIN: Duration = Duration::from_secs(1);
/// Longest time between the starts of two polls answered early: the backoff cap.
pub const PACE_MAX: Duration = BACKOFF_CAP;

/// Runs until `cancel`.
pub async fn run(
    client: Arc<Client>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let mut known: Option<Revision> = None;
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut pace = Pace::default();
    loop {
        let began = Instant::now();
        let answer = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            answer = client.desired(known, LONGPOLL_WAIT_SECS) => answer,
        };
        let delay = match answer {
            Ok(answer) => {
                backoff.reset();
                let revision = answer.desired.revision;
                debug!(%revision, changed = answer.changed, "desired state");
                let new_revision = known != Some(revision);
                known = Some(revision);
                let event = Input::Event(Event::DesiredObserved(answer.desired));
                inputs
                    .send(event)
                    .await
                    .map_err(|_| WorkerError::LoopStopped)?;
                pace.after_answer(new_revision, began.elapsed())
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
        if delay.is_zero() {
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// The minimum interval between polls that bring no new revision (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// What the next early answer costs.
    next: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self { next: PACE_MIN }
    }
}

impl Pace {
    /// How long to wait before the next poll, after an answer that took `took`.
    pub fn after_answer(&mut self, new_revision: bool, took: Duration) -> Duration {
        let held = took >= Duration::from_secs(LONGPOLL_WAIT_SECS) / 2;
        if new_revision || held {
            *self = Self::default();
            return Duration::ZERO;
        }
        let wait = self.next.saturating_sub(took);
        self.next = (self.next * 2).min(PACE_MAX);
        wait
    }
}

#[cfg(test)]
mod tests;
