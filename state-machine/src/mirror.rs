//! The control plane's side: a host's state rebuilt from the events its agent reports.
//!
//! [`apply`] is the mirror's one entry point. It runs the same [`crate::evolve()`] the agent
//! ran when it recorded each fact, so a mirror fed every event in seq order equals the agent's
//! [`crate::Host`]. A [`crate::Report::Snapshot`] restarts the mirror from the agent's state, whatever
//! came before it.

use crate::error::MirrorError;
use crate::evolve::evolve;
use crate::report::OutboundEvent;
use crate::state::State;

/// What applying one reported event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was new and is now part of the mirror.
    New,
    /// The event was applied before (a retried batch); nothing changed.
    Duplicate,
}

/// Applies a reported event to a mirror. An already-applied seq is a [`Applied::Duplicate`];
/// a seq beyond the next expected one is refused so the caller can wait for the missing
/// events. A [`crate::Report::Gap`] stands for the whole run of seqs it covers, a
/// [`crate::Report::Snapshot`] for every seq up to its own. On error the state is unchanged.
pub fn apply(state: &mut State, event: &OutboundEvent) -> Result<Applied, MirrorError> {
    let expected = state.host.seq + 1;
    if event.seq < expected {
        return Ok(Applied::Duplicate);
    }
    let first = event.covers_from();
    if first > expected {
        return Err(MirrorError::SeqGap {
            expected,
            got: event.seq,
        });
    }
    // `evolve` checks before it changes anything, so a refused event leaves the state as it was.
    evolve(state, event)?;
    state.host.seq = event.seq;
    state.clock = state.clock.max(event.at);
    Ok(Applied::New)
}
