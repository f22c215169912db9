use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Event, ProbeId, ProbeMode, ProbeResult, State, StorePath, SystemView, Timestamp,
};
use fleetnode_wire::{AgentStatus, ErrorCode, PhaseKind, QueueSummary, WorkerStatus};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{BACKOFF_CAP, HeartbeatContext, NAME, run};
use crate::clock::Clock;
use crate::input::{Input, WorkerError};
use crate::metrics::Metrics;
use crate::status::{self, Workers};
use crate::workers::control::Client;
use crate::workers::control::testserver::{Failure, TestServer};

const INTERVAL: Duration = Duration::from_secs(10);
const CLOCK_START_MS: u64 = 1_700_000_000_000;

fn web() -> ProbeId {
    ProbeId::parse("web").unwrap()
}

fn system() -> StorePath {
    StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system").unwrap()
}

/// A host that has something to say in every heartbeat field.
fn snapshot(epoch: u64) -> AgentStatus {
    let mut state = State::default();
    state.host.seq = 42;
    state.host.paused = true;
    state.host.probe_epoch = epoch;
    state.host.policy.probes.insert(web(), ProbeMode::Enforce);
    state.host.system = SystemView {
        current: Some(system()),
        booted: Some(system()),
        profile: Some(system()),
    };
    let queue = QueueSummary {
        depth: 5,
        bytes: 900,
        oldest_at: Some(Timestamp(CLOCK_START_MS - 4_000)),
        dead_letters: 2,
    };
    let mut latest = BTreeMap::new();
    latest.insert(web(), (false, "connection refused".to_owned()));
    status::build(
        &state,
        77,
        queue,
        &latest,
        Vec::new(),
        Timestamp(CLOCK_START_MS - 1_000),
    )
}

struct Harness {
    server: TestServer,
    snapshot: watch::Sender<Arc<AgentStatus>>,
    inputs: mpsc::Receiver<Input>,
    workers: Workers,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), WorkerError>>,
    _dir: tempfile::TempDir,
}

/// The worker, talking to `server` (or to `addr` instead, when given).
async fn start_against(server: TestServer, addr: Option<std::net::SocketAddr>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let target = TestServer {
        addr: addr.unwrap_or(server.addr),
        ..server.clone()
    };
    let metrics = Arc::new(Metrics::new());
    let client = Arc::new(Client::new(&target.config(dir.path()), metrics.clone()).unwrap());
    let workers = Workers::new(metrics.clone());
    workers.set("probes", WorkerStatus::Running);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(snapshot(3)));
    let ctx = HeartbeatContext {
        client,
        interval: INTERVAL,
        status: snapshot_rx,
        workers: workers.clone(),
        clock: Clock::anchored_at(CLOCK_START_MS, Timestamp(0)),
        metrics: metrics.clone(),
    };
    let (inputs_tx, inputs) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(ctx, inputs_tx, cancel.clone()));
    Harness {
        server,
        snapshot: snapshot_tx,
        inputs,
        workers,
        metrics,
        cancel,
        task,
        _dir: dir,
    }
}

async fn start() -> Harness {
    start_against(TestServer::start().await, None).await
}

impl Harness {
    async fn next_probe_result(&mut self) -> ProbeResult {
        match tokio::time::timeout(Duration::from_secs(600), self.inputs.recv()).await {
            Ok(Some(Input::Event(Event::ProbeResult(result)))) => result,
            other => panic!("expected a probe result, got {other:?}"),
        }
    }

    fn heartbeats(&self) -> usize {
        self.server.lock().heartbeats.len()
    }

    async fn stop(self) {
        self.cancel.cancel();
        assert_eq!(self.task.await.unwrap(), Ok(()));
    }
}

#[tokio::test(start_paused = true)]
async fn sends_one_heartbeat_per_interval() {
    let mut h = start().await;
    // One at start, then one per interval.
    for expected in 1..=4 {
        let result = h.next_probe_result().await;
        assert!(result.passed, "{result:?}");
        assert_eq!(h.heartbeats(), expected);
    }
    tokio::time::sleep(INTERVAL / 2).await;
    assert_eq!(h.heartbeats(), 4, "a heartbeat before its interval");
    assert!(h.inputs.try_recv().is_err());
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(h.heartbeats(), 5);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_carries_the_state_summary() {
    let mut h = start().await;
    h.next_probe_result().await;
    let expected = snapshot(3);
    // The server decoded it with the wire crate's validation, so it is a valid message.
    let (hb, tokens, missing_protocol_header) = {
        let r = h.server.lock();
        (
            r.heartbeats[0].clone(),
            r.tokens.clone(),
            r.missing_protocol_header,
        )
    };
    assert_eq!(hb.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(hb.phase, PhaseKind::Idle);
    assert!(hb.paused);
    assert_eq!(hb.stream, 77);
    assert_eq!(hb.last_seq, 42);
    assert_eq!(hb.system, expected.system);
    assert_eq!(hb.at, Timestamp(CLOCK_START_MS), "taken when sent");
    assert_eq!(hb.queue.depth, 5);
    assert_eq!(hb.queue.bytes, 900);
    assert_eq!(hb.queue.dead_letters, 2);
    assert_eq!(
        hb.queue.oldest_at.map(|oldest| hb.at.since(oldest).0),
        Some(4_000)
    );
    let probes: Vec<(String, Option<bool>, &str)> = hb
        .probes
        .iter()
        .map(|p| (p.probe.to_string(), p.passing, p.detail.as_str()))
        .collect();
    assert_eq!(
        probes,
        vec![
            ("control-plane".to_owned(), None, ""),
            ("web".to_owned(), Some(false), "connection refused"),
        ]
    );
    let workers: Vec<(&str, WorkerStatus)> = hb
        .workers
        .iter()
        .map(|w| (w.name.as_str(), w.status))
        .collect();
    assert_eq!(
        workers,
        vec![
            (NAME, WorkerStatus::Running),
            ("probes", WorkerStatus::Running)
        ]
    );
    assert!(tokens.contains("Bearer s3cret-token"));
    assert!(!missing_protocol_header);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn success_and_failure_are_the_control_plane_probe_of_the_current_epoch() {
    let mut h = start().await;
    h.server.lock().fail_heartbeat.push_back(Failure {
        status: 500,
        code: ErrorCode::Internal,
        retry_after: None,
    });
    let failed = h.next_probe_result().await;
    assert_eq!(failed.probe, ProbeId::control_plane());
    assert_eq!(failed.epoch, 3);
    assert!(!failed.passed);
    assert!(failed.detail.contains("HTTP 500"), "{}", failed.detail);
    assert_eq!(
        h.metrics.last_heartbeat_seconds.get(),
        0,
        "a failed heartbeat counted as acknowledged"
    );

    let passed = h.next_probe_result().await;
    assert_eq!(passed.probe, ProbeId::control_plane());
    assert_eq!(passed.epoch, 3);
    assert!(passed.passed);
    assert_eq!(passed.detail, "heartbeat acknowledged");
    assert!(h.metrics.last_heartbeat_seconds.get() > 0);
    assert_eq!(h.workers.list()[0].status, WorkerStatus::Idle);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_probe_epoch_sends_a_heartbeat_at_once_tagged_with_it() {
    let mut h = start().await;
    assert_eq!(h.next_probe_result().await.epoch, 3);
    tokio::time::sleep(INTERVAL / 4).await;
    // Another change that keeps the epoch sends nothing early.
    h.snapshot.send_replace(Arc::new(AgentStatus {
        last_seq: 43,
        ..snapshot(3)
    }));
    tokio::time::sleep(INTERVAL / 4).await;
    assert_eq!(h.heartbeats(), 1);
    h.snapshot.send_replace(Arc::new(snapshot(4)));
    let result = h.next_probe_result().await;
    assert_eq!(result.epoch, 4);
    assert_eq!(h.heartbeats(), 2);
    // The interval starts again from the epoch's heartbeat.
    tokio::time::sleep(INTERVAL / 2).await;
    assert_eq!(h.heartbeats(), 2);
    assert_eq!(h.next_probe_result().await.epoch, 4);
    assert_eq!(h.heartbeats(), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_a_failing_probe_and_the_worker_goes_on() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut h = start_against(TestServer::start().await, Some(closed)).await;
    for _ in 0..3 {
        let result = h.next_probe_result().await;
        assert_eq!(result.probe, ProbeId::control_plane());
        assert_eq!(result.epoch, 3);
        assert!(!result.passed);
        assert!(
            result.detail.starts_with("heartbeat failed"),
            "{}",
            result.detail
        );
    }
    assert!(!h.task.is_finished());
    let text = h.metrics.render();
    assert!(
        text.contains("fleetnode_agent_requests_total{endpoint=\"heartbeat\",status=\"error\"} 3"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_control_plane_answering_503_never_stops_the_worker() {
    let mut h = start().await;
    {
        let mut r = h.server.lock();
        for _ in 0..20 {
            r.fail_heartbeat.push_back(Failure {
                status: 503,
                code: ErrorCode::Unavailable,
                retry_after: Some(120),
            });
        }
    }
    for _ in 0..20 {
        let result = h.next_probe_result().await;
        assert!(!result.passed);
        assert!(result.detail.contains("HTTP 503"), "{}", result.detail);
        assert!(!h.task.is_finished(), "the worker stopped on a 503");
    }
    let result = h.next_probe_result().await;
    assert!(result.passed, "{result:?}");
    assert_eq!(h.heartbeats(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_holds_the_next_heartbeat_even_for_a_new_epoch() {
    let mut h = start().await;
    h.server.lock().fail_heartbeat.push_back(Failure {
        status: 503,
        code: ErrorCode::Unavailable,
        retry_after: Some(45),
    });
    assert!(!h.next_probe_result().await.passed);
    // Four intervals pass and a new epoch begins: the control plane asked for 45 s.
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.snapshot.send_replace(Arc::new(snapshot(4)));
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(h.heartbeats(), 0, "Retry-After: 45 was not honoured");
    assert!(h.inputs.try_recv().is_err());
    let result = h.next_probe_result().await;
    assert!(result.passed, "{result:?}");
    assert_eq!(result.epoch, 4);
    assert_eq!(h.heartbeats(), 1);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_and_versions_are_retried_at_the_slowest_pace() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    let mut h = start().await;
    for (status, code) in [
        (401, ErrorCode::Unauthorized),
        (426, ErrorCode::ProtocolVersionUnsupported),
    ] {
        h.server.lock().fail_heartbeat.push_back(Failure {
            status,
            code,
            retry_after: None,
        });
    }
    assert!(!h.next_probe_result().await.passed);
    tokio::time::sleep(BACKOFF_CAP - Duration::from_secs(1)).await;
    assert!(h.inputs.try_recv().is_err(), "a 401 retried before the cap");
    assert!(!h.next_probe_result().await.passed);
    tokio::time::sleep(BACKOFF_CAP - Duration::from_secs(1)).await;
    assert!(h.inputs.try_recv().is_err(), "a 426 retried before the cap");
    assert!(h.next_probe_result().await.passed);
    let errors = logs.lines_with("ERROR");
    assert_eq!(errors.len(), 2, "{}", logs.text());
    assert!(errors[0].contains("credentials"), "{}", errors[0]);
    assert!(
        errors[1].contains("protocol major version"),
        "{}",
        errors[1]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_answer_asks_for_a_snapshot_and_counts_as_reaching_the_control_plane() {
    let mut h = start().await;
    h.server.lock().fail_heartbeat.push_back(Failure {
        status: 409,
        code: ErrorCode::ResyncRequired,
        retry_after: None,
    });
    match tokio::time::timeout(Duration::from_secs(60), h.inputs.recv()).await {
        Ok(Some(Input::Resync {
            log_end: 0,
            done: None,
            ..
        })) => {}
        other => panic!("expected a resync, got {other:?}"),
    }
    let result = h.next_probe_result().await;
    assert!(result.passed, "{result:?}");
    assert_eq!(result.detail, "the control plane asked for a snapshot");
    h.stop().await;
}
