//! Checks of every list and string against its cap, run by [`crate::decode`] after parsing.

use fleetnode_state_machine::{
    Directive, DirectiveKind, MESSAGE_CAP, OUTPUT_TAIL_CAP, OutboundEvent, Reason, Report,
    queue::GAP_CODE_CAP,
};

use crate::agent_api::{
    AgentStatus, DesiredAnswer, EventAck, EventBatch, HeartbeatAck, MAX_BATCH_EVENTS, MAX_PROBES,
    MAX_RECENT_EVENTS, MAX_SELECTOR_HOSTS, MAX_SHORT_TEXT, MAX_TAGS, MAX_WORKERS,
};
use crate::error::WireError;
use crate::operator_api::{
    AddHost, DesiredChanged, HostAdded, HostDetail, HostList, HostRow, RollbackRequest, Selector,
    SetTarget,
};
use crate::{MAX_BODY_BYTES, Validate};
use fleetnode_state_machine::DesiredState;

pub(crate) fn cap_len(what: &'static str, got: usize, limit: usize) -> Result<(), WireError> {
    if got > limit {
        return Err(WireError::TooLarge { what, limit, got });
    }
    Ok(())
}

pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> WireError {
    WireError::Invalid {
        what,
        why: why.into(),
    }
}

fn reason_ok(reason: &Reason) -> Result<(), WireError> {
    match reason {
        Reason::RealiseFailed { message } => cap_len("reason.message", message.len(), MESSAGE_CAP),
        Reason::SwitchFailed { output_tail, .. } => {
            cap_len("reason.output_tail", output_tail.len(), OUTPUT_TAIL_CAP)
        }
        Reason::SwitchNotLaunched { error } | Reason::DeadlineFailed { error } => {
            cap_len("reason.error", error.len(), MESSAGE_CAP)
        }
        Reason::RollbackFailed { cause } | Reason::NoKnownGood { cause } => match &**cause {
            // One level of nesting is all the state machine produces.
            Reason::RollbackFailed { .. } | Reason::NoKnownGood { .. } => {
                Err(invalid("reason", "nested too deeply"))
            }
            inner => reason_ok(inner),
        },
        Reason::SwitchTimedOut { .. }
        | Reason::SwitchVanished
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
                    cap_len("gap.code", code.len(), GAP_CODE_CAP)
                }
            }
        }
        Report::DirectiveRecorded { directive } => directive_ok(directive),
        Report::Snapshot { host, probes, .. } => snapshot_ok(host, probes),
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

/// A snapshot carries at most what the agent's own caps let a host hold.
fn snapshot_ok(
    host: &fleetnode_state_machine::Host,
    probes: &fleetnode_state_machine::ProbeBook,
) -> Result<(), WireError> {
    use fleetnode_state_machine::{KNOWN_GOOD_CAP, QUARANTINE_CAP};
    cap_len("host.known_good", host.known_good.len(), KNOWN_GOOD_CAP)?;
    cap_len("host.quarantine", host.quarantine.len(), QUARANTINE_CAP)?;
    cap_len("host.policy.probes", host.policy.probes.len(), MAX_PROBES)?;
    cap_len("probes.records", probes.records.len(), MAX_PROBES + 1)?;
    let boot_id = host.boot_id.as_ref().map_or(0, String::len);
    cap_len("host.boot_id", boot_id, MAX_SHORT_TEXT)?;
    if let Some(reason) = host.phase.reason() {
        reason_ok(reason)?;
    }
    host.desired.as_ref().map_or(Ok(()), directive_ok)
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

impl Validate for AgentStatus {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("agent_version", self.agent_version.len(), MAX_SHORT_TEXT)?;
        if let Some(reason) = &self.reason {
            reason_ok(reason)?;
        }
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
        cap_len("tags", self.tags.len(), MAX_TAGS)
    }
}

impl Validate for HostList {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("hosts", self.hosts.len(), crate::MAX_HOST_PAGE)?;
        if let Some(cursor) = &self.next_cursor {
            cap_len("next_cursor", cursor.len(), crate::MAX_SHORT_TEXT)?;
        }
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

impl Validate for OutboundEvent {
    fn validate(&self) -> Result<(), WireError> {
        event_ok(self)
    }
}
