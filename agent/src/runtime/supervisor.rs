//! Supervision: a worker that fails (returns an error, returns when it should not, or panics)
//! is logged, counted and restarted with exponential backoff; the others keep running.

use std::future::Future;
use std::time::Duration;

use fleetnode_wire::WorkerStatus;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span};

use crate::input::WorkerError;
use crate::status::Workers;

/// First restart delay.
pub const RESTART_BASE: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const RESTART_CAP: Duration = Duration::from_secs(60);
/// A worker that ran this long before failing starts again from the first delay.
const STABLE_AFTER: Duration = Duration::from_secs(300);

/// Runs the worker made by `make` until `cancel`, restarting it when it fails.
///
/// Each run is a separate task, so a panic is caught through its `JoinHandle`, inside a
/// `worker` span naming it, so every line it logs says which worker it came from. A worker must
/// return `Ok(())` promptly once `cancel` fires; this function returns after it did.
pub async fn supervise<F, Fut>(
    name: &'static str,
    workers: Workers,
    cancel: CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    let mut delay = RESTART_BASE;
    loop {
        workers.set(name, WorkerStatus::Running);
        let started = Instant::now();
        let outcome = tokio::spawn(make().instrument(info_span!("worker", name))).await;
        if cancel.is_cancelled() {
            workers.set(name, WorkerStatus::Idle);
            return;
        }
        let why = match outcome {
            Ok(Ok(())) => "stopped without being asked to".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(join) if join.is_panic() => {
                let payload = join.into_panic();
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                format!("panicked: {text}")
            }
            Err(join) => format!("was cancelled: {join}"),
        };
        if started.elapsed() >= STABLE_AFTER {
            delay = RESTART_BASE;
        }
        workers.fault(name, &why);
        error!(worker = name, error = %why, restart_in_s = delay.as_secs(), "worker failed; restarting");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        info!(worker = name, "restarting worker");
        delay = (delay * 2).min(RESTART_CAP);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test(start_paused = true)]
    async fn a_failing_worker_is_restarted_with_backoff_and_its_status_shows_it() {
        let workers = Workers::new(Arc::new(Metrics::new()));
        let cancel = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let task = {
            let (workers, cancel, runs) = (workers.clone(), cancel.clone(), runs.clone());
            tokio::spawn(async move {
                supervise("flaky", workers, cancel.clone(), move || {
                    let (runs, cancel) = (runs.clone(), cancel.clone());
                    async move {
                        match runs.fetch_add(1, Ordering::SeqCst) {
                            0 => Err(WorkerError::Listener("disk on fire".to_owned())),
                            1 => panic!("boom"),
                            _ => {
                                cancel.cancelled().await;
                                Ok(())
                            }
                        }
                    }
                })
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = workers.list();
        assert_eq!(status[0].status, WorkerStatus::Faulted);
        assert_eq!(status[0].last_error.as_deref(), Some("disk on fire"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // First restart after 1 s, it panics, second restart after 2 s more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(
            workers.list()[0]
                .last_error
                .as_deref()
                .unwrap()
                .contains("boom")
        );
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let status = &workers.list()[0];
        assert_eq!(status.status, WorkerStatus::Running);
        assert_eq!(status.restarts, 2);
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(workers.list()[0].status, WorkerStatus::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_worker_logs_names_the_worker() {
        let (logs, _guard) = crate::testlog::Logs::capture();
        let workers = Workers::new(Arc::new(Metrics::new()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise("drainer", workers, cancel.clone(), {
            let cancel = cancel.clone();
            move || {
                let cancel = cancel.clone();
                async move {
                    tracing::warn!("something to say");
                    cancel.cancelled().await;
                    Ok(())
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
        task.await.unwrap();
        let lines = logs.lines_with("something to say");
        assert_eq!(lines.len(), 1, "{}", logs.text());
        assert!(
            lines[0].contains("worker{name=\"drainer\"}"),
            "{}",
            lines[0]
        );
    }
}
