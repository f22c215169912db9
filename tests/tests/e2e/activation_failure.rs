//! A switch that fails is rolled back, and the operator sees why: the end of its output.

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::{Phase, Reason, Report, SwitchVerdict};
use fleetnode_tests::{Harness, Health};

use crate::common::{reasons, run};

const OUTPUT: &str = "activating the configuration...\n\
    Job for nginx.service failed because the control process exited with error code.\n\
    error: activation of gen-2 failed (marker 7f3a)";

#[test]
fn a_failed_activation_is_rolled_back_and_its_output_reaches_the_operator() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        h.root().behaviour(
            &gen2,
            Behaviour::Fail {
                exit_code: 1,
                output: OUTPUT.to_owned(),
            },
        );

        let revision = h.set_target(&gen2, &["--soak", "3s"])?;
        let detail = h.wait_settled(revision, "reverted")?;
        let report = h.report(Some(&detail));

        match &detail.mirror.phase {
            Phase::Reverted(reverted) => {
                assert_eq!(reverted.to, gen1, "{report}");
                assert_eq!(reverted.abandoned, Some(gen2.clone()), "{report}");
                match &reverted.reason {
                    Reason::SwitchFailed {
                        exit_code,
                        output_tail,
                    } => {
                        assert_eq!(*exit_code, Some(1), "{report}");
                        assert!(output_tail.contains("marker 7f3a"), "{output_tail}");
                    }
                    other => panic!("reverted for {other}, not the failed switch\n{report}"),
                }
            }
            other => panic!("not reverted: {other:?}\n{report}"),
        }
        assert_eq!(
            reasons(&detail.recent_events),
            ["switch-failed", "switch-failed"]
        );

        // The failed switch's verdict, with its output, is in the host's recent events...
        let tail = detail
            .recent_events
            .iter()
            .find_map(|e| match &e.report {
                Report::SwitchEnded {
                    verdict: SwitchVerdict::Failed { reason },
                    ..
                } => Some(reason.clone()),
                _ => None,
            })
            .unwrap();
        match tail {
            Reason::SwitchFailed { output_tail, .. } => {
                assert!(
                    output_tail.contains("Job for nginx.service failed"),
                    "{output_tail}"
                );
                assert!(output_tail.contains("marker 7f3a"), "{output_tail}");
            }
            other => panic!("the switch failed for {other}\n{report}"),
        }
        // ...and in what `fleetnode-cp host` prints for a human.
        let shown = h.cp(&["host", h.host()])?;
        assert!(shown.stdout.contains("marker 7f3a"), "{}", shown.stdout);

        let root = h.root();
        assert_eq!(root.current(), Some(gen1.clone()), "{report}");
        assert_eq!(root.boot_entry(), Some(gen1.clone()), "{report}");
        Ok(())
    })
}
