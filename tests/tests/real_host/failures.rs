//! Scenarios 2, 8 and 9: a broken generation, a switch that ignores SIGTERM, a switch whose
//! unit fails; each rolled back by the agent on a real host.

use fleetnode_tests::real_host::{AgentOptions, Behaviour, RealHost};

use crate::common::{latest_directive, names, observed, reasons, run};

/// Every generation the system profile ever pointed at.
fn profile_generations(host: &mut RealHost) -> Vec<String> {
    let dir = host.container().path("/nix/var/nix/profiles");
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("system-"))
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    targets.sort();
    targets
}

#[test]
fn a_broken_generation_is_rolled_back_before_its_profile_or_boot_entry_moves() {
    run("broken", AgentOptions::default(), |host| {
        let initial = host.initial().clone();
        let broken = host.published("nixos-system-real-01-broken", &Behaviour::Broken)?;
        let revision = host.set_target(&broken, &["--mode", "test-then-commit"])?;
        let detail = host.wait_settled(revision, "reverted")?;
        let report = host.report(Some(&detail));
        let events = latest_directive(&detail.recent_events);
        assert_eq!(
            reasons(events),
            ["probe-failed", "probe-failed"],
            "{report}"
        );
        assert!(names(events).contains(&"rollback-started"), "{report}");
        assert!(
            observed(events, "port", false),
            "the exec probe saw the broken service: {report}"
        );
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        // The broken generation was only ever tested: never the profile, never the boot entry.
        assert_eq!(host.switch_runs(&broken, "test"), 1, "{report}");
        assert_eq!(host.switch_runs(&broken, "boot"), 0, "{report}");
        assert_eq!(host.switch_runs(&broken, "switch"), 0, "{report}");
        assert!(
            !profile_generations(host).contains(&broken.to_string()),
            "the profile pointed at the broken generation: {report}"
        );
        Ok(())
    });
}

#[test]
fn a_switch_whose_units_fail_exits_4_and_is_rolled_back() {
    run("unit-fails", AgentOptions::default(), |host| {
        let initial = host.initial().clone();
        let failing = host.published("nixos-system-real-01-unit-fails", &Behaviour::UnitFails)?;
        let revision = host.set_target(&failing, &["--mode", "test-then-commit"])?;
        let detail = host.wait_settled(revision, "reverted")?;
        let report = host.report(Some(&detail));
        let events = latest_directive(&detail.recent_events);
        let verdict = events
            .iter()
            .find(|e| e.report.name() == "switch-ended")
            .map(|e| format!("{:?}", e.report))
            .unwrap_or_default();
        // Exit 4: the system switched but a unit failed; the probes decide (they fail here).
        assert!(
            verdict.contains("SucceededWithWarnings"),
            "{verdict}\n{report}"
        );
        assert!(
            verdict.contains("the following units failed"),
            "{verdict}\n{report}"
        );
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        Ok(())
    });
}

#[test]
fn a_switch_that_ignores_sigterm_is_killed_at_its_timeout() {
    let options = AgentOptions {
        // Longer than the unit's 10 s stop timeout: the rollback waits for the stop.
        activation_timeout: "20s".into(),
        ..AgentOptions::default()
    };
    run("sigterm", options, |host| {
        let initial = host.initial().clone();
        let stuck = host.published("nixos-system-real-01-stuck", &Behaviour::IgnoresTerm)?;
        let revision = host.set_target(&stuck, &["--mode", "test-then-commit"])?;
        let activating = host.wait_for("the stuck switch to run", |d| {
            d.row.phase.name() == "activating"
        })?;
        let unit = activating
            .recent_events
            .iter()
            .rev()
            .find_map(|e| match &e.report {
                fleetnode_state_machine::Report::ActivationStarted { .. } => Some(e.seq),
                _ => None,
            })
            .unwrap();
        let units = host.state()?.activate_units;
        assert_eq!(units.len(), 1, "{units:?}");
        // The unit bounds its own stop: systemd's default (90 s) would block the agent.
        let timeout = host.container().run(&[
            "systemctl",
            "show",
            "--property=TimeoutStopUSec",
            &units[0],
        ])?;
        assert_ne!(
            timeout.trim(),
            "TimeoutStopUSec=1min 30s",
            "switch {unit}: {timeout}"
        );
        let detail = host.wait_settled(revision, "reverted")?;
        let report = host.report(Some(&detail));
        let events = latest_directive(&detail.recent_events);
        assert_eq!(reasons(events)[0], "switch-timed-out", "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        let left = host.container().output(&[
            "pgrep",
            "-f",
            &format!("{stuck}/bin/switch-to-configuration"),
        ])?;
        assert!(
            !left.status.success(),
            "the stuck switch still runs\n{report}"
        );
        Ok(())
    });
}
