//! Outputs of the state machine: commands for the shell to carry out.
//!
//! The agent's event loop carries out each command, as it is (an activation job it holds, a
//! probe epoch it sets), once the transition that produced it is durable. The control plane never sees commands.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::types::{StorePath, SwitchId};

/// Something the shell must do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    /// Hold a GC root on exactly these generations and release every other one held for this
    /// purpose ([`crate::State::generations_kept`]); sent first whenever the set changes and
    /// at every start, so no switch ever goes to a generation the collector may have taken.
    KeepGenerations {
        /// The whole set.
        generations: BTreeSet<StorePath>,
    },
    /// Realise the closure (and hold a GC root on it while work is in flight).
    Realise {
        /// The closure.
        target: StorePath,
    },
    /// Launch a switch in its own transient unit and follow it until it ends.
    RunSwitch {
        /// Its id.
        switch: SwitchId,
        /// What to run.
        job: SwitchJob,
    },
    /// Follow a switch that is already running (found at start-up) until it ends.
    WatchSwitch {
        /// Its id.
        switch: SwitchId,
    },
    /// Stop a switch that ran past its deadline; its end is not reported.
    AbortSwitch {
        /// Its id.
        switch: SwitchId,
    },
    /// Release the unit of a switch whose result is now durable (its unit keeps the result
    /// until then, so a crash in between cannot lose how the switch ended).
    ReleaseSwitch {
        /// Its id.
        switch: SwitchId,
    },
    /// Cancel every probe task and start them again, tagging results with this epoch.
    ResetProbes {
        /// The new epoch.
        epoch: u64,
    },
    /// Reboot the host (boot mode, when the policy allows it).
    Reboot,
    /// Find out whether the generation now running carries another agent than the running one
    /// (answered with [`crate::Event::AgentUpgradeChecked`]).
    CheckAgentUpgrade,
    /// Exit so that systemd starts the agent the committed generation carries.
    Restart {
        /// What changed, in words.
        reason: String,
    },
}

/// A switch of the system: which closure's own `bin/switch-to-configuration` to run, how, and
/// whether to point the system profile at it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SwitchJob {
    /// Why this switch runs.
    pub purpose: SwitchPurpose,
    /// The closure whose own `bin/switch-to-configuration` runs (never the one under
    /// `/run/current-system`, which would re-activate the generation being left).
    pub closure: StorePath,
    /// The `switch-to-configuration` action.
    pub action: SwitchAction,
    /// Run `nix-env -p <profile> --set <closure>` before the action.
    pub set_profile: bool,
}

/// Why a switch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SwitchPurpose {
    /// Put a target in place.
    Activate,
    /// Make a healthy test-then-commit target the profile and boot entry.
    Commit,
    /// Go back to a known-good closure.
    Rollback,
}

impl SwitchPurpose {
    /// The purpose as written in documents, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        }
    }
}

/// The argument given to `switch-to-configuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SwitchAction {
    /// Activate live; leave the boot loader alone.
    Test,
    /// Activate live and make it the boot default.
    Switch,
    /// Make it the boot default only.
    Boot,
}

impl SwitchAction {
    /// The argument as `switch-to-configuration` spells it.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Switch => "switch",
            Self::Boot => "boot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_spelled_as_switch_to_configuration_expects() {
        assert_eq!(SwitchAction::Test.as_arg(), "test");
        assert_eq!(SwitchAction::Switch.as_arg(), "switch");
        assert_eq!(SwitchAction::Boot.as_arg(), "boot");
    }

    #[test]
    fn purposes_are_spelled_as_on_the_wire() {
        for purpose in [
            SwitchPurpose::Activate,
            SwitchPurpose::Commit,
            SwitchPurpose::Rollback,
        ] {
            let json = serde_json::to_string(&purpose).unwrap();
            assert_eq!(json, format!("\"{}\"", purpose.as_str()));
        }
    }
}
