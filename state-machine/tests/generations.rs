//! The generations kept alive against garbage collection: which they are, when the set is sent,
//! and that no rollback switch ever goes to a generation outside the set sent before it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use fleetnode_state_machine::*;
use support::*;

/// The set in the step's `KeepGenerations`, which must be its first command when present.
fn kept(out: &Out) -> Option<BTreeSet<StorePath>> {
    let position = out
        .commands
        .iter()
        .position(|c| matches!(c, Command::KeepGenerations { .. }))?;
    assert_eq!(position, 0, "roots go first: {:?}", out.commands);
    match &out.commands[0] {
        Command::KeepGenerations { generations } => Some(generations.clone()),
        other => panic!("{other:?}"),
    }
}

fn set(closures: &[usize]) -> BTreeSet<StorePath> {
    closures.iter().map(|n| closure(*n)).collect()
}

/// Follows the roots the shell holds, as the steps set them.
struct Held(BTreeSet<StorePath>);

impl Held {
    fn track(&mut self, sim: &Sim, out: &Out) {
        if let Some(generations) = kept(out) {
            self.0 = generations;
        }
        assert_eq!(
            self.0,
            sim.state.generations_kept(),
            "the roots lag the state"
        );
        for command in &out.commands {
            if let Command::RunSwitch { job, .. } = command
                && job.purpose == SwitchPurpose::Rollback
            {
                assert!(
                    self.0.contains(&job.closure),
                    "rollback to {} which is not rooted: {:?}",
                    job.closure,
                    self.0
                );
            }
        }
    }
}

#[test]
fn every_start_sends_the_set_even_when_unchanged() {
    let mut sim = Sim::new();
    let out = sim.restart(committed_on(&closure(0)), false, None);
    assert_eq!(kept(&out), Some(set(&[0])));
}

#[test]
fn a_convergence_adds_the_new_generation_and_keeps_the_old_one() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    assert_eq!(sim.state.generations_kept(), set(&[0, 1]));
    sim.converge_on(2);
    assert_eq!(sim.state.generations_kept(), set(&[0, 1, 2]));
    // An input that changes nothing sends nothing.
    let out = sim.advance(1_000);
    assert_eq!(kept(&out), None);
}

#[test]
fn a_failed_target_is_released_once_the_host_is_back() {
    let mut sim = Sim::new();
    let mut held = Held(BTreeSet::new());
    sim.converge_on(1);
    held.0 = sim.state.generations_kept();
    let out = sim.activate(2);
    held.track(&sim, &out);
    let out = sim.realised(2);
    held.track(&sim, &out);
    let out = sim.switch_done(live(&closure(2), &closure(1)));
    held.track(&sim, &out);
    assert_eq!(
        held.0,
        set(&[0, 1, 2]),
        "the live target is kept while it runs"
    );
    // Its probe fails for good: the rollback to 1 must find 1 rooted.
    let out = sim.probe(web(), false);
    held.track(&sim, &out);
    let out = sim.advance(policy().health.sustained_failure_ms.0);
    held.track(&sim, &out);
    assert_eq!(sim.phase(), "rolling-back");
    let out = sim.switch_done(committed_on(&closure(1)));
    held.track(&sim, &out);
    assert_eq!(sim.phase(), "reverted");
    assert_eq!(held.0, set(&[0, 1]), "the rolled-back target is released");
}

#[test]
fn an_operator_rollback_goes_to_a_kept_generation() {
    let mut sim = Sim::new();
    sim.converge_on(1);
    sim.converge_on(2);
    let mut held = Held(sim.state.generations_kept());
    let out = sim.rollback(Some(0));
    held.track(&sim, &out);
    let (_, job) = run_switch(&out);
    assert_eq!(job.closure, closure(0));
}

/// Generation `n` of many (the support's `closure` has only a few).
fn generation(n: usize) -> StorePath {
    StorePath::parse(&format!("/nix/store/{n:0>32}-nixos-system-{n}")).unwrap()
}

/// Runs `target` through test-then-commit to converged; the step that converged.
fn converge(sim: &mut Sim, target: &StorePath) -> Out {
    sim.directive(DirectiveKind::Activate {
        target: target.clone(),
        mode: None,
        health: HealthOverrides::default(),
    });
    sim.step(Event::RealiseFinished {
        target: target.clone(),
        result: RealiseResult::Realised,
    });
    let profile = sim.system().profile.unwrap();
    sim.switch_done(live(target, &profile));
    sim.all_pass();
    sim.advance(SOAK);
    let out = sim.switch_done(committed_on(target));
    assert_eq!(sim.phase(), "converged");
    out
}

#[test]
fn generations_forgotten_as_known_good_are_released() {
    let mut sim = Sim::new();
    for n in 1..KNOWN_GOOD_CAP {
        converge(&mut sim, &generation(n));
    }
    assert!(sim.state.generations_kept().contains(&closure(0)));
    let out = converge(&mut sim, &generation(KNOWN_GOOD_CAP));
    let generations = kept(&out).expect("the set changed");
    assert!(!generations.contains(&closure(0)), "{generations:?}");
    assert!(generations.contains(&generation(1)), "{generations:?}");
    assert_eq!(generations.len(), KNOWN_GOOD_CAP);
}
