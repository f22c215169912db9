//! Inputs of the state machine: facts the agent observed.

use serde::{Deserialize, Serialize};

use crate::policy::{DesiredState, LocalPolicy};
use crate::state::SystemView;
use crate::types::{ProbeId, StorePath, SwitchId};

/// Something that happened. Every input to [`crate::step`] is one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The agent started and observed the host (recovery).
    Started(Observation),
    /// The control plane answered with the host's desired state (every answer, changed or not).
    DesiredObserved(DesiredState),
    /// The operator put the host on hold through the local admin socket.
    PauseRequested,
    /// The operator lifted the hold through the local admin socket.
    ResumeRequested,
    /// Realising the target closure finished.
    RealiseFinished {
        /// The closure that was realised.
        target: StorePath,
        /// How it went.
        result: RealiseResult,
    },
    /// A switch (activation, commit or rollback) the agent launched has ended, or could not
    /// start; the host's systems were observed afterwards.
    SwitchFinished {
        /// Which switch.
        switch: SwitchId,
        /// How it ended, as its unit recorded it.
        end: SwitchEnd,
        /// What the host runs now.
        system: SystemView,
    },
    /// A probe produced a result.
    ProbeResult(ProbeResult),
    /// The answer to [`crate::Command::CheckAgentUpgrade`].
    AgentUpgradeChecked {
        /// What differs between the running agent and the one the live generation carries;
        /// `None` when they are the same (or the agent does not run as a service).
        upgrade: Option<String>,
    },
    /// Time passed; deadlines at or before `now` fire.
    Tick,
    /// The control plane's mirror cannot follow the agent's events any more (it lost events,
    /// holds another history, or refused a lifecycle event): report a snapshot it restarts from.
    ResyncRequested {
        /// The last seq the control plane holds of this stream (0 for none); the snapshot's seq
        /// is above it and above every seq the agent used.
        log_end: u64,
        /// Why.
        cause: crate::report::ResyncCause,
    },
}

impl Event {
    /// The event's name, for errors and documents.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started(_) => "started",
            Self::DesiredObserved(_) => "desired-observed",
            Self::PauseRequested => "pause-requested",
            Self::ResumeRequested => "resume-requested",
            Self::RealiseFinished { .. } => "realise-finished",
            Self::SwitchFinished { .. } => "switch-finished",
            Self::ProbeResult(_) => "probe-result",
            Self::AgentUpgradeChecked { .. } => "agent-upgrade-checked",
            Self::Tick => "tick",
            Self::ResyncRequested { .. } => "resync-requested",
        }
    }

    /// Every event name, in document order.
    pub const NAMES: [&'static str; 10] = [
        "started",
        "desired-observed",
        "pause-requested",
        "resume-requested",
        "realise-finished",
        "switch-finished",
        "probe-result",
        "agent-upgrade-checked",
        "tick",
        "resync-requested",
    ];
}

/// What the agent observes when it starts, before any worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Observation {
    /// Live, booted and profile systems.
    pub system: SystemView,
    /// Identifies the current boot; a change since the last start means the host rebooted.
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum UnitState {
    /// Still running: keep following it.
    Running,
    /// The switch process ended.
    Exited(SwitchExit),
    /// No trace of it (collected, or the host rebooted).
    Gone,
}

/// How a switch process ended: the one record of a switch's exit, from its unit to the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SwitchExit {
    /// Exit code of `switch-to-configuration`; `None` when it was killed by a signal or never
    /// ran (the unit failed before it).
    pub code: Option<i32>,
    /// The end of its output (the state machine keeps at most
    /// [`crate::OUTPUT_TAIL_CAP`] bytes of it).
    pub output_tail: String,
}

/// How a switch the agent asked for ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "end", rename_all = "kebab-case")]
pub enum SwitchEnd {
    /// Its process ended.
    Exited(SwitchExit),
    /// Its unit vanished without a result (stopped or collected by someone else).
    Vanished,
    /// It was not started: the switch lock was held by another switch.
    LockHeld,
    /// Its unit could not be started.
    NotLaunched {
        /// Why, in the system's words.
        error: String,
    },
}

/// How realising a closure ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// One result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
