//! Invariants over arbitrary event sequences (including illegal, duplicated and reordered
//! ones) with arbitrary time steps, going forwards and backwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use fleetnode_state_machine::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use support::{closure, committed_on, policy, web};

/// What the world does next, relative to what the machine is doing.
#[derive(Debug, Clone)]
enum Action {
    Activate {
        target: usize,
        mode: Option<ActivationMode>,
        halt: bool,
        soak_ms: u64,
    },
    Rollback {
        to: Option<usize>,
    },
    /// Re-send the directive with the given offset from the latest revision (0 = same).
    OldDirective(u64),
    RealiseOk,
    RealiseFailed,
    RealiseOther(usize),
    /// The switch in flight ends (or a bogus id, when `bogus`).
    SwitchEnds {
        end: End,
        current: Choice,
        profile: Choice,
        bogus: bool,
    },
    Probe {
        which: usize,
        passed: bool,
        stale: bool,
    },
    Tick,
    Pause,
    Resume,
    Restart {
        reboot: bool,
        current: Choice,
        profile: Choice,
        unit: u8,
    },
    /// Replay one of the events already applied.
    Replay(usize),
    /// The control plane answers with its hold flag set or not.
    ControlPlaneHold(bool),
    /// The answer to an agent-upgrade check.
    UpgradeChecked(bool),
    /// The control plane asks for a snapshot, its log ending this far from ten below the
    /// agent's seq (so below, at or above it).
    Resync(u64),
}

/// How a switch ends in a generated run.
#[derive(Debug, Clone, Copy)]
enum End {
    Exit(i32),
    /// It exited non-zero because another switch held the lock.
    LostLock,
    /// It was not launched because the lock was held.
    LockHeld,
    Vanished,
    NotLaunched,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        6 => Just(End::Exit(0)),
        2 => Just(End::Exit(1)),
        1 => Just(End::Exit(4)),
        1 => Just(End::LostLock),
        1 => Just(End::LockHeld),
        1 => Just(End::Vanished),
        1 => Just(End::NotLaunched),
    ]
}

/// A closure to observe: the work's target, the known-good one, or a fixed one.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Target,
    Previous,
    Fixed(usize),
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        4 => Just(Choice::Target),
        3 => Just(Choice::Previous),
        1 => (0usize..4).prop_map(Choice::Fixed),
    ]
}

fn mode() -> impl Strategy<Value = Option<ActivationMode>> {
    prop_oneof![
        Just(None),
        Just(Some(ActivationMode::TestThenCommit)),
        Just(Some(ActivationMode::Switch)),
        Just(Some(ActivationMode::Boot)),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0usize..4, mode(), any::<bool>(), 0u64..400_000).prop_map(|(target, mode, halt, soak_ms)| {
            Action::Activate { target, mode, halt, soak_ms }
        }),
        1 => proptest::option::of(0usize..4).prop_map(|to| Action::Rollback { to }),
        1 => (0u64..3).prop_map(Action::OldDirective),
        3 => Just(Action::RealiseOk),
        1 => Just(Action::RealiseFailed),
        1 => (0usize..4).prop_map(Action::RealiseOther),
        4 => (end(), choice(), choice(), proptest::bool::weighted(0.1))
            .prop_map(|(end, current, profile, bogus)| Action::SwitchEnds { end, current, profile, bogus }),
        6 => (0usize..4, proptest::bool::weighted(0.7), proptest::bool::weighted(0.1))
            .prop_map(|(which, passed, stale)| Action::Probe { which, passed, stale }),
        4 => Just(Action::Tick),
        1 => Just(Action::Pause),
        1 => Just(Action::Resume),
        1 => (any::<bool>(), choice(), choice(), 0u8..4).prop_map(|(reboot, current, profile, unit)| {
            Action::Restart { reboot, current, profile, unit }
        }),
        1 => (0usize..64).prop_map(Action::Replay),
        1 => any::<bool>().prop_map(Action::ControlPlaneHold),
        1 => proptest::bool::weighted(0.3).prop_map(Action::UpgradeChecked),
        1 => (0u64..30).prop_map(Action::Resync),
    ]
}

/// A time step in milliseconds; sometimes backwards.
fn time_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0i64..20_000,
        3 => 0i64..700_000,
        1 => -300_000i64..0,
    ]
}

struct World {
    state: State,
    now: i64,
    revision: u64,
    boot: u32,
    applied: Vec<Event>,
    emitted: Vec<OutboundEvent>,
    /// Host state after each emitted event's step, by the seq of the step's last event.
    host_after: BTreeMap<u64, Host>,
    switch_ends: BTreeMap<SwitchId, u32>,
    max_revision: Option<Revision>,
    control_plane_paused: bool,
}

impl World {
    fn new() -> Self {
        let mut world = Self {
            state: State::default(),
            now: 10_000_000,
            revision: 0,
            boot: 1,
            applied: Vec::new(),
            emitted: Vec::new(),
            host_after: BTreeMap::new(),
            switch_ends: BTreeMap::new(),
            max_revision: None,
            control_plane_paused: false,
        };
        let start = Event::Started(Observation {
            system: committed_on(&closure(0)),
            boot_id: Some("boot-1".into()),
            switch_unit: None,
            store_reset: None,
            policy: policy(),
        });
        world.apply(start).unwrap();
        world
    }

    fn pick(&self, choice: Choice) -> StorePath {
        let work = self.state.host.phase.work();
        match choice {
            Choice::Target => work.map_or(closure(1), |w| w.target.clone()),
            Choice::Previous => work
                .and_then(|w| w.previous.clone())
                .or_else(|| self.state.host.known_good.last().cloned())
                .unwrap_or(closure(0)),
            Choice::Fixed(n) => closure(n),
        }
    }

    fn event_for(&mut self, action: &Action) -> Option<Event> {
        let host = &self.state.host;
        Some(match action {
            Action::Activate {
                target,
                mode,
                halt,
                soak_ms,
            } => {
                self.revision += 1;
                self.answer(Directive {
                    revision: Revision(self.revision),
                    kind: DirectiveKind::Activate {
                        target: closure(*target),
                        mode: *mode,
                        health: HealthOverrides {
                            soak_ms: Some(Millis(*soak_ms)),
                            sustained_failure_ms: None,
                            on_failure: halt.then_some(FailurePolicy::Halt),
                        },
                    },
                })
            }
            Action::Rollback { to } => {
                self.revision += 1;
                self.answer(Directive {
                    revision: Revision(self.revision),
                    kind: DirectiveKind::Rollback {
                        to: to.map(closure),
                    },
                })
            }
            Action::OldDirective(back) => {
                let mut d = host.desired.clone()?;
                d.revision = Revision(d.revision.0.saturating_sub(*back));
                self.answer(d)
            }
            Action::RealiseOk | Action::RealiseFailed => {
                let target = match &host.phase {
                    Phase::Realising(p) => p.work.target.clone(),
                    _ => closure(1),
                };
                let result = match action {
                    Action::RealiseOk => RealiseResult::Realised,
                    _ => RealiseResult::Failed {
                        message: "missing".into(),
                    },
                };
                Event::RealiseFinished { target, result }
            }
            Action::RealiseOther(n) => Event::RealiseFinished {
                target: closure(*n),
                result: RealiseResult::Realised,
            },
            Action::SwitchEnds {
                end,
                current,
                profile,
                bogus,
            } => {
                let switch = match (host.phase.running_switch(), bogus) {
                    (Some(id), false) => id,
                    (Some(id), true) => SwitchId(id.0 + 1000),
                    (None, _) => SwitchId(7),
                };
                let system = SystemView {
                    current: Some(self.pick(*current)),
                    booted: host.system.booted.clone(),
                    profile: Some(self.pick(*profile)),
                };
                let exit = |code, tail: &str| {
                    SwitchEnd::Exited(SwitchExit {
                        code: Some(code),
                        output_tail: tail.into(),
                    })
                };
                let end = match end {
                    End::Exit(code) => exit(*code, "tail"),
                    End::LostLock => exit(1, "Could not acquire lock"),
                    End::LockHeld => SwitchEnd::LockHeld,
                    End::Vanished => SwitchEnd::Vanished,
                    End::NotLaunched => SwitchEnd::NotLaunched {
                        error: "no bus".into(),
                    },
                };
                Event::SwitchFinished {
                    switch,
                    end,
                    system,
                }
            }
            Action::Probe {
                which,
                passed,
                stale,
            } => {
                let probe = match which {
                    0 => web(),
                    1 => support::metrics_probe(),
                    2 => ProbeId::control_plane(),
                    _ => ProbeId::parse("unknown").unwrap(),
                };
                let epoch = if *stale {
                    host.probe_epoch.wrapping_sub(1)
                } else {
                    host.probe_epoch
                };
                Event::ProbeResult(ProbeResult {
                    probe,
                    epoch,
                    passed: *passed,
                    detail: String::new(),
                })
            }
            Action::Tick => Event::Tick,
            Action::Pause => Event::PauseRequested,
            Action::Resume => Event::ResumeRequested,
            Action::Restart {
                reboot,
                current,
                profile,
                unit,
            } => {
                if *reboot {
                    self.boot += 1;
                }
                let current = self.pick(*current);
                let system = SystemView {
                    booted: Some(if *reboot { current.clone() } else { closure(0) }),
                    current: Some(current),
                    profile: Some(self.pick(*profile)),
                };
                let switch_unit = match unit {
                    0 => None,
                    1 => Some(UnitState::Running),
                    2 => Some(UnitState::Gone),
                    _ => Some(UnitState::Exited(SwitchExit {
                        code: Some(1),
                        output_tail: String::new(),
                    })),
                };
                Event::Started(Observation {
                    system,
                    boot_id: Some(format!("boot-{}", self.boot)),
                    switch_unit,
                    store_reset: None,
                    policy: policy(),
                })
            }
            Action::Replay(i) => {
                if self.applied.is_empty() {
                    return None;
                }
                self.applied[i % self.applied.len()].clone()
            }
            Action::ControlPlaneHold(paused) => {
                self.control_plane_paused = *paused;
                Event::DesiredObserved(DesiredState {
                    revision: Revision(self.revision),
                    directive: host.desired.clone(),
                    paused: *paused,
                })
            }
            Action::UpgradeChecked(changed) => Event::AgentUpgradeChecked {
                upgrade: changed.then(|| "a new agent".to_owned()),
            },
            Action::Resync(offset) => {
                let log_end = host.seq.saturating_sub(10) + offset;
                Event::ResyncRequested {
                    log_end,
                    cause: ResyncCause::ControlPlaneLog { log_end },
                }
            }
        })
    }

    /// The control plane's answer carrying `directive` and its hold flag.
    fn answer(&self, directive: Directive) -> Event {
        Event::DesiredObserved(DesiredState {
            revision: directive.revision,
            directive: Some(directive),
            paused: self.control_plane_paused,
        })
    }

    /// Applies an event and checks every per-step invariant.
    fn apply(&mut self, event: Event) -> Result<(), TestCaseError> {
        let before = self.state.clone();
        let now = Timestamp(self.now.max(0) as u64);
        let result = step(&before, event.clone(), now);
        // Deterministic.
        prop_assert_eq!(&result, &step(&before, event.clone(), now));
        let Ok(Step {
            state: after,
            events,
            commands,
        }) = result
        else {
            return Ok(());
        };
        check_step(self, &before, &event, &after, &events, &commands)?;
        self.max_revision = self
            .max_revision
            .max(after.host.desired.as_ref().map(|d| d.revision));
        self.emitted.extend(events);
        if after.host.seq != before.host.seq {
            self.host_after.insert(after.host.seq, after.host.clone());
        }
        self.applied.push(event);
        self.state = after;
        Ok(())
    }
}

fn check_step(
    world: &mut World,
    before: &State,
    event: &Event,
    after: &State,
    events: &[OutboundEvent],
    commands: &[Command],
) -> Result<(), TestCaseError> {
    // Seqs increase by exactly one, across steps too; a snapshot may jump (it covers every
    // seq before it), above the control plane's log end.
    let mut seq = before.host.seq;
    for ev in events {
        match (&ev.report, event) {
            (Report::Snapshot { .. }, Event::ResyncRequested { log_end, .. }) => {
                prop_assert_eq!(ev.seq, seq.max(*log_end) + 1);
            }
            _ => prop_assert_eq!(ev.seq, seq + 1),
        }
        seq = ev.seq;
    }
    prop_assert_eq!(after.host.seq, seq);

    // The shell restarts into a new agent only with no work in progress.
    if commands
        .iter()
        .any(|c| matches!(c, Command::Restart { .. }))
    {
        prop_assert!(after.host.phase.is_at_rest());
        let asked = matches!(event, Event::AgentUpgradeChecked { upgrade: Some(_) });
        prop_assert!(asked, "restart without an upgrade: {:?}", event);
    }

    // At most one switch in flight: a new switch starts only once the previous one ended
    // (finished, aborted, or found ended by recovery).
    let runs: Vec<(SwitchId, SwitchJob)> = commands
        .iter()
        .filter_map(|e| match e {
            Command::RunSwitch { switch, job } => Some((*switch, job.clone())),
            _ => None,
        })
        .collect();
    prop_assert!(runs.len() <= 1, "two switches launched at once: {:?}", runs);
    if let Some((id, job)) = runs.first() {
        prop_assert_eq!(after.host.phase.running_switch(), Some(*id));
        if let Some(previous) = before.host.phase.running_switch() {
            let finished =
                matches!(event, Event::SwitchFinished { switch, .. } if *switch == previous);
            let aborted = commands.contains(&Command::AbortSwitch { switch: previous });
            let recovered = matches!(event, Event::Started(_));
            // A switch that found the lock taken is launched again under its own id.
            let relaunched = *id == previous
                && before
                    .relaunch
                    .is_some_and(|relaunch| relaunch.switch == previous);
            prop_assert!(
                finished || aborted || recovered || relaunched,
                "switch {} still running",
                previous
            );
        }
        // Every rollback target was a known-good closure.
        if job.purpose == SwitchPurpose::Rollback {
            prop_assert!(
                before.host.known_good.contains(&job.closure),
                "rollback to {} which is not known good ({:?})",
                job.closure,
                before.host.known_good
            );
        }
    }

    // Every started switch ends in exactly one terminal outcome.
    for ev in events {
        if let Report::SwitchEnded { switch, .. } = &ev.report {
            let count = world.switch_ends.entry(*switch).or_default();
            *count += 1;
            prop_assert_eq!(*count, 1, "switch {} ended twice", switch);
        }
    }
    if let Event::SwitchFinished { switch, .. } = event
        && after
            .relaunch
            .is_none_or(|relaunch| relaunch.switch != *switch)
    {
        prop_assert_ne!(after.host.phase.running_switch(), Some(*switch));
    }

    // Converged implies the target runs committed, and when reached through a soak: the soak
    // time elapsed and every enforce probe passed since the activation.
    if let Phase::Converged(c) = &after.host.phase {
        prop_assert!(
            after.host.system.is_committed_on(&c.target),
            "{:?}",
            after.host.system
        );
    }
    let soak_ended = events.iter().any(|ev| {
        matches!(ev.report, Report::CommitStarted { .. })
            || (matches!(ev.report, Report::Converged { .. })
                && matches!(before.host.phase, Phase::Soaking(_)))
    });
    if soak_ended {
        let Phase::Soaking(soaking) = &before.host.phase else {
            return Err(TestCaseError::fail("soak ended without soaking"));
        };
        prop_assert!(after.clock >= soaking.until);
        for probe in after.host.policy.enforced() {
            let record = after
                .probes
                .records
                .get(&probe)
                .cloned()
                .unwrap_or_default();
            prop_assert!(
                record.passed && record.failing_since.is_none(),
                "{} not passing",
                probe
            );
        }
    }

    // The latest directive is never silently lost: it is recorded, and a host at rest that
    // is not paused has acted on it.
    prop_assert_eq!(
        after.host.desired.as_ref().map(|d| d.revision),
        world.max_revision.max(match event {
            Event::DesiredObserved(DesiredState {
                directive: Some(d), ..
            }) => Some(d.revision),
            _ => None,
        })
    );
    if let Some(desired) = &after.host.desired
        && after.host.phase.is_at_rest()
        && !after.host.paused
    {
        prop_assert!(after.host.handled >= Some(desired.revision));
    }

    // Time never runs backwards inside the machine.
    prop_assert!(after.clock >= before.clock);
    Ok(())
}

fn run(actions: &[(i64, Action)]) -> Result<World, TestCaseError> {
    let mut world = World::new();
    for (dt, action) in actions {
        world.now += dt;
        if let Some(event) = world.event_for(action) {
            world.apply(event)?;
        }
    }
    Ok(world)
}

fn feed(mirror: &mut State, event: &OutboundEvent) {
    mirror::apply(mirror, event).expect("the mirror accepts every event in order");
}

proptest! {
    // 512 cases by default; PROPTEST_CASES raises it for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_over_arbitrary_sequences(
        actions in proptest::collection::vec((time_step(), action()), 1..120)
    ) {
        run(&actions)?;
    }

    #[test]
    fn mirror_converges_with_duplicates_and_after_any_prefix(
        actions in proptest::collection::vec((time_step(), action()), 1..80),
        duplicates in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let world = run(&actions)?;
        let mut mirror = State::default();
        let mut delivered = 0usize;
        for (i, event) in world.emitted.iter().enumerate() {
            feed(&mut mirror, event);
            delivered = i + 1;
            // Re-deliver some earlier events: acknowledged and ignored.
            for dup in &duplicates {
                if dup.index(world.emitted.len()) <= i {
                    let earlier = &world.emitted[dup.index(world.emitted.len())];
                    let before = mirror.clone();
                    prop_assert_eq!(mirror::apply(&mut mirror, earlier), Ok(mirror::Applied::Duplicate));
                    prop_assert_eq!(&before, &mirror);
                }
            }
            if let Some(host) = world.host_after.get(&event.seq) {
                prop_assert_eq!(&mirror.host, host, "mirror differs after seq {}", event.seq);
            }
        }
        prop_assert_eq!(delivered, world.emitted.len());
        prop_assert_eq!(&mirror.host, &world.state.host);
    }

    #[test]
    fn mirror_converges_with_compacted_probe_observations(
        actions in proptest::collection::vec((time_step(), action()), 1..80),
    ) {
        let world = run(&actions)?;
        // Compact the whole queue with the machine's own plan, twice (a full queue compacts
        // again as it grows), exactly as the agent's store applies it.
        let mut queue: BTreeMap<u64, OutboundEvent> =
            world.emitted.iter().map(|e| (e.seq, e.clone())).collect();
        for _ in 0..2 {
            let entries: Vec<queue::Entry> = queue
                .values()
                .map(|e| queue::Entry { seq: e.seq, at: e.at, kind: queue::EntryKind::of(e) })
                .collect();
            let plan = queue::plan(&entries);
            for seq in &plan.remove {
                queue.remove(seq);
            }
            for gap in plan.insert {
                queue.insert(gap.seq, gap);
            }
        }
        let mut mirror = State::default();
        for event in queue.values() {
            feed(&mut mirror, event);
        }
        prop_assert_eq!(&mirror.host, &world.state.host);
    }

    #[test]
    fn a_mirror_restarted_from_a_snapshot_equals_the_agent(
        before in proptest::collection::vec((time_step(), action()), 1..60),
        after in proptest::collection::vec((time_step(), action()), 0..40),
        kept in any::<prop::sample::Index>(),
        elsewhere in proptest::collection::vec((time_step(), action()), 0..60),
        held in 0u8..3,
    ) {
        let mut world = run(&before)?;
        // What the control plane holds: a prefix of the agent's events (restored from an
        // older backup), nothing (its store was lost), or another history (the host was
        // restored from a VM snapshot, or the log is another host's).
        let mut mirror = State::default();
        match held {
            0 => {
                let n = kept.index(world.emitted.len() + 1);
                for event in &world.emitted[..n] {
                    feed(&mut mirror, event);
                }
            }
            1 => {}
            _ => {
                for event in &run(&elsewhere)?.emitted {
                    feed(&mut mirror, event);
                }
            }
        }
        let log_end = mirror.host.seq;
        let from = world.emitted.len();
        world.apply(Event::ResyncRequested {
            log_end,
            cause: ResyncCause::ControlPlaneLog { log_end },
        })?;
        // The snapshot comes first; a deadline that fell due may fire after it.
        prop_assert!(world.emitted.len() > from);
        prop_assert!(
            matches!(world.emitted[from].report, Report::Snapshot { .. }),
            "the snapshot first"
        );
        prop_assert!(world.emitted[from].seq > log_end, "the snapshot is new to the mirror");
        // Delivery goes on after the resync point; nothing after it is lost.
        for (dt, action) in &after {
            world.now += dt;
            if let Some(event) = world.event_for(action) {
                world.apply(event)?;
            }
        }
        for event in &world.emitted[from..] {
            feed(&mut mirror, event);
            if let Some(host) = world.host_after.get(&event.seq) {
                prop_assert_eq!(&mirror.host, host, "mirror differs after seq {}", event.seq);
            }
        }
        prop_assert_eq!(&mirror.host, &world.state.host);
        prop_assert_eq!(&mirror.probes, &world.state.probes);
    }

    #[test]
    fn state_event_and_effect_round_trip_through_json(
        actions in proptest::collection::vec((time_step(), action()), 1..60),
    ) {
        let world = run(&actions)?;
        let text = serde_json::to_string(&world.state).unwrap();
        prop_assert_eq!(&serde_json::from_str::<State>(&text).unwrap(), &world.state);
        for event in &world.applied {
            let text = serde_json::to_string(event).unwrap();
            prop_assert_eq!(&serde_json::from_str::<Event>(&text).unwrap(), event);
        }
        for event in &world.emitted {
            let text = serde_json::to_string(event).unwrap();
            prop_assert_eq!(&serde_json::from_str::<OutboundEvent>(&text).unwrap(), event);
        }
    }
}

#[test]
fn deep_paths_are_reached() {
    // Guards the generator: random sequences must actually reach the interesting phases,
    // or the invariants above would be checked on trivial runs only.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec((time_step(), action()), 60..120);
    let mut seen: BTreeSet<&'static str> = BTreeSet::new();
    let mut phases: BTreeSet<&'static str> = BTreeSet::new();
    let mut events: BTreeSet<&'static str> = BTreeSet::new();
    for _ in 0..400 {
        let actions = strategy.new_tree(&mut runner).unwrap().current();
        let world = run(&actions).unwrap();
        for event in &world.emitted {
            seen.insert(event.report.name());
        }
        for host in world.host_after.values() {
            phases.insert(host.phase.name());
        }
        for event in &world.applied {
            events.insert(event.name());
        }
    }
    // The documented name lists hold every name the code produces.
    for name in &seen {
        assert!(
            Report::NAMES.contains(name),
            "{name} missing from Report::NAMES"
        );
    }
    for name in &events {
        assert!(
            Event::NAMES.contains(name),
            "{name} missing from Event::NAMES"
        );
    }
    assert_eq!(
        phases.len(),
        Phase::NAMES.len(),
        "every phase is reached: {phases:?}"
    );
    for name in &phases {
        assert!(
            Phase::NAMES.contains(name),
            "{name} missing from Phase::NAMES"
        );
    }
    for name in [
        "work-started",
        "activation-started",
        "soak-started",
        "commit-started",
        "converged",
        "rollback-started",
        "reverted",
        "failed",
        "deferred-until-boot",
        "superseded",
        "rollback-rejected",
        "already-converged",
        "paused",
        "resumed",
    ] {
        assert!(
            seen.contains(name),
            "no generated run reached {name}: {seen:?}"
        );
    }
}
