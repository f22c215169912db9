//! The questions asked of every report, each answered by one method with one list of the
//! variants: what kind of entry it is in the queue and the mirror's sequence
//! ([`Report::class`]), which reason it carries ([`Report::reason`]) and how much it should
//! concern a person reading the log ([`Report::concern`]). Everything else asks these.

use super::{GapCause, Report, SwitchVerdict};
use crate::reason::Reason;
use crate::types::ProbeId;

/// What a report is to the outbound queue and to the mirror's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportClass<'a> {
    /// A probe observation: the only kind a full queue may drop.
    Observation {
        /// The probe.
        probe: &'a ProbeId,
    },
    /// A gap standing for the events from `from_seq` to its own seq.
    Gap {
        /// The first seq it stands for.
        from_seq: u64,
        /// Why the events are missing.
        cause: &'a GapCause,
    },
    /// The whole host, standing for every event before it.
    Snapshot,
    /// Any other fact of the host's lifecycle.
    Lifecycle,
}

/// How much a report should concern a person reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concern {
    /// The path to convergence, as it should go.
    Routine,
    /// A setback the agent handles itself (a rollback, a refused switch, a gap).
    Setback,
    /// Something broken that a person should look at.
    Failure,
}

impl Report {
    /// What the report is to the queue and the mirror's sequence.
    pub fn class(&self) -> ReportClass<'_> {
        match self {
            Self::ProbeObserved { probe, .. } => ReportClass::Observation { probe },
            Self::Gap { from_seq, cause } => ReportClass::Gap {
                from_seq: *from_seq,
                cause,
            },
            Self::Snapshot { .. } => ReportClass::Snapshot,
            Self::Recovered { .. }
            | Self::PolicyApplied { .. }
            | Self::DirectiveRecorded { .. }
            | Self::Paused
            | Self::Resumed
            | Self::AlreadyConverged { .. }
            | Self::WorkStarted { .. }
            | Self::Realised { .. }
            | Self::ActivationStarted { .. }
            | Self::SwitchEnded { .. }
            | Self::SoakStarted { .. }
            | Self::DeferredUntilBoot { .. }
            | Self::CommitStarted { .. }
            | Self::Converged { .. }
            | Self::RollbackStarted { .. }
            | Self::Reverted { .. }
            | Self::Failed { .. }
            | Self::Superseded { .. }
            | Self::RollbackRejected { .. } => ReportClass::Lifecycle,
        }
    }

    /// Why the host left the path to convergence, when the report says it did (a failed
    /// switch's reason is in its verdict).
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Self::RollbackStarted { reason, .. }
            | Self::Reverted { reason, .. }
            | Self::Failed { reason, .. } => Some(reason),
            Self::Recovered { .. }
            | Self::PolicyApplied { .. }
            | Self::DirectiveRecorded { .. }
            | Self::Paused
            | Self::Resumed
            | Self::AlreadyConverged { .. }
            | Self::WorkStarted { .. }
            | Self::Realised { .. }
            | Self::ActivationStarted { .. }
            | Self::SwitchEnded { .. }
            | Self::SoakStarted { .. }
            | Self::DeferredUntilBoot { .. }
            | Self::ProbeObserved { .. }
            | Self::CommitStarted { .. }
            | Self::Converged { .. }
            | Self::Superseded { .. }
            | Self::RollbackRejected { .. }
            | Self::Snapshot { .. }
            | Self::Gap { .. } => None,
        }
    }

    /// How much the report should concern a person: failures are for a human to look at,
    /// setbacks are handled by the agent itself.
    pub fn concern(&self) -> Concern {
        match self {
            Self::Failed { .. } => Concern::Failure,
            Self::RollbackStarted { .. }
            | Self::Reverted { .. }
            | Self::RollbackRejected { .. }
            | Self::Superseded { .. }
            | Self::Snapshot { .. }
            | Self::Gap { .. } => Concern::Setback,
            Self::SwitchEnded { verdict, .. } => match verdict {
                SwitchVerdict::Succeeded => Concern::Routine,
                SwitchVerdict::SucceededWithWarnings { .. } | SwitchVerdict::Failed { .. } => {
                    Concern::Setback
                }
            },
            Self::Recovered { .. }
            | Self::PolicyApplied { .. }
            | Self::DirectiveRecorded { .. }
            | Self::Paused
            | Self::Resumed
            | Self::AlreadyConverged { .. }
            | Self::WorkStarted { .. }
            | Self::Realised { .. }
            | Self::ActivationStarted { .. }
            | Self::SoakStarted { .. }
            | Self::DeferredUntilBoot { .. }
            | Self::ProbeObserved { .. }
            | Self::CommitStarted { .. }
            | Self::Converged { .. } => Concern::Routine,
        }
    }
}
