//! The activation work the event loop holds in flight: realises, switches, reboots, the roots on
//! the generations to keep, and the check for a new agent.
//!
//! The event loop starts one job per [`Command`] at once (nothing waits in a queue) and polls
//! the jobs' ends itself ([`InFlight::next`]), so a job's result reaches the loop without a
//! channel. Each job reports what it saw as an event and decides nothing:
//! - a realise ends in [`Event::RealiseFinished`];
//! - a switch ends in [`Event::SwitchFinished`] with how its unit ended
//!   ([`fleetnode_state_machine::SwitchEnd`]: the exit code and output as the unit recorded
//!   them, a unit that vanished, a unit that could not start, or a switch not started because
//!   another switch held the switch lock) and the system observed afterwards. Whether that is a
//!   success, a failure, or a lock to wait for is the state machine's call;
//! - an aborted switch (the state machine already decided it timed out) reports nothing: its
//!   job holds a cancellation token of its own, keyed by the switch's id, and
//!   [`Command::AbortSwitch`] cancels it and stops the unit;
//! - the generations to keep, a release and a reboot report nothing (a failure is logged).
//!
//! Order: the steps that change the host (a realise, a switch's launch, a unit's stop, the
//! roots, a reboot) take their turn in the order of their commands; each waits for the one
//! before it to end. Following a running unit is not such a step, so while a switch runs, an
//! abort, a release or new roots are carried out at once, as before a switch.
//!
//! Shutdown leaves a running unit alone: the state is persisted and recovery follows the unit
//! again. A finished unit is released only on [`Command::ReleaseSwitch`], once its result is
//! durable.

mod jobs;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Command, Event, SwitchId};
use fleetnode_wire::WorkerStatus;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, warn};

use crate::status::Workers;
use crate::system::System;
use jobs::{Carrier, Done, Host, Job, Turn};

/// This part's name in the workers' statuses.
pub const NAME: &str = "activation";
/// How often a running switch's unit is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The activation jobs in flight, held by the event loop.
pub struct InFlight {
    host: Arc<dyn Host>,
    jobs: JoinSet<Done>,
    /// The cancellation of each switch followed now, with the number of the job that holds it
    /// (a switch launched again under its id replaces its entry).
    switches: BTreeMap<SwitchId, (u64, CancellationToken)>,
    /// Ended when the last step started so far ends: the next step waits for it.
    last_step: Option<oneshot::Receiver<()>>,
    started: u64,
    workers: Workers,
    cancel: CancellationToken,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("jobs", &self.jobs.len())
            .field("switches", &self.switches.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl InFlight {
    /// Nothing in flight yet; every job stops when `cancel` fires.
    pub fn new<S: System>(system: Arc<S>, workers: Workers, cancel: CancellationToken) -> Self {
        Self::polling(system, workers, cancel, POLL_INTERVAL)
    }

    /// [`InFlight::new`] with a chosen poll interval (tests poll faster).
    pub(crate) fn polling<S: System>(
        system: Arc<S>,
        workers: Workers,
        cancel: CancellationToken,
        poll: Duration,
    ) -> Self {
        workers.set(NAME, WorkerStatus::Idle);
        Self {
            host: Arc::new(Carrier::new(system, poll, cancel.clone())),
            jobs: JoinSet::new(),
            switches: BTreeMap::new(),
            last_step: None,
            started: 0,
            workers,
            cancel,
        }
    }

    /// Starts carrying out `command`; never waits.
    pub fn start(&mut self, command: Command) {
        let job = match command {
            Command::KeepGenerations { generations } => Job::Keep {
                generations,
                turn: self.turn(),
            },
            Command::Realise { target } => Job::Realise {
                target,
                turn: self.turn(),
            },
            Command::RunSwitch { switch, job } => {
                let (number, abort) = self.follow(switch);
                Job::Switch {
                    switch,
                    number,
                    job: Some((job, self.turn())),
                    abort,
                }
            }
            Command::WatchSwitch { switch } => {
                let (number, abort) = self.follow(switch);
                Job::Switch {
                    switch,
                    number,
                    job: None,
                    abort,
                }
            }
            Command::AbortSwitch { switch } => {
                if let Some((_, abort)) = self.switches.remove(&switch) {
                    warn!(%switch, "switch aborted");
                    abort.cancel();
                }
                Job::Stop {
                    switch,
                    turn: self.turn(),
                }
            }
            Command::ReleaseSwitch { switch } => Job::Stop {
                switch,
                turn: self.turn(),
            },
            Command::Reboot => Job::Reboot { turn: self.turn() },
            Command::CheckAgentUpgrade => Job::CheckAgentUpgrade,
            Command::ResetProbes { .. } | Command::Restart { .. } => {
                error!(?command, "the activation got a command that is not its own");
                return;
            }
        };
        let span = job.span();
        self.jobs.spawn(self.host.clone().run(job).instrument(span));
        self.workers.set(NAME, WorkerStatus::Running);
    }

    /// The next event a job reports; pending while no job is in flight.
    pub async fn next(&mut self) -> Event {
        loop {
            let Some(ended) = self.jobs.join_next().await else {
                return std::future::pending().await;
            };
            if let Some(event) = self.ended(ended) {
                return event;
            }
        }
    }

    /// True when no job is in flight.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Cancels every job and waits up to `grace` for them to end (a running unit is left
    /// alone, to be followed again by the next start).
    pub async fn shutdown(&mut self, grace: Duration) {
        self.cancel.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.jobs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some activation jobs did not stop in time; leaving them");
            self.jobs.abort_all();
        }
        self.workers.set(NAME, WorkerStatus::Idle);
    }

    /// An event of a job that already ended, if any (tests look whether one is left).
    #[cfg(test)]
    pub(crate) fn try_next(&mut self) -> Option<Event> {
        while let Some(ended) = self.jobs.try_join_next() {
            if let Some(event) = self.ended(ended) {
                return Some(event);
            }
        }
        None
    }

    /// Books a job's end: its switch is no longer followed, a panic is a fault to see.
    fn ended(&mut self, ended: Result<Done, tokio::task::JoinError>) -> Option<Event> {
        if self.jobs.is_empty() {
            self.workers.set(NAME, WorkerStatus::Idle);
        }
        match ended {
            Ok(done) => {
                if let Some((switch, number)) = done.followed
                    && self
                        .switches
                        .get(&switch)
                        .is_some_and(|(n, _)| *n == number)
                {
                    self.switches.remove(&switch);
                }
                done.event
            }
            Err(e) => {
                // Its command is lost; the state machine's deadline for that work still
                // falls due and decides what follows.
                error!(error = %e, "an activation job failed");
                self.workers.fault(NAME, &format!("a job failed: {e}"));
                None
            }
        }
    }

    /// Registers a job that follows `switch`, replacing (and cancelling) an older one.
    fn follow(&mut self, switch: SwitchId) -> (u64, CancellationToken) {
        self.started += 1;
        let abort = self.cancel.child_token();
        if let Some((_, older)) = self.switches.insert(switch, (self.started, abort.clone())) {
            older.cancel();
        }
        (self.started, abort)
    }

    /// The next place in the order of the steps that change the host.
    fn turn(&mut self) -> Turn {
        let (done, after) = oneshot::channel();
        Turn::new(self.last_step.replace(after), done)
    }
}

#[cfg(test)]
mod tests;
