//! What the control plane asks for (directives) and what the host's own configuration says
//! (local policy).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Millis;
use crate::types::{ProbeId, Revision, StorePath};

/// How a target closure is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ActivationMode {
    /// Activate live without touching profile or boot loader, soak, and commit only when healthy.
    #[default]
    TestThenCommit,
    /// Set profile and boot entry and activate live, then soak.
    Switch,
    /// Set profile and boot entry only; the host is deferred until it boots into the target.
    Boot,
}

impl fmt::Display for ActivationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TestThenCommit => "test-then-commit",
            Self::Switch => "switch",
            Self::Boot => "boot",
        })
    }
}

/// What the agent does when an activation or its health fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Roll back to the last known-good closure.
    #[default]
    Rollback,
    /// Stop and leave the host as it is for a human to look at.
    Halt,
}

/// Whether a probe can fail a soak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ProbeMode {
    /// Must pass for a soak to end healthy; a sustained failure fails the soak.
    Enforce,
    /// Reported only; never fails a soak.
    Observe,
}

/// A host's desired state as the control plane serves it: level-triggered, never consumed by
/// reading it, so an answer lost on the way loses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DesiredState {
    /// Increases with every change (a new directive, pause, resume).
    pub revision: Revision,
    /// The directive in force, if one was ever set.
    #[serde(default)]
    pub directive: Option<Directive>,
    /// The control plane's hold on the host.
    #[serde(default)]
    pub paused: bool,
}

/// A desired state the control plane assigned to a host, with its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Directive {
    /// Increases with every change to the host's desired state.
    pub revision: Revision,
    /// What the host should do.
    #[serde(flatten)]
    pub kind: DirectiveKind,
}

/// The two things a control plane can ask of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DirectiveKind {
    /// Put the target closure in place.
    Activate {
        /// The system closure to run.
        target: StorePath,
        /// How to activate it; the host's default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<ActivationMode>,
        /// Health settings; the host's defaults fill what is absent.
        #[serde(default)]
        health: HealthOverrides,
    },
    /// Go back to a previous known-good generation.
    Rollback {
        /// The generation to go back to (a known-good one); when absent, where the latest work
        /// started ("undo the latest deployment"), or the newest known-good generation other
        /// than the running one before any work.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<StorePath>,
    },
}

/// Health settings a directive may set; absent fields take the host's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthOverrides {
    /// How long the new generation must stay healthy before it is committed or converged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_ms: Option<Millis>,
    /// How long an enforce probe may fail without a break before the soak fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sustained_failure_ms: Option<Millis>,
    /// What to do on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailurePolicy>,
}

/// The effective health policy of one piece of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HealthPolicy {
    /// How long the new generation must stay healthy.
    pub soak_ms: Millis,
    /// Longest continuous failing run of an enforce probe that is tolerated.
    pub sustained_failure_ms: Millis,
    /// What to do on failure.
    pub on_failure: FailurePolicy,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            soak_ms: Millis::from_secs(300),
            sustained_failure_ms: Millis::from_secs(60),
            on_failure: FailurePolicy::Rollback,
        }
    }
}

impl HealthPolicy {
    /// These defaults with a directive's overrides applied.
    pub fn with(self, overrides: HealthOverrides) -> Self {
        Self {
            soak_ms: overrides.soak_ms.unwrap_or(self.soak_ms),
            sustained_failure_ms: overrides
                .sustained_failure_ms
                .unwrap_or(self.sustained_failure_ms),
            on_failure: overrides.on_failure.unwrap_or(self.on_failure),
        }
    }
}

/// The host's own configuration, as far as decisions depend on it.
///
/// The agent feeds it in with every start (see [`crate::Observation`]); a change is reported so
/// the control plane's mirror decides with the same numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct LocalPolicy {
    /// Activation mode when a directive names none.
    pub default_mode: ActivationMode,
    /// Health defaults when a directive leaves them out.
    pub health: HealthPolicy,
    /// Longest an activation (or commit) may run before it counts as timed out.
    pub activation_timeout_ms: Millis,
    /// Longest a rollback may run before the host is marked failed.
    pub rollback_timeout_ms: Millis,
    /// May the agent reboot the host itself for a boot-mode activation.
    pub reboot_allowed: bool,
    /// The configured probes and their modes. The built-in control-plane probe is always
    /// enforced and need not be listed (see [`LocalPolicy::enforced`]).
    pub probes: BTreeMap<ProbeId, ProbeMode>,
}

impl Default for LocalPolicy {
    fn default() -> Self {
        Self {
            default_mode: ActivationMode::TestThenCommit,
            health: HealthPolicy::default(),
            activation_timeout_ms: Millis::from_secs(15 * 60),
            rollback_timeout_ms: Millis::from_secs(15 * 60),
            reboot_allowed: false,
            probes: BTreeMap::new(),
        }
    }
}

impl LocalPolicy {
    /// The mode of a probe; the built-in control-plane probe is enforced unless configured.
    pub fn mode_of(&self, probe: &ProbeId) -> Option<ProbeMode> {
        match self.probes.get(probe) {
            Some(mode) => Some(*mode),
            None if probe.as_str() == ProbeId::CONTROL_PLANE => Some(ProbeMode::Enforce),
            None => None,
        }
    }

    /// Every enforce-mode probe, the built-in control-plane probe included unless configured
    /// otherwise, in a stable order.
    pub fn enforced(&self) -> Vec<ProbeId> {
        let mut out: Vec<ProbeId> = self
            .probes
            .iter()
            .filter(|(_, mode)| **mode == ProbeMode::Enforce)
            .map(|(id, _)| id.clone())
            .collect();
        let builtin = ProbeId::control_plane();
        if !self.probes.contains_key(&builtin) {
            out.push(builtin);
            out.sort();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_display_as_on_the_wire() {
        for mode in [
            ActivationMode::TestThenCommit,
            ActivationMode::Switch,
            ActivationMode::Boot,
        ] {
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{mode}\""));
        }
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = HealthPolicy::default();
        let merged = base.with(HealthOverrides {
            soak_ms: Some(Millis(10)),
            sustained_failure_ms: None,
            on_failure: Some(FailurePolicy::Halt),
        });
        assert_eq!(merged.soak_ms, Millis(10));
        assert_eq!(merged.sustained_failure_ms, base.sustained_failure_ms);
        assert_eq!(merged.on_failure, FailurePolicy::Halt);
        let kept = base.with(HealthOverrides {
            soak_ms: None,
            sustained_failure_ms: Some(Millis(7)),
            on_failure: None,
        });
        assert_eq!(kept.soak_ms, base.soak_ms);
        assert_eq!(kept.sustained_failure_ms, Millis(7));
        assert_eq!(kept.on_failure, base.on_failure);
    }

    #[test]
    fn control_plane_probe_is_enforced_unless_configured() {
        let mut policy = LocalPolicy::default();
        let web = ProbeId::parse("web").unwrap();
        let zz = ProbeId::parse("zz").unwrap();
        policy.probes.insert(web.clone(), ProbeMode::Enforce);
        policy.probes.insert(zz.clone(), ProbeMode::Observe);
        assert_eq!(policy.enforced(), vec![ProbeId::control_plane(), web]);
        assert_eq!(
            policy.mode_of(&ProbeId::control_plane()),
            Some(ProbeMode::Enforce)
        );
        assert_eq!(policy.mode_of(&zz), Some(ProbeMode::Observe));
        assert_eq!(policy.mode_of(&ProbeId::parse("nope").unwrap()), None);
        policy
            .probes
            .insert(ProbeId::control_plane(), ProbeMode::Observe);
        assert_eq!(policy.enforced(), vec![ProbeId::parse("web").unwrap()]);
    }

    #[test]
    fn directive_kinds_are_tagged_and_unknown_kinds_fail() {
        let json = r#"{"revision":3,"kind":"rollback"}"#;
        let d: Directive = serde_json::from_str(json).unwrap();
        assert_eq!(d.kind, DirectiveKind::Rollback { to: None });
        let bad = r#"{"revision":3,"kind":"reformat-disk"}"#;
        let err = serde_json::from_str::<Directive>(bad).unwrap_err();
        assert!(err.to_string().contains("reformat-disk"), "{err}");
    }
}
