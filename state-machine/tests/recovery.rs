//! Recovery in every state, time, illegal input and the mirror's seq rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleetnode_state_machine::*;
use support::*;

fn activating(sim: &mut Sim, n: usize, mode: ActivationMode) {
    sim.activate_with(n, Some(mode), HealthOverrides::default());
    sim.realised(n);
    assert_eq!(sim.phase(), "activating");
}

fn soaking(sim: &mut Sim, n: usize, mode: ActivationMode) {
    activating(sim, n, mode);
    let system = match mode {
        ActivationMode::TestThenCommit => live(&closure(n), &closure(0)),
        ActivationMode::Switch | ActivationMode::Boot => committed_on(&closure(n)),
    };
    sim.switch_done(system);
    assert_eq!(sim.phase(), "soaking");
}

fn reason_of(sim: &Sim) -> Reason {
    match &sim.state.host.phase {
        Phase::Reverted(r) => r.reason.clone(),
        Phase::Failed(f) => f.reason.clone(),
        Phase::RollingBack(r) => r.reason.clone(),
        other => panic!("no reason in {other:?}"),
    }
}

#[test]
fn first_start_reports_what_the_host_runs_and_takes_it_as_known_good() {
    let sim = Sim::new();
    assert_eq!(sim.phase(), "idle");
    assert_eq!(sim.state.host.known_good, vec![closure(0)]);
    assert_eq!(sim.log[0].report.name(), "recovered");
    assert_eq!(sim.log[1].report.name(), "policy-applied");
}

#[test]
fn store_reset_is_reported() {
    let Step { state, events, .. } = step(
        &State::default(),
        Event::Started(Observation {
            system: committed_on(&closure(0)),
            boot_id: None,
            switch_unit: None,
            store_reset: Some("checksum mismatch".into()),
            policy: policy(),
        }),
        Timestamp(5),
    )
    .unwrap();
    assert!(matches!(&events[0].report,
        Report::Recovered { store_reset: Some(r), .. } if r == "checksum mismatch"));
    assert_eq!(state.host.seq, 2);
}

#[test]
fn realising_realises_again() {
    let mut sim = Sim::new();
    sim.activate(1);
    let effects = sim.restart(committed_on(&closure(0)), false, None);
    assert_eq!(
        commands(&effects),
        vec![Command::Realise { target: closure(1) }]
    );
}

#[test]
fn activating_with_the_unit_still_running_is_followed_not_restarted() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let switch = sim.switch();
    let effects = sim.restart(committed_on(&closure(0)), false, Some(UnitState::Running));
    assert_eq!(commands(&effects), vec![Command::WatchSwitch { switch }]);
    assert_eq!(sim.phase(), "activating");
}

#[test]
fn activating_whose_unit_finished_while_the_agent_was_down_completes() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let effects = sim.restart(live(&closure(1), &closure(0)), false, Some(UnitState::Gone));
    assert_eq!(sim.phase(), "soaking");
    assert!(commands(&effects).contains(&Command::ResetProbes { epoch: 1 }));
}

#[test]
fn activating_whose_unit_failed_while_the_agent_was_down_rolls_back() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let unit = UnitState::Exited(SwitchExit {
        code: Some(1),
        output_tail: "failed".into(),
    });
    sim.restart(live(&closure(1), &closure(0)), false, Some(unit));
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(reason_of(&sim).code(), "switch-failed");
}

#[test]
fn a_switch_recorded_but_never_launched_is_launched_again_under_its_id() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let switch = sim.switch();
    let effects = sim.restart(committed_on(&closure(0)), false, Some(UnitState::Gone));
    let (relaunched, job) = run_switch(&effects);
    assert_eq!(relaunched, switch, "the same switch, not a second one");
    assert_eq!(job.closure, closure(1));
    assert_eq!(reports(&effects), vec!["recovered"]);
    assert_eq!(sim.phase(), "activating");
    assert!(
        sim.state.host.quarantine.is_empty(),
        "nothing was attempted, nothing blamed"
    );
}

#[test]
fn a_reboot_that_leaves_neither_target_nor_known_good_interrupts_the_activation() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::Switch);
    sim.restart(committed_on(&closure(2)), true, None);
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(reason_of(&sim), Reason::Interrupted);
}

#[test]
fn reboot_during_test_then_commit_activation_reverts_without_a_switch() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let effects = sim.restart(committed_on(&closure(0)), true, Some(UnitState::Gone));
    assert!(
        commands(&effects).is_empty(),
        "the boot already restored the known-good one"
    );
    assert_eq!(sim.phase(), "reverted");
    assert_eq!(reason_of(&sim), Reason::RebootedDuringActivation);
}

#[test]
fn reboot_during_switch_activation_into_the_target_soaks() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::Switch);
    sim.restart(committed_on(&closure(1)), true, None);
    assert_eq!(sim.phase(), "soaking");
}

#[test]
fn reboot_during_switch_activation_that_left_the_profile_on_the_target_rolls_back() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::Switch);
    // The profile was set but the host came up on the old generation.
    let mut system = committed_on(&closure(0));
    system.profile = Some(closure(1));
    let effects = sim.restart(system, true, None);
    let (_, job) = run_switch(&effects);
    assert!(job.set_profile);
    assert_eq!(reason_of(&sim), Reason::Interrupted);
}

#[test]
fn reboot_during_test_then_commit_soak_reverts_as_rebooted_during_soak() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::TestThenCommit);
    let effects = sim.restart(committed_on(&closure(0)), true, None);
    assert!(commands(&effects).is_empty());
    assert_eq!(sim.phase(), "reverted");
    assert_eq!(reason_of(&sim), Reason::RebootedDuringSoak);
    assert_eq!(reason_of(&sim).to_string(), "rebooted during soak");
    assert_eq!(
        sim.state.host.quarantine.get(&closure(1)),
        Some(&Revision(1))
    );
}

#[test]
fn agent_restart_during_soak_keeps_soaking_in_the_same_epoch() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::TestThenCommit);
    sim.probe(web(), true);
    let effects = sim.restart(live(&closure(1), &closure(0)), false, None);
    assert_eq!(commands(&effects), vec![Command::ResetProbes { epoch: 1 }]);
    assert_eq!(sim.phase(), "soaking");
    assert!(sim.state.probes.records.get(&web()).unwrap().passed);
}

#[test]
fn reboot_during_switch_soak_on_the_target_starts_the_soak_again() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::Switch);
    sim.all_pass();
    let effects = sim.restart(committed_on(&closure(1)), true, None);
    assert_eq!(commands(&effects), vec![Command::ResetProbes { epoch: 2 }]);
    assert!(
        sim.state.probes.records.is_empty(),
        "health is judged again after a boot"
    );
}

#[test]
fn someone_switching_the_host_during_soak_fails_the_work() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::TestThenCommit);
    sim.restart(committed_on(&closure(2)), false, None);
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(reason_of(&sim).code(), "drifted");
}

#[test]
fn reboot_during_switch_soak_into_another_generation_rolls_back() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::Switch);
    sim.restart(committed_on(&closure(2)), true, None);
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(reason_of(&sim).code(), "booted-other-generation");
}

#[test]
fn committing_recovers_from_what_the_host_shows() {
    let commit = |sim: &mut Sim| {
        soaking(sim, 1, ActivationMode::TestThenCommit);
        sim.all_pass();
        sim.advance(SOAK);
        assert_eq!(sim.phase(), "committing");
    };
    let mut sim = Sim::new();
    commit(&mut sim);
    let switch = sim.switch();
    let effects = sim.restart(
        live(&closure(1), &closure(0)),
        false,
        Some(UnitState::Running),
    );
    assert_eq!(commands(&effects), vec![Command::WatchSwitch { switch }]);

    let mut sim = Sim::new();
    commit(&mut sim);
    sim.restart(committed_on(&closure(1)), false, Some(UnitState::Gone));
    assert_eq!(sim.phase(), "converged");

    let mut sim = Sim::new();
    commit(&mut sim);
    sim.restart(committed_on(&closure(0)), true, None);
    assert_eq!(sim.phase(), "reverted");
    assert_eq!(reason_of(&sim), Reason::RebootedDuringCommit);
}

#[test]
fn deferred_recovery() {
    let deferred = |sim: &mut Sim| {
        activating(sim, 1, ActivationMode::Boot);
        let mut system = committed_on(&closure(0));
        system.profile = Some(closure(1));
        sim.switch_done(system);
        assert_eq!(sim.phase(), "deferred");
    };
    let mut sim = Sim::new();
    deferred(&mut sim);
    sim.restart(committed_on(&closure(1)), true, None);
    assert_eq!(sim.phase(), "soaking");

    let mut sim = Sim::new();
    deferred(&mut sim);
    let effects = sim.restart(committed_on(&closure(0)), true, None);
    let (_, job) = run_switch(&effects);
    assert_eq!((job.action, job.set_profile), (SwitchAction::Boot, true));
    assert_eq!(reason_of(&sim).code(), "booted-other-generation");
}

#[test]
fn rolling_back_recovers_from_what_the_host_shows() {
    let rolling = |sim: &mut Sim| {
        activating(sim, 1, ActivationMode::TestThenCommit);
        sim.switch_failed(1, "x", live(&closure(1), &closure(0)));
        assert_eq!(sim.phase(), "rolling-back");
    };
    let mut sim = Sim::new();
    rolling(&mut sim);
    sim.restart(committed_on(&closure(0)), false, Some(UnitState::Gone));
    assert_eq!(sim.phase(), "reverted");

    let mut sim = Sim::new();
    rolling(&mut sim);
    let switch = sim.switch();
    let failed_activation = SwitchId(switch.0 - 2);
    let effects = sim.restart(
        live(&closure(1), &closure(0)),
        false,
        Some(UnitState::Running),
    );
    assert_eq!(
        commands(&effects),
        vec![
            Command::AbortSwitch {
                switch: failed_activation
            },
            Command::WatchSwitch { switch }
        ]
    );

    // Recorded but never launched: launched again, same id.
    let mut sim = Sim::new();
    rolling(&mut sim);
    let switch = sim.switch();
    let effects = sim.restart(live(&closure(1), &closure(0)), false, Some(UnitState::Gone));
    assert_eq!(run_switch(&effects).0, switch);
    assert_eq!(sim.phase(), "rolling-back");

    // After a reboot that did not bring the rollback target: failed.
    let mut sim = Sim::new();
    rolling(&mut sim);
    sim.restart(committed_on(&closure(2)), true, None);
    assert_eq!(sim.phase(), "failed");
    assert_eq!(reason_of(&sim).code(), "rollback-failed");

    let mut sim = Sim::new();
    rolling(&mut sim);
    sim.restart(committed_on(&closure(0)), true, None);
    assert_eq!(sim.phase(), "reverted");
}

#[test]
fn at_rest_recovery_keeps_the_phase_and_flags_drift() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let effects = sim.restart(committed_on(&closure(1)), true, None);
    assert!(commands(&effects).is_empty());
    assert_eq!(sim.phase(), "converged");
    sim.restart(committed_on(&closure(2)), false, None);
    assert_eq!(sim.phase(), "failed");
    assert_eq!(reason_of(&sim).code(), "drifted");
}

#[test]
fn policy_changes_are_reported_once() {
    let mut sim = Sim::new();
    let effects = sim.restart(committed_on(&closure(0)), false, None);
    assert_eq!(reports(&effects), vec!["recovered"]);
    let mut changed = policy();
    changed.reboot_allowed = true;
    let effects = sim.step(Event::Started(Observation {
        system: committed_on(&closure(0)),
        boot_id: Some("boot-1".into()),
        switch_unit: None,
        store_reset: None,
        policy: changed,
    }));
    assert_eq!(reports(&effects), vec!["recovered", "policy-applied"]);
    assert!(sim.state.host.policy.reboot_allowed);
}

#[test]
fn time_going_backwards_never_moves_a_deadline() {
    let mut sim = Sim::new();
    sim.activate(1);
    sim.realised(1);
    let deadline = sim.state.next_deadline().unwrap();
    sim.now -= 500_000;
    assert!(sim.step(Event::Tick).is_empty());
    assert_eq!(sim.state.next_deadline().unwrap(), deadline);
    // A later switch result at a backwards `now` still counts time from the latest seen.
    sim.switch_done(live(&closure(1), &closure(0)));
    let (soak_end, _) = sim.state.next_deadline().unwrap();
    assert_eq!(soak_end, Timestamp(1_000_000 + SOAK));
    // Back to real time: the deadline fires once time passes it, not earlier.
    sim.all_pass();
    sim.now = 1_000_000 + SOAK - 1;
    sim.step(Event::Tick);
    assert_eq!(sim.phase(), "soaking");
    sim.now += 1;
    sim.step(Event::Tick);
    assert_eq!(sim.phase(), "committing");
}

#[test]
fn illegal_inputs_are_typed_errors_and_change_nothing() {
    let mut sim = Sim::new();
    let before = sim.state.clone();
    let cases = [
        Event::SwitchFinished {
            switch: SwitchId(99),
            end: exited(0, ""),
            system: committed_on(&closure(0)),
        },
        Event::RealiseFinished {
            target: closure(1),
            result: RealiseResult::Realised,
        },
        Event::ProbeResult(ProbeResult {
            probe: ProbeId::parse("nope").unwrap(),
            epoch: 0,
            passed: true,
            detail: String::new(),
        }),
        Event::ProbeResult(ProbeResult {
            probe: web(),
            epoch: 7,
            passed: true,
            detail: String::new(),
        }),
    ];
    for event in cases {
        let name = event.name();
        let err = sim.try_step(event).unwrap_err();
        assert!(!err.to_string().is_empty(), "{name}");
        assert_eq!(sim.state, before, "{name} changed the state");
    }
    sim.activate(1);
    let err = sim
        .try_step(Event::RealiseFinished {
            target: closure(2),
            result: RealiseResult::Realised,
        })
        .unwrap_err();
    assert!(matches!(
        err,
        TransitionError::Stale(StaleInput::UnknownRealise { .. })
    ));
    let err = sim
        .try_step(Event::SwitchFinished {
            switch: SwitchId(1),
            end: exited(0, ""),
            system: committed_on(&closure(1)),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        TransitionError::Stale(StaleInput::UnknownSwitch { running: None, .. })
    ));
}

#[test]
fn stale_probe_results_from_before_an_activation_do_not_count() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let old_epoch = sim.state.host.probe_epoch;
    sim.activate(2);
    sim.realised(2);
    sim.switch_done(live(&closure(2), &closure(1)));
    let err = sim
        .try_step(Event::ProbeResult(ProbeResult {
            probe: web(),
            epoch: old_epoch,
            passed: true,
            detail: String::new(),
        }))
        .unwrap_err();
    assert!(matches!(
        err,
        TransitionError::Stale(StaleInput::StaleProbeResult { .. })
    ));
    assert!(sim.state.probes.records.is_empty());
}

#[test]
fn mirror_ignores_duplicates_and_refuses_gaps() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    let events = sim.log.clone();
    let mut mirror = State::default();
    for event in &events[..3] {
        assert_eq!(mirror::apply(&mut mirror, event), Ok(mirror::Applied::New));
    }
    let before = mirror.clone();
    let again = mirror::apply(&mut mirror, &events[1]);
    assert_eq!(again, Ok(mirror::Applied::Duplicate));
    assert_eq!(mirror, before, "a duplicate is ignored");
    let err = mirror::apply(&mut mirror, &events[5]).unwrap_err();
    assert_eq!(
        err,
        MirrorError::SeqGap {
            expected: 4,
            got: 6
        }
    );
    assert_eq!(mirror, before, "a refused event changes nothing");
    // A gap marker covering 4..=5 lets 6 apply.
    let gap = OutboundEvent {
        seq: 5,
        at: Timestamp(0),
        report: Report::Gap {
            from_seq: 4,
            cause: GapCause::DeadLettered {
                code: "invalid".into(),
            },
        },
    };
    assert_eq!(mirror::apply(&mut mirror, &gap), Ok(mirror::Applied::New));
    assert_eq!(mirror.host.seq, 5);
}

#[test]
fn mirror_flags_a_report_that_does_not_fit() {
    let bogus = OutboundEvent {
        seq: 1,
        at: Timestamp(0),
        report: Report::CommitStarted {
            switch: SwitchId(1),
            job: SwitchJob {
                purpose: SwitchPurpose::Commit,
                closure: closure(1),
                action: SwitchAction::Boot,
                set_profile: true,
            },
            deadline: Timestamp(1),
        },
    };
    let mut mirror = State::default();
    let err = mirror::apply(&mut mirror, &bogus).unwrap_err();
    assert!(matches!(err, MirrorError::Diverged(_)));
    assert_eq!(
        mirror,
        State::default(),
        "a report that does not fit changes nothing"
    );
}

#[test]
fn drift_during_a_switch_soak_names_the_moved_boot_entry() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::Switch);
    // Live system still the target, but someone pointed the profile elsewhere.
    sim.restart(live(&closure(1), &closure(2)), false, None);
    assert_eq!(
        reason_of(&sim),
        Reason::Drifted {
            expected: closure(1),
            observed: Some(closure(2)),
        }
    );
}

#[test]
fn commit_recorded_but_never_launched_is_launched_again() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::TestThenCommit);
    sim.all_pass();
    sim.advance(SOAK);
    assert_eq!(sim.phase(), "committing");
    let switch = sim.switch();
    let effects = sim.restart(live(&closure(1), &closure(0)), false, Some(UnitState::Gone));
    let (relaunched, job) = run_switch(&effects);
    assert_eq!((relaunched, job.purpose), (switch, SwitchPurpose::Commit));
    assert_eq!(
        sim.phase(),
        "committing",
        "a healthy target is not rolled back for it"
    );
}

#[test]
fn a_timeout_that_passed_while_the_agent_was_down_fires_at_recovery() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let hung = sim.switch();
    sim.now += ACTIVATION_TIMEOUT + 1;
    let effects = sim.restart(
        live(&closure(1), &closure(0)),
        false,
        Some(UnitState::Running),
    );
    let commands = commands(&effects);
    assert!(
        commands.contains(&Command::AbortSwitch { switch: hung }),
        "{commands:?}"
    );
    assert_eq!(sim.phase(), "rolling-back");
    assert!(
        sim.state.next_deadline().is_some(),
        "the rollback has its own deadline"
    );
}

#[test]
fn a_result_arriving_after_the_deadline_does_not_swallow_the_timeout() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let hung = sim.switch();
    sim.now += ACTIVATION_TIMEOUT;
    // A heartbeat result is handled before the event loop's own tick.
    let epoch = sim.state.host.probe_epoch;
    let effects = sim.step(Event::ProbeResult(ProbeResult {
        probe: ProbeId::control_plane(),
        epoch,
        passed: true,
        detail: String::new(),
    }));
    assert!(commands(&effects).contains(&Command::AbortSwitch { switch: hung }));
    assert_eq!(sim.phase(), "rolling-back");
}

#[test]
fn a_rollback_found_at_recovery_stops_the_switch_it_replaced_again() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let hung = sim.switch();
    sim.advance(ACTIVATION_TIMEOUT);
    assert_eq!(sim.phase(), "rolling-back");
    let effects = sim.restart(
        live(&closure(1), &closure(0)),
        false,
        Some(UnitState::Running),
    );
    assert_eq!(
        commands(&effects),
        vec![
            Command::AbortSwitch { switch: hung },
            Command::WatchSwitch {
                switch: sim.switch()
            }
        ]
    );
}

#[test]
fn a_deadline_already_handled_is_not_returned_again() {
    let mut sim = Sim::new();
    soaking(&mut sim, 1, ActivationMode::TestThenCommit);
    sim.probe(web(), true);
    // The soak time ends while the control-plane probe has not passed yet.
    sim.advance(SOAK);
    assert_eq!(sim.phase(), "soaking");
    assert_eq!(
        sim.state.next_deadline(),
        None,
        "the soak end is past: waking for it again would spin"
    );
}

#[test]
fn a_switch_never_launched_is_not_launched_at_its_deadline() {
    let mut sim = Sim::new();
    activating(&mut sim, 1, ActivationMode::TestThenCommit);
    let recorded = sim.switch();
    sim.now += ACTIVATION_TIMEOUT;
    let effects = sim.restart(committed_on(&closure(0)), false, Some(UnitState::Gone));
    let (switch, job) = run_switch(&effects);
    assert_ne!(switch, recorded, "the timed-out switch is not launched");
    assert_eq!(job.purpose, SwitchPurpose::Rollback);
}
