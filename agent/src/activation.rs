//! The activation worker: realises closures, launches and follows switches, reboots.
//!
//! It executes [`ActivationCommand`]s from the applier one at a time, in order, and reports
//! what happened as events: [`Event::RealiseFinished`] after a realise and
//! [`Event::SwitchFinished`] when a switch's unit has ended, with the system observed after
//! the end. It decides nothing (the state machine does); in particular:
//! - exit 0 is [`SwitchOutcome::Completed`]; any other end, including exit 4 (the system
//!   switched but a unit failed, FIELD-LESSONS 6), is [`SwitchOutcome::Failed`] with the exit
//!   code, the capped output tail and the observed system, for the state machine to judge;
//! - a unit that vanished without a result is reported as failed with no exit code;
//! - an aborted switch (the state machine already decided it timed out) reports nothing;
//! - a switch that lost the race for the switch lock against a manual switch (it printed
//!   "Could not acquire lock" and did nothing) is started again once the lock is free: that is
//!   not a failure (FIELD-LESSONS 5).
//!
//! While it follows a unit it still receives commands: an `Abort` for that switch stops it at
//! once. The state machine sends nothing else while a switch runs; anything else that arrives
//! is kept and executed after the switch ends, in order.
//!
//! Shutdown (`cancel`) leaves a running unit alone: the state is persisted and recovery follows
//! the unit again with [`ActivationCommand::Watch`]. A finished unit is released
//! ([`ActivationCommand::Release`]) only once its result is durable. The receiver is borrowed, so the supervisor can
//! restart the worker without losing the commands still queued.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Event, OUTPUT_TAIL_CAP, StorePath, SwitchId, SwitchJob, SwitchOutcome, SystemView, UnitState,
    cap_tail,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::input::{Input, InputSender, WorkerError};
use crate::system::System;

/// Capacity of the applier-to-activation channel. One `step` emits at most two activation
/// commands (an abort and the rollback that follows it) and the worker drains them quickly, so
/// 16 leaves ample slack; a command is under 1 KiB, so the channel holds at most ~16 KiB.
pub const ACTIVATION_CHANNEL_CAPACITY: usize = 16;
/// How often a running switch's unit is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before observing the system again when reading it failed.
const OBSERVE_RETRY: Duration = Duration::from_secs(1);
/// What a lost race for the switch lock prints (switch-to-configuration exits 1 with it).
const LOCK_CONTENTION: &str = "Could not acquire lock";

/// What the applier asks of the activation worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationCommand {
    /// Realise a closure (holding a GC root on it) and report [`Event::RealiseFinished`].
    Realise {
        /// The closure.
        target: StorePath,
    },
    /// Launch a switch in its transient unit and follow it until it ends.
    Run {
        /// Its id.
        switch: SwitchId,
        /// What to run.
        job: SwitchJob,
    },
    /// Recovery: follow a switch's unit that is already running until it ends.
    Watch {
        /// Its id.
        switch: SwitchId,
    },
    /// Timeout: stop the switch's unit; nothing is reported.
    Abort {
        /// Its id.
        switch: SwitchId,
    },
    /// The switch's result is durable: release its unit (which kept the result until now).
    Release {
        /// Its id.
        switch: SwitchId,
    },
    /// Reboot the host.
    Reboot,
}

/// Runs until `cancel` (or until the applier drops its sender), executing commands in order.
pub async fn run<S: System>(
    system: Arc<S>,
    commands: &mut mpsc::Receiver<ActivationCommand>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    run_polling(system, commands, inputs, cancel, POLL_INTERVAL).await
}

/// [`run`] with a chosen poll interval (tests poll faster).
pub(crate) async fn run_polling<S: System>(
    system: Arc<S>,
    commands: &mut mpsc::Receiver<ActivationCommand>,
    inputs: InputSender,
    cancel: CancellationToken,
    poll: Duration,
) -> Result<(), WorkerError> {
    let mut worker = Worker {
        system,
        inputs,
        cancel,
        poll,
        deferred: VecDeque::new(),
    };
    loop {
        let command = match worker.deferred.pop_front() {
            Some(command) => command,
            None => tokio::select! {
                biased;
                () = worker.cancel.cancelled() => return Ok(()),
                command = commands.recv() => match command {
                    Some(command) => command,
                    None => return Ok(()),
                },
            },
        };
        match worker.execute(command, commands).await? {
            Flow::Continue => {}
            Flow::Shutdown => return Ok(()),
        }
    }
}

/// Whether the worker goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Shutdown,
}

/// How waiting for something while following a switch ended.
enum Followed<T> {
    /// It finished.
    Done(T),
    /// The switch needs no more following: it was aborted (and stopped), or its end was
    /// reported.
    Ended,
    /// The worker is shutting down.
    Shutdown,
}

struct Worker<S> {
    system: Arc<S>,
    inputs: InputSender,
    cancel: CancellationToken,
    poll: Duration,
    /// Commands that arrived while a switch was followed, executed after it.
    deferred: VecDeque<ActivationCommand>,
}

impl<S: System> Worker<S> {
    async fn execute(
        &mut self,
        command: ActivationCommand,
        commands: &mut mpsc::Receiver<ActivationCommand>,
    ) -> Result<Flow, WorkerError> {
        match command {
            ActivationCommand::Realise { target } => {
                let span = tracing::info_span!("realise", closure = %target);
                self.realise(target).instrument(span).await
            }
            ActivationCommand::Run { switch, job } => {
                let span = tracing::info_span!("switch", %switch, closure = %job.closure);
                self.follow(switch, Some(job), commands)
                    .instrument(span)
                    .await
            }
            ActivationCommand::Watch { switch } => {
                let span = tracing::info_span!("switch", %switch);
                self.follow(switch, None, commands).instrument(span).await
            }
            ActivationCommand::Abort { switch } | ActivationCommand::Release { switch } => {
                self.stop(switch).await;
                Ok(Flow::Continue)
            }
            ActivationCommand::Reboot => {
                tracing::info!("rebooting the host");
                if let Err(e) = self.system.reboot().await {
                    tracing::error!(error = %e, "cannot reboot the host");
                }
                Ok(Flow::Continue)
            }
        }
    }

    async fn realise(&mut self, target: StorePath) -> Result<Flow, WorkerError> {
        tracing::info!("realising");
        let result = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Ok(Flow::Shutdown),
            result = self.system.realise(&target) => result,
        };
        self.send(Event::RealiseFinished { target, result }).await
    }

    /// Launches (for `Run`) and follows a switch until its unit ends, then reports it.
    async fn follow(
        &mut self,
        switch: SwitchId,
        job: Option<SwitchJob>,
        commands: &mut mpsc::Receiver<ActivationCommand>,
    ) -> Result<Flow, WorkerError> {
        if let Some(job) = &job {
            match self.launch(switch, job, commands).await? {
                Followed::Done(()) => {}
                Followed::Ended => return Ok(Flow::Continue),
                Followed::Shutdown => return Ok(Flow::Shutdown),
            }
        } else {
            tracing::info!("following the switch's unit");
        }
        loop {
            let state = match self.system.switch_state(switch).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the switch's unit; trying again");
                    UnitState::Running
                }
            };
            let outcome = match state {
                UnitState::Running => {
                    match self
                        .during(switch, commands, tokio::time::sleep(self.poll))
                        .await
                    {
                        Followed::Done(()) => continue,
                        Followed::Ended => return Ok(Flow::Continue),
                        Followed::Shutdown => return Ok(Flow::Shutdown),
                    }
                }
                UnitState::Exited {
                    exit_code,
                    output_tail,
                } => {
                    if let Some(job) = &job
                        && exit_code == Some(1)
                        && output_tail.contains(LOCK_CONTENTION)
                    {
                        tracing::info!(
                            "another switch took the switch lock first; starting again when it is free"
                        );
                        self.stop(switch).await;
                        match self.launch(switch, job, commands).await? {
                            Followed::Done(()) => continue,
                            Followed::Ended => return Ok(Flow::Continue),
                            Followed::Shutdown => return Ok(Flow::Shutdown),
                        }
                    }
                    (exit_code, output_tail)
                }
                UnitState::Gone => (
                    None,
                    "fleetnode: the switch's unit vanished without a result (collected, stopped \
                     by someone else, or the host rebooted)"
                        .to_owned(),
                ),
            };
            return self.finish(switch, outcome).await;
        }
    }

    /// Starts the switch's unit, still accepting an abort while it waits for the switch lock.
    async fn launch(
        &mut self,
        switch: SwitchId,
        job: &SwitchJob,
        commands: &mut mpsc::Receiver<ActivationCommand>,
    ) -> Result<Followed<()>, WorkerError> {
        let system = self.system.clone();
        let started = self
            .during(switch, commands, system.start_switch(switch, job))
            .await;
        match started {
            Followed::Done(Ok(())) => Ok(Followed::Done(())),
            Followed::Done(Err(e)) => {
                tracing::error!(error = %e, "cannot launch the switch");
                let tail = format!("fleetnode: cannot launch the switch: {e}");
                match self.finish(switch, (None, tail)).await? {
                    Flow::Continue => Ok(Followed::Ended),
                    Flow::Shutdown => Ok(Followed::Shutdown),
                }
            }
            Followed::Ended => Ok(Followed::Ended),
            Followed::Shutdown => Ok(Followed::Shutdown),
        }
    }

    /// Reports how the switch ended; the unit stays until a `Release` command.
    async fn finish(
        &mut self,
        switch: SwitchId,
        (exit_code, output_tail): (Option<i32>, String),
    ) -> Result<Flow, WorkerError> {
        let Some(system) = self.observe().await else {
            return Ok(Flow::Shutdown);
        };
        let outcome = if exit_code == Some(0) {
            tracing::info!(current = ?system.current, "switch completed");
            SwitchOutcome::Completed { system }
        } else {
            tracing::warn!(?exit_code, current = ?system.current, "switch failed");
            SwitchOutcome::Failed {
                exit_code,
                output_tail: cap_tail(&output_tail, OUTPUT_TAIL_CAP),
                system,
            }
        };
        // The unit keeps the result until the reducer has persisted it and the state machine
        // asks for its release; a crash before that finds the unit and its result again.
        self.send(Event::SwitchFinished { switch, outcome }).await
    }

    /// Runs `work` while watching the commands: an abort of `switch` stops it, other commands
    /// wait their turn.
    async fn during<T>(
        &mut self,
        switch: SwitchId,
        commands: &mut mpsc::Receiver<ActivationCommand>,
        work: impl Future<Output = T>,
    ) -> Followed<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Followed::Shutdown,
                command = commands.recv() => match command {
                    Some(ActivationCommand::Abort { switch: aborted }) if aborted == switch => {
                        tracing::warn!("switch aborted");
                        self.stop(switch).await;
                        return Followed::Ended;
                    }
                    Some(
                        ActivationCommand::Abort { switch: other }
                        | ActivationCommand::Release { switch: other },
                    ) => self.stop(other).await,
                    Some(other) => {
                        tracing::warn!(command = ?other, "command arrived while a switch runs; it runs after the switch");
                        self.deferred.push_back(other);
                    }
                    // The applier is gone: the agent is stopping. Leave the unit running.
                    None => return Followed::Shutdown,
                },
                output = &mut work => return Followed::Done(output),
            }
        }
    }

    /// Stops a switch's unit and clears its record; failures are logged.
    async fn stop(&self, switch: SwitchId) {
        if let Err(e) = self.system.stop_switch(switch).await {
            tracing::error!(%switch, error = %e, "cannot stop the switch's unit");
        }
    }

    /// Observes the system, retrying until it works; `None` on shutdown.
    async fn observe(&self) -> Option<SystemView> {
        loop {
            match self.system.observe().await {
                Ok(view) => return Some(view),
                Err(e) => tracing::error!(error = %e, "cannot observe the system; retrying"),
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(OBSERVE_RETRY) => {}
            }
        }
    }

    async fn send(&self, event: Event) -> Result<Flow, WorkerError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Ok(Flow::Shutdown),
            sent = self.inputs.send(Input::Event(event)) => match sent {
                Ok(()) => Ok(Flow::Continue),
                Err(_) => Err(WorkerError::new(
                    "activation: the reducer's input channel is closed",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests;
