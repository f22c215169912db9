//! How a rollout judges its hosts from what the control plane mirrors: converged, failed
//! (against the budget), taken out, or still on the way; and how far each host's way back got.

use fleetnode_state_machine::Phase;
use fleetnode_wire::{
    Directive, DirectiveKind, FailureKind, HostId, HostProgress, HostRollback, HostState, Revision,
    Rollout, Timestamp,
};

use super::machine::{Command, HostObservation, Observations, Tx};

/// What a host's mirror says about the release.
enum Verdict {
    /// At rest on the release's closure.
    Converged,
    /// At rest, failed or reverted for the release's revision.
    Failed(FailureKind, String),
    /// No longer the rollout's: why.
    Out(String),
    /// Still working on it (or converged and being watched).
    Working,
}

/// True when the host's result for the release is in (nothing more to wait for in its wave).
pub fn is_final(state: &HostState) -> bool {
    match state {
        HostState::Converged { .. } | HostState::Failed { .. } | HostState::TakenOut { .. } => true,
        HostState::Pending | HostState::InFlight { .. } => false,
    }
}

/// True when the host is still being judged: it is on its way, or it converged in the wave
/// that is rolling out or baking (a failure there still counts).
pub fn is_watched(rollout: &Rollout, progress: &HostProgress) -> bool {
    match progress.state {
        HostState::InFlight { .. } => true,
        HostState::Converged { .. } => rollout.is_active() && progress.wave == rollout.wave(),
        HostState::Pending | HostState::Failed { .. } | HostState::TakenOut { .. } => false,
    }
}

/// When a watched host counts as offline if no heartbeat arrives: the offline deadline after
/// the latest of its last heartbeat, the moment it entered its state, and the moment the
/// control plane began listening.
pub fn silent_at(
    rollout: &Rollout,
    progress: &HostProgress,
    last_seen: Option<Timestamp>,
    watching_since: Timestamp,
) -> Option<Timestamp> {
    let entered = match progress.state {
        HostState::InFlight { assigned_at, .. } => assigned_at,
        HostState::Converged { at, .. } => at,
        HostState::Pending | HostState::Failed { .. } | HostState::TakenOut { .. } => {
            return None;
        }
    };
    let heard = entered
        .max(watching_since)
        .max(last_seen.unwrap_or_default());
    Some(heard.plus(rollout.offline_deadline_ms))
}

/// Why a host cannot take part any more, if it cannot.
pub fn unreachable(observed: Option<&HostObservation>) -> Option<String> {
    match observed {
        None => Some("it is no longer registered".to_owned()),
        Some(o) if o.revoked => Some("it was revoked".to_owned()),
        Some(_) => None,
    }
}

/// Judges every watched host; returns the hosts that failed now, with why.
pub fn judge_hosts(tx: &mut Tx, observations: &Observations) -> Vec<(HostId, String)> {
    let now = tx.now;
    let watched: Vec<HostId> = tx
        .rollout
        .hosts
        .iter()
        .filter(|(_, p)| is_watched(&tx.rollout, p))
        .map(|(host, _)| host.clone())
        .collect();
    let mut newly_failed = Vec::new();
    for host in watched {
        let observed = observations.hosts.get(&host);
        let Some(progress) = tx.rollout.hosts.get(&host) else {
            continue;
        };
        let verdict = match verdict(progress, observed) {
            Verdict::Working => {
                let seen = observed.and_then(|o| o.last_seen);
                let silent = silent_at(&tx.rollout, progress, seen, observations.watching_since);
                match silent {
                    Some(at) if now >= at => Verdict::Failed(
                        FailureKind::Offline,
                        format!(
                            "sent no heartbeat for the offline deadline of {}",
                            tx.rollout.offline_deadline_ms
                        ),
                    ),
                    Some(_) | None => Verdict::Working,
                }
            }
            other @ (Verdict::Converged | Verdict::Failed(..) | Verdict::Out(_)) => other,
        };
        let Some(progress) = tx.rollout.hosts.get_mut(&host) else {
            continue;
        };
        let (revision, assigned_at) = match progress.state {
            HostState::InFlight {
                revision,
                assigned_at,
            }
            | HostState::Converged {
                revision,
                assigned_at,
                ..
            } => (revision, assigned_at),
            HostState::Pending | HostState::Failed { .. } | HostState::TakenOut { .. } => continue,
        };
        match verdict {
            Verdict::Converged => {
                if let HostState::InFlight { .. } = progress.state {
                    progress.state = HostState::Converged {
                        revision,
                        assigned_at,
                        at: now,
                    };
                }
            }
            Verdict::Failed(kind, detail) => {
                newly_failed.push((host.clone(), format!("{}: {detail}", kind.name())));
                progress.state = HostState::Failed {
                    revision,
                    assigned_at,
                    at: now,
                    kind,
                    detail,
                };
            }
            Verdict::Out(why) => progress.state = HostState::TakenOut { at: now, why },
            Verdict::Working => {}
        }
    }
    newly_failed
}

fn verdict(progress: &HostProgress, observed: Option<&HostObservation>) -> Verdict {
    if let Some(why) = unreachable(observed) {
        return Verdict::Out(why);
    }
    let (Some(revision), Some(observed)) = (progress.state.revision(), observed) else {
        return Verdict::Working;
    };
    if observed.directive != Some(revision) {
        return Verdict::Out(replaced(observed.directive));
    }
    if observed.handled != Some(revision) {
        return Verdict::Working;
    }
    match &observed.phase {
        Phase::Converged(c) if c.revision == revision => Verdict::Converged,
        Phase::Reverted(p) => Verdict::Failed(FailureKind::Reverted, p.reason.to_string()),
        Phase::Failed(p) => Verdict::Failed(FailureKind::Failed, p.reason.to_string()),
        Phase::Converged(_)
        | Phase::Idle
        | Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Soaking(_)
        | Phase::Committing(_)
        | Phase::Deferred(_)
        | Phase::RollingBack(_) => Verdict::Working,
    }
}

/// A host's way back when the rollout's hosts are ordered back: every host the release
/// reached, except those whose agent already went back by itself.
pub fn rollback_for(progress: &HostProgress) -> Option<HostRollback> {
    match &progress.state {
        HostState::InFlight { .. } | HostState::Converged { .. } => Some(HostRollback::Wanted {
            to: progress.previous.clone(),
        }),
        HostState::Failed { kind, .. } => match kind {
            FailureKind::Reverted => Some(HostRollback::Skipped {
                why: "its agent already went back by itself".to_owned(),
            }),
            FailureKind::Failed | FailureKind::Offline => Some(HostRollback::Wanted {
                to: progress.previous.clone(),
            }),
        },
        HostState::Pending | HostState::TakenOut { .. } => None,
    }
}

/// Sends the rollbacks that are wanted and follows those sent until each host is back.
pub fn follow_rollbacks(tx: &mut Tx, observations: &Observations) {
    let now = tx.now;
    for (host, progress) in &mut tx.rollout.hosts {
        let observed = observations.hosts.get(host);
        let moving = matches!(
            progress.rollback,
            Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. })
        );
        let next = match (&progress.rollback, observed) {
            (Some(_), _) if moving && unreachable(observed).is_some() => {
                unreachable(observed).map(|why| skipped(&why))
            }
            (Some(HostRollback::Wanted { to }), Some(o)) => {
                if o.directive != progress.state.revision() {
                    Some(skipped(&replaced(o.directive)))
                } else {
                    tx.commands.push(Command::SetDirective {
                        host: host.clone(),
                        directive: Directive {
                            revision: o.next_revision,
                            kind: DirectiveKind::Rollback { to: to.clone() },
                        },
                    });
                    Some(HostRollback::Sent {
                        to: to.clone(),
                        revision: o.next_revision,
                    })
                }
            }
            (Some(HostRollback::Sent { to, revision }), Some(o)) => {
                if o.directive != Some(*revision) {
                    Some(skipped(&replaced(o.directive)))
                } else if o.handled >= Some(*revision) && o.phase.is_at_rest() {
                    if to.is_none() || o.current == *to {
                        Some(HostRollback::Done {
                            revision: *revision,
                            at: now,
                        })
                    } else {
                        Some(HostRollback::Failed {
                            revision: *revision,
                            why: format!(
                                "it came to rest {} running {}",
                                o.phase.name(),
                                o.current
                                    .as_ref()
                                    .map_or_else(|| "nothing".to_owned(), ToString::to_string)
                            ),
                        })
                    }
                } else {
                    None
                }
            }
            (Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. }), None)
            | (
                Some(
                    HostRollback::Done { .. }
                    | HostRollback::Skipped { .. }
                    | HostRollback::Failed { .. },
                )
                | None,
                _,
            ) => None,
        };
        if let Some(next) = next {
            progress.rollback = Some(next);
        }
    }
}

fn skipped(why: &str) -> HostRollback {
    HostRollback::Skipped {
        why: why.to_owned(),
    }
}

fn replaced(directive: Option<Revision>) -> String {
    match directive {
        Some(revision) => format!("another directive ({revision}) replaced the rollout's"),
        None => "its directive was cleared".to_owned(),
    }
}
