//! Defects 3 and 4 on a real host: a unit left by an older store is not followed as a new
//! switch, and `systemctl daemon-reexec` during a switch is not a failed switch.

use std::time::Duration;

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::run;

#[test]
fn a_unit_left_by_a_reset_store_is_not_followed_as_the_new_switch() {
    run("leftover", AgentOptions::default(), |host| {
        // Units with every name the first switches of a fresh store could get, as an older
        // store's finished switches leave them (RemainAfterExit=yes), all failed.
        let mut script = String::new();
        for switch in 1..=40 {
            script.push_str(&format!(
                "systemd-run --quiet --unit=fleetnode-activate-{switch}.service \
                 --property=RemainAfterExit=yes /bin/sh -c 'exit 3'\n"
            ));
        }
        host.container().bash(&script)?;
        host.container().bash(
            "systemctl stop fleetnode-agent.service\n\
             rm -f /var/lib/fleetnode/agent.redb\n\
             systemctl start fleetnode-agent.service",
        )?;
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &[])?;
        let detail = host.wait_settled(revision, "converged")?;
        let report = host.report(Some(&detail));
        assert_eq!(host.switch_runs(&gen2, "test"), 1, "{report}");
        let state = host.state()?;
        assert!(
            state.current.as_ref() == Some(&gen2) && state.serves(&gen2),
            "{state:?}"
        );
        // Only the leftovers remain loaded; the agent's own units were released.
        // `fleetnode-activate-<n>.service` has two dashes, the agent's own
        // `fleetnode-activate-<stream>-<n>.service` three.
        assert!(
            state
                .activate_units
                .iter()
                .all(|u| u.matches('-').count() == 2),
            "{state:?}"
        );
        Ok(())
    });
}

#[test]
fn a_daemon_reexec_during_the_switch_is_not_a_failed_switch() {
    run("reexec", AgentOptions::default(), |host| {
        let gen2 = host.published(
            "nixos-system-real-01-gen-2",
            &Behaviour::Slow(Duration::from_secs(12)),
        )?;
        // Re-execute systemd over and over while the agent launches and follows the switch
        // (the switch itself calls systemctl only after its 12 s wait).
        host.container().run(&[
            "systemd-run",
            "--quiet",
            "--unit=reexec-loop",
            "/bin/sh",
            "-c",
            "for i in $(seq 1 8); do systemctl daemon-reexec; sleep 0.3; done",
        ])?;
        let revision = host.set_target(&gen2, &[])?;
        let detail = host.wait_settled(revision, "converged")?;
        let report = host.report(Some(&detail));
        assert_eq!(host.switch_runs(&gen2, "test"), 1, "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&gen2), "{state:?}\n{report}");
        Ok(())
    });
}
