//! Human-readable lines for the events an agent reports, as the demo and failure reports show
//! them: the agent's decisions in its own words (each report's own `Display`, in its short
//! form).

use fleetnode_state_machine::{OutboundEvent, StorePath};

/// One line describing `event`: its seq, its type and what it says.
pub fn describe(event: &OutboundEvent) -> String {
    format!(
        "#{:<3} {:<19} {:#}",
        event.seq,
        event.report.name(),
        event.report
    )
}

/// A store path shortened to its hash prefix and name, as `fleetnode-cp hosts` prints it.
pub fn short(path: &StorePath) -> String {
    format!("{path:#}")
}

/// [`short`] for an optional path.
pub fn short_or_none(path: Option<&StorePath>) -> String {
    path.map_or_else(|| "nothing".to_owned(), short)
}
