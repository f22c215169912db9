//! Operators and the audit log in the store. An operator's token is kept only as its SHA-256
//! digest; audit entries are appended, never changed, each in its own durable transaction
//! before the action's answer goes out.

use fleetnode_wire::{AuditEntry, HostId, OperatorName, Timestamp};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, json};

/// Operators by name.
pub(super) const OPERATORS: TableDefinition<&str, &[u8]> = TableDefinition::new("operators");
/// The audit log by seq.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// A named operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// The name.
    pub name: OperatorName,
    /// SHA-256 of their bearer token, hex. The token itself is never stored.
    pub token_sha256: String,
    /// When they were added (server clock).
    pub added_at: Timestamp,
    /// Who added them.
    pub added_by: String,
    /// When their token was revoked; a revoked operator can no longer authenticate.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries naming this host.
    pub host: Option<HostId>,
    /// Only entries at or after this time.
    pub since: Option<Timestamp>,
    /// Only entries by this principal (an operator's name, `admin`, `unauthenticated`).
    pub who: Option<String>,
}

impl Store {
    /// Every operator, by name.
    pub fn load_operators(&self) -> Result<Vec<OperatorRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(OPERATORS).map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            out.push(self.parse(&format!("operator {}", key.value()), value.value())?);
        }
        Ok(out)
    }

    /// Writes an operator's record (a new one, or one revoked).
    pub fn put_operator(&self, record: &OperatorRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(OPERATORS).map_err(|e| self.fail(e))?;
            table
                .insert(record.name.as_str(), json(record).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// Appends an entry, giving it the next seq; returns the entry as stored.
    pub fn append_audit(&self, mut entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
            let last = table
                .last()
                .map_err(|e| self.fail(e))?
                .map_or(0, |(key, _)| key.value());
            entry.seq = last + 1;
            table
                .insert(entry.seq, json(&entry).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)?;
        Ok(entry)
    }

    /// The newest `limit` entries matching `filter`, oldest first, and whether older matching
    /// ones were left out.
    pub fn audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.fail(e))?;
        let mut newest_first = Vec::new();
        let mut truncated = false;
        for entry in table.iter().map_err(|e| self.fail(e))?.rev() {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let entry: AuditEntry =
                self.parse(&format!("audit entry {}", key.value()), value.value())?;
            if filter.since.is_some_and(|since| entry.at < since) {
                break;
            }
            if filter
                .host
                .as_ref()
                .is_some_and(|h| !entry.hosts.contains(h))
                || filter.who.as_ref().is_some_and(|who| entry.who != *who)
            {
                continue;
            }
            if newest_first.len() == limit {
                truncated = true;
                break;
            }
            newest_first.push(entry);
        }
        newest_first.reverse();
        Ok((newest_first, truncated))
    }
}
