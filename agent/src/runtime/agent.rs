//! Starting and stopping the whole agent.
//!
//! Order: open the store (moving an unreadable one aside), observe the host (retrying until the
//! observation succeeds), start the applier, feed `Started` to the reducer (persisted and applied
//! like any input), tell systemd we are ready, start the supervised workers, run the reducer.
//! On shutdown every task is cancelled and awaited; a running activation unit is left alone (it
//! lives in its own cgroup) and is found again by the next start.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Effect, Event, Observation};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::applier::{self, Dispatch};
use super::reducer::{APPLY_CHANNEL_CAPACITY, CommitHook, Published, Reducer, Stopped};
use super::status::Workers;
use super::supervisor::supervise;
use super::ticker;
use crate::activation::{self, ACTIVATION_CHANNEL_CAPACITY, ActivationCommand};
use crate::admin::{self, AdminContext};
use crate::clock::Clock;
use crate::config::Config;
use crate::control::{self, Client, drainer, heartbeat};
use crate::input::{INPUT_CHANNEL_CAPACITY, Input};
use crate::metrics::Metrics;
use crate::probes::{self, PROBE_CHANNEL_CAPACITY, ProbeCommand};
use crate::store::{Store, StoreError};
use crate::system::System;

/// Longest wait between attempts to observe the host at start-up.
const OBSERVE_RETRY_CAP: Duration = Duration::from_secs(30);
/// How long shutdown waits for the tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested (SIGTERM, SIGINT).
    Stopped,
    /// The agent must restart to run its new version (exit 0; systemd restarts it).
    Restart(String),
}

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The control-plane client cannot be built.
    #[error(transparent)]
    Client(#[from] control::ClientError),
    /// The applier stopped: effects can no longer be carried out.
    #[error("the applier stopped unexpectedly")]
    ApplierGone,
}

/// Test and harness hooks.
#[derive(Default)]
pub struct Hooks {
    /// Called after every commit with the events made durable.
    pub on_commit: Option<CommitHook>,
    /// Skip the control-plane workers (long-poll, drainer, heartbeat).
    pub offline: bool,
    /// Ping the systemd watchdog this often.
    pub watchdog: Option<Duration>,
    /// Check after each convergence whether the agent must restart into a new version.
    pub restart_check: Option<super::reducer::RestartCheck>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

/// Everything a running agent shares, for tests that drive it from outside.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The reducer's inputs.
    pub inputs: mpsc::Sender<Input>,
    /// What the reducer publishes.
    pub published: Published,
    /// Worker statuses.
    pub workers: Workers,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Dispatches effects to the activation and probe workers' channels.
struct Channels {
    activation: mpsc::Sender<ActivationCommand>,
    probes: mpsc::Sender<ProbeCommand>,
}

impl Dispatch for Channels {
    async fn activation(&mut self, effect: Effect) -> Result<(), String> {
        let command = match effect {
            Effect::Realise { target } => ActivationCommand::Realise { target },
            Effect::RunSwitch { switch, job } => ActivationCommand::Run { switch, job },
            Effect::WatchSwitch { switch } => ActivationCommand::Watch { switch },
            Effect::AbortSwitch { switch } => ActivationCommand::Abort { switch },
            Effect::ReleaseSwitch { switch } => ActivationCommand::Release { switch },
            Effect::Reboot => ActivationCommand::Reboot,
            Effect::Report(_) | Effect::ResetProbes { .. } => return Ok(()),
        };
        self.activation
            .send(command)
            .await
            .map_err(|_| "the activation worker's channel is closed".to_owned())
    }

    async fn reset_probes(&mut self, epoch: u64) -> Result<(), String> {
        self.probes
            .send(ProbeCommand::Reset { epoch })
            .await
            .map_err(|_| "the probe worker's channel is closed".to_owned())
    }
}

/// Observes the host for `Started`, retrying each part until it succeeds (a recovery step that
/// gives up strands the host).
async fn observe<S: System>(
    system: &S,
    config: &Config,
    running: Option<fleetnode_state_machine::SwitchId>,
    store_reset: Option<String>,
    cancel: &CancellationToken,
) -> Option<Observation> {
    let mut delay = Duration::from_millis(500);
    let view = loop {
        match system.observe().await {
            Ok(view) => break view,
            Err(e) => error!(error = %e, "cannot observe the host's systems; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(OBSERVE_RETRY_CAP);
    };
    let boot_id = system.boot_id().await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the boot id; reboots cannot be told apart this time");
        None
    });
    let mut switch_unit = None;
    if let Some(switch) = running {
        let mut delay = Duration::from_millis(500);
        switch_unit = loop {
            match system.switch_state(switch).await {
                Ok(state) => break Some(state),
                Err(e) => {
                    error!(%switch, error = %e, "cannot read the state of the switch in flight; retrying")
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(OBSERVE_RETRY_CAP);
        };
    }
    Some(Observation {
        system: view,
        boot_id,
        switch_unit,
        store_reset,
        policy: config.policy.clone(),
    })
}

/// Runs the agent until `cancel` fires (or it must restart). `ready` is called once recovery is
/// done, with the handles for driving it.
pub async fn run<S: System>(
    config: Config,
    system: Arc<S>,
    cancel: CancellationToken,
    mut hooks: Hooks,
    ready: impl FnOnce(Handles),
) -> Result<Exit, RunError> {
    let opened = Store::open(&config.state_dir)?;
    info!(store = %opened.store.path().display(), seq = opened.state.host.seq,
        phase = opened.state.host.phase.name(), "store opened");
    let clock = Clock::anchored(opened.state.clock);
    let metrics = Arc::new(Metrics::new());
    let workers = Workers::new(metrics.clone());
    let client = if hooks.offline {
        None
    } else {
        Some(Arc::new(Client::new(&config, metrics.clone())?))
    };
    let running = opened.state.host.phase.running_switch();
    let Some(observation) =
        observe(&*system, &config, running, opened.reset.clone(), &cancel).await
    else {
        return Ok(Exit::Stopped);
    };
    let reader = opened.store.reader();
    let stream = opened.store.stream();

    let tasks_cancel = cancel.child_token();
    let (inputs_tx, inputs_rx) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
    let (effects_tx, effects_rx) = mpsc::channel(APPLY_CHANNEL_CAPACITY);
    let (activation_tx, activation_rx) = mpsc::channel(ACTIVATION_CHANNEL_CAPACITY);
    let (probes_tx, probes_rx) = mpsc::channel(PROBE_CHANNEL_CAPACITY);
    let kick = Arc::new(Notify::new());
    let (mut reducer, published) = Reducer::new(
        opened.store,
        opened.state,
        clock,
        effects_tx,
        metrics.clone(),
        workers.clone(),
        tasks_cancel.clone(),
    );
    if let Some(hook) = hooks.on_commit.take() {
        reducer.on_commit(hook);
    }
    if let Some(check) = hooks.restart_check.take() {
        reducer.restart_check(check);
    }

    let mut tasks = JoinSet::new();
    let dispatch = Channels {
        activation: activation_tx,
        probes: probes_tx,
    };
    tasks.spawn(applier::run(
        effects_rx,
        dispatch,
        kick.clone(),
        tasks_cancel.clone(),
    ));
    match reducer.event(Event::Started(observation)).await {
        Ok(()) => {}
        Err(Stopped::Restart(why)) => return Ok(Exit::Restart(why)),
        Err(Stopped::Cancelled) => return Ok(Exit::Stopped),
        Err(Stopped::ApplierGone) => return Err(RunError::ApplierGone),
    }
    crate::systemd::ready(&reducer.status_line());
    info!(status = %reducer.status_line(), "recovery done; agent ready");

    spawn_local_workers(
        &mut tasks,
        &config,
        &system,
        &published,
        &workers,
        &inputs_tx,
        (activation_rx, probes_rx),
        &tasks_cancel,
        clock,
    );
    if let Some(client) = client {
        let ctx = Shared {
            client,
            published: published.clone(),
            workers: workers.clone(),
            inputs: inputs_tx.clone(),
            cancel: tasks_cancel.clone(),
            clock,
            metrics: metrics.clone(),
        };
        spawn_control_workers(&mut tasks, &config, ctx, reader, stream, kick.clone());
    }
    tasks.spawn({
        let ctx = AdminContext {
            inputs: inputs_tx.clone(),
            snapshot: published.snapshot.clone(),
            metrics: metrics.clone(),
            metrics_enabled: config.metrics,
            clock,
        };
        let (addr, workers, cancel) = (config.admin_listen, workers.clone(), tasks_cancel.clone());
        supervise("admin", workers, cancel.clone(), move || {
            admin::serve(addr, ctx.clone(), cancel.clone())
        })
    });
    ready(Handles {
        inputs: inputs_tx.clone(),
        published: published.clone(),
        workers: workers.clone(),
        metrics: metrics.clone(),
    });
    drop(inputs_tx);

    let outcome = reducer.run(inputs_rx, hooks.watchdog).await;
    crate::systemd::stopping();
    tasks_cancel.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("some tasks did not stop in time; leaving them");
        tasks.abort_all();
    }
    match outcome {
        Ok(()) | Err(Stopped::Cancelled) => Ok(Exit::Stopped),
        Err(Stopped::Restart(why)) => Ok(Exit::Restart(why)),
        Err(Stopped::ApplierGone) => Err(RunError::ApplierGone),
    }
}

/// What the control-plane workers share.
struct Shared {
    client: Arc<Client>,
    published: Published,
    workers: Workers,
    inputs: mpsc::Sender<Input>,
    cancel: CancellationToken,
    clock: Clock,
    metrics: Arc<Metrics>,
}

/// Activation, probes and ticker: the workers that need no network.
#[allow(clippy::too_many_arguments)]
fn spawn_local_workers<S: System>(
    tasks: &mut JoinSet<()>,
    config: &Config,
    system: &Arc<S>,
    published: &Published,
    workers: &Workers,
    inputs: &mpsc::Sender<Input>,
    (activation_rx, probes_rx): (
        mpsc::Receiver<ActivationCommand>,
        mpsc::Receiver<ProbeCommand>,
    ),
    cancel: &CancellationToken,
    clock: Clock,
) {
    // The receivers outlive every run of their worker, so commands sent while a worker is
    // being restarted wait for the next run.
    let activation_rx = Arc::new(Mutex::new(activation_rx));
    let (system_a, inputs_a, cancel_a) = (system.clone(), inputs.clone(), cancel.clone());
    tasks.spawn(supervise(
        "activation",
        workers.clone(),
        cancel.clone(),
        move || {
            let (rx, system, inputs, cancel) = (
                activation_rx.clone(),
                system_a.clone(),
                inputs_a.clone(),
                cancel_a.clone(),
            );
            async move {
                let mut rx = rx.lock().await;
                activation::run(system, &mut rx, inputs, cancel).await
            }
        },
    ));
    let probes_rx = Arc::new(Mutex::new(probes_rx));
    let specs = config.probes.clone();
    let snapshot = published.snapshot.clone();
    let (system_p, inputs_p, cancel_p) = (system.clone(), inputs.clone(), cancel.clone());
    tasks.spawn(supervise(
        "probes",
        workers.clone(),
        cancel.clone(),
        move || {
            let (rx, system, inputs, cancel, specs) = (
                probes_rx.clone(),
                system_p.clone(),
                inputs_p.clone(),
                cancel_p.clone(),
                specs.clone(),
            );
            // A restarted probe worker starts in the epoch the state is in now.
            let epoch = snapshot.borrow().probe_epoch;
            async move {
                let mut rx = rx.lock().await;
                probes::run(specs, system, &mut rx, inputs, epoch, cancel).await
            }
        },
    ));
    let deadline = published.deadline.clone();
    let (inputs_t, cancel_t) = (inputs.clone(), cancel.clone());
    tasks.spawn(supervise(
        "ticker",
        workers.clone(),
        cancel.clone(),
        move || ticker::run(deadline.clone(), clock, inputs_t.clone(), cancel_t.clone()),
    ));
}

/// Long-poll, drainer and heartbeat.
fn spawn_control_workers(
    tasks: &mut JoinSet<()>,
    config: &Config,
    shared: Shared,
    reader: crate::store::StoreReader,
    stream: u64,
    kick: Arc<Notify>,
) {
    let Shared {
        client,
        published,
        workers,
        inputs,
        cancel,
        clock,
        metrics,
    } = shared;
    let (c, s, i, k) = (
        client.clone(),
        published.snapshot.clone(),
        inputs.clone(),
        cancel.clone(),
    );
    tasks.spawn(supervise(
        "longpoll",
        workers.clone(),
        cancel.clone(),
        move || control::longpoll::run(c.clone(), s.clone(), i.clone(), k.clone()),
    ));
    let ctx = drainer::DrainerContext {
        client: client.clone(),
        reader,
        stream,
        kick,
        workers: workers.clone(),
    };
    let (i, k) = (inputs.clone(), cancel.clone());
    tasks.spawn(supervise(
        drainer::NAME,
        workers.clone(),
        cancel.clone(),
        move || drainer::run(ctx.clone(), i.clone(), k.clone()),
    ));
    let ctx = heartbeat::HeartbeatContext {
        client,
        interval: Duration::from_millis(config.heartbeat_interval.0),
        snapshot: published.snapshot.clone(),
        workers: workers.clone(),
        clock,
        metrics,
    };
    tasks.spawn(supervise(
        heartbeat::NAME,
        workers,
        cancel.clone(),
        move || heartbeat::run(ctx.clone(), inputs.clone(), cancel.clone()),
    ));
}
