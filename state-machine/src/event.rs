//! Inputs of the state machine: facts the agent observed, or (on the control plane) facts the
//! agent reported.

use serde::{Deserialize, Serialize};

use crate::policy::{Directive, LocalPolicy};
use crate::report::OutboundEvent;
use crate::state::SystemView;
use crate::types::{ProbeId, StorePath, SwitchId};

/// Something that happened. Every input to [`crate::step`] is one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The agent started and observed the host (recovery).
    Started(Observation),
    /// The control plane's desired state arrived.
    DirectiveReceived(Directive),
    /// The operator put the host on hold.
    PauseRequested,
    /// The operator lifted the hold.
    ResumeRequested,
    /// Realising the target closure finished.
    RealiseFinished {
        /// The closure that was realised.
        target: StorePath,
        /// How it went.
        result: RealiseResult,
    },
    /// A switch (activation, commit or rollback) the agent launched has ended.
    SwitchFinished {
        /// Which switch.
        switch: SwitchId,
        /// How it ended and what the host runs now.
        outcome: SwitchOutcome,
    },
    /// A probe produced a result.
    ProbeResult(ProbeResult),
    /// Time passed; deadlines at or before `now` fire.
    Tick,
    /// Control-plane side: the agent reported this event.
    Reported(OutboundEvent),
}

impl Event {
    /// The event's name, for errors and documents.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started(_) => "started",
            Self::DirectiveReceived(_) => "directive-received",
            Self::PauseRequested => "pause-requested",
            Self::ResumeRequested => "resume-requested",
            Self::RealiseFinished { .. } => "realise-finished",
            Self::SwitchFinished { .. } => "switch-finished",
            Self::ProbeResult(_) => "probe-result",
            Self::Tick => "tick",
            Self::Reported(_) => "reported",
        }
    }

    /// Every event name, in document order.
    pub const NAMES: [&'static str; 9] = [
        "started",
        "directive-received",
        "pause-requested",
        "resume-requested",
        "realise-finished",
        "switch-finished",
        "probe-result",
        "tick",
        "reported",
    ];
}

/// What the agent observes when it starts, before any worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Live, booted and profile systems.
    pub system: SystemView,
    /// The running kernel's boot id; a change since the last start means the host rebooted.
    pub boot_id: Option<String>,
    /// State of the transient unit of the switch in flight, if the persisted state has one.
    pub switch_unit: Option<UnitState>,
    /// Set when the durable store was unreadable and moved aside, with the reason.
    pub store_reset: Option<String>,
    /// The host's configuration as loaded now.
    pub policy: LocalPolicy,
}

/// What became of a switch's transient systemd unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum UnitState {
    /// Still running: keep following it.
    Running,
    /// Ended with this exit code (`None`: killed by a signal).
    Exited {
        /// Exit code of the switch process.
        exit_code: Option<i32>,
        /// The end of its output, if the journal still had it.
        output_tail: String,
    },
    /// No trace of it (collected, or the host rebooted).
    Gone,
}

/// How realising a closure ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum RealiseResult {
    /// The closure is in the store (and signed, when signatures are required).
    Realised,
    /// It could not be realised.
    Failed {
        /// Why, in nix's words (capped by the machine).
        message: String,
    },
}

/// How a switch ended, with what the host runs afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SwitchOutcome {
    /// The switch process exited 0.
    Completed {
        /// What the host runs now.
        system: SystemView,
    },
    /// The switch process exited non-zero or was killed.
    Failed {
        /// Exit code (`None`: killed by a signal).
        exit_code: Option<i32>,
        /// The end of its output.
        output_tail: String,
        /// What the host runs now.
        system: SystemView,
    },
}

/// One result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Which probe.
    pub probe: ProbeId,
    /// The epoch the probe task was started in; results of older epochs are stale.
    pub epoch: u64,
    /// Did it pass.
    pub passed: bool,
    /// A short human explanation (status code, error, ...).
    pub detail: String,
}
