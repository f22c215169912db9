//! Scenarios 5 and 6: the agent killed (SIGKILL) during the activation switch and during the
//! commit switch, and restarted by `systemctl restart` mid-switch. Each switch runs exactly
//! once; the agent follows the running unit.

use std::time::Duration;

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::run;

const SLOW: Behaviour = Behaviour::Slow(Duration::from_secs(6));

#[test]
fn a_killed_agent_follows_the_activation_and_the_commit_switch() {
    run("kill", AgentOptions::default(), |host| {
        let gen2 = host.published("nixos-system-real-01-gen-2", &SLOW)?;
        let revision = host.set_target(&gen2, &["--mode", "test-then-commit"])?;
        for phase in ["activating", "committing"] {
            host.wait_for(phase, |d| d.row.phase.name() == phase)?;
            host.container().run(&[
                "systemctl",
                "kill",
                "--kill-whom=main",
                "--signal=SIGKILL",
                "fleetnode-agent.service",
            ])?;
        }
        let detail = host.wait_settled(revision, "converged")?;
        let report = host.report(Some(&detail));
        assert_eq!(host.switch_runs(&gen2, "test"), 1, "{report}");
        assert_eq!(host.switch_runs(&gen2, "boot"), 1, "{report}");
        let recovered = detail
            .recent_events
            .iter()
            .filter(|e| e.report.name() == "recovered")
            .count();
        assert_eq!(recovered, 3, "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&gen2), "{state:?}\n{report}");
        Ok(())
    });
}

#[test]
fn a_restarted_agent_follows_the_running_switch() {
    run("restart", AgentOptions::default(), |host| {
        let gen2 = host.published("nixos-system-real-01-gen-2", &SLOW)?;
        let revision = host.set_target(&gen2, &["--mode", "test-then-commit"])?;
        host.wait_for("activating", |d| d.row.phase.name() == "activating")?;
        host.container()
            .run(&["systemctl", "restart", "fleetnode-agent.service"])?;
        let detail = host.wait_settled(revision, "converged")?;
        let report = host.report(Some(&detail));
        assert_eq!(host.switch_runs(&gen2, "test"), 1, "{report}");
        assert_eq!(host.switch_runs(&gen2, "boot"), 1, "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&gen2), "{state:?}\n{report}");
        Ok(())
    });
}
