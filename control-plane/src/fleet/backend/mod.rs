//! The store behind the fleet, as the operations the fleet needs ("commit this batch and the
//! mirror it produces"), not as tables.
//!
//! Every operation keeps the same promise on every backend: what it returns is committed. The
//! fleet calls each with the host's write lock held and with its own view of the host (the
//! `cached` arguments). A backend that is the only writer of its store ([`RedbBackend`], one
//! process) decides from that view; a backend shared by several processes ([`PgBackend`])
//! decides from what it reads under its own row lock in the same transaction, and the fleet
//! takes the result as its new view. The rules they decide by are the same pure functions:
//! [`Mirror::apply`], [`Mirror::judge`], [`decide`] and the next-revision rule.

mod postgres;
mod redb;

use std::sync::Arc;

use fleetnode_wire::{
    AgentStatus, AuditEntry, DesiredState, EventBatch, HostId, OutboundEvent, Revision, Rollout,
    Timestamp,
};

use super::FleetError;
use super::desired::{Decision, DesiredError};
use super::registry::HostEntry;
use crate::mirror::{Applied, Judged, Mirror, Refused};
use crate::store::{
    AuditFilter, DesiredChange, DesiredRecord, EventCursor, EventKeep, HeartbeatRecord, HostRecord,
    OperatorRecord, Pruned, StoredHost,
};

pub use postgres::PgBackend;
pub use redb::RedbBackend;

/// The store of a fleet.
pub enum Backend {
    /// One redb file, written by this process alone.
    Redb(RedbBackend),
    /// A PostgreSQL database, shared by any number of replicas.
    Postgres(PgBackend),
}

/// Calls the same operation on whichever backend this is.
macro_rules! either {
    ($backend:expr, $store:ident => $call:expr) => {
        match $backend {
            Backend::Redb($store) => $call,
            Backend::Postgres($store) => $call,
        }
    };
}

impl Backend {
    /// True when other processes may write the same store: the fleet's view of a host is then
    /// a cache, refreshed from the store's notifications, and reads that must be current go
    /// to the store.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Registers a new host with its initial desired state ([`FleetError::HostExists`] when
    /// the id is taken).
    pub async fn add_host(
        &self,
        record: &HostRecord,
        desired: &DesiredState,
    ) -> Result<(), FleetError> {
        either!(self, store => store.add_host(record, desired).await)
    }

    /// Replaces a host's registration (to revoke it).
    pub async fn put_host(&self, record: &HostRecord) -> Result<(), FleetError> {
        either!(self, store => store.put_host(record).await)
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
        either!(self, store => store.ingest(host, batch, cached).await)
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
        either!(self, store => store.heartbeat(host, heartbeat, now, cached).await)
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
        either!(self, store => store.commit_desired(hosts, decision, now).await)
    }

    /// The newest `limit` events of a host's stream, oldest first.
    pub async fn recent_events(
        &self,
        host: &HostId,
        stream: u64,
        limit: usize,
    ) -> Result<Vec<OutboundEvent>, FleetError> {
        either!(self, store => store.recent_events(host, stream, limit).await)
    }

    /// A host's desired-state history, oldest first.
    pub async fn desired_history(&self, host: &HostId) -> Result<Vec<DesiredRecord>, FleetError> {
        either!(self, store => store.desired_history(host).await)
    }

    /// Adds or replaces an operator.
    pub async fn put_operator(&self, record: &OperatorRecord) -> Result<(), FleetError> {
        either!(self, store => store.put_operator(record).await)
    }

    /// Appends an entry to the audit log and returns it with its number.
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<AuditEntry, FleetError> {
        either!(self, store => store.append_audit(entry).await)
    }

    /// The newest `limit` audit entries that match, oldest first, and whether older ones
    /// matched too.
    pub async fn audit(
        &self,
        filter: AuditFilter,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), FleetError> {
        either!(self, store => store.audit(filter, limit).await)
    }

    /// One batch of event pruning.
    pub async fn prune_events(
        &self,
        keep: &EventKeep,
        after: Option<EventCursor>,
        dry_run: bool,
    ) -> Result<Pruned<EventCursor>, FleetError> {
        either!(self, store => store.prune_events(keep, after, dry_run).await)
    }

    /// One batch of desired-history pruning.
    pub async fn prune_desired_history(
        &self,
        depth: u64,
        after: Option<String>,
        dry_run: bool,
    ) -> Result<Pruned<String>, FleetError> {
        either!(self, store => store.prune_desired_history(depth, after, dry_run).await)
    }

    /// One batch of audit pruning.
    pub async fn prune_audit(
        &self,
        cutoff: Timestamp,
        after: Option<u64>,
        dry_run: bool,
    ) -> Result<Pruned<u64>, FleetError> {
        either!(self, store => store.prune_audit(cutoff, after, dry_run).await)
    }

    /// These hosts (those registered), as committed.
    pub async fn hosts_by_id(&self, ids: &[HostId]) -> Result<Vec<StoredHost>, FleetError> {
        either!(self, store => store.hosts_by_id(ids).await)
    }

    /// The registrations and desired states of these hosts, as committed.
    pub async fn registrations(
        &self,
        ids: &[HostId],
    ) -> Result<Vec<(HostRecord, DesiredState)>, FleetError> {
        either!(self, store => store.registrations(ids).await)
    }

    /// Every host, as committed.
    pub async fn hosts(&self) -> Result<Vec<StoredHost>, FleetError> {
        either!(self, store => store.hosts().await)
    }

    /// Every operator, as committed.
    pub async fn load_operators(&self) -> Result<Vec<OperatorRecord>, FleetError> {
        either!(self, store => store.load_operators().await)
    }

    /// Every rollout, as committed.
    pub async fn load_rollouts(&self) -> Result<Vec<Rollout>, FleetError> {
        either!(self, store => store.load_rollouts().await)
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
    match decision {
        Decision::Operator { cause, change } => {
            Ok(change(current, next).map(|desired| DesiredRecord {
                desired,
                set_at: now,
                cause: (*cause).to_owned(),
            }))
        }
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
            Ok(Some(DesiredRecord::of_rollout(
                rollout.id, directive, current, now,
            )))
        }
    }
}
