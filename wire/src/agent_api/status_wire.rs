//! How an [`AgentStatus`] looks on the wire: the current names plus the names the first 1.0
//! documents gave two of its values, so that both generations of control plane read it.
//!
//! The first 1.0 documents named the heartbeat's time `sent_at` and the queue's age
//! `queue.oldest_age_ms` (a span); protocol 1.0 as released names them `at` and
//! `queue.oldest_at` (an instant). A control plane written from the earlier documents requires
//! `sent_at` and refused every heartbeat without it. The contract, since protocol 1.1:
//!
//! - a status is written with both names: `at` and `sent_at` hold the same instant, and
//!   `queue.oldest_age_ms` is `at` minus `queue.oldest_at` when the queue holds events;
//! - a status is read from either name: `at` when present, else `sent_at`; `queue.oldest_at`
//!   when present, else `at` minus `queue.oldest_age_ms`. A status with neither `at` nor
//!   `sent_at` is refused, naming both.
//!
//! Neither old name is ever removed within major version 1 (see the skew policy in
//! `docs/protocol.md`).

use fleetnode_state_machine::{
    Millis, PhaseKind, Reason, Revision, StorePath, SystemView, Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AgentStatus, NextDeadline, ProbeSummary, QueueSummary, WorkerSummary};

/// A status on the wire; see the module's documentation for the two names of its times.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct StatusOnWire {
    /// The agent's version.
    agent_version: String,
    /// When the status was taken, on the agent's clock (milliseconds since the Unix epoch).
    /// Required unless `sent_at` is given.
    #[serde(default)]
    at: Option<Timestamp>,
    /// The same instant as `at`, under the name the first 1.0 documents gave it; always
    /// written, read when `at` is absent.
    #[serde(default)]
    sent_at: Option<Timestamp>,
    /// The phase the host is in.
    phase: PhaseKind,
    /// Why the host is rolling back, reverted or failed.
    #[serde(default)]
    reason: Option<Reason>,
    /// Operator hold.
    paused: bool,
    /// Latest directive revision acted upon.
    #[serde(default)]
    handled_revision: Option<Revision>,
    /// Latest directive revision received.
    #[serde(default)]
    desired_revision: Option<Revision>,
    /// The target of the work in progress or in place.
    #[serde(default)]
    target: Option<StorePath>,
    /// What the host runs.
    system: SystemView,
    /// The agent's event stream.
    stream: u64,
    /// Seq of the latest event the agent emitted in that stream.
    last_seq: u64,
    /// The probe epoch results are counted in.
    #[serde(default)]
    probe_epoch: u64,
    /// The outbound queue.
    queue: QueueOnWire,
    /// Latest result of every probe in this epoch.
    #[serde(default)]
    probes: Vec<ProbeSummary>,
    /// The agent's workers.
    #[serde(default)]
    workers: Vec<WorkerSummary>,
    /// The next deadline the agent waits for, and why.
    #[serde(default)]
    next_deadline: Option<NextDeadline>,
}

/// The outbound queue on the wire: its oldest event as an instant and as an age.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
struct QueueOnWire {
    /// Events waiting for delivery.
    depth: u64,
    /// Their size in bytes.
    bytes: u64,
    /// When the oldest waiting event happened, on the agent's clock; `null` when the queue is
    /// empty.
    #[serde(default)]
    oldest_at: Option<Timestamp>,
    /// The age of the oldest waiting event at `at` (the first 1.0 documents' name); written
    /// when the queue holds events, read when `oldest_at` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oldest_age_ms: Option<Millis>,
    /// Events the control plane refused permanently (kept on the agent).
    dead_letters: u64,
}

/// A status that names no time at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the status has neither `at` nor `sent_at` (when it was taken); a 1.x agent sends both")]
pub struct MissingStatusTime;

impl From<AgentStatus> for StatusOnWire {
    fn from(status: AgentStatus) -> Self {
        let queue = status.queue;
        Self {
            agent_version: status.agent_version,
            at: Some(status.at),
            sent_at: Some(status.at),
            phase: status.phase,
            reason: status.reason,
            paused: status.paused,
            handled_revision: status.handled_revision,
            desired_revision: status.desired_revision,
            target: status.target,
            system: status.system,
            stream: status.stream,
            last_seq: status.last_seq,
            probe_epoch: status.probe_epoch,
            queue: QueueOnWire {
                depth: queue.depth,
                bytes: queue.bytes,
                oldest_at: queue.oldest_at,
                oldest_age_ms: queue.oldest_at.map(|oldest| status.at.since(oldest)),
                dead_letters: queue.dead_letters,
            },
            probes: status.probes,
            workers: status.workers,
            next_deadline: status.next_deadline,
        }
    }
}

impl TryFrom<StatusOnWire> for AgentStatus {
    type Error = MissingStatusTime;

    fn try_from(wire: StatusOnWire) -> Result<Self, Self::Error> {
        let at = wire.at.or(wire.sent_at).ok_or(MissingStatusTime)?;
        let queue = wire.queue;
        let oldest_at = queue.oldest_at.or_else(|| {
            queue
                .oldest_age_ms
                .map(|age| Timestamp(at.0.saturating_sub(age.0)))
        });
        Ok(Self {
            agent_version: wire.agent_version,
            at,
            phase: wire.phase,
            reason: wire.reason,
            paused: wire.paused,
            handled_revision: wire.handled_revision,
            desired_revision: wire.desired_revision,
            target: wire.target,
            system: wire.system,
            stream: wire.stream,
            last_seq: wire.last_seq,
            probe_epoch: wire.probe_epoch,
            queue: QueueSummary {
                depth: queue.depth,
                bytes: queue.bytes,
                oldest_at,
                dead_letters: queue.dead_letters,
            },
            probes: wire.probes,
            workers: wire.workers,
            next_deadline: wire.next_deadline,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{AgentStatus, Timestamp, decode, encode};

    fn heartbeat(times: Value) -> Vec<u8> {
        let mut body = json!({
            "agent_version": "0.1.0", "phase": "idle", "paused": false,
            "system": {"current": null, "booted": null, "profile": null},
            "stream": 7, "last_seq": 3,
            "queue": {"depth": 1, "bytes": 10, "dead_letters": 0}
        });
        let object = body.as_object_mut().unwrap();
        for (key, value) in times.as_object().unwrap() {
            if key == "oldest_age_ms" || key == "oldest_at" {
                object["queue"][key] = value.clone();
            } else {
                object.insert(key.clone(), value.clone());
            }
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn a_status_is_written_under_both_names_of_its_times() {
        let status: AgentStatus =
            decode(&heartbeat(json!({"at": 5000, "oldest_at": 4000}))).unwrap();
        let written: Value = serde_json::from_slice(&encode(&status)).unwrap();
        assert_eq!(written["at"], 5000);
        assert_eq!(written["sent_at"], 5000);
        assert_eq!(written["queue"]["oldest_at"], 4000);
        assert_eq!(written["queue"]["oldest_age_ms"], 1000);
        let again: AgentStatus = decode(&encode(&status)).unwrap();
        assert_eq!(again, status);
    }

    #[test]
    fn a_status_is_read_from_either_name_and_the_current_one_wins() {
        let old: AgentStatus =
            decode(&heartbeat(json!({"sent_at": 5000, "oldest_age_ms": 1500}))).unwrap();
        assert_eq!(old.at, Timestamp(5000));
        assert_eq!(old.queue.oldest_at, Some(Timestamp(3500)));
        let both: AgentStatus = decode(&heartbeat(
            json!({"at": 6000, "sent_at": 5000, "oldest_at": 5900, "oldest_age_ms": 1}),
        ))
        .unwrap();
        assert_eq!(both.at, Timestamp(6000));
        assert_eq!(both.queue.oldest_at, Some(Timestamp(5900)));
    }

    #[test]
    fn a_status_without_a_time_is_refused_naming_both_names() {
        let error = decode::<AgentStatus>(&heartbeat(json!({}))).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("`at`") && message.contains("`sent_at`"),
            "{message}"
        );
    }
}
