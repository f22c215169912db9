//! Views of the fleet that the operator's console reads beside the API's: a filtered page of
//! hosts, a host's desired-state history, an operator's standing, and the waves a rollout
//! would have before it is started. Reads only; every change still goes through the
//! operations the API and the CLI use.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetnode_wire::{
    HostId, HostList, OperatorName, PhaseKind, RolloutId, StartRollout, StorePath, Tag, Timestamp,
    Wave,
};

use super::registry::HostEntry;
use super::rollouts::RequestError;
use super::{Fleet, FleetError, HostPage};
use crate::mirror::Mirror;
use crate::rollout::plan;
use crate::store::{DesiredRecord, HostRecord};

/// Which hosts a filtered page holds. Empty fields match every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Only hosts with this tag.
    pub tag: Option<Tag>,
    /// Only hosts in this mirrored phase.
    pub phase: Option<PhaseKind>,
    /// Only hosts whose id, a tag or running closure contains this text (case-insensitive).
    pub text: Option<String>,
}

/// The fleet at a glance: hosts by phase and by running closure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    /// Hosts that are not revoked.
    pub hosts: usize,
    /// Of those, hosts by mirrored phase name.
    pub by_phase: BTreeMap<&'static str, usize>,
    /// Of those, hosts by the closure they run (`None`: not reported yet).
    pub by_closure: BTreeMap<Option<StorePath>, usize>,
    /// Of those, hosts without a heartbeat for three intervals.
    pub offline: usize,
}

/// Hosts whose phase is read again from a shared store in one statement while filtering.
const FILTER_CHUNK: usize = 256;

impl Fleet {
    /// One page of the hosts that are not revoked and match `filter`, by id, as
    /// [`Fleet::host_page`] pages them. On a shared store a phase filter reads the candidates'
    /// mirrors from the store (in chunks, until the page is full), since mirrors change on
    /// whichever replica a host's agent talks to.
    pub async fn find_hosts(
        &self,
        filter: &HostFilter,
        page: HostPage<'_>,
    ) -> Result<HostList, FleetError> {
        let all = self.hosts.all();
        let start = match page.after {
            Some(after) => all.partition_point(|e| e.id.as_str() <= after),
            None => 0,
        };
        let text = filter.text.as_ref().map(|t| t.to_lowercase());
        let candidates: Vec<&Arc<HostEntry>> = all[start..]
            .iter()
            .filter(|entry| registered_match(entry, filter, text.as_deref()))
            .collect();
        let mut chosen: Vec<HostId> = Vec::with_capacity(page.limit + 1);
        for chunk in candidates.chunks(FILTER_CHUNK) {
            if filter.phase.is_some() && self.backend.is_shared() {
                let ids: Vec<HostId> = chunk.iter().map(|e| e.id.clone()).collect();
                self.refresh_hosts(&ids).await?;
            }
            for entry in chunk {
                let phase = entry.with_view(|v| v.mirror.state.host.phase.kind());
                if filter.phase.is_none_or(|wanted| wanted == phase) {
                    chosen.push(entry.id.clone());
                }
            }
            if chosen.len() > page.limit {
                break;
            }
        }
        let more = chosen.len() > page.limit;
        chosen.truncate(page.limit);
        let hosts = self.rows(&chosen).await?;
        let next_cursor = more
            .then(|| chosen.last().map(|id| id.as_str().to_owned()))
            .flatten();
        Ok(HostList { hosts, next_cursor })
    }

    /// The fleet at a glance. On a shared store it is read as committed (as the gauges are),
    /// since mirrors change on whichever replica a host's agent talks to.
    pub async fn summary(&self) -> Result<FleetSummary, FleetError> {
        let mut summary = FleetSummary::default();
        let mut count = |record: &HostRecord, mirror: &Mirror, seen: Option<Timestamp>| {
            if record.revoked {
                return;
            }
            let host = &mirror.state.host;
            summary.hosts += 1;
            *summary.by_phase.entry(host.phase.name()).or_default() += 1;
            *summary
                .by_closure
                .entry(host.system.current.clone())
                .or_default() += 1;
            summary.offline += usize::from(self.is_offline(seen));
        };
        if self.backend.is_shared() {
            for host in self.backend.hosts().await? {
                let seen = host.heartbeat.as_ref().map(|h| h.received_at);
                count(&host.record, &host.mirror, seen);
            }
        } else {
            for entry in self.hosts.all() {
                entry.with_view(|v| {
                    let seen = v.heartbeat.as_ref().map(|h| h.received_at);
                    count(&v.record, &v.mirror, seen);
                });
            }
        }
        Ok(summary)
    }

    /// The depth of each host's outbound queue, as its latest heartbeat reported it (read
    /// from the view: call after [`Fleet::rows`], which makes it current on a shared store).
    pub fn queue_depths(&self, ids: &[HostId]) -> BTreeMap<HostId, u64> {
        ids.iter()
            .filter_map(|id| {
                let entry = self.hosts.get(id)?;
                let depth =
                    entry.with_view(|v| v.heartbeat.as_ref().map(|h| h.heartbeat.queue.depth));
                depth.map(|depth| (id.clone(), depth))
            })
            .collect()
    }

    /// True when other replicas share the store: some of their changes (a mirror moved by an
    /// agent talking to another replica) are not announced, and live readers poll for them.
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// A host's desired-state history, oldest first.
    pub async fn desired_history(&self, id: &HostId) -> Result<Vec<DesiredRecord>, FleetError> {
        self.host(id)?;
        self.backend.desired_history(id).await
    }

    /// True while the operator exists and is not revoked (as this replica last heard: on a
    /// shared store a revocation through another replica arrives as its notification).
    pub fn operator_active(&self, name: &OperatorName) -> bool {
        self.operators.is_active(name)
    }

    /// The waves `request` would have if it were started now, checked as
    /// [`Fleet::start_rollout`] checks it (the same planning function over the same
    /// registrations and owners); nothing is started or stored. The caller validates the
    /// request first, as the API's body decoding does.
    pub async fn preview_rollout(&self, request: &StartRollout) -> Result<Vec<Wave>, FleetError> {
        let registered = super::rollouts::registrations(&self.hosts, &request.release);
        let snapshot = self.rollouts_now().await?;
        let mut owners = BTreeMap::new();
        for rollout in snapshot.rollouts.values().filter(|r| r.is_active()) {
            for host in rollout.hosts.keys().filter(|host| rollout.owns(host)) {
                owners.insert(host.clone(), (rollout.id, rollout.phase.name()));
            }
        }
        let planned = plan::start(request, RolloutId(0), &registered, &owners, self.now())
            .map_err(|e| FleetError::Rollout(RequestError::Start(e)))?;
        Ok(planned.waves)
    }
}

/// True when the host is not revoked and its registration (and running closure) matches the
/// tag and text of `filter`.
fn registered_match(entry: &HostEntry, filter: &HostFilter, text: Option<&str>) -> bool {
    entry.with_view(|view| {
        if view.record.revoked {
            return false;
        }
        if let Some(tag) = &filter.tag
            && !view.record.tags.contains(tag)
        {
            return false;
        }
        let Some(text) = text else {
            return true;
        };
        let current = view.mirror.state.host.system.current.as_ref();
        view.record.id.as_str().contains(text)
            || view.record.tags.iter().any(|t| t.as_str().contains(text))
            || current.is_some_and(|c| c.as_str().to_lowercase().contains(text))
    })
}
