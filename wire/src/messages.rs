//! Every message between agent and control plane, with its caps.

use fleetnode_state_machine::{
    ActivationMode, Directive, DirectiveKind, HealthOverrides, Host, MESSAGE_CAP, Millis,
    OUTPUT_TAIL_CAP, OutboundEvent, Phase, ProbeId, ProbeMode, Reason, Report, Revision, StorePath,
    SystemView, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::ids::{HostId, Secret, Tag};
use crate::{MAX_BODY_BYTES, Validate};

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

// ---------------------------------------------------------------- agent API

/// A host's desired state: level-triggered and never consumed by reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Increases with every change (a new directive, pause, resume).
    pub revision: Revision,
    /// The directive in force, if one was ever set.
    #[serde(default)]
    pub directive: Option<Directive>,
    /// Operator hold.
    #[serde(default)]
    pub paused: bool,
}

/// Answer to `GET /v1/agent/hosts/{host}/desired?known=<rev>&wait=<secs>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredAnswer {
    /// False when the wait ran out with the revision the agent already knows.
    pub changed: bool,
    /// The desired state as it is now (also when unchanged).
    pub desired: DesiredState,
}

/// Body of `POST /v1/agent/hosts/{host}/events`: events in seq order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The agent's event stream: a random id chosen when its store was created. Seqs count
    /// within a stream; a new stream (the agent's store was reset) starts again at seq 1 and
    /// the control plane starts a new mirror for it.
    pub stream: u64,
    /// The events, ascending by seq.
    pub events: Vec<OutboundEvent>,
}

/// Answer to an event batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    /// Every event up to and including this seq is durably stored; the agent may drop them.
    pub acked_through: u64,
}

/// Body of `POST /v1/agent/hosts/{host}/heartbeat`: the agent's summary of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent's version.
    pub agent_version: String,
    /// When it was sent, on the agent's clock (milliseconds since the Unix epoch).
    pub sent_at: Timestamp,
    /// Name of the phase (one of the state machine's phase names).
    pub phase: String,
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
    /// The outbound queue.
    pub queue: QueueSummary,
    /// Latest result of every probe.
    #[serde(default)]
    pub probes: Vec<ProbeSummary>,
    /// The agent's workers.
    #[serde(default)]
    pub workers: Vec<WorkerSummary>,
}

/// The agent's outbound queue.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueSummary {
    /// Events waiting for delivery.
    pub depth: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Age of the oldest waiting event.
    #[serde(default)]
    pub oldest_age_ms: Option<Millis>,
    /// Events the control plane refused permanently (kept on the agent).
    pub dead_letters: u64,
}

/// Latest result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The host's desired revision now, so an agent can tell it missed a change.
    pub desired_revision: Revision,
}

// ---------------------------------------------------------------- operator API

/// Body of `POST /v1/admin/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddHost {
    /// The new host's id.
    pub id: HostId,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Answer to adding a host: its token, shown this once (the server keeps only a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAdded {
    /// The host.
    pub id: HostId,
    /// Its bearer token.
    pub token: Secret,
}

/// Which hosts an operator command applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Selector {
    /// These hosts.
    Hosts {
        /// Their ids.
        hosts: Vec<HostId>,
    },
    /// Every host with this tag.
    Tag {
        /// The tag.
        tag: Tag,
    },
    /// Every host that is not revoked.
    All,
}

/// Body of `POST /v1/admin/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetTarget {
    /// Which hosts.
    pub selector: Selector,
    /// The closure to run.
    pub target: StorePath,
    /// How to activate it; each host's default when absent.
    #[serde(default)]
    pub mode: Option<ActivationMode>,
    /// Health overrides.
    #[serde(default)]
    pub health: HealthOverrides,
}

/// One host's new desired revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRevision {
    /// The host.
    pub host: HostId,
    /// Its desired revision now.
    pub revision: Revision,
}

/// Answer to an operator command that changed desired states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredChanged {
    /// Every host that changed.
    pub hosts: Vec<HostRevision>,
}

/// Body of `POST /v1/admin/hosts/{host}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The generation to go back to; the host's newest other known-good one when absent.
    #[serde(default)]
    pub to: Option<StorePath>,
}

/// One line of the host list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// The host.
    pub id: HostId,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Mirrored phase name.
    pub phase: String,
    /// The live system, as last reported.
    #[serde(default)]
    pub current: Option<StorePath>,
    /// The target of the desired state.
    #[serde(default)]
    pub target: Option<StorePath>,
    /// Desired revision.
    pub desired_revision: Revision,
    /// Last heartbeat, on the server's clock (milliseconds since the Unix epoch).
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
    /// No heartbeat for three intervals.
    pub offline: bool,
    /// The heartbeat disagrees with the mirror.
    pub diverged: bool,
    /// Operator hold.
    pub paused: bool,
    /// The host was revoked: its token no longer works; its history is kept.
    #[serde(default)]
    pub revoked: bool,
}

/// Answer to `GET /v1/admin/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostList {
    /// Every host, by id.
    pub hosts: Vec<HostRow>,
}

/// Answer to `GET /v1/admin/hosts/{host}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDetail {
    /// The summary line.
    pub row: HostRow,
    /// The desired state.
    pub desired: DesiredState,
    /// The mirrored state, built from the host's events by the shared state machine.
    pub mirror: Host,
    /// Why the host is flagged diverged, if it is.
    #[serde(default)]
    pub divergence: Option<String>,
    /// The latest heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<Heartbeat>,
    /// The most recent events, oldest first.
    #[serde(default)]
    pub recent_events: Vec<OutboundEvent>,
}

// ---------------------------------------------------------------- validation

fn cap_len(what: &'static str, got: usize, limit: usize) -> Result<(), WireError> {
    if got > limit {
        return Err(WireError::TooLarge { what, limit, got });
    }
    Ok(())
}

fn invalid(what: &'static str, why: impl Into<String>) -> WireError {
    WireError::Invalid {
        what,
        why: why.into(),
    }
}

fn phase_name_ok(name: &str) -> Result<(), WireError> {
    if Phase::NAMES.contains(&name) {
        Ok(())
    } else {
        Err(invalid("phase", format!("unknown phase {name:?}")))
    }
}

fn reason_ok(reason: &Reason) -> Result<(), WireError> {
    match reason {
        Reason::RealiseFailed { message } => cap_len("reason.message", message.len(), MESSAGE_CAP),
        Reason::SwitchFailed { output_tail, .. } => {
            cap_len("reason.output_tail", output_tail.len(), OUTPUT_TAIL_CAP)
        }
        Reason::RollbackFailed { cause } | Reason::NoKnownGood { cause } => match &**cause {
            // One level of nesting is all the state machine produces.
            Reason::RollbackFailed { .. } | Reason::NoKnownGood { .. } => {
                Err(invalid("reason", "nested too deeply"))
            }
            inner => reason_ok(inner),
        },
        Reason::SwitchTimedOut { .. }
        | Reason::VerificationFailed { .. }
        | Reason::Interrupted
        | Reason::RebootedDuringActivation
        | Reason::RebootedDuringSoak
        | Reason::RebootedDuringCommit
        | Reason::BootedOtherGeneration { .. }
        | Reason::ProbeFailed { .. }
        | Reason::RequestedByControlPlane
        | Reason::Drifted { .. } => Ok(()),
    }
}

fn event_ok(event: &OutboundEvent) -> Result<(), WireError> {
    if event.seq == 0 {
        return Err(invalid("event.seq", "seqs start at 1"));
    }
    match &event.report {
        Report::Recovered {
            boot_id,
            store_reset,
            ..
        } => {
            cap_len(
                "boot_id",
                boot_id.as_ref().map_or(0, String::len),
                MAX_SHORT_TEXT,
            )?;
            cap_len(
                "store_reset",
                store_reset.as_ref().map_or(0, String::len),
                MESSAGE_CAP,
            )
        }
        Report::PolicyApplied { policy } => {
            cap_len("policy.probes", policy.probes.len(), MAX_PROBES)
        }
        Report::ProbeObserved { detail, .. } => cap_len("detail", detail.len(), MESSAGE_CAP),
        Report::SwitchEnded { verdict, .. } => match verdict {
            fleetnode_state_machine::SwitchVerdict::Succeeded => Ok(()),
            fleetnode_state_machine::SwitchVerdict::SucceededWithWarnings { output_tail } => {
                cap_len("output_tail", output_tail.len(), OUTPUT_TAIL_CAP)
            }
            fleetnode_state_machine::SwitchVerdict::Failed { reason } => reason_ok(reason),
        },
        Report::RollbackStarted { reason, .. } | Report::Reverted { reason, .. } => {
            reason_ok(reason)
        }
        Report::Failed { reason, .. } => reason_ok(reason),
        Report::Gap { from_seq, cause } => {
            if *from_seq == 0 || *from_seq > event.seq {
                return Err(invalid(
                    "gap.from_seq",
                    "must be between 1 and the event's seq",
                ));
            }
            match cause {
                fleetnode_state_machine::GapCause::Compacted { .. } => Ok(()),
                fleetnode_state_machine::GapCause::DeadLettered { code } => {
                    cap_len("gap.code", code.len(), MAX_SHORT_TEXT)
                }
            }
        }
        Report::DirectiveRecorded { directive } => directive_ok(directive),
        Report::Paused
        | Report::Resumed
        | Report::AlreadyConverged { .. }
        | Report::WorkStarted { .. }
        | Report::Realised { .. }
        | Report::ActivationStarted { .. }
        | Report::SoakStarted { .. }
        | Report::DeferredUntilBoot { .. }
        | Report::CommitStarted { .. }
        | Report::Converged { .. }
        | Report::Superseded { .. }
        | Report::RollbackRejected { .. } => Ok(()),
    }
}

fn directive_ok(directive: &Directive) -> Result<(), WireError> {
    match &directive.kind {
        DirectiveKind::Activate { .. } | DirectiveKind::Rollback { .. } => Ok(()),
    }
}

fn events_ok(events: &[OutboundEvent], what: &'static str, cap: usize) -> Result<(), WireError> {
    cap_len(what, events.len(), cap)?;
    for pair in events.windows(2) {
        if pair[1].seq <= pair[0].seq {
            return Err(invalid(what, "events must be in ascending seq order"));
        }
    }
    events.iter().try_for_each(event_ok)
}

impl Validate for DesiredState {
    fn validate(&self) -> Result<(), WireError> {
        self.directive.as_ref().map_or(Ok(()), directive_ok)
    }
}

impl Validate for DesiredAnswer {
    fn validate(&self) -> Result<(), WireError> {
        self.desired.validate()
    }
}

impl Validate for EventBatch {
    fn validate(&self) -> Result<(), WireError> {
        if self.events.is_empty() {
            return Err(invalid("events", "a batch holds at least one event"));
        }
        events_ok(&self.events, "events", MAX_BATCH_EVENTS)
    }
}

impl Validate for EventAck {
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }
}

impl Validate for Heartbeat {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("agent_version", self.agent_version.len(), MAX_SHORT_TEXT)?;
        phase_name_ok(&self.phase)?;
        cap_len("probes", self.probes.len(), MAX_PROBES)?;
        for probe in &self.probes {
            cap_len("probes.detail", probe.detail.len(), MESSAGE_CAP)?;
        }
        cap_len("workers", self.workers.len(), MAX_WORKERS)?;
        for worker in &self.workers {
            cap_len("workers.name", worker.name.len(), MAX_SHORT_TEXT)?;
            let error_len = worker.last_error.as_ref().map_or(0, String::len);
            cap_len("workers.last_error", error_len, MESSAGE_CAP)?;
        }
        Ok(())
    }
}

impl Validate for HeartbeatAck {
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }
}

impl Validate for AddHost {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("tags", self.tags.len(), MAX_TAGS)
    }
}

impl Validate for HostAdded {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("token", self.token.expose().len(), MAX_SHORT_TEXT)
    }
}

impl Validate for SetTarget {
    fn validate(&self) -> Result<(), WireError> {
        match &self.selector {
            Selector::Hosts { hosts } => {
                if hosts.is_empty() {
                    return Err(invalid("selector.hosts", "name at least one host"));
                }
                cap_len("selector.hosts", hosts.len(), MAX_SELECTOR_HOSTS)
            }
            Selector::Tag { .. } | Selector::All => Ok(()),
        }
    }
}

impl Validate for DesiredChanged {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("hosts", self.hosts.len(), MAX_BODY_BYTES)
    }
}

impl Validate for RollbackRequest {
    fn validate(&self) -> Result<(), WireError> {
        Ok(())
    }
}

impl Validate for HostRow {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("tags", self.tags.len(), MAX_TAGS)?;
        phase_name_ok(&self.phase)
    }
}

impl Validate for HostList {
    fn validate(&self) -> Result<(), WireError> {
        self.hosts.iter().try_for_each(Validate::validate)
    }
}

impl Validate for HostDetail {
    fn validate(&self) -> Result<(), WireError> {
        self.row.validate()?;
        self.desired.validate()?;
        if let Some(heartbeat) = &self.last_heartbeat {
            heartbeat.validate()?;
        }
        events_ok(&self.recent_events, "recent_events", MAX_RECENT_EVENTS)
    }
}

impl Validate for crate::ErrorBody {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("message", self.message.len(), MESSAGE_CAP * 4)
    }
}
