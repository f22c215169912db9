//! Fleet rollouts on the operator API: the release manifest, the request that starts a rollout,
//! the rollout as stored and answered, and their caps.
//!
//! `docs/protocol.md` lists the endpoints; `docs/control-plane.md` ("Rollouts") explains the
//! behaviour.

mod manifest;
mod outcome;
mod spec;
mod state;

use fleetnode_state_machine::{MESSAGE_CAP, Millis};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use manifest::{MAX_RELEASE_HOSTS, ManifestError, ReleaseManifest};
pub use outcome::HostOutcome;
pub use spec::{
    ApprovalPolicy, DEFAULT_BAKE, DEFAULT_OFFLINE_DEADLINE, FailureBudget, MAX_ROLLOUT_SPAN,
    MAX_WAVES, OnHalt, RolloutId, StartRollout, WaveSpec,
};
pub use state::{
    Ended, FailureKind, Halted, HostCounts, HostProgress, HostRollback, HostState, PausedProgress,
    Progress, RollbackCause, RollbackOrder, Rollout, RolloutPhase, Wave,
};

use crate::Validate;
use crate::error::WireError;
use crate::operator_api::HostRow;
use crate::validate::{cap_len, invalid};

/// Most rollouts in a list answer (the newest).
pub const MAX_LISTED_ROLLOUTS: usize = 1_000;

/// Answer to `GET /v1/admin/rollouts/{id}` and to every command on a rollout: the rollout and
/// the live state of each of its hosts, as the control plane mirrors them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutStatus {
    /// The rollout.
    pub rollout: Rollout,
    /// One line per host of the release, by id.
    pub hosts: Vec<HostRow>,
}

/// One line of the rollout list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutSummary {
    /// The rollout.
    pub id: RolloutId,
    /// Its phase's name.
    pub phase: String,
    /// The current wave (from 0) and how many there are.
    pub wave: usize,
    /// How many waves.
    pub waves: usize,
    /// Hosts by where they are.
    pub counts: HostCounts,
    /// Failed hosts tolerated.
    pub allowed_failures: u64,
    /// When it was started.
    pub created_at: fleetnode_state_machine::Timestamp,
}

/// Answer to `GET /v1/admin/rollouts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RolloutList {
    /// The newest rollouts, newest first.
    pub rollouts: Vec<RolloutSummary>,
}

impl RolloutSummary {
    /// The summary of a rollout.
    pub fn of(rollout: &Rollout) -> Self {
        Self {
            id: rollout.id,
            phase: rollout.phase.name().to_owned(),
            wave: rollout.wave(),
            waves: rollout.waves.len(),
            counts: rollout.counts(),
            allowed_failures: rollout.allowed_failures,
            created_at: rollout.created_at,
        }
    }
}

// ---------------------------------------------------------------- validation

fn span_ok(what: &'static str, span: Millis, least: Millis) -> Result<(), WireError> {
    if span < least || span > MAX_ROLLOUT_SPAN {
        return Err(invalid(
            what,
            format!("{span} is outside {least} to {MAX_ROLLOUT_SPAN}"),
        ));
    }
    Ok(())
}

impl Validate for ReleaseManifest {
    fn validate(&self) -> Result<(), WireError> {
        if self.hosts.is_empty() {
            return Err(invalid(
                "release.hosts",
                "a release names at least one host",
            ));
        }
        cap_len("release.hosts", self.hosts.len(), MAX_RELEASE_HOSTS)
    }
}

impl Validate for StartRollout {
    fn validate(&self) -> Result<(), WireError> {
        self.release.validate()?;
        if self.waves.is_empty() {
            return Err(invalid("waves", "give at least one wave, e.g. 100%"));
        }
        cap_len("waves", self.waves.len(), MAX_WAVES)?;
        for wave in &self.waves {
            match wave {
                WaveSpec::Count { count: 0 } => {
                    return Err(invalid("waves", "a wave counts at least 1 host"));
                }
                WaveSpec::Percent { percent } if !(1..=100).contains(percent) => {
                    return Err(invalid("waves", format!("{percent}% is not 1% to 100%")));
                }
                WaveSpec::Count { .. } | WaveSpec::Percent { .. } | WaveSpec::Tag { .. } => {}
            }
        }
        if let FailureBudget::Percent { percent } = self.max_failures
            && percent > 100
        {
            return Err(invalid("max_failures", format!("{percent}% is over 100%")));
        }
        span_ok("bake_ms", self.bake_ms, Millis(0))?;
        span_ok(
            "offline_deadline_ms",
            self.offline_deadline_ms,
            Millis::from_secs(1),
        )
    }
}

impl Validate for Rollout {
    fn validate(&self) -> Result<(), WireError> {
        self.release.validate()?;
        cap_len("waves", self.waves.len(), MAX_WAVES)?;
        cap_len("hosts", self.hosts.len(), MAX_RELEASE_HOSTS)?;
        for wave in &self.waves {
            cap_len("waves.hosts", wave.hosts.len(), MAX_RELEASE_HOSTS)?;
        }
        if let RolloutPhase::Halted(halted) = &self.phase {
            cap_len("phase.cause", halted.cause.len(), MESSAGE_CAP * 2)?;
        }
        for progress in self.hosts.values() {
            if progress.wave >= self.waves.len() {
                return Err(invalid(
                    "hosts.wave",
                    "names a wave the rollout does not have",
                ));
            }
            let state_text = match &progress.state {
                HostState::Failed { detail, .. } => detail.len(),
                HostState::TakenOut { why, .. } => why.len(),
                HostState::Pending | HostState::InFlight { .. } | HostState::Converged { .. } => 0,
            };
            cap_len("hosts.state", state_text, MESSAGE_CAP * 2)?;
            let rollback_text = match &progress.rollback {
                Some(HostRollback::Skipped { why } | HostRollback::Failed { why, .. }) => why.len(),
                Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. })
                | Some(HostRollback::Done { .. })
                | None => 0,
            };
            cap_len("hosts.rollback", rollback_text, MESSAGE_CAP * 2)?;
        }
        Ok(())
    }
}

impl Validate for RolloutStatus {
    fn validate(&self) -> Result<(), WireError> {
        self.rollout.validate()?;
        cap_len("hosts", self.hosts.len(), MAX_RELEASE_HOSTS)?;
        self.hosts.iter().try_for_each(Validate::validate)
    }
}

impl Validate for RolloutList {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("rollouts", self.rollouts.len(), MAX_LISTED_ROLLOUTS)?;
        for summary in &self.rollouts {
            if !RolloutPhase::NAMES.contains(&summary.phase.as_str()) {
                return Err(invalid(
                    "rollouts.phase",
                    format!("unknown phase {:?}", summary.phase),
                ));
            }
        }
        Ok(())
    }
}
