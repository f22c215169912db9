//! `--on-halt rollback`: when a host of the second wave fails, the rollout halts and sends every
//! host it moved back to the generation it ran before; the last wave never receives the release.

use fleetnode_tests::{Fleet, FleetOptions, Shape};
use fleetnode_wire::{HostRollback, HostState, RollbackCause, RolloutPhase};

use crate::common::run;
use crate::rollout_common::{activations_of, progress};

#[test]
fn a_halt_with_rollback_sends_the_moved_hosts_back() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(5, 0))?;
        let gen2 = fleet.release("gen-2", &["web-03"])?;
        let manifest = fleet.write_manifest(&gen2, "release", Shape::Hosts)?;
        let started = fleet.start_rollout(
            &manifest,
            &[
                "--waves",
                "1,3,100%",
                "--bake",
                "1s",
                "--on-halt",
                "rollback",
            ],
        )?;
        let id = started.rollout.id;
        let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
        let report = fleet.report(Some(id));

        assert!(
            matches!(done.rollout.phase, RolloutPhase::Halted(_)),
            "{report}"
        );
        assert_eq!(
            done.rollout.rollback.map(|r| r.by),
            Some(RollbackCause::Halt),
            "{report}"
        );
        for id in ["web-01", "web-02"] {
            assert!(
                matches!(
                    progress(&done, id).rollback,
                    Some(HostRollback::Done { .. })
                ),
                "{id}\n{report}"
            );
        }
        assert!(
            matches!(
                progress(&done, "web-03").rollback,
                Some(HostRollback::Skipped { .. })
            ),
            "web-03 went back by itself\n{report}"
        );
        // Every host that got the release runs and boots generation 1 again.
        for id in ["web-01", "web-02", "web-03"] {
            let member = fleet.host(id)?;
            assert_eq!(
                member.root().current().as_ref(),
                Some(member.initial()),
                "{id}\n{report}"
            );
            assert_eq!(
                member.root().boot_entry().as_ref(),
                Some(member.initial()),
                "{id}\n{report}"
            );
        }
        // The last wave never received it.
        for id in ["web-04", "web-05"] {
            assert_eq!(
                progress(&done, id).state,
                HostState::Pending,
                "{id}\n{report}"
            );
            let detail = fleet.detail(id)?;
            assert_eq!(detail.desired.directive, None, "{id}\n{report}");
            assert_eq!(activations_of(&detail, gen2.of(id)), 0, "{id}\n{report}");
        }
        Ok(())
    })
}
