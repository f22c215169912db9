//! The outbound queue's rules, decided here so that every gap the control plane receives is
//! made by the same code as the events it stands for: which probe observations a full queue
//! drops, the gap markers that replace them, and the gap that replaces an event the control
//! plane refused for good.
//!
//! Compaction:
//! Only probe observations are dropped, and never the latest one of each probe. Every maximal run
//! of dropped events (adjacent in the queue) becomes one `gap` event at the run's last seq, whose
//! `from_seq` is the run's first seq; the control plane's mirror accepts a gap as covering its
//! range, so seqs stay gap-free for the receiver. Earlier compaction gaps next to a dropped run are
//! folded into the new gap. Lifecycle events are never touched.

use std::collections::BTreeMap;

use crate::reason::cap_head;
use crate::report::{GapCause, OutboundEvent, Report, ReportClass};
use crate::time::Timestamp;
use crate::types::ProbeId;

/// Longest control-plane error code a dead-letter gap keeps, in bytes.
pub const GAP_CODE_CAP: usize = 128;

/// What compaction needs to know about one queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its seq (the queue key).
    pub seq: u64,
    /// When it happened.
    pub at: Timestamp,
    /// What it is.
    pub kind: EntryKind,
}

/// The kinds of queued events compaction distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A probe observation (droppable unless it is the probe's latest).
    Probe(ProbeId),
    /// A gap left by an earlier compaction (may be folded into a new one).
    CompactedGap {
        /// First seq it covers.
        from_seq: u64,
        /// How many observations it stands for.
        dropped: u64,
    },
    /// Anything else: never dropped.
    Lifecycle,
}

impl EntryKind {
    /// Classifies a queued event.
    pub fn of(event: &OutboundEvent) -> Self {
        match event.report.class() {
            ReportClass::Observation { probe } => Self::Probe(probe.clone()),
            ReportClass::Gap {
                from_seq,
                cause: GapCause::Compacted { dropped },
            } => Self::CompactedGap {
                from_seq,
                dropped: *dropped,
            },
            ReportClass::Gap {
                cause: GapCause::DeadLettered { .. },
                ..
            }
            | ReportClass::Snapshot
            | ReportClass::Lifecycle => Self::Lifecycle,
        }
    }
}

/// The changes compaction makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Seqs to remove from the queue.
    pub remove: Vec<u64>,
    /// Gap events to insert (each at the last seq of its run, which is also in `remove`).
    pub insert: Vec<OutboundEvent>,
    /// Probe observations dropped by this compaction.
    pub dropped: u64,
}

/// The gap that takes the place of `event` when the control plane refused it for good, with the
/// control plane's error code; `None` when `event` already is such a gap (refusing a gap again
/// changes nothing). A gap that replaced compacted events keeps the start of its range.
pub fn dead_letter_gap(event: &OutboundEvent, code: &str) -> Option<OutboundEvent> {
    let from_seq = match event.report.class() {
        ReportClass::Gap {
            cause: GapCause::DeadLettered { .. },
            ..
        } => return None,
        ReportClass::Gap { from_seq, .. } => from_seq,
        ReportClass::Observation { .. } | ReportClass::Snapshot | ReportClass::Lifecycle => {
            event.seq
        }
    };
    Some(OutboundEvent {
        seq: event.seq,
        at: event.at,
        report: Report::Gap {
            from_seq,
            cause: GapCause::DeadLettered {
                code: cap_head(code, GAP_CODE_CAP),
            },
        },
    })
}

/// Whether the control plane's mirror lacks what `event` did once it is dead-lettered, so that
/// a snapshot must follow (see `docs/protocol.md`, "Resync"): every lifecycle event but a gap
/// (it stands for probe observations, which change no mirrored host) and a snapshot (answering
/// a refused snapshot with another would never end).
pub fn dead_letter_needs_snapshot(event: &OutboundEvent) -> bool {
    matches!(event.report.class(), ReportClass::Lifecycle)
}

/// Plans the compaction of a queue given in seq order.
pub fn plan(entries: &[Entry]) -> Plan {
    let mut latest: BTreeMap<&ProbeId, u64> = BTreeMap::new();
    for entry in entries {
        if let EntryKind::Probe(probe) = &entry.kind {
            latest.insert(probe, entry.seq);
        }
    }
    let droppable = |entry: &Entry| match &entry.kind {
        EntryKind::Probe(probe) => latest.get(probe) != Some(&entry.seq),
        EntryKind::CompactedGap { .. } => true,
        EntryKind::Lifecycle => false,
    };
    let mut plan = Plan::default();
    let mut run: Vec<&Entry> = Vec::new();
    for entry in entries {
        if droppable(entry) {
            run.push(entry);
        } else {
            close_run(&mut run, &mut plan);
        }
    }
    close_run(&mut run, &mut plan);
    plan
}

/// Turns a run of droppable events into one gap, if the run drops any new observation.
fn close_run(run: &mut Vec<&Entry>, plan: &mut Plan) {
    let new_drops = run
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Probe(_)))
        .count() as u64;
    // A lone old gap is left alone; several old gaps in a row are folded into one.
    if new_drops == 0 && run.len() < 2 {
        run.clear();
        return;
    }
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return;
    };
    let from_seq = match first.kind {
        EntryKind::CompactedGap { from_seq, .. } => from_seq,
        EntryKind::Probe(_) | EntryKind::Lifecycle => first.seq,
    };
    let dropped: u64 = run
        .iter()
        .map(|e| match e.kind {
            EntryKind::CompactedGap { dropped, .. } => dropped,
            EntryKind::Probe(_) | EntryKind::Lifecycle => 1,
        })
        .sum();
    plan.remove.extend(run.iter().map(|e| e.seq));
    plan.insert.push(OutboundEvent {
        seq: last.seq,
        at: last.at,
        report: Report::Gap {
            from_seq,
            cause: GapCause::Compacted { dropped },
        },
    });
    plan.dropped += new_drops;
    run.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(seq: u64, name: &str) -> Entry {
        Entry {
            seq,
            at: Timestamp(seq * 10),
            kind: EntryKind::Probe(ProbeId::parse(name).unwrap()),
        }
    }

    fn life(seq: u64) -> Entry {
        Entry {
            seq,
            at: Timestamp(seq * 10),
            kind: EntryKind::Lifecycle,
        }
    }

    fn gap(seq: u64, from_seq: u64, dropped: u64) -> OutboundEvent {
        OutboundEvent {
            seq,
            at: Timestamp(seq * 10),
            report: Report::Gap {
                from_seq,
                cause: GapCause::Compacted { dropped },
            },
        }
    }

    #[test]
    fn keeps_lifecycle_and_the_latest_observation_of_each_probe() {
        let entries = [
            life(1),
            probe(2, "web"),
            probe(3, "db"),
            probe(4, "web"),
            life(5),
            probe(6, "web"),
            probe(7, "db"),
            probe(8, "web"),
        ];
        let plan = plan(&entries);
        assert_eq!(plan.remove, vec![2, 3, 4, 6]);
        assert_eq!(plan.insert, vec![gap(4, 2, 3), gap(6, 6, 1)]);
        assert_eq!(plan.dropped, 4);
    }

    #[test]
    fn old_gaps_fold_into_new_runs() {
        let old = Entry {
            seq: 4,
            at: Timestamp(40),
            kind: EntryKind::CompactedGap {
                from_seq: 2,
                dropped: 3,
            },
        };
        let entries = [life(1), old.clone(), probe(5, "web"), probe(6, "web")];
        let plan = plan(&entries);
        assert_eq!(plan.remove, vec![4, 5]);
        assert_eq!(plan.insert, vec![gap(5, 2, 4)]);
        assert_eq!(plan.dropped, 1);
        // Two old gaps side by side fold into one even with nothing new to drop.
        let second = Entry {
            seq: 5,
            at: Timestamp(50),
            kind: EntryKind::CompactedGap {
                from_seq: 5,
                dropped: 1,
            },
        };
        let plan = super::plan(&[life(1), old.clone(), second, life(6)]);
        assert_eq!(plan.remove, vec![4, 5]);
        assert_eq!(plan.insert, vec![gap(5, 2, 4)]);
        assert_eq!(plan.dropped, 0);
        // Alone, an old gap is left as it is.
        let plan = super::plan(&[life(1), old, life(5)]);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_dead_letter_gap_takes_the_events_place_and_range() {
        let event = OutboundEvent {
            seq: 9,
            at: Timestamp(90),
            report: Report::Paused,
        };
        let letter = dead_letter_gap(&event, "invalid").unwrap();
        assert_eq!(letter.seq, 9);
        assert_eq!(letter.at, Timestamp(90));
        assert_eq!(
            letter.report,
            Report::Gap {
                from_seq: 9,
                cause: GapCause::DeadLettered {
                    code: "invalid".into()
                }
            }
        );
        assert_eq!(dead_letter_gap(&letter, "invalid"), None);
        let compacted = gap(12, 10, 3);
        let letter = dead_letter_gap(&compacted, &"x".repeat(500)).unwrap();
        let Report::Gap {
            from_seq,
            cause: GapCause::DeadLettered { code },
        } = letter.report
        else {
            panic!("not a dead-letter gap");
        };
        assert_eq!(from_seq, 10, "the compacted range is kept");
        assert!(code.len() <= GAP_CODE_CAP);
    }

    #[test]
    fn only_a_refused_lifecycle_fact_calls_for_a_snapshot() {
        let event = |report| OutboundEvent {
            seq: 3,
            at: Timestamp(3),
            report,
        };
        assert!(dead_letter_needs_snapshot(&event(Report::Paused)));
        assert!(!dead_letter_needs_snapshot(&gap(3, 2, 1)));
        let probe = Report::ProbeObserved {
            epoch: 1,
            probe: ProbeId::parse("web").unwrap(),
            passed: true,
            detail: String::new(),
        };
        assert!(!dead_letter_needs_snapshot(&event(probe)));
    }

    #[test]
    fn only_lifecycle_events_means_nothing_to_do() {
        let plan = plan(&[life(1), life(2), probe(3, "web")]);
        assert_eq!(plan, Plan::default());
    }
}
