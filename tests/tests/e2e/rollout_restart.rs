//! The control plane is stopped and started again in the middle of a wave: the rollout resumes
//! exactly where it was, no host is given the release twice, and it completes.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::PhaseKind;
use fleetnode_tests::{Fleet, FleetOptions, Shape};
use fleetnode_wire::{HostState, RolloutPhase};

use crate::common::run;
use crate::rollout_common::{activations_of, progress};

#[test]
fn a_control_plane_restart_mid_wave_loses_nothing() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(5, 0))?;
        let gen2 = fleet.release("gen-2", &[])?;
        // The second wave's switches are slow, so the wave is still running when the
        // control plane stops.
        for id in ["web-02", "web-03", "web-04", "web-05"] {
            let member = fleet.host(id)?;
            member
                .root()
                .behaviour(gen2.of(id), Behaviour::SucceedAfter(Duration::from_secs(5)));
        }
        let manifest = fleet.write_manifest(&gen2, "release", Shape::Hosts)?;
        let started = fleet.start_rollout(&manifest, &["--waves", "1,100%", "--bake", "1s"])?;
        let id = started.rollout.id;
        let before = fleet.wait_rollout(id, "the second wave to be in flight", |s| {
            s.rollout.wave() == 1
                && s.hosts
                    .iter()
                    .filter(|h| h.phase == PhaseKind::Activating)
                    .count()
                    == 4
        })?;

        fleet.cp.stop()?;
        assert!(
            fleet.rollout(id).is_err(),
            "the control plane still answers"
        );
        fleet.cp.start_again()?;

        let after = fleet.rollout(id)?;
        let report = fleet.report(Some(id));
        assert_eq!(after.rollout.wave(), 1, "{report}");
        for (host, was) in &before.rollout.hosts {
            let is = &after.rollout.hosts[host];
            assert_eq!(
                is.state.revision(),
                was.state.revision(),
                "{host}\n{report}"
            );
            assert_eq!(is.wave, was.wave, "{host}\n{report}");
        }

        let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
        let report = fleet.report(Some(id));
        assert!(
            matches!(done.rollout.phase, RolloutPhase::Completed(_)),
            "{report}"
        );
        for id in fleet.ids() {
            assert!(
                matches!(progress(&done, &id).state, HostState::Converged { .. }),
                "{id}\n{report}"
            );
            let detail = fleet.detail(&id)?;
            assert_eq!(activations_of(&detail, gen2.of(&id)), 1, "{id}\n{report}");
            assert_eq!(
                Some(detail.desired.revision),
                before.rollout.hosts[&detail.row.id].state.revision(),
                "{id} got another revision after the restart\n{report}"
            );
            assert_eq!(
                fleet.host(&id)?.root().current().as_ref(),
                Some(gen2.of(&id))
            );
        }
        Ok(())
    })
}
