//! A heartbeat against the mirror: whether it agrees, and whether the agent must send a
//! snapshot. Both stores keep what [`Mirror::judge`] returns.

use fleetnode_wire::{AgentStatus, Timestamp};

use super::Mirror;
use crate::store::HeartbeatRecord;

/// A heartbeat as judged against the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// What is kept as the host's last sign of life.
    pub record: HeartbeatRecord,
    /// The divergence the previous heartbeat had flagged, if any.
    pub previous: Option<String>,
    /// Where this control plane's log of the host ends, when the heartbeat shows events it
    /// does not hold (the agent must send a snapshot).
    pub resync_from: Option<u64>,
}

/// How a heartbeat compares with the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// Events are still on their way (or from another stream): nothing can be said.
    NotComparable,
    /// Everything is delivered and the heartbeat matches the mirror.
    Agrees,
    /// Everything is delivered and the heartbeat contradicts the mirror: why.
    Disagrees(String),
}

impl Mirror {
    /// Whether a heartbeat shows that the agent must send a snapshot, and the log end to tell it:
    /// its queue is empty yet it emitted events this mirror never received, or it went back in
    /// its own history (a `last_seq` below the mirror's, sent after the newest event applied).
    pub fn needs_resync(&self, heartbeat: &AgentStatus) -> Option<u64> {
        if self.retired_streams.contains(&heartbeat.stream) && self.stream != Some(heartbeat.stream)
        {
            return None;
        }
        let log_end = match self.stream {
            Some(current) if current == heartbeat.stream => self.state.host.seq,
            Some(_) | None => 0,
        };
        let lost = heartbeat.queue.depth == 0 && heartbeat.last_seq > log_end;
        let rewound = heartbeat.last_seq < log_end && heartbeat.at > self.state.clock;
        (lost || rewound).then_some(log_end)
    }

    /// Judges a heartbeat that arrived at `received_at` against the mirror and the host's
    /// previous heartbeat: a contradiction flags the host diverged until a heartbeat agrees
    /// again; one that cannot be compared keeps the flag as it was. Both stores keep what this
    /// returns.
    pub fn judge(
        &self,
        heartbeat: AgentStatus,
        received_at: Timestamp,
        previous: Option<&HeartbeatRecord>,
    ) -> Judged {
        let previous = previous.and_then(|h| h.divergence.clone());
        let resync_from = self.needs_resync(&heartbeat);
        let divergence = match self.compare(&heartbeat) {
            Comparison::NotComparable => previous.clone(),
            Comparison::Agrees => None,
            Comparison::Disagrees(why) => Some(why),
        };
        Judged {
            record: HeartbeatRecord {
                heartbeat,
                received_at,
                divergence,
            },
            previous,
            resync_from,
        }
    }

    /// Compares a heartbeat with the mirror, once every event the agent emitted is applied.
    pub fn compare(&self, heartbeat: &AgentStatus) -> Comparison {
        let host = &self.state.host;
        if self.stream != Some(heartbeat.stream) || heartbeat.last_seq != host.seq {
            return Comparison::NotComparable;
        }
        let mut differences = Vec::new();
        if heartbeat.phase != host.phase.kind() {
            differences.push(format!(
                "phase: the agent reports {:?}, its events say {:?}",
                heartbeat.phase.name(),
                host.phase.name()
            ));
        }
        if heartbeat.handled_revision != host.handled {
            differences.push(format!(
                "handled revision: the agent reports {}, its events say {}",
                show(heartbeat.handled_revision.as_ref()),
                show(host.handled.as_ref())
            ));
        }
        if heartbeat.paused != host.paused {
            differences.push(format!(
                "paused: the agent reports {}, its events say {}",
                heartbeat.paused, host.paused
            ));
        }
        if heartbeat.system.current != host.system.current {
            differences.push(format!(
                "current system: the agent reports {}, its events say {}",
                show(heartbeat.system.current.as_ref()),
                show(host.system.current.as_ref())
            ));
        }
        if differences.is_empty() {
            return Comparison::Agrees;
        }
        Comparison::Disagrees(format!(
            "the heartbeat contradicts the mirror with every event up to seq {} applied: {}",
            host.seq,
            differences.join("; ")
        ))
    }
}

fn show<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "none".to_owned(), ToString::to_string)
}
