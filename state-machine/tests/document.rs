//! `docs/state-machine.md` names every phase, event and report the code has.

use fleetnode_state_machine::{Event, Phase, Report};

const DOC: &str = include_str!("../../docs/state-machine.md");

#[test]
fn every_phase_event_and_report_is_documented() {
    let names = Phase::NAMES
        .iter()
        .chain(Event::NAMES.iter())
        .chain(Report::NAMES.iter());
    for name in names {
        assert!(
            DOC.contains(&format!("`{name}`")),
            "docs/state-machine.md does not mention `{name}`"
        );
    }
}

#[test]
fn the_name_lists_are_complete_and_distinct() {
    // Each list must match the `name()` of every variant; a variant missing from a list would
    // escape the document check above. The lists are checked against the names the property
    // test run produces in `properties.rs`; here they must at least be distinct.
    for list in [&Phase::NAMES[..], &Event::NAMES[..], &Report::NAMES[..]] {
        let mut sorted = list.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len());
    }
}
