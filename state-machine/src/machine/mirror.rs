//! The control plane's side: apply reported events in seq order.

use super::Tx;
use crate::error::TransitionError;
use crate::evolve::evolve;
use crate::report::{OutboundEvent, Report};

/// Applies a reported event to a mirror. Already-applied seqs are acknowledged and ignored; a
/// seq beyond the next expected one is refused so the caller can wait for the missing events.
/// A [`Report::Gap`] stands for the whole run of seqs it covers.
pub(super) fn apply(tx: &mut Tx, event: OutboundEvent) -> Result<(), TransitionError> {
    let expected = tx.state.host.seq + 1;
    if event.seq < expected {
        return Ok(());
    }
    let first = match &event.report {
        Report::Gap { from_seq, .. } => *from_seq,
        Report::Recovered { .. }
        | Report::PolicyApplied { .. }
        | Report::DirectiveRecorded { .. }
        | Report::Paused
        | Report::Resumed
        | Report::AlreadyConverged { .. }
        | Report::WorkStarted { .. }
        | Report::Realised { .. }
        | Report::ActivationStarted { .. }
        | Report::SwitchEnded { .. }
        | Report::SoakStarted { .. }
        | Report::DeferredUntilBoot { .. }
        | Report::ProbeObserved { .. }
        | Report::CommitStarted { .. }
        | Report::Converged { .. }
        | Report::RollbackStarted { .. }
        | Report::Reverted { .. }
        | Report::Failed { .. }
        | Report::Superseded { .. }
        | Report::RollbackRejected { .. } => event.seq,
    };
    if first > expected {
        return Err(TransitionError::SeqGap {
            expected,
            got: event.seq,
        });
    }
    evolve(&mut tx.state, &event)?;
    tx.state.host.seq = event.seq;
    Ok(())
}
