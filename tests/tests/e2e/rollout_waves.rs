//! A healthy release from a Cachix Deploy manifest goes through three waves: the canary, then
//! more, then everyone, each wave only after the previous one converged and baked.

use fleetnode_tests::{Fleet, FleetOptions, Shape};
use fleetnode_wire::{HostState, RolloutPhase, Timestamp};

use crate::common::run;
use crate::rollout_common::{activations_of, progress};

#[test]
fn a_healthy_release_goes_through_three_waves() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(5, 1))?;
        let gen2 = fleet.release("gen-2", &[])?;
        let manifest = fleet.write_manifest(&gen2, "deploy", Shape::CachixDeploy)?;
        let started = fleet.start_rollout(
            &manifest,
            &["--waves", "tag:canary,60%,100%", "--bake", "1s"],
        )?;
        let id = started.rollout.id;
        let waves: Vec<Vec<String>> = started
            .rollout
            .waves
            .iter()
            .map(|w| w.hosts.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            waves,
            [
                vec!["web-01"],
                vec!["web-02", "web-03"],
                vec!["web-04", "web-05"]
            ]
        );

        let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
        let report = fleet.report(Some(id));
        assert!(
            matches!(done.rollout.phase, RolloutPhase::Completed(_)),
            "{report}"
        );
        assert_eq!(done.rollout.counts().converged, 5, "{report}");

        // Every wave was given the release only after the previous one converged and baked:
        // read from the rollout's own record of when each host converged and was assigned.
        let bake = done.rollout.bake_ms;
        let mut previous_rest: Option<Timestamp> = None;
        for wave in &done.rollout.waves {
            let mut rest = None;
            for host in &wave.hosts {
                let HostState::Converged {
                    assigned_at, at, ..
                } = progress(&done, host.as_str()).state
                else {
                    panic!("{host} did not converge\n{report}");
                };
                if let Some(before) = previous_rest {
                    assert!(
                        assigned_at >= before.plus(bake),
                        "{host} was given the release before the previous wave baked\n{report}"
                    );
                }
                rest = rest.max(Some(at));
            }
            previous_rest = rest;
        }

        // Each host runs and boots its own closure of the release, given to it once.
        for id in fleet.ids() {
            let member = fleet.host(&id)?;
            let closure = gen2.of(&id);
            assert_eq!(
                member.root().current().as_ref(),
                Some(closure),
                "{id}\n{report}"
            );
            assert_eq!(
                member.root().boot_entry().as_ref(),
                Some(closure),
                "{id}\n{report}"
            );
            let detail = fleet.detail(&id)?;
            assert_eq!(activations_of(&detail, closure), 1, "{id}\n{report}");
            assert_eq!(
                Some(detail.desired.revision),
                progress(&done, &id).state.revision(),
                "{id}\n{report}"
            );
        }
        Ok(())
    })
}
