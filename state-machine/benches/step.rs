//! `step()` and `mirror::apply` on a realistic mix of inputs.
//!
//! The trace is what one host lives through in a deployment cycle, recorded once and replayed:
//! a directive, realise, the test switch, a five-minute soak with two probes every 10 s, the
//! heartbeat's control-plane probe every 30 s and a long-poll answer every 30 s, the commit
//! switch, the agent-upgrade check, then ten idle minutes of the same probes and answers. Most
//! inputs are probe results and unchanged answers, as on a real host; a few change the phase.
//! The mirror replays every event the agent emitted over the recorded cycles.
//!
//! `cargo bench -p fleetnode-state-machine --bench step`; docs/performance.md has the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetnode_state_machine::{
    DesiredState, Directive, DirectiveKind, Event, HealthOverrides, OutboundEvent, ProbeId,
    ProbeResult, RealiseResult, Revision, State, Timestamp, mirror, step,
};
use std::hint::black_box;
use support::{Sim, closure, committed_on, exited, live, metrics_probe, web};

/// Deployment cycles recorded (closures 1 and 2 in turn).
const CYCLES: usize = 8;
/// Probe interval of the two configured probes, and the heartbeat and long-poll period.
const PROBE_EVERY_MS: u64 = 10_000;
const HEARTBEAT_EVERY_MS: u64 = 30_000;
/// Idle time after each convergence.
const IDLE_MS: u64 = 600_000;

/// One recorded input with the time it arrived.
struct Input {
    event: Event,
    now: Timestamp,
}

/// A host, the inputs it received and the events it emitted.
struct Recorder {
    sim: Sim,
    inputs: Vec<Input>,
    emitted: Vec<OutboundEvent>,
}

impl Recorder {
    fn feed(&mut self, event: Event) {
        self.inputs.push(Input {
            event: event.clone(),
            now: Timestamp(self.sim.now),
        });
        let out = self.sim.step(event);
        self.emitted.extend(out.events);
    }

    fn probe(&mut self, probe: ProbeId) {
        let epoch = self.sim.state.host.probe_epoch;
        self.feed(Event::ProbeResult(ProbeResult {
            probe,
            epoch,
            passed: true,
            detail: "HTTP 200".into(),
        }));
    }

    fn unchanged_answer(&mut self) {
        let desired = self.sim.state.host.desired.clone().map(|d| DesiredState {
            revision: d.revision,
            directive: Some(d),
            paused: false,
        });
        if let Some(desired) = desired {
            self.feed(Event::DesiredObserved(desired));
        }
    }

    /// `span` ms of probes, heartbeats and long-poll answers.
    fn live_for(&mut self, span: u64) {
        let end = self.sim.now + span;
        while self.sim.now + PROBE_EVERY_MS <= end {
            self.sim.now += PROBE_EVERY_MS;
            self.probe(web());
            self.probe(metrics_probe());
            if self.sim.now % HEARTBEAT_EVERY_MS < PROBE_EVERY_MS {
                self.probe(ProbeId::control_plane());
                self.unchanged_answer();
            }
        }
        self.sim.now = end;
    }

    fn deployment(&mut self, n: usize) {
        self.sim.revision += 1;
        let directive = Directive {
            revision: Revision(self.sim.revision),
            kind: DirectiveKind::Activate {
                target: closure(n),
                mode: None,
                health: HealthOverrides::default(),
            },
        };
        self.feed(self.sim.answer(directive));
        self.sim.now += 20_000;
        self.feed(Event::RealiseFinished {
            target: closure(n),
            result: RealiseResult::Realised,
        });
        self.sim.now += 5_000;
        let profile = self.sim.system().profile.unwrap();
        let switch = self.sim.switch();
        self.feed(Event::SwitchFinished {
            switch,
            end: exited(0, "activating the configuration...\n"),
            system: live(&closure(n), &profile),
        });
        self.live_for(support::SOAK);
        self.feed(Event::Tick);
        self.sim.now += 3_000;
        let switch = self.sim.switch();
        self.feed(Event::SwitchFinished {
            switch,
            end: exited(0, "updating GRUB 2 menu...\n"),
            system: committed_on(&closure(n)),
        });
        assert_eq!(self.sim.phase(), "converged");
        self.feed(Event::AgentUpgradeChecked { upgrade: None });
        self.live_for(IDLE_MS);
    }
}

/// The starting state and the recorded trace.
fn record() -> (State, Vec<Input>, Vec<OutboundEvent>) {
    let sim = Sim::new();
    let start = sim.state.clone();
    let emitted = sim.log.clone();
    let mut recorder = Recorder {
        sim,
        inputs: Vec::new(),
        emitted,
    };
    for cycle in 0..CYCLES {
        recorder.deployment(1 + cycle % 2);
    }
    (start, recorder.inputs, recorder.emitted)
}

fn bench_step(c: &mut Criterion) {
    let (start, inputs, _) = record();
    let mut group = c.benchmark_group("step");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("deployment-mix", |b| {
        b.iter(|| {
            let mut state = start.clone();
            for input in &inputs {
                let out = step(&state, input.event.clone(), input.now).unwrap();
                state = out.state;
                black_box(&out.events);
                black_box(&out.commands);
            }
            state
        });
    });
    group.finish();
}

fn bench_mirror(c: &mut Criterion) {
    let (_, _, emitted) = record();
    let mut group = c.benchmark_group("mirror");
    group.throughput(Throughput::Elements(emitted.len() as u64));
    group.bench_function("apply", |b| {
        b.iter(|| {
            let mut state = State::default();
            for event in &emitted {
                black_box(mirror::apply(&mut state, event).unwrap());
            }
            state
        });
    });
    group.finish();
}

criterion_group!(benches, bench_step, bench_mirror);
criterion_main!(benches);
