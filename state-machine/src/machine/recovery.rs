//! Recovery: the agent started and reports what it observes; decide from that alone.

use super::Transition;
use super::switch::{on_switch_finished, verify};
use super::work::{activation_job, commit_job, fail_work, start_soak};
use crate::command::{Command, SwitchJob, SwitchPurpose};
use crate::error::TransitionError;
use crate::event::{Observation, SwitchEnd, SwitchExit, UnitState};
use crate::policy::ActivationMode;
use crate::reason::Reason;
use crate::report::{Report, SwitchVerdict};
use crate::state::{
    Activating, Committing, Converged, Deferred, Phase, RollingBack, Soaking, SystemView, Work,
};
use crate::types::SwitchId;

/// Handles [`crate::Event::Started`].
pub(super) fn on_started(
    transition: &mut Transition,
    observation: Observation,
) -> Result<(), TransitionError> {
    // Nothing seen before the start counts: the first answer of the control plane sets the
    // hold, and a pending relaunch is decided afresh from the unit.
    transition.state.control_plane_paused = None;
    transition.state.relaunch = None;
    let host = &transition.state.host;
    let rebooted = host.boot_id.is_some() && host.boot_id != observation.boot_id;
    let policy_changed = host.policy != observation.policy;
    transition.report(Report::Recovered {
        system: observation.system,
        boot_id: observation.boot_id,
        store_reset: observation.store_reset,
    })?;
    if policy_changed {
        transition.report(Report::PolicyApplied {
            policy: observation.policy,
        })?;
    }
    let seen = Seen {
        unit: observation.switch_unit,
        rebooted,
        system: transition.state.host.system.clone(),
    };
    match transition.state.host.phase.clone() {
        Phase::Idle | Phase::Reverted(_) | Phase::Failed(_) => Ok(()),
        Phase::Converged(p) => converged(transition, p, seen),
        Phase::Realising(p) => {
            transition.command(Command::Realise {
                target: p.work.target,
            });
            Ok(())
        }
        Phase::Activating(p) => activating(transition, p, seen),
        Phase::Soaking(p) => soaking(transition, p, seen),
        Phase::Committing(p) => committing(transition, p, seen),
        Phase::Deferred(p) => deferred(transition, p, seen),
        Phase::RollingBack(p) => rolling_back(transition, p, seen),
    }
}

/// What the start observed, as recovery weighs it.
struct Seen {
    /// The state of the unit of the switch in flight, when one was.
    unit: Option<UnitState>,
    /// The boot id changed since the last start.
    rebooted: bool,
    /// What the host runs now.
    system: SystemView,
}

/// Converged, unless someone switched the host by hand since (drift is reported, not fought).
fn converged(transition: &mut Transition, p: Converged, seen: Seen) -> Result<(), TransitionError> {
    if seen.system.is_committed_on(&p.target) {
        return Ok(());
    }
    transition.report(Report::Failed {
        reason: Reason::Drifted {
            expected: p.target.clone(),
            observed: seen.system.current,
        },
        target: Some(p.target),
        halted: false,
    })
}

fn activating(
    transition: &mut Transition,
    p: Activating,
    seen: Seen,
) -> Result<(), TransitionError> {
    let Seen {
        unit,
        rebooted,
        system,
    } = seen;
    match in_flight(unit, rebooted) {
        InFlight::Running => return watch(transition, p.switch),
        InFlight::Ended(end) => return on_switch_finished(transition, p.switch, end, system),
        InFlight::Unknown => {}
    }
    if verify(&p.work, &system).is_ok() {
        return on_switch_finished(transition, p.switch, completed(), system);
    }
    if !rebooted {
        // A unit keeps its result until the agent released it after persisting it, so no
        // unit and no reboot means the switch was never launched: launch it now.
        return relaunch(transition, p.switch, activation_job(&p.work), p.deadline);
    }
    if back_on_previous(&p.work, &system) {
        return revert_by_boot(transition, &p.work, Reason::RebootedDuringActivation);
    }
    transition.report(Report::SwitchEnded {
        switch: p.switch,
        purpose: SwitchPurpose::Activate,
        system,
        verdict: SwitchVerdict::Failed {
            reason: Reason::Interrupted,
        },
    })?;
    fail_work(transition, &p.work, Reason::Interrupted)
}

fn soaking(transition: &mut Transition, p: Soaking, seen: Seen) -> Result<(), TransitionError> {
    let Seen {
        rebooted, system, ..
    } = seen;
    if soaking_in_place(&p.work, &system) {
        if rebooted {
            // Health is judged again from scratch after a boot.
            return start_soak(transition, &p.work);
        }
        transition.command(Command::ResetProbes {
            epoch: transition.state.host.probe_epoch,
        });
        return Ok(());
    }
    if rebooted && back_on_previous(&p.work, &system) {
        return revert_by_boot(transition, &p.work, Reason::RebootedDuringSoak);
    }
    let reason = if rebooted {
        Reason::BootedOtherGeneration {
            booted: system.booted,
        }
    } else {
        // Name what moved: the live system, or else the boot entry.
        let observed = if system.current.as_ref() == Some(&p.work.target) {
            system.profile
        } else {
            system.current
        };
        Reason::Drifted {
            expected: p.work.target.clone(),
            observed,
        }
    };
    fail_work(transition, &p.work, reason)
}

fn committing(
    transition: &mut Transition,
    p: Committing,
    seen: Seen,
) -> Result<(), TransitionError> {
    let Seen {
        unit,
        rebooted,
        system,
    } = seen;
    match in_flight(unit, rebooted) {
        InFlight::Running => return watch(transition, p.switch),
        InFlight::Ended(end) => return on_switch_finished(transition, p.switch, end, system),
        InFlight::Unknown => {}
    }
    if system.is_committed_on(&p.work.target) {
        return on_switch_finished(transition, p.switch, completed(), system);
    }
    if !rebooted {
        return relaunch(transition, p.switch, commit_job(&p.work), p.deadline);
    }
    if back_on_previous(&p.work, &system) {
        return revert_by_boot(transition, &p.work, Reason::RebootedDuringCommit);
    }
    on_switch_finished(transition, p.switch, completed(), system)
}

fn deferred(transition: &mut Transition, p: Deferred, seen: Seen) -> Result<(), TransitionError> {
    let Seen {
        rebooted, system, ..
    } = seen;
    if system.is_committed_on(&p.work.target) {
        return start_soak(transition, &p.work);
    }
    if rebooted {
        let reason = Reason::BootedOtherGeneration {
            booted: system.booted,
        };
        return fail_work(transition, &p.work, reason);
    }
    if system.profile.as_ref() != Some(&p.work.target) {
        // The boot entry was moved by hand: the reboot would not bring the target.
        let reason = Reason::Drifted {
            expected: p.work.target.clone(),
            observed: system.profile,
        };
        return fail_work(transition, &p.work, reason);
    }
    if p.reboot_requested {
        transition.command(Command::Reboot);
    }
    Ok(())
}

fn rolling_back(
    transition: &mut Transition,
    p: RollingBack,
    seen: Seen,
) -> Result<(), TransitionError> {
    let Seen {
        unit,
        rebooted,
        system,
    } = seen;
    if let Some(replaced) = p.replaces {
        // Stopping it may not have happened before the agent went down; a hung switch would
        // hold the switch lock against the rollback. Stopping twice is harmless.
        transition.command(Command::AbortSwitch { switch: replaced });
    }
    match in_flight(unit, rebooted) {
        InFlight::Running => return watch(transition, p.switch),
        InFlight::Ended(end) => return on_switch_finished(transition, p.switch, end, system),
        InFlight::Unknown => {}
    }
    if system.current.as_ref() == Some(&p.to) || rebooted {
        return on_switch_finished(transition, p.switch, completed(), system);
    }
    relaunch(transition, p.switch, p.job, p.deadline)
}

/// Launches a switch whose start was recorded but which never ran, under its recorded id;
/// unless its deadline already passed, in which case the timeout decides (right after recovery).
fn relaunch(
    transition: &mut Transition,
    switch: SwitchId,
    job: SwitchJob,
    deadline: crate::time::Timestamp,
) -> Result<(), TransitionError> {
    if transition.now < deadline {
        transition.command(Command::RunSwitch { switch, job });
    }
    Ok(())
}

/// What is known about a switch that was in flight when the agent stopped.
enum InFlight {
    /// Its unit still runs: follow it.
    Running,
    /// Its unit exited and the exit is known.
    Ended(SwitchEnd),
    /// No trace of it (collected, or the host rebooted): decide from what the host runs.
    Unknown,
}

fn in_flight(unit: Option<UnitState>, rebooted: bool) -> InFlight {
    if rebooted {
        // A transient unit does not survive a reboot; whatever is reported is from before it.
        return InFlight::Unknown;
    }
    match unit {
        Some(UnitState::Running) => InFlight::Running,
        Some(UnitState::Exited(exit)) => InFlight::Ended(SwitchEnd::Exited(exit)),
        Some(UnitState::Gone) | None => InFlight::Unknown,
    }
}

/// A switch found done by what the host runs, without a unit to tell how it exited.
fn completed() -> SwitchEnd {
    SwitchEnd::Exited(SwitchExit {
        code: Some(0),
        output_tail: String::new(),
    })
}

fn watch(transition: &mut Transition, switch: SwitchId) -> Result<(), TransitionError> {
    transition.command(Command::WatchSwitch { switch });
    Ok(())
}

/// The soaking target is where the mode put it: live, and for switch and boot modes also the
/// profile (boot entry).
fn soaking_in_place(work: &Work, system: &SystemView) -> bool {
    match work.mode {
        ActivationMode::TestThenCommit => system.current.as_ref() == Some(&work.target),
        ActivationMode::Switch | ActivationMode::Boot => system.is_committed_on(&work.target),
    }
}

/// The host booted back into the generation it ran before the work began (profile included).
fn back_on_previous(work: &Work, system: &SystemView) -> bool {
    work.previous
        .as_ref()
        .is_some_and(|previous| system.is_committed_on(previous))
}

/// A reboot already put the host back on its known-good generation: no switch is needed.
fn revert_by_boot(
    transition: &mut Transition,
    work: &Work,
    reason: Reason,
) -> Result<(), TransitionError> {
    let Some(previous) = work.previous.clone() else {
        return Ok(());
    };
    transition.report(Report::Reverted {
        to: previous,
        reason,
        abandoned: Some((work.target.clone(), work.revision)),
    })
}
