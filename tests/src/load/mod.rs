//! `fleetnode-loadgen`: many simulated agents against one real `fleetnode-cp`, from one
//! process, over real TLS, speaking the agent protocol (see [`host`]).
//!
//! A run starts a control plane (the `fleetnode-cp` binary next to this one) on a fresh store
//! (a redb file, or with [`Options::postgres`] a database of a throw-away PostgreSQL cluster
//! with `fsync` on, served by [`Options::replicas`] processes with the hosts spread over them
//! round-robin), registers the hosts, connects every host's long-poll and starts its
//! heartbeats, then measures in phases: the fleet at rest (server memory per waiting
//! connection, heartbeats per second, server and database CPU), full-fleet dispatches (a
//! target set for all; the time until every host has it) each beside its baseline of as many
//! trivial requests over the same connections ([`dispatch`]), wake-up latency (one host's
//! change made through one replica reaching its long-poll on another, beside the same change
//! made through its own replica: [`wakeup`]) and event ingestion (batches acknowledged only
//! once durable), beside its baseline measured in the same run (see [`baseline`]). Every
//! figure is printed with the options that produced it; `docs/performance.md` has the results.

mod baseline;
mod dispatch;
mod host;
pub mod link;
pub mod measure;
pub mod setup;
mod wakeup;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{HarnessError, Result};
use dispatch::Dispatch;
use host::{Counters, Host, Shared};
use measure::{Sample, ms, quantile};
pub use setup::Operator;

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated hosts.
    pub hosts: usize,
    /// Heartbeat interval of every host.
    pub heartbeat: Duration,
    /// How long the fleet is watched at rest.
    pub idle: Duration,
    /// Full-fleet dispatch rounds.
    pub dispatches: usize,
    /// Event batches each host delivers in the ingestion phase.
    pub batches: usize,
    /// Events per batch.
    pub batch_events: usize,
    /// Hosts delivering at once in the ingestion phase.
    pub senders: usize,
    /// Worker threads of this process's runtime.
    pub threads: usize,
    /// Where the control plane's files go (a fresh temporary directory when `None`).
    pub work_dir: Option<std::path::PathBuf>,
    /// Store on PostgreSQL (a throw-away cluster started for the run, `fsync` on) instead of
    /// a redb file.
    pub postgres: bool,
    /// Control-plane processes on the one database (more than one needs `postgres`).
    pub replicas: usize,
    /// Single-host changes measured in the wake-up phase.
    pub wakeups: usize,
}

/// How long every host may take to get its first long-poll answer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(300);

/// Runs the load and prints the report.
pub fn run(options: &Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .enable_all()
        .build()
        .map_err(HarnessError::io("start the load generator's runtime"))?;
    runtime.block_on(drive(options))
}

async fn drive(options: &Options) -> Result<()> {
    let server = setup::Server::start(options).await?;
    println!(
        "fleetnode-loadgen: {} hosts, heartbeat every {:?}, against {} replica(s) {:?} (pids {:?}) on {}",
        options.hosts,
        options.heartbeat,
        options.replicas.max(1),
        server.urls(),
        server.pids(),
        if options.postgres {
            "PostgreSQL (fsync on)"
        } else {
            "redb"
        }
    );
    println!("load average at start: {}", load_average());
    let started = Instant::now();
    let hosts = server.operator().register("load", options.hosts).await?;
    println!(
        "registered {} hosts in {:.1} s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );
    let before = server.sample()?;
    let fleet = Fleet::connect(server.operators(), hosts, options.heartbeat).await?;
    rest(&server, &fleet.shared, options, &before).await?;
    dispatch::rounds(&server, &fleet.shared, options).await?;
    wakeup::latencies(&server, &fleet.hosts, options).await?;
    ingestion(&server, &fleet.shared, &fleet.hosts, options).await?;
    let errors = fleet.stop().await;
    println!("errors (connect, HTTP or non-2xx, all retried): {errors}");
    println!("load average at the end: {}", load_average());
    server.stop()
}

/// Simulated hosts, each with its long-poll waiting and its heartbeats running.
pub struct Fleet {
    hosts: Vec<Arc<Host>>,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Fleet {
    /// Registers `count` hosts named `<prefix>-<n>` with the operator's control plane, connects
    /// them and starts their heartbeats.
    pub async fn start(
        operator: &Operator,
        prefix: &str,
        count: usize,
        heartbeat: Duration,
    ) -> Result<Self> {
        let hosts = operator.register(prefix, count).await?;
        Self::connect(std::slice::from_ref(operator), hosts, heartbeat).await
    }

    /// Connects `hosts`, host `n` to the replica of `operators[n % len]`.
    async fn connect(
        operators: &[Operator],
        hosts: Vec<Arc<Host>>,
        heartbeat: Duration,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            endpoints: operators.iter().map(Operator::endpoint).collect(),
            stop: CancellationToken::new(),
            dispatch: Dispatch::default(),
            baseline: dispatch::Baseline::default(),
            counters: Counters::default(),
            heartbeat_latencies: Mutex::new(Vec::new()),
            heartbeat_slots: tokio::sync::Semaphore::new(host::HEARTBEAT_CONNECTIONS),
        });
        let mut tasks = JoinSet::new();
        connect_all(&hosts, &shared, &mut tasks).await?;
        start_heartbeats(&hosts, &shared, heartbeat, &mut tasks);
        Ok(Self {
            hosts,
            shared,
            tasks,
        })
    }

    /// Stops every host; returns how many exchanges failed (each was retried).
    pub async fn stop(mut self) -> u64 {
        self.shared.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.shared.counters.errors.load(Ordering::Relaxed)
    }
}

/// Starts every host's long-poll and waits until each got its first answer.
async fn connect_all(
    hosts: &[Arc<Host>],
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
) -> Result<()> {
    let started = Instant::now();
    for chunk in hosts.chunks(500) {
        for host in chunk {
            tasks.spawn(host::longpoll(host.clone(), shared.clone()));
        }
        // Let the handshakes of one chunk finish before the next starts, so the listen
        // backlog never overflows.
        let target = (tasks.len()).min(hosts.len());
        wait_until(CONNECT_DEADLINE, || {
            shared.counters.polling.load(Ordering::SeqCst) >= target
        })
        .await?;
    }
    println!(
        "connected: {} long-polls waiting after {:.1} s",
        hosts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start_heartbeats(
    hosts: &[Arc<Host>],
    shared: &Arc<Shared>,
    interval: Duration,
    tasks: &mut JoinSet<()>,
) {
    let count = hosts.len().max(1) as u32;
    for (index, host) in hosts.iter().enumerate() {
        // Spread evenly over one interval, as hosts started at different times are.
        let offset = interval * u32::try_from(index).unwrap_or(0) / count;
        tasks.spawn(host::heartbeats(
            host.clone(),
            shared.clone(),
            interval,
            offset,
        ));
    }
}

/// The fleet at rest: every long-poll waiting, heartbeats flowing.
async fn rest(
    server: &setup::Server,
    shared: &Shared,
    options: &Options,
    before: &Sample,
) -> Result<()> {
    // One interval for the heartbeats to reach their pace, then the window.
    tokio::time::sleep(options.heartbeat).await;
    let start = server.sample()?;
    let own_start = server.own_sample()?;
    let database_start = server.database_sample();
    let beats = shared.counters.heartbeats.load(Ordering::Relaxed);
    shared
        .heartbeat_latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    tokio::time::sleep(options.idle).await;
    let end = server.sample()?;
    let own_end = server.own_sample()?;
    let database_end = server.database_sample();
    let beats = shared.counters.heartbeats.load(Ordering::Relaxed) - beats;
    let mut latencies = shared
        .heartbeat_latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    latencies.sort();
    let connections = options.hosts as f64;
    println!("\n## at rest ({} s window)", options.idle.as_secs());
    println!(
        "server RSS: {} KiB before connections, {} KiB with every long-poll waiting: {:.1} KiB per connection",
        before.rss_kib,
        end.rss_kib,
        end.rss_kib.saturating_sub(before.rss_kib) as f64 / connections
    );
    println!(
        "heartbeats: {:.0}/s acknowledged (expected {:.0}/s), round trip with a new TLS connection p50 {:.1} ms, p99 {:.1} ms",
        beats as f64 / end.at.duration_since(start.at).as_secs_f64(),
        connections / options.heartbeat.as_secs_f64(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99))
    );
    let beats_per_second = beats as f64 / end.at.duration_since(start.at).as_secs_f64();
    let server_cores = end.cores_since(&start);
    println!(
        "server CPU (every replica): {:.1}% of a core, {:.0} µs per heartbeat (with the long-polls answered meanwhile); this process: {:.1}% of a core",
        server_cores * 100.0,
        server_cores * 1e6 / beats_per_second.max(f64::MIN_POSITIVE),
        own_end.cores_since(&own_start) * 100.0
    );
    if let (Some(database_start), Some(database_end)) = (database_start, database_end) {
        let database_cores = database_end.cores_since(&database_start);
        println!(
            "database CPU (every PostgreSQL process): {:.1}% of a core, {:.0} µs per heartbeat",
            database_cores * 100.0,
            database_cores * 1e6 / beats_per_second.max(f64::MIN_POSITIVE)
        );
    }
    println!("load average: {}", load_average());
    Ok(())
}

/// Event ingestion: `senders` hosts at a time deliver their batches, each acknowledged only
/// once durable.
async fn ingestion(
    server: &setup::Server,
    shared: &Arc<Shared>,
    hosts: &[Arc<Host>],
    options: &Options,
) -> Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(options.senders.max(1)));
    let before = server.sample()?;
    let database_before = server.database_sample();
    let acked_before = shared.counters.events_acked.load(Ordering::Relaxed);
    let batches_before = shared.counters.batches_acked.load(Ordering::Relaxed);
    let bytes_before = shared.counters.batch_bytes_acked.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for host in hosts {
        let (host, shared, slots) = (host.clone(), shared.clone(), slots.clone());
        let (batches, size) = (options.batches, options.batch_events);
        senders.spawn(async move {
            let _slot = slots.acquire_owned().await.ok()?;
            Some(host::deliver(&host, &shared, batches, size).await)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = senders.join_next().await {
        if let Ok(Some(mut batch_latencies)) = done {
            latencies.append(&mut batch_latencies);
        }
    }
    let took = started.elapsed();
    let after = server.sample()?;
    let database_cpu = match (database_before, server.database_sample()) {
        (Some(before), Some(after)) => format!(
            "; database CPU {:.0}% of a core",
            after.cores_since(&before) * 100.0
        ),
        _ => String::new(),
    };
    latencies.sort();
    let events = shared.counters.events_acked.load(Ordering::Relaxed) - acked_before;
    println!(
        "\n## ingestion: {} hosts x {} batches of {} events, {} hosts sending at once",
        hosts.len(),
        options.batches,
        options.batch_events,
        options.senders
    );
    println!(
        "{events} events acknowledged durable in {:.2} s: {:.0} events/s ({:.0} batches/s); batch round trip p50 {:.1} ms, p99 {:.1} ms; server CPU {:.0}% of a core{database_cpu}; load {}",
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        after.cores_since(&before) * 100.0,
        load_average()
    );
    let batches = shared.counters.batches_acked.load(Ordering::Relaxed) - batches_before;
    let bytes = shared.counters.batch_bytes_acked.load(Ordering::Relaxed) - bytes_before;
    let batch_bytes = usize::try_from(bytes / batches.max(1)).unwrap_or(usize::MAX);
    let senders = options.senders.min(hosts.len()).max(1);
    let base = baseline::group_append(server.work_dir(), senders, batches, batch_bytes).await?;
    let events_per_batch = events as f64 / batches.max(1) as f64;
    let base_rate = base.batches as f64 * events_per_batch / base.took.as_secs_f64();
    let server_rate = events as f64 / took.as_secs_f64();
    println!(
        "baseline: the same {batches} batches of {batch_bytes} bytes appended with write + fdatasync in groups, {senders} senders: {base_rate:.0} events/s in {:.2} s ({:.1} batches per fdatasync); server / baseline = {:.2}",
        base.took.as_secs_f64(),
        base.batches as f64 / base.syncs.max(1) as f64,
        server_rate / base_rate.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

/// The machine's load averages (1, 5 and 15 minutes), as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Waits until `done`, checking every few milliseconds; an error after `deadline`.
async fn wait_until(deadline: Duration, done: impl Fn() -> bool) -> Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > deadline {
            return Err(HarnessError::Timeout {
                what: "the simulated hosts".into(),
                report: format!("not done after {deadline:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
