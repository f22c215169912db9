//! What the control plane and the operator ask for: the desired state, the hold, and when the
//! latest directive may start. Also the agent's own restart into a new version.

use super::{Transition, work};
use crate::command::Command;
use crate::error::{PeerFault, TransitionError};
use crate::policy::{DesiredState, Directive};
use crate::report::{Report, ResyncCause};
use crate::state::Phase;

/// An answer of the control plane. Its hold flag counts only when it changed since the last
/// answer (or on the first answer after a start), so a local pause holds until the control
/// plane changes its own flag; its directive is recorded unless already known (latest wins).
///
/// A pause is recorded before the directive (so nothing starts) and a resume after it.
pub(super) fn on_desired(
    transition: &mut Transition,
    desired: DesiredState,
) -> Result<(), TransitionError> {
    let flipped = transition.state.control_plane_paused != Some(desired.paused);
    transition.state.control_plane_paused = Some(desired.paused);
    let toggle = flipped && desired.paused != transition.state.host.paused;
    if toggle && desired.paused {
        transition.report(Report::Paused)?;
    }
    if let Some(directive) = desired.directive {
        match on_directive(transition, directive) {
            Ok(()) => {}
            // The hold still changes. The next answer repeats the directive without a change
            // of the flag, and is refused whole, so the refusal is not lost.
            Err(_) if flipped => {}
            Err(refused) => return Err(refused),
        }
    }
    if toggle && !desired.paused {
        transition.report(Report::Resumed)?;
    }
    Ok(())
}

/// Highest seq a snapshot may jump to: far beyond any real stream (a host emitting a thousand
/// events a second needs 35 years to reach 2^40), far below where seqs would overflow.
pub const MAX_SEQ: u64 = 1 << 40;

/// The control plane cannot follow the events: report a snapshot of the mirrored state for it
/// to restart from. Its seq is above the agent's own and above the control plane's log, so it
/// is new to both (seqs stay increasing; the snapshot covers every seq before it).
pub(super) fn resync(
    transition: &mut Transition,
    log_end: u64,
    cause: ResyncCause,
) -> Result<(), TransitionError> {
    let seq = transition.state.host.seq;
    if log_end > MAX_SEQ {
        return Err(PeerFault::ImplausibleLogEnd { log_end, seq }.into());
    }
    transition.state.host.seq = seq.max(log_end);
    let host = Box::new(transition.state.host.clone());
    let probes = transition.state.probes.clone();
    transition.report(Report::Snapshot {
        host,
        probes,
        cause,
    })
}

/// The operator's local hold (`true`) or its end.
pub(super) fn hold(transition: &mut Transition, paused: bool) -> Result<(), TransitionError> {
    match (paused, transition.state.host.paused) {
        (true, false) => transition.report(Report::Paused),
        (false, true) => transition.report(Report::Resumed),
        (true, true) | (false, false) => Ok(()),
    }
}

fn on_directive(transition: &mut Transition, directive: Directive) -> Result<(), TransitionError> {
    match &transition.state.host.desired {
        Some(recorded) if recorded.revision > directive.revision => {
            Err(PeerFault::StaleDirective {
                got: directive.revision,
                recorded: recorded.revision,
            }
            .into())
        }
        Some(recorded) if recorded.revision == directive.revision => {
            if *recorded == directive {
                Ok(())
            } else {
                Err(PeerFault::ConflictingDirective {
                    revision: directive.revision,
                }
                .into())
            }
        }
        Some(_) | None => transition.report(Report::DirectiveRecorded { directive }),
    }
}

/// The agent carried by the live generation differs from the running one: restart into it,
/// unless new work began meanwhile (the next convergence checks again).
pub(super) fn on_upgrade_checked(transition: &mut Transition, upgrade: Option<String>) {
    if let Some(reason) = upgrade
        && transition.state.host.phase.is_at_rest()
    {
        transition.command(Command::Restart { reason });
    }
}

/// Starts the latest directive when nothing stands in its way: the host is not paused, the
/// directive was not handled yet, and no step is running.
pub(super) fn advance(transition: &mut Transition) -> Result<(), TransitionError> {
    let host = &transition.state.host;
    if host.paused {
        return Ok(());
    }
    let Some(desired) = host.desired.clone() else {
        return Ok(());
    };
    if host
        .handled
        .is_some_and(|handled| handled >= desired.revision)
    {
        return Ok(());
    }
    match &host.phase {
        Phase::Idle | Phase::Converged(_) | Phase::Reverted(_) | Phase::Failed(_) => {
            work::start(transition, desired)
        }
        Phase::Soaking(_) | Phase::Deferred(_) => work::supersede(transition, desired),
        Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_) => Ok(()),
    }
}
