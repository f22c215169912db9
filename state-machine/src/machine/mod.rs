//! `step`: the one function that makes every decision.

mod mirror;
mod recovery;
mod soak;
mod work;

use crate::effect::Effect;
use crate::error::TransitionError;
use crate::event::Event;
use crate::evolve::evolve;
use crate::policy::Directive;
use crate::report::{OutboundEvent, Report};
use crate::state::{Phase, State};
use crate::types::{SwitchId, Timestamp};

/// Applies one event to a state at time `now`.
///
/// Returns the new state and the effects to carry out, in order. Reported facts come out as
/// [`Effect::Report`] with gap-free seqs; the caller persists them with the state before it
/// carries out any other effect. On error the input is refused and `state` stays as it was.
///
/// Pure and deterministic: no clock, no I/O. A `now` older than the latest seen is treated as
/// the latest seen, so deadlines never move backwards.
pub fn step(
    state: &State,
    event: Event,
    now: Timestamp,
) -> Result<(State, Vec<Effect>), TransitionError> {
    let now = now.max(state.clock);
    let mut tx = Tx {
        state: state.clone(),
        effects: Vec::new(),
        now,
    };
    tx.state.clock = now;
    match event {
        Event::Reported(reported) => {
            mirror::apply(&mut tx, reported)?;
            return Ok((tx.state, tx.effects));
        }
        Event::Started(observation) => recovery::on_started(&mut tx, observation)?,
        Event::DirectiveReceived(directive) => on_directive(&mut tx, directive)?,
        Event::PauseRequested => {
            if !tx.state.host.paused {
                tx.report(Report::Paused)?;
            }
        }
        Event::ResumeRequested => {
            if tx.state.host.paused {
                tx.report(Report::Resumed)?;
            }
        }
        Event::RealiseFinished { target, result } => work::on_realised(&mut tx, target, result)?,
        Event::SwitchFinished { switch, outcome } => {
            work::on_switch_finished(&mut tx, switch, outcome)?
        }
        Event::ProbeResult(result) => soak::on_probe_result(&mut tx, result)?,
        Event::Tick => {}
    }
    // Every input advances time: a deadline that passed fires now, whatever the input, so a
    // timeout cannot be lost to a result that happened to arrive first (or to a restart).
    on_tick(&mut tx)?;
    advance(&mut tx)?;
    Ok((tx.state, tx.effects))
}

/// A transition being built: the state so far, the effects so far, and the time.
struct Tx {
    state: State,
    effects: Vec<Effect>,
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
        self.effects.push(Effect::Report(event));
        Ok(())
    }

    /// The id the next switch gets: the seq of the report that launches it.
    fn next_switch(&self) -> SwitchId {
        SwitchId(self.state.host.seq + 1)
    }

    fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }
}

/// The error for an event that does not apply to a phase.
fn unexpected(event: &'static str, phase: &Phase) -> TransitionError {
    TransitionError::Unexpected {
        event,
        phase: phase.name(),
    }
}

fn on_directive(tx: &mut Tx, directive: Directive) -> Result<(), TransitionError> {
    match &tx.state.host.desired {
        Some(recorded) if recorded.revision > directive.revision => {
            Err(TransitionError::StaleDirective {
                got: directive.revision,
                recorded: recorded.revision,
            })
        }
        Some(recorded) if recorded.revision == directive.revision => {
            if *recorded == directive {
                Ok(())
            } else {
                Err(TransitionError::ConflictingDirective {
                    revision: directive.revision,
                })
            }
        }
        Some(_) | None => tx.report(Report::DirectiveRecorded { directive }),
    }
}

fn on_tick(tx: &mut Tx) -> Result<(), TransitionError> {
    let now = tx.now;
    match tx.state.host.phase.clone() {
        Phase::Activating(p) if now >= p.deadline => {
            tx.effect(Effect::AbortSwitch { switch: p.switch });
            let after = tx.state.host.policy.activation_timeout_ms;
            work::fail_work(tx, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::Committing(p) if now >= p.deadline => {
            tx.effect(Effect::AbortSwitch { switch: p.switch });
            let after = tx.state.host.policy.activation_timeout_ms;
            work::fail_work(tx, &p.work, crate::Reason::SwitchTimedOut { after })
        }
        Phase::RollingBack(p) if now >= p.deadline => {
            tx.effect(Effect::AbortSwitch { switch: p.switch });
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
        | Phase::Failed(_) => Ok(()),
    }
}

/// Starts the latest directive when nothing stands in its way: the host is not paused, the
/// directive was not handled yet, and no step is running.
fn advance(tx: &mut Tx) -> Result<(), TransitionError> {
    let host = &tx.state.host;
    if host.paused {
        return Ok(());
    }
    let Some(desired) = host.desired.clone() else {
        return Ok(());
    };
    if host
        .handled
        .is_some_and(|handled| handled >= desired.revision)
    {
        return Ok(());
    }
    match &host.phase {
        Phase::Idle | Phase::Converged(_) | Phase::Reverted(_) | Phase::Failed(_) => {
            work::start(tx, desired)
        }
        Phase::Soaking(_) | Phase::Deferred(_) => work::supersede(tx, desired),
        Phase::Realising(_)
        | Phase::Activating(_)
        | Phase::Committing(_)
        | Phase::RollingBack(_) => Ok(()),
    }
}
