//! One simulated host: the agent's long-poll on a connection it keeps, a heartbeat every
//! interval, and event batches in the drainer's shape, from the host's own loopback address.
//! Its events and heartbeats come from the real state machine ([`SimulatedAgent`]), so the
//! control plane's mirror applies them as it would a real agent's.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fleetnode_fixtures::simulated::SimulatedAgent;
use fleetnode_state_machine::{Directive, DirectiveKind, HealthOverrides, Revision, StorePath};
use fleetnode_wire::{DesiredAnswer, EventAck, EventBatch, QueueSummary, decode, encode};
use hyper::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use super::dispatch::{Baseline, Dispatch};
use super::link::{Endpoint, Link};

/// How long the server may hold a long-poll, as the agent asks.
pub const LONGPOLL_WAIT_SECS: u64 = 30;
/// Pause after a failed exchange before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The two generations a simulated host moves between.
const GENERATIONS: [&str; 2] = [
    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-load-a",
    "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-load-b",
];

/// The generation `n % 2`.
pub fn generation(n: u64) -> StorePath {
    let index = usize::from(n % 2 == 1);
    StorePath::parse(GENERATIONS[index]).unwrap_or_else(|_| unreachable!("a valid store path"))
}

/// One simulated host.
pub struct Host {
    /// Its number (which also picks its replica: number modulo the replicas).
    pub index: usize,
    /// Its id.
    pub id: String,
    /// Its bearer token.
    pub token: String,
    /// The loopback address it connects from.
    pub source: IpAddr,
    /// Its state machine; `reported` holds the events not yet acknowledged, as the agent's
    /// queue does (a batch in flight included).
    agent: Mutex<SimulatedAgent>,
    /// The last desired revision its long-poll was answered with as a change, and when.
    changes: tokio::sync::watch::Sender<(u64, Instant)>,
}

impl Host {
    /// Host number `index`, connecting from `127.10.<index / 250>.<index % 250 + 1>`.
    pub fn new(index: usize, id: String, token: String) -> Self {
        let third = u8::try_from(index / 250).unwrap_or(u8::MAX);
        let fourth = u8::try_from(index % 250 + 1).unwrap_or(u8::MAX);
        let stream = 0x5eed_0000_0000 + index as u64;
        Self {
            index,
            id,
            token,
            source: IpAddr::V4(Ipv4Addr::new(127, 10, third, fourth)),
            agent: Mutex::new(SimulatedAgent::started(&generation(0), stream)),
            changes: tokio::sync::watch::Sender::new((0, Instant::now())),
        }
    }

    /// Watches the revisions this host's long-poll is answered with as changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<(u64, Instant)> {
        self.changes.subscribe()
    }

    /// The next batch of `size` events: the oldest not yet acknowledged, after running
    /// directives through the state machine until that many are waiting. They stay queued
    /// until [`Host::acknowledged`].
    pub fn next_batch(&self, size: usize) -> EventBatch {
        let mut agent = self.agent.lock().unwrap_or_else(PoisonError::into_inner);
        while agent.reported.len() < size {
            let revision = agent
                .state
                .host
                .desired
                .as_ref()
                .map_or(0, |d| d.revision.0)
                + 1;
            agent.answer(Directive {
                revision: Revision(revision),
                kind: DirectiveKind::Activate {
                    target: generation(revision),
                    mode: None,
                    health: HealthOverrides::default(),
                },
            });
        }
        EventBatch {
            stream: agent.stream,
            events: agent.reported[..size].to_vec(),
        }
    }

    /// The control plane acknowledged the oldest `count` queued events: they leave the queue.
    pub fn acknowledged(&self, count: usize) {
        let mut agent = self.agent.lock().unwrap_or_else(PoisonError::into_inner);
        let count = count.min(agent.reported.len());
        agent.reported.drain(..count);
    }

    /// The heartbeat the agent would send now.
    ///
    /// Its queue is the events not yet acknowledged, as a real agent reports it: a control
    /// plane that is told of events it does not hold with an empty queue asks for a snapshot
    /// (resync), which a host that simply has not sent them yet must not cause.
    pub fn heartbeat(&self) -> Vec<u8> {
        let agent = self.agent.lock().unwrap_or_else(PoisonError::into_inner);
        let mut status = agent.heartbeat();
        status.queue = QueueSummary {
            depth: agent.reported.len() as u64,
            bytes: agent
                .reported
                .iter()
                .map(|event| encode(event).len() as u64)
                .sum(),
            oldest_at: agent.reported.first().map(|event| event.at),
            dead_letters: 0,
        };
        encode(&status)
    }
}

/// What every host task shares with the coordinator.
pub struct Shared {
    /// The replicas; host `n` talks to replica `n % len` only.
    pub endpoints: Vec<Endpoint>,
    /// Stops every host task.
    pub stop: CancellationToken,
    /// Full-fleet dispatch rounds.
    pub dispatch: Dispatch,
    /// The dispatch's baseline rounds.
    pub baseline: Baseline,
    /// Counters.
    pub counters: Counters,
    /// Heartbeat round trips.
    pub heartbeat_latencies: Mutex<Vec<Duration>>,
    /// Heartbeat connections open at once. Real hosts are separate processes; here every
    /// connection is a descriptor of this one process (and of the server), which already holds
    /// one per long-poll, so heartbeats that a busy server answers late must not pile up past
    /// the open-file limit.
    pub heartbeat_slots: tokio::sync::Semaphore,
}

impl Shared {
    /// The replica `host` talks to.
    pub fn endpoint(&self, host: &Host) -> &Endpoint {
        &self.endpoints[host.index % self.endpoints.len().max(1)]
    }
}

/// Default of [`Shared::heartbeat_slots`]: with 19,000 long-polls and 500 senders of events,
/// this keeps the process under 20,000 descriptors.
pub const HEARTBEAT_CONNECTIONS: usize = 300;

/// Counts of what happened.
#[derive(Default)]
pub struct Counters {
    /// Hosts whose long-poll got its first answer.
    pub polling: AtomicUsize,
    /// Heartbeats acknowledged.
    pub heartbeats: AtomicU64,
    /// Failed exchanges of any kind (connect, HTTP, non-2xx).
    pub errors: AtomicU64,
    /// Events acknowledged as durable.
    pub events_acked: AtomicU64,
    /// Batches acknowledged as durable, and the bytes of their bodies (what the ingestion
    /// baseline appends).
    pub batches_acked: AtomicU64,
    /// See `batches_acked`.
    pub batch_bytes_acked: AtomicU64,
}

/// The long-poll: one kept connection, a new poll as soon as the last is answered.
pub async fn longpoll(host: Arc<Host>, shared: Arc<Shared>) {
    let mut known: Option<u64> = None;
    let mut link: Option<Link> = None;
    let mut first = true;
    let mut baseline_taken = 0;
    while !shared.stop.is_cancelled() {
        let Some(mut current) = kept_or_new(&mut link, &host, &shared).await else {
            continue;
        };
        let path = match known {
            Some(revision) => format!(
                "/v1/agent/hosts/{}/desired?known={revision}&wait={LONGPOLL_WAIT_SECS}",
                host.id
            ),
            None => format!(
                "/v1/agent/hosts/{}/desired?wait={LONGPOLL_WAIT_SECS}",
                host.id
            ),
        };
        let answer = tokio::select! {
            answer = current.request(Method::GET, &path, &host.token, None, false) => answer,
            () = shared.stop.cancelled() => return,
        };
        let at = Instant::now();
        match answer {
            Ok(answer) if answer.status == StatusCode::OK => {
                if let Ok(desired) = decode::<DesiredAnswer>(&answer.body) {
                    let revision = desired.desired.revision.0;
                    // A new revision is what an agent acts on, whatever `changed` says.
                    if desired.changed || known != Some(revision) {
                        shared.dispatch.observe(revision, at);
                        host.changes.send_replace((revision, at));
                    }
                    known = Some(revision);
                }
                if first {
                    first = false;
                    shared.counters.polling.fetch_add(1, Ordering::SeqCst);
                }
                shared
                    .baseline
                    .take_part(&mut baseline_taken, &mut current, &host, &shared.stop)
                    .await;
                link = Some(current);
            }
            Ok(_) | Err(_) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                pause(&shared).await;
            }
        }
    }
}

/// The heartbeat: every `interval`, starting at `offset`, on a connection of its own that
/// is closed after the answer.
pub async fn heartbeats(
    host: Arc<Host>,
    shared: Arc<Shared>,
    interval: Duration,
    offset: Duration,
) {
    let mut next = tokio::time::Instant::now() + offset;
    let path = format!("/v1/agent/hosts/{}/heartbeat", host.id);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = shared.stop.cancelled() => return,
        }
        next += interval;
        let Ok(_slot) = shared.heartbeat_slots.acquire().await else {
            return;
        };
        let started = Instant::now();
        let sent = async {
            let mut link = shared.endpoint(&host).connect(host.source).await.ok()?;
            let answer = link
                .request(
                    Method::POST,
                    &path,
                    &host.token,
                    Some(host.heartbeat()),
                    true,
                )
                .await
                .ok()?;
            (answer.status == StatusCode::OK).then_some(())
        };
        match sent.await {
            Some(()) => {
                shared.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                shared
                    .heartbeat_latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(started.elapsed());
            }
            None => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends `batches` batches of `size` events, each only after the previous one's ack (as the
/// drainer does), on one connection; returns each batch's round trip.
pub async fn deliver(host: &Host, shared: &Shared, batches: usize, size: usize) -> Vec<Duration> {
    let path = format!("/v1/agent/hosts/{}/events", host.id);
    let mut latencies = Vec::with_capacity(batches);
    let mut link: Option<Link> = None;
    let mut left = batches;
    while left > 0 && !shared.stop.is_cancelled() {
        let Some(mut current) = kept_or_new(&mut link, host, shared).await else {
            continue;
        };
        let batch = host.next_batch(size);
        let last = batch.events.last().map_or(0, |e| e.seq);
        let body = encode(&batch);
        // A refused or lost batch is sent again, as the drainer would.
        loop {
            let started = Instant::now();
            let answer = current
                .request(
                    Method::POST,
                    &path,
                    &host.token,
                    Some(body.clone()),
                    left == 1,
                )
                .await;
            let acked = answer
                .ok()
                .filter(|a| a.status == StatusCode::OK)
                .and_then(|a| decode::<EventAck>(&a.body).ok());
            match acked {
                Some(ack) if ack.acked_through >= last => {
                    host.acknowledged(batch.events.len());
                    latencies.push(started.elapsed());
                    let counters = &shared.counters;
                    counters
                        .events_acked
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    counters.batches_acked.fetch_add(1, Ordering::Relaxed);
                    counters
                        .batch_bytes_acked
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    link = Some(current);
                    break;
                }
                Some(_) | None => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    pause(shared).await;
                    match shared.endpoint(host).connect(host.source).await {
                        Ok(fresh) => current = fresh,
                        Err(_) => continue,
                    }
                }
            }
        }
        left -= 1;
    }
    latencies
}

/// The kept connection, or a new one from the host's address; `None` (counted as an error,
/// after a pause) when it cannot connect.
async fn kept_or_new(link: &mut Option<Link>, host: &Host, shared: &Shared) -> Option<Link> {
    if let Some(current) = link.take() {
        return Some(current);
    }
    match shared.endpoint(host).connect(host.source).await {
        Ok(current) => Some(current),
        Err(_) => {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            pause(shared).await;
            None
        }
    }
}

async fn pause(shared: &Shared) {
    tokio::select! {
        () = tokio::time::sleep(RETRY_PAUSE) => {}
        () = shared.stop.cancelled() => {}
    }
}
