//! Retention: the store does not grow without bound. A background task prunes, once per
//! interval, events older than a configurable age (except those still worth reading), the
//! desired-state history beyond a configurable depth, and audit entries older than a
//! configurable age.
//!
//! Each kind is pruned in batches of bounded size, each its own short transaction, so agent
//! writes are never held back for long; a pass goes on from where the last batch stopped and
//! ends once the whole kind was examined. Pruning is idempotent: a pass interrupted by a
//! restart is simply run again. A dry run counts what a pass would remove, logs it and sets a
//! gauge, and removes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::{HostId, MAX_RECENT_EVENTS, Millis, Timestamp};
use tracing::{info, warn};

use super::{Fleet, FleetError};
use crate::store::EventKeep;

/// Default age after which events are pruned.
pub const DEFAULT_EVENTS_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default depth of each host's desired-state history.
pub const DEFAULT_DESIRED_HISTORY: u64 = 100;
/// Default age after which audit entries are pruned. Compliance regimes often ask for longer.
pub const DEFAULT_AUDIT_AGE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default time between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);
/// The newest rollouts whose hosts' events are kept from the rollout's start, whatever their
/// age (besides every running or paused rollout): what an operator investigating recent
/// releases reads.
pub const KEEP_ROLLOUTS: usize = 10;
/// The lease of the retention pass, with replicas.
const RETENTION_LEASE: &str = "retention";
/// Time after start before the first pass, so a restarting server serves first.
const FIRST_PASS_DELAY: Duration = Duration::from_secs(60);

/// What retention keeps (`None` keeps everything of that kind) and how often it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are pruned.
    pub events: Option<Duration>,
    /// Desired-state history entries beyond this many per host are pruned.
    pub desired_history: Option<u64>,
    /// Audit entries older than this are pruned.
    pub audit: Option<Duration>,
    /// Time between passes.
    pub interval: Duration,
    /// Count what would be pruned, remove nothing.
    pub dry_run: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            events: Some(DEFAULT_EVENTS_AGE),
            desired_history: Some(DEFAULT_DESIRED_HISTORY),
            audit: Some(DEFAULT_AUDIT_AGE),
            interval: DEFAULT_INTERVAL,
            dry_run: false,
        }
    }
}

/// What one pass removed (or, in a dry run, would have), by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassReport {
    /// Events.
    pub events: u64,
    /// Desired-state history entries.
    pub desired_history: u64,
    /// Audit entries.
    pub audit: u64,
}

impl Fleet {
    /// Runs one complete pass of every kind the policy prunes.
    pub async fn prune(&self, policy: &Retention) -> Result<PassReport, FleetError> {
        let mut report = PassReport::default();
        let dry_run = policy.dry_run;
        if let Some(age) = policy.events {
            let keep = EventKeep {
                cutoff: before(self.now(), age),
                newest: MAX_RECENT_EVENTS as u64,
                since: self.rollout_hosts_since().await?,
            };
            let mut after = None;
            loop {
                let batch = self.backend.prune_events(&keep, after, dry_run).await?;
                report.events += batch.removed;
                match batch.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            self.pass_done("events", report.events, dry_run);
        }
        if let Some(depth) = policy.desired_history {
            let mut after = None;
            loop {
                let batch = self
                    .backend
                    .prune_desired_history(depth, after, dry_run)
                    .await?;
                report.desired_history += batch.removed;
                match batch.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            self.pass_done("desired_history", report.desired_history, dry_run);
        }
        if let Some(age) = policy.audit {
            let cutoff = before(self.now(), age);
            let mut after = None;
            loop {
                let batch = self.backend.prune_audit(cutoff, after, dry_run).await?;
                report.audit += batch.removed;
                match batch.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            self.pass_done("audit", report.audit, dry_run);
        }
        Ok(report)
    }

    /// Per host, the start of the oldest rollout whose events stay: every running or paused
    /// rollout, and the newest [`KEEP_ROLLOUTS`].
    async fn rollout_hosts_since(&self) -> Result<BTreeMap<HostId, Timestamp>, FleetError> {
        let snapshot = self.rollouts_now().await?;
        let mut since: BTreeMap<HostId, Timestamp> = BTreeMap::new();
        let newest = snapshot.rollouts.values().rev().take(KEEP_ROLLOUTS);
        let active = snapshot.rollouts.values().filter(|r| r.is_active());
        for rollout in newest.chain(active) {
            for host in rollout.hosts.keys() {
                since
                    .entry(host.clone())
                    .and_modify(|at| *at = (*at).min(rollout.created_at))
                    .or_insert(rollout.created_at);
            }
        }
        Ok(since)
    }

    fn pass_done(&self, kind: &'static str, removed: u64, dry_run: bool) {
        let ended = i64::try_from(self.now().0 / 1000).unwrap_or(i64::MAX);
        self.settings
            .metrics
            .retention_pass(kind, removed, dry_run, ended);
        if dry_run {
            info!(
                kind,
                would_remove = removed,
                "retention dry run: nothing removed"
            );
        } else if removed > 0 {
            info!(kind, removed, "retention pass pruned the store");
        }
    }
}

/// Runs retention passes every `policy.interval` until the server stops. A failed pass is
/// logged and tried again at the next interval.
pub async fn run(fleet: Arc<Fleet>, policy: Retention) {
    if policy.events.is_none() && policy.desired_history.is_none() && policy.audit.is_none() {
        return;
    }
    let shutdown = fleet.settings.shutdown.clone();
    let mut wait = FIRST_PASS_DELAY.min(policy.interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = policy.interval;
        // With replicas, one runs each pass; the lease lasts an interval, so a replica that
        // dies mid-pass leaves the next pass to another.
        let pass = fleet.exclusively(RETENTION_LEASE, policy.interval, fleet.prune(&policy));
        let pass = tokio::select! {
            () = shutdown.cancelled() => return,
            pass = pass => pass,
        };
        if let Some(Err(error)) = pass {
            warn!(%error, "retention pass failed; trying again at the next interval");
        }
    }
}

/// The time `age` before `now` (the epoch when `age` reaches further back).
fn before(now: Timestamp, age: Duration) -> Timestamp {
    let age = Millis(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    Timestamp(now.0.saturating_sub(age.0))
}
