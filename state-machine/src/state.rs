//! The per-host state: one phase at a time, plus what the host knows about its generations.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::policy::LocalPolicy;
use crate::time::{Millis, Timestamp};
use crate::types::{ProbeId, Revision, StorePath, SwitchId};

pub use crate::phase::{
    Activating, Committing, Converged, Deferred, Failed, Phase, PhaseKind, Realising, Reverted,
    RollingBack, Soaking, Work,
};

/// How many known-good generations a host remembers (oldest are forgotten first).
pub const KNOWN_GOOD_CAP: usize = 16;
/// How many quarantined targets a host remembers (lowest revisions are forgotten first).
pub const QUARANTINE_CAP: usize = 32;

/// Everything the state machine knows about one host.
///
/// `host` is mirrored exactly by the control plane: it changes only through reported events.
/// `probes` and `clock` are the agent's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct State {
    /// The mirrored part.
    pub host: Host,
    /// Latest probe results of the current epoch (built from reported probe changes).
    pub probes: ProbeBook,
    /// The latest `now` seen; a `now` older than this is treated as this, so time never runs
    /// backwards inside the machine.
    pub clock: Timestamp,
    /// The control plane's hold flag as last seen since the agent started (`None` before the
    /// first answer): only a change of it pauses or resumes, so a local pause holds until the
    /// control plane changes its own flag.
    #[serde(default)]
    pub control_plane_paused: Option<bool>,
    /// A switch that found the switch lock taken by another switch, and when to launch it
    /// again.
    #[serde(default)]
    pub relaunch: Option<Relaunch>,
}

/// A switch waiting to be launched again because another switch held the switch lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Relaunch {
    /// The switch.
    pub switch: SwitchId,
    /// When to launch it again.
    pub at: Timestamp,
}

/// The part of the state the control plane mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// Probe results of the current epoch, by probe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProbeBook {
    /// Per-probe record.
    pub records: BTreeMap<ProbeId, ProbeRecord>,
}

/// What is known about one probe since the epoch began.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// A switch that found the switch lock taken is launched again.
    SwitchRelaunch,
}

impl State {
    /// The generations the host may have to switch to again, which must outlive any garbage
    /// collection for as long as they are in this set: the live system, every known-good
    /// generation (a rollback directive may name any of them), the undo target, the rollback
    /// target of the work in progress and the closure a rollback is restoring. The closure
    /// being put in place is not here: the realise holds its own root while work runs, and it
    /// joins this set as the live system or a known-good generation.
    pub fn generations_kept(&self) -> BTreeSet<StorePath> {
        let host = &self.host;
        let mut kept: BTreeSet<StorePath> = host.known_good.iter().cloned().collect();
        kept.extend(host.system.current.iter().cloned());
        kept.extend(host.undo_to.iter().cloned());
        match &host.phase {
            Phase::RollingBack(p) => {
                kept.insert(p.to.clone());
            }
            Phase::Reverted(p) => {
                kept.insert(p.to.clone());
            }
            Phase::Idle
            | Phase::Realising(_)
            | Phase::Activating(_)
            | Phase::Soaking(_)
            | Phase::Committing(_)
            | Phase::Deferred(_)
            | Phase::Converged(_)
            | Phase::Failed(_) => {}
        }
        if let Some(previous) = host.phase.work().and_then(|w| w.previous.clone()) {
            kept.insert(previous);
        }
        kept
    }

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
        if let Some(relaunch) = self.relaunch {
            candidates.push((relaunch.at, DeadlineKind::SwitchRelaunch));
        }
        candidates
            .into_iter()
            .filter(|(at, _)| *at > self.clock)
            .min_by(|a, b| a.0.cmp(&b.0))
    }
}
