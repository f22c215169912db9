//! The probe worker: runs the configured health probes on their intervals.
//!
//! Every probe runs in its own task, once at start and then every `interval`, and sends
//! [`Event::ProbeResult`] tagged with the epoch the task was started in. The event loop sets the
//! epoch it watches on every [`fleetnode_state_machine::Command::ResetProbes`] (a level, not a
//! queue: resets that come faster than the worker handles them count as one, the last); on each
//! every task is aborted (an exec probe's whole process group is
//! killed with it, so a timed-out check leaves no process behind) and waited for before new
//! tasks start with the new epoch, so no result of an older epoch (from the generation being
//! left) is sent after the reset. The worker only observes: whether a result counts, and what
//! failing means, is the state machine's call.
//!
//! Kinds:
//! - `exec`: the argv runs directly (no shell) in its own process group, stdin empty; exit 0
//!   passes. On timeout, or when the task is cancelled, the group is sent SIGKILL.
//! - `http`: a GET that must answer the expected status (redirects are not followed, proxies
//!   are not used) and, when configured, contain a substring in the first MiB of its body.
//!   HTTPS is verified with rustls (ring) against the system's CA bundle
//!   (`$SSL_CERT_FILE`, `$NIX_SSL_CERT_FILE`, then the usual bundle paths); a self-signed
//!   certificate fails, as it should.
//! - `tcp`: a connection to `host:port` must open.
//! - `systemd`: the unit must be active (`systemctl is-active`).
//!
//! The built-in `control-plane` probe is fed by the heartbeat, not here.

mod exec;
mod http;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, Millis, ProbeResult, cap_head};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ProbeCheck, ProbeSpec};
use crate::input::{Input, InputSender, WorkerError};
use crate::system::System;

pub use http::HttpProber;

/// Longest detail text a result carries, in bytes.
pub const DETAIL_CAP: usize = 512;

/// Runs every probe in `specs` until `cancel`, restarting them on each reset.
pub async fn run<S: System>(
    specs: Vec<ProbeSpec>,
    system: Arc<S>,
    epochs: watch::Receiver<u64>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let http = HttpProber::with_system_roots().map_err(|e| WorkerError::Probes(e.to_string()))?;
    run_with(specs, system, http, epochs, inputs, cancel).await
}

/// [`run`] with a given HTTP client (tests trust their own CA).
pub(crate) async fn run_with<S: System>(
    specs: Vec<ProbeSpec>,
    system: Arc<S>,
    http: HttpProber,
    mut epochs: watch::Receiver<u64>,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let checker = Arc::new(Checker { system, http });
    let specs: Vec<Arc<ProbeSpec>> = specs.into_iter().map(Arc::new).collect();
    let mut tasks = JoinSet::new();
    let mut epoch = *epochs.borrow_and_update();
    start(&mut tasks, &specs, &checker, &inputs, epoch);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            changed = epochs.changed() => match changed {
                Ok(()) => {
                    let next = *epochs.borrow_and_update();
                    // Aborts and waits: once this returns no old task can send anything.
                    tasks.shutdown().await;
                    tracing::info!(from = epoch, to = next, "probes reset");
                    epoch = next;
                    start(&mut tasks, &specs, &checker, &inputs, epoch);
                }
                // The event loop is gone: the agent is stopping.
                Err(_) => break,
            },
            Some(ended) = tasks.join_next() => {
                tasks.shutdown().await;
                return Err(match ended {
                    Ok(()) => WorkerError::LoopStopped,
                    Err(e) => WorkerError::Probes(format!("a probe task failed: {e}")),
                });
            }
        }
    }
    tasks.shutdown().await;
    Ok(())
}

fn start<S: System>(
    tasks: &mut JoinSet<()>,
    specs: &[Arc<ProbeSpec>],
    checker: &Arc<Checker<S>>,
    inputs: &InputSender,
    epoch: u64,
) {
    for spec in specs {
        let span = tracing::info_span!("probe", probe = %spec.id, epoch);
        let task = probe_loop(spec.clone(), checker.clone(), inputs.clone(), epoch);
        tasks.spawn(task.instrument(span));
    }
}

/// Runs one probe every interval until aborted or until the event loop is gone.
async fn probe_loop<S: System>(
    spec: Arc<ProbeSpec>,
    checker: Arc<Checker<S>>,
    inputs: InputSender,
    epoch: u64,
) {
    let mut ticks = tokio::time::interval(duration(spec.interval));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (passed, detail) = checker.check(&spec).await;
        tracing::debug!(passed, %detail, "probe ran");
        let result = ProbeResult {
            probe: spec.id.clone(),
            epoch,
            passed,
            detail: cap_head(&detail, DETAIL_CAP),
        };
        if inputs
            .send(Input::Event(Event::ProbeResult(result)))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Runs single checks of every kind.
struct Checker<S> {
    system: Arc<S>,
    http: HttpProber,
}

impl<S: System> Checker<S> {
    async fn check(&self, spec: &ProbeSpec) -> (bool, String) {
        let timeout = duration(spec.timeout);
        match &spec.check {
            ProbeCheck::Exec { argv } => exec::check(argv, timeout).await,
            ProbeCheck::Http {
                url,
                expect_status,
                body_contains,
            } => {
                self.http
                    .check(url, *expect_status, body_contains.as_deref(), timeout)
                    .await
            }
            ProbeCheck::Tcp { address } => tcp_check(address, timeout).await,
            ProbeCheck::Systemd { unit } => {
                match tokio::time::timeout(timeout, self.system.unit_active(unit)).await {
                    Ok(Ok(true)) => (true, format!("{unit} is active")),
                    Ok(Ok(false)) => (false, format!("{unit} is not active")),
                    Ok(Err(e)) => (false, format!("cannot check {unit}: {e}")),
                    Err(_) => (
                        false,
                        format!("checking {unit} timed out after {}", spec.timeout),
                    ),
                }
            }
        }
    }
}

async fn tcp_check(address: &str, timeout: Duration) -> (bool, String) {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(_)) => (true, format!("connected to {address}")),
        Ok(Err(e)) => (false, format!("cannot connect to {address}: {e}")),
        Err(_) => (
            false,
            format!("connecting to {address} timed out after {timeout:?}"),
        ),
    }
}

fn duration(span: Millis) -> Duration {
    Duration::from_millis(span.0)
}
