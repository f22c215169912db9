//! The agent's side of protocol v1: the desired state it long-polls, the events it delivers
//! and the status it heartbeats.

use fleetnode_state_machine::{
    DeadlineKind, DesiredState, OutboundEvent, PhaseKind, ProbeId, ProbeMode, Reason, Revision,
    StorePath, SystemView, Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod status_wire;
pub use status_wire::MissingStatusTime;

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 256;
/// Most tags on a host.
pub const MAX_TAGS: usize = 32;
/// Most hosts named in one selector.
pub const MAX_SELECTOR_HOSTS: usize = 10_000;
/// Most probes a host may report.
pub const MAX_PROBES: usize = 64;
/// Most workers a heartbeat may list.
pub const MAX_WORKERS: usize = 16;
/// Most recent events in a host detail.
pub const MAX_RECENT_EVENTS: usize = 200;
/// Longest short string (versions, names, boot ids).
pub const MAX_SHORT_TEXT: usize = 128;
/// Longest the control plane may hold a long-poll, in seconds.
pub const MAX_WAIT_SECS: u64 = 300;
/// Default long-poll wait, in seconds.
pub const DEFAULT_WAIT_SECS: u64 = 30;

/// Answer to `GET /v1/agent/hosts/{host}/desired?known=<rev>&wait=<secs>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DesiredAnswer {
    /// False when the wait ran out with the revision the agent already knows.
    pub changed: bool,
    /// The desired state as it is now (also when unchanged).
    pub desired: DesiredState,
}

/// Body of `POST /v1/agent/hosts/{host}/events`: events in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventBatch {
    /// The agent's event stream: a random id chosen when its store was created. Seqs count
    /// within a stream; a new stream (the agent's store was reset) starts again at seq 1 and
    /// the control plane starts a new mirror for it.
    pub stream: u64,
    /// The events, ascending by seq.
    pub events: Vec<OutboundEvent>,
}

/// Answer to an event batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventAck {
    /// Every event up to and including this seq is durably stored; the agent may drop them.
    pub acked_through: u64,
}

/// The agent's status: what `fleetnode-agent status` shows, what the local admin socket serves
/// and what every heartbeat (`POST /v1/agent/hosts/{host}/heartbeat`) carries.
///
/// On the wire it also carries `sent_at` and `queue.oldest_age_ms`, the names the first 1.0
/// documents gave `at` and the queue's age (protocol 1.1), and it is read from either name
/// (docs/protocol.md, "Heartbeat").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(
    try_from = "status_wire::StatusOnWire",
    into = "status_wire::StatusOnWire"
)]
pub struct AgentStatus {
    /// The agent's version.
    pub agent_version: String,
    /// When the status was taken, on the agent's clock (milliseconds since the Unix epoch).
    pub at: Timestamp,
    /// The phase the host is in.
    pub phase: PhaseKind,
    /// Why the host is rolling back, reverted or failed.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Operator hold.
    pub paused: bool,
    /// Latest directive revision acted upon.
    #[serde(default)]
    pub handled_revision: Option<Revision>,
    /// Latest directive revision received.
    #[serde(default)]
    pub desired_revision: Option<Revision>,
    /// The target of the work in progress or in place.
    #[serde(default)]
    pub target: Option<StorePath>,
    /// What the host runs.
    pub system: SystemView,
    /// The agent's event stream (see [`EventBatch::stream`]).
    pub stream: u64,
    /// Seq of the latest event the agent emitted in that stream.
    pub last_seq: u64,
    /// The probe epoch results are counted in.
    #[serde(default)]
    pub probe_epoch: u64,
    /// The outbound queue.
    pub queue: QueueSummary,
    /// Latest result of every probe in this epoch.
    #[serde(default)]
    pub probes: Vec<ProbeSummary>,
    /// The agent's workers.
    #[serde(default)]
    pub workers: Vec<WorkerSummary>,
    /// The next deadline the agent waits for, and why.
    #[serde(default)]
    pub next_deadline: Option<NextDeadline>,
}

/// The next deadline of the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NextDeadline {
    /// When, on the agent's clock.
    pub at: Timestamp,
    /// Why.
    #[serde(flatten)]
    pub kind: DeadlineKind,
}

/// The agent's outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct QueueSummary {
    /// Events waiting for delivery.
    pub depth: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// When the oldest waiting event happened, on the agent's clock; its age is the status's
    /// `at` minus this.
    #[serde(default)]
    pub oldest_at: Option<Timestamp>,
    /// Events the control plane refused permanently (kept on the agent).
    pub dead_letters: u64,
}

/// Latest result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeSummary {
    /// The probe.
    pub probe: ProbeId,
    /// Its mode.
    pub mode: ProbeMode,
    /// Latest result in the current epoch; `None` before the first one.
    #[serde(default)]
    pub passing: Option<bool>,
    /// Short explanation of the latest result.
    #[serde(default)]
    pub detail: String,
}

/// Status of one of the agent's workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerSummary {
    /// The worker's name (e.g. `longpoll`).
    pub name: String,
    /// Its status.
    pub status: WorkerStatus,
    /// How often it was restarted after a fault.
    #[serde(default)]
    pub restarts: u64,
    /// The last error, when faulted.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A worker's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerStatus {
    /// Waiting for something to do.
    Idle,
    /// Doing its job.
    Running,
    /// Failed; being restarted with backoff.
    Faulted,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HeartbeatAck {
    /// The host's desired revision now, so an agent can tell it missed a change.
    pub desired_revision: Revision,
}
