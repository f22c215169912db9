//! Starting and stopping the whole agent.
//!
//! Order: open the store (moving an unreadable one aside), observe the host (retrying until the
//! observation succeeds), feed `Started` to the event loop (persisted like any input), tell
//! systemd we are ready, start the supervised workers, run the event loop. On shutdown every
//! task is cancelled and awaited; a running activation unit is left alone (it lives in its own
//! cgroup) and is found again by the next start.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, Observation, SwitchId};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::eventloop::{EventLoop, Exit, Parts, SHUTDOWN_GRACE};
use super::supervisor::supervise;
use crate::clock::Clock;
use crate::config::Config;
use crate::input::{INPUT_CHANNEL_CAPACITY, Input, WorkerError};
use crate::metrics::Metrics;
use crate::status::{StatusWatch, Workers};
use crate::store::{Store, StoreError, StoreReader};
use crate::system::System;
use crate::workers::activation::InFlight;
use crate::workers::admin::{self, AdminContext};
use crate::workers::control::{self, Client, drainer, heartbeat};
use crate::workers::probes;

/// Longest wait between attempts to observe the host at start-up.
const OBSERVE_RETRY_CAP: Duration = Duration::from_secs(30);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The control-plane client cannot be built.
    #[error(transparent)]
    Client(#[from] control::ClientError),
}

/// Runs the agent until `cancel` fires or it must restart into a new version.
pub async fn run<S: System>(
    config: Config,
    system: Arc<S>,
    cancel: CancellationToken,
    watchdog: Option<Duration>,
) -> Result<Exit, RunError> {
    match Agent::start(config, system, cancel, Connect::ControlPlane).await? {
        Some(agent) => Ok(agent.run(watchdog).await),
        None => Ok(Exit::Stopped),
    }
}

/// Whether the agent talks to its control plane (tests and the crash harness run it alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    /// Long-poll, deliver events and heartbeat.
    ControlPlane,
    /// No control-plane workers at all.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    Offline,
}

/// An agent that finished recovery and runs its workers; [`Agent::run`] runs its event loop.
#[derive(Debug)]
pub struct Agent {
    event_loop: EventLoop,
    inputs: mpsc::Receiver<Input>,
    tasks: JoinSet<()>,
    tasks_cancel: CancellationToken,
    #[cfg(feature = "testing")]
    handles: crate::testing::Handles,
}

impl Agent {
    /// Opens the store, recovers and starts the workers; `None` when `cancel` fired first.
    pub(crate) async fn start<S: System>(
        config: Config,
        system: Arc<S>,
        cancel: CancellationToken,
        connect: Connect,
    ) -> Result<Option<Self>, RunError> {
        let opened = Store::open(&config.state_dir)?;
        system.bind_store(opened.store.stream());
        info!(store = %opened.store.path().display(), seq = opened.state.host.seq,
            phase = opened.state.host.phase.name(), "store opened");
        let clock = Clock::anchored(opened.state.clock);
        let metrics = Arc::new(Metrics::new());
        let workers = Workers::new(metrics.clone());
        let client = match connect {
            Connect::ControlPlane => Some(Arc::new(Client::new(&config, metrics.clone())?)),
            Connect::Offline => None,
        };
        let running = opened.state.host.phase.running_switch();
        let reset = opened.reset.clone();
        let Some(observation) = observe(&*system, &config, running, reset, &cancel).await else {
            return Ok(None);
        };
        let reader = opened.store.reader();
        let stream = opened.store.stream();
        let tasks_cancel = cancel.child_token();
        let (inputs_tx, inputs) = mpsc::channel(INPUT_CHANNEL_CAPACITY);
        let activation = InFlight::new(system.clone(), workers.clone(), tasks_cancel.child_token());
        let (probe_epoch, probe_epochs) = watch::channel(opened.state.host.probe_epoch);
        let new_events = Arc::new(Notify::new());
        let (mut event_loop, status) = EventLoop::new(Parts {
            store: opened.store,
            state: opened.state,
            clock,
            activation,
            probe_epoch,
            drainer: new_events.clone(),
            metrics: metrics.clone(),
            workers: workers.clone(),
            cancel: tasks_cancel.clone(),
        });
        if event_loop.event(Event::Started(observation)).await.is_err() {
            return Ok(None);
        }
        let line = crate::status::line(&event_loop.status());
        crate::systemd::ready(&line);
        info!(status = %line, "recovery done; agent ready");

        let shared = Shared {
            config: &config,
            status: &status,
            workers: &workers,
            inputs: &inputs_tx,
            cancel: &tasks_cancel,
            clock,
            metrics: &metrics,
        };
        let mut tasks = JoinSet::new();
        spawn_local_workers(&mut tasks, &shared, &system, probe_epochs);
        if let Some(client) = client {
            let delivery = Delivery {
                reader,
                stream,
                new_events,
            };
            spawn_control_workers(&mut tasks, &shared, client, delivery);
        }
        Ok(Some(Self {
            event_loop,
            inputs,
            tasks,
            tasks_cancel,
            #[cfg(feature = "testing")]
            handles: crate::testing::Handles {
                inputs: inputs_tx,
                status,
                workers,
                metrics,
            },
        }))
    }

    /// What tests drive and watch the running agent with.
    #[cfg(feature = "testing")]
    pub fn handles(&self) -> crate::testing::Handles {
        self.handles.clone()
    }

    /// Runs the event loop until shutdown or a restart, then stops every task.
    pub async fn run(mut self, watchdog: Option<Duration>) -> Exit {
        #[cfg(feature = "testing")]
        drop(self.handles);
        let exit = self.event_loop.run(self.inputs, watchdog).await;
        crate::systemd::stopping();
        self.tasks_cancel.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("some tasks did not stop in time; leaving them");
            self.tasks.abort_all();
        }
        exit
    }
}

/// Observes the host for `Started`, retrying each part until it succeeds (a recovery step that
/// gives up strands the host).
async fn observe<S: System>(
    system: &S,
    config: &Config,
    running: Option<SwitchId>,
    store_reset: Option<String>,
    cancel: &CancellationToken,
) -> Option<Observation> {
    let view = retry(cancel, "cannot observe the host's systems", || {
        system.observe()
    })
    .await?;
    let boot_id = system.boot_id().await.unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the boot id; reboots cannot be told apart this time");
        None
    });
    let switch_unit = match running {
        Some(switch) => Some(
            retry(
                cancel,
                "cannot read the state of the switch in flight",
                || system.switch_state(switch),
            )
            .await?,
        ),
        None => None,
    };
    Some(Observation {
        system: view,
        boot_id,
        switch_unit,
        store_reset,
        policy: config.policy.clone(),
    })
}

/// Runs `attempt` until it succeeds, backing off; `None` when `cancel` fires first.
async fn retry<T, E, F, Fut>(cancel: &CancellationToken, what: &str, mut attempt: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(500);
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(e) => error!(error = %e, "{what}; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(OBSERVE_RETRY_CAP);
    }
}

/// What every worker is started with.
struct Shared<'a> {
    config: &'a Config,
    status: &'a StatusWatch,
    workers: &'a Workers,
    inputs: &'a mpsc::Sender<Input>,
    cancel: &'a CancellationToken,
    clock: Clock,
    metrics: &'a Arc<Metrics>,
}

impl Shared<'_> {
    /// Runs a supervised worker: each run gets its own copy of `context` (the small, cloneable
    /// set of what that worker needs), the input sender and the cancellation.
    fn spawn<C, F, Fut>(&self, tasks: &mut JoinSet<()>, name: &'static str, context: C, run: F)
    where
        C: Clone + Send + 'static,
        F: Fn(C, mpsc::Sender<Input>, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
    {
        let (inputs, cancel) = (self.inputs.clone(), self.cancel.clone());
        let supervisor_cancel = cancel.clone();
        tasks.spawn(supervise(
            name,
            self.workers.clone(),
            supervisor_cancel,
            move || run(context.clone(), inputs.clone(), cancel.clone()),
        ));
    }
}

/// What the drainer reads and is woken by.
struct Delivery {
    reader: StoreReader,
    stream: u64,
    new_events: Arc<Notify>,
}

/// What the probe worker runs with.
struct ProbeContext<S> {
    specs: Vec<crate::config::ProbeSpec>,
    system: Arc<S>,
    epochs: watch::Receiver<u64>,
}

impl<S> Clone for ProbeContext<S> {
    fn clone(&self) -> Self {
        Self {
            specs: self.specs.clone(),
            system: self.system.clone(),
            epochs: self.epochs.clone(),
        }
    }
}

/// Probes and the admin surfaces: the workers that need no control plane.
fn spawn_local_workers<S: System>(
    tasks: &mut JoinSet<()>,
    shared: &Shared<'_>,
    system: &Arc<S>,
    probe_epochs: watch::Receiver<u64>,
) {
    let probes = ProbeContext {
        specs: shared.config.probes.clone(),
        system: system.clone(),
        epochs: probe_epochs,
    };
    // A restarted probe worker starts in the epoch the state is in now (the watch's value).
    shared.spawn(tasks, "probes", probes, |ctx, inputs, cancel| {
        probes::run(ctx.specs, ctx.system, ctx.epochs, inputs, cancel)
    });
    spawn_admin(tasks, shared);
}

/// The admin socket and, when metrics are on, the loopback metrics listener; each binds again
/// when restarted.
fn spawn_admin(tasks: &mut JoinSet<()>, shared: &Shared<'_>) {
    let ctx = AdminContext {
        inputs: shared.inputs.clone(),
        status: shared.status.clone(),
        metrics: shared.metrics.clone(),
        clock: shared.clock,
    };
    let socket = (
        ctx.clone(),
        shared.config.admin_socket.clone(),
        shared.config.admin_group.clone(),
    );
    shared.spawn(
        tasks,
        "admin",
        socket,
        |(ctx, path, group), _, cancel| async move {
            let bound = admin::bind_socket(&path, group.as_deref())?;
            admin::serve_socket(bound, ctx, cancel).await
        },
    );
    if shared.config.metrics {
        let metrics = (ctx, shared.config.admin_listen);
        shared.spawn(
            tasks,
            "metrics",
            metrics,
            |(ctx, addr), _, cancel| async move {
                admin::serve_metrics(admin::bind_metrics(addr).await?, ctx, cancel).await
            },
        );
    }
}

/// Long-poll, drainer and heartbeat.
fn spawn_control_workers(
    tasks: &mut JoinSet<()>,
    shared: &Shared<'_>,
    client: Arc<Client>,
    delivery: Delivery,
) {
    shared.spawn(
        tasks,
        control::longpoll::NAME,
        client.clone(),
        control::longpoll::run,
    );
    let drainer = drainer::DrainerContext {
        client: client.clone(),
        reader: delivery.reader,
        stream: delivery.stream,
        new_events: delivery.new_events,
        workers: shared.workers.clone(),
    };
    shared.spawn(tasks, drainer::NAME, drainer, drainer::run);
    let heartbeat = heartbeat::HeartbeatContext {
        client,
        interval: Duration::from_millis(shared.config.heartbeat_interval.0),
        status: shared.status.clone(),
        workers: shared.workers.clone(),
        clock: shared.clock,
        metrics: shared.metrics.clone(),
    };
    shared.spawn(tasks, heartbeat::NAME, heartbeat, heartbeat::run);
}
