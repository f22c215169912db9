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
    match event {
        Event::Tick => Ok(timeout(state, now)),
        event => transition(state, event, now),
    }
}

/// Time passed to `now`: every deadline due fires. Total, so the shell needs no guard against
/// a deadline that cannot fire: when the machine's own transition fails (a bug), the host
/// fails with that error as its reason ([`crate::Reason::DeadlineFailed`]) and a switch in
/// flight is aborted, which leaves no deadline due.
pub fn timeout(state: &State, now: Timestamp) -> Step {
    match transition(state, Event::Tick, now) {
        Ok(step) => step,
        Err(error) => deadline_failed(state, now, &error),
    }
}

fn transition(state: &State, event: Event, now: Timestamp) -> Result<Step, TransitionError> {
    let now = now.max(state.clock);
    let mut tx = Tx {
        state: state.clone(),
        events: Vec::new(),
        commands: Vec::new(),
        now,
    };
    tx.state.clock = now;
    let started = matches!(event, Event::Started(_));
    match event {
        Event::Started(observation) => recovery::on_started(&mut tx, observation)?,
        Event::DesiredObserved(desired) => control::on_desired(&mut tx, desired)?,
        Event::PauseRequested => control::hold(&mut tx, true)?,
        Event::ResumeRequested => control::hold(&mut tx, false)?,
        Event::RealiseFinished { target, result } => work::on_realised(&mut tx, target, result)?,
        Event::SwitchFinished {
            switch,
            end,
            system,
        } => switch::on_switch_finished(&mut tx, switch, end, system)?,
        Event::ProbeResult(result) => soak::on_probe_result(&mut tx, result)?,
        Event::AgentUpgradeChecked { upgrade } => control::on_upgrade_checked(&mut tx, upgrade),
        Event::Tick => {}
        Event::ResyncRequested { log_end, cause } => control::resync(&mut tx, log_end, cause)?,
    }
    // Every input advances time: a deadline that passed fires now, whatever the input, so a
    // timeout cannot be lost to a result that happened to arrive first (or to a restart).
    on_tick(&mut tx)?;
    control::advance(&mut tx)?;
    if tx
        .events
        .iter()
        .any(|event| matches!(event.report, Report::Converged { .. }))
    {
        // A committed generation may carry a new agent: find out, then decide.
        tx.command(Command::CheckAgentUpgrade);
    }
    Ok(tx.finish(state, started))
}

/// The step of a deadline whose transition failed with `error`: the host fails where it is.
fn deadline_failed(state: &State, now: Timestamp, error: &TransitionError) -> Step {
    let mut tx = Tx {
        state: state.clone(),
        events: Vec::new(),
        commands: Vec::new(),
        now: now.max(state.clock),
    };
    tx.state.clock = tx.now;
    if let Some(switch) = tx.state.host.phase.running_switch() {
        tx.command(Command::AbortSwitch { switch });
    }
    tx.state.relaunch = None;
    let target = match &tx.state.host.phase {
        Phase::RollingBack(p) => p.abandoned.as_ref().map(|(target, _)| target.clone()),
        phase => phase.work().map(|work| work.target.clone()),
    };
    let reason = crate::Reason::DeadlineFailed {
        error: crate::cap_head(&error.to_string(), crate::MESSAGE_CAP),
    };
    tx.fail(reason, target);
    tx.finish(state, false)
}

/// A transition being built: the state so far, its outputs so far, and the time.
struct Tx {
    state: State,
    events: Vec<OutboundEvent>,
    commands: Vec<Command>,
    now: Timestamp,
}

impl Tx {
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

    /// Records that the host failed. Unlike [`Tx::report`] it cannot be refused: a failure
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

fn on_tick(tx: &mut Tx) -> Result<(), TransitionError> {
    let now = tx.now;
    match tx.state.host.phase.clone() {
        Phase::Activating(p) if now >= p.deadline => {
            tx.command(Command::AbortSwitch { switch: p.switch });
            tx.state.relaunch = None;
            let after = tx.state.host.policy.activation_timeout_ms;
            work::fail_work(tx, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::Committing(p) if now >= p.deadline => {
            tx.command(Command::AbortSwitch { switch: p.switch });
            tx.state.relaunch = None;
            let after = tx.state.host.policy.activation_timeout_ms;
            work::fail_work(tx, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::RollingBack(p) if now >= p.deadline => {
            tx.command(Command::AbortSwitch { switch: p.switch });
            tx.state.relaunch = None;
            let after = tx.state.host.policy.rollback_timeout_ms;
            tx.report(Report::Failed {
                reason: crate::Reason::RollbackFailed {
                    cause: Box::new(crate::Reason::SwitchTimedOut { after }),
                },
                target: p.abandoned.map(|(target, _)| target),
                halted: false,
            })
        }
        Phase::Soaking(_) => soak::evaluate(tx),
        Phase::Activating(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_)
        | Phase::Idle
        | Phase::Realising(_)
        | Phase::Deferred(_)
        | Phase::Converged(_)
        | Phase::Reverted(_)
        | Phase::Failed(_) => switch::relaunch_when_due(tx),
    }
}

#[cfg(test)]
mod tests;
