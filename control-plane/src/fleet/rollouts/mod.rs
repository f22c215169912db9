//! Rollouts: the driver that decides for every rollout ([`run`]), and the handle the rest of
//! the fleet reaches it by. Requests go to the driver over a bounded channel and are answered
//! once their decision is durable; reads come from the snapshot it publishes after every
//! decision.

mod driver;
mod forward;
mod observe;

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetnode_wire::{
    HostId, MAX_LISTED_ROLLOUTS, Rollout, RolloutId, RolloutList, RolloutStatus, RolloutSummary,
    StartRollout,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::{Fleet, FleetError};
use crate::metrics::{METRICS_ROLLOUTS, RolloutCounts};

use crate::rollout::{RolloutError, StartError};

pub use driver::run;
pub use forward::Refusal;
pub(super) use observe::registrations;

/// Operator requests waiting for the driver. Requests are rare (an operator's commands) and
/// small; when the queue is full a handler waits for room, so nothing is dropped, and the
/// worst case held is this many requests of at most one body cap each.
pub const REQUEST_QUEUE: usize = 16;

/// Every rollout as last decided, shared with readers.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every rollout, by number.
    pub rollouts: BTreeMap<RolloutId, Arc<Rollout>>,
}

impl Snapshot {
    /// The running or paused rollout that owns `host`, if one does.
    pub fn owner_of(&self, host: &HostId) -> Option<&Rollout> {
        self.rollouts
            .values()
            .rev()
            .map(AsRef::as_ref)
            .find(|rollout| rollout.owns(host))
    }
}

/// An operator's command on one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Hold it.
    Pause,
    /// Lift the hold.
    Resume,
    /// Stop it where it is.
    Abort,
    /// Send its hosts back where they were (and stop it).
    Rollback,
    /// Let the wave it waits on start.
    Approve,
}

/// A request to the driver, with where its answer goes.
pub enum Request {
    /// Start a rollout.
    Start {
        /// What to roll out.
        request: Box<StartRollout>,
        /// The rollout as committed.
        reply: oneshot::Sender<Result<Arc<Rollout>, RequestError>>,
    },
    /// An operator's command on a rollout.
    Act {
        /// Which rollout.
        id: RolloutId,
        /// What to do.
        action: Action,
        /// The rollout as committed.
        reply: oneshot::Sender<Result<Arc<Rollout>, RequestError>>,
    },
    /// Take hosts out of the rollouts that own them (before a forced `set-target`).
    TakeOut {
        /// The hosts.
        hosts: Vec<HostId>,
        /// Why, for the record.
        why: String,
        /// Done once every change is durable.
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
}

/// Why a rollout request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The rollout could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The command does not apply to the rollout as it is.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// No such rollout.
    #[error("no rollout {0}; `fleetnode-cp rollout list` lists the rollouts")]
    NotFound(RolloutId),
    /// The store failed; the log has the details.
    #[error("storing the rollout failed; the server log has the details")]
    Store,
    /// The hosts' desired states kept changing under the decision.
    #[error(
        "the desired states of rollout {0}'s hosts kept changing while it decided; retry the command"
    )]
    Contended(RolloutId),
    /// The server is stopping.
    #[error("the control plane is stopping; retry when it is back")]
    Stopped,
    /// No replica took the command to carry it out (none drives the rollouts at the moment);
    /// it was withdrawn and never runs.
    #[error(
        "no control-plane replica drives the rollouts at the moment (the driving one stopped and the lease has not expired yet); nothing was done, retry shortly"
    )]
    Elsewhere,
    /// The driving replica took the command but did not answer.
    #[error(
        "the replica driving the rollouts took the command but did not answer (it may have stopped while carrying it out); check `fleetnode-cp rollout list` before retrying"
    )]
    Unanswered,
    /// The driving replica refused the command or failed.
    #[error("{message}")]
    Forwarded {
        /// How.
        kind: forward::Refusal,
        /// Its message.
        message: String,
    },
}

/// The fleet's side of the rollout driver.
#[derive(Clone)]
pub struct Rollouts {
    requests: mpsc::Sender<Request>,
    nudge: Arc<Notify>,
    view: watch::Receiver<Arc<Snapshot>>,
}

impl Rollouts {
    /// A handle over the driver's channel, wake-up and snapshot.
    pub fn new(
        requests: mpsc::Sender<Request>,
        nudge: Arc<Notify>,
        view: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        Self {
            requests,
            nudge,
            view,
        }
    }

    /// Every rollout as last decided.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.borrow().clone()
    }

    /// Tells the driver that a host's mirror changed, so it decides again. Many changes before
    /// it gets to run make one wake-up.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Starts a rollout.
    pub async fn start(&self, request: StartRollout) -> Result<Arc<Rollout>, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Start {
            request: Box::new(request),
            reply,
        })
        .await?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Carries out an operator's command on a rollout.
    pub async fn act(&self, id: RolloutId, action: Action) -> Result<Arc<Rollout>, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Act { id, action, reply }).await?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    /// Takes hosts out of the rollouts that own them.
    pub async fn take_out(&self, hosts: Vec<HostId>, why: String) -> Result<(), RequestError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::TakeOut { hosts, why, reply }).await?;
        answer.await.map_err(|_| RequestError::Stopped)?
    }

    async fn send(&self, request: Request) -> Result<(), RequestError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| RequestError::Stopped)
    }
}

impl Fleet {
    /// Starts a rollout; answers it as committed, with its hosts' lines.
    pub async fn start_rollout(&self, request: StartRollout) -> Result<RolloutStatus, FleetError> {
        let rollout = match self.rollouts.start(request.clone()).await {
            Err(RequestError::Elsewhere) => {
                let answer = self.forward(forward::Command::Start(request)).await?;
                Arc::new(forward::rollout(answer)?)
            }
            other => other?,
        };
        self.rollout_status(&rollout).await
    }

    /// Carries out an operator's command on a rollout; answers it as committed.
    pub async fn act_on_rollout(
        &self,
        id: RolloutId,
        action: Action,
    ) -> Result<RolloutStatus, FleetError> {
        let rollout = match self.rollouts.act(id, action).await {
            Err(RequestError::Elsewhere) => {
                let answer = self.forward(forward::Command::Act { id, action }).await?;
                Arc::new(forward::rollout(answer)?)
            }
            other => other?,
        };
        self.rollout_status(&rollout).await
    }

    /// Takes hosts out of the rollouts that own them (durably), so those never act on them
    /// again.
    pub(crate) async fn take_out(&self, hosts: Vec<HostId>, why: String) -> Result<(), FleetError> {
        match self.rollouts.take_out(hosts.clone(), why.clone()).await {
            Err(RequestError::Elsewhere) => {
                let answer = self
                    .forward(forward::Command::TakeOut { hosts, why })
                    .await?;
                Ok(forward::taken_out(answer)?)
            }
            other => Ok(other?),
        }
    }

    /// The newest rollouts first.
    pub async fn rollout_list(&self) -> Result<RolloutList, FleetError> {
        let snapshot = self.rollouts_now().await?;
        let rollouts = snapshot
            .rollouts
            .values()
            .rev()
            .take(MAX_LISTED_ROLLOUTS)
            .map(|rollout| RolloutSummary::of(rollout))
            .collect();
        Ok(RolloutList { rollouts })
    }

    /// One rollout with the live line of each of its hosts.
    pub async fn rollout(&self, id: RolloutId) -> Result<RolloutStatus, FleetError> {
        let snapshot = self.rollouts_now().await?;
        let rollout = snapshot
            .rollouts
            .get(&id)
            .ok_or(RequestError::NotFound(id))?;
        self.rollout_status(rollout).await
    }

    /// The rollout gauges: rollouts by phase, and hosts by state for the newest rollouts.
    pub async fn rollout_counts(&self) -> Result<RolloutCounts, FleetError> {
        let snapshot = self.rollouts_now().await?;
        let mut by_phase = BTreeMap::<&'static str, i64>::new();
        for rollout in snapshot.rollouts.values() {
            *by_phase.entry(rollout.phase.name()).or_default() += 1;
        }
        Ok(RolloutCounts {
            by_phase: by_phase.into_iter().collect(),
            hosts: snapshot
                .rollouts
                .values()
                .rev()
                .take(METRICS_ROLLOUTS)
                .map(|rollout| (rollout.id, rollout.counts()))
                .collect(),
        })
    }

    async fn rollout_status(&self, rollout: &Rollout) -> Result<RolloutStatus, FleetError> {
        let ids: Vec<HostId> = rollout.hosts.keys().cloned().collect();
        Ok(RolloutStatus {
            rollout: rollout.clone(),
            hosts: self.rows(&ids).await?,
        })
    }
}
