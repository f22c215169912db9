//! Helpers shared by the scenarios.

use fleetnode_state_machine::{Host, OutboundEvent, Report, State, StorePath, mirror};
use fleetnode_tests::Result;

/// Runs a scenario, panicking with the error's full report (not its `Debug`).
pub fn run(scenario: impl FnOnce() -> Result<()>) {
    if let Err(error) = scenario() {
        panic!("{error}");
    }
}

/// The host state a control plane builds from `events` (all of them, from seq 1), applied with
/// the shared `mirror::apply`, as the mirror is documented to be built.
pub fn replay(events: &[OutboundEvent]) -> Host {
    let mut state = State::default();
    for event in events {
        mirror::apply(&mut state, event)
            .unwrap_or_else(|e| panic!("event {} does not apply: {e}", event.seq));
    }
    state.host
}

/// Asserts the seqs are exactly 1, 2, 3, ... with nothing missing or repeated.
pub fn assert_gap_free(events: &[OutboundEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "event seqs are not 1..=N");
}

/// The names of the events, in order.
pub fn names(events: &[OutboundEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.report.name()).collect()
}

/// The fake commands of `log` whose program is `program` and that mention `path`.
pub fn commands_on<'a>(
    log: &'a [Vec<String>],
    program: &str,
    path: &StorePath,
) -> Vec<(usize, &'a Vec<String>)> {
    log.iter()
        .enumerate()
        .filter(|(_, argv)| argv[0] == program && argv.iter().any(|a| a.contains(path.as_str())))
        .collect()
}

/// The reasons carried by the events, in order (rollbacks, reverts, failures, switch verdicts).
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
