//! Properties of the rollout state machine over arbitrary fleets, waves, budgets, host fates,
//! operator commands and time steps:
//!
//! - never more hosts in flight than the current wave has, and only hosts of that wave;
//! - never a wave before every earlier wave's hosts are final and their bake has passed;
//! - a halt exactly when the failures exceed the budget, and no host moved after it;
//! - the same inputs give the same decisions, and the waves do not depend on input order;
//! - a rollout read back from its stored form mid-way (a control plane restart) decides
//!   exactly as the one that was never stopped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use std::collections::{BTreeMap, BTreeSet};

use fleetnode_control_plane::rollout::{Command, Event, Registration, plan, step};
use fleetnode_state_machine::{Directive, DirectiveKind, Revision};
use fleetnode_wire::{FailureBudget, HostId, HostState, OnHalt, Rollout, RolloutPhase, WaveSpec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rollout_support::*;

#[derive(Debug, Clone)]
enum Action {
    /// Time passes by this many milliseconds.
    Wait(u64),
    Pause,
    Resume,
    Abort,
    Rollback,
    /// `set-target --force` on host n.
    TakeOut(usize),
    /// An operator rolls host n back by hand; the rollout is not told.
    Foreign(usize),
}

#[derive(Debug, Clone)]
struct Scenario {
    fates: Vec<Fate>,
    canaries: usize,
    setup: Setup,
    actions: Vec<Action>,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        8 => (0u64..3_000).prop_map(Fate::Converge),
        1 => (0u64..3_000).prop_map(Fate::Revert),
        1 => (0u64..3_000).prop_map(Fate::Fail),
        1 => Just(Fate::Silent),
    ]
}

fn wave() -> impl Strategy<Value = WaveSpec> {
    prop_oneof![
        (1u64..6).prop_map(count),
        (1u8..=100).prop_map(percent),
        Just(tag("canary")),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        40 => (0u64..2_500).prop_map(Action::Wait),
        1 => Just(Action::Pause),
        2 => Just(Action::Resume),
        1 => Just(Action::Abort),
        1 => Just(Action::Rollback),
        1 => (1usize..10).prop_map(Action::TakeOut),
        1 => (1usize..10).prop_map(Action::Foreign),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let budget = prop_oneof![
        (0u64..3).prop_map(|count| FailureBudget::Count { count }),
        (0u8..=60).prop_map(|percent| FailureBudget::Percent { percent }),
    ];
    let on_halt = prop_oneof![Just(OnHalt::Stop), Just(OnHalt::Rollback)];
    (
        prop::collection::vec(fate(), 1..10),
        0usize..3,
        prop::collection::vec(wave(), 0..4),
        0u64..3_000,
        budget,
        on_halt,
        1_000u64..8_000,
        prop::collection::vec(action(), 1..120),
    )
        .prop_map(
            |(fates, canaries, mut waves, bake, budget, on_halt, offline_deadline, actions)| {
                waves.push(percent(100));
                Scenario {
                    canaries: canaries.min(fates.len()),
                    fates,
                    setup: Setup {
                        waves,
                        bake,
                        budget,
                        on_halt,
                        offline_deadline,
                        approval: fleetnode_wire::ApprovalPolicy::Never,
                    },
                    actions,
                }
            },
        )
}

/// Every decision of a run: the rollout after each observation and the commands it gave.
type Trace = Vec<(Rollout, Vec<Command>)>;

/// What the checks remember across a run.
#[derive(Default)]
struct Oracle {
    activated: BTreeSet<HostId>,
    /// When each host first came to rest for the rollout (converged, failed or taken out).
    final_at: BTreeMap<HostId, fleetnode_wire::Timestamp>,
}

/// Runs a scenario, checking every property after every step; with `restart_at`, the rollout
/// is read back from its stored form before that action.
fn run(scenario: &Scenario, restart_at: Option<usize>) -> Result<Trace, TestCaseError> {
    let mut world = World::new(&scenario.fates, scenario.canaries);
    let Ok(mut rollout) = plan::start(
        &scenario.setup.request(&world),
        fleetnode_wire::RolloutId(1),
        &world.registrations(),
        &BTreeMap::new(),
        world.now,
    ) else {
        // A tag wave without tagged hosts: refused before anything starts.
        prop_assume!(scenario.canaries == 0);
        return Ok(Vec::new());
    };
    let mut oracle = Oracle::default();
    let mut trace = Vec::new();
    for (index, action) in scenario.actions.iter().enumerate() {
        if restart_at == Some(index) {
            let stored = serde_json::to_vec(&rollout).unwrap();
            rollout = serde_json::from_slice(&stored).unwrap();
        }
        rollout = act(&rollout, action, &mut world);
        let before = rollout.clone();
        let (after, commands) = step(&rollout, Event::Observed(world.observe()), world.now)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&before, &after, &commands, &world, &mut oracle)?;
        world.apply(&commands);
        trace.push((after.clone(), commands));
        rollout = after;
    }
    Ok(trace)
}

/// Carries out one action of the scenario.
fn act(rollout: &Rollout, action: &Action, world: &mut World) -> Rollout {
    let now = world.now;
    let request = |event| {
        step(rollout, event, now).map_or_else(
            |_refused| rollout.clone(),
            |(next, commands)| {
                assert!(commands.is_empty(), "an operator request gave commands");
                next
            },
        )
    };
    match action {
        Action::Wait(span) => {
            world.advance(*span);
            rollout.clone()
        }
        Action::Pause => request(Event::PauseRequested),
        Action::Resume => request(Event::ResumeRequested),
        Action::Abort => request(Event::AbortRequested),
        Action::Rollback => request(Event::RollbackRequested),
        Action::TakeOut(n) | Action::Foreign(n) => {
            let id = host(*n);
            if !world.hosts.contains_key(&id) {
                return rollout.clone();
            }
            let next = match action {
                Action::TakeOut(_) if rollout.owns(&id) => request(Event::HostTakenOut {
                    host: id.clone(),
                    why: "set-target --force".into(),
                }),
                Action::TakeOut(_) => return rollout.clone(),
                _ => rollout.clone(),
            };
            let revision = Revision(world.hosts[&id].revision.0 + 1);
            world.give(
                &id,
                Directive {
                    revision,
                    kind: DirectiveKind::Rollback { to: None },
                },
            );
            next
        }
    }
}

fn check(
    before: &Rollout,
    after: &Rollout,
    commands: &[Command],
    world: &World,
    oracle: &mut Oracle,
) -> Result<(), TestCaseError> {
    for (host, progress) in &after.hosts {
        let at = match &progress.state {
            HostState::Converged { at, revision, .. } => {
                let acted = world.hosts[host].resolved.get(revision).copied();
                prop_assert!(
                    acted.is_some_and(|acted| acted <= *at),
                    "{} judged converged before its agent converged",
                    host
                );
                Some(*at)
            }
            HostState::Failed { at, .. } | HostState::TakenOut { at, .. } => Some(*at),
            HostState::Pending | HostState::InFlight { .. } => None,
        };
        if let Some(at) = at {
            oracle.final_at.entry(host.clone()).or_insert(at);
        }
    }
    for (host, progress) in &after.hosts {
        if let HostState::InFlight { revision, .. } = progress.state {
            let sim = &world.hosts[host];
            let ours = sim.directive.as_ref().map(|d| d.revision) == Some(revision);
            prop_assert!(
                !(ours && sim.handled == Some(revision)),
                "{} is still in flight though its agent came to rest {} on the release",
                host,
                sim.phase.name()
            );
        }
    }
    let wave = after.wave();
    let in_flight: Vec<(&HostId, usize)> = after
        .hosts
        .iter()
        .filter(|(_, p)| matches!(p.state, HostState::InFlight { .. }))
        .map(|(h, p)| (h, p.wave))
        .collect();
    prop_assert!(
        in_flight.len() <= after.waves[wave].hosts.len(),
        "more hosts in flight than wave {wave} has: {in_flight:?}"
    );
    prop_assert!(
        in_flight.iter().all(|(_, w)| *w == wave),
        "hosts in flight outside the current wave {wave}: {in_flight:?}"
    );
    for command in commands {
        let Command::SetDirective { host, directive } = command;
        let progress = &after.hosts[host];
        match directive.kind {
            DirectiveKind::Activate { .. } => {
                prop_assert!(
                    before.is_active(),
                    "{host} given the release after the rollout ended"
                );
                prop_assert_eq!(progress.wave, wave);
                prop_assert!(
                    oracle.activated.insert(host.clone()),
                    "{} given the release twice",
                    host
                );
                check_gate(after, progress.wave, world, oracle)?;
            }
            DirectiveKind::Rollback { .. } => {
                prop_assert!(
                    after.rollback.is_some(),
                    "{host} sent back without an order"
                );
                prop_assert!(
                    oracle.activated.contains(host),
                    "{host} sent back but never moved"
                );
            }
        }
    }
    let failures = after.failures();
    match &after.phase {
        RolloutPhase::Running(_) | RolloutPhase::Paused(_) => prop_assert!(
            failures <= after.allowed_failures,
            "{failures} failures over {} allowed and still active",
            after.allowed_failures
        ),
        RolloutPhase::Halted(halted) => {
            prop_assert!(halted.failures > after.allowed_failures);
            if before.is_active() {
                prop_assert_eq!(halted.failures, failures);
            }
        }
        RolloutPhase::Completed(_) | RolloutPhase::Aborted(_) => {}
    }
    if !before.is_active() {
        for (host, progress) in &before.hosts {
            if progress.state == HostState::Pending {
                prop_assert_eq!(&after.hosts[host].state, &HostState::Pending);
            }
        }
    }
    Ok(())
}

/// Every earlier wave's hosts are final, and the latest of them came to rest at least one
/// bake before now.
fn check_gate(
    rollout: &Rollout,
    wave: usize,
    world: &World,
    oracle: &Oracle,
) -> Result<(), TestCaseError> {
    for earlier in &rollout.waves[..wave] {
        let mut latest = None;
        for host in &earlier.hosts {
            let state = &rollout.hosts[host].state;
            let at = oracle.final_at.get(host).copied();
            prop_assert!(
                at.is_some(),
                "wave {} started while {} of an earlier wave is {}",
                wave + 1,
                host,
                state.name()
            );
            latest = latest.max(at);
        }
        if let Some(latest) = latest {
            prop_assert!(
                world.now >= latest.plus(rollout.bake_ms),
                "wave {} started {}ms after an earlier wave came to rest, bake {}",
                wave + 1,
                world.now.since(latest).0,
                rollout.bake_ms
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_run_keeps_the_rollout_properties_and_is_deterministic(scenario in scenario()) {
        let first = run(&scenario, None)?;
        let second = run(&scenario, None)?;
        prop_assert_eq!(first, second);
    }

    #[test]
    fn a_restart_resumes_exactly_where_the_rollout_was(
        scenario in scenario(),
        at in any::<prop::sample::Index>(),
    ) {
        let whole = run(&scenario, None)?;
        let restart_at = at.index(scenario.actions.len());
        let restarted = run(&scenario, Some(restart_at))?;
        prop_assert_eq!(whole, restarted);
    }

    #[test]
    fn waves_split_the_release_whatever_order_it_comes_in(
        hosts in prop::collection::btree_set(1usize..60, 1..25),
        tagged in prop::collection::btree_set(1usize..60, 0..5),
        mut waves in prop::collection::vec(wave(), 0..5),
        seed in any::<u64>(),
    ) {
        waves.push(percent(100));
        let ids: Vec<HostId> = hosts.iter().map(|n| host(*n)).collect();
        let registered: BTreeMap<HostId, Registration> = hosts
            .iter()
            .map(|n| {
                let tags = if tagged.contains(n) { vec![fleetnode_wire::Tag::parse("canary").unwrap()] } else { Vec::new() };
                (host(*n), Registration { tags, revoked: false })
            })
            .collect();
        let mut shuffled: Vec<&HostId> = ids.iter().collect();
        let mut state = seed;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            shuffled.swap(i, usize::try_from(state >> 33).unwrap() % (i + 1));
        }
        let ordered: Vec<&HostId> = ids.iter().collect();
        let planned = plan::plan(&ordered, &registered, &waves);
        prop_assert_eq!(&planned, &plan::plan(&shuffled, &registered, &waves));
        let Ok(planned) = planned else { return Ok(()) };
        let mut seen = BTreeSet::new();
        let mut covered = 0;
        for (wave, spec) in planned.iter().zip(&waves) {
            for host in &wave.hosts {
                prop_assert!(seen.insert(host.clone()), "{} in two waves", host);
            }
            let widened = covered < ids.len();
            covered += wave.hosts.len();
            match spec {
                WaveSpec::Count { .. } | WaveSpec::Percent { .. } => {
                    prop_assert_eq!(!wave.hosts.is_empty(), widened);
                }
                WaveSpec::Tag { tag } => {
                    for host in &wave.hosts {
                        prop_assert!(registered[host].tags.contains(tag));
                    }
                }
            }
        }
        prop_assert_eq!(seen.len(), ids.len());
    }
}
