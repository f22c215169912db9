//! Scenario 3: an operator's rollback on a real host.

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::{latest_directive, names, run};

#[test]
fn an_operator_rollback_returns_the_host_to_the_previous_generation() {
    run("rollback", AgentOptions::default(), |host| {
        let initial = host.initial().clone();
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &[])?;
        host.wait_settled(revision, "converged")?;
        let revision = host.rollback()?;
        let detail = host.wait_for("the rollback to be handled", |d| {
            d.mirror.handled == Some(revision) && d.mirror.phase.is_at_rest()
        })?;
        let report = host.report(Some(&detail));
        let events = names(latest_directive(&detail.recent_events));
        assert!(events.contains(&"rollback-started"), "{report}");
        assert_eq!(detail.row.phase.name(), "reverted", "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        // The installation's switch, then the rollback's: gen-1's own script, not gen-2's.
        assert_eq!(host.switch_runs(&initial, "switch"), 2, "{report}");
        Ok(())
    });
}
