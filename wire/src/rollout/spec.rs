//! What an operator asks for when starting a rollout: the waves, the bake time, the failure
//! budget and what to do on a halt. Each has a text form for the command line
//! (`--waves 1,10%,100%`, `--max-failures 2` or `10%`) that parses into the same type.

use std::fmt;

use fleetnode_state_machine::Millis;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::manifest::ReleaseManifest;
use crate::ids::Tag;

/// Most waves in one rollout.
pub const MAX_WAVES: usize = 32;
/// Longest bake time or offline deadline accepted: a week.
pub const MAX_ROLLOUT_SPAN: Millis = Millis(7 * 24 * 3_600_000);
/// Bake time when none is given.
pub const DEFAULT_BAKE: Millis = Millis(10 * 60_000);
/// How long a host of the current wave may go without a heartbeat before it counts as failed,
/// when no deadline is given.
pub const DEFAULT_OFFLINE_DEADLINE: Millis = Millis(10 * 60_000);

/// A rollout's number, given by the control plane in the order rollouts are started.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(transparent)]
pub struct RolloutId(pub u64);

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How far one wave takes the release. Counts and percentages are cumulative (the hosts that
/// have the release once the wave is done), taken in host-id order; a tag wave takes every host
/// of the release with the tag that an earlier wave did not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum WaveSpec {
    /// Up to this many hosts in all (`5`).
    Count {
        /// Hosts covered once the wave is done, at least 1.
        count: u64,
    },
    /// Up to this share of the release's hosts in all, rounded up (`10%`).
    Percent {
        /// 1 to 100.
        percent: u8,
    },
    /// The hosts with this tag (`tag:canary`).
    Tag {
        /// The tag.
        tag: Tag,
    },
}

impl WaveSpec {
    /// Parses `5`, `10%` or `tag:canary`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(tag) = text.strip_prefix("tag:") {
            return Tag::parse(tag)
                .map(|tag| Self::Tag { tag })
                .map_err(|e| e.to_string());
        }
        if let Some(number) = text.strip_suffix('%') {
            return match number.trim().parse::<u8>() {
                Ok(percent @ 1..=100) => Ok(Self::Percent { percent }),
                Ok(_) | Err(_) => Err(format!(
                    "wave {text:?}: a percentage is 1% to 100% of the release's hosts"
                )),
            };
        }
        match text.parse::<u64>() {
            Ok(count @ 1..) => Ok(Self::Count { count }),
            Ok(0) | Err(_) => Err(format!(
                "wave {text:?} is not a host count (5), a share (10%) or a tag (tag:canary)"
            )),
        }
    }

    /// Parses a comma-separated list of waves, `1,10%,100%`.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let waves = text
            .split(',')
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if waves.len() > MAX_WAVES {
            return Err(format!("{} waves; at most {MAX_WAVES}", waves.len()));
        }
        Ok(waves)
    }

    /// The waves used when none are given: one canary host, then a tenth, then everyone.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::Count { count: 1 },
            Self::Percent { percent: 10 },
            Self::Percent { percent: 100 },
        ]
    }
}

impl fmt::Display for WaveSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count { count } => write!(f, "{count}"),
            Self::Percent { percent } => write!(f, "{percent}%"),
            Self::Tag { tag } => write!(f, "tag:{tag}"),
        }
    }
}

/// How many failed hosts a rollout tolerates; one more halts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum FailureBudget {
    /// This many failed hosts.
    Count {
        /// Failures tolerated.
        count: u64,
    },
    /// This share of the release's hosts, rounded down.
    Percent {
        /// 0 to 100.
        percent: u8,
    },
}

impl Default for FailureBudget {
    /// No failure is tolerated: the first failed host halts the rollout.
    fn default() -> Self {
        Self::Count { count: 0 }
    }
}

impl FailureBudget {
    /// Parses `2` or `10%`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(number) = text.strip_suffix('%') {
            return match number.trim().parse::<u8>() {
                Ok(percent @ 0..=100) => Ok(Self::Percent { percent }),
                Ok(_) | Err(_) => Err(format!(
                    "failure budget {text:?}: a share is 0% to 100% of the release's hosts"
                )),
            };
        }
        text.parse::<u64>()
            .map(|count| Self::Count { count })
            .map_err(|_| {
                format!("failure budget {text:?} is not a number of hosts (2) or a share (10%)")
            })
    }

    /// The failures tolerated in a release of `hosts` hosts.
    pub fn allowed(self, hosts: usize) -> u64 {
        let hosts = u64::try_from(hosts).unwrap_or(u64::MAX);
        match self {
            Self::Count { count } => count,
            Self::Percent { percent } => hosts.saturating_mul(u64::from(percent)) / 100,
        }
    }
}

impl fmt::Display for FailureBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count { count } => write!(f, "{count}"),
            Self::Percent { percent } => write!(f, "{percent}%"),
        }
    }
}

/// What a halted rollout does with the hosts it already moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnHalt {
    /// Leave them as they are; no further host gets the release.
    #[default]
    Stop,
    /// Also send each of them back to the generation it ran before the rollout.
    Rollback,
}

impl fmt::Display for OnHalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stop => "stop",
            Self::Rollback => "rollback",
        })
    }
}

/// Which waves wait for an operator's approval before they start (added in protocol 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicy {
    /// None: each wave starts when the previous one is done.
    #[default]
    Never,
    /// Every wave, the first included: each starts only after `rollout approve`.
    Always,
}

impl ApprovalPolicy {
    /// Whether this is the default, which is left out of the JSON.
    pub fn is_never(&self) -> bool {
        *self == Self::Never
    }

    /// Reads `never` or `always`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "never" => Ok(Self::Never),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "approval policy {other:?} is not one of `always` (every wave waits for `rollout approve`) or `never`"
            )),
        }
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Never => "never",
            Self::Always => "always",
        })
    }
}

/// Body of `POST /v1/admin/rollouts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StartRollout {
    /// The release.
    pub release: ReleaseManifest,
    /// The waves, in order; the last must cover every host of the release.
    #[serde(default = "WaveSpec::defaults")]
    pub waves: Vec<WaveSpec>,
    /// How long a wave must stay good after every host of it converged, before the next starts.
    #[serde(default = "default_bake")]
    pub bake_ms: Millis,
    /// The failure budget.
    #[serde(default)]
    pub max_failures: FailureBudget,
    /// What a halt does.
    #[serde(default)]
    pub on_halt: OnHalt,
    /// How long a host of the current wave may go without a heartbeat before it counts as
    /// failed.
    #[serde(default = "default_offline_deadline")]
    pub offline_deadline_ms: Millis,
    /// Which waves wait for an operator's approval (absent: none; added in protocol 1.1).
    #[serde(default, skip_serializing_if = "ApprovalPolicy::is_never")]
    pub require_approval: ApprovalPolicy,
}

fn default_bake() -> Millis {
    DEFAULT_BAKE
}

fn default_offline_deadline() -> Millis {
    DEFAULT_OFFLINE_DEADLINE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_parse_from_the_command_line_and_print_back() {
        let waves = WaveSpec::parse_list("tag:canary,1,10%,100%").unwrap();
        let shown: Vec<String> = waves.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["tag:canary", "1", "10%", "100%"]);
        for bad in ["0", "0%", "101%", "tag:Canary", "ten", "", "5,,6"] {
            assert!(WaveSpec::parse_list(bad).is_err(), "{bad}");
        }
        let many = vec!["1"; MAX_WAVES + 1].join(",");
        assert!(WaveSpec::parse_list(&many).is_err());
    }

    #[test]
    fn a_failure_budget_is_a_count_or_a_share_rounded_down() {
        assert_eq!(FailureBudget::parse("2").unwrap().allowed(100), 2);
        assert_eq!(FailureBudget::parse("10%").unwrap().allowed(25), 2);
        assert_eq!(FailureBudget::parse("10%").unwrap().allowed(9), 0);
        assert_eq!(FailureBudget::parse("100%").unwrap().allowed(7), 7);
        assert_eq!(FailureBudget::default().allowed(1000), 0);
        for bad in ["-1", "101%", "x", "1.5"] {
            assert!(FailureBudget::parse(bad).is_err(), "{bad}");
        }
    }
}
