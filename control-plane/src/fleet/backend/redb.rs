//! The redb backend: one file, written by this process alone. It decides from the fleet's
//! view of a host (the `cached` arguments), which is the truth while no other process writes;
//! agent writes are group-committed by one writer thread.

use std::sync::Arc;

use fleetnode_wire::{
    AgentStatus, AuditEntry, DesiredState, EventBatch, HostId, OutboundEvent, Rollout, Timestamp,
};

use super::decide;
use crate::fleet::FleetError;
use crate::fleet::desired::{Decision, DesiredError};
use crate::fleet::registry::HostEntry;
use crate::mirror::{Applied, Judged, Mirror, Refused};
use crate::store::{
    AuditFilter, DesiredChange, DesiredRecord, EventCursor, EventKeep, GroupWriter,
    HeartbeatRecord, HostRecord, OperatorRecord, Pruned, Store, StoreError, StoredHost, Write,
};

/// The redb file and its group committer.
pub struct RedbBackend {
    /// The file.
    pub store: Arc<Store>,
    /// Its group committer.
    pub writer: GroupWriter,
}

impl RedbBackend {
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
            self.writer
                .write(write)
                .await
                .map_err(|e| FleetError::store("storing events failed", e))?;
        }
        Ok(Ok(applied))
    }

    /// Judges a heartbeat against the host's mirror and keeps it as the host's last sign of
    /// life.
    pub async fn heartbeat(
        &self,
        host: &HostId,
        heartbeat: AgentStatus,
        now: Timestamp,
        cached: (&Mirror, Option<&HeartbeatRecord>),
    ) -> Result<Judged, FleetError> {
        let judged = cached.0.judge(heartbeat, now, cached.1);
        let write = Write::Heartbeat {
            host: host.clone(),
            record: Box::new(judged.record.clone()),
        };
        self.writer
            .write(write)
            .await
            .map_err(|e| FleetError::store("storing the heartbeat failed", e))?;
        Ok(judged)
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

    /// A host's desired-state history, oldest first.
    pub async fn desired_history(&self, host: &HostId) -> Result<Vec<DesiredRecord>, FleetError> {
        let host = host.clone();
        self.blocking("reading the desired history failed", move |store| {
            store.desired_history(&host)
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

    /// These hosts (read with all others: the fleet's view of a redb store is never behind
    /// it, so this serves tests and tools, not the server's requests).
    pub async fn hosts_by_id(&self, ids: &[HostId]) -> Result<Vec<StoredHost>, FleetError> {
        let hosts = self.hosts().await?;
        Ok(hosts
            .into_iter()
            .filter(|host| ids.contains(&host.record.id))
            .collect())
    }

    /// The registrations and desired states of these hosts.
    pub async fn registrations(
        &self,
        ids: &[HostId],
    ) -> Result<Vec<(HostRecord, DesiredState)>, FleetError> {
        Ok(self
            .hosts_by_id(ids)
            .await?
            .into_iter()
            .map(|host| (host.record, host.desired))
            .collect())
    }

    /// Every host.
    pub async fn hosts(&self) -> Result<Vec<StoredHost>, FleetError> {
        self.blocking("reading the hosts failed", |store| store.load())
            .await
    }

    /// Every operator.
    pub async fn load_operators(&self) -> Result<Vec<OperatorRecord>, FleetError> {
        self.blocking("reading the operators failed", |store| {
            store.load_operators()
        })
        .await
    }

    /// Every rollout.
    pub async fn load_rollouts(&self) -> Result<Vec<Rollout>, FleetError> {
        self.blocking("reading the rollouts failed", |store| store.load_rollouts())
            .await
    }

    /// Runs a blocking operation on the redb file off the runtime's worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        context: &'static str,
        operation: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, FleetError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || operation(&store)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(FleetError::store(context, error)),
            Err(join) => Err(FleetError::internal(context, &join)),
        }
    }
}
