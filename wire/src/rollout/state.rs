//! A rollout as the control plane stores it and answers it: the release, the waves planned at
//! the start, the phase, and every host's progress. The control plane's rollout state machine
//! changes it; this module only describes it and answers questions about it.

use std::collections::BTreeMap;

use fleetnode_state_machine::{Millis, Revision, StorePath, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::manifest::ReleaseManifest;
use super::spec::{FailureBudget, OnHalt, RolloutId, WaveSpec};
use crate::ids::HostId;

/// A rollout of a release over the fleet, in waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Rollout {
    /// Its number.
    pub id: RolloutId,
    /// The release.
    pub release: ReleaseManifest,
    /// The waves and the hosts each one takes, fixed when the rollout started.
    pub waves: Vec<Wave>,
    /// Bake time after each wave.
    pub bake_ms: Millis,
    /// The failure budget as asked.
    pub max_failures: FailureBudget,
    /// Failed hosts tolerated: the budget applied to the release's size. One more halts.
    pub allowed_failures: u64,
    /// What a halt does.
    pub on_halt: OnHalt,
    /// How long a host of the current wave may go without a heartbeat.
    pub offline_deadline_ms: Millis,
    /// Where the rollout is.
    pub phase: RolloutPhase,
    /// Every host of the release.
    pub hosts: BTreeMap<HostId, HostProgress>,
    /// Set once the rollout's hosts were ordered back (by a halt or an operator).
    #[serde(default)]
    pub rollback: Option<RollbackOrder>,
    /// When it was started (control plane clock).
    pub created_at: Timestamp,
    /// The latest time the state machine saw; time never runs backwards inside it.
    pub clock: Timestamp,
}

/// One wave: what the operator asked for and the hosts that gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Wave {
    /// As asked.
    pub spec: WaveSpec,
    /// Its hosts, in id order (possibly none, when earlier waves took them all).
    pub hosts: Vec<HostId>,
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum RolloutPhase {
    /// A wave is rolling out or baking.
    Running(Progress),
    /// Held by the operator: no new wave starts; hosts already given the release carry on.
    Paused(PausedProgress),
    /// The failure budget was exceeded; no further host gets the release.
    Halted(Halted),
    /// Every wave converged and baked.
    Completed(Ended),
    /// Stopped by the operator.
    Aborted(Ended),
}

/// Data of [`RolloutPhase::Running`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// The current wave (an index into `waves`, from 0).
    pub wave: usize,
    /// When every host of the wave came to rest: the bake ends then. `None` while rolling out.
    #[serde(default)]
    pub baking_until: Option<Timestamp>,
}

/// Data of [`RolloutPhase::Paused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PausedProgress {
    /// The current wave (an index into `waves`, from 0).
    pub wave: usize,
    /// As in [`Progress::baking_until`].
    #[serde(default)]
    pub baking_until: Option<Timestamp>,
    /// When it was paused.
    pub since: Timestamp,
}

/// Data of [`RolloutPhase::Halted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Halted {
    /// The wave it halted in.
    pub wave: usize,
    /// When.
    pub at: Timestamp,
    /// Failed hosts then.
    pub failures: u64,
    /// The host whose failure exceeded the budget, and why it failed.
    pub cause: String,
}

/// Data of [`RolloutPhase::Completed`] and [`RolloutPhase::Aborted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Ended {
    /// The wave it ended in.
    pub wave: usize,
    /// When.
    pub at: Timestamp,
}

/// Why a rollout's hosts were ordered back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RollbackOrder {
    /// When.
    pub at: Timestamp,
    /// Who asked.
    pub by: RollbackCause,
}

/// Who ordered a rollout's hosts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackCause {
    /// The rollout halted with `on_halt: rollback`.
    Halt,
    /// An operator (`rollout rollback`).
    Operator,
}

/// One host's progress in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostProgress {
    /// Its wave (an index into `waves`).
    pub wave: usize,
    /// How far it got with the release.
    pub state: HostState,
    /// What it ran when it was given the release: where a rollback sends it.
    #[serde(default)]
    pub previous: Option<StorePath>,
    /// Its way back, once the rollout's hosts were ordered back.
    #[serde(default)]
    pub rollback: Option<HostRollback>,
    /// While its wave runs and it is still pending: it waits for one of its maintenance
    /// windows, which opens then (absent when it waits for none; added in protocol 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_opens_at: Option<Timestamp>,
}

/// How far a host got with the release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum HostState {
    /// Its wave has not started.
    Pending,
    /// Given the release under `revision`; not at rest on it yet.
    InFlight {
        /// The directive revision that carries the release.
        revision: Revision,
        /// When it was given the release.
        assigned_at: Timestamp,
    },
    /// Runs its closure, committed and healthy.
    Converged {
        /// The directive revision.
        revision: Revision,
        /// When it was given the release.
        assigned_at: Timestamp,
        /// When it was seen converged.
        at: Timestamp,
    },
    /// Counts against the failure budget.
    Failed {
        /// The directive revision.
        revision: Revision,
        /// When it was given the release.
        assigned_at: Timestamp,
        /// When it was judged failed.
        at: Timestamp,
        /// How it failed.
        kind: FailureKind,
        /// Why, in the agent's words or the control plane's.
        detail: String,
    },
    /// No longer part of the rollout: another directive replaced the release, or the host was
    /// revoked. Counts neither as converged nor as failed.
    TakenOut {
        /// When.
        at: Timestamp,
        /// Why.
        why: String,
    },
}

/// How a host failed a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// It ended failed for the release's revision (the work stopped; the host needs a human).
    Failed,
    /// Its agent rolled it back by itself (activation or health failed).
    Reverted,
    /// No heartbeat for longer than the offline deadline.
    Offline,
}

/// A host's way back to the generation it ran before the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum HostRollback {
    /// To be sent with the next decision.
    Wanted {
        /// Where to.
        to: Option<StorePath>,
    },
    /// Sent as the host's directive `revision`.
    Sent {
        /// Where to.
        to: Option<StorePath>,
        /// The rollback directive's revision.
        revision: Revision,
    },
    /// The host is back.
    Done {
        /// The rollback directive's revision.
        revision: Revision,
        /// When it was seen back.
        at: Timestamp,
    },
    /// Not sent, or no longer followed, and why (the host went back by itself, or moved on
    /// to another directive).
    Skipped {
        /// Why.
        why: String,
    },
    /// The host came to rest elsewhere than where it was sent.
    Failed {
        /// The rollback directive's revision.
        revision: Revision,
        /// What the host did instead.
        why: String,
    },
}

/// Hosts of a rollout counted by where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct HostCounts {
    /// Not given the release yet.
    pub pending: u64,
    /// Given the release, not at rest on it yet.
    pub in_flight: u64,
    /// Converged.
    pub converged: u64,
    /// Failed (against the budget).
    pub failed: u64,
    /// Taken out.
    pub taken_out: u64,
    /// Ordered back and not back yet.
    pub rolling_back: u64,
    /// Back where they were before the rollout.
    pub rolled_back: u64,
}

impl Rollout {
    /// True while the rollout owns its hosts: running or paused. A manual target on an owned
    /// host is refused.
    pub fn is_active(&self) -> bool {
        match self.phase {
            RolloutPhase::Running(_) | RolloutPhase::Paused(_) => true,
            RolloutPhase::Halted(_) | RolloutPhase::Completed(_) | RolloutPhase::Aborted(_) => {
                false
            }
        }
    }

    /// True when this rollout owns `host`.
    pub fn owns(&self, host: &HostId) -> bool {
        self.is_active()
            && self
                .hosts
                .get(host)
                .is_some_and(|p| !matches!(p.state, HostState::TakenOut { .. }))
    }

    /// The current wave, from 0.
    pub fn wave(&self) -> usize {
        match &self.phase {
            RolloutPhase::Running(p) => p.wave,
            RolloutPhase::Paused(p) => p.wave,
            RolloutPhase::Halted(h) => h.wave,
            RolloutPhase::Completed(e) | RolloutPhase::Aborted(e) => e.wave,
        }
    }

    /// Failed hosts.
    pub fn failures(&self) -> u64 {
        self.counts().failed
    }

    /// Hosts by where they are.
    pub fn counts(&self) -> HostCounts {
        let mut counts = HostCounts::default();
        for progress in self.hosts.values() {
            match progress.state {
                HostState::Pending => counts.pending += 1,
                HostState::InFlight { .. } => counts.in_flight += 1,
                HostState::Converged { .. } => counts.converged += 1,
                HostState::Failed { .. } => counts.failed += 1,
                HostState::TakenOut { .. } => counts.taken_out += 1,
            }
            match progress.rollback {
                Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. }) => {
                    counts.rolling_back += 1;
                }
                Some(HostRollback::Done { .. }) => counts.rolled_back += 1,
                Some(HostRollback::Skipped { .. } | HostRollback::Failed { .. }) | None => {}
            }
        }
        counts
    }

    /// True when nothing the rollout started is still moving: it ended, and no host is in
    /// flight or on its way back. `rollout status --watch` stops then.
    pub fn is_settled(&self) -> bool {
        let counts = self.counts();
        !self.is_active() && counts.in_flight == 0 && counts.rolling_back == 0
    }
}

impl HostState {
    /// The revision that carries the release to the host, once it was given it.
    pub fn revision(&self) -> Option<Revision> {
        match self {
            Self::InFlight { revision, .. }
            | Self::Converged { revision, .. }
            | Self::Failed { revision, .. } => Some(*revision),
            Self::Pending | Self::TakenOut { .. } => None,
        }
    }

    /// The state's name as shown in tables and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InFlight { .. } => "in-flight",
            Self::Converged { .. } => "converged",
            Self::Failed { .. } => "failed",
            Self::TakenOut { .. } => "taken-out",
        }
    }
}

impl RolloutPhase {
    /// The phase's name as shown in tables and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Running(_) => "running",
            Self::Paused(_) => "paused",
            Self::Halted(_) => "halted",
            Self::Completed(_) => "completed",
            Self::Aborted(_) => "aborted",
        }
    }

    /// Every phase name.
    pub const NAMES: [&'static str; 5] = ["running", "paused", "halted", "completed", "aborted"];
}

impl FailureKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Reverted => "reverted",
            Self::Offline => "offline",
        }
    }
}
