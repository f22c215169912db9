//! Rollouts in the store: one record per rollout, written together with the desired states its
//! decisions set, so a rollout and the directives it gave can never disagree after a crash.

use fleetnode_wire::{Rollout, RolloutId};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{DesiredChange, Store, StoreError, json};

/// Rollouts by number.
pub(super) const ROLLOUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("rollouts");

impl Store {
    /// Every rollout, oldest first.
    pub fn load_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(ROLLOUTS).map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.fail(e))? {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            out.push(self.parse(&format!("rollout {}", key.value()), value.value())?);
        }
        Ok(out)
    }

    /// Stores a rollout and the desired states its latest decision set, in one durable
    /// transaction.
    pub fn commit_rollout(
        &self,
        rollout: &Rollout,
        changes: &[DesiredChange],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        self.write_desired(&txn, changes)?;
        {
            let mut table = txn.open_table(ROLLOUTS).map_err(|e| self.fail(e))?;
            table
                .insert(rollout.id.0, json(rollout).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// The number the next rollout gets: one above the highest stored.
    pub fn next_rollout_id(&self) -> Result<RolloutId, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let table = txn.open_table(ROLLOUTS).map_err(|e| self.fail(e))?;
        let last = table.last().map_err(|e| self.fail(e))?;
        Ok(RolloutId(last.map_or(0, |(key, _)| key.value()) + 1))
    }
}
