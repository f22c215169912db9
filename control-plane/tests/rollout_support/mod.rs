//! A simulated fleet for the rollout state machine: hosts that take directives and, after a
//! while, converge, revert, fail or fall silent, as their agents would; the control plane's
//! observation of them; and a runner that drives `rollout::step` with both.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fleetnode_control_plane::rollout::window::Window;
use fleetnode_control_plane::rollout::{
    Command, Event, HostObservation, Observations, Registration, plan, step,
};
use fleetnode_state_machine::{
    Converged, Directive, DirectiveKind, Failed, Phase, Reason, Reverted, Revision, StorePath,
    Timestamp,
};
use fleetnode_wire::{
    FailureBudget, HostId, HostState, Millis, OnHalt, ReleaseManifest, Rollout, RolloutId,
    StartRollout, Tag, WaveSpec,
};

pub const START: Timestamp = Timestamp(1_700_000_000_000);
pub const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
pub const OLD_HASH: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

/// What a host's agent does with the release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Converges this long after it got the directive.
    Converge(u64),
    /// Its agent rolls it back by itself after this long.
    Revert(u64),
    /// Its agent gives up (failed) after this long.
    Fail(u64),
    /// It stops sending heartbeats when it gets the directive, and never acts on it.
    Silent,
}

/// One simulated host.
#[derive(Debug, Clone)]
pub struct SimHost {
    pub tags: Vec<Tag>,
    pub revoked: bool,
    pub revision: Revision,
    pub directive: Option<Directive>,
    pub received_at: Option<Timestamp>,
    pub handled: Option<Revision>,
    pub phase: Phase,
    pub current: Option<StorePath>,
    pub last_seen: Option<Timestamp>,
    pub fate: Fate,
    pub silent: bool,
    /// When the host came to rest on each directive revision.
    pub resolved: BTreeMap<Revision, Timestamp>,
    /// Its maintenance windows (none: always open).
    pub windows: Vec<Window>,
}

/// The fleet.
#[derive(Debug, Clone)]
pub struct World {
    pub hosts: BTreeMap<HostId, SimHost>,
    pub now: Timestamp,
    pub watching_since: Timestamp,
}

pub fn host(n: usize) -> HostId {
    HostId::parse(&format!("web-{n:02}")).unwrap()
}

pub fn closure(host: &HostId, hash: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{hash}-nixos-system-{host}")).unwrap()
}

impl World {
    /// `fates.len()` hosts, the first `canaries` tagged `canary`, all running their old closure.
    pub fn new(fates: &[Fate], canaries: usize) -> Self {
        let hosts = fates
            .iter()
            .enumerate()
            .map(|(i, fate)| {
                let id = host(i + 1);
                let tags = if i < canaries {
                    vec![Tag::parse("canary").unwrap()]
                } else {
                    Vec::new()
                };
                let sim = SimHost {
                    tags,
                    revoked: false,
                    revision: Revision(0),
                    directive: None,
                    received_at: None,
                    handled: None,
                    phase: Phase::Idle,
                    current: Some(closure(&id, OLD_HASH)),
                    last_seen: Some(START),
                    fate: *fate,
                    silent: false,
                    resolved: BTreeMap::new(),
                    windows: Vec::new(),
                };
                (id, sim)
            })
            .collect();
        Self {
            hosts,
            now: START,
            watching_since: START,
        }
    }

    /// A release giving every host its new closure.
    pub fn release(&self) -> ReleaseManifest {
        ReleaseManifest {
            hosts: self
                .hosts
                .keys()
                .map(|id| (id.clone(), closure(id, HASH)))
                .collect(),
            mode: None,
            health: Default::default(),
        }
    }

    pub fn registrations(&self) -> BTreeMap<HostId, Registration> {
        self.hosts
            .iter()
            .map(|(id, h)| {
                let registration = Registration {
                    tags: h.tags.clone(),
                    revoked: h.revoked,
                };
                (id.clone(), registration)
            })
            .collect()
    }

    /// The control plane's view of every host.
    pub fn observe(&self) -> Observations {
        let hosts = self
            .hosts
            .iter()
            .map(|(id, h)| {
                let observation = HostObservation {
                    revoked: h.revoked,
                    directive: h.directive.as_ref().map(|d| d.revision),
                    next_revision: Revision(h.revision.0 + 1),
                    handled: h.handled,
                    phase: h.phase.clone(),
                    current: h.current.clone(),
                    last_seen: h.last_seen,
                    windows: h.windows.clone(),
                };
                (id.clone(), observation)
            })
            .collect();
        Observations {
            hosts,
            watching_since: self.watching_since,
        }
    }

    /// Carries out the machine's commands, checking each one's revision as the shell does.
    pub fn apply(&mut self, commands: &[Command]) {
        for command in commands {
            match command {
                Command::SetDirective { host, directive } => {
                    let sim = self
                        .hosts
                        .get_mut(host)
                        .expect("a command for an unknown host");
                    assert_eq!(
                        directive.revision,
                        Revision(sim.revision.0 + 1),
                        "a directive for {host} not numbered from the observation"
                    );
                    self.give(host, directive.clone());
                }
            }
        }
    }

    /// Gives a host a directive (as the rollout, or an operator, would).
    pub fn give(&mut self, host: &HostId, directive: Directive) {
        let now = self.now;
        let sim = self.hosts.get_mut(host).unwrap();
        sim.revision = directive.revision;
        let activation = matches!(directive.kind, DirectiveKind::Activate { .. });
        sim.directive = Some(directive);
        sim.received_at = Some(now);
        if activation && sim.fate == Fate::Silent {
            sim.silent = true;
        }
    }

    /// Lets time pass: live hosts heartbeat and carry out their directive when its time came.
    pub fn advance(&mut self, span: u64) {
        self.now = self.now.plus(Millis(span));
        let now = self.now;
        for (id, sim) in &mut self.hosts {
            if sim.silent {
                continue;
            }
            sim.last_seen = Some(now);
            let (Some(directive), Some(received)) = (sim.directive.clone(), sim.received_at) else {
                continue;
            };
            if sim.handled >= Some(directive.revision) {
                continue;
            }
            match &directive.kind {
                DirectiveKind::Activate { target, .. } => {
                    let (after, phase) = match sim.fate {
                        Fate::Converge(after) => (
                            after,
                            Phase::Converged(Converged {
                                revision: directive.revision,
                                target: target.clone(),
                            }),
                        ),
                        Fate::Revert(after) => (
                            after,
                            Phase::Reverted(Reverted {
                                to: closure(id, OLD_HASH),
                                reason: Reason::Interrupted,
                                abandoned: Some(target.clone()),
                            }),
                        ),
                        Fate::Fail(after) => (
                            after,
                            Phase::Failed(Failed {
                                reason: Reason::Interrupted,
                                target: Some(target.clone()),
                                halted: true,
                            }),
                        ),
                        Fate::Silent => continue,
                    };
                    if now < received.plus(Millis(after)) {
                        continue;
                    }
                    if let Phase::Converged(c) = &phase {
                        sim.current = Some(c.target.clone());
                    }
                    sim.phase = phase;
                }
                DirectiveKind::Rollback { to } => {
                    if let Some(to) = to {
                        sim.current = Some(to.clone());
                    }
                    sim.phase = Phase::Reverted(Reverted {
                        to: sim.current.clone().unwrap(),
                        reason: Reason::RequestedByControlPlane,
                        abandoned: None,
                    });
                }
            }
            sim.handled = Some(directive.revision);
            sim.resolved.insert(directive.revision, now);
        }
    }
}

/// What a rollout is started with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub waves: Vec<WaveSpec>,
    pub bake: u64,
    pub budget: FailureBudget,
    pub on_halt: OnHalt,
    pub offline_deadline: u64,
}

impl Setup {
    pub fn request(&self, world: &World) -> StartRollout {
        StartRollout {
            release: world.release(),
            waves: self.waves.clone(),
            bake_ms: Millis(self.bake),
            max_failures: self.budget,
            on_halt: self.on_halt,
            offline_deadline_ms: Millis(self.offline_deadline),
        }
    }

    /// A new rollout of the world's release.
    pub fn start(&self, world: &World) -> Rollout {
        plan::start(
            &self.request(world),
            RolloutId(1),
            &world.registrations(),
            &BTreeMap::new(),
            world.now,
        )
        .expect("the setup is a valid rollout")
    }
}

/// One observation step: observe, decide, carry out.
pub fn observe_step(rollout: &Rollout, world: &mut World) -> (Rollout, Vec<Command>) {
    let (next, commands) = step(rollout, Event::Observed(world.observe()), world.now).unwrap();
    world.apply(&commands);
    (next, commands)
}

/// Runs a rollout with observations every `tick` ms until it is settled or `steps` ran out.
pub fn run_until_settled(
    mut rollout: Rollout,
    world: &mut World,
    tick: u64,
    steps: usize,
) -> Rollout {
    for _ in 0..steps {
        let (next, _) = observe_step(&rollout, world);
        rollout = next;
        if rollout.is_settled() {
            break;
        }
        world.advance(tick);
    }
    rollout
}

pub fn count(n: u64) -> WaveSpec {
    WaveSpec::Count { count: n }
}

pub fn percent(p: u8) -> WaveSpec {
    WaveSpec::Percent { percent: p }
}

pub fn tag(name: &str) -> WaveSpec {
    WaveSpec::Tag {
        tag: Tag::parse(name).unwrap(),
    }
}

/// A rollout of these waves with a 1 s bake, no failure tolerated, stop on a halt and a 30 s
/// offline deadline.
pub fn setup(waves: Vec<WaveSpec>) -> Setup {
    Setup {
        waves,
        bake: 1_000,
        budget: FailureBudget::default(),
        on_halt: OnHalt::Stop,
        offline_deadline: 30_000,
    }
}

/// The hosts of a wave, as text.
pub fn hosts_of(rollout: &Rollout, wave: usize) -> Vec<String> {
    rollout.waves[wave]
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The hosts the commands give the release to.
pub fn assigned(commands: &[Command]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SetDirective { host, directive } => match directive.kind {
                DirectiveKind::Activate { .. } => Some(host.to_string()),
                DirectiveKind::Rollback { .. } => None,
            },
        })
        .collect()
}

/// Host n's state in the rollout.
pub fn state(rollout: &Rollout, n: usize) -> &HostState {
    &rollout.hosts[&host(n)].state
}
