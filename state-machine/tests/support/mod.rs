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
        };
        sim.step(Event::Started(Observation {
            system,
            boot_id: Some("boot-1".into()),
            switch_unit: None,
            store_reset: None,
            policy,
        }));
        sim
    }

    /// Applies an event that must be accepted; checks the mirror follows.
    pub fn step(&mut self, event: Event) -> Vec<Effect> {
        self.try_step(event).expect("event refused")
    }

    pub fn try_step(&mut self, event: Event) -> Result<Vec<Effect>, TransitionError> {
        let (state, effects) = step(&self.state, event, Timestamp(self.now))?;
        let mut expected_seq = self.state.host.seq;
        for effect in &effects {
            if let Effect::Report(ev) = effect {
                expected_seq += 1;
                assert_eq!(ev.seq, expected_seq, "seqs must increase by exactly one");
                let (mirror, none) =
                    step(&self.mirror, Event::Reported(ev.clone()), Timestamp(0)).unwrap();
                assert!(none.is_empty());
                self.mirror = mirror;
                self.log.push(ev.clone());
            }
        }
        self.state = state;
        assert_eq!(self.mirror.host, self.state.host, "mirror diverged");
        Ok(effects)
    }

    pub fn advance(&mut self, ms: u64) -> Vec<Effect> {
        self.now += ms;
        self.step(Event::Tick)
    }

    pub fn phase(&self) -> &'static str {
        self.state.host.phase.name()
    }

    pub fn system(&self) -> SystemView {
        self.state.host.system.clone()
    }

    pub fn directive(&mut self, kind: DirectiveKind) -> Vec<Effect> {
        self.revision += 1;
        self.step(Event::DirectiveReceived(Directive {
            revision: Revision(self.revision),
            kind,
        }))
    }

    pub fn activate(&mut self, n: usize) -> Vec<Effect> {
        self.activate_with(n, None, HealthOverrides::default())
    }

    pub fn activate_with(
        &mut self,
        n: usize,
        mode: Option<ActivationMode>,
        health: HealthOverrides,
    ) -> Vec<Effect> {
        self.directive(DirectiveKind::Activate {
            target: closure(n),
            mode,
            health,
        })
    }

    pub fn rollback(&mut self, to: Option<usize>) -> Vec<Effect> {
        self.directive(DirectiveKind::Rollback {
            to: to.map(closure),
        })
    }

    pub fn realised(&mut self, n: usize) -> Vec<Effect> {
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

    pub fn switch_done(&mut self, system: SystemView) -> Vec<Effect> {
        let switch = self.switch();
        self.step(Event::SwitchFinished {
            switch,
            outcome: SwitchOutcome::Completed { system },
        })
    }

    pub fn switch_failed(&mut self, code: i32, tail: &str, system: SystemView) -> Vec<Effect> {
        let switch = self.switch();
        self.step(Event::SwitchFinished {
            switch,
            outcome: SwitchOutcome::Failed {
                exit_code: Some(code),
                output_tail: tail.into(),
                system,
            },
        })
    }

    pub fn probe(&mut self, probe: ProbeId, passed: bool) -> Vec<Effect> {
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
    pub fn restart(
        &mut self,
        system: SystemView,
        reboot: bool,
        unit: Option<UnitState>,
    ) -> Vec<Effect> {
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

/// The effects other than reports and the release of finished switch units (bookkeeping,
/// checked on its own in `paths.rs`).
pub fn commands(effects: &[Effect]) -> Vec<Effect> {
    effects
        .iter()
        .filter(|e| !matches!(e, Effect::Report(_) | Effect::ReleaseSwitch { .. }))
        .cloned()
        .collect()
}

/// Names of the reports among the effects.
pub fn reports(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Report(ev) => Some(ev.report.name()),
            _ => None,
        })
        .collect()
}

/// The single RunSwitch among the effects.
pub fn run_switch(effects: &[Effect]) -> (SwitchId, SwitchJob) {
    let runs: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::RunSwitch { switch, job } => Some((*switch, job.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "expected exactly one RunSwitch in {effects:?}"
    );
    runs[0].clone()
}
