//! The reducer: the only caller of `step`, and the only writer of the store.
//!
//! For each input it calls `step`, persists the new state with the new outbound events in one
//! durable transaction, and only then hands the effects to the applier. A refused input is
//! logged and counted and leaves the state as it was. A failed write is retried (the input is
//! held, nothing is applied) until it succeeds or the agent shuts down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Effect, Event, OutboundEvent, Phase, ProbeId, Report, State, Timestamp, TransitionError, step,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::explain::log_report;
use super::status::{Snapshot, Workers};
use crate::clock::Clock;
use crate::input::Input;
use crate::metrics::Metrics;
use crate::store::{CommitReport, DeadLetterOutcome, Store};

/// Capacity of the reducer-to-applier channel, in effect lists. One list per input that changed
/// something; a list holds a handful of small effects. 64 lists is well under 1 MiB, and the
/// applier drains them as fast as the worker channels take them.
pub const APPLY_CHANNEL_CAPACITY: usize = 64;

/// Longest pause between attempts to write the store after a failure.
const MAX_STORE_RETRY: Duration = Duration::from_secs(30);

/// Called after every commit with the events it made durable (used by the crash test harness).
pub type CommitHook = Box<dyn FnMut(&[OutboundEvent]) + Send>;

/// Called after a commit that converged; returns why the agent must restart to run a new
/// version of itself, if it must.
pub type RestartCheck = Box<dyn FnMut() -> Option<String> + Send>;

/// The reducer was stopped before it could finish the input in hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    /// Shutdown was requested.
    #[error("shutdown requested")]
    Cancelled,
    /// The applier is gone, so effects can no longer be carried out.
    #[error("the applier stopped")]
    ApplierGone,
    /// The agent must restart to run its new version.
    #[error("restarting to run the new version: {0}")]
    Restart(String),
}

/// What the reducer publishes for the other tasks.
#[derive(Debug, Clone)]
pub struct Published {
    /// The latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The next deadline, for the ticker.
    pub deadline: watch::Receiver<Option<Timestamp>>,
}

/// The reducer task's state.
pub struct Reducer {
    store: Store,
    state: State,
    clock: Clock,
    effects: mpsc::Sender<Vec<Effect>>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    deadline: watch::Sender<Option<Timestamp>>,
    metrics: Arc<Metrics>,
    workers: Workers,
    latest: BTreeMap<ProbeId, (bool, String)>,
    status_line: String,
    cancel: CancellationToken,
    on_commit: Option<CommitHook>,
    restart_check: Option<RestartCheck>,
}

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("phase", &self.state.host.phase.name())
            .field("seq", &self.state.host.seq)
            .finish_non_exhaustive()
    }
}

impl Reducer {
    /// A reducer over a loaded store and state, sending effects to `effects`.
    pub fn new(
        store: Store,
        state: State,
        clock: Clock,
        effects: mpsc::Sender<Vec<Effect>>,
        metrics: Arc<Metrics>,
        workers: Workers,
        cancel: CancellationToken,
    ) -> (Self, Published) {
        let snapshot = Snapshot::of(&state, store.stream(), store.stats(), &BTreeMap::new());
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(snapshot));
        let next = state.next_deadline().map(|(at, _)| at);
        let (deadline_tx, deadline_rx) = watch::channel(next);
        let reducer = Self {
            store,
            state,
            clock,
            effects,
            snapshot: snapshot_tx,
            deadline: deadline_tx,
            metrics,
            workers,
            latest: BTreeMap::new(),
            status_line: String::new(),
            cancel,
            on_commit: None,
            restart_check: None,
        };
        reducer.export();
        let published = Published {
            snapshot: snapshot_rx,
            deadline: deadline_rx,
        };
        (reducer, published)
    }

    /// Calls `hook` after every commit with the events made durable.
    pub fn on_commit(&mut self, hook: CommitHook) {
        self.on_commit = Some(hook);
    }

    /// Calls `check` after a commit that converged; a `Some` stops the reducer for a restart.
    pub fn restart_check(&mut self, check: RestartCheck) {
        self.restart_check = Some(check);
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The systemd status line for the current state.
    pub fn status_line(&self) -> String {
        let host = &self.state.host;
        let mut line = format!("phase {}", host.phase.name());
        if let Some(target) = super::status::target(&host.phase) {
            line.push_str(&format!(", target {}", target.name()));
        }
        if host.paused {
            line.push_str(", paused");
        }
        let queue = self.store.stats().depth;
        if queue > 0 {
            line.push_str(&format!(", {queue} events queued"));
        }
        line
    }

    /// Runs until cancelled, pinging the systemd watchdog every `watchdog` (also when idle).
    pub async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        watchdog: Option<Duration>,
    ) -> Result<(), Stopped> {
        let mut ping = watchdog.map(tokio::time::interval);
        loop {
            let tick = async {
                match ping.as_mut() {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(Stopped::Cancelled),
                () = tick => crate::systemd::watchdog(),
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input).await?,
                    None => return Err(Stopped::Cancelled),
                },
            }
        }
    }

    /// Handles one input.
    pub async fn handle(&mut self, input: Input) -> Result<(), Stopped> {
        match input {
            Input::Event(event) => self.event(event).await,
            Input::Acked { through } => {
                match self.store.ack(through) {
                    Ok(removed) => debug!(through, removed, "events acknowledged"),
                    Err(e) => error!(through, error = %e, "cannot drop acknowledged events"),
                }
                self.publish();
                Ok(())
            }
            Input::DeadLettered { seq, code } => {
                let now = self.clock.now();
                match self.store.dead_letter(seq, &code, now) {
                    Ok(DeadLetterOutcome::Moved(gap)) => {
                        log_report(&gap, self.state.host.phase.name());
                        self.send_effects(vec![Effect::Report(gap)]).await?;
                    }
                    Ok(DeadLetterOutcome::NotQueued) => {
                        debug!(seq, "dead letter for an event no longer queued");
                    }
                    Err(e) => error!(seq, error = %e, "cannot move the event to the dead letters"),
                }
                self.publish();
                Ok(())
            }
            Input::Status(reply) => {
                let mut value = serde_json::to_value(&**self.snapshot.borrow())
                    .unwrap_or(serde_json::Value::Null);
                if let Some(object) = value.as_object_mut() {
                    let workers = serde_json::to_value(self.workers.list())
                        .unwrap_or(serde_json::Value::Null);
                    object.insert("workers".into(), workers);
                }
                // The asker may have given up waiting; nothing to do then.
                let _ = reply.send(value);
                Ok(())
            }
        }
    }

    /// Steps the state machine with one event, persists, then applies.
    pub async fn event(&mut self, event: Event) -> Result<(), Stopped> {
        let now = self.clock.now();
        let probe = match &event {
            Event::ProbeResult(result) => Some(result.clone()),
            Event::Started(_)
            | Event::DirectiveReceived(_)
            | Event::PauseRequested
            | Event::ResumeRequested
            | Event::RealiseFinished { .. }
            | Event::SwitchFinished { .. }
            | Event::Tick
            | Event::Reported(_) => None,
        };
        let (next, effects) = match step(&self.state, event, now) {
            Ok(result) => result,
            Err(e) => {
                self.refused(&e);
                return Ok(());
            }
        };
        let events: Vec<OutboundEvent> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Report(event) => Some(event.clone()),
                Effect::Realise { .. }
                | Effect::RunSwitch { .. }
                | Effect::WatchSwitch { .. }
                | Effect::AbortSwitch { .. }
                | Effect::ReleaseSwitch { .. }
                | Effect::ResetProbes { .. }
                | Effect::Reboot => None,
            })
            .collect();
        let changed =
            !events.is_empty() || next.host != self.state.host || next.probes != self.state.probes;
        if changed {
            let report = self.persist(&next, &events).await?;
            self.after_commit(report, &events);
        }
        let previous = std::mem::replace(&mut self.state, next);
        if previous.host.probe_epoch != self.state.host.probe_epoch {
            self.latest.clear();
        }
        if let Some(result) = probe {
            self.latest
                .insert(result.probe, (result.passed, result.detail));
        }
        for event in &events {
            log_report(event, self.state.host.phase.name());
        }
        self.count(&previous.host.phase, &events);
        self.publish();
        if !effects.is_empty() {
            self.send_effects(effects).await?;
        }
        if events
            .iter()
            .any(|e| matches!(e.report, Report::Converged { .. }))
            && let Some(check) = self.restart_check.as_mut()
            && let Some(why) = check()
        {
            return Err(Stopped::Restart(why));
        }
        Ok(())
    }

    async fn send_effects(&mut self, effects: Vec<Effect>) -> Result<(), Stopped> {
        tokio::select! {
            sent = self.effects.send(effects) => sent.map_err(|_| Stopped::ApplierGone),
            () = self.cancel.cancelled() => Err(Stopped::Cancelled),
        }
    }

    /// Writes the state and events, retrying with backoff until it works or shutdown.
    async fn persist(
        &mut self,
        state: &State,
        events: &[OutboundEvent],
    ) -> Result<CommitReport, Stopped> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.store.commit(state, events) {
                Ok(report) => return Ok(report),
                Err(e) => {
                    self.metrics.store_errors.inc();
                    error!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot write the store; nothing is applied until the write succeeds");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => return Err(Stopped::Cancelled),
            }
            delay = (delay * 2).min(MAX_STORE_RETRY);
        }
    }

    fn after_commit(&mut self, report: CommitReport, events: &[OutboundEvent]) {
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
        if let Some(hook) = self.on_commit.as_mut() {
            hook(events);
        }
    }

    fn refused(&self, error: &TransitionError) {
        let kind = error.code();
        self.metrics
            .refused_inputs
            .get_or_create(&[("kind", kind.to_owned())])
            .inc();
        match error {
            TransitionError::StaleProbeResult { .. }
            | TransitionError::UnknownSwitch { .. }
            | TransitionError::UnknownRealise { .. } => {
                debug!(kind, error = %error, "stale input ignored");
            }
            TransitionError::Unexpected { .. }
            | TransitionError::StaleDirective { .. }
            | TransitionError::ConflictingDirective { .. }
            | TransitionError::UnknownProbe { .. }
            | TransitionError::SeqGap { .. }
            | TransitionError::Diverged(_) => warn!(kind, error = %error, "input refused"),
        }
    }

    /// Counts transitions, switch outcomes and rollbacks.
    fn count(&self, before: &Phase, events: &[OutboundEvent]) {
        let m = &self.metrics;
        let mut rollback_started = false;
        for event in events {
            let name = event.report.name().to_owned();
            m.transitions.get_or_create(&[("report", name)]).inc();
            match &event.report {
                Report::SwitchEnded { verdict, .. } => {
                    let purpose = match before {
                        Phase::Committing(_) => "commit",
                        Phase::RollingBack(_) => "rollback",
                        Phase::Idle
                        | Phase::Realising(_)
                        | Phase::Activating(_)
                        | Phase::Soaking(_)
                        | Phase::Deferred(_)
                        | Phase::Converged(_)
                        | Phase::Reverted(_)
                        | Phase::Failed(_) => "activate",
                    };
                    let outcome = match verdict {
                        fleetnode_state_machine::SwitchVerdict::Succeeded => "succeeded",
                        fleetnode_state_machine::SwitchVerdict::SucceededWithWarnings {
                            ..
                        } => "succeeded-with-warnings",
                        fleetnode_state_machine::SwitchVerdict::Failed { .. } => "failed",
                    };
                    m.switches
                        .get_or_create(&[
                            ("purpose", purpose.to_owned()),
                            ("outcome", outcome.to_owned()),
                        ])
                        .inc();
                }
                Report::RollbackStarted { reason, .. } => {
                    rollback_started = true;
                    m.rollbacks
                        .get_or_create(&[("reason", reason.code().to_owned())])
                        .inc();
                }
                Report::Reverted { reason, .. } => {
                    // A revert that ends a rollback counted above or before this input was
                    // counted when it started; one without (found done after a reboot) counts
                    // here.
                    if !rollback_started && !matches!(before, Phase::RollingBack(_)) {
                        m.rollbacks
                            .get_or_create(&[("reason", reason.code().to_owned())])
                            .inc();
                    }
                }
                Report::Recovered { .. }
                | Report::PolicyApplied { .. }
                | Report::DirectiveRecorded { .. }
                | Report::Paused
                | Report::Resumed
                | Report::AlreadyConverged { .. }
                | Report::WorkStarted { .. }
                | Report::Realised { .. }
                | Report::ActivationStarted { .. }
                | Report::SoakStarted { .. }
                | Report::DeferredUntilBoot { .. }
                | Report::ProbeObserved { .. }
                | Report::CommitStarted { .. }
                | Report::Converged { .. }
                | Report::Failed { .. }
                | Report::Superseded { .. }
                | Report::RollbackRejected { .. }
                | Report::Gap { .. } => {}
            }
        }
    }

    /// Publishes the snapshot, the next deadline, metrics and the systemd status line.
    fn publish(&mut self) {
        let snapshot = Snapshot::of(
            &self.state,
            self.store.stream(),
            self.store.stats(),
            &self.latest,
        );
        self.snapshot.send_replace(Arc::new(snapshot));
        let next = self.state.next_deadline().map(|(at, _)| at);
        self.deadline.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
        self.export();
        let line = self.status_line();
        if line != self.status_line {
            crate::systemd::status(&line);
            self.status_line = line;
        }
    }

    fn export(&self) {
        let m = &self.metrics;
        m.set_phase(&self.state.host.phase);
        m.paused.set(i64::from(self.state.host.paused));
        let stats = self.store.stats();
        m.queue_depth.set(stats.depth as i64);
        m.queue_bytes.set(stats.bytes as i64);
        m.dead_letters.set(stats.dead_letters as i64);
        let age = stats
            .oldest_at
            .map_or(0.0, |at| self.clock.now().since(at).0 as f64 / 1000.0);
        m.queue_oldest_age_seconds.set(age);
        for probe in &self.snapshot.borrow().probes {
            let value = match probe.passing {
                Some(true) => 1,
                Some(false) => 0,
                None => -1,
            };
            m.probe_status
                .get_or_create(&[("probe", probe.probe.to_string())])
                .set(value);
        }
    }
}
