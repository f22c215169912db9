//! A release whose closure is broken on the canary: the canary's agent rolls it back, the
//! rollout halts, and no other host ever receives the release.

use fleetnode_tests::{Fleet, FleetOptions, Shape};
use fleetnode_wire::{FailureKind, HostOutcome, HostState, RolloutPhase};

use crate::common::run;
use crate::rollout_common::{activations_of, commands_mentioning, progress};

#[test]
fn a_broken_canary_halts_the_rollout_and_the_rest_never_receive_it() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(5, 1))?;
        let gen2 = fleet.release("gen-2", &["web-01"])?;
        let manifest = fleet.write_manifest(&gen2, "release", Shape::Hosts)?;
        let started =
            fleet.start_rollout(&manifest, &["--waves", "tag:canary,100%", "--bake", "1s"])?;
        let id = started.rollout.id;
        let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
        let report = fleet.report(Some(id));

        match &done.rollout.phase {
            RolloutPhase::Halted(halted) => {
                assert_eq!((halted.wave, halted.failures), (0, 1), "{report}");
                assert!(halted.cause.starts_with("web-01 reverted"), "{report}");
            }
            other => panic!("not halted: {other:?}\n{report}"),
        }
        assert!(
            matches!(
                progress(&done, "web-01").state,
                HostState::Failed {
                    kind: FailureKind::Reverted,
                    ..
                }
            ),
            "{report}"
        );
        // The canary went back to generation 1 by itself.
        let canary = fleet.host("web-01")?;
        assert_eq!(
            canary.root().current().as_ref(),
            Some(canary.initial()),
            "{report}"
        );

        for id in ["web-02", "web-03", "web-04", "web-05"] {
            assert_eq!(
                progress(&done, id).state,
                HostState::Pending,
                "{id}\n{report}"
            );
            let detail = fleet.detail(id)?;
            assert_eq!(
                detail.desired.directive, None,
                "{id} was given a directive\n{report}"
            );
            assert_eq!(activations_of(&detail, gen2.of(id)), 0, "{id}\n{report}");
            let member = fleet.host(id)?;
            let log = member.root().command_log();
            assert_eq!(commands_mentioning(&log, gen2.of(id)), 0, "{id}: {log:?}");
            assert_eq!(member.root().current().as_ref(), Some(member.initial()));
        }

        // An operator (or a CI job) following the rollout is told, with a non-zero exit.
        let output = fleet
            .cp
            .command(&["rollout", "status", &id.to_string(), "--watch"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains("halted in wave 1: web-01 reverted"),
            "{stderr}"
        );
        // What happened to each host, said as it was: the canary's agent took it back, the
        // others were never given the release.
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("outcome: 1 failed and rolled back, 4 never reached"),
            "{stdout}"
        );
        let outcomes = done.rollout.outcomes();
        assert_eq!(
            outcomes.get(&HostOutcome::FailedRolledBack),
            Some(&1),
            "{report}"
        );
        assert_eq!(
            outcomes.get(&HostOutcome::NeverReached),
            Some(&4),
            "{report}"
        );
        Ok(())
    })
}
