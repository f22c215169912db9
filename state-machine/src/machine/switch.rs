//! The end of a switch: the verdict on how it went, and a switch that found the switch lock
//! taken by another (launched again, not failed).

use super::work::{activation_job, after_activation, commit_job, fail_work};
use super::{Transition, unexpected};
use crate::command::{Command, SwitchJob, SwitchPurpose};
use crate::error::{StaleInput, TransitionError};
use crate::event::{SwitchEnd, SwitchExit};
use crate::policy::ActivationMode;
use crate::reason::{MESSAGE_CAP, OUTPUT_TAIL_CAP, Reason, cap_head, cap_tail};
use crate::report::{Report, SwitchVerdict};
use crate::state::{Phase, Relaunch, SystemView, Work};
use crate::time::Millis;
use crate::types::{StorePath, SwitchId};

/// Exit code of `switch-to-configuration` when the system switched but some units failed.
pub const EXIT_UNITS_FAILED: i32 = 4;
/// What `switch-to-configuration` prints when another switch (a manual `nixos-rebuild`) holds
/// `/run/nixos/switch-to-configuration.lock`; it then exits non-zero having changed nothing.
pub const LOCK_CONTENTION: &str = "Could not acquire lock";
/// How long a switch that found the switch lock taken waits before it is launched again. The
/// switch's own deadline keeps running meanwhile.
pub const SWITCH_LOCK_RETRY: Millis = Millis(1_000);

/// A switch the agent launched has ended (or did not start).
pub(super) fn on_switch_finished(
    transition: &mut Transition,
    switch: SwitchId,
    end: SwitchEnd,
    system: SystemView,
) -> Result<(), TransitionError> {
    let running = transition.state.host.phase.running_switch();
    if running != Some(switch) {
        return Err(StaleInput::UnknownSwitch {
            got: switch,
            running,
        }
        .into());
    }
    if lost_the_lock(&end) {
        // Another switch is running: that is no failure of ours. Release the unit that kept
        // the refusal (a switch not started has none) and launch again shortly; the deadline
        // decides if the lock never frees.
        if let SwitchEnd::Exited(_) = end {
            transition.command(Command::ReleaseSwitch { switch });
        }
        transition.state.relaunch = Some(Relaunch {
            switch,
            at: transition.now.plus(SWITCH_LOCK_RETRY),
        });
        return Ok(());
    }
    transition.state.relaunch = None;
    judge_end(transition, switch, &end, system)
}

/// Launches a switch that found the lock taken, once its time has come.
pub(super) fn relaunch_when_due(transition: &mut Transition) -> Result<(), TransitionError> {
    let Some(relaunch) = transition.state.relaunch else {
        return Ok(());
    };
    let Some(job) = running_job(&transition.state.host.phase, relaunch.switch) else {
        // The switch is no longer in flight (it timed out): nothing to launch.
        transition.state.relaunch = None;
        return Ok(());
    };
    if transition.now >= relaunch.at {
        transition.state.relaunch = None;
        transition.command(Command::RunSwitch {
            switch: relaunch.switch,
            job,
        });
    }
    Ok(())
}

/// The job of the switch in flight, if `switch` is it.
fn running_job(phase: &Phase, switch: SwitchId) -> Option<SwitchJob> {
    match phase {
        Phase::Activating(p) if p.switch == switch => Some(activation_job(&p.work)),
        Phase::Committing(p) if p.switch == switch => Some(commit_job(&p.work)),
        Phase::RollingBack(p) if p.switch == switch => Some(p.job.clone()),
        Phase::Idle
        | Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Soaking(_)
        | Phase::Committing(_)
        | Phase::Deferred(_)
        | Phase::RollingBack(_)
        | Phase::Converged(_)
        | Phase::Reverted(_)
        | Phase::Failed(_) => None,
    }
}

/// The switch did nothing because another switch held the lock: it was not started, or its
/// script refused with [`LOCK_CONTENTION`]. Exit 0 and exit 4 are no refusal even when a
/// failed unit's log (which exit 4 prints) happens to contain those words.
fn lost_the_lock(end: &SwitchEnd) -> bool {
    match end {
        SwitchEnd::LockHeld => true,
        SwitchEnd::Exited(exit) => {
            !matches!(exit.code, Some(0) | Some(EXIT_UNITS_FAILED))
                && exit.output_tail.contains(LOCK_CONTENTION)
        }
        SwitchEnd::Vanished | SwitchEnd::NotLaunched { .. } => false,
    }
}

/// Reports the verdict on a switch that ran, then what follows from it.
fn judge_end(
    transition: &mut Transition,
    switch: SwitchId,
    end: &SwitchEnd,
    system: SystemView,
) -> Result<(), TransitionError> {
    let phase = transition.state.host.phase.clone();
    let (purpose, in_place) = match &phase {
        Phase::Activating(p) => (SwitchPurpose::Activate, verify(&p.work, &system)),
        Phase::Committing(p) => (
            SwitchPurpose::Commit,
            if system.is_committed_on(&p.work.target) {
                Ok(())
            } else {
                Err((p.work.target.clone(), system.profile.clone()))
            },
        ),
        Phase::RollingBack(p) => (
            SwitchPurpose::Rollback,
            if system.current.as_ref() == Some(&p.to) {
                Ok(())
            } else {
                Err((p.to.clone(), system.current.clone()))
            },
        ),
        other @ Phase::Idle
        | other @ Phase::Realising(_)
        | other @ Phase::Soaking(_)
        | other @ Phase::Deferred(_)
        | other @ Phase::Converged(_)
        | other @ Phase::Reverted(_)
        | other @ Phase::Failed(_) => return Err(unexpected("switch-finished", other)),
    };
    let verdict = judge(end, in_place);
    transition.report(Report::SwitchEnded {
        switch,
        purpose,
        system,
        verdict: verdict.clone(),
    })?;
    transition.command(Command::ReleaseSwitch { switch });
    let failure = match verdict {
        SwitchVerdict::Failed { reason } => Some(reason),
        SwitchVerdict::Succeeded | SwitchVerdict::SucceededWithWarnings { .. } => None,
    };
    match phase {
        Phase::Activating(p) => match failure {
            Some(reason) => fail_work(transition, &p.work, reason),
            None => after_activation(transition, &p.work),
        },
        Phase::Committing(p) => match failure {
            Some(reason) => fail_work(transition, &p.work, reason),
            None => transition.report(Report::Converged {
                revision: p.work.revision,
                target: p.work.target,
            }),
        },
        Phase::RollingBack(p) => match failure {
            Some(reason) => transition.report(Report::Failed {
                reason: Reason::RollbackFailed {
                    cause: Box::new(reason),
                },
                target: p.abandoned.map(|(target, _)| target),
                halted: false,
            }),
            None => transition.report(Report::Reverted {
                to: p.to,
                reason: p.reason,
                abandoned: p.abandoned,
            }),
        },
        other @ Phase::Idle
        | other @ Phase::Realising(_)
        | other @ Phase::Soaking(_)
        | other @ Phase::Deferred(_)
        | other @ Phase::Converged(_)
        | other @ Phase::Reverted(_)
        | other @ Phase::Failed(_) => Err(unexpected("switch-finished", &other)),
    }
}

/// The verdict on a switch from how it ended and whether the host is where it should be.
/// Exit code 4 with the host in place is a success with warnings: some units failed, and the
/// probes decide whether that matters.
fn judge(end: &SwitchEnd, in_place: Result<(), (StorePath, Option<StorePath>)>) -> SwitchVerdict {
    let failed = |exit_code, output_tail: &str| SwitchVerdict::Failed {
        reason: Reason::SwitchFailed {
            exit_code,
            output_tail: cap_tail(output_tail, OUTPUT_TAIL_CAP),
        },
    };
    match (end, in_place) {
        (SwitchEnd::Exited(SwitchExit { code: Some(0), .. }), Ok(())) => SwitchVerdict::Succeeded,
        (SwitchEnd::Exited(SwitchExit { code: Some(0), .. }), Err((expected, observed))) => {
            SwitchVerdict::Failed {
                reason: Reason::VerificationFailed { expected, observed },
            }
        }
        (
            SwitchEnd::Exited(SwitchExit {
                code: Some(EXIT_UNITS_FAILED),
                output_tail,
            }),
            Ok(()),
        ) => SwitchVerdict::SucceededWithWarnings {
            output_tail: cap_tail(output_tail, OUTPUT_TAIL_CAP),
        },
        (SwitchEnd::Exited(SwitchExit { code, output_tail }), _) => failed(*code, output_tail),
        (SwitchEnd::Vanished, _) => SwitchVerdict::Failed {
            reason: Reason::SwitchVanished,
        },
        (SwitchEnd::NotLaunched { error }, _) => SwitchVerdict::Failed {
            reason: Reason::SwitchNotLaunched {
                error: cap_head(error, MESSAGE_CAP),
            },
        },
        // Handled before a verdict is asked for; should it reach here, it did not switch.
        (SwitchEnd::LockHeld, _) => failed(None, LOCK_CONTENTION),
    }
}

/// Is the host where the activation should have put it?
pub(super) fn verify(
    work: &Work,
    system: &SystemView,
) -> Result<(), (StorePath, Option<StorePath>)> {
    let target = &work.target;
    let live = system.current.as_ref() == Some(target);
    let profile = system.profile.as_ref() == Some(target);
    let mismatch = match work.mode {
        ActivationMode::TestThenCommit if live => None,
        ActivationMode::TestThenCommit => Some(system.current.clone()),
        ActivationMode::Switch if live && profile => None,
        ActivationMode::Switch if live => Some(system.profile.clone()),
        ActivationMode::Switch => Some(system.current.clone()),
        ActivationMode::Boot if profile => None,
        ActivationMode::Boot => Some(system.profile.clone()),
    };
    match mismatch {
        None => Ok(()),
        Some(observed) => Err((target.clone(), observed)),
    }
}
