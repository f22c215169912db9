//! Starting a rollout: the checks of a release against the registered hosts and the other
//! rollouts, and the waves, planned once and kept.
//!
//! Pure: the caller passes what it knows of the hosts. Hosts are taken in id order, so the same
//! release, waves and tags always give the same waves, whatever order the manifest lists them in.

use std::collections::{BTreeMap, BTreeSet};

use fleetnode_wire::{
    HostId, HostProgress, HostState, Progress, Rollout, RolloutId, RolloutPhase, StartRollout, Tag,
    Timestamp, Wave, WaveSpec,
};

/// What the control plane knows of a registered host when a rollout starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Its tags.
    pub tags: Vec<Tag>,
    /// Revoked hosts cannot take part.
    pub revoked: bool,
}

/// Why a rollout was not started. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The release names hosts that are not registered.
    #[error(
        "the release names {} not registered: {}; register {} with `fleetnode-cp add-host` or remove {} from the manifest; nothing was started",
        plural(.0.len(), "a host that is", "hosts that are"),
        list(.0),
        plural(.0.len(), "it", "them"),
        plural(.0.len(), "it", "them")
    )]
    UnknownHosts(Vec<HostId>),
    /// The release names revoked hosts.
    #[error(
        "the release names {}: {}; remove {} from the manifest; nothing was started",
        plural(.0.len(), "a revoked host", "revoked hosts"),
        list(.0),
        plural(.0.len(), "it", "them")
    )]
    RevokedHosts(Vec<HostId>),
    /// A host belongs to a rollout that is still running.
    #[error(
        "host {host} belongs to rollout {rollout}, which is still {phase}; wait for it to end or `fleetnode-cp rollout abort {rollout}`; nothing was started"
    )]
    Owned {
        /// The host.
        host: HostId,
        /// The rollout that owns it.
        rollout: RolloutId,
        /// That rollout's phase.
        phase: &'static str,
    },
    /// A tag wave matches no host of the release.
    #[error(
        "wave {wave} (tag:{tag}) matches no host of the release (`fleetnode-cp host <id>` shows a host's tags); change the waves; nothing was started"
    )]
    TagMatchesNothing {
        /// The wave, from 1.
        wave: usize,
        /// The tag.
        tag: Tag,
    },
    /// The waves end before every host of the release is covered.
    #[error(
        "the waves cover {covered} of the release's {total} hosts; end them with 100% so every host gets the release; nothing was started"
    )]
    Uncovered {
        /// Hosts the waves take.
        covered: usize,
        /// Hosts in the release.
        total: usize,
    },
}

/// A new rollout of `request`, numbered `id`, at `now`: the release is checked against the
/// registered hosts (`registered` holds every registered host the release names) and the hosts
/// other rollouts own (`owners`), and the waves are planned. It starts running at its first
/// wave; the first observation gives that wave the release.
pub fn start(
    request: &StartRollout,
    id: RolloutId,
    registered: &BTreeMap<HostId, Registration>,
    owners: &BTreeMap<HostId, (RolloutId, &'static str)>,
    now: Timestamp,
) -> Result<Rollout, StartError> {
    let names: Vec<&HostId> = request.release.hosts.keys().collect();
    let unknown: Vec<HostId> = names
        .iter()
        .filter(|host| !registered.contains_key(**host))
        .map(|host| (*host).clone())
        .collect();
    if !unknown.is_empty() {
        return Err(StartError::UnknownHosts(unknown));
    }
    let revoked: Vec<HostId> = names
        .iter()
        .filter(|host| registered.get(**host).is_some_and(|r| r.revoked))
        .map(|host| (*host).clone())
        .collect();
    if !revoked.is_empty() {
        return Err(StartError::RevokedHosts(revoked));
    }
    if let Some((host, (rollout, phase))) = names
        .iter()
        .find_map(|host| owners.get(*host).map(|owner| (*host, *owner)))
    {
        return Err(StartError::Owned {
            host: host.clone(),
            rollout,
            phase,
        });
    }
    let waves = plan(&names, registered, &request.waves)?;
    let mut hosts = BTreeMap::new();
    for (index, wave) in waves.iter().enumerate() {
        for host in &wave.hosts {
            let progress = HostProgress {
                wave: index,
                state: HostState::Pending,
                previous: None,
                rollback: None,
                window_opens_at: None,
            };
            hosts.insert(host.clone(), progress);
        }
    }
    Ok(Rollout {
        id,
        release: request.release.clone(),
        waves,
        bake_ms: request.bake_ms,
        max_failures: request.max_failures,
        allowed_failures: request.max_failures.allowed(names.len()),
        on_halt: request.on_halt,
        offline_deadline_ms: request.offline_deadline_ms,
        phase: RolloutPhase::Running(Progress {
            wave: 0,
            baking_until: None,
        }),
        hosts,
        rollback: None,
        created_at: now,
        clock: now,
    })
}

/// The waves of a release: every wave widens the release by at least one host until all have
/// it; counts and percentages are cumulative and take hosts in id order; a tag wave takes the
/// tagged hosts not taken yet.
pub fn plan(
    hosts: &[&HostId],
    registered: &BTreeMap<HostId, Registration>,
    specs: &[WaveSpec],
) -> Result<Vec<Wave>, StartError> {
    let ordered: BTreeSet<&HostId> = hosts.iter().copied().collect();
    let total = ordered.len();
    let mut taken: BTreeSet<&HostId> = BTreeSet::new();
    let mut waves = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let chosen: Vec<&HostId> = match spec {
            WaveSpec::Tag { tag } => {
                let tagged: Vec<&HostId> = ordered
                    .iter()
                    .copied()
                    .filter(|host| registered.get(*host).is_some_and(|r| r.tags.contains(tag)))
                    .collect();
                if tagged.is_empty() {
                    return Err(StartError::TagMatchesNothing {
                        wave: index + 1,
                        tag: tag.clone(),
                    });
                }
                tagged
                    .into_iter()
                    .filter(|host| !taken.contains(host))
                    .collect()
            }
            WaveSpec::Count { .. } | WaveSpec::Percent { .. } => {
                let target = cumulative(spec, total).max(taken.len() + 1).min(total);
                let more = target.saturating_sub(taken.len());
                ordered
                    .iter()
                    .copied()
                    .filter(|host| !taken.contains(host))
                    .take(more)
                    .collect()
            }
        };
        taken.extend(chosen.iter().copied());
        waves.push(Wave {
            spec: spec.clone(),
            hosts: chosen.into_iter().cloned().collect(),
        });
    }
    if taken.len() < total {
        return Err(StartError::Uncovered {
            covered: taken.len(),
            total,
        });
    }
    Ok(waves)
}

/// Hosts a count or percentage wave covers in all, before widening and capping.
fn cumulative(spec: &WaveSpec, total: usize) -> usize {
    match spec {
        WaveSpec::Count { count } => usize::try_from(*count).unwrap_or(usize::MAX),
        WaveSpec::Percent { percent } => (total * usize::from(*percent)).div_ceil(100),
        WaveSpec::Tag { .. } => 0,
    }
}

fn list(hosts: &[HostId]) -> String {
    hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}
