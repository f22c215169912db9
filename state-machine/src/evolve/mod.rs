//! `evolve`: the only code that changes the mirrored part of the state. The agent applies each
//! fact as it records it; the control plane applies the same facts in seq order, so the two
//! `Host`s are equal by construction.

mod phases;

use crate::report::{OutboundEvent, Report};
use crate::state::{Host, KNOWN_GOOD_CAP, Phase, ProbeRecord, QUARANTINE_CAP, State};
use crate::time::Timestamp;
use crate::types::{Revision, StorePath};

/// A report that does not fit the state it is applied to: the two sides disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report {report} cannot apply in phase {phase}")]
pub struct EvolveError {
    /// The report's name.
    pub report: &'static str,
    /// The phase it met.
    pub phase: &'static str,
}

/// Applies one reported fact to a state. Seq bookkeeping is the caller's. A refused fact
/// changes nothing: every check comes before the first change.
pub fn evolve(state: &mut State, event: &OutboundEvent) -> Result<(), EvolveError> {
    let report = &event.report;
    let host = &mut state.host;
    match report {
        Report::Recovered {
            system, boot_id, ..
        } => phases::recovered(host, system, boot_id),
        Report::PolicyApplied { policy } => host.policy = policy.clone(),
        Report::DirectiveRecorded { directive } => host.desired = Some(directive.clone()),
        Report::Paused => host.paused = true,
        Report::Resumed => host.paused = false,
        Report::AlreadyConverged { revision, target } => {
            phases::already_converged(host, report, *revision, target)?;
        }
        Report::WorkStarted { work } => phases::work_started(host, report, work)?,
        Report::Realised { target } => phases::realised(host, report, target)?,
        Report::ActivationStarted {
            switch, deadline, ..
        } => phases::activation_started(host, report, *switch, *deadline)?,
        Report::SwitchEnded { switch, system, .. } => {
            if host.phase.running_switch() != Some(*switch) {
                return Err(refused(report, &host.phase));
            }
            host.system = system.clone();
        }
        Report::SoakStarted { epoch, until } => {
            phases::soak_started(host, report, *epoch, *until)?;
            state.probes.records.clear();
        }
        Report::DeferredUntilBoot { reboot_requested } => {
            phases::deferred(host, report, *reboot_requested)?;
        }
        Report::ProbeObserved {
            epoch,
            probe,
            passed,
            ..
        } => {
            if *epoch == host.probe_epoch {
                let record = state.probes.records.entry(probe.clone()).or_default();
                record_probe(record, *passed, event.at);
            }
        }
        Report::CommitStarted {
            switch, deadline, ..
        } => phases::commit_started(host, report, *switch, *deadline)?,
        Report::Converged { revision, target } => {
            phases::converged(host, report, *revision, target)?;
        }
        Report::RollbackStarted { .. } => phases::rollback_started(host, report)?,
        Report::Reverted {
            to,
            reason,
            abandoned,
        } => phases::reverted(host, report, to, reason, abandoned)?,
        Report::Failed {
            reason,
            target,
            halted,
        } => phases::failed(host, reason, target, *halted),
        Report::Superseded { revision, .. } => phases::superseded(host, report, *revision)?,
        Report::RollbackRejected { revision, .. } => host.handled = Some(*revision),
        Report::Snapshot {
            host: snapshot,
            probes,
            ..
        } => {
            *host = Host::clone(snapshot);
            state.probes = probes.clone();
        }
        Report::Gap { .. } => {}
    }
    Ok(())
}

/// What a `Failed` report does to the host. It fits every phase, so it is never refused.
pub(crate) use phases::failed;

/// Updates a probe record with a result at time `at`: a pass ends the failing run, a failure
/// starts one unless one is already running.
pub fn record_probe(record: &mut ProbeRecord, passed: bool, at: Timestamp) {
    if passed {
        record.passed = true;
        record.failing_since = None;
    } else if record.failing_since.is_none() {
        record.failing_since = Some(at);
    }
}

/// The error for a report that does not fit the phase it meets.
fn refused(report: &Report, phase: &Phase) -> EvolveError {
    EvolveError {
        report: report.name(),
        phase: phase.name(),
    }
}

fn remember_good(host: &mut Host, path: &StorePath) {
    let known_good = &mut host.known_good;
    known_good.retain(|p| p != path);
    known_good.push(path.clone());
    if known_good.len() > KNOWN_GOOD_CAP {
        known_good.remove(0);
    }
}

fn quarantine(host: &mut Host, target: &StorePath, revision: Revision) {
    let map = &mut host.quarantine;
    map.insert(target.clone(), revision);
    while map.len() > QUARANTINE_CAP {
        let oldest = map
            .iter()
            .min_by_key(|(path, rev)| (**rev, (*path).clone()))
            .map(|(path, _)| path.clone());
        match oldest {
            Some(path) => map.remove(&path),
            None => break,
        };
    }
}

#[cfg(test)]
mod tests;
