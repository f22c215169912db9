//! Health during the soak: probe results in, a verdict out.

use super::Transition;
use super::work::{commit_job, fail_work};
use crate::command::Command;
use crate::error::{Bug, StaleInput, TransitionError};
use crate::event::ProbeResult;
use crate::policy::ActivationMode;
use crate::reason::{MESSAGE_CAP, Reason, cap_head};
use crate::report::Report;
use crate::state::Phase;

/// Records a probe result. Only a change of status (or the first result of an epoch) is
/// reported, so a steady probe costs nothing downstream.
pub(super) fn on_probe_result(
    transition: &mut Transition,
    result: ProbeResult,
) -> Result<(), TransitionError> {
    let host = &transition.state.host;
    if host.policy.mode_of(&result.probe).is_none() {
        return Err(Bug::UnknownProbe {
            probe: result.probe,
        }
        .into());
    }
    if result.epoch != host.probe_epoch {
        return Err(StaleInput::StaleProbeResult {
            probe: result.probe,
            got: result.epoch,
            current: host.probe_epoch,
        }
        .into());
    }
    let changed = match transition.state.probes.records.get(&result.probe) {
        None => true,
        Some(record) => record.failing_since.is_some() == result.passed,
    };
    if changed {
        transition.report(Report::ProbeObserved {
            epoch: result.epoch,
            probe: result.probe,
            passed: result.passed,
            detail: cap_head(&result.detail, MESSAGE_CAP),
        })?;
    }
    evaluate(transition)
}

/// Decides the soak when the host is soaking: fail on a sustained failure of an enforce probe;
/// pass when the soak time is over, every enforce probe has passed in this epoch and none is
/// failing right now. Observe-mode probes never count.
pub(super) fn evaluate(transition: &mut Transition) -> Result<(), TransitionError> {
    let Phase::Soaking(soaking) = transition.state.host.phase.clone() else {
        return Ok(());
    };
    let work = soaking.work;
    let now = transition.now;
    let enforced = transition.state.host.policy.enforced();
    let mut all_passing = true;
    for probe in enforced {
        let record = transition
            .state
            .probes
            .records
            .get(&probe)
            .cloned()
            .unwrap_or_default();
        if let Some(failing_for) = record.failing_for(now)
            && failing_for >= work.health.sustained_failure_ms
        {
            return fail_work(
                transition,
                &work,
                Reason::ProbeFailed { probe, failing_for },
            );
        }
        all_passing &= record.passed && record.failing_since.is_none();
    }
    if now < soaking.until || !all_passing {
        return Ok(());
    }
    match work.mode {
        ActivationMode::TestThenCommit => {
            let switch = transition.next_switch();
            let job = commit_job(&work);
            let deadline = now.plus(transition.state.host.policy.activation_timeout_ms);
            transition.report(Report::CommitStarted {
                switch,
                job: job.clone(),
                deadline,
            })?;
            transition.command(Command::RunSwitch { switch, job });
            Ok(())
        }
        ActivationMode::Switch | ActivationMode::Boot => transition.report(Report::Converged {
            revision: work.revision,
            target: work.target,
        }),
    }
}
