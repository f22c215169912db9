//! An operator's rollback: the host goes back to the generation before the latest deployment,
//! live and as the boot default.

use fleetnode_state_machine::{Phase, Reason};
use fleetnode_tests::{Harness, Health};

use crate::common::{replay, run};

#[test]
fn an_operator_rollback_restores_the_previous_generation() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let deployed = h.set_target(&gen2, &["--soak", "3s"])?;
        h.wait_settled(deployed, "converged")?;
        assert_eq!(h.root().boot_entry(), Some(gen2.clone()));

        let rollback = h.rollback()?;
        assert!(rollback > deployed);
        let detail = h.wait_settled(rollback, "reverted")?;
        let report = h.report(Some(&detail));
        match &detail.mirror.phase {
            Phase::Reverted(reverted) => {
                assert_eq!(reverted.to, gen1, "{report}");
                assert_eq!(reverted.reason, Reason::RequestedByControlPlane, "{report}");
            }
            other => panic!("not reverted: {other:?}\n{report}"),
        }

        let root = h.root();
        assert_eq!(root.current(), Some(gen1.clone()), "{report}");
        assert_eq!(root.profile(), Some(gen1.clone()), "{report}");
        assert_eq!(root.boot_entry(), Some(gen1.clone()), "{report}");
        assert_eq!(detail.row.current, Some(gen1.clone()));
        // Both generations stay known good: gen-2 was healthy, the operator just went back.
        assert_eq!(detail.mirror.known_good.len(), 2, "{report}");
        assert!(detail.mirror.known_good.contains(&gen2), "{report}");
        assert_eq!(replay(&detail.recent_events), detail.mirror, "{report}");

        let status = h.agent_status()?;
        assert_eq!(status["phase"], "reverted", "{status:#}");
        assert_eq!(status["system"]["current"], gen1.as_str(), "{status:#}");
        Ok(())
    })
}
