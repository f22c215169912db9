//! Desired-state changes: the selected hosts' rows locked in id order, each host's next
//! revision computed inside the transaction, the caller's change applied, the new states and
//! their history written, and every replica notified when it commits.

use deadpool_postgres::Transaction;
use fleetnode_wire::{DesiredState, HostId, Revision, Timestamp};
use tokio_postgres::types::Json;

use super::notify::{self, Kind};
use super::store::{json_column, to_i64, to_u64};
use super::{PgError, PgStore};
use crate::store::{DesiredChange, DesiredRecord};

/// The revision a host's next desired state carries: above its current one and above every
/// revision the host reported knowing, in its mirror or its latest heartbeat. The two differ
/// only when the database was restored from a backup older than what the agent received; an
/// agent ignores a directive older than the one it recorded. The one rule of both stores.
pub fn next_revision(
    current: Revision,
    mirrored: Option<Revision>,
    heartbeat: Option<Revision>,
) -> Revision {
    let reported = mirrored.max(heartbeat).unwrap_or_default();
    Revision(current.max(reported).0 + 1)
}

/// A host's row as locked for a desired-state change.
pub(super) struct LockedHost {
    /// The host.
    pub id: HostId,
    /// Its desired state in force.
    pub desired: DesiredState,
    /// The revision its next change must carry.
    pub next: Revision,
    /// Whether it is revoked.
    pub revoked: bool,
}

impl PgStore {
    /// Changes the desired states of `hosts` in one transaction: `change` gets each host's
    /// current state and the revision a change must carry and returns the new state, or `None`
    /// to leave the host as it is. Returns the changes made, by host id. Refuses the whole
    /// change, writing nothing, when a host is not registered ([`PgError::UnknownHost`]) or
    /// revoked ([`PgError::Revoked`]).
    pub async fn change_desired(
        &self,
        hosts: &[HostId],
        cause: &str,
        now: Timestamp,
        change: impl Fn(&DesiredState, Revision) -> Option<DesiredState>,
    ) -> Result<Vec<DesiredChange>, PgError> {
        let what = format!("changing desired states ({cause})");
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(&what, &e))?;
        let locked = self.lock_for_desired(&txn, hosts).await?;
        let mut changes = Vec::new();
        for host in &locked {
            if host.revoked {
                return Err(PgError::Revoked {
                    host: host.id.clone(),
                });
            }
            if let Some(desired) = change(&host.desired, host.next) {
                let record = DesiredRecord {
                    desired,
                    set_at: now,
                    cause: cause.to_owned(),
                };
                changes.push(DesiredChange {
                    host: host.id.clone(),
                    record,
                });
            }
        }
        self.write_desired(&txn, &changes).await?;
        txn.commit().await.map_err(|e| self.fail(&what, &e))?;
        Ok(changes)
    }

    /// Locks the rows of `hosts` (in id order) and reads what a desired-state change needs.
    /// Every host must be registered.
    pub(super) async fn lock_for_desired(
        &self,
        txn: &Transaction<'_>,
        hosts: &[HostId],
    ) -> Result<Vec<LockedHost>, PgError> {
        let mut ids: Vec<&str> = hosts.iter().map(HostId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() >= crate::fleet::LARGE_CHANGE {
            // Waits once for the groups in flight (on every replica), and holds new ones back
            // until this commits: otherwise the row locks below, taken one by one, meet one
            // in-flight group after another for the whole scan. Plain reads go on.
            txn.batch_execute("LOCK TABLE hosts IN EXCLUSIVE MODE")
                .await
                .map_err(|e| self.fail("locking the hosts table", &e))?;
        }
        // ORDER BY sorts before the rows are locked: every transaction takes them in id order.
        let fail = |e: tokio_postgres::Error| self.fail("locking hosts", &e);
        let statement = txn
            .prepare_cached(
                "SELECT id, desired, revision, revoked,
                        (mirror #>> '{state,host,desired,revision}')::bigint,
                        (heartbeat #>> '{heartbeat,desired_revision}')::bigint
                 FROM hosts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .await
            .map_err(fail)?;
        let rows = txn.query(&statement, &[&ids]).await.map_err(fail)?;
        let mut locked = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let revision = |i: usize| row.get::<_, Option<i64>>(i).map(|r| Revision(to_u64(r)));
            let current = Revision(to_u64(row.get(2)));
            locked.push(LockedHost {
                desired: json_column(&row, 1, || format!("desired state of {id}"))?,
                next: next_revision(current, revision(4), revision(5)),
                revoked: row.get(3),
                id: HostId::parse(&id).map_err(|e| PgError::Corrupt {
                    what: format!("host id {id:?}"),
                    detail: e.to_string(),
                })?,
            });
        }
        if locked.len() != ids.len() {
            // Both are sorted by id: the first id without its row is the first difference.
            let missing = ids
                .iter()
                .zip(
                    locked
                        .iter()
                        .map(|h| h.id.as_str())
                        .chain(std::iter::repeat("")),
                )
                .find(|(wanted, found)| *wanted != found)
                .map(|(wanted, _)| *wanted);
            if let Some(host) = missing.and_then(|id| HostId::parse(id).ok()) {
                return Err(PgError::UnknownHost { host });
            }
        }
        Ok(locked)
    }

    /// Writes new desired states with their history rows and notifies, in `txn`.
    pub(super) async fn write_desired(
        &self,
        txn: &Transaction<'_>,
        changes: &[DesiredChange],
    ) -> Result<(), PgError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(changes.len());
        let mut states = Vec::with_capacity(changes.len());
        let mut revisions = Vec::with_capacity(changes.len());
        let mut records = Vec::with_capacity(changes.len());
        for change in changes {
            ids.push(change.host.as_str());
            states.push(Json(&change.record.desired));
            revisions.push(to_i64("revision", change.record.desired.revision.0)?);
            records.push(Json(&change.record));
        }
        let update = async {
            let statement = txn
                .prepare_cached(
                    "UPDATE hosts SET desired = v.desired, revision = v.revision
                     FROM unnest($1::text[], $2::jsonb[], $3::int8[]) AS v (id, desired, revision)
                     WHERE hosts.id = v.id",
                )
                .await?;
            txn.execute(&statement, &[&ids, &states, &revisions]).await
        };
        let history = async {
            let statement = txn
                .prepare_cached(
                    "INSERT INTO desired_history (host, revision, record)
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::jsonb[])",
                )
                .await?;
            txn.execute(&statement, &[&ids, &revisions, &records]).await
        };
        // Both go out at once on the connection: one round trip, and the database works on
        // the second while the first's answer travels.
        tokio::try_join!(update, history).map_err(|e| self.fail("writing desired states", &e))?;
        // Each host with the revision committed: the replica that made the change already
        // holds it and need not read it again.
        let named: Vec<String> = ids
            .iter()
            .zip(&revisions)
            .map(|(id, revision)| format!("{id}={revision}"))
            .collect();
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        notify::send(txn, Kind::Desired, &named)
            .await
            .map_err(|e| notify::failed(self, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_revision_outnumbers_what_the_host_reported() {
        assert_eq!(next_revision(Revision(3), None, None), Revision(4));
        assert_eq!(
            next_revision(Revision(3), Some(Revision(7)), None),
            Revision(8)
        );
        assert_eq!(
            next_revision(Revision(3), Some(Revision(2)), Some(Revision(9))),
            Revision(10)
        );
        assert_eq!(next_revision(Revision(0), None, None), Revision(1));
    }
}
