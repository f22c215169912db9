//! Helpers shared by the real-host scenarios.

use fleetnode_state_machine::{OutboundEvent, Report};
use fleetnode_tests::Result;
use fleetnode_tests::real_host::{AgentOptions, RealHost};

/// Runs a scenario on a fresh host, panicking with the error's full report.
pub fn run(name: &str, options: AgentOptions, scenario: impl FnOnce(&mut RealHost) -> Result<()>) {
    let outcome = RealHost::start(name, &options).and_then(|mut host| {
        let result = scenario(&mut host);
        if let Err(error) = &result {
            eprintln!("{error}");
        }
        result
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
}

/// The names of the events, in order.
pub fn names(events: &[OutboundEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.report.name()).collect()
}

/// The reasons carried by the events, in order.
pub fn reasons(events: &[OutboundEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.report {
            Report::RollbackStarted { reason, .. }
            | Report::Reverted { reason, .. }
            | Report::Failed { reason, .. } => Some(reason.code().to_owned()),
            _ => None,
        })
        .collect()
}

/// The events since the last `directive-recorded` (those of the latest directive).
pub fn latest_directive(events: &[OutboundEvent]) -> &[OutboundEvent] {
    let start = events
        .iter()
        .rposition(|e| e.report.name() == "directive-recorded")
        .unwrap_or(0);
    &events[start..]
}

/// Whether the events hold an observation of `probe` with this result.
pub fn observed(events: &[OutboundEvent], probe: &str, passed: bool) -> bool {
    events.iter().any(|event| {
        matches!(&event.report, Report::ProbeObserved { probe: p, passed: q, .. }
            if p.as_str() == probe && *q == passed)
    })
}
