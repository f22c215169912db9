//! One activation job per command, as a future the event loop's [`super::InFlight`] holds.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Event, StorePath, SwitchEnd, SwitchId, SwitchJob, SystemView, UnitState,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn};

use crate::system::{Launch, System};

/// How long to wait before observing the system again when reading it failed.
const OBSERVE_RETRY: Duration = Duration::from_secs(1);

/// What a job was asked to do.
pub(super) enum Job {
    /// Hold GC roots on exactly these generations.
    Keep {
        generations: BTreeSet<StorePath>,
        turn: Turn,
    },
    /// Realise a closure.
    Realise { target: StorePath, turn: Turn },
    /// Launch (with a job and a turn to launch in) or only follow a switch until its unit ends.
    Switch {
        switch: SwitchId,
        /// Which registration of the switch this job is (see `InFlight::switches`).
        number: u64,
        job: Option<(SwitchJob, Turn)>,
        /// Cancelled by an abort of this switch, and at shutdown.
        abort: CancellationToken,
    },
    /// Stop a switch's unit (an abort or a release).
    Stop { switch: SwitchId, turn: Turn },
    /// Reboot the host.
    Reboot { turn: Turn },
    /// Compare the running agent with the live generation's.
    CheckAgentUpgrade,
}

impl Job {
    /// The span a job's log lines carry.
    pub(super) fn span(&self) -> tracing::Span {
        match self {
            Self::Keep { .. } => info_span!("keep-generations"),
            Self::Realise { target, .. } => info_span!("realise", closure = %target),
            Self::Switch {
                switch,
                job: Some((job, _)),
                ..
            } => info_span!("switch", %switch, closure = %job.closure),
            Self::Switch { switch, .. } | Self::Stop { switch, .. } => {
                info_span!("switch", %switch)
            }
            Self::Reboot { .. } => info_span!("reboot"),
            Self::CheckAgentUpgrade => info_span!("agent-upgrade-check"),
        }
    }
}

/// How a job ended.
#[derive(Debug)]
pub(super) struct Done {
    /// The switch it followed and its registration number, if it followed one.
    pub(super) followed: Option<(SwitchId, u64)>,
    /// What it reports, if anything.
    pub(super) event: Option<Event>,
}

/// A place in the order of the steps that change the host: the step waits for the one before
/// it, and the one after it waits until this turn is dropped.
pub(super) struct Turn {
    before: Option<oneshot::Receiver<()>>,
    _mine: oneshot::Sender<()>,
}

impl Turn {
    pub(super) fn new(before: Option<oneshot::Receiver<()>>, mine: oneshot::Sender<()>) -> Self {
        Self {
            before,
            _mine: mine,
        }
    }

    /// Waits until the step before this one ended (a dropped sender counts as ended).
    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            let _ = before.await;
        }
    }
}

/// The future of one job.
pub(super) type JobFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The host as the jobs reach it, without its type, so the event loop is not generic.
pub(super) trait Host: Send + Sync {
    /// The future that carries out `job`.
    fn run(self: Arc<Self>, job: Job) -> JobFuture;
}

/// Carries out jobs on a [`System`].
pub(super) struct Carrier<S> {
    system: Arc<S>,
    poll: Duration,
    /// Shutdown of every job.
    cancel: CancellationToken,
}

impl<S> fmt::Debug for Carrier<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carrier").field("poll", &self.poll).finish()
    }
}

impl<S: System> Host for Carrier<S> {
    fn run(self: Arc<Self>, job: Job) -> JobFuture {
        Box::pin(async move { self.carry(job).await })
    }
}

impl<S: System> Carrier<S> {
    pub(super) fn new(system: Arc<S>, poll: Duration, cancel: CancellationToken) -> Self {
        Self {
            system,
            poll,
            cancel,
        }
    }

    async fn carry(&self, job: Job) -> Done {
        let event = match job {
            Job::Keep {
                generations,
                mut turn,
            } => {
                if self.in_turn(&mut turn).await {
                    self.keep(&generations).await;
                }
                None
            }
            Job::Realise { target, mut turn } => {
                if !self.in_turn(&mut turn).await {
                    return nothing();
                }
                self.realise(target).await
            }
            Job::Switch {
                switch,
                number,
                job,
                abort,
            } => {
                let event = self.switch(switch, job, &abort).await;
                return Done {
                    followed: Some((switch, number)),
                    event,
                };
            }
            Job::Stop { switch, mut turn } => {
                if self.in_turn(&mut turn).await {
                    self.stop(switch).await;
                }
                None
            }
            Job::Reboot { mut turn } => {
                if self.in_turn(&mut turn).await {
                    info!("rebooting the host");
                    if let Err(e) = self.system.reboot().await {
                        error!(error = %e, "cannot reboot the host");
                    }
                }
                None
            }
            Job::CheckAgentUpgrade => tokio::select! {
                biased;
                () = self.cancel.cancelled() => None,
                upgrade = self.system.agent_upgrade() => Some(Event::AgentUpgradeChecked { upgrade }),
            },
        };
        Done {
            followed: None,
            event,
        }
    }

    /// Waits for the step's turn; false when shutdown came first.
    async fn in_turn(&self, turn: &mut Turn) -> bool {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => false,
            () = turn.wait() => true,
        }
    }

    async fn realise(&self, target: StorePath) -> Option<Event> {
        info!("realising");
        let result = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return None,
            result = self.system.realise(&target) => result,
        };
        Some(Event::RealiseFinished { target, result })
    }

    /// Launches (with a job) or just follows a switch until its unit ends, then reports how;
    /// nothing when it was aborted or at shutdown.
    async fn switch(
        &self,
        switch: SwitchId,
        job: Option<(SwitchJob, Turn)>,
        abort: &CancellationToken,
    ) -> Option<Event> {
        let launched = match job {
            Some((job, mut turn)) => {
                // An abort does not end the wait for the turn: the steps after this one wait
                // for it, and must not overtake the steps before it.
                if !self.in_turn(&mut turn).await || abort.is_cancelled() {
                    return None;
                }
                let launched = tokio::select! {
                    biased;
                    () = abort.cancelled() => return None,
                    launched = self.system.start_switch(switch, &job) => launched,
                };
                self.launched(launched)
            }
            None => {
                info!("following the switch's unit");
                None
            }
        };
        let end = match launched {
            Some(end) => end,
            None => self.follow(switch, abort).await?,
        };
        let system = self.observe().await?;
        info!(?end, current = ?system.current, "switch ended");
        Some(Event::SwitchFinished {
            switch,
            end,
            system,
        })
    }

    /// `None`: the unit runs (or already ran) and is to be followed; `Some(end)`: it did not
    /// start.
    fn launched(&self, launched: Result<Launch, crate::system::SystemError>) -> Option<SwitchEnd> {
        match launched {
            Ok(Launch::Started) => None,
            Ok(Launch::LockHeld) => {
                debug!(
                    "another switch holds the switch lock; the state machine decides when to try again"
                );
                Some(SwitchEnd::LockHeld)
            }
            Err(e) => {
                error!(error = %e, "cannot launch the switch");
                Some(SwitchEnd::NotLaunched {
                    error: e.to_string(),
                })
            }
        }
    }

    /// Polls the switch's unit until it ends; `None` when aborted or at shutdown.
    async fn follow(&self, switch: SwitchId, abort: &CancellationToken) -> Option<SwitchEnd> {
        loop {
            match self.system.switch_state(switch).await {
                Ok(UnitState::Exited(exit)) => return Some(SwitchEnd::Exited(exit)),
                Ok(UnitState::Gone) => return Some(SwitchEnd::Vanished),
                Ok(UnitState::Running) => {}
                // systemd may be briefly unreachable (a daemon re-exec during the switch):
                // the unit is still there, so look again.
                Err(e) => warn!(error = %e, "cannot read the switch's unit; trying again"),
            }
            tokio::select! {
                biased;
                () = abort.cancelled() => return None,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Holds GC roots on exactly `generations`. A failure is logged for a human: the state
    /// machine sends the set again at the next change and at every start.
    async fn keep(&self, generations: &BTreeSet<StorePath>) {
        match self.system.keep_generations(generations).await {
            Ok(()) => debug!(count = generations.len(), "generations kept"),
            Err(e) => error!(error = %e,
                "cannot hold GC roots on the generations a rollback may need; a garbage collection may delete them"),
        }
    }

    /// Stops a switch's unit and clears its record; failures are logged.
    async fn stop(&self, switch: SwitchId) {
        if let Err(e) = self.system.stop_switch(switch).await {
            error!(%switch, error = %e, "cannot stop the switch's unit");
        }
    }

    /// Observes the system, retrying until it works; `None` on shutdown. (An abort that comes
    /// now is too late: the switch ended and is reported.)
    async fn observe(&self) -> Option<SystemView> {
        loop {
            match self.system.observe().await {
                Ok(view) => return Some(view),
                Err(e) => error!(error = %e, "cannot observe the system; retrying"),
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(OBSERVE_RETRY) => {}
            }
        }
    }
}

fn nothing() -> Done {
    Done {
        followed: None,
        event: None,
    }
}
