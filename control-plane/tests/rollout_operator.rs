//! The operator's commands on a rollout: pause and resume, abort, roll back, approve a wave,
//! take a host out, and a host given another directive behind the rollout's back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use fleetnode_control_plane::rollout::{Command, Event, RolloutError, step};
use fleetnode_state_machine::{Directive, DirectiveKind, Revision};
use fleetnode_wire::{ApprovalPolicy, HostRollback, HostState, RolloutId, RolloutPhase};
use rollout_support::*;

#[test]
fn a_paused_rollout_starts_no_wave_but_still_halts_on_failures() {
    let mut world = World::new(&[Fate::Converge(0), Fate::Revert(0), Fate::Converge(0)], 0);
    let mut paused = setup(vec![count(1), percent(100)]);
    paused.bake = 0;
    let rollout = paused.start(&world);
    let (rollout, _) = observe_step(&rollout, &mut world);
    let (rollout, none) = step(&rollout, Event::PauseRequested, world.now).unwrap();
    assert!(none.is_empty());
    assert_eq!(
        step(&rollout, Event::PauseRequested, world.now).unwrap_err(),
        RolloutError::Nothing {
            id: RolloutId(1),
            phase: "paused",
            what: "pause"
        }
    );
    world.advance(100);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty(), "a paused rollout started a wave");
    assert!(matches!(state(&rollout, 1), HostState::Converged { .. }));
    let (rollout, _) = step(&rollout, Event::ResumeRequested, world.now).unwrap();
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-02", "web-03"]);
    let (rollout, _) = step(&rollout, Event::PauseRequested, world.now).unwrap();
    world.advance(100);
    let (rollout, _) = observe_step(&rollout, &mut world);
    assert!(
        matches!(rollout.phase, RolloutPhase::Halted(_)),
        "{:?}",
        rollout.phase
    );
    assert!(step(&rollout, Event::ResumeRequested, world.now).is_err());
    assert!(step(&rollout, Event::AbortRequested, world.now).is_err());
}

#[test]
fn an_operator_rollback_of_a_completed_rollout_skips_hosts_that_moved_on() {
    let mut world = World::new(&[Fate::Converge(0); 3], 0);
    let mut quick = setup(vec![percent(100)]);
    quick.bake = 0;
    let rollout = run_until_settled(quick.start(&world), &mut world, 100, 20);
    assert!(matches!(rollout.phase, RolloutPhase::Completed(_)));
    // An operator gave web-03 something else since.
    let revision = Revision(world.hosts[&host(3)].revision.0 + 1);
    world.give(
        &host(3),
        Directive {
            revision,
            kind: DirectiveKind::Rollback { to: None },
        },
    );
    let (rollout, _) = step(&rollout, Event::RollbackRequested, world.now).unwrap();
    assert!(step(&rollout, Event::RollbackRequested, world.now).is_err());
    let (rollout, commands) = observe_step(&rollout, &mut world);
    let back: Vec<String> = commands
        .iter()
        .map(|Command::SetDirective { host, .. }| host.to_string())
        .collect();
    assert_eq!(back, ["web-01", "web-02"]);
    assert!(matches!(
        rollout.hosts[&host(3)].rollback,
        Some(HostRollback::Skipped { .. })
    ));
    world.advance(100);
    let (rollout, _) = observe_step(&rollout, &mut world);
    assert_eq!(rollout.counts().rolled_back, 2);
    assert!(rollout.is_settled());
}

#[test]
fn hosts_leave_a_rollout_when_taken_out_or_given_another_directive() {
    let mut world = World::new(&[Fate::Converge(1_000); 3], 0);
    let rollout = setup(vec![percent(100)]).start(&world);
    let (rollout, _) = observe_step(&rollout, &mut world);
    let taken = Event::HostTakenOut {
        host: host(1),
        why: "set-target --force".into(),
    };
    let (rollout, _) = step(&rollout, taken.clone(), world.now).unwrap();
    assert!(!rollout.owns(&host(1)));
    assert!(matches!(
        step(&rollout, taken, world.now),
        Err(RolloutError::NotOwned { .. })
    ));
    // web-02 is rolled back by hand: the rollout notices at its next look.
    let revision = Revision(world.hosts[&host(2)].revision.0 + 1);
    world.give(
        &host(2),
        Directive {
            revision,
            kind: DirectiveKind::Rollback { to: None },
        },
    );
    let rollout = run_until_settled(rollout, &mut world, 500, 50);
    assert!(matches!(state(&rollout, 2), HostState::TakenOut { .. }));
    assert!(matches!(rollout.phase, RolloutPhase::Completed(_)));
    assert_eq!(rollout.counts().taken_out, 2);
    assert_eq!(rollout.failures(), 0);
}

#[test]
fn with_approval_required_every_wave_waits_for_the_operator() {
    let mut world = World::new(&[Fate::Converge(0); 3], 0);
    let mut gated = setup(vec![count(1), percent(100)]);
    gated.bake = 0;
    gated.approval = ApprovalPolicy::Always;
    let rollout = gated.start(&world);

    // Nothing is given before the first approval, however often the rollout is observed.
    let refused = |rollout| step(rollout, Event::ApproveRequested, START);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty());
    assert_eq!(rollout.awaiting_approval, Some(START));
    world.advance(1_000);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty());
    assert_eq!(
        rollout.awaiting_approval,
        Some(START),
        "waiting since it began to"
    );

    // The approval lets wave 1 start, and only wave 1.
    let (approved, commands) = step(&rollout, Event::ApproveRequested, world.now).unwrap();
    assert!(commands.is_empty(), "an approval gives nothing by itself");
    assert_eq!(approved.approved_wave, Some(0));
    assert_eq!(approved.awaiting_approval, None);
    let (rollout, commands) = observe_step(&approved, &mut world);
    assert_eq!(assigned(&commands), ["web-01"]);
    assert!(matches!(
        refused(&rollout).unwrap_err(),
        RolloutError::NotAwaitingApproval { .. }
    ));
    world.advance(100);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty(), "wave 2 waits: {commands:?}");
    assert!(rollout.awaiting_approval.is_some());
    assert!(matches!(state(&rollout, 1), HostState::Converged { .. }));

    // Paused, it waits for nothing and an approval is refused; resumed, it waits again.
    let (paused, _) = step(&rollout, Event::PauseRequested, world.now).unwrap();
    assert_eq!(paused.awaiting_approval, None);
    assert!(matches!(
        refused(&paused).unwrap_err(),
        RolloutError::NotAwaitingApproval {
            phase: "paused",
            ..
        }
    ));
    let (resumed, _) = step(&paused, Event::ResumeRequested, world.now).unwrap();
    let (rollout, commands) = observe_step(&resumed, &mut world);
    assert!(commands.is_empty());
    let (rollout, _) = step(&rollout, Event::ApproveRequested, world.now).unwrap();
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-02", "web-03"]);
    let rollout = run_until_settled(rollout, &mut world, 100, 50);
    assert!(
        matches!(rollout.phase, RolloutPhase::Completed(_)),
        "{:?}",
        rollout.phase
    );
    assert!(matches!(
        refused(&rollout).unwrap_err(),
        RolloutError::NotAwaitingApproval {
            phase: "completed",
            ..
        }
    ));
}
