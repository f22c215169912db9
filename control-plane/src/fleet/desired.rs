//! Desired states: the one path by which they change, for an operator's command and for the
//! rollout driver's decision alike.
//!
//! [`Fleet::commit_desired`] takes the selected hosts' write locks in id order, has the store
//! work out each host's new state from its current one and the revision a change must carry
//! and commit every change in one transaction (with the rollout that decided them, when a
//! rollout did), and only then publishes them, which wakes the hosts' long-polls.

use std::sync::Arc;

use fleetnode_wire::{
    DesiredChanged, DesiredState, Directive, DirectiveKind, HostId, HostRevision, Revision,
    RollbackRequest, Rollout, SetTarget, StorePath,
};
use tracing::{error, info};

use super::registry::HostEntry;
use super::{Fleet, FleetError};

/// A desired-state change of at least this many hosts holds agent writes back while it commits
/// (the fleet's gate here, and the hosts table on PostgreSQL), instead of waiting for them one
/// host at a time; below it, the host locks alone serialise.
pub const LARGE_CHANGE: usize = 1_000;

/// An operator's change of desired states, as the API takes it.
#[derive(Debug, Clone)]
pub enum DesiredChangeRequest {
    /// Put a closure in place on the selected hosts; `force` takes hosts a rollout owns out of
    /// it instead of refusing.
    SetTarget {
        /// What and where.
        request: SetTarget,
        /// Take owned hosts out of their rollouts.
        force: bool,
    },
    /// Send one host back to an earlier generation.
    Rollback {
        /// The host.
        host: HostId,
        /// Where to (its previous generation when `None`).
        request: RollbackRequest,
    },
    /// Hold a host where it is (`true`) or lift the hold (`false`).
    Hold {
        /// The host.
        host: HostId,
        /// Held or not.
        paused: bool,
    },
}

/// Why a rollout's decision was not committed.
pub enum CommitError {
    /// A host's desired state changed since the decision was taken: decide again.
    Stale,
    /// The store failed (logged).
    Failed,
}

/// Why [`Fleet::commit_desired`] did not commit.
pub enum DesiredError {
    /// A rollout's decision no longer holds.
    Stale,
    /// The store refused or failed.
    Fleet(FleetError),
}

impl From<FleetError> for DesiredError {
    fn from(error: FleetError) -> Self {
        Self::Fleet(error)
    }
}

impl From<DesiredError> for FleetError {
    fn from(error: DesiredError) -> Self {
        match error {
            DesiredError::Fleet(error) => error,
            DesiredError::Stale => FleetError::internal(
                "changing the desired state failed",
                &"an operator's change was taken as a stale rollout decision",
            ),
        }
    }
}

/// An operator's change of one host's desired state, from its current state and the revision
/// a change must carry; `None` leaves the host as it is.
pub type Change<'a> = dyn Fn(&DesiredState, Revision) -> Option<DesiredState> + Send + Sync + 'a;

/// Who decided a desired-state change.
pub enum Decision<'a> {
    /// An operator's command.
    Operator {
        /// The command's name, kept in the history (`set-target`, `rollback`, ...).
        cause: &'a str,
        /// What it does to each host.
        change: &'a Change<'a>,
    },
    /// A rollout's step: the rollout as decided and the directives it gives, committed
    /// together.
    Rollout {
        /// The rollout.
        rollout: &'a Rollout,
        /// Its directives; each must carry its host's next revision.
        directives: &'a [(HostId, Directive)],
    },
}

impl Fleet {
    /// Carries out an operator's change of desired states; answers which hosts changed and the
    /// revision each now has.
    pub async fn change_desired(
        &self,
        request: DesiredChangeRequest,
    ) -> Result<DesiredChanged, FleetError> {
        let (entries, cause, change): (_, &str, Box<Change<'_>>) = match request {
            DesiredChangeRequest::SetTarget { request, force } => {
                let entries = self.select(&request.selector)?;
                self.claim(&entries, force, &request.target).await?;
                let kind = DirectiveKind::Activate {
                    target: request.target,
                    mode: request.mode,
                    health: request.health,
                };
                let change = move |current: &DesiredState, revision| {
                    Some(directing(current, revision, kind.clone()))
                };
                (entries, "set-target", Box::new(change))
            }
            DesiredChangeRequest::Rollback { host, request } => {
                let entries = vec![self.active_host(&host)?];
                let kind = DirectiveKind::Rollback { to: request.to };
                let change = move |current: &DesiredState, revision| {
                    Some(directing(current, revision, kind.clone()))
                };
                (entries, "rollback", Box::new(change))
            }
            DesiredChangeRequest::Hold { host, paused } => {
                let entries = vec![self.active_host(&host)?];
                let change = move |current: &DesiredState, revision| {
                    (current.paused != paused).then(|| DesiredState {
                        revision,
                        directive: current.directive.clone(),
                        paused,
                    })
                };
                let cause = if paused { "pause" } else { "resume" };
                (entries, cause, Box::new(change))
            }
        };
        let decision = Decision::Operator {
            cause,
            change: &*change,
        };
        let hosts = self.commit_desired(entries, decision).await?;
        if !hosts.is_empty() {
            info!(cause, hosts = hosts.len(), "desired state changed");
        }
        Ok(DesiredChanged { hosts })
    }

    /// Commits a rollout's decision: the rollout and the directives it gives, in one
    /// transaction. Each directive must carry its host's next revision, as observed when the
    /// decision was taken; otherwise the decision is stale and nothing is written.
    pub(super) async fn commit_rollout(
        &self,
        rollout: &Rollout,
        directives: &[(HostId, Directive)],
    ) -> Result<(), CommitError> {
        let mut entries = Vec::with_capacity(directives.len());
        for (host, _) in directives {
            entries.push(self.hosts.get(host).ok_or(CommitError::Stale)?);
        }
        let mut ids: Vec<&HostId> = directives.iter().map(|(host, _)| host).collect();
        ids.sort();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            error!(rollout = %rollout.id, "a rollout decision gave one host two directives; not committed");
            return Err(CommitError::Failed);
        }
        let decision = Decision::Rollout {
            rollout,
            directives,
        };
        match self.commit_desired(entries, decision).await {
            Ok(_) => Ok(()),
            Err(DesiredError::Stale) => Err(CommitError::Stale),
            Err(DesiredError::Fleet(_)) => Err(CommitError::Failed),
        }
    }

    /// The one path of a desired-state change (see the module's documentation).
    async fn commit_desired(
        &self,
        mut entries: Vec<Arc<HostEntry>>,
        decision: Decision<'_>,
    ) -> Result<Vec<HostRevision>, DesiredError> {
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        // Lock order: the gate, then host locks in id order (agent writes take the gate
        // first too; nothing waits for the gate while holding a host lock).
        let _gate = if entries.len() >= LARGE_CHANGE {
            Some(self.gate.write().await)
        } else {
            None
        };
        let mut guards = Vec::with_capacity(entries.len());
        for entry in &entries {
            guards.push(entry.write.lock().await);
        }
        let changes = self
            .backend
            .commit_desired(&entries, decision, self.now())
            .await?;
        let mut changed = Vec::with_capacity(changes.len());
        for change in changes {
            changed.push(HostRevision {
                host: change.host.clone(),
                revision: change.record.desired.revision,
            });
            // Sorted by id above: a search, not a scan (a full-fleet change names every host).
            if let Ok(at) = entries.binary_search_by(|e| e.id.cmp(&change.host)) {
                entries[at].publish(change.record.desired);
            }
        }
        drop(guards);
        if !changed.is_empty() {
            self.changed(super::ChangeKind::Hosts);
        }
        Ok(changed)
    }
    /// Refuses a manual target for hosts a running or paused rollout owns, naming the rollout;
    /// with `force`, takes them out of their rollouts first (durably), so the rollout never acts
    /// on them again.
    async fn claim(
        &self,
        entries: &[Arc<HostEntry>],
        force: bool,
        target: &StorePath,
    ) -> Result<(), FleetError> {
        let snapshot = self.rollouts_now().await?;
        let owned: Vec<(&HostId, &Rollout)> = entries
            .iter()
            .filter_map(|entry| snapshot.owner_of(&entry.id).map(|r| (&entry.id, r)))
            .collect();
        let Some((_, first)) = owned.first() else {
            return Ok(());
        };
        if !force {
            let hosts: Vec<String> = owned
                .iter()
                .filter(|(_, rollout)| rollout.id == first.id)
                .map(|(host, _)| host.to_string())
                .collect();
            return Err(FleetError::OwnedByRollout {
                hosts: hosts.join(", "),
                rollout: first.id,
                phase: first.phase.name(),
            });
        }
        let hosts = owned.iter().map(|(host, _)| (*host).clone()).collect();
        self.take_out(hosts, format!("set-target --force {target}"))
            .await?;
        Ok(())
    }
}

/// The desired state that gives a host a new directive and keeps its hold.
fn directing(current: &DesiredState, revision: Revision, kind: DirectiveKind) -> DesiredState {
    DesiredState {
        revision,
        directive: Some(Directive { revision, kind }),
        paused: current.paused,
    }
}
