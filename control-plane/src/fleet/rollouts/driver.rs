//! The rollout driver: the one task that decides for every rollout, and the one writer of
//! rollouts in the store.
//!
//! Its loop waits for an operator's request, a host whose mirror changed (a nudge from event
//! ingestion), the earliest deadline of a rollout, or shutdown; then it observes every rollout
//! that is not settled, runs the pure `step`, and hands the directives it gives to the fleet's
//! one path of desired-state changes ([`Fleet::commit_rollout`]), which commits them together
//! with the new rollout in one transaction. A desired state that changed since the observation
//! makes the decision void; it is taken again from a fresh observation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::{HostId, Rollout, RolloutId, RolloutPhase, StartRollout, Timestamp};
use tokio::sync::watch;
use tracing::{info, warn};

use super::forward::{self, Answer, Refusal};
use super::observe::{observe, registrations};
use super::{Action, Request, RequestError, Snapshot};
use crate::fleet::backend::Backend;
use crate::fleet::desired::CommitError;
use crate::fleet::replicas::{self, Lease, LeaseKeeper};
use crate::fleet::{DriverStart, Fleet};
use crate::rollout::{Command, Event, next_deadline, plan, step};

/// Longest the driver sleeps without looking: deadlines are on the wall clock, which can be
/// stepped, so this bounds how late a step of the clock can make a decision.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// How often a decision is taken again when hosts' desired states keep changing under it.
const STALE_RETRIES: usize = 3;

/// Runs the driver of `fleet`'s rollouts until the server shuts down; on a shared store, it
/// drives only while it holds the rollout lease, and follows other replicas' changes.
pub async fn run(fleet: Arc<Fleet>, start: DriverStart) {
    let DriverStart {
        loaded,
        mut requests,
        nudge,
        view,
        subscription,
    } = start;
    let follower = subscription.map(|s| tokio::spawn(replicas::follow(fleet.clone(), s)));
    let mut driver = Driver {
        watching_since: fleet.now(),
        rollouts: loaded
            .into_iter()
            .map(|rollout| (rollout.id, Arc::new(rollout)))
            .collect(),
        deadlines: BTreeMap::new(),
        view,
        fleet,
    };
    let mut keeper = LeaseKeeper::new();
    let shutdown = driver.fleet.settings.shutdown.clone();
    loop {
        let driving = match driver.fleet.rollout_lease(&mut keeper).await {
            Lease::Held => true,
            Lease::Taken => {
                driver.reload().await;
                true
            }
            Lease::Elsewhere => false,
        };
        if driving {
            driver.serve_forwarded().await;
            driver.reconcile().await;
        }
        let wait = driver.wait();
        tokio::select! {
            () = shutdown.cancelled() => break,
            request = requests.recv() => match request {
                Some(request) if driving => driver.handle(request).await,
                Some(request) => refuse(request),
                None => break,
            },
            () = nudge.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
    driver.fleet.release_rollout_lease().await;
    if let Some(follower) = follower {
        // The follower ends with the server's shutdown.
        let _ = follower.await;
    }
}

/// The rollout machine's event for an operator's command.
fn event_of(action: Action) -> Event {
    match action {
        Action::Pause => Event::PauseRequested,
        Action::Resume => Event::ResumeRequested,
        Action::Abort => Event::AbortRequested,
        Action::Rollback => Event::RollbackRequested,
        Action::Approve => Event::ApproveRequested,
    }
}

/// Answers a request this replica cannot take: another replica drives the rollouts.
fn refuse(request: Request) {
    match request {
        Request::Start { reply, .. } | Request::Act { reply, .. } => {
            let _ = reply.send(Err(RequestError::Elsewhere));
        }
        Request::TakeOut { reply, .. } => {
            let _ = reply.send(Err(RequestError::Elsewhere));
        }
    }
}

struct Driver {
    fleet: Arc<Fleet>,
    rollouts: BTreeMap<RolloutId, Arc<Rollout>>,
    deadlines: BTreeMap<RolloutId, Timestamp>,
    view: watch::Sender<Arc<Snapshot>>,
    watching_since: Timestamp,
}

impl Driver {
    /// Carries out the rollout commands other replicas forwarded (this replica drives), each
    /// at most once, and answers them.
    async fn serve_forwarded(&mut self) {
        let Backend::Postgres(backend) = &self.fleet.backend else {
            return;
        };
        let store = backend.store.clone();
        let taken = match store.take_requests().await {
            Ok(taken) => taken,
            Err(error) => {
                warn!(%error, "cannot read forwarded rollout commands; trying again at the next turn");
                return;
            }
        };
        for (id, request) in &taken {
            let answer = match serde_json::from_value::<forward::Command>(request.clone()) {
                Ok(command) => Answer::of(self.carry_out(command).await),
                Err(error) => Answer::Refused {
                    kind: Refusal::Invalid,
                    message: format!("the forwarded command does not read: {error}"),
                },
            };
            let answered = match serde_json::to_value(&answer) {
                Ok(answer) => store
                    .answer_request(*id, &answer)
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if let Some(error) = answered {
                warn!(%error, request = id, "cannot answer a forwarded rollout command");
            }
        }
        if !taken.is_empty() {
            self.publish();
        }
    }

    async fn carry_out(&mut self, command: forward::Command) -> Result<Answer, RequestError> {
        match command {
            forward::Command::Start(request) => {
                let rollout = self.start(request).await?;
                Ok(Answer::Rollout(Box::new((*rollout).clone())))
            }
            forward::Command::Act { id, action } => {
                let rollout = self.decide(id, Some(event_of(action)), true).await?;
                Ok(Answer::Rollout(Box::new((*rollout).clone())))
            }
            forward::Command::TakeOut { hosts, why } => {
                self.take_out(hosts, why).await?;
                Ok(Answer::TakenOut)
            }
        }
    }

    /// Reads every rollout again (this replica just took the lease over: another may have
    /// moved them since it last drove).
    async fn reload(&mut self) {
        match self.fleet.backend.load_rollouts().await {
            Ok(loaded) => {
                self.rollouts = loaded
                    .into_iter()
                    .map(|rollout| (rollout.id, Arc::new(rollout)))
                    .collect();
                self.deadlines.clear();
                self.watching_since = self.fleet.now();
                self.publish();
            }
            Err(error) => {
                warn!(%error, "cannot read the rollouts after taking the lease; deciding from what this replica last knew");
            }
        }
    }

    /// How long to sleep: until the earliest deadline, at most [`MAX_SLEEP`].
    fn wait(&self) -> Duration {
        let now = self.fleet.now();
        // A lease must be renewed well within its time to live.
        let longest = MAX_SLEEP.min(self.fleet.settings.lease_ttl / 3);
        self.deadlines.values().min().map_or(longest, |at| {
            Duration::from_millis(at.since(now).0).min(longest)
        })
    }

    /// Decides again for every rollout that is not settled, then publishes.
    async fn reconcile(&mut self) {
        let ids: Vec<RolloutId> = self
            .rollouts
            .iter()
            .filter(|(_, rollout)| !rollout.is_settled())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Err(error) = self.decide(id, None, true).await {
                warn!(rollout = %id, %error, "rollout decision failed; trying again at the next change");
            }
        }
        self.publish();
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Start { request, reply } => {
                let _ = reply.send(self.start(*request).await);
            }
            Request::Act { id, action, reply } => {
                let _ = reply.send(self.decide(id, Some(event_of(action)), true).await);
            }
            Request::TakeOut { hosts, why, reply } => {
                let _ = reply.send(self.take_out(hosts, why).await);
            }
        }
        self.publish();
    }

    async fn start(&mut self, request: StartRollout) -> Result<Arc<Rollout>, RequestError> {
        let registered = registrations(&self.fleet.hosts, &request.release);
        let owners = self.owners();
        let id = RolloutId(self.rollouts.keys().next_back().map_or(0, |id| id.0) + 1);
        let rollout = plan::start(&request, id, &registered, &owners, self.fleet.now())?;
        self.rollouts.insert(id, Arc::new(rollout));
        match self.decide(id, None, false).await {
            Ok(rollout) => {
                info!(rollout = %id, hosts = rollout.hosts.len(), waves = rollout.waves.len(), "rollout started");
                Ok(rollout)
            }
            Err(error) => {
                self.rollouts.remove(&id);
                self.deadlines.remove(&id);
                Err(error)
            }
        }
    }

    async fn take_out(&mut self, hosts: Vec<HostId>, why: String) -> Result<(), RequestError> {
        for host in hosts {
            let owner = self
                .rollouts
                .values()
                .find(|rollout| rollout.owns(&host))
                .map(|rollout| rollout.id);
            if let Some(id) = owner {
                let event = Event::HostTakenOut {
                    host: host.clone(),
                    why: why.clone(),
                };
                self.decide(id, Some(event), true).await?;
                info!(rollout = %id, %host, %why, "host taken out of the rollout");
            }
        }
        Ok(())
    }

    /// Every host an active rollout owns, with the rollout and its phase.
    fn owners(&self) -> BTreeMap<HostId, (RolloutId, &'static str)> {
        let mut owners = BTreeMap::new();
        for rollout in self.rollouts.values().filter(|r| r.is_active()) {
            for host in rollout.hosts.keys().filter(|host| rollout.owns(host)) {
                owners.insert(host.clone(), (rollout.id, rollout.phase.name()));
            }
        }
        owners
    }

    /// Decides for one rollout: the event, if any, then an observation of its hosts. The
    /// result is committed unless only time passed (and `stored` says the rollout is in the
    /// store already).
    async fn decide(
        &mut self,
        id: RolloutId,
        event: Option<Event>,
        stored: bool,
    ) -> Result<Arc<Rollout>, RequestError> {
        for _ in 0..STALE_RETRIES {
            let current = self
                .rollouts
                .get(&id)
                .cloned()
                .ok_or(RequestError::NotFound(id))?;
            let now = self.fleet.now();
            let mut next = (*current).clone();
            let mut commands = Vec::new();
            if let Some(event) = event.clone() {
                let (stepped, more) = step(&next, event, now)?;
                next = stepped;
                commands.extend(more);
            }
            let observations = observe(
                &self.fleet.hosts,
                &self.fleet.settings.windows,
                &next,
                self.watching_since,
            );
            let (stepped, more) = step(&next, Event::Observed(observations.clone()), now)?;
            next = stepped;
            commands.extend(more);
            match next_deadline(&next, &observations) {
                Some((at, _)) => self.deadlines.insert(id, at),
                None => self.deadlines.remove(&id),
            };
            if stored && commands.is_empty() && only_time_passed(&current, &next) {
                let next = Arc::new(next);
                self.rollouts.insert(id, next.clone());
                return Ok(next);
            }
            match self.commit(&next, commands).await {
                Ok(()) => {
                    self.note(&current, &next, stored);
                    let next = Arc::new(next);
                    self.rollouts.insert(id, next.clone());
                    return Ok(next);
                }
                Err(CommitError::Stale) => continue,
                Err(CommitError::Failed) => return Err(RequestError::Store),
            }
        }
        Err(RequestError::Contended(id))
    }

    /// Commits a rollout with the directives its commands give.
    async fn commit(&self, rollout: &Rollout, commands: Vec<Command>) -> Result<(), CommitError> {
        let directives: Vec<_> = commands
            .into_iter()
            .map(|command| match command {
                Command::SetDirective { host, directive } => (host, directive),
            })
            .collect();
        self.fleet.commit_rollout(rollout, &directives).await
    }

    /// Logs and counts what changed in a committed decision.
    fn note(&self, before: &Rollout, after: &Rollout, stored: bool) {
        if stored && before.phase == after.phase && before.rollback == after.rollback {
            return;
        }
        let id = after.id;
        match &after.phase {
            RolloutPhase::Running(p) => {
                info!(rollout = %id, wave = p.wave + 1, baking = p.baking_until.is_some(), "rollout running")
            }
            RolloutPhase::Paused(p) => info!(rollout = %id, wave = p.wave + 1, "rollout paused"),
            RolloutPhase::Halted(h) => {
                if !matches!(before.phase, RolloutPhase::Halted(_)) {
                    self.fleet.settings.metrics.rollout_halted();
                    warn!(rollout = %id, wave = h.wave + 1, failures = h.failures, cause = %h.cause, "rollout halted: failures exceed the budget");
                }
            }
            RolloutPhase::Completed(_) => info!(rollout = %id, "rollout completed"),
            RolloutPhase::Aborted(_) => info!(rollout = %id, "rollout aborted"),
        }
        if before.rollback.is_none() && after.rollback.is_some() {
            info!(rollout = %id, "rollout's hosts ordered back");
        }
    }

    fn publish(&self) {
        self.view.send_replace(Arc::new(Snapshot {
            rollouts: self.rollouts.clone(),
        }));
        self.fleet.changed(crate::fleet::ChangeKind::Rollouts);
    }
}

/// True when a decision changed nothing but the rollout's clock.
fn only_time_passed(before: &Rollout, after: &Rollout) -> bool {
    let mut same = after.clone();
    same.clock = before.clock;
    same == *before
}
