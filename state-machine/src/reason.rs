//! Why a piece of work failed or was reverted: every decision the agent makes carries one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Millis;
use crate::types::{ProbeId, StorePath};

/// Longest output tail kept in a reason, in bytes; longer tails keep their end.
pub const OUTPUT_TAIL_CAP: usize = 4096;
/// Longest free-text message kept in a reason, in bytes.
pub const MESSAGE_CAP: usize = 1024;

/// Why the host left the path to convergence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reason {
    /// The target closure could not be realised (missing, bad signature, ...).
    RealiseFailed {
        /// What nix said, capped.
        message: String,
    },
    /// The switch exited with an error.
    SwitchFailed {
        /// Exit code, if the process exited.
        exit_code: Option<i32>,
        /// The end of its output.
        output_tail: String,
    },
    /// The switch's unit could not be started.
    SwitchNotLaunched {
        /// Why, in the system's words.
        error: String,
    },
    /// The switch's unit vanished without a result (stopped or collected by someone else).
    SwitchVanished,
    /// The switch did not finish in time.
    SwitchTimedOut {
        /// The limit it exceeded.
        after: Millis,
    },
    /// The switch said it completed but the system is not what was asked.
    VerificationFailed {
        /// What should be there.
        expected: StorePath,
        /// What was observed.
        observed: Option<StorePath>,
    },
    /// The host rebooted while the switch ran, and came up neither on the target nor back on
    /// the known-good generation.
    Interrupted,
    /// The host rebooted while the switch ran.
    RebootedDuringActivation,
    /// The host rebooted during a test-then-commit soak, so it booted the committed generation.
    RebootedDuringSoak,
    /// The host rebooted while the healthy target was being committed.
    RebootedDuringCommit,
    /// A boot-mode host rebooted but not into the target.
    BootedOtherGeneration {
        /// What it booted instead.
        booted: Option<StorePath>,
    },
    /// An enforce probe failed without a break for at least the threshold.
    ProbeFailed {
        /// The probe.
        probe: ProbeId,
        /// How long it had been failing.
        failing_for: Millis,
    },
    /// The control plane asked for the rollback.
    RequestedByControlPlane,
    /// Rolling back did not restore the known-good closure.
    RollbackFailed {
        /// What went wrong with the rollback switch.
        cause: Box<Reason>,
    },
    /// Work failed and there is no known-good closure to go back to.
    NoKnownGood {
        /// The failure that would have called for a rollback.
        cause: Box<Reason>,
    },
    /// The host no longer runs the generation it converged on (switched by hand).
    Drifted {
        /// What it should run.
        expected: StorePath,
        /// What it runs.
        observed: Option<StorePath>,
    },
    /// A deadline fell due and the state machine's own transition for it failed: a bug of the
    /// agent. The host stops where it is (a switch in flight is aborted) so a person can look.
    DeadlineFailed {
        /// The machine's error, capped.
        error: String,
    },
}

impl Reason {
    /// The switch output this reason carries (a failed switch's, or its cause's), if any.
    pub fn output_tail(&self) -> Option<&str> {
        match self {
            Self::SwitchFailed { output_tail, .. } if !output_tail.is_empty() => Some(output_tail),
            Self::RollbackFailed { cause } | Self::NoKnownGood { cause } => cause.output_tail(),
            Self::SwitchFailed { .. }
            | Self::SwitchNotLaunched { .. }
            | Self::SwitchVanished
            | Self::RealiseFailed { .. }
            | Self::SwitchTimedOut { .. }
            | Self::VerificationFailed { .. }
            | Self::Interrupted
            | Self::RebootedDuringActivation
            | Self::RebootedDuringSoak
            | Self::RebootedDuringCommit
            | Self::BootedOtherGeneration { .. }
            | Self::ProbeFailed { .. }
            | Self::RequestedByControlPlane
            | Self::Drifted { .. }
            | Self::DeadlineFailed { .. } => None,
        }
    }

    /// A stable short code for metrics and machine consumers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RealiseFailed { .. } => "realise-failed",
            Self::SwitchFailed { .. } => "switch-failed",
            Self::SwitchNotLaunched { .. } => "switch-not-launched",
            Self::SwitchVanished => "switch-vanished",
            Self::SwitchTimedOut { .. } => "switch-timed-out",
            Self::VerificationFailed { .. } => "verification-failed",
            Self::Interrupted => "interrupted",
            Self::RebootedDuringActivation => "rebooted-during-activation",
            Self::RebootedDuringSoak => "rebooted-during-soak",
            Self::RebootedDuringCommit => "rebooted-during-commit",
            Self::BootedOtherGeneration { .. } => "booted-other-generation",
            Self::ProbeFailed { .. } => "probe-failed",
            Self::RequestedByControlPlane => "requested-by-control-plane",
            Self::RollbackFailed { .. } => "rollback-failed",
            Self::NoKnownGood { .. } => "no-known-good",
            Self::Drifted { .. } => "drifted",
            Self::DeadlineFailed { .. } => "deadline-failed",
        }
    }
}

fn opt(path: &Option<StorePath>) -> &str {
    path.as_ref().map_or("nothing", StorePath::as_str)
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RealiseFailed { message } => write!(f, "realising the target failed: {message}"),
            Self::SwitchFailed {
                exit_code: Some(code),
                ..
            } => write!(f, "switch-to-configuration exited with code {code}"),
            Self::SwitchFailed {
                exit_code: None, ..
            } => write!(
                f,
                "switch-to-configuration did not exit normally (killed by a signal, or its unit failed before it ran)"
            ),
            Self::SwitchNotLaunched { error } => {
                write!(f, "the switch's unit could not be started: {error}")
            }
            Self::SwitchVanished => write!(
                f,
                "the switch's unit vanished without a result (stopped or collected by someone else)"
            ),
            Self::SwitchTimedOut { after } => write!(f, "the switch did not finish within {after}"),
            Self::VerificationFailed { expected, observed } => write!(
                f,
                "the switch finished but the host runs {} instead of {expected}",
                opt(observed)
            ),
            Self::Interrupted => write!(
                f,
                "the switch was interrupted by a reboot and the target is not in place"
            ),
            Self::RebootedDuringActivation => write!(f, "rebooted during activation"),
            Self::RebootedDuringSoak => write!(f, "rebooted during soak"),
            Self::RebootedDuringCommit => write!(f, "rebooted during commit"),
            Self::BootedOtherGeneration { booted } => write!(
                f,
                "the host rebooted into {} instead of the target",
                opt(booted)
            ),
            Self::ProbeFailed { probe, failing_for } => {
                write!(f, "probe {probe} failed without a break for {failing_for}")
            }
            Self::RequestedByControlPlane => write!(f, "rollback requested by the control plane"),
            Self::RollbackFailed { cause } => write!(f, "rollback failed: {cause}"),
            Self::NoKnownGood { cause } => write!(
                f,
                "{cause}; no known-good generation to roll back to, so the host was left as it is"
            ),
            Self::Drifted { expected, observed } => write!(
                f,
                "the host runs {} instead of {expected} (switched outside fleetnode)",
                opt(observed)
            ),
            Self::DeadlineFailed { error } => write!(
                f,
                "a deadline fell due and the agent's state machine failed on it (a bug; the host was stopped where it was, report it): {error}"
            ),
        }
    }
}

/// Keeps at most `cap` bytes of the end of `text`, cut at a character boundary.
pub fn cap_tail(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_owned();
    }
    let mut start = text.len() - cap;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Keeps at most `cap` bytes of the start of `text`, cut at a character boundary.
pub fn cap_head(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_owned();
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_switch_with_output_carries_a_tail() {
        let failed = |tail: &str| Reason::SwitchFailed {
            exit_code: Some(1),
            output_tail: tail.into(),
        };
        assert_eq!(failed("boom").output_tail(), Some("boom"));
        assert_eq!(failed("").output_tail(), None, "an empty tail is no tail");
        let nested = Reason::RollbackFailed {
            cause: Box::new(failed("inner")),
        };
        assert_eq!(nested.output_tail(), Some("inner"));
        assert_eq!(Reason::SwitchVanished.output_tail(), None);
    }

    #[test]
    fn caps_keep_the_right_end_on_char_boundaries() {
        assert_eq!(cap_tail("abcdef", 3), "def");
        assert_eq!(cap_tail("abc", 3), "abc");
        assert_eq!(cap_tail("aé", 1), "");
        assert_eq!(cap_tail("aéb", 2), "b");
        assert_eq!(cap_head("abcdef", 3), "abc");
        assert_eq!(cap_head("éa", 1), "");
        assert_eq!(cap_head("ab", 5), "ab");
    }

    #[test]
    fn missing_systems_read_as_nothing() {
        let hash = "0123456789abcdfghijklmnpqrsvwxyz";
        let expected = StorePath::parse(&format!("/nix/store/{hash}-x")).unwrap();
        let r = Reason::VerificationFailed {
            expected: expected.clone(),
            observed: None,
        };
        assert_eq!(
            r.to_string(),
            format!("the switch finished but the host runs nothing instead of {expected}")
        );
        let r = Reason::VerificationFailed {
            expected: expected.clone(),
            observed: Some(expected.clone()),
        };
        assert!(r.to_string().contains(&format!("runs {expected} instead")));
    }

    #[test]
    fn reasons_explain_themselves() {
        let r = Reason::ProbeFailed {
            probe: ProbeId::parse("web").unwrap(),
            failing_for: Millis::from_secs(60),
        };
        assert_eq!(r.to_string(), "probe web failed without a break for 1m");
        assert_eq!(r.code(), "probe-failed");
        assert_eq!(
            Reason::RebootedDuringSoak.to_string(),
            "rebooted during soak"
        );
        let nested = Reason::NoKnownGood {
            cause: Box::new(Reason::SwitchFailed {
                exit_code: Some(1),
                output_tail: String::new(),
            }),
        };
        assert!(
            nested
                .to_string()
                .starts_with("switch-to-configuration exited with code 1;")
        );
    }
}
