//! A host whose agent is down when its wave starts counts as failed once the offline deadline
//! passes without a heartbeat, against the budget: the rollout halts.

use fleetnode_tests::{Fleet, FleetOptions, Shape};
use fleetnode_wire::{FailureKind, HostState, RolloutPhase};

use crate::common::run;
use crate::rollout_common::progress;

#[test]
fn an_agent_offline_past_the_deadline_counts_against_the_budget() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(5, 0))?;
        let gen2 = fleet.release("gen-2", &[])?;
        fleet.host_mut("web-04")?.agent.stop()?;
        let manifest = fleet.write_manifest(&gen2, "release", Shape::Hosts)?;
        let started = fleet.start_rollout(
            &manifest,
            &[
                "--waves",
                "1,100%",
                "--bake",
                "1s",
                "--offline-deadline",
                "3s",
            ],
        )?;
        let id = started.rollout.id;
        let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
        let report = fleet.report(Some(id));

        match &done.rollout.phase {
            RolloutPhase::Halted(halted) => {
                assert_eq!((halted.wave, halted.failures), (1, 1), "{report}");
                assert!(halted.cause.starts_with("web-04 offline"), "{report}");
            }
            other => panic!("not halted: {other:?}\n{report}"),
        }
        assert!(
            matches!(
                progress(&done, "web-04").state,
                HostState::Failed {
                    kind: FailureKind::Offline,
                    ..
                }
            ),
            "{report}"
        );
        // The hosts of the wave that were up carried on and converged.
        for id in ["web-01", "web-02", "web-03", "web-05"] {
            assert!(
                matches!(progress(&done, id).state, HostState::Converged { .. }),
                "{id}\n{report}"
            );
        }
        let web04 = fleet.host("web-04")?;
        assert_eq!(web04.root().current().as_ref(), Some(web04.initial()));
        Ok(())
    })
}
