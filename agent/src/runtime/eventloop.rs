//! The event loop: the one task on the decisions' side of the agent.
//!
//! Its `select!` takes the input channel, the ends of the activation jobs it holds in flight, a
//! sleep until the state's next deadline, cancellation and the systemd watchdog. For each input
//! it calls `step`, writes the new state and the new events in one durable transaction, and
//! only then carries out the commands, as the core made them: an activation command starts a
//! job it holds ([`InFlight`]), a probe reset sets the epoch the probe worker watches.
//!
//! Why this cannot deadlock: the loop never waits for a worker. It sends into no bounded
//! channel: starting a job, setting a watch, waking the drainer and answering a oneshot all
//! return at once. The only bounded channel is its own input channel, which it keeps
//! receiving from in the same `select!`, so every worker that waits to send is served.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Command, Event, OutboundEvent, ProbeId, State, Step, step, timeout};
use fleetnode_wire::AgentStatus;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::record::{self, log_report};
use crate::clock::Clock;
use crate::input::Input;
use crate::metrics::Metrics;
use crate::status::{self, LatestProbes, Workers};
use crate::store::{CommitReport, Store};
use crate::workers::activation::InFlight;

mod inputs;

/// Longest pause between attempts to write the store after a failure.
const MAX_STORE_RETRY: Duration = Duration::from_secs(30);
/// How long shutdown waits for the tasks (and the activation jobs) to finish.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the event loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested (SIGTERM, SIGINT).
    Stopped,
    /// The state machine asked to restart into the agent the committed generation carries
    /// (exit 0; systemd starts the new version).
    Restart(String),
}

/// Everything the event loop owns or shares.
#[derive(Debug)]
pub struct EventLoop {
    store: Store,
    state: State,
    clock: Clock,
    activation: InFlight,
    probe_epoch: watch::Sender<u64>,
    drainer: Arc<Notify>,
    status: watch::Sender<Arc<AgentStatus>>,
    metrics: Arc<Metrics>,
    workers: Workers,
    latest: LatestProbes,
    status_line: String,
    restart: Option<String>,
    refusals: record::Refusals,
    /// The switch the wait for the switch lock was last logged for (logged once per switch).
    waited_for_lock: Option<fleetnode_state_machine::SwitchId>,
    cancel: CancellationToken,
}

/// What a new event loop is built from.
#[derive(Debug)]
pub struct Parts {
    /// The store, opened.
    pub store: Store,
    /// The state it holds.
    pub state: State,
    /// The agent's clock.
    pub clock: Clock,
    /// The activation jobs in flight (none yet).
    pub activation: InFlight,
    /// The probe epoch the probe worker runs in; set on every probe reset.
    pub probe_epoch: watch::Sender<u64>,
    /// Woken after every commit with new events.
    pub drainer: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Worker statuses.
    pub workers: Workers,
    /// Shutdown.
    pub cancel: CancellationToken,
}

/// The loop was stopped before it could finish the input in hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shutdown requested")]
pub struct Cancelled;

impl EventLoop {
    /// A loop over a loaded store and state; also returns the status watch the workers read.
    pub fn new(parts: Parts) -> (Self, watch::Receiver<Arc<AgentStatus>>) {
        let queue = parts.store.stats();
        let now = parts.clock.now();
        let first = status::build(
            &parts.state,
            parts.store.stream(),
            queue,
            &LatestProbes::new(),
            parts.workers.list(),
            now,
        );
        let (status, watch) = watch::channel(Arc::new(first));
        let event_loop = Self {
            store: parts.store,
            state: parts.state,
            clock: parts.clock,
            activation: parts.activation,
            probe_epoch: parts.probe_epoch,
            drainer: parts.drainer,
            status,
            metrics: parts.metrics,
            workers: parts.workers,
            latest: LatestProbes::new(),
            status_line: String::new(),
            restart: None,
            refusals: record::Refusals::default(),
            waited_for_lock: None,
            cancel: parts.cancel,
        };
        let mut event_loop = event_loop;
        event_loop.publish();
        (event_loop, watch)
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The status as of now.
    pub fn status(&self) -> AgentStatus {
        status::build(
            &self.state,
            self.store.stream(),
            self.store.stats(),
            &self.latest,
            self.workers.list(),
            self.clock.now(),
        )
    }

    /// Runs until cancelled or until the state machine asks for a restart, pinging the
    /// systemd watchdog every `watchdog` (also when idle); then stops the activation jobs.
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        watchdog: Option<Duration>,
    ) -> Exit {
        let exit = self.serve(&mut inputs, watchdog).await;
        self.activation.shutdown(SHUTDOWN_GRACE).await;
        exit
    }

    async fn serve(
        &mut self,
        inputs: &mut mpsc::Receiver<Input>,
        watchdog: Option<Duration>,
    ) -> Exit {
        let mut ping = watchdog.map(tokio::time::interval);
        loop {
            if let Some(reason) = self.restart.clone() {
                return Exit::Restart(reason);
            }
            let deadline = self
                .state
                .next_deadline()
                .map(|(at, _)| self.clock.instant_at(at));
            let busy = !self.activation.is_idle();
            let wake = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Exit::Stopped,
                () = tick(ping.as_mut()) => Wake::Watchdog,
                event = self.activation.next(), if busy => Wake::Event(event),
                () = sleep_until(deadline) => Wake::Deadline,
                input = inputs.recv() => match input {
                    Some(input) => Wake::Input(input),
                    None => return Exit::Stopped,
                },
            };
            let handled = match wake {
                Wake::Watchdog => {
                    crate::systemd::watchdog();
                    Ok(())
                }
                Wake::Deadline => self.deadline().await,
                Wake::Event(event) => self.event(event).await,
                Wake::Input(input) => self.handle(input).await,
            };
            if handled.is_err() {
                return Exit::Stopped;
            }
        }
    }

    /// Lets time pass to now: the deadlines due fire. This cannot be refused (see
    /// [`timeout`]), so a due deadline always moves the state and is never slept for again.
    pub async fn deadline(&mut self) -> Result<(), Cancelled> {
        let step = timeout(&self.state, self.clock.now());
        self.apply(step, None).await
    }

    /// Steps the state machine with one event, persists, then carries out the commands.
    pub async fn event(&mut self, event: Event) -> Result<(), Cancelled> {
        let now = self.clock.now();
        let probe = match &event {
            Event::ProbeResult(result) => {
                Some((result.probe.clone(), (result.passed, result.detail.clone())))
            }
            Event::Started(_)
            | Event::DesiredObserved(_)
            | Event::PauseRequested
            | Event::ResumeRequested
            | Event::RealiseFinished { .. }
            | Event::SwitchFinished { .. }
            | Event::AgentUpgradeChecked { .. }
            | Event::Tick
            | Event::ResyncRequested { .. } => None,
        };
        match step(&self.state, event, now) {
            Ok(step) => self.apply(step, probe).await,
            Err(e) => {
                self.refusals.record(&self.metrics, &e);
                Ok(())
            }
        }
    }

    /// Persists a step, then carries out its commands and publishes the status.
    async fn apply(
        &mut self,
        step: Step,
        probe: Option<(ProbeId, (bool, String))>,
    ) -> Result<(), Cancelled> {
        let Step {
            state,
            events,
            commands,
        } = step;
        if let Some(relaunch) = state.relaunch
            && self.waited_for_lock != Some(relaunch.switch)
        {
            info!(
                switch = %relaunch.switch,
                "another switch holds the switch lock; the switch waits and is launched again every {} until its deadline",
                fleetnode_state_machine::SWITCH_LOCK_RETRY
            );
            self.waited_for_lock = Some(relaunch.switch);
        }
        if !events.is_empty() || changed_beyond_clock(&self.state, &state) {
            let report = self.persist(&state, &events).await?;
            self.after_commit(report);
        }
        let before = std::mem::replace(&mut self.state, state);
        if before.host.probe_epoch != self.state.host.probe_epoch {
            self.latest.clear();
        }
        if let Some((probe, latest)) = probe {
            self.latest.insert(probe, latest);
        }
        for event in &events {
            log_report(event, self.state.host.phase.name());
        }
        record::count(&self.metrics, &before.host.phase, &events);
        if !events.is_empty() {
            self.drainer.notify_one();
        }
        for command in commands {
            self.route(command);
        }
        self.publish();
        Ok(())
    }

    /// Carries out a command: starts its activation job, sets the probe epoch, or (a restart)
    /// ends the loop.
    fn route(&mut self, command: Command) {
        match command {
            Command::ResetProbes { epoch } => {
                self.probe_epoch.send_replace(epoch);
            }
            Command::Restart { reason } => {
                warn!(%reason, "restarting to run the agent the committed generation carries");
                self.restart = Some(reason);
            }
            Command::KeepGenerations { .. }
            | Command::Realise { .. }
            | Command::RunSwitch { .. }
            | Command::WatchSwitch { .. }
            | Command::AbortSwitch { .. }
            | Command::ReleaseSwitch { .. }
            | Command::Reboot
            | Command::CheckAgentUpgrade => self.activation.start(command),
        }
    }

    /// Writes the state and events, retrying with backoff until it works or shutdown.
    async fn persist(
        &mut self,
        state: &State,
        events: &[OutboundEvent],
    ) -> Result<CommitReport, Cancelled> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.commit(state, events) {
                Ok(report) => return Ok(report),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    error!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot write the store; nothing is carried out until the write succeeds");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return Err(Cancelled),
            }
            delay = (delay * 2).min(MAX_STORE_RETRY);
        }
    }

    fn after_commit(&mut self, report: CommitReport) {
        if report.compacted > 0 {
            self.metrics.queue_compacted.inc_by(report.compacted);
            warn!(
                dropped = report.compacted,
                "outbound queue full: older probe observations compacted"
            );
        }
        if report.over_cap {
            let stats = self.store.stats();
            error!(
                depth = stats.depth,
                bytes = stats.bytes,
                "outbound queue over its cap with only lifecycle events left; it keeps growing until the control plane is reachable"
            );
        }
    }

    /// Publishes the status, the metrics that mirror it and the systemd status line.
    fn publish(&mut self) {
        let status = self.status();
        record::export(&self.metrics, &status);
        let line = status::line(&status);
        self.status.send_replace(Arc::new(status));
        if line != self.status_line {
            crate::systemd::status(&line);
            self.status_line = line;
        }
    }
}

/// True when `after` differs from `before` in more than what a start sets afresh: only then is
/// a write due. The clock is re-anchored at every start from the wall clock and the last
/// write; the control plane's hold flag as last seen and a pending relaunch are cleared by
/// recovery, so writing them alone (every second while another switch holds the lock) would
/// cost fsyncs for nothing.
fn changed_beyond_clock(before: &State, after: &State) -> bool {
    let mut same = after.clone();
    same.clock = before.clock;
    same.control_plane_paused = before.control_plane_paused;
    same.relaunch = before.relaunch;
    same != *before
}

/// What woke the loop.
enum Wake {
    /// The watchdog is due.
    Watchdog,
    /// The state's next deadline fell due.
    Deadline,
    /// An activation job ended with this event.
    Event(Event),
    /// A worker's input.
    Input(Input),
}

async fn tick(interval: Option<&mut Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
