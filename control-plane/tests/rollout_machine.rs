//! The rollout state machine, transition by transition: planning, waves, bake, the failure
//! budget, halts with and without rollback, offline hosts (the operator's commands are in
//! `rollout_operator.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::collections::BTreeMap;

use fleetnode_control_plane::rollout::{
    Command, Deadline, Event, StartError, next_deadline, plan, step,
};
use fleetnode_state_machine::{DirectiveKind, Revision, Timestamp};
use fleetnode_wire::{
    FailureBudget, FailureKind, HostId, HostRollback, HostState, Millis, OnHalt, RollbackCause,
    RolloutId, RolloutPhase,
};
use rollout_support::*;

#[test]
fn waves_widen_by_at_least_one_host_and_take_hosts_in_id_order() {
    let world = World::new(&[Fate::Converge(0); 5], 0);
    let rollout = setup(vec![count(1), percent(10), percent(100)]).start(&world);
    assert_eq!(hosts_of(&rollout, 0), ["web-01"]);
    assert_eq!(
        hosts_of(&rollout, 1),
        ["web-02"],
        "10% of 5 still widens by one"
    );
    assert_eq!(hosts_of(&rollout, 2), ["web-03", "web-04", "web-05"]);

    let world = World::new(&[Fate::Converge(0); 10], 2);
    let rollout = setup(vec![tag("canary"), percent(50), count(8), percent(100)]).start(&world);
    assert_eq!(hosts_of(&rollout, 0), ["web-01", "web-02"]);
    assert_eq!(hosts_of(&rollout, 1), ["web-03", "web-04", "web-05"]);
    assert_eq!(hosts_of(&rollout, 2), ["web-06", "web-07", "web-08"]);
    assert_eq!(hosts_of(&rollout, 3), ["web-09", "web-10"]);

    // Once every host is covered, later waves are empty.
    let world = World::new(&[Fate::Converge(0); 2], 0);
    let rollout = setup(vec![percent(100), percent(100)]).start(&world);
    assert!(rollout.waves[1].hosts.is_empty());
}

#[test]
fn a_release_is_checked_against_the_fleet_before_anything_starts() {
    let world = World::new(&[Fate::Converge(0); 3], 0);
    let request = setup(vec![percent(100)]).request(&world);
    let mut registered = world.registrations();
    registered.remove(&host(2));
    let start = |registered, owners: &BTreeMap<_, _>| {
        plan::start(&request, RolloutId(1), registered, owners, START)
    };
    let none = BTreeMap::new();
    match start(&registered, &none) {
        Err(StartError::UnknownHosts(hosts)) => assert_eq!(hosts, [host(2)]),
        other => panic!("{other:?}"),
    }
    let error = start(&registered, &none).unwrap_err().to_string();
    assert!(
        error.contains("web-02") && error.contains("add-host"),
        "{error}"
    );

    let mut registered = world.registrations();
    registered.get_mut(&host(3)).unwrap().revoked = true;
    assert!(matches!(
        start(&registered, &none),
        Err(StartError::RevokedHosts(_))
    ));

    let owners = BTreeMap::from([(host(1), (RolloutId(7), "running"))]);
    let error = start(&world.registrations(), &owners).unwrap_err();
    assert!(error.to_string().contains("rollout 7"), "{error}");

    let short = setup(vec![count(1), count(2)]).request(&world);
    let error = plan::start(&short, RolloutId(1), &world.registrations(), &none, START);
    assert!(
        matches!(
            error,
            Err(StartError::Uncovered {
                covered: 2,
                total: 3
            })
        ),
        "{error:?}"
    );
    let untagged = setup(vec![tag("canary"), percent(100)]).request(&world);
    let error = plan::start(
        &untagged,
        RolloutId(1),
        &world.registrations(),
        &none,
        START,
    );
    assert!(matches!(
        error,
        Err(StartError::TagMatchesNothing { wave: 1, .. })
    ));
}

#[test]
fn a_healthy_release_goes_wave_by_wave_after_each_wave_baked() {
    let mut world = World::new(&[Fate::Converge(500); 5], 1);
    let rollout = setup(vec![tag("canary"), percent(60), percent(100)]).start(&world);

    // The first observation gives the canary, and only the canary, the release.
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-01"]);
    match &commands[0] {
        Command::SetDirective { directive, .. } => {
            assert_eq!(directive.revision, Revision(1));
            match &directive.kind {
                DirectiveKind::Activate { target, .. } => {
                    assert_eq!(target, &closure(&host(1), HASH));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Converged: the wave bakes; nothing new starts before the bake is over.
    world.advance(500);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty());
    assert!(matches!(state(&rollout, 1), HostState::Converged { .. }));
    let until = match rollout.phase {
        RolloutPhase::Running(p) => p.baking_until.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(until, world.now.plus(Millis(1_000)));
    assert_eq!(
        next_deadline(&rollout, &world.observe()),
        Some((until, Deadline::BakeEnds { wave: 0 }))
    );
    world.advance(999);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty(), "a wave started before the bake ended");
    world.advance(1);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-02", "web-03"]);

    let rollout = run_until_settled(rollout, &mut world, 250, 100);
    assert!(
        matches!(rollout.phase, RolloutPhase::Completed(_)),
        "{:?}",
        rollout.phase
    );
    assert_eq!(rollout.counts().converged, 5);
    for (id, sim) in &world.hosts {
        assert_eq!(sim.current, Some(closure(id, HASH)));
    }
}

#[test]
fn a_failed_canary_halts_the_rollout_and_no_other_host_gets_the_release() {
    let mut fates = vec![Fate::Revert(300)];
    fates.extend([Fate::Converge(100); 4]);
    let mut world = World::new(&fates, 1);
    let rollout = setup(vec![tag("canary"), percent(100)]).start(&world);
    let rollout = run_until_settled(rollout, &mut world, 100, 100);
    match &rollout.phase {
        RolloutPhase::Halted(halted) => {
            assert_eq!(halted.wave, 0);
            assert_eq!(halted.failures, 1);
            assert!(
                halted.cause.starts_with("web-01 reverted"),
                "{}",
                halted.cause
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        state(&rollout, 1),
        HostState::Failed {
            kind: FailureKind::Reverted,
            ..
        }
    ));
    for n in 2..=5 {
        assert_eq!(state(&rollout, n), &HostState::Pending);
        assert!(
            world.hosts[&host(n)].directive.is_none(),
            "web-0{n} got a directive"
        );
    }
    assert!(rollout.is_settled());
    assert_eq!(
        rollout.rollback, None,
        "on-halt stop leaves the hosts as they are"
    );
}

#[test]
fn the_budget_tolerates_exactly_its_count_and_a_share_rounds_down() {
    let fates = [
        Fate::Fail(0),
        Fate::Converge(0),
        Fate::Revert(0),
        Fate::Converge(0),
    ];
    let mut world = World::new(&fates, 0);
    let mut one = setup(vec![count(2), percent(100)]);
    one.budget = FailureBudget::Count { count: 1 };
    let rollout = run_until_settled(one.start(&world), &mut world, 100, 100);
    // web-01 failed in wave 1 (tolerated), web-03 in wave 2 (one too many).
    match &rollout.phase {
        RolloutPhase::Halted(h) => {
            assert_eq!((h.wave, h.failures), (1, 2));
            assert!(h.cause.starts_with("web-03"), "{}", h.cause);
        }
        other => panic!("{other:?}"),
    }

    let mut world = World::new(&fates, 0);
    let mut share = setup(vec![percent(100)]);
    share.budget = FailureBudget::Percent { percent: 50 };
    let rollout = share.start(&world);
    assert_eq!(rollout.allowed_failures, 2);
    let rollout = run_until_settled(rollout, &mut world, 100, 100);
    assert!(matches!(rollout.phase, RolloutPhase::Completed(_)));
    assert_eq!(rollout.failures(), 2);
}

#[test]
fn on_halt_rollback_sends_the_moved_hosts_back_and_follows_them() {
    let fates = [
        Fate::Converge(0),
        Fate::Converge(0),
        Fate::Revert(200),
        Fate::Converge(5_000),
        Fate::Converge(0),
    ];
    let mut world = World::new(&fates, 0);
    let mut on_halt = setup(vec![count(1), count(4), percent(100)]);
    on_halt.on_halt = OnHalt::Rollback;
    let rollout = run_until_settled(on_halt.start(&world), &mut world, 100, 200);
    assert!(matches!(rollout.phase, RolloutPhase::Halted(_)));
    assert_eq!(
        rollout.rollback.map(|r| r.by),
        Some(RollbackCause::Halt),
        "{rollout:#?}"
    );
    let rollback = |n| rollout.hosts[&host(n)].rollback.clone();
    for n in [1, 2, 4] {
        assert!(
            matches!(rollback(n), Some(HostRollback::Done { .. })),
            "web-0{n}: {:?}",
            rollback(n)
        );
        assert_eq!(
            world.hosts[&host(n)].current,
            Some(closure(&host(n), OLD_HASH))
        );
    }
    // web-03 went back by itself; web-05 never got the release.
    assert!(matches!(rollback(3), Some(HostRollback::Skipped { .. })));
    assert_eq!(rollback(5), None);
    assert!(world.hosts[&host(5)].directive.is_none());
    assert!(rollout.is_settled());
}

#[test]
fn a_silent_host_fails_at_the_offline_deadline_and_a_control_plane_restart_resets_the_clock() {
    let mut world = World::new(&[Fate::Silent, Fate::Converge(0)], 0);
    let rollout = setup(vec![percent(100)]).start(&world);
    let (rollout, _) = observe_step(&rollout, &mut world);
    let assigned_at = world.now;
    assert_eq!(
        next_deadline(&rollout, &world.observe()),
        Some((
            assigned_at.plus(Millis(30_000)),
            Deadline::HostSilent { host: host(1) }
        ))
    );
    world.advance(20_000);
    // The control plane restarted: silence before it listened again does not count.
    world.watching_since = world.now;
    let (rollout, _) = observe_step(&rollout, &mut world);
    world.advance(29_999);
    let (rollout, _) = observe_step(&rollout, &mut world);
    assert!(matches!(state(&rollout, 1), HostState::InFlight { .. }));
    world.advance(1);
    let (rollout, _) = observe_step(&rollout, &mut world);
    match state(&rollout, 1) {
        HostState::Failed { kind, detail, .. } => {
            assert_eq!(*kind, FailureKind::Offline);
            assert!(detail.contains("30s"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(rollout.phase, RolloutPhase::Halted(_)));
}

#[test]
fn time_never_runs_backwards_inside_the_machine() {
    let mut world = World::new(&[Fate::Converge(0)], 0);
    let rollout = setup(vec![percent(100)]).start(&world);
    let (rollout, _) = observe_step(&rollout, &mut world);
    world.advance(10);
    let (rollout, _) = observe_step(&rollout, &mut world);
    let until = match rollout.phase {
        RolloutPhase::Running(p) => p.baking_until.unwrap(),
        other => panic!("{other:?}"),
    };
    let earlier = Timestamp(START.0 - 60_000);
    let (again, _) = step(&rollout, Event::Observed(world.observe()), earlier).unwrap();
    assert_eq!(again.clock, rollout.clock);
    assert_eq!(again.phase, rollout.phase, "{until:?}");
}

#[test]
fn a_host_that_is_gone_when_its_wave_starts_is_taken_out() {
    let mut world = World::new(&[Fate::Converge(0); 2], 0);
    let rollout = setup(vec![count(1), percent(100)]).start(&world);
    world.hosts.get_mut(&host(2)).unwrap().revoked = true;
    let rollout = run_until_settled(rollout, &mut world, 500, 20);
    assert!(matches!(rollout.phase, RolloutPhase::Completed(_)));
    match state(&rollout, 2) {
        HostState::TakenOut { why, .. } => assert!(why.contains("revoked"), "{why}"),
        other => panic!("{other:?}"),
    }
    let _: &HostId = &host(2);
}
