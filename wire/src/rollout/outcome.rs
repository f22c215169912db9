//! What a rollout did to each host, said exactly once it is over: converged, failed and back
//! where it was, failed and left, never reached, and so on. Worked out from the rollout record
//! alone, so the command line and the console say the same, and a rollback is claimed only
//! when the host was seen back.

use std::collections::BTreeMap;
use std::fmt;

use super::state::{FailureKind, HostProgress, HostRollback, HostState, Rollout};

/// The outcome of a rollout for one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostOutcome {
    /// Not decided yet: the rollout runs, or the host is still on its way there or back.
    Open,
    /// Runs the release, committed and healthy.
    Converged,
    /// Converged, then sent back by the rollout, and seen back.
    RolledBack,
    /// Failed, and is back on what it ran before: its agent went back by itself, or the
    /// rollout sent it back and it was seen there.
    FailedRolledBack,
    /// Failed, and was left where it failed: it needs a person.
    FailedLeft,
    /// Sent back by the rollout and came to rest somewhere else.
    RollbackFailed,
    /// The rollout ended before it gave the host the release.
    NeverReached,
    /// Left the rollout (another directive, or the host was revoked).
    TakenOut,
}

impl HostOutcome {
    /// Every outcome, in the order summaries list them.
    pub const ALL: [Self; 8] = [
        Self::Converged,
        Self::RolledBack,
        Self::FailedRolledBack,
        Self::FailedLeft,
        Self::RollbackFailed,
        Self::NeverReached,
        Self::TakenOut,
        Self::Open,
    ];

    /// How people read it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "not over",
            Self::Converged => "converged",
            Self::RolledBack => "converged, then rolled back",
            Self::FailedRolledBack => "failed and rolled back",
            Self::FailedLeft => "failed and left",
            Self::RollbackFailed => "rollback failed",
            Self::NeverReached => "never reached",
            Self::TakenOut => "taken out",
        }
    }
}

impl fmt::Display for HostOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl HostProgress {
    /// This host's outcome in a rollout that is `active` (running or paused) or not. While
    /// the rollout is active nothing is decided: a failed host may still be sent back.
    pub fn outcome(&self, active: bool) -> HostOutcome {
        if active {
            return HostOutcome::Open;
        }
        match (&self.rollback, &self.state) {
            (Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. }), _) => HostOutcome::Open,
            (Some(HostRollback::Failed { .. }), _) => HostOutcome::RollbackFailed,
            (_, HostState::TakenOut { .. }) => HostOutcome::TakenOut,
            (Some(HostRollback::Done { .. }), HostState::Failed { .. }) => {
                HostOutcome::FailedRolledBack
            }
            (Some(HostRollback::Done { .. }), _) => HostOutcome::RolledBack,
            (_, HostState::Failed { kind, .. }) => match kind {
                FailureKind::Reverted => HostOutcome::FailedRolledBack,
                FailureKind::Failed | FailureKind::Offline => HostOutcome::FailedLeft,
            },
            (_, HostState::Converged { .. }) => HostOutcome::Converged,
            (_, HostState::Pending) => HostOutcome::NeverReached,
            (_, HostState::InFlight { .. }) => HostOutcome::Open,
        }
    }
}

impl Rollout {
    /// How many hosts came to each outcome (outcomes no host had are left out).
    pub fn outcomes(&self) -> BTreeMap<HostOutcome, u64> {
        let active = self.is_active();
        let mut counts = BTreeMap::new();
        for progress in self.hosts.values() {
            *counts.entry(progress.outcome(active)).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use fleetnode_state_machine::{Revision, Timestamp};

    use super::*;

    fn progress(state: HostState, rollback: Option<HostRollback>) -> HostProgress {
        HostProgress {
            wave: 0,
            state,
            previous: None,
            rollback,
            window_opens_at: None,
        }
    }

    fn failed(kind: FailureKind) -> HostState {
        HostState::Failed {
            revision: Revision(2),
            assigned_at: Timestamp(1),
            at: Timestamp(2),
            kind,
            detail: "it failed".into(),
        }
    }

    fn converged() -> HostState {
        HostState::Converged {
            revision: Revision(2),
            assigned_at: Timestamp(1),
            at: Timestamp(2),
        }
    }

    fn done() -> Option<HostRollback> {
        Some(HostRollback::Done {
            revision: Revision(3),
            at: Timestamp(4),
        })
    }

    #[test]
    fn each_host_ends_in_exactly_what_happened_to_it() {
        let ended = |p: HostProgress| p.outcome(false);
        assert_eq!(ended(progress(converged(), None)), HostOutcome::Converged);
        assert_eq!(
            ended(progress(converged(), done())),
            HostOutcome::RolledBack
        );
        assert_eq!(
            ended(progress(failed(FailureKind::Reverted), None)),
            HostOutcome::FailedRolledBack,
            "its agent went back by itself"
        );
        assert_eq!(
            ended(progress(failed(FailureKind::Failed), done())),
            HostOutcome::FailedRolledBack
        );
        for kind in [FailureKind::Failed, FailureKind::Offline] {
            assert_eq!(ended(progress(failed(kind), None)), HostOutcome::FailedLeft);
            let skipped = Some(HostRollback::Skipped {
                why: "moved on".into(),
            });
            assert_eq!(
                ended(progress(failed(kind), skipped)),
                HostOutcome::FailedLeft,
                "no rollback is claimed that was not seen"
            );
        }
        let gone_elsewhere = Some(HostRollback::Failed {
            revision: Revision(3),
            why: "reverted to gen 1".into(),
        });
        assert_eq!(
            ended(progress(converged(), gone_elsewhere)),
            HostOutcome::RollbackFailed
        );
        assert_eq!(
            ended(progress(HostState::Pending, None)),
            HostOutcome::NeverReached
        );
        let taken = HostState::TakenOut {
            at: Timestamp(3),
            why: "revoked".into(),
        };
        assert_eq!(ended(progress(taken, None)), HostOutcome::TakenOut);
    }

    #[test]
    fn nothing_is_decided_while_it_still_moves() {
        let running = |p: HostProgress| p.outcome(true);
        assert_eq!(
            running(progress(HostState::Pending, None)),
            HostOutcome::Open
        );
        assert_eq!(running(progress(converged(), None)), HostOutcome::Open);
        let in_flight = HostState::InFlight {
            revision: Revision(2),
            assigned_at: Timestamp(1),
        };
        assert_eq!(progress(in_flight, None).outcome(false), HostOutcome::Open);
        let sent = Some(HostRollback::Sent {
            to: None,
            revision: Revision(3),
        });
        assert_eq!(
            progress(failed(FailureKind::Failed), sent).outcome(false),
            HostOutcome::Open,
            "on its way back"
        );
        assert_eq!(
            running(progress(failed(FailureKind::Offline), None)),
            HostOutcome::Open,
            "a running rollout may still send it back"
        );
    }
}
