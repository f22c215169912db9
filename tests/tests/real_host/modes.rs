//! Scenario 1: each activation mode, healthy, on a real host.

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::{latest_directive, names, observed, run};

#[test]
fn each_activation_mode_converges_on_a_real_host() {
    let options = AgentOptions {
        allow_reboot: true,
        ..AgentOptions::default()
    };
    run("modes", options, |host| {
        // test-then-commit: a live test switch, the soak, then the commit.
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &["--mode", "test-then-commit"])?;
        let detail = host.wait_settled(revision, "converged")?;
        let state = host.state()?;
        assert!(
            state.runs_committed(&gen2),
            "{state:?}\n{}",
            host.report(Some(&detail))
        );
        assert_eq!(
            host.switch_runs(&gen2, "test"),
            1,
            "{:?}",
            host.switch_log()
        );
        assert_eq!(
            host.switch_runs(&gen2, "boot"),
            1,
            "{:?}",
            host.switch_log()
        );
        let events = names(latest_directive(&detail.recent_events));
        for expected in [
            "realised",
            "activation-started",
            "soak-started",
            "commit-started",
            "converged",
        ] {
            assert!(events.contains(&expected), "{events:?}");
        }
        // The exec probe, a child of the sandboxed agent, ran and passed.
        assert!(
            observed(latest_directive(&detail.recent_events), "port", true),
            "{}",
            host.report(Some(&detail))
        );

        // switch: profile and boot entry first, then live.
        let gen3 = host.published("nixos-system-real-01-gen-3", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen3, &["--mode", "switch"])?;
        let detail = host.wait_settled(revision, "converged")?;
        let state = host.state()?;
        assert!(
            state.runs_committed(&gen3),
            "{state:?}\n{}",
            host.report(Some(&detail))
        );
        assert_eq!(
            host.switch_runs(&gen3, "switch"),
            1,
            "{:?}",
            host.switch_log()
        );

        // boot: profile and boot entry, then the agent reboots the host into it.
        let boots = host.container().boots();
        let gen4 = host.published("nixos-system-real-01-gen-4", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen4, &["--mode", "boot"])?;
        let detail = host.wait_settled(revision, "converged")?;
        let state = host.state()?;
        assert!(host.container().boots() > boots, "the host did not reboot");
        assert!(
            state.runs_committed(&gen4),
            "{state:?}\n{}",
            host.report(Some(&detail))
        );
        assert_eq!(state.booted.as_ref(), Some(&gen4), "{state:?}");
        assert_eq!(
            host.switch_runs(&gen4, "boot"),
            1,
            "{:?}",
            host.switch_log()
        );
        Ok(())
    });
}
