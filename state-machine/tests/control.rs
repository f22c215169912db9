//! The control plane's answers and hold, and the agent's own restart into a new version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleetnode_state_machine::*;
use support::*;

fn answer(sim: &Sim, paused: bool, directive: Option<Directive>) -> Event {
    Event::DesiredObserved(DesiredState {
        revision: Revision(sim.revision),
        directive,
        paused,
    })
}

#[test]
fn a_control_plane_hold_pauses_before_the_directive_and_a_release_resumes_after_it() {
    let mut sim = Sim::new();
    sim.revision += 1;
    let first = Directive {
        revision: Revision(sim.revision),
        kind: DirectiveKind::Activate {
            target: closure(1),
            mode: None,
            health: HealthOverrides::default(),
        },
    };
    let out = sim.step(answer(&sim, true, Some(first.clone())));
    assert_eq!(reports(&out), vec!["paused", "directive-recorded"]);
    assert!(commands(&out).is_empty(), "nothing starts while held");
    // The same answer again changes nothing.
    assert!(sim.step(answer(&sim, true, Some(first.clone()))).is_empty());
    let out = sim.step(answer(&sim, false, Some(first)));
    assert_eq!(reports(&out), vec!["resumed", "work-started"]);
    assert_eq!(
        commands(&out),
        vec![Command::Realise { target: closure(1) }]
    );
}

#[test]
fn a_local_pause_holds_until_the_control_plane_changes_its_own_flag() {
    let mut sim = Sim::new();
    sim.step(Event::PauseRequested);
    // The control plane's flag is still "not paused": repeating it does not resume.
    assert!(sim.step(answer(&sim, false, None)).is_empty());
    assert!(sim.state.host.paused);
    // It pauses, then releases: the release resumes the host.
    sim.step(answer(&sim, true, None));
    let out = sim.step(answer(&sim, false, None));
    assert_eq!(reports(&out), vec!["resumed"]);
    assert!(!sim.state.host.paused);
}

#[test]
fn after_a_start_the_first_answer_sets_the_hold() {
    let mut sim = Sim::new();
    sim.step(Event::PauseRequested);
    sim.restart(committed_on(&closure(0)), false, None);
    assert!(sim.state.host.paused, "the hold survives the restart");
    let out = sim.step(answer(&sim, false, None));
    assert_eq!(
        reports(&out),
        vec!["resumed"],
        "the control plane's flag wins"
    );
}

#[test]
fn a_stale_directive_is_refused_but_a_hold_it_comes_with_still_applies() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.activate(2);
    let older = Directive {
        revision: Revision(1),
        ..sim.state.host.desired.clone().unwrap()
    };
    let out = sim.step(answer(&sim, true, Some(older.clone())));
    assert_eq!(reports(&out), vec!["paused"]);
    assert_eq!(
        sim.state.host.desired.as_ref().unwrap().revision,
        Revision(2)
    );
    // The next answer repeats it without a change of the flag: now it is refused whole.
    let err = sim.try_step(answer(&sim, true, Some(older))).unwrap_err();
    assert!(
        matches!(
            err,
            TransitionError::Peer(PeerFault::StaleDirective {
                got: Revision(1),
                recorded: Revision(2)
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_convergence_asks_whether_the_committed_generation_carries_a_new_agent() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    sim.all_pass();
    let out = sim.advance(SOAK);
    assert!(!out.commands.contains(&Command::CheckAgentUpgrade));
    let out = sim.switch_done(committed_on(&closure(1)));
    assert_eq!(sim.phase(), "converged");
    assert!(out.commands.contains(&Command::CheckAgentUpgrade));

    let out = sim.step(Event::AgentUpgradeChecked { upgrade: None });
    assert!(out.is_empty(), "the same agent: nothing to do");
    let out = sim.step(Event::AgentUpgradeChecked {
        upgrade: Some("a new fleetnode-agent.service".into()),
    });
    assert_eq!(
        out.commands,
        vec![Command::Restart {
            reason: "a new fleetnode-agent.service".into()
        }]
    );
    assert!(out.events.is_empty(), "a restart is no fact of the host");
}

#[test]
fn no_restart_into_a_new_agent_while_new_work_runs() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    sim.activate(2);
    let out = sim.step(Event::AgentUpgradeChecked {
        upgrade: Some("a new agent binary".into()),
    });
    assert!(out.is_empty());
}

fn resync(sim: &Sim, log_end: u64) -> Result<Step, TransitionError> {
    let cause = ResyncCause::ControlPlaneLog { log_end };
    step(
        &sim.state,
        Event::ResyncRequested { log_end, cause },
        Timestamp(sim.now),
    )
}

#[test]
fn a_resync_reports_the_host_above_both_logs_and_changes_nothing_else() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let seq = sim.state.host.seq;
    for (log_end, expected) in [(2, seq + 1), (seq, seq + 1), (seq + 100, seq + 101)] {
        let out = resync(&sim, log_end).unwrap();
        assert!(out.commands.is_empty());
        assert_eq!(out.events.len(), 1);
        let snapshot = &out.events[0];
        assert_eq!(snapshot.seq, expected, "log end {log_end}");
        let Report::Snapshot { host, probes, .. } = &snapshot.report else {
            panic!("not a snapshot: {snapshot:?}");
        };
        // The state is what it was but for the seq; the snapshot carries it.
        let mut unchanged = out.state.clone();
        unchanged.host.seq = seq;
        assert_eq!(unchanged.host, sim.state.host);
        assert_eq!(host.phase, sim.state.host.phase);
        assert_eq!(host.known_good, sim.state.host.known_good);
        assert_eq!(probes, &sim.state.probes);
        assert_eq!(out.state.host.seq, expected);
    }
}

#[test]
fn an_implausible_log_end_is_the_control_planes_fault() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let refused = resync(&sim, u64::MAX).unwrap_err();
    assert!(
        matches!(
            refused,
            TransitionError::Peer(PeerFault::ImplausibleLogEnd { .. })
        ),
        "{refused:?}"
    );
}
