//! Reading the whole store page by page, for copying it elsewhere (`fleetnode-cp store copy`):
//! every event, every desired-state history entry and every audit entry, each page after a
//! cursor (the last key of the page before), and how many records of each kind there are.
//!
//! Each page is its own read transaction. A copy runs with the server stopped (redb lets one
//! process open the file), so nothing changes between pages.

use fleetnode_wire::{AuditEntry, HostId, OutboundEvent};
use redb::{ReadableDatabase, ReadableTableMetadata};

use super::audit::{AUDIT, OPERATORS};
use super::rollouts::ROLLOUTS;
use super::{
    DESIRED_HISTORY, DesiredRecord, EVENTS, EventCursor, HEARTBEATS, HOSTS, Store, StoreError,
};

/// How many records of each kind a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Registered hosts (revoked ones included).
    pub hosts: u64,
    /// Entries of the desired-state histories.
    pub desired_history: u64,
    /// Events of every stream of every host.
    pub events: u64,
    /// Hosts with a stored heartbeat.
    pub heartbeats: u64,
    /// Operators (revoked ones included).
    pub operators: u64,
    /// Rollouts.
    pub rollouts: u64,
    /// Audit entries.
    pub audit: u64,
}

/// One stored event: its host, its stream, the event.
pub type StoredEvent = (HostId, u64, OutboundEvent);

impl Store {
    /// How many records of each kind the store holds.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let len = |n: Result<u64, redb::StorageError>| n.map_err(|e| self.fail(e));
        Ok(StoreCounts {
            hosts: len(txn.open_table(HOSTS).map_err(|e| self.fail(e))?.len())?,
            desired_history: len(txn
                .open_table(DESIRED_HISTORY)
                .map_err(|e| self.fail(e))?
                .len())?,
            events: len(txn.open_table(EVENTS).map_err(|e| self.fail(e))?.len())?,
            heartbeats: len(txn.open_table(HEARTBEATS).map_err(|e| self.fail(e))?.len())?,
            operators: len(txn.open_table(OPERATORS).map_err(|e| self.fail(e))?.len())?,
            rollouts: len(txn.open_table(ROLLOUTS).map_err(|e| self.fail(e))?.len())?,
            audit: len(txn.open_table(AUDIT).map_err(|e| self.fail(e))?.len())?,
        })
    }

    /// At most `limit` events after `after` (from the first when `None`), in key order (host,
    /// stream, seq).
    pub fn events_page(
        &self,
        after: Option<&EventCursor>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let log = txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
        let range = match after {
            Some((host, stream, seq)) => log.range((host.as_str(), *stream, *seq)..),
            None => log.range::<(&str, u64, u64)>(..),
        }
        .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(limit);
        for entry in range {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let (host, stream, seq) = key.value();
            if after.is_some_and(|(h, st, sq)| (h.as_str(), *st, *sq) == (host, stream, seq)) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let what = || format!("event {seq} of stream {stream} of {host}");
            let id = HostId::parse(host).map_err(|e| self.corrupt(&what(), e))?;
            let event = self.parse(&what(), value.value())?;
            out.push((id, stream, event));
        }
        Ok(out)
    }

    /// At most `limit` desired-state history entries after `after` (host, revision), in key
    /// order.
    pub fn desired_history_page(
        &self,
        after: Option<&(String, u64)>,
        limit: usize,
    ) -> Result<Vec<(HostId, DesiredRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let history = txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
        let range = match after {
            Some((host, revision)) => history.range((host.as_str(), *revision)..),
            None => history.range::<(&str, u64)>(..),
        }
        .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(limit);
        for entry in range {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let (host, revision) = key.value();
            if after.is_some_and(|(h, r)| (h.as_str(), *r) == (host, revision)) {
                continue;
            }
            if out.len() == limit {
                break;
            }
            let what = || format!("desired revision {revision} of {host}");
            let id = HostId::parse(host).map_err(|e| self.corrupt(&what(), e))?;
            out.push((id, self.parse(&what(), value.value())?));
        }
        Ok(out)
    }

    /// At most `limit` audit entries with a seq above `after`, oldest first.
    pub fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
        let Some(from) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(limit);
        for entry in table.range(from..).map_err(|e| self.fail(e))?.take(limit) {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            out.push(self.parse(&format!("audit entry {}", key.value()), value.value())?);
        }
        Ok(out)
    }

    fn corrupt(&self, what: &str, error: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            detail: error.to_string(),
        }
    }
}
