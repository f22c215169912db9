//! Replicas on a shared store: following what the others change, reading what must be
//! current from the store, and the rollout driver's lease.
//!
//! Each replica keeps a view of every host (what agents authenticate against and long-polls
//! wait on). A change another replica commits reaches this one as a notification, and the
//! hosts it names are read again under their write locks ([`Fleet::refresh_hosts`]); after a
//! lost notification connection everything is read again, so a change is never missed, only
//! delayed. What operators read (host lines, a host's detail, rollouts) is read from the store
//! when it is shared, since mirrors and heartbeats change on whichever replica an agent talks
//! to.
//!
//! Exactly one replica drives rollouts: the holder of the `rollouts` lease, renewed every
//! third of its time to live, whose fencing token every rollout commit checks in its own
//! transaction. A replica that stops renewing (killed, cut off) loses it when it expires, and
//! another takes it over and reloads the rollouts from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fleetnode_wire::{HostId, Revision, Rollout};
use tracing::{info, warn};

use super::backend::Backend;
use super::rollouts::Snapshot;
use super::{Fleet, FleetError};
use crate::store::postgres::{Subscription, Wake};

/// The name of the rollout driver's lease.
pub const ROLLOUT_LEASE: &str = "rollouts";

/// Where the driver stands with the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Held, and was held before: go on driving.
    Held,
    /// Just taken: read the rollouts again, another replica may have moved them.
    Taken,
    /// Another replica drives.
    Elsewhere,
}

/// The lease as this replica last renewed it.
pub struct LeaseKeeper {
    holder: String,
    renewed: Option<Instant>,
}

impl LeaseKeeper {
    /// A keeper for this process: host name, process id and a random part, unique per run.
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "unknown-host".to_owned());
        let mut random = [0u8; 4];
        // Uniqueness only needs to hold among replicas; the pid alone nearly does.
        let _ = getrandom::fill(&mut random);
        let holder = format!(
            "{host}/{}/{}",
            std::process::id(),
            u32::from_be_bytes(random)
        );
        Self {
            holder,
            renewed: None,
        }
    }
}

impl Default for LeaseKeeper {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// Holds the rollout lease if it can: the only writer of a redb store always does; on a
    /// shared store the lease is renewed when a third of its time to live has passed, or
    /// taken when free.
    pub(super) async fn rollout_lease(&self, keeper: &mut LeaseKeeper) -> Lease {
        let Backend::Postgres(backend) = &self.backend else {
            return Lease::Held;
        };
        let ttl = self.settings.lease_ttl;
        if let Some(renewed) = keeper.renewed {
            if renewed.elapsed() < ttl / 3 {
                return Lease::Held;
            }
            let fence = backend.fence();
            if let Some(fence) = fence {
                match backend.store.renew_lease(&fence, ttl).await {
                    Ok(()) => {
                        keeper.renewed = Some(Instant::now());
                        return Lease::Held;
                    }
                    Err(error) => {
                        warn!(%error, "the rollout lease is lost; this replica stops driving rollouts");
                        backend.set_fence(None);
                        keeper.renewed = None;
                    }
                }
            }
        }
        match backend
            .store
            .acquire_lease(ROLLOUT_LEASE, &keeper.holder, ttl)
            .await
        {
            Ok(Some(fence)) => {
                info!(holder = %keeper.holder, token = fence.token, "this replica drives the rollouts");
                backend.set_fence(Some(fence));
                keeper.renewed = Some(Instant::now());
                Lease::Taken
            }
            Ok(None) => Lease::Elsewhere,
            Err(error) => {
                warn!(%error, "cannot reach the database to take the rollout lease; trying again");
                Lease::Elsewhere
            }
        }
    }

    /// Runs `work` on this replica only if no other replica runs the same task (the lease
    /// `name`, held for at most `ttl`, so a replica that dies mid-task holds it no longer);
    /// `None` when another does. On a store this process alone writes, it always runs.
    pub(super) async fn exclusively<T>(
        &self,
        name: &str,
        ttl: std::time::Duration,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        let Backend::Postgres(backend) = &self.backend else {
            return Some(work.await);
        };
        let holder = LeaseKeeper::new().holder;
        let fence = match backend.store.acquire_lease(name, &holder, ttl).await {
            Ok(Some(fence)) => fence,
            Ok(None) => return None,
            Err(error) => {
                warn!(%error, lease = name, "cannot take the lease; skipping this run");
                return None;
            }
        };
        let done = work.await;
        if let Err(error) = backend.store.release_lease(&fence).await {
            warn!(%error, lease = name, "cannot give the lease up; it expires by itself");
        }
        Some(done)
    }

    /// Gives the rollout lease up (the server stops), so another replica takes the rollouts
    /// over at once instead of when the lease expires.
    pub(super) async fn release_rollout_lease(&self) {
        let Backend::Postgres(backend) = &self.backend else {
            return;
        };
        if let Some(fence) = backend.fence() {
            backend.set_fence(None);
            if let Err(error) = backend.store.release_lease(&fence).await {
                warn!(%error, "cannot give the rollout lease up; another replica takes it when it expires");
            }
        }
    }

    /// Reads these hosts from the store again and makes the fleet's view of them what it
    /// holds (hosts another replica added are added).
    pub async fn refresh_hosts(&self, ids: &[HostId]) -> Result<(), FleetError> {
        let mut entries: Vec<_> = ids.iter().filter_map(|id| self.hosts.get(id)).collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries.dedup_by(|a, b| a.id == b.id);
        let mut guards = Vec::with_capacity(entries.len());
        for entry in &entries {
            guards.push(entry.write.lock().await);
        }
        for stored in self.backend.hosts_by_id(ids).await? {
            self.hosts.refresh(stored);
        }
        Ok(())
    }

    /// Reads these hosts' registrations and desired states again (another replica changed
    /// them): what authenticating agents and waking long-polls need, without the mirrors. A
    /// host named with the revision of the change is not read when, under its write lock, the
    /// view already holds that revision or a later one: this replica made the change (or a
    /// later one) itself and published it when it committed.
    async fn refresh_registrations(
        &self,
        named: &[(HostId, Option<Revision>)],
    ) -> Result<(), FleetError> {
        let mut entries: Vec<_> = named
            .iter()
            .filter_map(|(id, revision)| Some((self.hosts.get(id)?, *revision)))
            .collect();
        entries.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        entries.dedup_by(|a, b| a.0.id == b.0.id);
        let mut guards = Vec::with_capacity(entries.len());
        for (entry, _) in &entries {
            guards.push(entry.write.lock().await);
        }
        // Sorted by id above.
        let held = |id: &HostId, revision: Option<Revision>| {
            let found = entries.binary_search_by(|(entry, _)| entry.id.cmp(id));
            match (found, revision) {
                (Ok(at), Some(revision)) => entries[at].0.revision() >= revision,
                _ => false,
            }
        };
        let ids: Vec<HostId> = named
            .iter()
            .filter(|(id, revision)| !held(id, *revision))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        for (record, desired) in self.backend.registrations(&ids).await? {
            self.hosts.refresh_registration(record, desired);
        }
        Ok(())
    }

    /// Reads every host and operator again.
    pub async fn refresh_all(&self) -> Result<(), FleetError> {
        let ids: Vec<HostId> = self
            .backend
            .hosts()
            .await?
            .into_iter()
            .map(|host| host.record.id)
            .collect();
        for chunk in ids.chunks(REFRESH_CHUNK) {
            self.refresh_hosts(chunk).await?;
        }
        self.operators.replace(self.backend.load_operators().await?);
        Ok(())
    }

    /// The rollouts as committed: the driver's own on a store this process alone writes,
    /// read from the store when replicas share it (another may drive).
    pub(super) async fn rollouts_now(&self) -> Result<Arc<Snapshot>, FleetError> {
        if !self.backend.is_shared() {
            return Ok(self.rollouts.snapshot());
        }
        let rollouts: BTreeMap<_, Arc<Rollout>> = self
            .backend
            .load_rollouts()
            .await?
            .into_iter()
            .map(|rollout| (rollout.id, Arc::new(rollout)))
            .collect();
        Ok(Arc::new(Snapshot { rollouts }))
    }
}

/// Hosts read again in one statement during a full refresh.
const REFRESH_CHUNK: usize = 1_000;

/// Follows other replicas' changes until the server stops.
pub async fn follow(fleet: Arc<Fleet>, mut subscription: Subscription) {
    let shutdown = fleet.settings.shutdown.clone();
    let mut pending = None;
    loop {
        let wake = match pending.take() {
            Some(wake) => wake,
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                wake = subscription.recv() => match wake {
                    Some(wake) => wake,
                    None => return,
                },
            },
        };
        let wake = coalesce(wake, &mut subscription, &mut pending);
        let refreshed = match &wake {
            Wake::Desired(named) => fleet.refresh_registrations(named).await,
            Wake::Hosts(hosts) => {
                let named: Vec<_> = hosts.iter().map(|id| (id.clone(), None)).collect();
                fleet.refresh_registrations(&named).await
            }
            Wake::Operators(_) => fleet
                .backend
                .load_operators()
                .await
                .map(|records| fleet.operators.replace(records)),
            // The driving replica's driver looks for forwarded commands when nudged below.
            Wake::Requests => Ok(()),
            Wake::Resync => {
                info!("reading every host and operator again after missed notifications");
                fleet.refresh_all().await
            }
        };
        if let Err(error) = refreshed {
            warn!(%error, "cannot read another replica's change; reading everything again until it works");
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_REFRESH) => {}
                }
                match fleet.refresh_all().await {
                    Ok(()) => break,
                    Err(error) => warn!(%error, "reading everything again failed; trying again"),
                }
            }
        }
        fleet.rollouts.nudge();
        fleet.changed(super::ChangeKind::Hosts);
    }
}

/// Most hosts read again in one statement after merging desired-state notifications.
const MAX_COALESCED: usize = 20_000;

/// A desired-state change of many hosts arrives as many notifications (each payload holds a
/// few hundred names): the ones already waiting are merged into one, read in one statement
/// instead of one each. Never waits for more; a notification of another kind is kept in
/// `pending` for the next turn, so the order of kinds is kept.
fn coalesce(wake: Wake, subscription: &mut Subscription, pending: &mut Option<Wake>) -> Wake {
    let Wake::Desired(mut named) = wake else {
        return wake;
    };
    while named.len() < MAX_COALESCED {
        match subscription.try_recv() {
            Some(Wake::Desired(more)) => named.extend(more),
            Some(other) => {
                *pending = Some(other);
                break;
            }
            None => break,
        }
    }
    Wake::Desired(named)
}

/// Pause before reading everything again after a failed refresh.
const RETRY_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);
