//! One scenario per path: modes, directives, realise, soak and health.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleetnode_state_machine::*;
use support::*;

#[test]
fn test_then_commit_activates_live_soaks_then_commits() {
    let mut sim = Sim::new();
    let effects = sim.activate(1);
    assert_eq!(sim.phase(), "realising");
    assert_eq!(
        commands(&effects),
        vec![Command::Realise { target: closure(1) }]
    );

    let effects = sim.realised(1);
    assert_eq!(sim.phase(), "activating");
    let (_, job) = run_switch(&effects);
    assert_eq!(
        job,
        SwitchJob {
            purpose: SwitchPurpose::Activate,
            closure: closure(1),
            action: SwitchAction::Test,
            set_profile: false,
        },
        "test-then-commit must not touch profile or boot entry before the soak"
    );

    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "soaking");
    assert_eq!(commands(&effects), vec![Command::ResetProbes { epoch: 1 }]);

    sim.all_pass();
    assert_eq!(sim.phase(), "soaking", "soak time has not passed");
    let effects = sim.advance(SOAK);
    assert_eq!(sim.phase(), "committing");
    let (_, job) = run_switch(&effects);
    assert_eq!(
        job,
        SwitchJob {
            purpose: SwitchPurpose::Commit,
            closure: closure(1),
            action: SwitchAction::Boot,
            set_profile: true,
        }
    );

    let effects = sim.switch_done(committed_on(&closure(1)));
    assert_eq!(sim.phase(), "converged");
    assert_eq!(reports(&effects), vec!["switch-ended", "converged"]);
    assert_eq!(sim.state.host.known_good, vec![closure(0), closure(1)]);
}

#[test]
fn switch_mode_sets_profile_with_the_switch_and_converges_after_the_soak() {
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Switch), HealthOverrides::default());
    let effects = sim.realised(1);
    let (_, job) = run_switch(&effects);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Switch, true));
    sim.switch_done(committed_on(&closure(1)));
    assert_eq!(sim.phase(), "soaking");
    sim.all_pass();
    let effects = sim.advance(SOAK);
    assert_eq!(sim.phase(), "converged");
    assert!(commands(&effects).is_empty(), "switch mode needs no commit");
}

#[test]
fn switch_mode_verifies_the_profile_too() {
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Switch), HealthOverrides::default());
    sim.realised(1);
    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "rolling-back");
    let (_, job) = run_switch(&effects);
    assert_eq!(job.closure, closure(0));
    assert!(
        job.set_profile,
        "the profile moved with the switch, restore it"
    );
}

#[test]
fn boot_mode_defers_until_the_host_boots_into_the_target() {
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Boot), HealthOverrides::default());
    let effects = sim.realised(1);
    let (_, job) = run_switch(&effects);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Boot, true));

    let mut booted = committed_on(&closure(0));
    booted.profile = Some(closure(1));
    let effects = sim.switch_done(booted.clone());
    assert_eq!(sim.phase(), "deferred");
    assert!(
        commands(&effects).is_empty(),
        "no reboot unless policy allows it"
    );

    // The agent restarts without a reboot: still deferred.
    sim.restart(booted, false, None);
    assert_eq!(sim.phase(), "deferred");

    // The operator reboots; the host comes up on the target and soaks.
    let effects = sim.restart(committed_on(&closure(1)), true, None);
    assert_eq!(sim.phase(), "soaking");
    assert_eq!(commands(&effects), vec![Command::ResetProbes { epoch: 1 }]);
    sim.all_pass();
    sim.advance(SOAK);
    assert_eq!(sim.phase(), "converged");
}

#[test]
fn boot_mode_reboots_itself_when_policy_allows() {
    let mut policy = policy();
    policy.reboot_allowed = true;
    let mut sim = Sim::with_policy(policy);
    sim.activate_with(1, Some(ActivationMode::Boot), HealthOverrides::default());
    sim.realised(1);
    let mut booted = committed_on(&closure(0));
    booted.profile = Some(closure(1));
    let effects = sim.switch_done(booted.clone());
    assert_eq!(commands(&effects), vec![Command::Reboot]);
    // The agent was restarted before the reboot happened: it asks again.
    let effects = sim.restart(booted, false, None);
    assert_eq!(commands(&effects), vec![Command::Reboot]);
}

#[test]
fn a_directive_already_in_place_converges_without_work() {
    let mut sim = Sim::new();
    let effects = sim.activate(0);
    assert_eq!(sim.phase(), "converged");
    assert!(commands(&effects).is_empty());
    assert_eq!(
        reports(&effects),
        vec!["directive-recorded", "already-converged"]
    );
}

#[test]
fn repeated_directive_is_idempotent_and_older_ones_are_refused() {
    let mut sim = Sim::new();
    sim.activate(1);
    let same = sim.state.host.desired.clone().unwrap();
    let effects = sim.step(sim.answer(same.clone()));
    assert!(
        effects.is_empty(),
        "the same revision again changes nothing"
    );
    let older = Directive {
        revision: Revision(0),
        ..same.clone()
    };
    let err = sim.try_step(sim.answer(older)).unwrap_err();
    assert!(matches!(
        err,
        TransitionError::Peer(PeerFault::StaleDirective { .. })
    ));
    let conflicting = Directive {
        kind: DirectiveKind::Rollback { to: None },
        ..same
    };
    let err = sim.try_step(sim.answer(conflicting)).unwrap_err();
    assert!(matches!(
        err,
        TransitionError::Peer(PeerFault::ConflictingDirective { .. })
    ));
}

#[test]
fn newer_directive_during_realise_wins_and_the_old_target_is_never_switched_to() {
    let mut sim = Sim::new();
    sim.activate(1);
    let effects = sim.activate(2);
    assert!(commands(&effects).is_empty(), "realise is not interrupted");
    assert_eq!(sim.phase(), "realising");
    let effects = sim.realised(1);
    assert_eq!(
        commands(&effects),
        vec![Command::Realise { target: closure(2) }]
    );
    assert_eq!(
        reports(&effects),
        vec!["realised", "superseded", "work-started"]
    );
    assert_eq!(sim.state.host.phase.work().unwrap().target, closure(2));
}

#[test]
fn newer_directive_during_activation_waits_for_the_switch_to_end() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    let effects = sim.activate(2);
    assert!(
        commands(&effects).is_empty(),
        "a running switch is never interrupted"
    );
    assert_eq!(sim.phase(), "activating");
    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "realising");
    assert!(commands(&effects).contains(&Command::Realise { target: closure(2) }));
    // The new work still rolls back to the committed generation, not the unproven one.
    assert_eq!(
        sim.state.host.phase.work().unwrap().previous,
        Some(closure(0))
    );
}

#[test]
fn newer_directive_during_soak_supersedes_it() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    let effects = sim.activate(2);
    assert_eq!(
        reports(&effects),
        vec!["directive-recorded", "superseded", "work-started"]
    );
    assert_eq!(sim.phase(), "realising");
}

#[test]
fn realise_failure_fails_the_directive_without_touching_the_host() {
    let mut sim = Sim::new();
    sim.activate(1);
    let effects = sim.step(Event::RealiseFinished {
        target: closure(1),
        result: RealiseResult::Failed {
            message: "signature missing".into(),
        },
    });
    assert!(commands(&effects).is_empty());
    match &sim.state.host.phase {
        Phase::Failed(f) => {
            assert_eq!(f.reason.code(), "realise-failed");
            assert!(f.reason.to_string().contains("signature missing"));
            assert!(!f.halted);
        }
        other => panic!("expected failed, got {other:?}"),
    }
    assert_eq!(sim.system(), committed_on(&closure(0)));
    // The same revision is not retried; a new one is.
    assert!(sim.advance(1).is_empty());
    let effects = sim.activate(1);
    assert_eq!(
        commands(&effects),
        vec![Command::Realise { target: closure(1) }]
    );
}

#[test]
fn a_partial_unit_failure_with_the_system_switched_goes_on_to_soak() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    let effects = sim.switch_failed(4, "some units failed", live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "soaking");
    let warned = effects.events.iter().any(|ev| {
        matches!(&ev.report,
            Report::SwitchEnded { verdict: SwitchVerdict::SucceededWithWarnings { output_tail }, .. }
                if output_tail == "some units failed")
    });
    assert!(warned, "the warning is reported: {effects:?}");
}

#[test]
fn soak_needs_every_enforce_probe_to_pass_and_ignores_observe_probes() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    sim.probe(metrics_probe(), false);
    sim.probe(web(), true);
    sim.advance(SOAK);
    assert_eq!(
        sim.phase(),
        "soaking",
        "the control-plane probe has not passed yet: no data is not a pass"
    );
    sim.advance(10 * SUSTAINED);
    assert_eq!(
        sim.phase(),
        "soaking",
        "an observe probe never fails a soak"
    );
    sim.probe(ProbeId::control_plane(), true);
    assert_eq!(sim.phase(), "committing");
}

#[test]
fn soak_waits_for_a_currently_failing_enforce_probe_to_recover() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    sim.all_pass();
    sim.now += SOAK - 1_000;
    sim.probe(web(), false);
    sim.advance(1_000);
    assert_eq!(
        sim.phase(),
        "soaking",
        "not healthy while a probe is failing"
    );
    sim.now += 10_000;
    sim.probe(web(), true);
    assert_eq!(sim.phase(), "committing");
}

#[test]
fn sustained_failure_is_a_continuous_run_not_time_since_the_first_failure() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    sim.all_pass();
    sim.probe(web(), false);
    sim.advance(SUSTAINED - 10_000);
    sim.probe(web(), true);
    sim.probe(web(), false);
    sim.advance(SUSTAINED - 10_000);
    assert_eq!(
        sim.phase(),
        "soaking",
        "two short runs are not a sustained failure"
    );
    sim.advance(10_000);
    assert_eq!(sim.phase(), "rolling-back");
}

#[test]
fn a_steady_probe_reports_only_changes() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(reports(&sim.probe(web(), true)), vec!["probe-observed"]);
    assert!(reports(&sim.probe(web(), true)).is_empty());
    assert_eq!(reports(&sim.probe(web(), false)), vec!["probe-observed"]);
    assert!(reports(&sim.probe(web(), false)).is_empty());
}

#[test]
fn directive_health_overrides_apply() {
    let mut sim = Sim::new();
    sim.activate_with(
        1,
        None,
        HealthOverrides {
            soak_ms: Some(Millis(1_000)),
            sustained_failure_ms: Some(Millis(5_000)),
            on_failure: Some(FailurePolicy::Halt),
        },
    );
    let work = sim.state.host.phase.work().unwrap().clone();
    assert_eq!(work.health.soak_ms, Millis(1_000));
    assert_eq!(work.health.on_failure, FailurePolicy::Halt);
    sim.realised(1);
    sim.switch_done(live(&closure(1), &closure(0)));
    sim.probe(web(), false);
    sim.advance(5_000);
    assert_eq!(sim.phase(), "failed");
}

#[test]
fn next_deadline_names_the_soonest_one_and_why() {
    let mut sim = Sim::new();
    assert_eq!(sim.state.next_deadline(), None);
    sim.activate(1);
    assert_eq!(sim.state.next_deadline(), None, "realise has no deadline");
    sim.realised(1);
    let start = sim.now;
    assert_eq!(
        sim.state.next_deadline(),
        Some((
            Timestamp(start + ACTIVATION_TIMEOUT),
            DeadlineKind::ActivationTimeout
        ))
    );
    sim.now += 1_000;
    sim.switch_done(live(&closure(1), &closure(0)));
    let soak_end = sim.now + SOAK;
    assert_eq!(
        sim.state.next_deadline(),
        Some((Timestamp(soak_end), DeadlineKind::SoakEnd))
    );
    sim.probe(web(), false);
    assert_eq!(
        sim.state.next_deadline(),
        Some((
            Timestamp(sim.now + SUSTAINED),
            DeadlineKind::SustainedFailure { probe: web() }
        ))
    );
}

#[test]
fn verification_names_what_is_out_of_place() {
    // switch mode, live but the profile was not moved: the profile is named.
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Switch), HealthOverrides::default());
    sim.realised(1);
    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert!(effects.events.iter().any(|ev| matches!(&ev.report,
        Report::SwitchEnded { verdict: SwitchVerdict::Failed { reason: Reason::VerificationFailed { observed, .. } }, .. }
            if *observed == Some(closure(0)))));

    // switch mode with the profile moved but the live system not: the live system is named.
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Switch), HealthOverrides::default());
    sim.realised(1);
    let effects = sim.switch_done(live(&closure(0), &closure(1)));
    assert!(effects.events.iter().any(|ev| matches!(&ev.report,
        Report::SwitchEnded { verdict: SwitchVerdict::Failed { reason: Reason::VerificationFailed { observed, .. } }, .. }
            if *observed == Some(closure(0)))));

    // boot mode with the profile not on the target fails; its profile is named.
    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Boot), HealthOverrides::default());
    sim.realised(1);
    let mut system = committed_on(&closure(0));
    system.profile = Some(closure(2));
    let effects = sim.switch_done(system);
    assert_eq!(sim.phase(), "rolling-back");
    assert!(effects.events.iter().any(|ev| matches!(&ev.report,
        Report::SwitchEnded { verdict: SwitchVerdict::Failed { reason: Reason::VerificationFailed { observed, .. } }, .. }
            if *observed == Some(closure(2)))));
}

#[test]
fn boot_mode_on_a_host_already_running_the_target_soaks_at_once() {
    // The target is already live (e.g. tested by hand) but not the boot default.
    let mut sim = Sim::starting_on(live(&closure(1), &closure(0)), policy());
    sim.activate_with(1, Some(ActivationMode::Boot), HealthOverrides::default());
    sim.realised(1);
    let effects = sim.switch_done(committed_on(&closure(1)));
    assert_eq!(sim.phase(), "soaking");
    assert_eq!(commands(&effects), vec![Command::ResetProbes { epoch: 1 }]);
}

#[test]
fn rollback_jobs_follow_what_the_mode_touched() {
    let failing_soak = |mode: ActivationMode| {
        let mut sim = Sim::new();
        sim.activate_with(1, Some(mode), HealthOverrides::default());
        sim.realised(1);
        let system = match mode {
            ActivationMode::TestThenCommit => live(&closure(1), &closure(0)),
            ActivationMode::Switch | ActivationMode::Boot => committed_on(&closure(1)),
        };
        sim.switch_done(system);
        sim.probe(web(), false);
        let effects = sim.advance(SUSTAINED);
        run_switch(&effects).1
    };
    let job = failing_soak(ActivationMode::TestThenCommit);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Test, false));
    let job = failing_soak(ActivationMode::Switch);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Switch, true));

    let mut sim = Sim::new();
    sim.activate_with(1, Some(ActivationMode::Switch), HealthOverrides::default());
    sim.realised(1);
    let effects = sim.switch_failed(1, "x", committed_on(&closure(1)));
    let job = run_switch(&effects).1;
    assert_eq!((job.action, job.set_profile), (SwitchAction::Switch, true));
}

#[test]
fn a_finished_switch_unit_is_released_only_after_its_result_is_recorded() {
    // Events are persisted before any command runs (the contract of `Step`), so a release
    // that comes with the switch-ended report runs only once that report is durable.
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    let switch = sim.switch();
    let effects = sim.switch_done(live(&closure(1), &closure(0)));
    assert!(effects.reported(|r| matches!(r, Report::SwitchEnded { .. })));
    assert!(
        effects
            .commands
            .contains(&Command::ReleaseSwitch { switch })
    );
    let still_running = sim.activate(2);
    assert!(
        !still_running
            .commands
            .iter()
            .any(|c| matches!(c, Command::ReleaseSwitch { .. })),
        "nothing is released without a recorded end"
    );
}
