//! `evolve`: the only code that changes the mirrored part of the state. The agent applies each
//! fact as it records it; the control plane applies the same facts in seq order, so the two
//! `Host`s are equal by construction.

use crate::report::{OutboundEvent, Report};
use crate::state::{
    Activating, Committing, Converged, Deferred, Failed, KNOWN_GOOD_CAP, Phase, ProbeRecord,
    QUARANTINE_CAP, Realising, Reverted, RollingBack, Soaking, State,
};
use crate::types::{Revision, StorePath, Timestamp};

/// A report that does not fit the state it is applied to: the two sides disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report {report} cannot apply in phase {phase}")]
pub struct EvolveError {
    /// The report's name.
    pub report: &'static str,
    /// The phase it met.
    pub phase: &'static str,
}

/// Applies one reported fact to a state. Seq bookkeeping is the caller's.
pub fn evolve(state: &mut State, event: &OutboundEvent) -> Result<(), EvolveError> {
    let host = &mut state.host;
    let mismatch = |phase: &Phase| EvolveError {
        report: event.report.name(),
        phase: phase.name(),
    };
    match &event.report {
        Report::Recovered {
            system, boot_id, ..
        } => {
            host.system = system.clone();
            host.boot_id = boot_id.clone();
            if host.known_good.is_empty()
                && let Some(current) = &system.current
                && system.is_committed_on(current)
            {
                host.known_good.push(current.clone());
            }
        }
        Report::PolicyApplied { policy } => host.policy = policy.clone(),
        Report::DirectiveRecorded { directive } => host.desired = Some(directive.clone()),
        Report::Paused => host.paused = true,
        Report::Resumed => host.paused = false,
        Report::AlreadyConverged { revision, target } => {
            if !host.phase.is_at_rest() {
                return Err(mismatch(&host.phase));
            }
            host.handled = Some(*revision);
            remember_good(&mut host.known_good, target);
            host.phase = Phase::Converged(Converged {
                revision: *revision,
                target: target.clone(),
            });
        }
        Report::WorkStarted { work } => {
            if !host.phase.is_at_rest() {
                return Err(mismatch(&host.phase));
            }
            host.handled = Some(work.revision);
            if work.previous.is_some() {
                host.undo_to = work.previous.clone();
            }
            host.phase = Phase::Realising(Realising { work: work.clone() });
        }
        Report::Realised { target } => match &host.phase {
            Phase::Realising(p) if &p.work.target == target => {}
            other @ Phase::Idle
            | other @ Phase::Realising(_)
            | other @ Phase::Activating(_)
            | other @ Phase::Soaking(_)
            | other @ Phase::Committing(_)
            | other @ Phase::Deferred(_)
            | other @ Phase::RollingBack(_)
            | other @ Phase::Converged(_)
            | other @ Phase::Reverted(_)
            | other @ Phase::Failed(_) => return Err(mismatch(other)),
        },
        Report::ActivationStarted {
            switch, deadline, ..
        } => match &host.phase {
            Phase::Realising(p) => {
                host.phase = Phase::Activating(Activating {
                    work: p.work.clone(),
                    switch: *switch,
                    deadline: *deadline,
                });
            }
            other @ Phase::Idle
            | other @ Phase::Activating(_)
            | other @ Phase::Soaking(_)
            | other @ Phase::Committing(_)
            | other @ Phase::Deferred(_)
            | other @ Phase::RollingBack(_)
            | other @ Phase::Converged(_)
            | other @ Phase::Reverted(_)
            | other @ Phase::Failed(_) => return Err(mismatch(other)),
        },
        Report::SwitchEnded { switch, system, .. } => {
            if host.phase.running_switch() != Some(*switch) {
                return Err(mismatch(&host.phase));
            }
            host.system = system.clone();
        }
        Report::SoakStarted { epoch, until } => {
            let work = match &host.phase {
                Phase::Activating(p) => p.work.clone(),
                Phase::Deferred(p) => p.work.clone(),
                Phase::Soaking(p) => p.work.clone(),
                other @ Phase::Idle
                | other @ Phase::Realising(_)
                | other @ Phase::Committing(_)
                | other @ Phase::RollingBack(_)
                | other @ Phase::Converged(_)
                | other @ Phase::Reverted(_)
                | other @ Phase::Failed(_) => return Err(mismatch(other)),
            };
            host.probe_epoch = *epoch;
            state.probes.records.clear();
            host.phase = Phase::Soaking(Soaking {
                work,
                until: *until,
            });
        }
        Report::DeferredUntilBoot { reboot_requested } => match &host.phase {
            Phase::Activating(p) => {
                host.phase = Phase::Deferred(Deferred {
                    work: p.work.clone(),
                    reboot_requested: *reboot_requested,
                });
            }
            other @ Phase::Idle
            | other @ Phase::Realising(_)
            | other @ Phase::Soaking(_)
            | other @ Phase::Committing(_)
            | other @ Phase::Deferred(_)
            | other @ Phase::RollingBack(_)
            | other @ Phase::Converged(_)
            | other @ Phase::Reverted(_)
            | other @ Phase::Failed(_) => return Err(mismatch(other)),
        },
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
        } => match &host.phase {
            Phase::Soaking(p) => {
                host.phase = Phase::Committing(Committing {
                    work: p.work.clone(),
                    switch: *switch,
                    deadline: *deadline,
                });
            }
            other @ Phase::Idle
            | other @ Phase::Realising(_)
            | other @ Phase::Activating(_)
            | other @ Phase::Committing(_)
            | other @ Phase::Deferred(_)
            | other @ Phase::RollingBack(_)
            | other @ Phase::Converged(_)
            | other @ Phase::Reverted(_)
            | other @ Phase::Failed(_) => return Err(mismatch(other)),
        },
        Report::Converged { revision, target } => match &host.phase {
            Phase::Soaking(_) | Phase::Committing(_) => {
                remember_good(&mut host.known_good, target);
                host.phase = Phase::Converged(Converged {
                    revision: *revision,
                    target: target.clone(),
                });
            }
            other @ Phase::Idle
            | other @ Phase::Realising(_)
            | other @ Phase::Activating(_)
            | other @ Phase::Deferred(_)
            | other @ Phase::RollingBack(_)
            | other @ Phase::Converged(_)
            | other @ Phase::Reverted(_)
            | other @ Phase::Failed(_) => return Err(mismatch(other)),
        },
        Report::RollbackStarted {
            switch,
            job,
            to,
            reason,
            abandoned,
            revision,
            deadline,
        } => {
            // A rollback replaces a failed or timed-out switch (whose unit was aborted), or
            // starts from a host at rest, soaking or deferred; never during realise (the host
            // is untouched) or during another rollback.
            if matches!(host.phase, Phase::Realising(_) | Phase::RollingBack(_)) {
                return Err(mismatch(&host.phase));
            }
            if let Some(revision) = revision {
                host.handled = Some(*revision);
            }
            if let Some((target, revision)) = abandoned {
                quarantine(&mut host.quarantine, target, *revision);
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
        }
        Report::Reverted {
            to,
            reason,
            abandoned,
        } => {
            if host.phase.is_at_rest() {
                return Err(mismatch(&host.phase));
            }
            if let Some((target, revision)) = abandoned {
                quarantine(&mut host.quarantine, target, *revision);
            }
            host.phase = Phase::Reverted(Reverted {
                to: to.clone(),
                reason: reason.clone(),
                abandoned: abandoned.as_ref().map(|(target, _)| target.clone()),
            });
        }
        Report::Failed {
            reason,
            target,
            halted,
        } => {
            host.phase = Phase::Failed(Failed {
                reason: reason.clone(),
                target: target.clone(),
                halted: *halted,
            });
        }
        Report::Superseded { revision, .. } => match host.phase.work() {
            Some(work) if work.revision == *revision && host.phase.running_switch().is_none() => {
                host.phase = Phase::Idle;
            }
            Some(_) | None => return Err(mismatch(&host.phase)),
        },
        Report::RollbackRejected { revision, .. } => host.handled = Some(*revision),
        Report::Gap { .. } => {}
    }
    Ok(())
}

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

fn remember_good(known_good: &mut Vec<StorePath>, path: &StorePath) {
    known_good.retain(|p| p != path);
    known_good.push(path.clone());
    if known_good.len() > KNOWN_GOOD_CAP {
        known_good.remove(0);
    }
}

fn quarantine(
    map: &mut std::collections::BTreeMap<StorePath, Revision>,
    target: &StorePath,
    revision: Revision,
) {
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
mod tests {
    use super::*;
    use crate::report::GapCause;
    use crate::state::Work;
    use crate::types::{ProbeId, SwitchId};

    fn path(n: usize) -> StorePath {
        // Distinct valid hashes: the number in base 32 over the nix alphabet, padded.
        let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
        let mut hash = vec![b'0'; 32];
        let mut rest = n;
        for slot in hash.iter_mut().rev() {
            *slot = alphabet[rest % 32];
            rest /= 32;
        }
        let hash = String::from_utf8(hash).unwrap();
        StorePath::parse(&format!("/nix/store/{hash}-system")).unwrap()
    }

    #[test]
    fn known_good_keeps_the_newest_sixteen_without_duplicates() {
        let mut good = Vec::new();
        for n in 0..KNOWN_GOOD_CAP {
            remember_good(&mut good, &path(n));
        }
        assert_eq!(good.len(), KNOWN_GOOD_CAP, "exactly the cap is kept");
        assert_eq!(good[0], path(0));
        remember_good(&mut good, &path(3));
        assert_eq!(good.len(), KNOWN_GOOD_CAP);
        assert_eq!(
            good.last(),
            Some(&path(3)),
            "re-remembering moves it to the end"
        );
        remember_good(&mut good, &path(99));
        assert_eq!(good.len(), KNOWN_GOOD_CAP);
        assert!(!good.contains(&path(0)), "the oldest is forgotten first");
        assert_eq!(good.last(), Some(&path(99)));
    }

    #[test]
    fn quarantine_forgets_the_lowest_revisions_first() {
        let mut map = std::collections::BTreeMap::new();
        for n in 0..QUARANTINE_CAP {
            quarantine(&mut map, &path(n), Revision(100 + n as u64));
        }
        assert_eq!(map.len(), QUARANTINE_CAP, "exactly the cap is kept");
        quarantine(&mut map, &path(500), Revision(1_000));
        assert_eq!(map.len(), QUARANTINE_CAP);
        assert!(!map.contains_key(&path(0)), "lowest revision dropped");
        assert!(map.contains_key(&path(1)));
        assert_eq!(map.get(&path(500)), Some(&Revision(1_000)));
    }

    fn event(report: Report) -> OutboundEvent {
        OutboundEvent {
            seq: 1,
            at: Timestamp(0),
            report,
        }
    }

    fn realising(target: StorePath) -> State {
        let mut state = State::default();
        state.host.phase = Phase::Realising(Realising {
            work: Work {
                revision: Revision(3),
                target,
                mode: crate::ActivationMode::TestThenCommit,
                health: crate::HealthPolicy::default(),
                previous: None,
            },
        });
        state
    }

    #[test]
    fn facts_that_do_not_fit_the_phase_are_refused() {
        let mut state = realising(path(1));
        let wrong_target = event(Report::Realised { target: path(2) });
        assert!(evolve(&mut state, &wrong_target).is_err());
        let right_target = event(Report::Realised { target: path(1) });
        assert!(evolve(&mut state, &right_target).is_ok());

        let wrong_revision = event(Report::Superseded {
            revision: Revision(2),
            target: path(1),
        });
        assert!(evolve(&mut state, &wrong_revision).is_err());
        assert_eq!(state.host.phase.name(), "realising");
        let right = event(Report::Superseded {
            revision: Revision(3),
            target: path(1),
        });
        assert!(evolve(&mut state, &right).is_ok());
        assert_eq!(state.host.phase, Phase::Idle);

        let mut activating = State::default();
        activating.host.phase = Phase::Activating(Activating {
            work: Work {
                revision: Revision(3),
                target: path(1),
                mode: crate::ActivationMode::TestThenCommit,
                health: crate::HealthPolicy::default(),
                previous: None,
            },
            switch: SwitchId(4),
            deadline: Timestamp(9),
        });
        let superseded = event(Report::Superseded {
            revision: Revision(3),
            target: path(1),
        });
        assert!(
            evolve(&mut activating, &superseded).is_err(),
            "a running switch is never superseded"
        );
    }

    #[test]
    fn only_probe_observations_may_be_compacted() {
        let probe = Report::ProbeObserved {
            epoch: 1,
            probe: ProbeId::control_plane(),
            passed: true,
            detail: String::new(),
        };
        assert!(!probe.is_lifecycle());
        assert!(Report::Paused.is_lifecycle());
        let gap = Report::Gap {
            from_seq: 1,
            cause: GapCause::Compacted { dropped: 1 },
        };
        assert!(gap.is_lifecycle(), "a gap marker itself is never dropped");
    }
}
