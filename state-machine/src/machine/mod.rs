//! `step`: the one function that makes every decision.

mod control;
mod recovery;
mod soak;
mod switch;
mod work;

pub use switch::{EXIT_UNITS_FAILED, LOCK_CONTENTION, SWITCH_LOCK_RETRY};

use crate::command::Command;
use crate::error::{Bug, TransitionError};
use crate::event::Event;
use crate::evolve::evolve;
use crate::report::{OutboundEvent, Report};
use crate::state::{Phase, State};
use crate::time::Timestamp;
use crate::types::SwitchId;

/// What one input changed: the new state, the facts to report and the commands to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The state after the input.
    pub state: State,
    /// New facts, with gap-free seqs continuing the state's; persisted with `state` in one
    /// durable write before any command runs.
    pub events: Vec<OutboundEvent>,
    /// What the shell must do, in order, once the write is durable.
    pub commands: Vec<Command>,
}

/// Applies one event to a state at time `now`.
///
/// On error the input is refused and `state` stays as it was; the error says whose fault it is.
/// [`Event::Tick`] is never refused: it is [`timeout`].
///
/// Pure and deterministic: no clock, no I/O. A `now` older than the latest seen is treated as
/// the latest seen, so deadlines never move backwards.
pub fn step(state: &State, event: Event, now: Timestamp) -> Result<Step, TransitionError> {
    if matches!(event, Event::Tick) {
        return Ok(timeout(state, now));
    }
    decide(state, event, now)
}

/// Time passed to `now`: every deadline due fires. Total, so the shell needs no guard against
/// a deadline that cannot fire: when the machine's own transition fails (a bug), the host
/// fails with that error as its reason ([`crate::Reason::DeadlineFailed`]) and a switch in
/// flight is aborted, which leaves no deadline due.
pub fn timeout(state: &State, now: Timestamp) -> Step {
    match decide(state, Event::Tick, now) {
        Ok(step) => step,
        Err(error) => deadline_failed(state, now, &error),
    }
}

fn decide(state: &State, event: Event, now: Timestamp) -> Result<Step, TransitionError> {
    let now = now.max(state.clock);
    let mut transition = Transition {
        state: state.clone(),
        events: Vec::new(),
        commands: Vec::new(),
        now,
    };
    transition.state.clock = now;
    let started = matches!(event, Event::Started(_));
    match event {
        Event::Started(observation) => recovery::on_started(&mut transition, observation)?,
        Event::DesiredObserved(desired) => control::on_desired(&mut transition, desired)?,
        Event::PauseRequested => control::hold(&mut transition, true)?,
        Event::ResumeRequested => control::hold(&mut transition, false)?,
        Event::RealiseFinished { target, result } => {
            work::on_realised(&mut transition, target, result)?
        }
        Event::SwitchFinished {
            switch,
            end,
            system,
        } => switch::on_switch_finished(&mut transition, switch, end, system)?,
        Event::ProbeResult(result) => soak::on_probe_result(&mut transition, result)?,
        Event::AgentUpgradeChecked { upgrade } => {
            control::on_upgrade_checked(&mut transition, upgrade)
        }
        Event::Tick => {}
        Event::ResyncRequested { log_end, cause } => {
            control::resync(&mut transition, log_end, cause)?
        }
    }
    // Every input advances time: a deadline that passed fires now, whatever the input, so a
    // timeout cannot be lost to a result that happened to arrive first (or to a restart).
    on_tick(&mut transition)?;
    control::advance(&mut transition)?;
    if transition
        .events
        .iter()
        .any(|event| matches!(event.report, Report::Converged { .. }))
    {
        // A committed generation may carry a new agent: find out, then decide.
        transition.command(Command::CheckAgentUpgrade);
    }
    Ok(transition.finish(state, started))
}

/// The step of a deadline whose transition failed with `error`: the host fails where it is.
fn deadline_failed(state: &State, now: Timestamp, error: &TransitionError) -> Step {
    let mut transition = Transition {
        state: state.clone(),
        events: Vec::new(),
        commands: Vec::new(),
        now: now.max(state.clock),
    };
    transition.state.clock = transition.now;
    if let Some(switch) = transition.state.host.phase.running_switch() {
        transition.command(Command::AbortSwitch { switch });
    }
    transition.state.relaunch = None;
    let phase = &transition.state.host.phase;
    let target = if let Phase::RollingBack(p) = phase {
        p.abandoned.as_ref().map(|(target, _)| target.clone())
    } else {
        phase.work().map(|work| work.target.clone())
    };
    let reason = crate::Reason::DeadlineFailed {
        error: crate::cap_head(&error.to_string(), crate::MESSAGE_CAP),
    };
    transition.fail(reason, target);
    transition.finish(state, false)
}

/// A transition being built: the state so far, its outputs so far, and the time.
struct Transition {
    state: State,
    events: Vec<OutboundEvent>,
    commands: Vec<Command>,
    now: Timestamp,
}

impl Transition {
    /// Records a fact: applies it to the state and queues it for delivery with the next seq.
    fn report(&mut self, report: Report) -> Result<(), TransitionError> {
        let event = OutboundEvent {
            seq: self.state.host.seq + 1,
            at: self.now,
            report,
        };
        evolve(&mut self.state, &event)?;
        self.state.host.seq = event.seq;
        self.events.push(event);
        Ok(())
    }

    /// Records that the host failed. Unlike [`Transition::report`] it cannot be refused: a failure
    /// applies in every phase.
    fn fail(&mut self, reason: crate::Reason, target: Option<crate::StorePath>) {
        crate::evolve::failed(&mut self.state.host, &reason, &target, false);
        let event = OutboundEvent {
            seq: self.state.host.seq + 1,
            at: self.now,
            report: Report::Failed {
                reason,
                target,
                halted: false,
            },
        };
        self.state.host.seq = event.seq;
        self.events.push(event);
    }

    /// The step this transaction built from `before`. The roots go first: a rollback switch
    /// in the same step must find its target rooted. At a start (`started`) the shell's roots
    /// may lag the state (a crash between a commit and its command), so the set is sent again.
    fn finish(mut self, before: &State, started: bool) -> Step {
        let kept = self.state.generations_kept();
        if started || kept != before.generations_kept() {
            self.commands
                .insert(0, Command::KeepGenerations { generations: kept });
        }
        Step {
            state: self.state,
            events: self.events,
            commands: self.commands,
        }
    }

    /// The id the next switch gets: the seq of the report that launches it.
    fn next_switch(&self) -> SwitchId {
        SwitchId(self.state.host.seq + 1)
    }

    fn command(&mut self, command: Command) {
        self.commands.push(command);
    }
}

/// The error for an event that does not apply to a phase: the worker that sent it and the
/// state disagree.
fn unexpected(event: &'static str, phase: &Phase) -> TransitionError {
    Bug::Unexpected {
        event,
        phase: phase.name(),
    }
    .into()
}

fn on_tick(transition: &mut Transition) -> Result<(), TransitionError> {
    let now = transition.now;
    match transition.state.host.phase.clone() {
        Phase::Activating(p) if now >= p.deadline => {
            transition.command(Command::AbortSwitch { switch: p.switch });
            transition.state.relaunch = None;
            let after = transition.state.host.policy.activation_timeout_ms;
            work::fail_work(transition, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::Committing(p) if now >= p.deadline => {
            transition.command(Command::AbortSwitch { switch: p.switch });
            transition.state.relaunch = None;
            let after = transition.state.host.policy.activation_timeout_ms;
            work::fail_work(transition, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::RollingBack(p) if now >= p.deadline => {
            transition.command(Command::AbortSwitch { switch: p.switch });
            transition.state.relaunch = None;
            let after = transition.state.host.policy.rollback_timeout_ms;
            transition.report(Report::Failed {
                reason: crate::Reason::RollbackFailed {
                    cause: Box::new(crate::Reason::SwitchTimedOut { after }),
                },
                target: p.abandoned.map(|(target, _)| target),
                halted: false,
            })
        }
        Phase::Soaking(_) => soak::evaluate(transition),
        Phase::Activating(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_)
        | Phase::Idle
        | Phase::Realising(_)
        | Phase::Deferred(_)
        | Phase::Converged(_)
        | Phase::Reverted(_)
        | Phase::Failed(_) => switch::relaunch_when_due(transition),
    }
}

#[cfg(test)]
mod tests;
