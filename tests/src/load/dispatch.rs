//! Full-fleet dispatch rounds, each beside its baseline in the same run.
//!
//! A round sets one target for every host through the first replica and measures the time
//! until every host's long-poll was answered with it (hosts poll again at once, as agents do).
//! Its baseline is as many trivial requests (`GET /healthz`) over the same kept connections,
//! on the same replicas: every host holds its long-poll connection once it is answered (a
//! second full-fleet change, not measured, releases them all), then all send at once, and the
//! time until every one is answered is the figure. What the baseline measures is the cost of
//! 19,000 exchanges over TLS between this process and the servers on this machine at that
//! moment, which is what a dispatch cannot go below; the ratio says how much the store and the
//! wake-up add to it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use super::host::{Host, Shared};
use super::link::Link;
use super::measure::{median, ms, quantile};
use super::setup::Server;
use super::{Options, load_average, wait_until};
use crate::Result;

/// How long one dispatch may take before the round is reported incomplete.
const DISPATCH_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between rounds, so that every host's next poll is waiting again.
const BETWEEN_ROUNDS: Duration = Duration::from_secs(3);

/// The dispatch rounds and their baselines; prints each and their medians.
pub async fn rounds(server: &Server, shared: &Shared, options: &Options) -> Result<()> {
    println!(
        "\n## full-fleet dispatch ({} rounds, each with its baseline)",
        options.dispatches
    );
    println!(
        "round  answered ms  all hosts ms  p50 ms  p99 ms  server CPU s  database CPU s  baseline all ms  baseline p50 ms  dispatch / baseline  load"
    );
    // Every full-fleet change raises every host's revision by one.
    let mut changes = 0;
    let (mut all, mut answered, mut baselines, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=options.dispatches {
        changes += 1;
        let before = server.sample()?;
        let database_before = server.database_sample();
        let started = Instant::now();
        shared.dispatch.begin(changes, started);
        server.operator().set_target_for_all(changes).await?;
        let answer = started.elapsed();
        let complete = wait_until(DISPATCH_DEADLINE, || {
            shared.dispatch.reached() >= options.hosts
        })
        .await;
        shared.dispatch.end();
        let after = server.sample()?;
        let database_cpu = match (database_before, server.database_sample()) {
            (Some(before), Some(after)) => format!("{:.2}", after.cpu_seconds_since(&before)),
            _ => "-".to_owned(),
        };
        let seen = shared.dispatch.latencies();
        let last = seen.last().copied().unwrap_or_default();
        tokio::time::sleep(BETWEEN_ROUNDS).await;

        changes += 1;
        let base = baseline(server, shared, options, changes).await?;
        let base_last = base.last().copied().unwrap_or_default();
        let ratio = ms(last) / ms(base_last).max(f64::MIN_POSITIVE);
        println!(
            "{round:>5}  {:>11.0}  {:>12.0}  {:>6.0}  {:>6.0}  {:>12.2}  {:>14}  {:>15.0}  {:>15.0}  {:>19.2}  {}{}",
            ms(answer),
            ms(last),
            ms(quantile(&seen, 0.5)),
            ms(quantile(&seen, 0.99)),
            after.cpu_seconds_since(&before),
            database_cpu,
            ms(base_last),
            ms(quantile(&base, 0.5)),
            ratio,
            load_average(),
            if complete.is_ok() {
                ""
            } else {
                "  (incomplete)"
            }
        );
        all.push(ms(last));
        answered.push(ms(answer));
        baselines.push(ms(base_last));
        ratios.push(ratio);
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    println!(
        "median: set-target answered in {:.0} ms, every host had it after {:.0} ms; baseline {:.0} ms; dispatch / baseline {:.2} (median of the rounds' ratios)",
        median(&answered),
        median(&all),
        median(&baselines),
        median(&ratios)
    );
    Ok(())
}

/// One baseline round: a full-fleet change (revision `revision`, not measured) releases every
/// long-poll, each host holds its connection, then all send `GET /healthz` at once; returns
/// when each had its answer, from the moment they were told to send, sorted.
async fn baseline(
    server: &Server,
    shared: &Shared,
    options: &Options,
    revision: u64,
) -> Result<Vec<Duration>> {
    shared.baseline.request();
    server.operator().set_target_for_all(revision).await?;
    wait_until(DISPATCH_DEADLINE, || {
        shared.baseline.parked() >= options.hosts
    })
    .await?;
    shared.baseline.go(Instant::now());
    wait_until(DISPATCH_DEADLINE, || {
        shared.baseline.answered() >= options.hosts
    })
    .await?;
    let latencies = shared.baseline.latencies();
    if latencies.len() < options.hosts {
        println!(
            "  (baseline: {} of {} requests answered; the others failed)",
            latencies.len(),
            options.hosts
        );
    }
    Ok(latencies)
}

/// One full-fleet dispatch: the revision every host must see, when it was set, and when each
/// host saw it.
#[derive(Default)]
pub struct Dispatch {
    target: AtomicU64,
    started: Mutex<Option<Instant>>,
    seen: Mutex<Vec<Duration>>,
    reached: AtomicUsize,
}

impl Dispatch {
    /// Starts a round: every host must see `revision`.
    pub fn begin(&self, revision: u64, at: Instant) {
        *self.started.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.reached.store(0, Ordering::SeqCst);
        self.target.store(revision, Ordering::SeqCst);
    }

    /// Ends a round: later answers are not counted.
    pub fn end(&self) {
        self.target.store(0, Ordering::SeqCst);
    }

    /// Hosts that saw the round's revision so far.
    pub fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }

    /// When each host saw it, from the round's start, sorted.
    pub fn latencies(&self) -> Vec<Duration> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        seen.sort();
        seen
    }

    pub(super) fn observe(&self, revision: u64, at: Instant) {
        let target = self.target.load(Ordering::SeqCst);
        if target == 0 || revision < target {
            return;
        }
        let started = *self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(started) = started {
            self.seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(at.saturating_duration_since(started));
            self.reached.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The dispatch's baseline: the same number of trivial requests (`GET /healthz`) over the same
/// kept connections as the long-polls. A round is asked for with [`Baseline::request`]; each
/// host, once its long-poll is next answered, holds its connection instead of polling again
/// ([`Baseline::parked`] counts them); [`Baseline::go`] then has every host send its request
/// at once, and [`Baseline::answered`] counts the answers; then the hosts poll again.
#[derive(Default)]
pub struct Baseline {
    requested: AtomicU64,
    parked: AtomicUsize,
    go: tokio::sync::Notify,
    started: Mutex<Option<Instant>>,
    gone: AtomicU64,
    seen: Mutex<Vec<Duration>>,
    answered: AtomicUsize,
}

impl Baseline {
    /// Asks for a round: hosts park after their next long-poll answer.
    pub fn request(&self) {
        self.parked.store(0, Ordering::SeqCst);
        self.answered.store(0, Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.requested.fetch_add(1, Ordering::SeqCst);
    }

    /// Hosts holding their connection, ready.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }

    /// Every parked host sends its request now.
    pub fn go(&self, at: Instant) {
        *self.started.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
        self.gone
            .store(self.requested.load(Ordering::SeqCst), Ordering::SeqCst);
        self.go.notify_waiters();
    }

    /// Hosts done with this round's request (answered, or failed: see [`Baseline::latencies`]).
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// When each host had its answer, from [`Baseline::go`], sorted (failed requests are not
    /// in it).
    pub fn latencies(&self) -> Vec<Duration> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        seen.sort();
        seen
    }

    /// Parks this host (if a round was asked for since it last took part), sends its request
    /// on `link` when told to, and records the answer.
    pub(super) async fn take_part(
        &self,
        taken: &mut u64,
        link: &mut Link,
        host: &Host,
        stop: &CancellationToken,
    ) {
        let round = self.requested.load(Ordering::SeqCst);
        if round == *taken {
            return;
        }
        *taken = round;
        let go = self.go.notified();
        tokio::pin!(go);
        go.as_mut().enable();
        self.parked.fetch_add(1, Ordering::SeqCst);
        if self.gone.load(Ordering::SeqCst) < round {
            tokio::select! {
                () = go => {}
                () = stop.cancelled() => return,
            }
        }
        let answer = link
            .request(Method::GET, "/healthz", &host.token, None, false)
            .await;
        let at = Instant::now();
        if matches!(answer, Ok(ref a) if a.status == StatusCode::OK) {
            let started = *self.started.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(started) = started {
                self.seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(at.saturating_duration_since(started));
            }
        }
        // A failed request ends the host's part too; only answers are timed.
        self.answered.fetch_add(1, Ordering::SeqCst);
    }
}
