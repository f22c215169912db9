//! Why `step` refused an input. Every variant leaves the state as it was.

use crate::evolve::EvolveError;
use crate::types::{ProbeId, Revision, StorePath, SwitchId};

/// An input that makes no sense in the current state. The caller logs it and carries on; the
/// state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The event does not apply to the phase the host is in.
    #[error("{event} makes no sense while the host is {phase}")]
    Unexpected {
        /// The event's name.
        event: &'static str,
        /// The phase's name.
        phase: &'static str,
    },
    /// A directive older than the one already recorded (latest wins).
    #[error("directive {got} is older than the recorded {recorded}; ignored")]
    StaleDirective {
        /// Revision received.
        got: Revision,
        /// Revision recorded.
        recorded: Revision,
    },
    /// A directive with the revision already recorded but a different content.
    #[error("directive {revision} differs from the one recorded under the same revision")]
    ConflictingDirective {
        /// The revision.
        revision: Revision,
    },
    /// A realise result for a closure that is not being realised.
    #[error("realise result for {target}, which is not being realised")]
    UnknownRealise {
        /// The closure named by the result.
        target: StorePath,
    },
    /// A switch result for a switch that is not in flight (for example one that timed out).
    #[error("result of switch {got}, but the switch in flight is {running:?}")]
    UnknownSwitch {
        /// The switch named by the result.
        got: SwitchId,
        /// The switch in flight, if any.
        running: Option<SwitchId>,
    },
    /// A probe result tagged with an epoch that is not the current one.
    #[error("result of probe {probe} from epoch {got}; the current epoch is {current}")]
    StaleProbeResult {
        /// The probe.
        probe: ProbeId,
        /// Its epoch.
        got: u64,
        /// The current epoch.
        current: u64,
    },
    /// A result from a probe that is not configured.
    #[error("result of probe {probe}, which is not configured")]
    UnknownProbe {
        /// The probe.
        probe: ProbeId,
    },
    /// Control-plane side: a reported event beyond the next expected seq.
    #[error("reported event seq {got} leaves a gap: the next expected seq is {expected}")]
    SeqGap {
        /// The next seq the mirror can apply.
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// Control-plane side: a reported event does not fit the mirrored state.
    #[error("mirror diverged: {0}")]
    Diverged(#[from] EvolveError),
}

impl TransitionError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unexpected { .. } => "unexpected",
            Self::StaleDirective { .. } => "stale-directive",
            Self::ConflictingDirective { .. } => "conflicting-directive",
            Self::UnknownRealise { .. } => "unknown-realise",
            Self::UnknownSwitch { .. } => "unknown-switch",
            Self::StaleProbeResult { .. } => "stale-probe-result",
            Self::UnknownProbe { .. } => "unknown-probe",
            Self::SeqGap { .. } => "seq-gap",
            Self::Diverged(_) => "diverged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let errors = [
            TransitionError::Unexpected {
                event: "tick",
                phase: "idle",
            },
            TransitionError::StaleDirective {
                got: Revision(1),
                recorded: Revision(2),
            },
            TransitionError::ConflictingDirective {
                revision: Revision(1),
            },
            TransitionError::UnknownSwitch {
                got: SwitchId(1),
                running: None,
            },
            TransitionError::StaleProbeResult {
                probe: ProbeId::control_plane(),
                got: 1,
                current: 2,
            },
            TransitionError::UnknownProbe {
                probe: ProbeId::control_plane(),
            },
            TransitionError::SeqGap {
                expected: 1,
                got: 3,
            },
            TransitionError::Diverged(EvolveError {
                report: "x",
                phase: "y",
            }),
        ];
        let mut codes: Vec<&str> = errors.iter().map(TransitionError::code).collect();
        codes.push(
            TransitionError::UnknownRealise {
                target: crate::StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x")
                    .unwrap(),
            }
            .code(),
        );
        let total = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), total);
    }
}
