//! The store behind the fleet, as the operations the fleet needs ("commit this batch and the
//! mirror it produces"), not as tables.
//!
//! Every operation keeps the same promise on every backend: what it returns is committed. The
//! fleet calls each with the host's write lock held and with its own view of the host (the
//! `cached` arguments). A backend that is the only writer of its store (redb, one process)
//! decides from that view; a backend shared by several processes decides from what it reads
//! under its own lock in the same transaction, and the fleet takes the result as its new view.

use std::sync::Arc;

use fleetnode_wire::{
    AgentStatus, AuditEntry, DesiredState, DirectiveKind, EventBatch, HostId, OutboundEvent,
    Revision, Timestamp,
};

use super::FleetError;
use super::desired::{Decision, DesiredError};
use super::registry::HostEntry;
use crate::mirror::{Applied, Comparison, Mirror, Refused};
use crate::store::{
    AuditFilter, DesiredChange, DesiredRecord, EventCursor, EventKeep, GroupWriter,
    HeartbeatRecord, HostRecord, OperatorRecord, Pruned, Store, StoreError, Write,
};

/// A heartbeat as judged against the mirror.
#[derive(Debug, Clone)]
pub struct JudgedHeartbeat {
    /// What is kept as the host's last sign of life.
    pub record: HeartbeatRecord,
    /// The divergence the previous heartbeat had flagged, if any.
    pub previous: Option<String>,
    /// Where this control plane's log of the host ends, when the heartbeat shows events it
    /// does not hold (the agent must send a snapshot).
    pub resync_from: Option<u64>,
}

/// The store of a fleet.
pub enum Backend {
    /// One redb file, written by this process alone; agent writes are group-committed by one
    /// writer thread.
    Redb {
        /// The file.
        store: Arc<Store>,
        /// Its group committer.
        writer: GroupWriter,
    },
}

impl Backend {
    /// Registers a new host with its initial desired state.
    pub async fn add_host(
        &self,
        record: &HostRecord,
        desired: &DesiredState,
    ) -> Result<(), FleetError> {
        let (record, desired) = (record.clone(), desired.clone());
        self.blocking("storing the host failed", move |store| {
            store.add_host(&record, &desired)
        })
        .await
    }

    /// Replaces a host's registration (to revoke it).
    pub async fn put_host(&self, record: &HostRecord) -> Result<(), FleetError> {
        let record = record.clone();
        self.blocking("revoking the host failed", move |store| {
            store.put_host(&record)
        })
        .await
    }

    /// Applies a batch of a host's events to its mirror and commits the new events with the
    /// mirror they produce (durable before this returns). A batch that changes nothing writes
    /// nothing.
    pub async fn ingest(
        &self,
        host: &HostId,
        batch: &EventBatch,
        cached: &Mirror,
    ) -> Result<Result<Applied, Refused>, FleetError> {
        match self {
            Self::Redb { writer, .. } => {
                let applied = match cached.apply(batch) {
                    Ok(applied) => applied,
                    Err(refused) => return Ok(Err(refused)),
                };
                if applied.mirror != *cached {
                    let write = Write::Ingest {
                        host: host.clone(),
                        stream: batch.stream,
                        events: applied.stored.clone(),
                        mirror: Box::new(applied.mirror.clone()),
                    };
                    writer
                        .write(write)
                        .await
                        .map_err(|e| FleetError::store("storing events failed", e))?;
                }
                Ok(Ok(applied))
            }
        }
    }

    /// Judges a heartbeat against the host's mirror and keeps it as the host's last sign of
    /// life.
    pub async fn heartbeat(
        &self,
        host: &HostId,
        heartbeat: AgentStatus,
        now: Timestamp,
        cached: (&Mirror, Option<&HeartbeatRecord>),
    ) -> Result<JudgedHeartbeat, FleetError> {
        match self {
            Self::Redb { writer, .. } => {
                let judged = judge(heartbeat, now, cached.0, cached.1);
                let write = Write::Heartbeat {
                    host: host.clone(),
                    record: Box::new(judged.record.clone()),
                };
                writer
                    .write(write)
                    .await
                    .map_err(|e| FleetError::store("storing the heartbeat failed", e))?;
                Ok(judged)
            }
        }
    }

    /// Decides and commits desired-state changes for `hosts` (given in id order, their write
    /// locks held) in one transaction, with the rollout that decided them when one did.
    /// Returns the changes committed.
    pub async fn commit_desired(
        &self,
        hosts: &[Arc<HostEntry>],
        decision: Decision<'_>,
        now: Timestamp,
    ) -> Result<Vec<DesiredChange>, DesiredError> {
        match self {
            Self::Redb { .. } => {
                let mut changes = Vec::with_capacity(hosts.len());
                for entry in hosts {
                    let (current, next) = (entry.desired(), entry.next_revision());
                    if let Some(record) = decide(&decision, &entry.id, &current, next, now)? {
                        changes.push(DesiredChange {
                            host: entry.id.clone(),
                            record,
                        });
                    }
                }
                let records = changes.clone();
                match decision {
                    Decision::Rollout { rollout, .. } => {
                        let rollout = rollout.clone();
                        self.blocking("storing the rollout failed", move |store| {
                            store.commit_rollout(&rollout, &records)
                        })
                        .await?;
                    }
                    Decision::Operator { .. } if records.is_empty() => {}
                    Decision::Operator { .. } => {
                        self.blocking("storing the desired state failed", move |store| {
                            store.set_desired(&records)
                        })
                        .await?;
                    }
                }
                Ok(changes)
            }
        }
    }

    /// The newest `limit` events of a host's stream, oldest first.
    pub async fn recent_events(
        &self,
        host: &HostId,
        stream: u64,
        limit: usize,
    ) -> Result<Vec<OutboundEvent>, FleetError> {
        let host = host.clone();
        self.blocking("reading events failed", move |store| {
            store.recent_events(&host, stream, limit)
        })
        .await
    }

    /// Adds or replaces an operator.
    pub async fn put_operator(&self, record: &OperatorRecord) -> Result<(), FleetError> {
        let record = record.clone();
        self.blocking("storing the operator failed", move |store| {
            store.put_operator(&record)
        })
        .await
    }

    /// Appends an entry to the audit log and returns it with its number.
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<AuditEntry, FleetError> {
        self.blocking("recording an operator action failed", move |store| {
            store.append_audit(entry)
        })
        .await
    }

    /// The newest `limit` audit entries that match, oldest first, and whether older ones
    /// matched too.
    pub async fn audit(
        &self,
        filter: AuditFilter,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), FleetError> {
        self.blocking("reading the audit log failed", move |store| {
            store.audit(&filter, limit)
        })
        .await
    }

    /// One batch of event pruning (see [`crate::store::Store::prune_events`]).
    pub async fn prune_events(
        &self,
        keep: &EventKeep,
        after: Option<EventCursor>,
        dry_run: bool,
    ) -> Result<Pruned<EventCursor>, FleetError> {
        let keep = keep.clone();
        self.blocking("pruning events failed", move |store| {
            store.prune_events(&keep, after.as_ref(), dry_run)
        })
        .await
    }

    /// One batch of desired-history pruning.
    pub async fn prune_desired_history(
        &self,
        depth: u64,
        after: Option<String>,
        dry_run: bool,
    ) -> Result<Pruned<String>, FleetError> {
        self.blocking("pruning the desired-state history failed", move |store| {
            store.prune_desired_history(depth, after.as_deref(), dry_run)
        })
        .await
    }

    /// One batch of audit pruning.
    pub async fn prune_audit(
        &self,
        cutoff: Timestamp,
        after: Option<u64>,
        dry_run: bool,
    ) -> Result<Pruned<u64>, FleetError> {
        self.blocking("pruning the audit log failed", move |store| {
            store.prune_audit(cutoff, after, dry_run)
        })
        .await
    }

    /// Runs a blocking operation on the redb file off the runtime's worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        context: &'static str,
        operation: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, FleetError> {
        let Self::Redb { store, .. } = self;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || operation(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(FleetError::store(context, error)),
            Err(join) => Err(FleetError::internal(context, &join)),
        }
    }
}

/// A heartbeat judged against the mirror and the previous heartbeat: a contradiction flags the
/// host diverged until a heartbeat agrees again; one that cannot be compared keeps the flag as
/// it was.
pub fn judge(
    heartbeat: AgentStatus,
    now: Timestamp,
    mirror: &Mirror,
    previous: Option<&HeartbeatRecord>,
) -> JudgedHeartbeat {
    let previous = previous.and_then(|h| h.divergence.clone());
    let resync_from = mirror.needs_resync(&heartbeat);
    let divergence = match mirror.compare(&heartbeat) {
        Comparison::NotComparable => previous.clone(),
        Comparison::Agrees => None,
        Comparison::Disagrees(why) => Some(why),
    };
    JudgedHeartbeat {
        record: HeartbeatRecord {
            heartbeat,
            received_at: now,
            divergence,
        },
        previous,
        resync_from,
    }
}

/// One host's change under a decision, from its current state and the revision a change must
/// carry: `None` for no change; a rollout's directive whose revision is not that one is stale.
pub fn decide(
    decision: &Decision<'_>,
    host: &HostId,
    current: &DesiredState,
    next: Revision,
    now: Timestamp,
) -> Result<Option<DesiredRecord>, DesiredError> {
    let (desired, cause) = match decision {
        Decision::Operator { cause, change } => match change(current, next) {
            Some(desired) => (desired, (*cause).to_owned()),
            None => return Ok(None),
        },
        Decision::Rollout {
            rollout,
            directives,
        } => {
            let Some((_, directive)) = directives.iter().find(|(id, _)| id == host) else {
                return Ok(None);
            };
            if directive.revision != next {
                return Err(DesiredError::Stale);
            }
            let cause = match directive.kind {
                DirectiveKind::Activate { .. } => format!("rollout {}", rollout.id),
                DirectiveKind::Rollback { .. } => format!("rollout {} rollback", rollout.id),
            };
            let desired = DesiredState {
                revision: next,
                directive: Some(directive.clone()),
                paused: current.paused,
            };
            (desired, cause)
        }
    };
    Ok(Some(DesiredRecord {
        desired,
        set_at: now,
        cause,
    }))
}
