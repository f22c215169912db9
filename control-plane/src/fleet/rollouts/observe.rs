//! What the rollout state machine decides from, read from the registry: the mirrored state of
//! each host of a rollout, copied as it is. No judgement happens here.

use std::collections::BTreeMap;

use fleetnode_wire::{HostId, ReleaseManifest, Rollout, Timestamp};

use crate::fleet::registry::Registry;
use crate::rollout::window::TagWindows;
use crate::rollout::{HostObservation, Observations, Registration};

/// The hosts of `rollout` as the registry has them now, each with its tags' maintenance
/// windows.
pub fn observe(
    registry: &Registry,
    windows: &TagWindows,
    rollout: &Rollout,
    watching_since: Timestamp,
) -> Observations {
    let mut hosts = BTreeMap::new();
    for id in rollout.hosts.keys() {
        let Some(entry) = registry.get(id) else {
            continue;
        };
        let desired = entry.desired();
        let next_revision = entry.next_revision();
        let observation = entry.with_view(|view| {
            let host = &view.mirror.state.host;
            HostObservation {
                revoked: view.record.revoked,
                directive: desired.directive.as_ref().map(|d| d.revision),
                next_revision,
                handled: host.handled,
                phase: host.phase.clone(),
                current: host.system.current.clone(),
                last_seen: view.heartbeat.as_ref().map(|h| h.received_at),
                windows: windows.for_tags(&view.record.tags),
            }
        });
        hosts.insert(id.clone(), observation);
    }
    Observations {
        hosts,
        watching_since,
    }
}

/// What a new rollout needs to know of the hosts its release names (hosts that are not
/// registered are left out).
pub fn registrations(
    registry: &Registry,
    release: &ReleaseManifest,
) -> BTreeMap<HostId, Registration> {
    release
        .hosts
        .keys()
        .filter_map(|id| {
            let entry = registry.get(id)?;
            let registration = entry.with_view(|view| Registration {
                tags: view.record.tags.clone(),
                revoked: view.record.revoked,
            });
            Some((id.clone(), registration))
        })
        .collect()
}
