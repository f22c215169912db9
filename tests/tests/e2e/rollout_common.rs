//! Helpers shared by the rollout scenarios.

use fleetnode_state_machine::StorePath;
use fleetnode_wire::{HostId, HostProgress, RolloutStatus};

pub use fleetnode_tests::release::activations_of;

/// The progress of `host` in the rollout.
pub fn progress<'a>(status: &'a RolloutStatus, host: &str) -> &'a HostProgress {
    let id = HostId::parse(host).unwrap();
    status
        .rollout
        .hosts
        .get(&id)
        .unwrap_or_else(|| panic!("{host} is not in rollout {}", status.rollout.id))
}

/// The fake commands of a host that mention `path`.
pub fn commands_mentioning(log: &[Vec<String>], path: &StorePath) -> usize {
    log.iter()
        .filter(|argv| argv.iter().any(|a| a.contains(path.as_str())))
        .count()
}
