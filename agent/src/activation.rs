//! The activation worker: realises closures, launches and follows switches, reboots, and
//! checks whether the live generation carries a new agent.
//!
//! It carries out the state machine's [`Command`]s one at a time, in order, and reports what it
//! saw as events; it decides nothing:
//! - a realise ends in [`Event::RealiseFinished`];
//! - a switch ends in [`Event::SwitchFinished`] with how its unit ended ([`SwitchEnd`]: the
//!   exit code and output as the unit recorded them, a unit that vanished, a unit that could
//!   not start, or a switch not started because another switch held the switch lock) and the
//!   system observed afterwards. Whether that is a success, a failure, or a lock to wait for is
//!   the state machine's call;
//! - an aborted switch (the state machine already decided it timed out) reports nothing;
//! - the generations to keep are rooted at once, even while a switch is followed, and report
//!   nothing (a failure is logged).
//!
//! While it follows a unit it still receives commands: an abort of that switch stops it at
//! once. The state machine sends nothing else while a switch runs; anything else that arrives
//! is kept and carried out after the switch ends, in order.
//!
//! Shutdown (`cancel`) leaves a running unit alone: the state is persisted and recovery follows
//! the unit again. A finished unit is released only on [`Command::ReleaseSwitch`], once its
//! result is durable. The receiver is borrowed, so the supervisor can restart the worker without
//! losing the commands still queued.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Command, Event, StorePath, SwitchEnd, SwitchId, SwitchJob, SystemView, UnitState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::input::{Input, InputSender, WorkerError};
use crate::system::{Launch, System};

/// Capacity of the event loop's channel to the activation worker. One transition emits at
/// most three activation commands (a release, an abort and the rollback that follows it) and
/// the loop keeps further ones in its outbox, so 16 leaves ample slack; a command is under
/// 1 KiB, so the channel holds at most ~16 KiB.
pub const ACTIVATION_CHANNEL_CAPACITY: usize = 16;
/// How often a running switch's unit is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait before observing the system again when reading it failed.
const OBSERVE_RETRY: Duration = Duration::from_secs(1);

/// Runs until `cancel` (or until the event loop drops its sender), carrying out commands in
/// order.
pub async fn run<S: System>(
    system: Arc<S>,
    commands: &mut mpsc::Receiver<Command>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    run_polling(system, commands, inputs, cancel, POLL_INTERVAL).await
}

/// [`run`] with a chosen poll interval (tests poll faster).
pub(crate) async fn run_polling<S: System>(
    system: Arc<S>,
    commands: &mut mpsc::Receiver<Command>,
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
    /// The switch was aborted (and stopped): nothing to report.
    Aborted,
    /// The worker is shutting down.
    Shutdown,
}

struct Worker<S> {
    system: Arc<S>,
    inputs: InputSender,
    cancel: CancellationToken,
    poll: Duration,
    /// Commands that arrived while a switch was followed, carried out after it.
    deferred: VecDeque<Command>,
}

impl<S: System> Worker<S> {
    async fn execute(
        &mut self,
        command: Command,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<Flow, WorkerError> {
        match command {
            Command::KeepGenerations { generations } => {
                self.keep(&generations).await;
                Ok(Flow::Continue)
            }
            Command::Realise { target } => {
                let span = tracing::info_span!("realise", closure = %target);
                self.realise(target).instrument(span).await
            }
            Command::RunSwitch { switch, job } => {
                let span = tracing::info_span!("switch", %switch, closure = %job.closure);
                self.switch(switch, Some(job), commands)
                    .instrument(span)
                    .await
            }
            Command::WatchSwitch { switch } => {
                let span = tracing::info_span!("switch", %switch);
                self.switch(switch, None, commands).instrument(span).await
            }
            Command::AbortSwitch { switch } | Command::ReleaseSwitch { switch } => {
                self.stop(switch).await;
                Ok(Flow::Continue)
            }
            Command::Reboot => {
                tracing::info!("rebooting the host");
                if let Err(e) = self.system.reboot().await {
                    tracing::error!(error = %e, "cannot reboot the host");
                }
                Ok(Flow::Continue)
            }
            Command::CheckAgentUpgrade => {
                let upgrade = self.system.agent_upgrade().await;
                self.send(Event::AgentUpgradeChecked { upgrade }).await
            }
            Command::ResetProbes { .. } | Command::Restart { .. } => {
                tracing::error!(
                    ?command,
                    "the activation worker got a command that is not its own"
                );
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

    /// Launches (with a job) or just follows a switch until its unit ends, then reports how.
    async fn switch(
        &mut self,
        switch: SwitchId,
        job: Option<SwitchJob>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Result<Flow, WorkerError> {
        let end = match job {
            Some(job) => match self.launch(switch, &job, commands).await {
                Followed::Done(Some(end)) => Followed::Done(end),
                Followed::Done(None) => self.follow(switch, commands).await,
                Followed::Aborted => Followed::Aborted,
                Followed::Shutdown => Followed::Shutdown,
            },
            None => {
                tracing::info!("following the switch's unit");
                self.follow(switch, commands).await
            }
        };
        match end {
            Followed::Done(end) => self.finish(switch, end).await,
            Followed::Aborted => Ok(Flow::Continue),
            Followed::Shutdown => Ok(Flow::Shutdown),
        }
    }

    /// Starts the switch's unit, still accepting an abort meanwhile. `Done(None)`: the unit
    /// runs (or already ran) and is to be followed; `Done(Some(end))`: it did not start.
    async fn launch(
        &mut self,
        switch: SwitchId,
        job: &SwitchJob,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Followed<Option<SwitchEnd>> {
        let system = self.system.clone();
        match self
            .during(switch, commands, system.start_switch(switch, job))
            .await
        {
            Followed::Done(Ok(Launch::Started)) => Followed::Done(None),
            Followed::Done(Ok(Launch::LockHeld)) => {
                tracing::debug!(
                    "another switch holds the switch lock; the state machine decides when to try again"
                );
                Followed::Done(Some(SwitchEnd::LockHeld))
            }
            Followed::Done(Err(e)) => {
                tracing::error!(error = %e, "cannot launch the switch");
                Followed::Done(Some(SwitchEnd::NotLaunched {
                    error: e.to_string(),
                }))
            }
            Followed::Aborted => Followed::Aborted,
            Followed::Shutdown => Followed::Shutdown,
        }
    }

    /// Polls the switch's unit until it ends.
    async fn follow(
        &mut self,
        switch: SwitchId,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Followed<SwitchEnd> {
        loop {
            match self.system.switch_state(switch).await {
                Ok(UnitState::Exited(exit)) => return Followed::Done(SwitchEnd::Exited(exit)),
                Ok(UnitState::Gone) => return Followed::Done(SwitchEnd::Vanished),
                Ok(UnitState::Running) => {}
                // systemd may be briefly unreachable (a daemon re-exec during the switch):
                // the unit is still there, so look again.
                Err(e) => tracing::warn!(error = %e, "cannot read the switch's unit; trying again"),
            }
            let poll = tokio::time::sleep(self.poll);
            match self.during(switch, commands, poll).await {
                Followed::Done(()) => {}
                Followed::Aborted => return Followed::Aborted,
                Followed::Shutdown => return Followed::Shutdown,
            }
        }
    }

    /// Reports how the switch ended, with the system observed now; the unit stays until the
    /// state machine asks for its release, so a crash before the report is durable finds the
    /// unit and its result again.
    async fn finish(&mut self, switch: SwitchId, end: SwitchEnd) -> Result<Flow, WorkerError> {
        let Some(system) = self.observe().await else {
            return Ok(Flow::Shutdown);
        };
        tracing::info!(?end, current = ?system.current, "switch ended");
        self.send(Event::SwitchFinished {
            switch,
            end,
            system,
        })
        .await
    }

    /// Runs `work` while watching the commands: an abort of `switch` stops it, other commands
    /// wait their turn.
    async fn during<T>(
        &mut self,
        switch: SwitchId,
        commands: &mut mpsc::Receiver<Command>,
        work: impl Future<Output = T>,
    ) -> Followed<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Followed::Shutdown,
                command = commands.recv() => match command {
                    Some(Command::AbortSwitch { switch: aborted }) if aborted == switch => {
                        tracing::warn!("switch aborted");
                        self.stop(switch).await;
                        return Followed::Aborted;
                    }
                    Some(
                        Command::AbortSwitch { switch: other }
                        | Command::ReleaseSwitch { switch: other },
                    ) => self.stop(other).await,
                    // Roots never wait for a switch: what it may roll back to is kept now.
                    Some(Command::KeepGenerations { generations }) => self.keep(&generations).await,
                    Some(other) => self.deferred.push_back(other),
                    // The event loop is gone: the agent is stopping. Leave the unit running.
                    None => return Followed::Shutdown,
                },
                output = &mut work => return Followed::Done(output),
            }
        }
    }

    /// Holds GC roots on exactly `generations`. A failure is logged for a human: the state
    /// machine sends the set again at the next change and at every start.
    async fn keep(&self, generations: &BTreeSet<StorePath>) {
        match self.system.keep_generations(generations).await {
            Ok(()) => tracing::debug!(count = generations.len(), "generations kept"),
            Err(e) => tracing::error!(error = %e,
                "cannot hold GC roots on the generations a rollback may need; a garbage collection may delete them"),
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
                    "activation: the event loop's input channel is closed",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests;
