//! The agent is killed (SIGKILL) while a switch runs in its transient unit. The switch keeps
//! running; the restarted agent follows it instead of starting another, and converges.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::{Phase, Report, SwitchPurpose};
use fleetnode_tests::{Harness, Health};

use crate::common::{commands_on, replay, run};

#[test]
fn a_killed_agent_follows_the_running_switch_after_restart() {
    run(|| {
        let mut h = Harness::start()?;
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        h.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(8)));

        let revision = h.set_target(&gen2, &["--soak", "3s"])?;
        let activating = h.wait_for("the activation switch to run", |d| {
            matches!(d.mirror.phase, Phase::Activating(_))
        })?;
        let Phase::Activating(activation) = &activating.mirror.phase else {
            unreachable!("waited for activating");
        };
        // The unit's name carries the store's stream id, then the switch id.
        let suffix = format!("-{}.service", activation.switch);
        let unit = h
            .root()
            .units()
            .into_iter()
            .find(|u| u.starts_with("fleetnode-activate-") && u.ends_with(&suffix))
            .expect("the switch's unit is loaded");

        h.agent.kill()?;
        let props = h.root().unit_properties(&unit).unwrap_or_default();
        // A oneshot switch unit is `activating` until its command ends.
        assert!(
            props.contains("ActiveState=activating") || props.contains("ActiveState=active\n"),
            "the switch unit {unit} should outlive the killed agent: {props}"
        );

        h.agent.start()?;
        let detail = h.wait_settled(revision, "converged")?;
        let report = h.report(Some(&detail));
        assert_eq!(h.root().current(), Some(gen2.clone()), "{report}");
        assert_eq!(h.root().boot_entry(), Some(gen2.clone()), "{report}");

        // Exactly one activation: one unit launched for it, one live test switch of gen-2.
        let log = h.root().command_log();
        let launches: Vec<_> = log
            .iter()
            .filter(|argv| argv[0] == "systemd-run" && argv.contains(&format!("--unit={unit}")))
            .collect();
        assert_eq!(launches.len(), 1, "{log:?}");
        let tests: Vec<_> = commands_on(&log, "switch-to-configuration", &gen2)
            .into_iter()
            .filter(|(_, argv)| argv.last().map(String::as_str) == Some("test"))
            .collect();
        assert_eq!(tests.len(), 1, "{log:?}");
        let activations = detail
            .recent_events
            .iter()
            .filter(|e| {
                matches!(&e.report, Report::ActivationStarted { job, .. }
                    if job.purpose == SwitchPurpose::Activate)
            })
            .count();
        assert_eq!(activations, 1, "{report}");
        // The restart is on record, and the mirror still follows every event.
        let starts = detail
            .recent_events
            .iter()
            .filter(|e| matches!(e.report, Report::Recovered { .. }))
            .count();
        assert_eq!(starts, 2, "{report}");
        assert_eq!(replay(&detail.recent_events), detail.mirror, "{report}");
        Ok(())
    })
}
