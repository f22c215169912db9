//! The per-host state: one phase at a time, plus what the host knows about its generations.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{ActivationMode, HealthPolicy, LocalPolicy};
use crate::reason::Reason;
use crate::types::{Millis, ProbeId, Revision, StorePath, SwitchId, Timestamp};

/// How many known-good generations a host remembers (oldest are forgotten first).
pub const KNOWN_GOOD_CAP: usize = 16;
/// How many quarantined targets a host remembers (lowest revisions are forgotten first).
pub const QUARANTINE_CAP: usize = 32;

/// Everything the state machine knows about one host.
///
/// `host` is mirrored exactly by the control plane: it changes only through reported events.
/// `probes` and `clock` are the agent's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// The mirrored part.
    pub host: Host,
    /// Latest probe results of the current epoch (built from reported probe changes).
    pub probes: ProbeBook,
    /// The latest `now` seen; a `now` older than this is treated as this, so time never runs
    /// backwards inside the machine.
    pub clock: Timestamp,
}

/// The part of the state the control plane mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Host {
    /// Seq of the last event emitted (agent) or applied (mirror).
    pub seq: u64,
    /// The current phase.
    pub phase: Phase,
    /// Operator hold: directives are recorded but nothing new starts.
    pub paused: bool,
    /// The host's own configuration.
    pub policy: LocalPolicy,
    /// The latest directive received (latest wins).
    pub desired: Option<Directive>,
    /// The latest directive revision acted upon; a directive is never started twice.
    pub handled: Option<Revision>,
    /// What the host runs, as last observed.
    pub system: SystemView,
    /// Boot id of the running kernel at the last start of the agent.
    pub boot_id: Option<String>,
    /// Generations that were committed and healthy, oldest first.
    pub known_good: Vec<StorePath>,
    /// Where a rollback directive without a named closure goes: the known-good closure the
    /// latest work started from ("undo the latest deployment").
    pub undo_to: Option<StorePath>,
    /// Targets rolled back, with the directive revision that asked for them.
    pub quarantine: BTreeMap<StorePath, Revision>,
    /// Results of probes are counted only when tagged with this epoch.
    pub probe_epoch: u64,
}

use crate::policy::Directive;

/// What the host runs: the live system, the booted system and the system profile (boot entry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemView {
    /// `/run/current-system`.
    pub current: Option<StorePath>,
    /// `/run/booted-system`.
    pub booted: Option<StorePath>,
    /// Target of the system profile, which the boot loader's default entry follows.
    pub profile: Option<StorePath>,
}

impl SystemView {
    /// The live system is `path` and it is also what the host boots into.
    pub fn is_committed_on(&self, path: &StorePath) -> bool {
        self.current.as_ref() == Some(path) && self.profile.as_ref() == Some(path)
    }
}

/// One piece of work: a directive being put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The phase a host is in. Each phase that carries data has its own struct.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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

/// Data of [`Phase::Realising`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realising {
    /// The work in progress.
    pub work: Work,
}

/// Data of [`Phase::Activating`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct Soaking {
    /// The work in progress.
    pub work: Work,
    /// When the soak time has passed.
    pub until: Timestamp,
}

/// Data of [`Phase::Committing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct Deferred {
    /// The work in progress.
    pub work: Work,
    /// Whether the agent asked for the reboot itself.
    pub reboot_requested: bool,
}

/// Data of [`Phase::RollingBack`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub job: crate::effect::SwitchJob,
    /// The switch this rollback replaced (aborted or failed), stopped again at recovery so a
    /// hung one cannot hold the switch lock.
    pub replaces: Option<SwitchId>,
    /// When the rollback counts as timed out.
    pub deadline: Timestamp,
}

/// Data of [`Phase::Converged`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converged {
    /// The directive revision that is in place.
    pub revision: Revision,
    /// The closure the host runs.
    pub target: StorePath,
}

/// Data of [`Phase::Reverted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        match self {
            Self::Idle => "idle",
            Self::Realising(_) => "realising",
            Self::Activating(_) => "activating",
            Self::Soaking(_) => "soaking",
            Self::Committing(_) => "committing",
            Self::Deferred(_) => "deferred",
            Self::RollingBack(_) => "rolling-back",
            Self::Converged(_) => "converged",
            Self::Reverted(_) => "reverted",
            Self::Failed(_) => "failed",
        }
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

/// Probe results of the current epoch, by probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProbeBook {
    /// Per-probe record.
    pub records: BTreeMap<ProbeId, ProbeRecord>,
}

/// What is known about one probe since the epoch began.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// The probe has passed at least once in this epoch.
    pub passed: bool,
    /// Start of the current continuous failing run, if the probe is failing.
    pub failing_since: Option<Timestamp>,
}

impl ProbeRecord {
    /// Length of the current failing run at `now`, if the probe is failing.
    pub fn failing_for(&self, now: Timestamp) -> Option<Millis> {
        self.failing_since.map(|since| now.since(since))
    }
}

/// Why the state machine wants to be woken up next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeadlineKind {
    /// The activation switch times out.
    ActivationTimeout,
    /// The commit switch times out.
    CommitTimeout,
    /// The rollback switch times out.
    RollbackTimeout,
    /// The soak time is over.
    SoakEnd,
    /// An enforce probe's failing run reaches the sustained-failure threshold.
    SustainedFailure {
        /// The failing probe.
        probe: ProbeId,
    },
}

impl State {
    /// The next deadline after the current clock, and why; `None` when nothing is timed.
    ///
    /// The shell sleeps until then and sends a tick.
    pub fn next_deadline(&self) -> Option<(Timestamp, DeadlineKind)> {
        let mut candidates: Vec<(Timestamp, DeadlineKind)> = Vec::new();
        match &self.host.phase {
            Phase::Activating(p) => candidates.push((p.deadline, DeadlineKind::ActivationTimeout)),
            Phase::Committing(p) => candidates.push((p.deadline, DeadlineKind::CommitTimeout)),
            Phase::RollingBack(p) => candidates.push((p.deadline, DeadlineKind::RollbackTimeout)),
            Phase::Soaking(p) => {
                candidates.push((p.until, DeadlineKind::SoakEnd));
                for probe in self.host.policy.enforced() {
                    let since = self
                        .probes
                        .records
                        .get(&probe)
                        .and_then(|r| r.failing_since);
                    if let Some(since) = since {
                        let at = since.plus(p.work.health.sustained_failure_ms);
                        candidates.push((at, DeadlineKind::SustainedFailure { probe }));
                    }
                }
            }
            Phase::Idle
            | Phase::Realising(_)
            | Phase::Deferred(_)
            | Phase::Converged(_)
            | Phase::Reverted(_)
            | Phase::Failed(_) => {}
        }
        candidates
            .into_iter()
            .filter(|(at, _)| *at > self.clock)
            .min_by(|a, b| a.0.cmp(&b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_display_their_documented_name() {
        assert_eq!(Phase::Idle.to_string(), "idle");
        assert_eq!(Phase::NAMES[0], Phase::Idle.name());
    }
}
