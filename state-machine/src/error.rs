//! Why `step` refused an input, sorted by who is at fault, and why the mirror refused a
//! reported event. Every refusal leaves the state as it was.

use crate::evolve::EvolveError;
use crate::types::{ProbeId, Revision, StorePath, SwitchId};

/// An input `step` refused. The caller keeps running; how loudly it says so depends on whose
/// fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The input is out of date: it lost a race with a decision already made. Dropping it is
    /// the right thing and nobody needs to look.
    #[error(transparent)]
    Stale(#[from] StaleInput),
    /// The control plane sent something that cannot be right.
    #[error(transparent)]
    Peer(#[from] PeerFault),
    /// The agent contradicts itself: a worker reported something its own state rules out, or
    /// the machine's own report did not fit. A human should look.
    #[error(transparent)]
    Bug(#[from] Bug),
}

/// An input that arrived after the state moved on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleInput {
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
}

/// Something the control plane sent that contradicts what it sent before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFault {
    /// A directive older than the one already recorded (latest wins), for example from a
    /// control plane restored from an older backup.
    #[error(
        "directive {got} is older than the recorded {recorded}; ignored (was the control plane restored from an older backup?)"
    )]
    StaleDirective {
        /// Revision received.
        got: Revision,
        /// Revision recorded.
        recorded: Revision,
    },
    /// A log end so far beyond the agent's own seqs that jumping there would exhaust them.
    #[error(
        "the control plane says its log of this stream ends at seq {log_end}, beyond any plausible seq (the agent is at {seq}); no snapshot is sent"
    )]
    ImplausibleLogEnd {
        /// What the control plane said.
        log_end: u64,
        /// The agent's latest seq.
        seq: u64,
    },
    /// A directive with the revision already recorded but a different content.
    #[error("directive {revision} differs from the one recorded under the same revision; ignored")]
    ConflictingDirective {
        /// The revision.
        revision: Revision,
    },
}

/// An inconsistency inside the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bug {
    /// The event does not apply to the phase the host is in.
    #[error("{event} makes no sense while the host is {phase}")]
    Unexpected {
        /// The event's name.
        event: &'static str,
        /// The phase's name.
        phase: &'static str,
    },
    /// A result from a probe that is not configured.
    #[error("result of probe {probe}, which is not configured")]
    UnknownProbe {
        /// The probe.
        probe: ProbeId,
    },
    /// A report the machine made does not fit its own state.
    #[error("the machine's own report does not fit its state: {0}")]
    Inconsistent(#[from] EvolveError),
}

impl TransitionError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Stale(StaleInput::UnknownRealise { .. }) => "unknown-realise",
            Self::Stale(StaleInput::UnknownSwitch { .. }) => "unknown-switch",
            Self::Stale(StaleInput::StaleProbeResult { .. }) => "stale-probe-result",
            Self::Peer(PeerFault::StaleDirective { .. }) => "stale-directive",
            Self::Peer(PeerFault::ConflictingDirective { .. }) => "conflicting-directive",
            Self::Peer(PeerFault::ImplausibleLogEnd { .. }) => "implausible-log-end",
            Self::Bug(Bug::Unexpected { .. }) => "unexpected",
            Self::Bug(Bug::UnknownProbe { .. }) => "unknown-probe",
            Self::Bug(Bug::Inconsistent(_)) => "inconsistent",
        }
    }
}

impl From<EvolveError> for TransitionError {
    fn from(error: EvolveError) -> Self {
        Self::Bug(Bug::Inconsistent(error))
    }
}

/// A reported event the mirror cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The event is beyond the next expected seq: the events in between are missing.
    #[error("reported event seq {got} leaves a gap: the next expected seq is {expected}")]
    SeqGap {
        /// The next seq the mirror can apply.
        expected: u64,
        /// The seq received.
        got: u64,
    },
    /// The event does not fit the mirrored state: the two sides disagree.
    #[error("mirror diverged: {0}")]
    Diverged(#[from] EvolveError),
}

impl MirrorError {
    /// A stable short code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
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
        let path = StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x").unwrap();
        let errors: Vec<TransitionError> = vec![
            StaleInput::UnknownRealise { target: path }.into(),
            StaleInput::UnknownSwitch {
                got: SwitchId(1),
                running: None,
            }
            .into(),
            StaleInput::StaleProbeResult {
                probe: ProbeId::control_plane(),
                got: 1,
                current: 2,
            }
            .into(),
            PeerFault::StaleDirective {
                got: Revision(1),
                recorded: Revision(2),
            }
            .into(),
            PeerFault::ConflictingDirective {
                revision: Revision(1),
            }
            .into(),
            Bug::Unexpected {
                event: "tick",
                phase: "idle",
            }
            .into(),
            Bug::UnknownProbe {
                probe: ProbeId::control_plane(),
            }
            .into(),
            EvolveError {
                report: "x",
                phase: "y",
            }
            .into(),
        ];
        let mut codes: Vec<&str> = errors.iter().map(TransitionError::code).collect();
        codes.extend([
            MirrorError::SeqGap {
                expected: 1,
                got: 3,
            }
            .code(),
            MirrorError::Diverged(EvolveError {
                report: "x",
                phase: "y",
            })
            .code(),
        ]);
        let total = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), total);
    }

    #[test]
    fn a_stale_directive_says_what_to_suspect() {
        let text = TransitionError::from(PeerFault::StaleDirective {
            got: Revision(3),
            recorded: Revision(5),
        })
        .to_string();
        assert!(text.contains("older backup"), "{text}");
    }
}
