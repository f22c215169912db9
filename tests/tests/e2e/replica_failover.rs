//! An agent with several control-plane addresses: it moves past an address that does not
//! answer or answers 503, converges through the one that serves, and when that one goes away in
//! the middle of a deployment it moves on to the next and delivers everything there.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::Phase;
use fleetnode_tests::Health;
use fleetnode_tests::replicas::{Address, Replicas};

use crate::common::{assert_gap_free, names, replay, run};

/// The agent's `fleetnode_agent_control_plane_moves_total`.
fn moves(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("fleetnode_agent_control_plane_moves_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no moves counter in the metrics:\n{metrics}"))
}

/// The agent's log lines that record a move.
fn move_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains("moving to the next address"))
        .collect()
}

#[test]
fn a_dead_address_and_one_answering_503_are_passed_over() {
    run(|| {
        // Server 1 stands by on the store server 0 holds: it answers every request 503.
        let mut r = Replicas::start(2, &[Address::Dead, Address::Server(1), Address::Server(0)])?;
        let [dead, standby, serving] = r.urls() else {
            panic!("three addresses expected: {:?}", r.urls());
        };
        let (dead, standby, serving) = (dead.clone(), standby.clone(), serving.clone());
        assert!(
            r.servers[1].cli(&["hosts"]).is_err(),
            "the standby serves, so nothing here answers 503"
        );

        let gen2 = r.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let revision = r.set_target(&gen2, &["--soak", "2s"])?;
        let detail = r.wait_for("the host converged on generation 2", |d| {
            d.mirror.handled == Some(revision) && d.row.phase.name() == "converged"
        })?;
        assert_eq!(r.root().current().as_ref(), Some(&gen2), "{}", r.report());
        assert_gap_free(&detail.recent_events);
        assert_eq!(replay(&detail.recent_events), detail.mirror);

        // Two moves (dead to standby, standby to serving), each logged once with both
        // addresses; the agent stayed on the serving address since.
        let log = std::fs::read_to_string(r.agent.log()).unwrap();
        let lines = move_lines(&log);
        assert_eq!(lines.len(), 2, "{lines:#?}\n{}", r.report());
        assert!(
            lines[0].contains(&format!("from={dead}"))
                && lines[0].contains(&format!("to={standby}")),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(&format!("from={standby}"))
                && lines[1].contains(&format!("to={serving}"))
                && lines[1].contains("503"),
            "{}",
            lines[1]
        );
        let metrics = r.agent.metrics()?;
        assert_eq!(moves(&metrics), 2, "{metrics}");
        assert!(
            metrics.contains(&format!(
                "fleetnode_agent_control_plane_current{{url=\"{serving}\"}} 1"
            )),
            "{metrics}"
        );
        Ok(())
    })
}

#[test]
fn the_serving_control_plane_goes_away_mid_deployment_and_nothing_is_lost() {
    run(|| {
        let mut r = Replicas::start(2, &[Address::Server(0), Address::Server(1)])?;
        let gen1 = r.root().current().expect("generation 1 is current");
        let gen2 = r.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        // A slow switch keeps the deployment going while the serving control plane dies.
        r.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(5)));
        let revision = r.set_target(&gen2, &["--soak", "2s"])?;
        r.wait_for_agent("the directive received", |status| {
            status["desired_revision"] == revision.0 && status["phase"] == "activating"
        })?;

        // A crash, not a shutdown: no answer to anything in flight. The standby takes the
        // store over and serves at its own address.
        r.servers[0].kill()?;
        let detail = r.wait_for("the host converged, reported through server 1", |d| {
            d.mirror.handled == Some(revision) && d.mirror.phase.is_at_rest()
        })?;
        let report = r.report();
        let events = &detail.recent_events;
        assert_gap_free(events);
        assert_eq!(replay(events), detail.mirror, "{report}");
        assert_eq!(detail.divergence, None, "{report}");
        let story = names(events);
        assert!(story.contains(&"work-started"), "{story:?}\n{report}");
        match &detail.mirror.phase {
            Phase::Converged(c) => assert_eq!(c.target, gen2, "{report}"),
            other => panic!("mirror {other:?} (generation 1 was {gen1})\n{report}"),
        }

        // Every event the agent recorded reached server 1, and its queue drained.
        let status = r.wait_for_agent("the queue to drain", |s| s["queue"]["depth"] == 0)?;
        let recorded = status["last_seq"].as_u64().unwrap();
        let after = r.detail()?;
        assert!(after.mirror.seq >= recorded, "{status:#}\n{report}");
        // The first move went from the dead address to server 1. Server 1 may still have
        // answered 503 for a moment while it took the store over, sending the agent round the
        // list again, so later moves may follow; it ends on server 1.
        let log = std::fs::read_to_string(r.agent.log()).unwrap();
        let lines = move_lines(&log);
        assert!(!lines.is_empty(), "no move logged\n{report}");
        assert!(
            lines[0].contains(&format!("from={}", r.urls()[0]))
                && lines[0].contains(&format!("to={}", r.urls()[1])),
            "{}",
            lines[0]
        );
        let metrics = r.agent.metrics()?;
        assert_eq!(moves(&metrics), lines.len() as u64, "{metrics}");
        assert!(
            metrics.contains(&format!(
                "fleetnode_agent_control_plane_current{{url=\"{}\"}} 1",
                r.urls()[1]
            )),
            "{metrics}"
        );
        Ok(())
    })
}
