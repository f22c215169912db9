//! Carrying out a directive: realise, activate, commit, and roll back when something fails.

use super::Transition;
use crate::command::{Command, SwitchAction, SwitchJob, SwitchPurpose};
use crate::error::{StaleInput, TransitionError};
use crate::event::RealiseResult;
use crate::policy::{ActivationMode, Directive, DirectiveKind, FailurePolicy};
use crate::reason::{MESSAGE_CAP, Reason, cap_head};
use crate::report::{RejectReason, Report};
use crate::state::{Host, Phase, Work};
use crate::types::{Revision, StorePath};

/// Starts a directive on a host at rest.
pub(super) fn start(
    transition: &mut Transition,
    directive: Directive,
) -> Result<(), TransitionError> {
    match directive.kind {
        DirectiveKind::Activate {
            target,
            mode,
            health,
        } => {
            let host = &transition.state.host;
            if host.system.is_committed_on(&target) {
                return transition.report(Report::AlreadyConverged {
                    revision: directive.revision,
                    target,
                });
            }
            let work = Work {
                revision: directive.revision,
                mode: mode.unwrap_or(host.policy.default_mode),
                health: host.policy.health.with(health),
                previous: last_known_good(host),
                target: target.clone(),
            };
            transition.report(Report::WorkStarted { work })?;
            transition.command(Command::Realise { target });
            Ok(())
        }
        DirectiveKind::Rollback { to } => requested_rollback(transition, directive.revision, to),
    }
}

/// A newer directive arrived while soaking or deferred: no switch runs, so the work in progress
/// gives way (an activation) or is rolled back (a rollback).
pub(super) fn supersede(
    transition: &mut Transition,
    directive: Directive,
) -> Result<(), TransitionError> {
    match directive.kind {
        DirectiveKind::Activate { .. } => {
            if let Some(work) = transition.state.host.phase.work().cloned() {
                transition.report(Report::Superseded {
                    revision: work.revision,
                    target: work.target,
                })?;
            }
            start(transition, directive)
        }
        DirectiveKind::Rollback { to } => requested_rollback(transition, directive.revision, to),
    }
}

/// The control plane asked for a rollback, and nothing is running.
fn requested_rollback(
    transition: &mut Transition,
    revision: Revision,
    to: Option<StorePath>,
) -> Result<(), TransitionError> {
    let host = &transition.state.host;
    let target = match to {
        Some(to) if host.known_good.contains(&to) => to,
        Some(to) => {
            return transition.report(Report::RollbackRejected {
                revision,
                reason: RejectReason::UnknownGeneration { to },
            });
        }
        None => {
            // Undo the latest deployment: back to where the latest work started, even when
            // that work already rolled itself back or never touched the host (then there is
            // nothing to undo). Without any work yet, the newest known-good generation other
            // than the running one.
            let newest_other = host.undo_to.as_ref().or_else(|| {
                host.known_good
                    .iter()
                    .rev()
                    .find(|path| host.system.current.as_ref() != Some(*path))
            });
            match newest_other {
                Some(path) => path.clone(),
                None => {
                    return transition.report(Report::RollbackRejected {
                        revision,
                        reason: RejectReason::NoPreviousGeneration,
                    });
                }
            }
        }
    };
    if host.phase.is_at_rest() && host.system.is_committed_on(&target) {
        // Nothing to do, and nothing is changed: a reverted or failed host keeps its reason.
        return transition.report(Report::RollbackRejected {
            revision,
            reason: RejectReason::AlreadyInPlace { to: target },
        });
    }
    let abandoned = match &host.phase {
        Phase::Soaking(p) => Some((p.work.target.clone(), p.work.revision)),
        Phase::Deferred(p) => Some((p.work.target.clone(), p.work.revision)),
        Phase::Converged(p) => Some((p.target.clone(), p.revision)),
        Phase::Idle
        | Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_)
        | Phase::Reverted(_)
        | Phase::Failed(_) => None,
    };
    start_rollback(
        transition,
        target,
        Reason::RequestedByControlPlane,
        abandoned,
        Some(revision),
    )
}

/// Realising ended.
pub(super) fn on_realised(
    transition: &mut Transition,
    target: StorePath,
    result: RealiseResult,
) -> Result<(), TransitionError> {
    let work = match &transition.state.host.phase {
        Phase::Realising(p) if p.work.target == target => p.work.clone(),
        Phase::Realising(_) => return Err(StaleInput::UnknownRealise { target }.into()),
        other @ Phase::Idle
        | other @ Phase::Activating(_)
        | other @ Phase::Soaking(_)
        | other @ Phase::Committing(_)
        | other @ Phase::Deferred(_)
        | other @ Phase::RollingBack(_)
        | other @ Phase::Converged(_)
        | other @ Phase::Reverted(_)
        | other @ Phase::Failed(_) => return Err(super::unexpected("realise-finished", other)),
    };
    match result {
        RealiseResult::Failed { message } => transition.report(Report::Failed {
            reason: Reason::RealiseFailed {
                message: cap_head(&message, MESSAGE_CAP),
            },
            target: Some(target),
            halted: false,
        }),
        RealiseResult::Realised => {
            transition.report(Report::Realised {
                target: target.clone(),
            })?;
            let newer = transition
                .state
                .host
                .desired
                .as_ref()
                .is_some_and(|d| d.revision > work.revision);
            if newer {
                // Latest wins: do not switch to a target that is already obsolete.
                return transition.report(Report::Superseded {
                    revision: work.revision,
                    target,
                });
            }
            let switch = transition.next_switch();
            let job = activation_job(&work);
            let deadline = transition
                .now
                .plus(transition.state.host.policy.activation_timeout_ms);
            transition.report(Report::ActivationStarted {
                switch,
                job: job.clone(),
                deadline,
            })?;
            transition.command(Command::RunSwitch { switch, job });
            Ok(())
        }
    }
}

/// The activation succeeded: soak, or wait for the boot.
pub(super) fn after_activation(
    transition: &mut Transition,
    work: &Work,
) -> Result<(), TransitionError> {
    let live_on_target = transition.state.host.system.current.as_ref() == Some(&work.target);
    match work.mode {
        ActivationMode::TestThenCommit | ActivationMode::Switch => start_soak(transition, work),
        ActivationMode::Boot if live_on_target => start_soak(transition, work),
        ActivationMode::Boot => {
            let reboot_requested = transition.state.host.policy.reboot_allowed;
            transition.report(Report::DeferredUntilBoot { reboot_requested })?;
            if reboot_requested {
                transition.command(Command::Reboot);
            }
            Ok(())
        }
    }
}

/// Begins (or restarts) the soak with a fresh probe epoch.
pub(super) fn start_soak(transition: &mut Transition, work: &Work) -> Result<(), TransitionError> {
    let epoch = transition.state.host.probe_epoch + 1;
    let until = transition.now.plus(work.health.soak_ms);
    transition.report(Report::SoakStarted { epoch, until })?;
    transition.command(Command::ResetProbes { epoch });
    Ok(())
}

/// Work failed: follow its failure policy.
pub(super) fn fail_work(
    transition: &mut Transition,
    work: &Work,
    reason: Reason,
) -> Result<(), TransitionError> {
    match (work.health.on_failure, &work.previous) {
        (FailurePolicy::Halt, _) => transition.report(Report::Failed {
            reason,
            target: Some(work.target.clone()),
            halted: true,
        }),
        (FailurePolicy::Rollback, None) => transition.report(Report::Failed {
            reason: Reason::NoKnownGood {
                cause: Box::new(reason),
            },
            target: Some(work.target.clone()),
            halted: false,
        }),
        (FailurePolicy::Rollback, Some(previous)) => start_rollback(
            transition,
            previous.clone(),
            reason,
            Some((work.target.clone(), work.revision)),
            None,
        ),
    }
}

pub(super) fn start_rollback(
    transition: &mut Transition,
    to: StorePath,
    reason: Reason,
    abandoned: Option<(StorePath, Revision)>,
    revision: Option<Revision>,
) -> Result<(), TransitionError> {
    let switch = transition.next_switch();
    let job = rollback_job(&transition.state.host.phase, to.clone());
    let deadline = transition
        .now
        .plus(transition.state.host.policy.rollback_timeout_ms);
    transition.report(Report::RollbackStarted {
        switch,
        job: job.clone(),
        to,
        reason,
        abandoned,
        revision,
        deadline,
    })?;
    transition.command(Command::RunSwitch { switch, job });
    Ok(())
}

/// How to go back to `to` from `phase`. Always the known-good closure's own switch script.
fn rollback_job(phase: &Phase, to: StorePath) -> SwitchJob {
    let uncommitted_test = |work: &Work| work.mode == ActivationMode::TestThenCommit;
    let (action, set_profile) = match phase {
        // test-then-commit never touched profile or boot entry before the commit.
        Phase::Activating(p) if uncommitted_test(&p.work) => (SwitchAction::Test, false),
        Phase::Soaking(p) if uncommitted_test(&p.work) => (SwitchAction::Test, false),
        // boot mode before the reboot: only the boot entry moved.
        Phase::Deferred(_) => (SwitchAction::Boot, true),
        Phase::Idle
        | Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Soaking(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_)
        | Phase::Converged(_)
        | Phase::Reverted(_)
        | Phase::Failed(_) => (SwitchAction::Switch, true),
    };
    SwitchJob {
        purpose: SwitchPurpose::Rollback,
        closure: to,
        action,
        set_profile,
    }
}

pub(super) fn activation_job(work: &Work) -> SwitchJob {
    let (action, set_profile) = match work.mode {
        ActivationMode::TestThenCommit => (SwitchAction::Test, false),
        ActivationMode::Switch => (SwitchAction::Switch, true),
        ActivationMode::Boot => (SwitchAction::Boot, true),
    };
    SwitchJob {
        purpose: SwitchPurpose::Activate,
        closure: work.target.clone(),
        action,
        set_profile,
    }
}

/// The job that commits a healthy test-then-commit target.
pub(super) fn commit_job(work: &Work) -> SwitchJob {
    SwitchJob {
        purpose: SwitchPurpose::Commit,
        closure: work.target.clone(),
        action: SwitchAction::Boot,
        set_profile: true,
    }
}

/// The rollback target for new work: the newest closure that was committed and healthy,
/// preferring what the host runs or boots when that is one.
fn last_known_good(host: &Host) -> Option<StorePath> {
    let good = |path: &Option<StorePath>| {
        path.as_ref()
            .filter(|p| host.known_good.contains(p))
            .cloned()
    };
    if let Some(current) = &host.system.current
        && host.system.is_committed_on(current)
        && host.known_good.contains(current)
    {
        return Some(current.clone());
    }
    good(&host.system.profile).or_else(|| host.known_good.last().cloned())
}
