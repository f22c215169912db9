//! The control plane goes down in the middle of a deployment: the agent carries on, queues its
//! events on disk, and delivers every one of them when the control plane is back.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::Phase;
use fleetnode_tests::{Harness, Health};

use crate::common::{assert_gap_free, names, replay, run};

#[test]
fn events_queued_while_the_control_plane_is_down_are_all_delivered() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        // A slow switch keeps the work going while the control plane stops.
        h.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(6)));

        let revision = h.set_target(&gen2, &["--soak", "3s"])?;
        h.wait_for_agent("the directive received", |status| {
            status["desired_revision"] == revision.0
        })?;
        h.cp.stop()?;
        assert!(h.detail().is_err(), "the control plane still answers");
        let at_stop = h.agent_status()?;
        assert_eq!(
            at_stop["phase"], "activating",
            "the scenario needs the switch still running when the control plane is down"
        );

        // The agent finishes the work on its own. The built-in control-plane probe fails
        // while the server is down, so the soak may fail: either outcome is a decision the
        // agent must be able to report later.
        let down = h.wait_for_agent("the work finished while the control plane is down", |s| {
            s["handled_revision"] == revision.0
                && (s["phase"] == "converged" || s["phase"] == "reverted")
        })?;
        let phase = down["phase"].as_str().unwrap().to_owned();
        let last_seq = down["last_seq"].as_u64().unwrap();
        eprintln!("while the control plane was down the agent came to rest {phase}: {down:#}");
        assert!(
            last_seq > at_stop["last_seq"].as_u64().unwrap(),
            "no event while the control plane is down: {down:#}"
        );
        assert!(
            down["queue"]["depth"].as_u64().unwrap() > 0,
            "nothing queued while the control plane is down: {down:#}"
        );
        let expected_current = if phase == "converged" { &gen2 } else { &gen1 };
        assert_eq!(h.root().current().as_ref(), Some(expected_current));

        // Back on the same port and store: every queued event arrives, in order.
        h.cp.start_again()?;
        let detail = h.wait_for("the mirror to catch up with the agent", |d| {
            d.mirror.seq >= last_seq && d.row.phase.name() == phase
        })?;
        let report = h.report(Some(&detail));
        let events = &detail.recent_events;
        assert_gap_free(events);
        assert!(events.len() as u64 >= last_seq, "{report}");
        let story = names(events);
        assert!(story.contains(&"work-started"), "{report}");
        assert!(story.contains(&phase.as_str()), "{report}");
        assert_eq!(replay(events), detail.mirror, "{report}");
        assert_eq!(detail.divergence, None, "{report}");
        match (&detail.mirror.phase, phase.as_str()) {
            (Phase::Converged(c), "converged") => assert_eq!(c.target, gen2),
            (Phase::Reverted(r), "reverted") => assert_eq!(r.to, gen1),
            (other, _) => panic!("mirror {other:?}, agent {phase}\n{report}"),
        }

        // The agent's queue drains once everything is acknowledged.
        h.wait_for_agent("the queue to drain", |s| s["queue"]["depth"] == 0)?;
        Ok(())
    })
}
