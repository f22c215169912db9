//! One scenario per failure: activation outcomes, health, failure policy, control-plane
//! rollback, pause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleetnode_state_machine::*;
use support::*;

fn activating(sim: &mut Sim, n: usize) {
    sim.activate(n);
    sim.realised(n);
}

fn soaking(sim: &mut Sim, n: usize) {
    activating(sim, n);
    let profile = sim.system().profile.unwrap();
    sim.switch_done(live(&closure(n), &profile));
    assert_eq!(sim.phase(), "soaking");
}

fn reverted_reason(sim: &Sim) -> Reason {
    match &sim.state.host.phase {
        Phase::Reverted(r) => r.reason.clone(),
        other => panic!("expected reverted, got {other:?}"),
    }
}

#[test]
fn failed_activation_rolls_back_with_the_known_good_generations_own_script() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    let effects = sim.switch_failed(1, "error: unit foo failed", live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "rolling-back");
    let (_, job) = run_switch(&effects);
    assert_eq!(
        job,
        SwitchJob {
            purpose: SwitchPurpose::Rollback,
            closure: closure(0),
            action: SwitchAction::Test,
            set_profile: false,
        },
        "test-then-commit never moved the profile, so the rollback does not either"
    );
    let effects = sim.switch_done(committed_on(&closure(0)));
    assert_eq!(reports(&effects), vec!["switch-ended", "reverted"]);
    let reason = reverted_reason(&sim);
    assert_eq!(
        reason,
        Reason::SwitchFailed {
            exit_code: Some(1),
            output_tail: "error: unit foo failed".into()
        }
    );
    assert_eq!(
        sim.state.host.quarantine.get(&closure(1)),
        Some(&Revision(1))
    );
    assert!(
        sim.advance(1).is_empty(),
        "the same revision is not re-activated"
    );
}

#[test]
fn completed_switch_that_left_the_old_system_is_a_verification_failure() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    let effects = sim.switch_done(committed_on(&closure(0)));
    let failed = effects.events.iter().any(|ev| {
        matches!(&ev.report,
            Report::SwitchEnded { verdict: SwitchVerdict::Failed { reason: Reason::VerificationFailed { expected, observed } }, .. }
                if *expected == closure(1) && *observed == Some(closure(0)))
    });
    assert!(failed, "{effects:?}");
    assert_eq!(sim.phase(), "rolling-back");
}

#[test]
fn activation_timeout_aborts_the_switch_then_rolls_back_and_ignores_its_late_result() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    let stuck = sim.switch();
    assert!(sim.advance(ACTIVATION_TIMEOUT - 1).is_empty());
    let effects = sim.advance(1);
    let commands = commands(&effects);
    assert_eq!(commands[0], Command::AbortSwitch { switch: stuck });
    assert!(
        matches!(&commands[1], Command::RunSwitch { job, .. } if job.purpose == SwitchPurpose::Rollback)
    );
    assert_eq!(commands.len(), 2);
    let late = sim.try_step(Event::SwitchFinished {
        switch: stuck,
        end: exited(0, ""),
        system: live(&closure(1), &closure(0)),
    });
    assert!(matches!(
        late,
        Err(TransitionError::Stale(StaleInput::UnknownSwitch { .. }))
    ));
    sim.switch_done(committed_on(&closure(0)));
    assert_eq!(
        reverted_reason(&sim),
        Reason::SwitchTimedOut {
            after: Millis(ACTIVATION_TIMEOUT)
        }
    );
}

#[test]
fn sustained_probe_failure_rolls_back_to_the_previous_generation() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.probe(ProbeId::control_plane(), true);
    sim.probe(web(), false);
    let effects = sim.advance(SUSTAINED);
    let (_, job) = run_switch(&effects);
    assert_eq!(job.closure, closure(0));
    sim.switch_done(committed_on(&closure(0)));
    assert_eq!(
        reverted_reason(&sim),
        Reason::ProbeFailed {
            probe: web(),
            failing_for: Millis(SUSTAINED)
        }
    );
}

#[test]
fn losing_the_control_plane_rolls_the_generation_back() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.probe(web(), true);
    sim.probe(ProbeId::control_plane(), false);
    sim.advance(SUSTAINED);
    assert_eq!(sim.phase(), "rolling-back");
}

#[test]
fn halt_policy_leaves_the_host_as_it_is() {
    let mut sim = Sim::new();
    sim.activate_with(
        1,
        None,
        HealthOverrides {
            on_failure: Some(FailurePolicy::Halt),
            ..Default::default()
        },
    );
    sim.realised(1);
    let effects = sim.switch_failed(2, "boom", live(&closure(1), &closure(0)));
    assert!(commands(&effects).is_empty());
    match &sim.state.host.phase {
        Phase::Failed(f) => {
            assert!(f.halted);
            assert_eq!(f.target, Some(closure(1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_a_known_good_generation_the_host_is_left_as_it_is() {
    // First start on a host whose live system is not what it boots: nothing is known good.
    let system = live(&closure(0), &closure(3));
    let mut sim = Sim::starting_on(system, policy());
    assert!(sim.state.host.known_good.is_empty());
    activating(&mut sim, 1);
    let effects = sim.switch_failed(1, "x", live(&closure(1), &closure(3)));
    assert!(
        commands(&effects).is_empty(),
        "never roll back to an unknown closure"
    );
    match &sim.state.host.phase {
        Phase::Failed(f) => assert_eq!(f.reason.code(), "no-known-good"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_rollback_marks_the_host_failed() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    sim.switch_failed(1, "x", live(&closure(1), &closure(0)));
    sim.switch_failed(1, "rollback broke", live(&closure(1), &closure(0)));
    match &sim.state.host.phase {
        Phase::Failed(f) => assert_eq!(f.reason.code(), "rollback-failed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rollback_timeout_marks_the_host_failed() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    sim.switch_failed(1, "x", live(&closure(1), &closure(0)));
    let stuck = sim.switch();
    let effects = sim.advance(ROLLBACK_TIMEOUT);
    assert_eq!(
        commands(&effects),
        vec![Command::AbortSwitch { switch: stuck }]
    );
    assert_eq!(sim.phase(), "failed");
}

#[test]
fn commit_failure_rolls_back_and_restores_the_profile() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.all_pass();
    sim.advance(SOAK);
    assert_eq!(sim.phase(), "committing");
    let effects = sim.switch_failed(1, "bootloader", live(&closure(1), &closure(1)));
    let (_, job) = run_switch(&effects);
    assert_eq!(job.closure, closure(0));
    assert_eq!((job.action, job.set_profile), (SwitchAction::Switch, true));
}

#[test]
fn control_plane_rollback_from_converged_goes_to_the_previous_generation() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let effects = sim.rollback(None);
    let (_, job) = run_switch(&effects);
    assert_eq!(
        job,
        SwitchJob {
            purpose: SwitchPurpose::Rollback,
            closure: closure(0),
            action: SwitchAction::Switch,
            set_profile: true,
        }
    );
    sim.switch_done(committed_on(&closure(0)));
    assert_eq!(reverted_reason(&sim), Reason::RequestedByControlPlane);
    assert_eq!(sim.state.host.handled, Some(Revision(2)));
}

#[test]
fn control_plane_rollback_to_a_named_generation() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    sim.converge_on(2);
    let effects = sim.rollback(Some(0));
    assert_eq!(run_switch(&effects).1.closure, closure(0));
}

#[test]
fn control_plane_rollback_from_soaking_and_from_failed_is_honoured() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    let effects = sim.rollback(None);
    assert_eq!(run_switch(&effects).1.closure, closure(0));
    assert_eq!(
        sim.state.host.quarantine.get(&closure(1)),
        Some(&Revision(1))
    );

    let mut sim = Sim::new();
    sim.activate_with(
        1,
        None,
        HealthOverrides {
            on_failure: Some(FailurePolicy::Halt),
            ..Default::default()
        },
    );
    sim.realised(1);
    sim.switch_failed(1, "x", live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "failed");
    let effects = sim.rollback(None);
    assert_eq!(run_switch(&effects).1.closure, closure(0));
}

#[test]
fn control_plane_rollback_waits_for_the_running_step() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    let effects = sim.rollback(None);
    assert!(
        commands(&effects).is_empty(),
        "the activation is not interrupted"
    );
    assert_eq!(sim.phase(), "activating");
    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(run_switch(&effects).1.closure, closure(0));

    let mut sim = Sim::new();
    sim.activate(1);
    let effects = sim.rollback(None);
    assert!(commands(&effects).is_empty());
    assert_eq!(sim.phase(), "realising");
}

#[test]
fn control_plane_rollback_to_an_unknown_closure_is_rejected_with_a_reason() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let effects = sim.rollback(Some(3));
    assert!(commands(&effects).is_empty());
    assert_eq!(sim.phase(), "converged");
    let rejected = effects.events.iter().find_map(|ev| match &ev.report {
        Report::RollbackRejected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    let reason = rejected.expect("a rejection is reported");
    assert_eq!(reason, RejectReason::UnknownGeneration { to: closure(3) });
    assert!(reason.to_string().contains("not a known-good generation"));
}

#[test]
fn control_plane_rollback_with_nothing_to_go_back_to_is_rejected() {
    let mut sim = Sim::new();
    let effects = sim.rollback(None);
    assert!(commands(&effects).is_empty());
    assert!(reports(&effects).contains(&"rollback-rejected"));
}

#[test]
fn rollback_to_the_running_generation_changes_nothing() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let before = sim.state.host.phase.clone();
    let effects = sim.rollback(Some(1));
    assert!(commands(&effects).is_empty());
    assert_eq!(
        reports(&effects),
        vec!["directive-recorded", "rollback-rejected"]
    );
    assert_eq!(sim.state.host.phase, before, "the phase is kept");
    assert_eq!(
        rejection(&effects),
        RejectReason::AlreadyInPlace { to: closure(1) }
    );
}

fn rejection(effects: &Out) -> RejectReason {
    effects
        .events
        .iter()
        .find_map(|ev| match &ev.report {
            Report::RollbackRejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a rejection is reported")
}

#[test]
fn rollback_while_deferred_only_restores_the_boot_entry() {
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Boot), HealthOverrides::default());
    sim.realised(1);
    let mut booted = committed_on(&closure(0));
    booted.profile = Some(closure(1));
    sim.switch_done(booted);
    assert_eq!(sim.phase(), "deferred");
    let effects = sim.rollback(None);
    let (_, job) = run_switch(&effects);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Boot, true));
    assert_eq!(job.closure, closure(0));
}

#[test]
fn pause_records_directives_and_starts_nothing_until_resumed() {
    let mut sim = Sim::new();
    sim.step(Event::PauseRequested);
    assert!(sim.state.host.paused);
    assert!(
        sim.step(Event::PauseRequested).is_empty(),
        "pausing twice is a no-op"
    );
    let effects = sim.activate(1);
    assert!(commands(&effects).is_empty());
    assert_eq!(sim.phase(), "idle");
    assert_eq!(
        sim.state.host.desired.as_ref().unwrap().revision,
        Revision(1)
    );
    let effects = sim.step(Event::ResumeRequested);
    assert_eq!(
        commands(&effects),
        vec![Command::Realise { target: closure(1) }]
    );
    assert!(sim.step(Event::ResumeRequested).is_empty());
}

#[test]
fn pause_does_not_stop_work_in_flight() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.step(Event::PauseRequested);
    sim.all_pass();
    sim.advance(SOAK);
    assert_eq!(sim.phase(), "committing");
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.step(Event::PauseRequested);
    let effects = sim.activate(2);
    assert!(commands(&effects).is_empty(), "no new work while paused");
    assert_eq!(sim.phase(), "soaking");
}

#[test]
fn rollback_without_a_target_undoes_the_latest_deployment_only_once() {
    // The activation fails and rolls itself back while a rollback directive waits: the host
    // is already where the operator wanted it, so it does not go back any further.
    let mut sim = Sim::new();
    sim.converge_on(1);
    activating(&mut sim, 2);
    sim.rollback(None);
    sim.switch_failed(1, "x", live(&closure(2), &closure(1)));
    let effects = sim.switch_done(committed_on(&closure(1)));
    // The revert and its reason stay: the rollback found nothing left to undo.
    let Phase::Reverted(reverted) = &sim.state.host.phase else {
        panic!("expected reverted, got {:?}", sim.state.host.phase);
    };
    assert_eq!(reverted.to, closure(1));
    assert!(
        matches!(reverted.reason, Reason::SwitchFailed { .. }),
        "{:?}",
        reverted.reason
    );
    assert_eq!(
        rejection(&effects),
        RejectReason::AlreadyInPlace { to: closure(1) }
    );
    assert_eq!(sim.state.host.handled, Some(Revision(3)));
    // Asked again, it still changes nothing.
    let effects = sim.rollback(None);
    assert!(commands(&effects).is_empty());
    assert!(matches!(sim.state.host.phase, Phase::Reverted(_)));

    // After a converged deployment it goes back once, and only once.
    let mut sim = Sim::new();
    sim.converge_on(1);
    sim.converge_on(2);
    let effects = sim.rollback(None);
    assert_eq!(run_switch(&effects).1.closure, closure(1));
    sim.switch_done(committed_on(&closure(1)));
    assert_eq!(sim.phase(), "reverted");
    let effects = sim.rollback(None);
    assert!(commands(&effects).is_empty(), "it went back further");
    assert_eq!(
        rejection(&effects),
        RejectReason::AlreadyInPlace { to: closure(1) }
    );

    // A rollback waiting for a realise: the host never left its generation.
    let mut sim = Sim::new();
    sim.converge_on(1);
    sim.activate(2);
    sim.rollback(None);
    let effects = sim.realised(2);
    assert!(commands(&effects).is_empty(), "{effects:?}");
    assert_eq!(sim.system(), committed_on(&closure(1)));
    assert_eq!(
        rejection(&effects),
        RejectReason::AlreadyInPlace { to: closure(1) }
    );
}

#[test]
fn commit_timeout_aborts_the_commit_and_rolls_back() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1);
    sim.all_pass();
    sim.advance(SOAK);
    let commit = sim.switch();
    assert!(
        sim.advance(ACTIVATION_TIMEOUT - 1).is_empty(),
        "not before the deadline"
    );
    assert_eq!(sim.phase(), "committing");
    let effects = sim.advance(1);
    assert_eq!(
        commands(&effects)[0],
        Command::AbortSwitch { switch: commit }
    );
    assert_eq!(run_switch(&effects).1.closure, closure(0));
    assert_eq!(
        reason_of_rollback(&sim),
        Reason::SwitchTimedOut {
            after: Millis(ACTIVATION_TIMEOUT)
        }
    );
}

#[test]
fn rollback_is_not_aborted_before_its_deadline() {
    let mut sim = Sim::new();
    activating(&mut sim, 1);
    sim.switch_failed(1, "x", live(&closure(1), &closure(0)));
    assert!(sim.advance(ROLLBACK_TIMEOUT - 1).is_empty());
    assert_eq!(sim.phase(), "rolling-back");
}

#[test]
fn switch_ids_are_the_seq_of_the_event_that_launched_them() {
    let mut sim = Sim::new();
    sim.activate(1);
    let effects = sim.realised(1);
    let (switch, _) = run_switch(&effects);
    let launched = effects.events.iter().find_map(|ev| match ev.report {
        Report::ActivationStarted { .. } => Some(ev.seq),
        _ => None,
    });
    assert_eq!(Some(switch.0), launched);
}

fn reason_of_rollback(sim: &Sim) -> Reason {
    match &sim.state.host.phase {
        Phase::RollingBack(r) => r.reason.clone(),
        other => panic!("expected rolling-back, got {other:?}"),
    }
}
