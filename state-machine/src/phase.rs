//! The phase a host is in: one variant per phase, each phase's data in its own struct.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::command::SwitchJob;
use crate::policy::{ActivationMode, HealthPolicy};
use crate::reason::Reason;
use crate::time::Timestamp;
use crate::types::{Revision, StorePath, SwitchId};

/// The phase a host is in. Each phase that carries data has its own struct.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// No directive has been carried out yet.
    #[default]
    Idle,
    /// Fetching the target closure; the host is untouched.
    Realising(Realising),
    /// A switch to the target is running.
    Activating(Activating),
    /// The target runs; probes are watched until the soak ends.
    Soaking(Soaking),
    /// test-then-commit: the healthy target is being made the profile and boot entry.
    Committing(Committing),
    /// boot mode: the boot entry points at the target; waiting for the host to boot into it.
    Deferred(Deferred),
    /// Going back to a known-good closure.
    RollingBack(RollingBack),
    /// The host runs the directive's target, committed and healthy.
    Converged(Converged),
    /// The host went back to a known-good closure; the reason says why.
    Reverted(Reverted),
    /// Work stopped and the host needs attention (a failed realise, a halt, a failed rollback).
    Failed(Failed),
}

/// One piece of work: a directive being put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Work {
    /// The directive revision this work carries out.
    pub revision: Revision,
    /// The closure being put in place.
    pub target: StorePath,
    /// How.
    pub mode: ActivationMode,
    /// Effective health policy.
    pub health: HealthPolicy,
    /// The last known-good closure when the work began: the only rollback target.
    pub previous: Option<StorePath>,
}

/// Data of [`Phase::Realising`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Realising {
    /// The work in progress.
    pub work: Work,
}

/// Data of [`Phase::Activating`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Activating {
    /// The work in progress.
    pub work: Work,
    /// The running switch.
    pub switch: SwitchId,
    /// When the switch counts as timed out.
    pub deadline: Timestamp,
}

/// Data of [`Phase::Soaking`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Soaking {
    /// The work in progress.
    pub work: Work,
    /// When the soak time has passed.
    pub until: Timestamp,
}

/// Data of [`Phase::Committing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Committing {
    /// The work in progress.
    pub work: Work,
    /// The running commit.
    pub switch: SwitchId,
    /// When the commit counts as timed out.
    pub deadline: Timestamp,
}

/// Data of [`Phase::Deferred`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Deferred {
    /// The work in progress.
    pub work: Work,
    /// Whether the agent asked for the reboot itself.
    pub reboot_requested: bool,
}

/// Data of [`Phase::RollingBack`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RollingBack {
    /// The known-good closure being restored.
    pub to: StorePath,
    /// Why.
    pub reason: Reason,
    /// The target being abandoned and its revision, when a piece of work failed.
    pub abandoned: Option<(StorePath, Revision)>,
    /// The running rollback switch.
    pub switch: SwitchId,
    /// What the rollback switch runs (to launch it again if it never started).
    pub job: SwitchJob,
    /// The switch this rollback replaced (aborted or failed), stopped again at recovery so a
    /// hung one cannot hold the switch lock.
    pub replaces: Option<SwitchId>,
    /// When the rollback counts as timed out.
    pub deadline: Timestamp,
}

/// Data of [`Phase::Converged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Converged {
    /// The directive revision that is in place.
    pub revision: Revision,
    /// The closure the host runs.
    pub target: StorePath,
}

/// Data of [`Phase::Reverted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Reverted {
    /// The known-good closure the host runs again.
    pub to: StorePath,
    /// Why the host went back.
    pub reason: Reason,
    /// The target that was abandoned, if any.
    pub abandoned: Option<StorePath>,
}

/// Data of [`Phase::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Failed {
    /// What went wrong.
    pub reason: Reason,
    /// The target of the work that failed, if any.
    pub target: Option<StorePath>,
    /// True when the failure policy said to halt (the host was left as it is on purpose).
    pub halted: bool,
}

impl Phase {
    /// The phase's name as used in documents, metrics and reports.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Every phase name, in document order.
    pub const NAMES: [&'static str; 10] = [
        "idle",
        "realising",
        "activating",
        "soaking",
        "committing",
        "deferred",
        "rolling-back",
        "converged",
        "reverted",
        "failed",
    ];

    /// Every phase kind, in document order.
    pub const KINDS: [PhaseKind; 10] = [
        PhaseKind::Idle,
        PhaseKind::Realising,
        PhaseKind::Activating,
        PhaseKind::Soaking,
        PhaseKind::Committing,
        PhaseKind::Deferred,
        PhaseKind::RollingBack,
        PhaseKind::Converged,
        PhaseKind::Reverted,
        PhaseKind::Failed,
    ];

    /// The phase's kind, without its data.
    pub fn kind(&self) -> PhaseKind {
        match self {
            Self::Idle => PhaseKind::Idle,
            Self::Realising(_) => PhaseKind::Realising,
            Self::Activating(_) => PhaseKind::Activating,
            Self::Soaking(_) => PhaseKind::Soaking,
            Self::Committing(_) => PhaseKind::Committing,
            Self::Deferred(_) => PhaseKind::Deferred,
            Self::RollingBack(_) => PhaseKind::RollingBack,
            Self::Converged(_) => PhaseKind::Converged,
            Self::Reverted(_) => PhaseKind::Reverted,
            Self::Failed(_) => PhaseKind::Failed,
        }
    }

    /// True when no work is in progress, so the next directive may start.
    pub fn is_at_rest(&self) -> bool {
        match self {
            Self::Idle | Self::Converged(_) | Self::Reverted(_) | Self::Failed(_) => true,
            Self::Realising(_)
            | Self::Activating(_)
            | Self::Soaking(_)
            | Self::Committing(_)
            | Self::Deferred(_)
            | Self::RollingBack(_) => false,
        }
    }

    /// The switch in flight, if one is running.
    pub fn running_switch(&self) -> Option<SwitchId> {
        match self {
            Self::Activating(p) => Some(p.switch),
            Self::Committing(p) => Some(p.switch),
            Self::RollingBack(p) => Some(p.switch),
            Self::Idle
            | Self::Realising(_)
            | Self::Soaking(_)
            | Self::Deferred(_)
            | Self::Converged(_)
            | Self::Reverted(_)
            | Self::Failed(_) => None,
        }
    }

    /// Why the host is rolling back, reverted or failed.
    pub fn reason(&self) -> Option<&crate::Reason> {
        match self {
            Self::RollingBack(p) => Some(&p.reason),
            Self::Reverted(p) => Some(&p.reason),
            Self::Failed(p) => Some(&p.reason),
            Self::Idle
            | Self::Realising(_)
            | Self::Activating(_)
            | Self::Soaking(_)
            | Self::Committing(_)
            | Self::Deferred(_)
            | Self::Converged(_) => None,
        }
    }

    /// The work in progress, if any.
    pub fn work(&self) -> Option<&Work> {
        match self {
            Self::Realising(p) => Some(&p.work),
            Self::Activating(p) => Some(&p.work),
            Self::Soaking(p) => Some(&p.work),
            Self::Committing(p) => Some(&p.work),
            Self::Deferred(p) => Some(&p.work),
            Self::Idle
            | Self::RollingBack(_)
            | Self::Converged(_)
            | Self::Reverted(_)
            | Self::Failed(_) => None,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase's name as a type: what the agent's status and heartbeat carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PhaseKind {
    /// See [`Phase::Idle`].
    Idle,
    /// See [`Phase::Realising`].
    Realising,
    /// See [`Phase::Activating`].
    Activating,
    /// See [`Phase::Soaking`].
    Soaking,
    /// See [`Phase::Committing`].
    Committing,
    /// See [`Phase::Deferred`].
    Deferred,
    /// See [`Phase::RollingBack`].
    RollingBack,
    /// See [`Phase::Converged`].
    Converged,
    /// See [`Phase::Reverted`].
    Reverted,
    /// See [`Phase::Failed`].
    Failed,
}

impl PhaseKind {
    /// The name as used in documents, metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Realising => "realising",
            Self::Activating => "activating",
            Self::Soaking => "soaking",
            Self::Committing => "committing",
            Self::Deferred => "deferred",
            Self::RollingBack => "rolling-back",
            Self::Converged => "converged",
            Self::Reverted => "reverted",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_display_their_documented_name() {
        assert_eq!(Phase::Idle.to_string(), "idle");
        assert_eq!(Phase::NAMES[0], Phase::Idle.name());
        for (name, kind) in Phase::NAMES.iter().zip(Phase::KINDS) {
            assert_eq!(*name, kind.name());
            assert_eq!(kind.to_string(), *name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
    }
}
