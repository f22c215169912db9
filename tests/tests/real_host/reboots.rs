//! Scenario 7 and defect 2: boot mode across a real container reboot, and a reboot during a
//! test-then-commit soak. The agent's unit hides the container's own boot id
//! (`ProtectKernelTunables=`), so the agent must see the reboot another way.

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::{latest_directive, reasons, run};

#[test]
fn boot_mode_converges_across_a_real_reboot() {
    run("boot", AgentOptions::default(), |host| {
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &["--mode", "boot"])?;
        host.wait_for("deferred until boot", |d| d.row.phase.name() == "deferred")?;
        let state = host.state()?;
        assert_eq!(state.boot_entry.as_ref(), Some(&gen2), "{state:?}");
        assert_eq!(state.current.as_ref(), Some(host.initial()), "{state:?}");
        host.container().run(&["systemctl", "reboot"])?;
        let detail = host.wait_settled(revision, "converged")?;
        let report = host.report(Some(&detail));
        assert_eq!(host.container().boots(), 2, "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&gen2), "{state:?}\n{report}");
        assert_eq!(state.booted.as_ref(), Some(&gen2), "{state:?}");
        Ok(())
    });
}

#[test]
fn a_reboot_during_the_soak_reverts_the_generation() {
    run("soak-reboot", AgentOptions::default(), |host| {
        let initial = host.initial().clone();
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &["--mode", "test-then-commit", "--soak", "10m"])?;
        host.wait_for("soaking", |d| d.row.phase.name() == "soaking")?;
        host.container().run(&["systemctl", "reboot"])?;
        let detail = host.wait_settled(revision, "reverted")?;
        let report = host.report(Some(&detail));
        assert_eq!(
            reasons(latest_directive(&detail.recent_events)),
            ["rebooted-during-soak"],
            "{report}"
        );
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        Ok(())
    });
}
