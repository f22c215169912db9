//! Rollouts: one record per rollout, written together with the desired states its decision
//! sets, in one transaction that first checks the driver's fencing token: a rollout and the
//! directives it gave never disagree, and a replica that lost the driver's lease writes
//! nothing.

use fleetnode_wire::{Directive, HostId, Rollout, RolloutId, Timestamp};

use std::collections::BTreeMap;

use super::desired::LockedHost;
use super::lease::Fence;
use super::store::{from_json, to_i64, to_json, to_u64};
use super::{PgError, PgStore};
use crate::store::{DesiredChange, DesiredRecord};

/// The advisory lock under which rollouts are numbered ("rollouts" in ASCII).
const ROLLOUT_NUMBER_LOCK: i64 = 0x726f_6c6c_6f75_7473;

impl PgStore {
    /// Every rollout, oldest first.
    pub async fn load_rollouts(&self) -> Result<Vec<Rollout>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, rollout FROM rollouts ORDER BY id", &[])
            .await
            .map_err(|e| self.fail("loading the rollouts", &e))?;
        rows.into_iter()
            .map(|row| {
                let id: i64 = row.get(0);
                from_json(|| format!("rollout {id}"), row.get(1))
            })
            .collect()
    }

    /// A number for a new rollout, never given before: one above every stored rollout, and
    /// distinct for replicas asking at the same time. The sequence is moved past the stored
    /// rollouts under a transaction-scoped advisory lock: without it, two replicas numbering
    /// while the sequence lags the table (after `store copy` or a restore) could both be given
    /// `max(id) + 1`.
    pub async fn next_rollout_id(&self) -> Result<RolloutId, PgError> {
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail("numbering a rollout", &e))?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLOUT_NUMBER_LOCK])
            .await
            .map_err(|e| self.fail("numbering a rollout", &e))?;
        let id: i64 = txn
            .query_one(
                "SELECT setval('rollout_ids', greatest(nextval('rollout_ids'),
                               (SELECT coalesce(max(id), 0) + 1 FROM rollouts)))",
                &[],
            )
            .await
            .map_err(|e| self.fail("numbering a rollout", &e))?
            .get(0);
        txn.commit()
            .await
            .map_err(|e| self.fail("numbering a rollout", &e))?;
        Ok(RolloutId(to_u64(id)))
    }

    /// Stores `rollout` and the directives its latest decision gave, in one transaction,
    /// under the driver's lease: refused with [`PgError::Fenced`] when `fence` is no longer
    /// current, with [`PgError::StaleDecision`] when a host's next revision is not the one its
    /// directive carries (its desired state changed since the decision was taken: decide
    /// again), and with [`PgError::UnknownHost`]; nothing is written then. Returns the
    /// desired-state changes made.
    pub async fn commit_rollout(
        &self,
        fence: &Fence,
        rollout: &Rollout,
        directives: &[(HostId, Directive)],
        now: Timestamp,
    ) -> Result<Vec<DesiredChange>, PgError> {
        let what = format!("storing rollout {}", rollout.id);
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(&what, &e))?;
        self.check_fence(&txn, fence).await?;
        let hosts: Vec<HostId> = directives.iter().map(|(host, _)| host.clone()).collect();
        let locked = self.lock_for_desired(&txn, &hosts).await?;
        let locked: BTreeMap<&HostId, &LockedHost> = locked.iter().map(|h| (&h.id, h)).collect();
        let mut changes = Vec::with_capacity(directives.len());
        for (host, directive) in directives {
            let Some(current) = locked.get(host) else {
                return Err(PgError::UnknownHost { host: host.clone() });
            };
            if current.next != directive.revision {
                return Err(PgError::StaleDecision {
                    host: host.clone(),
                    next: current.next.0,
                    decided: directive.revision.0,
                });
            }
            changes.push(DesiredChange {
                host: host.clone(),
                record: DesiredRecord::of_rollout(rollout.id, directive, &current.desired, now),
            });
        }
        self.write_desired(&txn, &changes).await?;
        txn.execute(
            "INSERT INTO rollouts (id, rollout) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET rollout = excluded.rollout",
            &[
                &to_i64("rollout id", rollout.id.0)?,
                &to_json("rollout", rollout)?,
            ],
        )
        .await
        .map_err(|e| self.fail(&what, &e))?;
        txn.commit().await.map_err(|e| self.fail(&what, &e))?;
        Ok(changes)
    }
}
