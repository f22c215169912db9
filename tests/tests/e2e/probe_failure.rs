//! A generation whose health probe fails during the soak is rolled back by the agent on its own,
//! before it ever becomes the boot default.

use fleetnode_state_machine::{Phase, Reason, Report, StorePath};
use fleetnode_tests::agent::PROBE_NAME;
use fleetnode_tests::{Harness, Health};

use crate::common::{commands_on, reasons, replay, run};

#[test]
fn a_generation_failing_its_probe_is_rolled_back_before_the_boot_entry_moves() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Broken)?;

        let revision = h.set_target(&gen2, &["--soak", "3s", "--sustained-failure", "2s"])?;
        let detail = h.wait_settled(revision, "reverted")?;
        let report = h.report(Some(&detail));

        match &detail.mirror.phase {
            Phase::Reverted(reverted) => {
                assert_eq!(reverted.to, gen1, "{report}");
                assert_eq!(reverted.abandoned, Some(gen2.clone()), "{report}");
                match &reverted.reason {
                    Reason::ProbeFailed { probe, .. } => {
                        assert_eq!(probe.as_str(), PROBE_NAME, "{report}");
                    }
                    other => panic!("reverted for {other}, not the probe\n{report}"),
                }
            }
            other => panic!("not reverted: {other:?}\n{report}"),
        }
        assert_eq!(
            reasons(&detail.recent_events),
            ["probe-failed", "probe-failed"],
            "one rollback, one revert, both for the probe\n{report}"
        );
        // gen-2 is quarantined under its revision: the same directive never starts again.
        assert_eq!(detail.mirror.quarantine.get(&gen2), Some(&revision));
        assert_eq!(detail.mirror.known_good, vec![gen1.clone()]);

        // The host runs gen-1 again; its boot entry and profile never left gen-1.
        let root = h.root();
        assert_eq!(root.current(), Some(gen1.clone()), "{report}");
        assert_eq!(root.boot_entry(), Some(gen1.clone()), "{report}");
        assert_eq!(root.profile(), Some(gen1.clone()), "{report}");
        let generations: Vec<StorePath> = root
            .profile_generations()
            .into_iter()
            .map(|(_, path)| path)
            .collect();
        assert_eq!(generations, vec![gen1.clone()], "{report}");
        let log = root.command_log();
        assert!(commands_on(&log, "nix-env", &gen2).is_empty(), "{log:?}");

        // The rollback ran gen-1's own switch script (not the live, broken generation's).
        let rollback_job = detail
            .recent_events
            .iter()
            .find_map(|e| match &e.report {
                Report::RollbackStarted { job, .. } => Some(job.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(rollback_job.closure, gen1);
        assert!(!rollback_job.set_profile);
        let gen1_switches = commands_on(&log, "switch-to-configuration", &gen1);
        assert_eq!(gen1_switches.len(), 1, "{log:?}");
        assert_eq!(gen1_switches[0].1.last().unwrap(), "test", "{log:?}");

        assert_eq!(replay(&detail.recent_events), detail.mirror, "{report}");
        Ok(())
    })
}
