//! Test-then-commit: a healthy generation is activated live, soaked, and only then made the boot
//! default.

use fleetnode_state_machine::{Converged, Phase, Report, SwitchAction, SwitchPurpose};
use fleetnode_tests::{Harness, Health};

use crate::common::{commands_on, names, replay, run};

#[test]
fn a_healthy_generation_is_tested_soaked_then_committed() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;

        let revision = h.set_target(&gen2, &["--soak", "3s"])?;
        let detail = h.wait_settled(revision, "converged")?;
        let report = h.report(Some(&detail));

        // The host runs gen-2 and boots it next time; it has not rebooted.
        let root = h.root();
        assert_eq!(root.current(), Some(gen2.clone()), "{report}");
        assert_eq!(root.profile(), Some(gen2.clone()), "{report}");
        assert_eq!(root.boot_entry(), Some(gen2.clone()), "{report}");
        assert_eq!(root.booted(), Some(gen1.clone()), "{report}");

        // The boot entry moved only at commit: the live test switch ran first, the profile was
        // set to gen-2 only after it, and exactly once.
        let log = root.command_log();
        let tests = commands_on(&log, "switch-to-configuration", &gen2)
            .into_iter()
            .filter(|(_, argv)| argv.last().map(String::as_str) == Some("test"))
            .collect::<Vec<_>>();
        let profile_sets = commands_on(&log, "nix-env", &gen2);
        assert_eq!(tests.len(), 1, "one live test switch of gen-2: {log:?}");
        assert_eq!(
            profile_sets.len(),
            1,
            "gen-2 set as the profile once: {log:?}"
        );
        assert!(
            tests[0].0 < profile_sets[0].0,
            "the profile moved before the live test: {log:?}"
        );

        // The events tell the same story, in order, and the activation left the boot entry on
        // gen-1 while gen-2 soaked.
        let events = &detail.recent_events;
        let story: Vec<&str> = names(events)
            .into_iter()
            .filter(|name| *name != "probe-observed")
            .skip_while(|name| *name != "work-started")
            .collect();
        assert_eq!(
            story,
            [
                "work-started",
                "realised",
                "activation-started",
                "switch-ended",
                "soak-started",
                "commit-started",
                "switch-ended",
                "converged"
            ],
            "{report}"
        );
        let mut jobs = events.iter().filter_map(|e| match &e.report {
            Report::ActivationStarted { job, .. } | Report::CommitStarted { job, .. } => {
                Some(job.clone())
            }
            _ => None,
        });
        let activation = jobs.next().unwrap();
        let commit = jobs.next().unwrap();
        assert_eq!(
            (
                activation.purpose,
                activation.action,
                activation.set_profile
            ),
            (SwitchPurpose::Activate, SwitchAction::Test, false)
        );
        assert_eq!(
            (commit.purpose, commit.closure.clone(), commit.set_profile),
            (SwitchPurpose::Commit, gen2.clone(), true)
        );
        let after_activation = events
            .iter()
            .find_map(|e| match &e.report {
                Report::SwitchEnded { system, .. } => Some(system.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(after_activation.current, Some(gen2.clone()), "{report}");
        assert_eq!(after_activation.profile, Some(gen1.clone()), "{report}");

        // The control plane's mirror is what the events imply.
        let mirror = &detail.mirror;
        assert_eq!(
            mirror.phase,
            Phase::Converged(Converged {
                revision,
                target: gen2.clone()
            })
        );
        assert_eq!(mirror.known_good, vec![gen1.clone(), gen2.clone()]);
        assert_eq!(mirror.system.current, Some(gen2.clone()));
        assert_eq!(mirror.system.profile, Some(gen2.clone()));
        assert_eq!(events.first().map(|e| e.seq), Some(1), "{report}");
        assert_eq!(&replay(events), mirror, "{report}");
        assert_eq!(detail.divergence, None);

        // The agent, asked on its own admin socket, says the same.
        let status = h.agent_status()?;
        assert_eq!(status["phase"], "converged", "{status:#}");
        assert_eq!(status["system"]["current"], gen2.as_str(), "{status:#}");
        assert_eq!(status["handled_revision"], revision.0, "{status:#}");
        assert!(
            status["last_seq"].as_u64().unwrap() >= mirror.seq,
            "{status:#}"
        );
        Ok(())
    })
}
