//! How each report that moves the phase changes the mirrored host.

use super::{quarantine, refused, remember_good};
use crate::reason::Reason;
use crate::report::Report;
use crate::state::{
    Activating, Committing, Converged, Deferred, Failed, Host, Phase, Realising, Reverted,
    RollingBack, Soaking, SystemView, Work,
};
use crate::time::Timestamp;
use crate::types::{Revision, StorePath, SwitchId};

use super::EvolveError;

pub(super) fn recovered(host: &mut Host, system: &SystemView, boot_id: &Option<String>) {
    host.system = system.clone();
    host.boot_id = boot_id.clone();
    if host.known_good.is_empty()
        && let Some(current) = &system.current
        && system.is_committed_on(current)
    {
        host.known_good.push(current.clone());
    }
}

pub(super) fn already_converged(
    host: &mut Host,
    report: &Report,
    revision: Revision,
    target: &StorePath,
) -> Result<(), EvolveError> {
    if !host.phase.is_at_rest() {
        return Err(refused(report, &host.phase));
    }
    host.handled = Some(revision);
    remember_good(host, target);
    host.phase = Phase::Converged(Converged {
        revision,
        target: target.clone(),
    });
    Ok(())
}

pub(super) fn work_started(
    host: &mut Host,
    report: &Report,
    work: &Work,
) -> Result<(), EvolveError> {
    if !host.phase.is_at_rest() {
        return Err(refused(report, &host.phase));
    }
    host.handled = Some(work.revision);
    if work.previous.is_some() {
        host.undo_to = work.previous.clone();
    }
    host.phase = Phase::Realising(Realising { work: work.clone() });
    Ok(())
}

pub(super) fn realised(
    host: &mut Host,
    report: &Report,
    target: &StorePath,
) -> Result<(), EvolveError> {
    if let Phase::Realising(p) = &host.phase
        && &p.work.target == target
    {
        return Ok(());
    }
    Err(refused(report, &host.phase))
}

pub(super) fn activation_started(
    host: &mut Host,
    report: &Report,
    switch: SwitchId,
    deadline: Timestamp,
) -> Result<(), EvolveError> {
    let Phase::Realising(p) = &host.phase else {
        return Err(refused(report, &host.phase));
    };
    host.phase = Phase::Activating(Activating {
        work: p.work.clone(),
        switch,
        deadline,
    });
    Ok(())
}

/// A soak begins after an activation, after the boot into a deferred target, or again after a
/// reboot while soaking. The caller clears the probe records of the old epoch.
pub(super) fn soak_started(
    host: &mut Host,
    report: &Report,
    epoch: u64,
    until: Timestamp,
) -> Result<(), EvolveError> {
    let soakable = matches!(
        host.phase,
        Phase::Activating(_) | Phase::Deferred(_) | Phase::Soaking(_)
    );
    let Some(work) = host.phase.work().filter(|_| soakable).cloned() else {
        return Err(refused(report, &host.phase));
    };
    host.probe_epoch = epoch;
    host.phase = Phase::Soaking(Soaking { work, until });
    Ok(())
}

pub(super) fn deferred(
    host: &mut Host,
    report: &Report,
    reboot_requested: bool,
) -> Result<(), EvolveError> {
    let Phase::Activating(p) = &host.phase else {
        return Err(refused(report, &host.phase));
    };
    host.phase = Phase::Deferred(Deferred {
        work: p.work.clone(),
        reboot_requested,
    });
    Ok(())
}

pub(super) fn commit_started(
    host: &mut Host,
    report: &Report,
    switch: SwitchId,
    deadline: Timestamp,
) -> Result<(), EvolveError> {
    let Phase::Soaking(p) = &host.phase else {
        return Err(refused(report, &host.phase));
    };
    host.phase = Phase::Committing(Committing {
        work: p.work.clone(),
        switch,
        deadline,
    });
    Ok(())
}

pub(super) fn converged(
    host: &mut Host,
    report: &Report,
    revision: Revision,
    target: &StorePath,
) -> Result<(), EvolveError> {
    if !matches!(host.phase, Phase::Soaking(_) | Phase::Committing(_)) {
        return Err(refused(report, &host.phase));
    }
    remember_good(host, target);
    host.phase = Phase::Converged(Converged {
        revision,
        target: target.clone(),
    });
    Ok(())
}

/// A rollback replaces a failed or timed-out switch (whose unit was aborted), or starts from a
/// host at rest, soaking or deferred; never during realise (the host is untouched) or during
/// another rollback.
pub(super) fn rollback_started(host: &mut Host, report: &Report) -> Result<(), EvolveError> {
    let Report::RollbackStarted {
        switch,
        job,
        to,
        reason,
        abandoned,
        revision,
        deadline,
    } = report
    else {
        return Err(refused(report, &host.phase));
    };
    if matches!(host.phase, Phase::Realising(_) | Phase::RollingBack(_)) {
        return Err(refused(report, &host.phase));
    }
    if let Some(revision) = revision {
        host.handled = Some(*revision);
    }
    if let Some((target, revision)) = abandoned {
        quarantine(host, target, *revision);
    }
    let replaces = host.phase.running_switch();
    host.phase = Phase::RollingBack(RollingBack {
        to: to.clone(),
        reason: reason.clone(),
        abandoned: abandoned.clone(),
        switch: *switch,
        job: job.clone(),
        replaces,
        deadline: *deadline,
    });
    Ok(())
}

pub(super) fn reverted(
    host: &mut Host,
    report: &Report,
    to: &StorePath,
    reason: &Reason,
    abandoned: &Option<(StorePath, Revision)>,
) -> Result<(), EvolveError> {
    if host.phase.is_at_rest() {
        return Err(refused(report, &host.phase));
    }
    if let Some((target, revision)) = abandoned {
        quarantine(host, target, *revision);
    }
    host.phase = Phase::Reverted(Reverted {
        to: to.clone(),
        reason: reason.clone(),
        abandoned: abandoned.as_ref().map(|(target, _)| target.clone()),
    });
    Ok(())
}

pub(crate) fn failed(host: &mut Host, reason: &Reason, target: &Option<StorePath>, halted: bool) {
    host.phase = Phase::Failed(Failed {
        reason: reason.clone(),
        target: target.clone(),
        halted,
    });
}

/// Only work that runs no switch gives way to a newer directive.
pub(super) fn superseded(
    host: &mut Host,
    report: &Report,
    revision: Revision,
) -> Result<(), EvolveError> {
    match host.phase.work() {
        Some(work) if work.revision == revision && host.phase.running_switch().is_none() => {
            host.phase = Phase::Idle;
            Ok(())
        }
        Some(_) | None => Err(refused(report, &host.phase)),
    }
}
