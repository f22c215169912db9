//! A small driver for scenario and property tests: one host, its state, a clock, and the
//! control plane's mirror fed every reported event.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fleetnode_state_machine::*;

pub const HASHES: [&str; 4] = [
    "0123456789abcdfghijklmnpqrsvwxyz",
    "zyxwvsrqpnmlkjihgfdcba9876543210",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
];

/// Closure number `n` (0 = the generation the host starts on).
pub fn closure(n: usize) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-nixos-system-host-{n}", HASHES[n])).unwrap()
}

pub fn web() -> ProbeId {
    ProbeId::parse("web").unwrap()
}

pub fn metrics_probe() -> ProbeId {
    ProbeId::parse("metrics").unwrap()
}

pub const SOAK: u64 = 300_000;
pub const SUSTAINED: u64 = 60_000;
pub const ACTIVATION_TIMEOUT: u64 = 900_000;
pub const ROLLBACK_TIMEOUT: u64 = 600_000;

pub fn policy() -> LocalPolicy {
    LocalPolicy {
        default_mode: ActivationMode::TestThenCommit,
        health: HealthPolicy {
            soak_ms: Millis(SOAK),
            sustained_failure_ms: Millis(SUSTAINED),
            on_failure: FailurePolicy::Rollback,
        },
        activation_timeout_ms: Millis(ACTIVATION_TIMEOUT),
        rollback_timeout_ms: Millis(ROLLBACK_TIMEOUT),
        reboot_allowed: false,
        probes: BTreeMap::from([
            (web(), ProbeMode::Enforce),
            (metrics_probe(), ProbeMode::Observe),
        ]),
    }
}

pub fn committed_on(path: &StorePath) -> SystemView {
    SystemView {
        current: Some(path.clone()),
        booted: Some(path.clone()),
        profile: Some(path.clone()),
    }
}

pub fn live(current: &StorePath, profile: &StorePath) -> SystemView {
    SystemView {
        current: Some(current.clone()),
        booted: Some(profile.clone()),
        profile: Some(profile.clone()),
    }
}

pub struct Sim {
    pub state: State,
    pub now: u64,
    pub mirror: State,
    pub revision: u64,
    pub boot: u32,
    pub log: Vec<OutboundEvent>,
    /// The control plane's hold flag sent with every directive.
    pub control_plane_paused: bool,
}

/// What one accepted input produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Out {
    pub events: Vec<OutboundEvent>,
    pub commands: Vec<Command>,
}

impl Out {
    /// Nothing reported and nothing to do.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.commands.is_empty()
    }

    /// True when a reported event matches.
    pub fn reported(&self, check: impl Fn(&Report) -> bool) -> bool {
        self.events.iter().any(|event| check(&event.report))
    }
}

impl Sim {
    /// A host that has run closure 0, committed, and just started its agent for the first time.
    pub fn new() -> Self {
        Self::with_policy(policy())
    }

    pub fn with_policy(policy: LocalPolicy) -> Self {
        Self::starting_on(committed_on(&closure(0)), policy)
    }

    pub fn starting_on(system: SystemView, policy: LocalPolicy) -> Self {
        let mut sim = Self {
            state: State::default(),
            now: 1_000_000,
            mirror: State::default(),
            revision: 0,
            boot: 1,
            log: Vec::new(),
            control_plane_paused: false,
        };
        sim.step(Event::Started(Observation {
            system,
            boot_id: Some("boot-1".into()),
            switch_unit: None,
            store_reset: None,
            policy,
        }));
        // The control plane answers right after the start, with no directive yet.
        let none = sim.step(Event::DesiredObserved(DesiredState {
            revision: Revision(0),
            directive: None,
            paused: false,
        }));
        assert!(none.is_empty());
        sim
    }

    /// Applies an event that must be accepted; checks the mirror follows.
    pub fn step(&mut self, event: Event) -> Out {
        self.try_step(event).expect("event refused")
    }

    pub fn try_step(&mut self, event: Event) -> Result<Out, TransitionError> {
        let Step {
            state,
            events,
            commands,
        } = step(&self.state, event, Timestamp(self.now))?;
        let mut expected_seq = self.state.host.seq;
        for ev in &events {
            expected_seq += 1;
            assert_eq!(ev.seq, expected_seq, "seqs must increase by exactly one");
            assert_eq!(
                mirror::apply(&mut self.mirror, ev),
                Ok(mirror::Applied::New)
            );
            self.log.push(ev.clone());
        }
        self.state = state;
        assert_eq!(self.mirror.host, self.state.host, "mirror diverged");
        Ok(Out { events, commands })
    }

    pub fn advance(&mut self, ms: u64) -> Out {
        self.now += ms;
        self.step(Event::Tick)
    }

    pub fn phase(&self) -> &'static str {
        self.state.host.phase.name()
    }

    pub fn system(&self) -> SystemView {
        self.state.host.system.clone()
    }

    pub fn directive(&mut self, kind: DirectiveKind) -> Out {
        self.revision += 1;
        let directive = Directive {
            revision: Revision(self.revision),
            kind,
        };
        self.step(self.answer(directive))
    }

    /// The control plane's answer carrying `directive` and the current hold flag.
    pub fn answer(&self, directive: Directive) -> Event {
        Event::DesiredObserved(DesiredState {
            revision: directive.revision,
            directive: Some(directive),
            paused: self.control_plane_paused,
        })
    }

    pub fn activate(&mut self, n: usize) -> Out {
        self.activate_with(n, None, HealthOverrides::default())
    }

    pub fn activate_with(
        &mut self,
        n: usize,
        mode: Option<ActivationMode>,
        health: HealthOverrides,
    ) -> Out {
        self.directive(DirectiveKind::Activate {
            target: closure(n),
            mode,
            health,
        })
    }

    pub fn rollback(&mut self, to: Option<usize>) -> Out {
        self.directive(DirectiveKind::Rollback {
            to: to.map(closure),
        })
    }

    pub fn realised(&mut self, n: usize) -> Out {
        self.step(Event::RealiseFinished {
            target: closure(n),
            result: RealiseResult::Realised,
        })
    }

    /// The switch in flight.
    pub fn switch(&self) -> SwitchId {
        self.state
            .host
            .phase
            .running_switch()
            .expect("no switch in flight")
    }

    pub fn switch_done(&mut self, system: SystemView) -> Out {
        let switch = self.switch();
        self.step(Event::SwitchFinished {
            switch,
            end: exited(0, ""),
            system,
        })
    }

    pub fn switch_failed(&mut self, code: i32, tail: &str, system: SystemView) -> Out {
        let switch = self.switch();
        self.step(Event::SwitchFinished {
            switch,
            end: exited(code, tail),
            system,
        })
    }

    pub fn probe(&mut self, probe: ProbeId, passed: bool) -> Out {
        let epoch = self.state.host.probe_epoch;
        self.step(Event::ProbeResult(ProbeResult {
            probe,
            epoch,
            passed,
            detail: if passed { "ok".into() } else { "down".into() },
        }))
    }

    /// Every enforce probe passes once (web and the built-in control-plane probe).
    pub fn all_pass(&mut self) {
        self.probe(web(), true);
        self.probe(ProbeId::control_plane(), true);
    }

    /// The agent restarts and observes `system`; `reboot` changes the boot id.
    pub fn restart(&mut self, system: SystemView, reboot: bool, unit: Option<UnitState>) -> Out {
        if reboot {
            self.boot += 1;
        }
        let policy = self.state.host.policy.clone();
        self.step(Event::Started(Observation {
            system,
            boot_id: Some(format!("boot-{}", self.boot)),
            switch_unit: unit,
            store_reset: None,
            policy,
        }))
    }

    /// Runs closure `n` through activation and soak in test-then-commit mode up to Converged.
    pub fn converge_on(&mut self, n: usize) {
        self.activate(n);
        self.realised(n);
        let profile = self.system().profile.unwrap();
        self.switch_done(live(&closure(n), &profile));
        self.all_pass();
        self.advance(SOAK);
        self.switch_done(committed_on(&closure(n)));
        assert_eq!(self.phase(), "converged");
    }
}

/// A switch process that exited with `code` and printed `tail`.
pub fn exited(code: i32, tail: &str) -> SwitchEnd {
    SwitchEnd::Exited(SwitchExit {
        code: Some(code),
        output_tail: tail.into(),
    })
}

/// The commands other than the release of finished switch units, the agent-upgrade check
/// after a convergence and the GC roots of the generations kept (bookkeeping, checked on
/// their own in `paths.rs` and `generations.rs`).
pub fn commands(out: &Out) -> Vec<Command> {
    out.commands
        .iter()
        .filter(|c| {
            !matches!(
                c,
                Command::ReleaseSwitch { .. }
                    | Command::CheckAgentUpgrade
                    | Command::KeepGenerations { .. }
            )
        })
        .cloned()
        .collect()
}

/// Names of the reports.
pub fn reports(out: &Out) -> Vec<&'static str> {
    out.events.iter().map(|ev| ev.report.name()).collect()
}

/// The single RunSwitch among the commands.
pub fn run_switch(out: &Out) -> (SwitchId, SwitchJob) {
    let runs: Vec<_> = out
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::RunSwitch { switch, job } => Some((*switch, job.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 1, "expected exactly one RunSwitch in {out:?}");
    runs[0].clone()
}
