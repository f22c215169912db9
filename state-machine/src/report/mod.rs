//! Outbound events: the facts the agent reports (applied to a state by [`crate::evolve()`]).
//! Each renders as a sentence for humans through its `Display` (`display.rs`), the one renderer
//! the agent's log and the operator CLI share.
//!
//! The agent decides what happened and records it as [`Report`]s; applying a report to a state is
//! the same code on both sides, so the control plane's mirror, fed the agent's events in seq
//! order, is exactly the agent's [`crate::Host`].

mod class;
mod display;

pub use class::{Concern, ReportClass};

use serde::{Deserialize, Serialize};

use crate::command::{SwitchJob, SwitchPurpose};
use crate::policy::{Directive, LocalPolicy};
use crate::reason::Reason;
use crate::state::{Host, ProbeBook, SystemView, Work};
use crate::time::Timestamp;
use crate::types::{ProbeId, Revision, StorePath, SwitchId};

/// One reported fact with its place in the host's gap-free sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OutboundEvent {
    /// Previous event's seq plus one, starting at 1.
    pub seq: u64,
    /// When it happened, on the agent's clock.
    pub at: Timestamp,
    /// What happened.
    pub report: Report,
}

impl OutboundEvent {
    /// The first seq this event stands for: a gap's `from_seq`, 1 for a snapshot (it covers
    /// everything before it), else its own seq. A mirror at seq N can apply it when this is at
    /// most N + 1.
    pub fn covers_from(&self) -> u64 {
        match self.report.class() {
            ReportClass::Gap { from_seq, .. } => from_seq,
            ReportClass::Snapshot => 1,
            ReportClass::Observation { .. } | ReportClass::Lifecycle => self.seq,
        }
    }
}

/// A fact the agent reports to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Report {
    /// The agent started and observed the host.
    Recovered {
        /// What the host runs.
        system: SystemView,
        /// The kernel's boot id.
        boot_id: Option<String>,
        /// Set when the durable store was unreadable and moved aside.
        store_reset: Option<String>,
    },
    /// The host's configuration changed.
    PolicyApplied {
        /// The configuration now in force.
        policy: LocalPolicy,
    },
    /// A directive was received and recorded (latest wins).
    DirectiveRecorded {
        /// The directive.
        directive: Directive,
    },
    /// The operator hold began.
    Paused,
    /// The operator hold ended.
    Resumed,
    /// The directive's target is already current and committed: converged without work.
    AlreadyConverged {
        /// The directive revision.
        revision: Revision,
        /// The closure in place.
        target: StorePath,
    },
    /// Work on a directive began (realising first).
    WorkStarted {
        /// The work.
        work: Work,
    },
    /// The target closure is realised.
    Realised {
        /// The closure.
        target: StorePath,
    },
    /// The activation switch was launched.
    ActivationStarted {
        /// Its id.
        switch: SwitchId,
        /// What runs.
        job: SwitchJob,
        /// When it times out.
        deadline: Timestamp,
    },
    /// A switch ended; the host's systems were observed.
    SwitchEnded {
        /// Which switch.
        switch: SwitchId,
        /// Why it ran.
        purpose: SwitchPurpose,
        /// What the host runs now.
        system: SystemView,
        /// The verdict on the switch itself.
        verdict: SwitchVerdict,
    },
    /// The target runs; soaking began with a fresh probe epoch.
    SoakStarted {
        /// The new probe epoch.
        epoch: u64,
        /// When the soak time is over.
        until: Timestamp,
    },
    /// boot mode: waiting for the host to boot into the target.
    DeferredUntilBoot {
        /// The agent asked for the reboot itself.
        reboot_requested: bool,
    },
    /// A probe's status changed (or it reported for the first time in this epoch).
    ProbeObserved {
        /// The epoch of the result.
        epoch: u64,
        /// Which probe.
        probe: ProbeId,
        /// Did it pass.
        passed: bool,
        /// Short explanation.
        detail: String,
    },
    /// The soak ended healthy and the commit switch was launched.
    CommitStarted {
        /// Its id.
        switch: SwitchId,
        /// What runs.
        job: SwitchJob,
        /// When it times out.
        deadline: Timestamp,
    },
    /// The target is in place, committed and healthy.
    Converged {
        /// The directive revision.
        revision: Revision,
        /// The closure.
        target: StorePath,
    },
    /// A rollback switch was launched.
    RollbackStarted {
        /// Its id.
        switch: SwitchId,
        /// What runs.
        job: SwitchJob,
        /// The known-good closure being restored.
        to: StorePath,
        /// Why.
        reason: Reason,
        /// The target abandoned (quarantined under this revision), when work failed.
        abandoned: Option<(StorePath, Revision)>,
        /// The rollback directive's revision, when the control plane asked.
        revision: Option<Revision>,
        /// When it times out.
        deadline: Timestamp,
    },
    /// The host runs a known-good closure again.
    Reverted {
        /// The closure.
        to: StorePath,
        /// Why the host went back.
        reason: Reason,
        /// The target abandoned and its revision, if any (quarantined).
        abandoned: Option<(StorePath, Revision)>,
    },
    /// Work stopped; a human should look.
    Failed {
        /// Why.
        reason: Reason,
        /// The target of the failed work.
        target: Option<StorePath>,
        /// The failure policy said halt.
        halted: bool,
    },
    /// Work in progress was dropped for a newer directive.
    Superseded {
        /// The revision of the dropped work.
        revision: Revision,
        /// Its target.
        target: StorePath,
    },
    /// A rollback directive could not be honoured.
    RollbackRejected {
        /// The directive's revision.
        revision: Revision,
        /// Why.
        reason: RejectReason,
    },
    /// The agent's mirrored state as it is, for a control plane whose mirror cannot follow the
    /// events (see `docs/protocol.md`, "Resync"): it covers every seq up to its own, and the
    /// mirror restarts from it.
    Snapshot {
        /// The mirrored part of the agent's state (its `seq` is replaced by this event's).
        host: Box<Host>,
        /// The probe records of the current epoch.
        probes: ProbeBook,
        /// Why it was sent.
        cause: ResyncCause,
    },
    /// Stands for the events from `from_seq` up to this event's seq, which are not delivered.
    Gap {
        /// First seq covered.
        from_seq: u64,
        /// Why they are missing.
        cause: GapCause,
    },
}

/// The verdict on a switch that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum SwitchVerdict {
    /// It did what was asked.
    Succeeded,
    /// The system switched but some units failed (exit code 4); probes decide health.
    SucceededWithWarnings {
        /// The end of its output.
        output_tail: String,
    },
    /// It did not do what was asked.
    Failed {
        /// Why.
        reason: Reason,
    },
}

/// Why a rollback directive was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RejectReason {
    /// The named closure is not a known-good generation of this host.
    UnknownGeneration {
        /// The closure asked for.
        to: StorePath,
    },
    /// There is no known-good generation other than the current one.
    NoPreviousGeneration,
    /// The host already runs the rollback's closure, committed, and rests: nothing changes,
    /// the phase (and a revert's or failure's reason) included.
    AlreadyInPlace {
        /// The closure the rollback would go to.
        to: StorePath,
    },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownGeneration { to } => write!(
                f,
                "{to} is not a known-good generation of this host; only generations it committed and found healthy can be rolled back to"
            ),
            Self::NoPreviousGeneration => {
                write!(
                    f,
                    "the host knows no good generation other than the one it runs"
                )
            }
            Self::AlreadyInPlace { to } => write!(
                f,
                "the host already runs {to}, committed: there is nothing to roll back"
            ),
        }
    }
}

/// Why the agent sent a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResyncCause {
    /// The control plane answered `resync_required`: its log of the stream ends at `log_end`,
    /// before events the agent no longer holds (restored from an older backup, or its store
    /// was lost), or it holds another history.
    ControlPlaneLog {
        /// The last seq it holds.
        log_end: u64,
    },
    /// The control plane acknowledged seqs beyond every one the agent has (the host was
    /// restored from a snapshot, or the control plane holds another history).
    AckBeyondAgent {
        /// What it acknowledged.
        acked: u64,
    },
    /// The control plane refused a lifecycle event for good; the mirror lacks its effect.
    DeadLettered {
        /// The refused event.
        seq: u64,
    },
}

/// Why events are missing from the delivered sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GapCause {
    /// Probe observations were compacted because the queue was full.
    Compacted {
        /// How many probe observations were dropped.
        dropped: u64,
    },
    /// The control plane permanently rejected the event; it was dead-lettered on the agent.
    DeadLettered {
        /// The control plane's error code.
        code: String,
    },
}

impl Report {
    /// The report's name, for documents and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Recovered { .. } => "recovered",
            Self::PolicyApplied { .. } => "policy-applied",
            Self::DirectiveRecorded { .. } => "directive-recorded",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::AlreadyConverged { .. } => "already-converged",
            Self::WorkStarted { .. } => "work-started",
            Self::Realised { .. } => "realised",
            Self::ActivationStarted { .. } => "activation-started",
            Self::SwitchEnded { .. } => "switch-ended",
            Self::SoakStarted { .. } => "soak-started",
            Self::DeferredUntilBoot { .. } => "deferred-until-boot",
            Self::ProbeObserved { .. } => "probe-observed",
            Self::CommitStarted { .. } => "commit-started",
            Self::Converged { .. } => "converged",
            Self::RollbackStarted { .. } => "rollback-started",
            Self::Reverted { .. } => "reverted",
            Self::Failed { .. } => "failed",
            Self::Superseded { .. } => "superseded",
            Self::RollbackRejected { .. } => "rollback-rejected",
            Self::Snapshot { .. } => "snapshot",
            Self::Gap { .. } => "gap",
        }
    }

    /// The output tail of a failed or warned switch this report carries, if any.
    pub fn output_tail(&self) -> Option<&str> {
        if let Self::SwitchEnded { verdict, .. } = self {
            return match verdict {
                SwitchVerdict::Succeeded => None,
                SwitchVerdict::SucceededWithWarnings { output_tail } => Some(output_tail),
                SwitchVerdict::Failed { reason } => reason.output_tail(),
            };
        }
        self.reason().and_then(Reason::output_tail)
    }

    /// True for lifecycle facts, which are never dropped; false for probe observations, which a
    /// full queue may compact.
    pub fn is_lifecycle(&self) -> bool {
        !matches!(self.class(), ReportClass::Observation { .. })
    }

    /// Every report name, in document order.
    pub const NAMES: [&'static str; 22] = [
        "recovered",
        "policy-applied",
        "directive-recorded",
        "paused",
        "resumed",
        "already-converged",
        "work-started",
        "realised",
        "activation-started",
        "switch-ended",
        "soak-started",
        "deferred-until-boot",
        "probe-observed",
        "commit-started",
        "converged",
        "rollback-started",
        "reverted",
        "failed",
        "superseded",
        "rollback-rejected",
        "snapshot",
        "gap",
    ];
}
