//! The agent API's writes, group-committed: event batches and heartbeats of many hosts in one
//! transaction. Each host's row is locked (in id order) before its mirror is read, so a host's
//! writes serialise in the database whichever replica received them: two replicas given
//! overlapping batches of one host apply each event once, in order. The new events go in with
//! one multi-row insert, the mirrors and heartbeats with one multi-row update.
//!
//! A group of heartbeats alone is committed without waiting for the write-ahead log to reach
//! disk (`synchronous_commit = off`): a heartbeat is replaced every interval, so losing the
//! last ones in a crash costs nothing. Any group with events waits for it.

use std::collections::BTreeMap;

use fleetnode_wire::{AgentStatus, EventBatch, HostId, OutboundEvent, Revision, Timestamp};

use deadpool_postgres::Transaction;
use tokio_postgres::types::Json;

use super::store::{json_column, stream_key, to_i64, to_u64};
use super::{PgError, PgStore};
use crate::mirror::{Applied, Mirror, Refused};
use crate::store::HeartbeatRecord;

/// One write of the agent API.
#[derive(Debug, Clone)]
pub enum GroupWrite {
    /// A batch of a host's events.
    Batch {
        /// The host.
        host: HostId,
        /// What it sent.
        batch: EventBatch,
    },
    /// A host's heartbeat.
    Heartbeat {
        /// The host.
        host: HostId,
        /// What it sent (boxed: it is most of the write's size).
        status: Box<AgentStatus>,
        /// When it arrived (server clock).
        received_at: Timestamp,
    },
}

impl GroupWrite {
    fn host(&self) -> &HostId {
        match self {
            Self::Batch { host, .. } | Self::Heartbeat { host, .. } => host,
        }
    }
}

/// What became of one write of a group, in the order the writes were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// The batch was applied to the mirror (events stored, if any were new).
    Applied(Box<Applied>),
    /// The batch was refused whole; nothing of it was written.
    Refused(Refused),
    /// The heartbeat was stored.
    Heartbeat(Box<HeartbeatOutcome>),
    /// The host is not registered; nothing was written for this write.
    UnknownHost,
    /// The host is revoked; nothing was written for this write.
    Revoked,
}

/// A stored heartbeat and what the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The record stored, with its divergence.
    pub record: HeartbeatRecord,
    /// The divergence of the heartbeat before this one (to log a change).
    pub previous_divergence: Option<String>,
    /// The mirror needs a snapshot from this log end (answer `409 resync_required`).
    pub resync_from: Option<u64>,
    /// The host's desired revision, for the acknowledgement.
    pub desired_revision: Revision,
}

/// A host's row as locked for the group.
struct Row {
    mirror: Mirror,
    heartbeat: Option<HeartbeatRecord>,
    revision: Revision,
    revoked: bool,
    mirror_changed: bool,
    heartbeat_changed: bool,
}

impl PgStore {
    /// Commits the writes of many hosts in one transaction and returns each one's outcome.
    /// Nothing is acknowledged unless this returns `Ok`: then every outcome is committed.
    pub async fn commit_group(&self, writes: &[GroupWrite]) -> Result<Vec<GroupOutcome>, PgError> {
        let what = "committing a group of event batches and heartbeats";
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(what, &e))?;
        let heartbeats_only = writes
            .iter()
            .all(|w| matches!(w, GroupWrite::Heartbeat { .. }));
        if heartbeats_only {
            txn.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(|e| self.fail(what, &e))?;
        }
        let mut rows = self.lock_group(&txn, writes).await?;
        let mut events = NewEvents::default();
        let outcomes = writes
            .iter()
            .map(|write| {
                let Some(row) = rows.get_mut(write.host().as_str()) else {
                    return Ok(GroupOutcome::UnknownHost);
                };
                if row.revoked {
                    return Ok(GroupOutcome::Revoked);
                }
                Ok(match write {
                    GroupWrite::Batch { host, batch } => {
                        apply_batch(row, host, batch, &mut events)?
                    }
                    GroupWrite::Heartbeat {
                        status,
                        received_at,
                        ..
                    } => {
                        GroupOutcome::Heartbeat(Box::new(take_heartbeat(row, status, *received_at)))
                    }
                })
            })
            .collect::<Result<Vec<_>, PgError>>()?;
        self.write_group(&txn, &rows, &events).await?;
        txn.commit().await.map_err(|e| self.fail(what, &e))?;
        Ok(outcomes)
    }

    /// Locks the rows of the group's hosts in id order and reads their mirrors and heartbeats.
    async fn lock_group(
        &self,
        txn: &Transaction<'_>,
        writes: &[GroupWrite],
    ) -> Result<BTreeMap<String, Row>, PgError> {
        let mut ids: Vec<&str> = writes.iter().map(|w| w.host().as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let fail = |e: tokio_postgres::Error| self.fail("locking the group's hosts", &e);
        let statement = txn
            .prepare_cached(
                "SELECT id, mirror, heartbeat, revision, revoked FROM hosts
                 WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            )
            .await
            .map_err(fail)?;
        let found = txn.query(&statement, &[&ids]).await.map_err(fail)?;
        let mut rows = BTreeMap::new();
        for row in found {
            let id: String = row.get(0);
            let locked = Row {
                mirror: json_column(&row, 1, || format!("mirror of {id}"))?,
                heartbeat: json_column(&row, 2, || format!("heartbeat of {id}"))?,
                revision: Revision(to_u64(row.get(3))),
                revoked: row.get(4),
                mirror_changed: false,
                heartbeat_changed: false,
            };
            rows.insert(id, locked);
        }
        Ok(rows)
    }

    /// Inserts the new events and updates the changed mirrors and heartbeats.
    async fn write_group(
        &self,
        txn: &Transaction<'_>,
        rows: &BTreeMap<String, Row>,
        events: &NewEvents<'_>,
    ) -> Result<(), PgError> {
        let fail = |e: tokio_postgres::Error| self.fail("writing a group", &e);
        let mut ids = Vec::new();
        let mut mirrors = Vec::new();
        let mut heartbeats = Vec::new();
        for (id, row) in rows {
            if !(row.mirror_changed || row.heartbeat_changed) {
                continue;
            }
            ids.push(id.as_str());
            mirrors.push(row.mirror_changed.then_some(Json(&row.mirror)));
            heartbeats.push(
                row.heartbeat_changed
                    .then_some(row.heartbeat.as_ref().map(Json))
                    .flatten(),
            );
        }
        let insert = async {
            if events.hosts.is_empty() {
                return Ok(0);
            }
            let insert = txn
                .prepare_cached(
                    "INSERT INTO events (host, stream, seq, event)
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::jsonb[])",
                )
                .await?;
            txn.execute(
                &insert,
                &[&events.hosts, &events.streams, &events.seqs, &events.bodies],
            )
            .await
        };
        let update = async {
            if ids.is_empty() {
                return Ok(0);
            }
            let update = txn
                .prepare_cached(
                    "UPDATE hosts SET mirror = coalesce(v.mirror, hosts.mirror),
                                      heartbeat = coalesce(v.heartbeat, hosts.heartbeat)
                     FROM unnest($1::text[], $2::jsonb[], $3::jsonb[]) AS v (id, mirror, heartbeat)
                     WHERE hosts.id = v.id",
                )
                .await?;
            txn.execute(&update, &[&ids, &mirrors, &heartbeats]).await
        };
        // Both go out at once on the connection (tokio-postgres pipelines concurrent
        // statements of one client): one round trip instead of two.
        tokio::try_join!(insert, update).map_err(fail)?;
        Ok(())
    }
}

/// The events a group appends, as the columns of one multi-row insert (each event written as
/// JSON straight from the batch, without an intermediate value).
#[derive(Default)]
struct NewEvents<'a> {
    hosts: Vec<&'a str>,
    streams: Vec<i64>,
    seqs: Vec<i64>,
    bodies: Vec<Json<OutboundEvent>>,
}

/// Applies a batch to the host's mirror as it stands in this group (after the host's earlier
/// writes in it).
fn apply_batch<'a>(
    row: &mut Row,
    host: &'a HostId,
    batch: &EventBatch,
    events: &mut NewEvents<'a>,
) -> Result<GroupOutcome, PgError> {
    let applied = match row.mirror.apply(batch) {
        Ok(applied) => applied,
        Err(refused) => return Ok(GroupOutcome::Refused(refused)),
    };
    if applied.mirror != row.mirror {
        let stream = stream_key(batch.stream);
        for event in &applied.stored {
            events.hosts.push(host.as_str());
            events.streams.push(stream);
            events.seqs.push(to_i64("event seq", event.seq)?);
            events.bodies.push(Json(event.clone()));
        }
        row.mirror = applied.mirror.clone();
        row.mirror_changed = true;
    }
    Ok(GroupOutcome::Applied(Box::new(applied)))
}

/// Judges a heartbeat against the mirror as it stands and keeps it, by the rule every store
/// keeps ([`Mirror::judge`]).
fn take_heartbeat(row: &mut Row, status: &AgentStatus, received_at: Timestamp) -> HeartbeatOutcome {
    let judged = row
        .mirror
        .judge(status.clone(), received_at, row.heartbeat.as_ref());
    row.heartbeat = Some(judged.record.clone());
    row.heartbeat_changed = true;
    HeartbeatOutcome {
        record: judged.record,
        previous_divergence: judged.previous,
        resync_from: judged.resync_from,
        desired_revision: row.revision,
    }
}
