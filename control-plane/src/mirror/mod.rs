//! A host's mirror: the agent's reported events applied in seq order by the shared state
//! machine, the check of a heartbeat against it, and when to ask the agent for a snapshot
//! (`docs/protocol.md`, "Resync").
//!
//! Pure functions of data; the server persists what they return. A heartbeat's judgement
//! against the mirror is in [`heartbeat`].

mod heartbeat;

pub use heartbeat::{Comparison, Judged};

use fleetnode_state_machine::{MirrorError, State, mirror};
use fleetnode_wire::{EventBatch, OutboundEvent, Report};
use serde::{Deserialize, Serialize};

/// How many superseded event streams a host remembers, so that a stray request of an agent
/// whose store was reset cannot switch the mirror back.
pub const RETIRED_STREAMS_CAP: usize = 16;

/// What the control plane knows of a host from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mirror {
    /// The agent's event stream the mirror follows; `None` before the first event.
    pub stream: Option<u64>,
    /// The mirrored state (its `host` part is what the agent has).
    pub state: State,
    /// Streams that were superseded, newest last.
    #[serde(default)]
    pub retired_streams: Vec<u64>,
    /// Set when a reported event did not fit the mirror: the mirror is no longer exact for
    /// this stream.
    #[serde(default)]
    pub divergence: Option<String>,
}

/// The result of applying a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The mirror afterwards.
    pub mirror: Mirror,
    /// The events to store (newly applied, in seq order).
    pub stored: Vec<OutboundEvent>,
    /// Every seq up to this one is applied.
    pub acked_through: u64,
    /// The batch started a new stream (the agent's store was reset).
    pub new_stream: bool,
    /// Events that did not fit the mirror, with the state machine's explanation.
    pub diverged: Vec<(u64, String)>,
}

/// Why a batch was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A batch from a stream that an agent already replaced.
    #[error(
        "event stream {stream} of this host was superseded by stream {current}; the agent that sent it no longer exists"
    )]
    RetiredStream {
        /// The stream of the batch.
        stream: u64,
        /// The stream the mirror follows.
        current: u64,
    },
    /// The batch does not continue the log: the events before it are gone on both sides.
    #[error(
        "the batch begins at seq {first} of stream {stream}, but this control plane holds the stream only up to seq {log_end}; send a snapshot"
    )]
    Resync {
        /// The stream of the batch.
        stream: u64,
        /// The first seq the batch covers.
        first: u64,
        /// The last seq held of that stream (0 for none).
        log_end: u64,
    },
}

impl Mirror {
    /// Applies a batch: duplicates are skipped, a gap stops the application, and an event that
    /// does not fit is kept and flagged so delivery is never blocked.
    pub fn apply(&self, batch: &EventBatch) -> Result<Applied, Refused> {
        let mut mirror = self.clone();
        let mut new_stream = false;
        let log_end = match self.stream {
            Some(current) if current == batch.stream => self.state.host.seq,
            Some(_) | None => 0,
        };
        match self.stream {
            Some(current)
                if current != batch.stream && self.retired_streams.contains(&batch.stream) =>
            {
                return Err(Refused::RetiredStream {
                    stream: batch.stream,
                    current,
                });
            }
            Some(_) | None => {}
        }
        if let Some(first) = batch.events.first().map(OutboundEvent::covers_from)
            && first > log_end + 1
        {
            return Err(Refused::Resync {
                stream: batch.stream,
                first,
                log_end,
            });
        }
        match self.stream {
            Some(current) if current == batch.stream => {}
            Some(current) => {
                mirror.retired_streams.push(current);
                let excess = mirror
                    .retired_streams
                    .len()
                    .saturating_sub(RETIRED_STREAMS_CAP);
                mirror.retired_streams.drain(..excess);
                mirror.stream = Some(batch.stream);
                mirror.state = State::default();
                mirror.divergence = None;
                new_stream = true;
            }
            None => {
                mirror.stream = Some(batch.stream);
                new_stream = true;
            }
        }
        let mut stored = Vec::new();
        let mut diverged = Vec::new();
        for event in &batch.events {
            if event.seq <= mirror.state.host.seq {
                continue;
            }
            match mirror::apply(&mut mirror.state, event) {
                Ok(_) if matches!(event.report, Report::Snapshot { .. }) => {
                    // The mirror restarted from the agent's own state: exact again.
                    mirror.divergence = None;
                }
                Ok(_) => {}
                Err(MirrorError::SeqGap { .. }) => break,
                Err(error @ MirrorError::Diverged(_)) => {
                    // The report does not fit: keep it, step past it, and say so.
                    let text = format!("event {} ({}): {error}", event.seq, event.report.name());
                    mirror.state.host.seq = event.seq;
                    mirror.divergence = Some(text.clone());
                    diverged.push((event.seq, text));
                }
            }
            stored.push(event.clone());
        }
        Ok(Applied {
            acked_through: mirror.state.host.seq,
            mirror,
            stored,
            new_stream,
            diverged,
        })
    }
}

#[cfg(test)]
mod tests {
    use fleetnode_state_machine::{Report, SystemView};
    use fleetnode_wire::{AgentStatus, OutboundEvent, Timestamp};

    use super::*;

    fn recovered(seq: u64) -> OutboundEvent {
        OutboundEvent {
            seq,
            at: Timestamp(seq),
            report: Report::Recovered {
                system: SystemView::default(),
                boot_id: Some(format!("boot-{seq}")),
                store_reset: None,
            },
        }
    }

    fn batch(stream: u64, seqs: &[u64]) -> EventBatch {
        EventBatch {
            stream,
            events: seqs.iter().map(|s| recovered(*s)).collect(),
        }
    }

    #[test]
    fn duplicates_are_skipped_and_a_gap_stops_application() {
        let applied = Mirror::default().apply(&batch(1, &[1, 2])).unwrap();
        assert!(applied.new_stream);
        assert_eq!(applied.acked_through, 2);
        let again = applied.mirror.apply(&batch(1, &[1, 2, 3, 5])).unwrap();
        assert_eq!(again.acked_through, 3);
        let stored: Vec<u64> = again.stored.iter().map(|e| e.seq).collect();
        assert_eq!(stored, [3]);
        assert!(!again.new_stream);
    }

    fn snapshot(seq: u64, of: &Mirror) -> OutboundEvent {
        OutboundEvent {
            seq,
            at: Timestamp(seq),
            report: Report::Snapshot {
                host: Box::new(of.state.host.clone()),
                probes: Default::default(),
                cause: fleetnode_state_machine::ResyncCause::ControlPlaneLog { log_end: 0 },
            },
        }
    }

    #[test]
    fn a_batch_that_does_not_continue_the_log_asks_for_a_snapshot() {
        let mirror = Mirror::default().apply(&batch(1, &[1, 2])).unwrap().mirror;
        // The events 3 and 4 are gone on both sides (a restored backup): nothing is applied.
        let refused = mirror.apply(&batch(1, &[5, 6])).unwrap_err();
        assert!(
            matches!(
                refused,
                Refused::Resync {
                    first: 5,
                    log_end: 2,
                    ..
                }
            ),
            "{refused:?}"
        );
        // A stream this control plane never saw must start at 1, and replaces nothing.
        let refused = mirror.apply(&batch(9, &[40])).unwrap_err();
        assert!(
            matches!(refused, Refused::Resync { log_end: 0, .. }),
            "{refused:?}"
        );
        // A snapshot fits either, restarts the mirror and clears a divergence.
        let mut agent = mirror.clone();
        agent.state.host.paused = true;
        let mut flagged = mirror.clone();
        flagged.divergence = Some("stale".into());
        for (stream, mirror) in [(1, &flagged), (9, &mirror)] {
            let restarted = EventBatch {
                stream,
                events: vec![snapshot(41, &agent), recovered(42)],
            };
            let applied = mirror.apply(&restarted).unwrap();
            assert_eq!(applied.acked_through, 42);
            assert!(applied.mirror.state.host.paused);
            assert_eq!(applied.mirror.divergence, None);
            assert_eq!(applied.mirror.stream, Some(stream));
        }
    }

    #[test]
    fn a_heartbeat_with_events_the_mirror_never_saw_asks_for_a_snapshot() {
        let mirror = Mirror::default().apply(&batch(7, &[1, 2])).unwrap().mirror;
        let heartbeat: AgentStatus = serde_json::from_value(serde_json::json!({
            "agent_version": "0.1.0", "at": 100, "phase": "idle", "paused": false,
            "system": {}, "stream": 7, "last_seq": 5,
            "queue": {"depth": 0, "bytes": 0, "dead_letters": 0}
        }))
        .unwrap();
        // Nothing queued, yet seqs 3 to 5 never arrived.
        assert_eq!(mirror.needs_resync(&heartbeat), Some(2));
        // Queued: the next batch tells.
        let queued = AgentStatus {
            queue: fleetnode_wire::QueueSummary {
                depth: 3,
                ..heartbeat.queue
            },
            ..heartbeat.clone()
        };
        assert_eq!(mirror.needs_resync(&queued), None);
        // Behind the mirror, after its newest event: the host went back in its history.
        let rewound = AgentStatus {
            last_seq: 1,
            ..heartbeat.clone()
        };
        assert_eq!(mirror.needs_resync(&rewound), Some(2));
        let stale = AgentStatus {
            at: Timestamp(1),
            ..rewound
        };
        assert_eq!(
            mirror.needs_resync(&stale),
            None,
            "a heartbeat older than the events"
        );
        // A stream never seen; a retired one is never asked.
        let unknown = AgentStatus {
            stream: 8,
            ..heartbeat.clone()
        };
        assert_eq!(mirror.needs_resync(&unknown), Some(0));
        let moved = mirror.apply(&batch(8, &[1])).unwrap().mirror;
        let retired = AgentStatus {
            stream: 7,
            ..heartbeat
        };
        assert_eq!(moved.needs_resync(&retired), None);
        assert_eq!(
            mirror.needs_resync(&AgentStatus {
                last_seq: 2,
                ..queued
            }),
            None
        );
    }

    #[test]
    fn only_the_newest_retired_streams_are_remembered() {
        let mut mirror = Mirror::default();
        for stream in 0..(RETIRED_STREAMS_CAP as u64 + 5) {
            mirror = mirror.apply(&batch(stream, &[1])).unwrap().mirror;
        }
        assert_eq!(mirror.retired_streams.len(), RETIRED_STREAMS_CAP);
        let newest_retired = RETIRED_STREAMS_CAP as u64 + 3;
        assert!(mirror.apply(&batch(newest_retired, &[1])).is_err());
        // The oldest ones were forgotten: such a stream would start afresh.
        assert!(mirror.apply(&batch(0, &[1])).unwrap().new_stream);
    }

    #[test]
    fn a_heartbeat_of_another_stream_or_with_events_in_flight_is_not_compared() {
        let mirror = Mirror::default().apply(&batch(7, &[1])).unwrap().mirror;
        let heartbeat: AgentStatus = serde_json::from_value(serde_json::json!({
            "agent_version": "0.1.0", "at": 1, "phase": "failed", "paused": false,
            "system": {}, "stream": 7, "last_seq": 2,
            "queue": {"depth": 1, "bytes": 10, "dead_letters": 0}
        }))
        .unwrap();
        assert_eq!(mirror.compare(&heartbeat), Comparison::NotComparable);
        let other_stream = AgentStatus {
            stream: 8,
            last_seq: 1,
            ..heartbeat.clone()
        };
        assert_eq!(mirror.compare(&other_stream), Comparison::NotComparable);
        let delivered = AgentStatus {
            last_seq: 1,
            ..heartbeat
        };
        let Comparison::Disagrees(why) = mirror.compare(&delivered) else {
            panic!("a failed phase against an idle mirror must disagree");
        };
        assert!(why.contains("phase"), "{why}");
    }
}
