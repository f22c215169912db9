//! Writes to the store (state with new events, acknowledgements, dead letters) and the drainer's
//! read-only view of the queue.

use std::sync::Arc;

use fleetnode_state_machine::queue::{self as rules, Entry, EntryKind};
use fleetnode_state_machine::{OutboundEvent, State, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{
    DEAD_LETTER_CAP, DEAD_LETTERS, OUTBOUND, QUEUE_MAX_BYTES, QUEUE_MAX_EVENTS, QueueStats, STATE,
    STATE_KEY, Store, StoreError,
};

/// What a commit did to the queue besides adding the new events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitReport {
    /// Probe observations dropped by compaction in this commit.
    pub compacted: u64,
    /// The queue is over its cap with nothing left to compact (only lifecycle events).
    pub over_cap: bool,
}

/// What became of a dead-letter request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterOutcome {
    /// The event moved to the dead letters; this gap took its place.
    Moved(OutboundEvent),
    /// The event is no longer queued (acknowledged, compacted or already dead-lettered).
    NotQueued,
}

/// One dead letter as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The refused event.
    pub event: OutboundEvent,
    /// The control plane's error code.
    pub code: String,
    /// When it was dead-lettered.
    pub at: Timestamp,
}

fn op(e: impl std::fmt::Display) -> StoreError {
    StoreError::Operation(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(op)
}

impl Store {
    /// Persists a new state and the events it emitted, in one durable transaction; compacts the
    /// queue when it is over its cap.
    pub fn commit(
        &mut self,
        state: &State,
        events: &[OutboundEvent],
    ) -> Result<CommitReport, StoreError> {
        let write = self.db.begin_write().map_err(op)?;
        let mut report = CommitReport::default();
        let mut stats = self.stats;
        {
            let mut table = write.open_table(STATE).map_err(op)?;
            table
                .insert(STATE_KEY, encode(state)?.as_slice())
                .map_err(op)?;
            let mut queue = write.open_table(OUTBOUND).map_err(op)?;
            for event in events {
                let bytes = encode(event)?;
                queue.insert(event.seq, bytes.as_slice()).map_err(op)?;
                stats.depth += 1;
                stats.bytes += bytes.len() as u64;
                stats.oldest_at = stats.oldest_at.or(Some(event.at));
            }
        }
        let over = |s: &QueueStats| s.depth > QUEUE_MAX_EVENTS || s.bytes > QUEUE_MAX_BYTES;
        let worth_trying = self
            .futile_at
            .is_none_or(|depth| stats.depth > depth + depth / 10);
        if over(&stats) && worth_trying {
            report.compacted = compact_queue(&write)?;
            stats = queue_stats(&write, stats.dead_letters)?;
            self.futile_at = over(&stats).then_some(stats.depth);
        }
        report.over_cap = over(&stats);
        write.commit().map_err(op)?;
        self.stats = stats;
        Ok(report)
    }

    /// Drops every queued event up to and including `through`; returns how many were dropped.
    pub fn ack(&mut self, through: u64) -> Result<u64, StoreError> {
        if self.stats.depth == 0 {
            return Ok(0);
        }
        let write = self.db.begin_write().map_err(op)?;
        let removed;
        {
            let mut queue = write.open_table(OUTBOUND).map_err(op)?;
            let seqs: Vec<u64> = queue
                .range(..=through)
                .map_err(op)?
                .map(|row| row.map(|(seq, _)| seq.value()))
                .collect::<Result<_, _>>()
                .map_err(op)?;
            for seq in &seqs {
                queue.remove(*seq).map_err(op)?;
            }
            removed = seqs.len() as u64;
        }
        if removed == 0 {
            write.abort().map_err(op)?;
            return Ok(0);
        }
        let stats = queue_stats(&write, self.stats.dead_letters)?;
        write.commit().map_err(op)?;
        self.stats = stats;
        self.futile_at = None;
        Ok(removed)
    }

    /// Moves the queued event `seq` to the dead letters and puts the state machine's gap in its
    /// place.
    pub fn dead_letter(
        &mut self,
        seq: u64,
        code: &str,
        now: Timestamp,
    ) -> Result<DeadLetterOutcome, StoreError> {
        let write = self.db.begin_write().map_err(op)?;
        let gap;
        {
            let mut queue = write.open_table(OUTBOUND).map_err(op)?;
            let Some(bytes) = queue.get(seq).map_err(op)? else {
                return Ok(DeadLetterOutcome::NotQueued);
            };
            let event: OutboundEvent = serde_json::from_slice(bytes.value()).map_err(op)?;
            drop(bytes);
            let Some(letter) = rules::dead_letter_gap(&event, code) else {
                return Ok(DeadLetterOutcome::NotQueued);
            };
            let code = fleetnode_state_machine::cap_head(code, rules::GAP_CODE_CAP);
            gap = letter;
            queue.insert(seq, encode(&gap)?.as_slice()).map_err(op)?;
            let mut dead = write.open_table(DEAD_LETTERS).map_err(op)?;
            let letter = DeadLetter {
                event,
                code,
                at: now,
            };
            dead.insert(seq, encode(&letter)?.as_slice()).map_err(op)?;
            while dead.len().map_err(op)? > DEAD_LETTER_CAP {
                if dead.pop_first().map_err(op)?.is_none() {
                    break;
                }
            }
        }
        let dead_letters = write
            .open_table(DEAD_LETTERS)
            .map_err(op)?
            .len()
            .map_err(op)?;
        let stats = queue_stats(&write, dead_letters)?;
        write.commit().map_err(op)?;
        self.stats = stats;
        Ok(DeadLetterOutcome::Moved(gap))
    }
}

/// Recomputes the queue counters inside a write transaction.
fn queue_stats(write: &WriteTransaction, dead_letters: u64) -> Result<QueueStats, StoreError> {
    let queue = write.open_table(OUTBOUND).map_err(op)?;
    let mut stats = QueueStats {
        dead_letters,
        ..QueueStats::default()
    };
    for row in queue.iter().map_err(op)? {
        let (_, bytes) = row.map_err(op)?;
        stats.depth += 1;
        stats.bytes += bytes.value().len() as u64;
    }
    if let Some((_, bytes)) = queue.first().map_err(op)? {
        let event: OutboundEvent = serde_json::from_slice(bytes.value()).map_err(op)?;
        stats.oldest_at = Some(event.at);
    }
    Ok(stats)
}

/// Compacts probe observations in the queue by the state machine's plan; returns how many
/// were dropped.
fn compact_queue(write: &WriteTransaction) -> Result<u64, StoreError> {
    let mut queue = write.open_table(OUTBOUND).map_err(op)?;
    let mut entries = Vec::new();
    for row in queue.iter().map_err(op)? {
        let (_, bytes) = row.map_err(op)?;
        let event: OutboundEvent = serde_json::from_slice(bytes.value()).map_err(op)?;
        entries.push(Entry {
            seq: event.seq,
            at: event.at,
            kind: EntryKind::of(&event),
        });
    }
    let plan = rules::plan(&entries);
    for seq in &plan.remove {
        queue.remove(*seq).map_err(op)?;
    }
    for gap in &plan.insert {
        queue.insert(gap.seq, encode(gap)?.as_slice()).map_err(op)?;
    }
    Ok(plan.dropped)
}

/// A read-only view of the queue (the drainer's).
#[derive(Debug, Clone)]
pub struct StoreReader {
    db: Arc<Database>,
}

impl StoreReader {
    pub(super) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Queued events with a seq above `after`, in seq order: at most `max_events` of them and,
    /// beyond the first, at most `max_bytes` of encoded events.
    pub fn batch_after(
        &self,
        after: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboundEvent>, StoreError> {
        let read = self.db.begin_read().map_err(op)?;
        let queue = read.open_table(OUTBOUND).map_err(op)?;
        let mut out = Vec::new();
        let mut bytes_total = 0;
        let start = after.saturating_add(1);
        for row in queue.range(start..).map_err(op)? {
            let (_, bytes) = row.map_err(op)?;
            let len = bytes.value().len();
            if out.len() >= max_events || (!out.is_empty() && bytes_total + len > max_bytes) {
                break;
            }
            bytes_total += len;
            out.push(serde_json::from_slice(bytes.value()).map_err(op)?);
        }
        Ok(out)
    }

    /// The queued event with this seq, if any.
    pub fn get(&self, seq: u64) -> Result<Option<OutboundEvent>, StoreError> {
        let read = self.db.begin_read().map_err(op)?;
        let queue = read.open_table(OUTBOUND).map_err(op)?;
        match queue.get(seq).map_err(op)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value()).map_err(op)?)),
            None => Ok(None),
        }
    }

    /// The seq of the newest queued event, if any.
    pub fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        let read = self.db.begin_read().map_err(op)?;
        let queue = read.open_table(OUTBOUND).map_err(op)?;
        Ok(queue.last().map_err(op)?.map(|(seq, _)| seq.value()))
    }

    /// Every dead letter kept, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let read = self.db.begin_read().map_err(op)?;
        let table = read.open_table(DEAD_LETTERS).map_err(op)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(op)? {
            let (_, bytes) = row.map_err(op)?;
            out.push(serde_json::from_slice(bytes.value()).map_err(op)?);
        }
        Ok(out)
    }
}
