//! Pruning what the store no longer needs: old events, deep desired-state history, old audit
//! entries. Each call examines a bounded number of records in one write transaction and says
//! where the next call goes on, so no transaction runs long and group commits of agent writes
//! are never held back for more than one batch. A dry run counts without removing.

use std::collections::BTreeMap;

use fleetnode_wire::{AuditEntry, HostId, OutboundEvent, Timestamp};
use redb::{ReadableTable, WriteTransaction};

use super::audit::AUDIT;
use super::{DESIRED_HISTORY, EVENTS, MIRRORS, Store, StoreError};
use crate::mirror::Mirror;

/// Most records one call examines: a few milliseconds of work, so a pruning transaction is
/// never the reason an agent's batch waits.
pub const EXAMINE_PER_BATCH: usize = 2_000;

/// What one pruning call did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pruned<C> {
    /// Records removed (or, in a dry run, that would be).
    pub removed: u64,
    /// Where the next call goes on; `None` once the whole table was examined.
    pub next: Option<C>,
}

/// Where a pass over the event log is: the last key examined.
pub type EventCursor = (String, u64, u64);

/// Which events stay whatever their age.
#[derive(Debug, Clone, Default)]
pub struct EventKeep {
    /// Events older than this go, unless kept below.
    pub cutoff: Timestamp,
    /// The newest events of each host's current stream that stay (what `fleetnode-cp host`
    /// shows).
    pub newest: u64,
    /// Per host, the start of the oldest rollout still worth investigating that includes it:
    /// its events from then on stay.
    pub since: BTreeMap<HostId, Timestamp>,
}

impl Store {
    /// Removes events older than `keep.cutoff`, except the newest `keep.newest` of each host's
    /// current stream and those of rollouts still kept, examining at most
    /// [`EXAMINE_PER_BATCH`] events after `after`.
    pub fn prune_events(
        &self,
        keep: &EventKeep,
        after: Option<&EventCursor>,
        dry_run: bool,
    ) -> Result<Pruned<EventCursor>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut doomed: Vec<EventCursor> = Vec::new();
        let mut last = None;
        let mut examined = 0;
        {
            let log = txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
            let mirrors = txn.open_table(MIRRORS).map_err(|e| self.fail(e))?;
            let mut current: BTreeMap<String, Option<(u64, u64)>> = BTreeMap::new();
            let range = match after {
                Some((host, stream, seq)) => log.range((host.as_str(), *stream, *seq)..),
                None => log.range::<(&str, u64, u64)>(..),
            }
            .map_err(|e| self.fail(e))?;
            for entry in range {
                let (key, value) = entry.map_err(|e| self.fail(e))?;
                let (host, stream, seq) = key.value();
                if after.is_some_and(|a| (a.0.as_str(), a.1, a.2) == (host, stream, seq)) {
                    continue;
                }
                if examined == EXAMINE_PER_BATCH {
                    break;
                }
                examined += 1;
                last = Some((host.to_owned(), stream, seq));
                if !current.contains_key(host) {
                    let head = match mirrors.get(host).map_err(|e| self.fail(e))? {
                        Some(v) => {
                            let mirror: Mirror =
                                self.parse(&format!("mirror of {host}"), v.value())?;
                            mirror.stream.map(|s| (s, mirror.state.host.seq))
                        }
                        None => None,
                    };
                    current.insert(host.to_owned(), head);
                }
                let newest = current
                    .get(host)
                    .copied()
                    .flatten()
                    .is_some_and(|(s, end)| s == stream && seq > end.saturating_sub(keep.newest));
                if newest {
                    continue;
                }
                let event: OutboundEvent =
                    self.parse(&format!("event {seq} of {host}"), value.value())?;
                let in_rollout = HostId::parse(host)
                    .ok()
                    .and_then(|id| keep.since.get(&id).copied())
                    .is_some_and(|since| event.at >= since);
                if event.at < keep.cutoff && !in_rollout {
                    doomed.push((host.to_owned(), stream, seq));
                }
            }
        }
        let removed = doomed.len() as u64;
        if !dry_run && !doomed.is_empty() {
            let mut log = txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
            for (host, stream, seq) in &doomed {
                log.remove((host.as_str(), *stream, *seq))
                    .map_err(|e| self.fail(e))?;
            }
        }
        self.finish(txn, dry_run || removed == 0)?;
        let next = if examined == EXAMINE_PER_BATCH {
            last
        } else {
            None
        };
        Ok(Pruned { removed, next })
    }

    /// Keeps the newest `depth` entries of each host's desired-state history (the state in
    /// force is kept apart and never pruned), examining the hosts after `after`.
    pub fn prune_desired_history(
        &self,
        depth: u64,
        after: Option<&str>,
        dry_run: bool,
    ) -> Result<Pruned<String>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut doomed: Vec<(String, u64)> = Vec::new();
        let mut examined = 0;
        let mut last_host: Option<String> = None;
        let mut complete = true;
        {
            let history = txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
            let start = after.map(|host| (host, u64::MAX));
            let range = match &start {
                Some(start) => history.range(*start..),
                None => history.range::<(&str, u64)>(..),
            }
            .map_err(|e| self.fail(e))?;
            // Newest first within a host: collect one host's revisions, then keep its last
            // `depth`.
            let mut revisions: Vec<u64> = Vec::new();
            for entry in range {
                let (key, _) = entry.map_err(|e| self.fail(e))?;
                let (host, revision) = key.value();
                if last_host.as_deref() != Some(host) {
                    if let Some(done) = last_host.take() {
                        doom_oldest(&done, &mut revisions, depth, &mut doomed);
                        if examined >= EXAMINE_PER_BATCH {
                            last_host = Some(done);
                            complete = false;
                            break;
                        }
                    }
                    last_host = Some(host.to_owned());
                }
                revisions.push(revision);
                examined += 1;
            }
            if complete && let Some(done) = &last_host {
                doom_oldest(done, &mut revisions, depth, &mut doomed);
            }
        }
        let removed = doomed.len() as u64;
        if !dry_run && !doomed.is_empty() {
            let mut history = txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
            for (host, revision) in &doomed {
                history
                    .remove((host.as_str(), *revision))
                    .map_err(|e| self.fail(e))?;
            }
        }
        self.finish(txn, dry_run || removed == 0)?;
        Ok(Pruned {
            removed,
            next: if complete { None } else { last_host },
        })
    }

    /// Removes audit entries older than `cutoff`, oldest first, examining at most
    /// [`EXAMINE_PER_BATCH`] after the entry numbered `after`. Entries are appended in time
    /// order, so the first one young enough ends the pass.
    pub fn prune_audit(
        &self,
        cutoff: Timestamp,
        after: Option<u64>,
        dry_run: bool,
    ) -> Result<Pruned<u64>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut doomed = Vec::new();
        let mut next = None;
        {
            let table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
            let from = after.map_or(0, |seq| seq.saturating_add(1));
            for entry in table.range(from..).map_err(|e| self.fail(e))? {
                let (key, value) = entry.map_err(|e| self.fail(e))?;
                let seq = key.value();
                let entry: AuditEntry = self.parse(&format!("audit entry {seq}"), value.value())?;
                if entry.at >= cutoff {
                    break;
                }
                if doomed.len() == EXAMINE_PER_BATCH {
                    next = doomed.last().copied();
                    break;
                }
                doomed.push(seq);
            }
        }
        let removed = doomed.len() as u64;
        if !dry_run && !doomed.is_empty() {
            let mut table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
            for seq in &doomed {
                table.remove(*seq).map_err(|e| self.fail(e))?;
            }
        }
        self.finish(txn, dry_run || removed == 0)?;
        Ok(Pruned { removed, next })
    }

    /// Commits a pruning transaction, or drops it when it changed nothing.
    fn finish(&self, txn: WriteTransaction, nothing: bool) -> Result<(), StoreError> {
        if nothing {
            txn.abort().map_err(|e| self.fail(e))
        } else {
            self.commit(txn)
        }
    }
}

/// Marks all but the newest `depth` of one host's revisions (collected in ascending order).
fn doom_oldest(host: &str, revisions: &mut Vec<u64>, depth: u64, doomed: &mut Vec<(String, u64)>) {
    let keep = usize::try_from(depth).unwrap_or(usize::MAX);
    let excess = revisions.len().saturating_sub(keep);
    doomed.extend(
        revisions
            .drain(..)
            .take(excess)
            .map(|r| (host.to_owned(), r)),
    );
}
