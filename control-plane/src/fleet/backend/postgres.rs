//! The PostgreSQL backend: a database shared by any number of replicas. Every decision is
//! taken from what the database holds under the host's row lock, in the transaction that
//! writes it (the `cached` arguments are not used); agent writes are group-committed.
//!
//! A database that cannot be reached makes every operation fail with
//! [`FleetError::Unavailable`] (503 with `Retry-After`): a replica cut off from its database
//! acknowledges nothing.

use std::sync::{Arc, Mutex, PoisonError};

use fleetnode_wire::{
    AgentStatus, AuditEntry, DesiredState, EventBatch, HostId, OutboundEvent, Rollout, Timestamp,
};

use crate::fleet::FleetError;
use crate::fleet::desired::{Decision, DesiredError};
use crate::fleet::registry::HostEntry;
use crate::mirror::{Applied, Judged, Mirror, Refused};
use crate::store::postgres::{Fence, GroupOutcome, GroupWrite, PgError, PgGroupWriter, PgStore};
use crate::store::{
    AuditFilter, DesiredChange, DesiredRecord, EventCursor, EventKeep, HeartbeatRecord, HostRecord,
    OperatorRecord, Pruned, StoredHost,
};

/// The database, its group committer, and the fence of the rollout lease while this replica
/// holds it.
pub struct PgBackend {
    /// The database.
    pub store: PgStore,
    /// Its group committer.
    pub writer: PgGroupWriter,
    fence: Mutex<Option<Fence>>,
}

impl PgBackend {
    /// The backend over an open store.
    pub fn new(store: PgStore) -> Self {
        let writer = PgGroupWriter::start(store.clone());
        Self {
            store,
            writer,
            fence: Mutex::new(None),
        }
    }

    /// Sets (or, with `None`, clears) the fence the rollout driver commits under.
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(PoisonError::into_inner) = fence;
    }

    /// The fence the rollout driver commits under, while this replica holds the lease.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers a new host.
    pub async fn add_host(
        &self,
        record: &HostRecord,
        desired: &DesiredState,
    ) -> Result<(), FleetError> {
        self.store
            .add_host(record, desired)
            .await
            .map_err(|e| failed("storing the host failed", e))
    }

    /// Replaces a host's registration.
    pub async fn put_host(&self, record: &HostRecord) -> Result<(), FleetError> {
        self.store
            .put_host(record)
            .await
            .map_err(|e| failed("revoking the host failed", e))
    }

    /// Applies a batch under the host's row lock, in the next group.
    pub async fn ingest(
        &self,
        host: &HostId,
        batch: &EventBatch,
        _cached: &Mirror,
    ) -> Result<Result<Applied, Refused>, FleetError> {
        let write = GroupWrite::Batch {
            host: host.clone(),
            batch: batch.clone(),
        };
        match self.group(write, "storing events failed").await? {
            GroupOutcome::Applied(applied) => Ok(Ok(*applied)),
            GroupOutcome::Refused(refused) => Ok(Err(refused)),
            other => Err(unexpected(host, &other)),
        }
    }

    /// Judges and keeps a heartbeat under the host's row lock, in the next group.
    pub async fn heartbeat(
        &self,
        host: &HostId,
        heartbeat: AgentStatus,
        now: Timestamp,
        _cached: (&Mirror, Option<&HeartbeatRecord>),
    ) -> Result<Judged, FleetError> {
        let write = GroupWrite::Heartbeat {
            host: host.clone(),
            status: Box::new(heartbeat),
            received_at: now,
        };
        match self.group(write, "storing the heartbeat failed").await? {
            GroupOutcome::Heartbeat(outcome) => Ok(Judged {
                record: outcome.record,
                previous: outcome.previous_divergence,
                resync_from: outcome.resync_from,
            }),
            other => Err(unexpected(host, &other)),
        }
    }

    /// Decides and commits desired-state changes under the hosts' row locks; a rollout's
    /// under the rollout lease's fence.
    pub async fn commit_desired(
        &self,
        hosts: &[Arc<HostEntry>],
        decision: Decision<'_>,
        now: Timestamp,
    ) -> Result<Vec<DesiredChange>, DesiredError> {
        let ids: Vec<HostId> = hosts.iter().map(|entry| entry.id.clone()).collect();
        let committed = match decision {
            Decision::Operator { cause, change } => {
                self.store
                    .change_desired(&ids, cause, now, |current, next| change(current, next))
                    .await
            }
            Decision::Rollout {
                rollout,
                directives,
            } => {
                let Some(fence) = self.fence() else {
                    return Err(DesiredError::Fleet(FleetError::internal(
                        "storing the rollout failed",
                        &"this replica does not hold the rollout lease",
                    )));
                };
                self.store
                    .commit_rollout(&fence, rollout, directives, now)
                    .await
            }
        };
        committed.map_err(|error| match error {
            PgError::StaleDecision { .. } => DesiredError::Stale,
            PgError::Fenced { .. } => {
                self.set_fence(None);
                DesiredError::Fleet(failed("storing the rollout failed", error))
            }
            error => DesiredError::Fleet(failed("storing the desired state failed", error)),
        })
    }

    /// The newest events of a host's stream.
    pub async fn recent_events(
        &self,
        host: &HostId,
        stream: u64,
        limit: usize,
    ) -> Result<Vec<OutboundEvent>, FleetError> {
        self.store
            .recent_events(host, stream, limit)
            .await
            .map_err(|e| failed("reading events failed", e))
    }

    /// A host's desired-state history, oldest first.
    pub async fn desired_history(&self, host: &HostId) -> Result<Vec<DesiredRecord>, FleetError> {
        self.store
            .desired_history(host)
            .await
            .map_err(|e| failed("reading the desired history failed", e))
    }

    /// Adds or replaces an operator.
    pub async fn put_operator(&self, record: &OperatorRecord) -> Result<(), FleetError> {
        self.store
            .put_operator(record)
            .await
            .map_err(|e| failed("storing the operator failed", e))
    }

    /// Appends an audit entry.
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<AuditEntry, FleetError> {
        self.store
            .append_audit(entry)
            .await
            .map_err(|e| failed("recording an operator action failed", e))
    }

    /// Reads the audit log.
    pub async fn audit(
        &self,
        filter: AuditFilter,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), FleetError> {
        self.store
            .audit(&filter, limit)
            .await
            .map_err(|e| failed("reading the audit log failed", e))
    }

    /// One batch of event pruning.
    pub async fn prune_events(
        &self,
        keep: &EventKeep,
        after: Option<EventCursor>,
        dry_run: bool,
    ) -> Result<Pruned<EventCursor>, FleetError> {
        self.store
            .prune_events(keep, after.as_ref(), dry_run)
            .await
            .map_err(|e| failed("pruning events failed", e))
    }

    /// One batch of desired-history pruning.
    pub async fn prune_desired_history(
        &self,
        depth: u64,
        after: Option<String>,
        dry_run: bool,
    ) -> Result<Pruned<String>, FleetError> {
        self.store
            .prune_desired_history(depth, after.as_deref(), dry_run)
            .await
            .map_err(|e| failed("pruning the desired-state history failed", e))
    }

    /// One batch of audit pruning.
    pub async fn prune_audit(
        &self,
        cutoff: Timestamp,
        after: Option<u64>,
        dry_run: bool,
    ) -> Result<Pruned<u64>, FleetError> {
        self.store
            .prune_audit(cutoff, after, dry_run)
            .await
            .map_err(|e| failed("pruning the audit log failed", e))
    }

    /// These hosts as committed.
    pub async fn hosts_by_id(&self, ids: &[HostId]) -> Result<Vec<StoredHost>, FleetError> {
        self.store
            .hosts(ids)
            .await
            .map_err(|e| failed("reading hosts failed", e))
    }

    /// These hosts' registrations and desired states as committed.
    pub async fn registrations(
        &self,
        ids: &[HostId],
    ) -> Result<Vec<(HostRecord, DesiredState)>, FleetError> {
        self.store
            .registrations(ids)
            .await
            .map_err(|e| failed("reading hosts failed", e))
    }

    /// Every host as committed.
    pub async fn hosts(&self) -> Result<Vec<StoredHost>, FleetError> {
        self.store
            .load()
            .await
            .map_err(|e| failed("reading the hosts failed", e))
    }

    /// Every operator.
    pub async fn load_operators(&self) -> Result<Vec<OperatorRecord>, FleetError> {
        self.store
            .load_operators()
            .await
            .map_err(|e| failed("reading the operators failed", e))
    }

    /// Every rollout.
    pub async fn load_rollouts(&self) -> Result<Vec<Rollout>, FleetError> {
        self.store
            .load_rollouts()
            .await
            .map_err(|e| failed("reading the rollouts failed", e))
    }

    async fn group(
        &self,
        write: GroupWrite,
        context: &'static str,
    ) -> Result<GroupOutcome, FleetError> {
        self.writer.write(write).await.map_err(|error| {
            let error = Arc::try_unwrap(error).unwrap_or_else(|shared| PgError::Query {
                what: context.to_owned(),
                target: String::new(),
                detail: shared.to_string(),
            });
            failed(context, error)
        })
    }
}

/// A database error as the fleet's: unreachable is 503, a refusal its own variant, anything
/// else an internal error logged here.
pub fn failed(context: &'static str, error: PgError) -> FleetError {
    match error {
        PgError::DuplicateHost { host } => FleetError::HostExists(host),
        PgError::UnknownHost { host } => FleetError::UnknownHost(host),
        PgError::Revoked { host } => FleetError::HostRevoked(host),
        PgError::DuplicateOperator { name } => FleetError::OperatorExists(name),
        error if error.is_unavailable() || matches!(error, PgError::Stopped) => {
            tracing::warn!(%error, "{context}");
            FleetError::Unavailable(error.to_string())
        }
        error => FleetError::internal(context, &error),
    }
}

/// A group answered a write with an outcome of another kind: the host went away between the
/// fleet's lookup and the group (revoked, or removed by a restore).
fn unexpected(host: &HostId, outcome: &GroupOutcome) -> FleetError {
    match outcome {
        GroupOutcome::Revoked => FleetError::AgentRevoked(host.clone()),
        GroupOutcome::UnknownHost => FleetError::Unauthenticated(format!(
            "host {host} is not registered; an operator adds it with fleetnode-cp add-host"
        )),
        GroupOutcome::Applied(_) | GroupOutcome::Refused(_) | GroupOutcome::Heartbeat(_) => {
            FleetError::internal(
                "a write's outcome did not match it",
                &format!("host {host}: {outcome:?}"),
            )
        }
    }
}
