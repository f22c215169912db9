//! Hosts: registering and revoking them, and the views of them operators read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fleetnode_wire::{
    AddHost, DesiredState, Directive, DirectiveKind, HostDetail, HostId, HostList, HostRow,
    MAX_RECENT_EVENTS, Revision, Secret, Selector, StorePath,
};
use tracing::info;

use super::registry::{HostEntry, HostView};
use super::{ChangeKind, Fleet, FleetError};
use crate::auth::{hash_token, hex, new_host_token};
use crate::metrics::HostCounts;
use crate::mirror::Mirror;
use crate::store::HostRecord;

/// One page of the host list.
#[derive(Debug, Clone, Copy)]
pub struct HostPage<'a> {
    /// The id of the previous page's last host, if this is not the first page.
    pub after: Option<&'a str>,
    /// Most hosts in the page.
    pub limit: usize,
}

impl Fleet {
    /// Registers a host and returns its token, which is never stored (only its digest is).
    pub async fn add_host(&self, request: AddHost) -> Result<Secret, FleetError> {
        if self.hosts.contains(&request.id) {
            return Err(FleetError::HostExists(request.id));
        }
        let token =
            new_host_token().map_err(|e| FleetError::internal("generating a token failed", &e))?;
        let mut tags = request.tags;
        tags.sort();
        tags.dedup();
        let record = HostRecord {
            id: request.id.clone(),
            tags,
            token_sha256: hex(&hash_token(&token)),
            revoked: false,
            added_at: self.now(),
            revoked_at: None,
        };
        let desired = DesiredState {
            revision: Revision(0),
            directive: None,
            paused: false,
        };
        self.backend.add_host(&record, &desired).await?;
        self.hosts.insert(record, desired, Mirror::default(), None);
        self.changed(ChangeKind::Hosts);
        info!(host = %request.id, "host added");
        Ok(Secret::new(&token))
    }

    /// Revokes a host: its token stops working at once and its waiting long-polls end; its id
    /// and history stay. Revoking a revoked host changes nothing.
    pub async fn revoke_host(&self, id: &HostId) -> Result<(), FleetError> {
        let entry = self.host(id)?;
        let _write = entry.write.lock().await;
        let mut record = entry.with_view(|v| v.record.clone());
        if record.revoked {
            return Ok(());
        }
        record.revoked = true;
        record.revoked_at = Some(self.now());
        self.backend.put_host(&record).await?;
        entry.update(|v| v.record = record);
        entry.wake();
        self.changed(ChangeKind::Hosts);
        info!(host = %id, "host revoked");
        Ok(())
    }

    /// One page of the hosts that are not revoked, by id, and whether more follow. The page
    /// is keyed by the previous page's last id, so hosts added or revoked between pages
    /// neither repeat nor hide others.
    pub async fn host_page(&self, page: HostPage<'_>) -> Result<HostList, FleetError> {
        let all = self.hosts.all();
        let start = match page.after {
            Some(after) => all.partition_point(|e| e.id.as_str() <= after),
            None => 0,
        };
        let mut hosts: Vec<HostId> = Vec::with_capacity(page.limit);
        let mut more = false;
        for entry in &all[start..] {
            if entry.is_revoked() {
                continue;
            }
            if hosts.len() == page.limit {
                more = true;
                break;
            }
            hosts.push(entry.id.clone());
        }
        let hosts = self.rows(&hosts).await?;
        let next_cursor = more
            .then(|| hosts.last().map(|row| row.id.as_str().to_owned()))
            .flatten();
        Ok(HostList { hosts, next_cursor })
    }

    /// Everything known about one host, with its latest events.
    pub async fn host_detail(&self, id: &HostId) -> Result<HostDetail, FleetError> {
        self.current(std::slice::from_ref(id)).await?;
        let entry = self.host(id)?;
        let row = self.row(&entry);
        let view = entry.view();
        let recent_events = match view.mirror.stream {
            Some(stream) => {
                self.backend
                    .recent_events(&entry.id, stream, MAX_RECENT_EVENTS)
                    .await?
            }
            None => Vec::new(),
        };
        let heartbeat_divergence = view.heartbeat.as_ref().and_then(|h| h.divergence.clone());
        let divergence = match (view.mirror.divergence.clone(), heartbeat_divergence) {
            (Some(events), Some(heartbeat)) => Some(format!("{events}; {heartbeat}")),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => None,
        };
        Ok(HostDetail {
            row,
            desired: entry.desired(),
            mirror: view.mirror.state.host,
            divergence,
            last_heartbeat: view.heartbeat.map(|h| h.heartbeat),
            recent_events,
        })
    }

    /// The summary lines of these hosts as committed, in the order given (unknown ids left
    /// out).
    pub async fn rows(&self, ids: &[HostId]) -> Result<Vec<HostRow>, FleetError> {
        self.current(ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| self.hosts.get(id))
            .map(|entry| self.row(&entry))
            .collect())
    }

    /// Makes the view of these hosts current: on a shared store their mirrors and heartbeats
    /// change on whichever replica their agents talk to, so they are read again.
    async fn current(&self, ids: &[HostId]) -> Result<(), FleetError> {
        if self.backend.is_shared() {
            self.refresh_hosts(ids).await?;
        }
        Ok(())
    }

    /// The hosts by phase, offline and diverged, for the gauges (revoked hosts left out).
    pub async fn host_counts(&self) -> Result<HostCounts, FleetError> {
        let mut counts = HostCounts::default();
        let mut by_phase = BTreeMap::<&'static str, i64>::new();
        let mut count = |view: &HostView, phase: &'static str| {
            if view.record.revoked {
                return;
            }
            *by_phase.entry(phase).or_default() += 1;
            let last_seen = view.heartbeat.as_ref().map(|h| h.received_at);
            counts.offline += i64::from(self.is_offline(last_seen));
            counts.diverged += i64::from(diverged(view));
        };
        if self.backend.is_shared() {
            // Read as committed, without touching this replica's view or its locks.
            for host in self.backend.hosts().await? {
                let phase = host.mirror.state.host.phase.name();
                let view = HostView {
                    token_hash: [0; 32],
                    record: host.record,
                    mirror: host.mirror,
                    heartbeat: host.heartbeat,
                };
                count(&view, phase);
            }
        } else {
            for entry in self.hosts.all() {
                entry.with_view(|view| count(view, view.mirror.state.host.phase.name()));
            }
        }
        counts.by_phase = by_phase.into_iter().collect();
        Ok(counts)
    }

    /// The summary line of a host (copies only what the line shows).
    fn row(&self, entry: &HostEntry) -> HostRow {
        let desired = entry.desired();
        let (id, tags, phase, current, last_seen, diverged, revoked) = entry.with_view(|view| {
            let host = &view.mirror.state.host;
            (
                view.record.id.clone(),
                view.record.tags.clone(),
                host.phase.kind(),
                host.system.current.clone(),
                view.heartbeat.as_ref().map(|h| h.received_at),
                diverged(view),
                view.record.revoked,
            )
        });
        HostRow {
            id,
            tags,
            phase,
            current,
            target: desired.directive.as_ref().and_then(target_of),
            desired_revision: desired.revision,
            last_seen,
            offline: self.is_offline(last_seen),
            diverged,
            paused: desired.paused,
            revoked,
        }
    }

    /// The host with this id, revoked or not.
    pub(super) fn host(&self, id: &HostId) -> Result<Arc<HostEntry>, FleetError> {
        self.hosts
            .get(id)
            .ok_or_else(|| FleetError::UnknownHost(id.clone()))
    }

    /// The host with this id, unless it is revoked.
    pub(super) fn active_host(&self, id: &HostId) -> Result<Arc<HostEntry>, FleetError> {
        let entry = self.host(id)?;
        if entry.is_revoked() {
            return Err(FleetError::HostRevoked(id.clone()));
        }
        Ok(entry)
    }

    /// The hosts a selector names; all or nothing: an unknown or revoked host named explicitly
    /// refuses the whole selection.
    pub(super) fn select(&self, selector: &Selector) -> Result<Vec<Arc<HostEntry>>, FleetError> {
        match selector {
            Selector::Hosts { hosts } => {
                let ids: BTreeSet<&HostId> = hosts.iter().collect();
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let entry = self.host(id)?;
                    if entry.is_revoked() {
                        return Err(FleetError::RevokedInSelection(id.clone()));
                    }
                    out.push(entry);
                }
                Ok(out)
            }
            Selector::Tag { tag } => {
                let out: Vec<_> = self
                    .hosts
                    .all()
                    .into_iter()
                    .filter(|e| !e.is_revoked() && e.with_view(|v| v.record.tags.contains(tag)))
                    .collect();
                if out.is_empty() {
                    return Err(FleetError::NoHostWithTag(tag.clone()));
                }
                Ok(out)
            }
            Selector::All => {
                let out: Vec<_> = self
                    .hosts
                    .all()
                    .into_iter()
                    .filter(|e| !e.is_revoked())
                    .collect();
                if out.is_empty() {
                    return Err(FleetError::NoActiveHosts);
                }
                Ok(out)
            }
        }
    }
}

/// True when the host's reports or its heartbeat contradict its mirror.
fn diverged(view: &HostView) -> bool {
    view.mirror.divergence.is_some()
        || view
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.divergence.is_some())
}

/// The closure a directive puts in place, if it names one.
pub fn target_of(directive: &Directive) -> Option<StorePath> {
    match &directive.kind {
        DirectiveKind::Activate { target, .. } => Some(target.clone()),
        DirectiveKind::Rollback { to } => to.clone(),
    }
}
