//! Generations a rollback depends on survive a real `nix-collect-garbage -d` between an
//! activation and the rollback.

use fleetnode_tests::real_host::{AgentOptions, Behaviour};

use crate::common::run;

#[test]
fn a_rollback_after_nix_collect_garbage_finds_the_previous_generation() {
    let options = AgentOptions {
        // The switch moves the profile, so the initial generation is an old profile
        // generation, which `-d` deletes.
        mode: "switch".into(),
        ..AgentOptions::default()
    };
    run("gc", options, |host| {
        let initial = host.initial().clone();
        let gen2 = host.published("nixos-system-real-01-gen-2", &Behaviour::Healthy)?;
        let revision = host.set_target(&gen2, &[])?;
        host.wait_settled(revision, "converged")?;
        let state = host.state()?;
        assert!(state.runs_committed(&gen2), "{state:?}");
        // A closure nothing roots, to show that the collection does delete.
        let stray = host.build("nixos-system-real-01-stray", &Behaviour::Healthy)?;
        let kept = host
            .container()
            .bash("ls -l /var/lib/fleetnode/gcroots/kept 2>&1 || true")?;
        host.container().run(&["nix-collect-garbage", "-d"])?;
        let present = |host: &mut fleetnode_tests::real_host::RealHost, path: &str| {
            host.container()
                .output(&["test", "-x", &format!("{path}/bin/switch-to-configuration")])
                .map(|o| o.status.success())
        };
        assert!(
            !present(host, stray.as_str())?,
            "the collection deleted nothing"
        );
        assert!(
            present(host, initial.as_str())?,
            "the collection deleted {initial}; the agent's roots were:\n{kept}"
        );
        let revision = host.rollback()?;
        let detail = host.wait_for("the rollback to be handled", |d| {
            d.mirror.handled == Some(revision) && d.mirror.phase.is_at_rest()
        })?;
        let report = host.report(Some(&detail));
        assert_eq!(detail.row.phase.name(), "reverted", "{report}");
        let state = host.state()?;
        assert!(state.runs_committed(&initial), "{state:?}\n{report}");
        Ok(())
    });
}
