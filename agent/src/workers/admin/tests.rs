//! The admin socket and the metrics listener over real HTTP (a Unix socket, loopback TCP), in
//! front of the real runtime (store, event loop, workers) on an in-memory host, talked to with
//! the CLI's own client.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    DesiredState, Directive, DirectiveKind, Event, HealthOverrides, ProbeId, ProbeResult, Report,
    Revision, State, StorePath,
};
use fleetnode_wire::{AgentStatus, PhaseKind};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    AdminContext, Listener, Route, bind_metrics, bind_socket, route, serve_metrics, serve_socket,
};
use crate::cli::{admin_request, request_over};
use crate::clock::Clock;
use crate::config::Config;
use crate::input::Input;
use crate::metrics::Metrics;
use crate::status;
use crate::store::Store;
use crate::testing::{self, Exit, Handles, MemorySystem};

const CURRENT: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system";
const BROKEN: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-broken";

/// Every metric family the agent documents, with its Prometheus type.
const FAMILIES: [(&str, &str); 18] = [
    ("build_info", "gauge"),
    ("phase", "gauge"),
    ("paused", "gauge"),
    ("transitions", "counter"),
    ("refused_inputs", "counter"),
    ("switches", "counter"),
    ("rollbacks", "counter"),
    ("queue_depth", "gauge"),
    ("queue_bytes", "gauge"),
    ("queue_oldest_age_seconds", "gauge"),
    ("queue_compacted", "counter"),
    ("dead_letters", "gauge"),
    ("requests", "counter"),
    ("probe_status", "gauge"),
    ("last_heartbeat_seconds", "gauge"),
    ("worker_status", "gauge"),
    ("worker_restarts", "counter"),
    ("store_errors", "counter"),
];

/// An offline agent (no control-plane workers): its own admin socket, and a metrics listener
/// on a loopback port the test learns.
struct Running {
    socket: std::path::PathBuf,
    metrics: std::net::SocketAddr,
    handles: Handles,
    system: Arc<MemorySystem>,
    state_dir: std::path::PathBuf,
    cancel: CancellationToken,
    agent: tokio::task::JoinHandle<Exit>,
    listener: tokio::task::JoinHandle<Result<(), crate::input::WorkerError>>,
    _dir: tempfile::TempDir,
}

async fn start(metrics_enabled: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let socket = dir.path().join("run").join("admin.sock");
    let text = format!(
        "control_plane_url = \"https://cp.invalid\"\nhost_id = \"web-01\"\ntoken_file = \"/nonexistent\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nmetrics = {metrics_enabled}\nsocket = \"{}\"\n",
        state_dir.display(),
        socket.display()
    );
    let config = Config::parse(&text).unwrap();
    let system = Arc::new(MemorySystem::running(
        Some(StorePath::parse(CURRENT).unwrap()),
        "boot-1",
    ));
    let cancel = CancellationToken::new();
    let started = testing::start_offline(config.clone(), system.clone(), cancel.clone())
        .await
        .unwrap()
        .expect("the agent did not get ready");
    let handles = started.handles();
    let agent = tokio::spawn(started.run(None));
    // The runtime binds its own socket (at the configured path) and its own metrics listener
    // on a port nobody learns; a second metrics listener with the same context as the
    // runtime's own is on a port we can learn.
    let ctx = AdminContext {
        inputs: handles.inputs.clone(),
        status: handles.status.clone(),
        metrics: handles.metrics.clone(),
        clock: Clock::anchored(fleetnode_state_machine::Timestamp(0)),
    };
    let listener = bind_metrics(config.admin_listen).await.unwrap();
    let metrics = listener.local_addr().unwrap();
    assert!(metrics.ip().is_loopback());
    let listener = tokio::spawn(serve_metrics(listener, ctx, cancel.clone()));
    tokio::time::timeout(Duration::from_secs(60), async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the runtime did not bind its admin socket");
    Running {
        socket,
        metrics,
        handles,
        system,
        state_dir,
        cancel,
        agent,
        listener,
        _dir: dir,
    }
}

impl Running {
    /// A request on the agent's admin socket.
    async fn request(&self, method: &str, path: &str) -> (u16, String) {
        let (status, body) = admin_request(&self.socket, method, path).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    /// A request on the metrics listener.
    async fn scrape(&self, method: &str, path: &str) -> (u16, String) {
        let stream = tokio::net::TcpStream::connect(self.metrics).await.unwrap();
        let (status, body) = request_over(stream, method, path).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    async fn json(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, body) = self.request(method, path).await;
        let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, value)
    }

    fn workers(&self) -> Vec<String> {
        let workers = self.handles.workers.list();
        workers.into_iter().map(|w| w.name).collect()
    }

    /// Stops the agent and the listener; returns the reports the store kept.
    async fn stop(self) -> Vec<Report> {
        self.cancel.cancel();
        assert_eq!(self.agent.await.unwrap(), Exit::Stopped);
        assert_eq!(self.listener.await.unwrap(), Ok(()));
        let opened = Store::open(&self.state_dir).unwrap();
        let reader = opened.store.reader();
        reader
            .batch_after(0, 1_000, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.report)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn status_is_the_event_loops_status_as_json() {
    let running = start(true).await;
    let (status, value) = running.json("GET", "/status").await;
    assert_eq!(status, 200, "{value}");
    let snapshot = running.handles.status.borrow().clone();
    let typed: AgentStatus = fleetnode_wire::decode(value.to_string().as_bytes()).unwrap();
    assert_eq!(typed.phase, snapshot.phase);
    assert_eq!(value["phase"], snapshot.phase.name());
    assert_eq!(value["paused"], false);
    assert_eq!(value["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(value["last_seq"], snapshot.last_seq);
    assert_eq!(value["system"]["current"], CURRENT);
    assert_eq!(value["queue"]["depth"], snapshot.queue.depth);
    let workers: Vec<&str> = value["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(workers.contains(&"activation"), "{workers:?}");
    assert!(workers.contains(&"probes"), "{workers:?}");
    assert!(workers.contains(&"admin"), "{workers:?}");
    assert!(workers.contains(&"metrics"), "{workers:?}");
    assert!(
        !workers.contains(&"ticker"),
        "deadlines are the event loop's own: {workers:?}"
    );
    running.stop().await;
}

/// Gives every metric family samples through the paths that feed them: a refused input, a
/// failed activation and its rollback, a request to a control plane.
async fn exercise(running: &Running) {
    let stale = ProbeResult {
        probe: ProbeId::control_plane(),
        epoch: 999,
        passed: true,
        detail: "from another epoch".into(),
    };
    let inputs = &running.handles.inputs;
    inputs
        .send(Input::Event(Event::ProbeResult(stale)))
        .await
        .unwrap();
    let broken = StorePath::parse(BROKEN).unwrap();
    running.system.fail_switch(broken.clone(), 1);
    let directive = Directive {
        revision: Revision(1),
        kind: DirectiveKind::Activate {
            target: broken,
            mode: None,
            health: HealthOverrides::default(),
        },
    };
    let desired = DesiredState {
        revision: directive.revision,
        directive: Some(directive),
        paused: false,
    };
    inputs
        .send(Input::Event(Event::DesiredObserved(desired)))
        .await
        .unwrap();
    let mut snapshot = running.handles.status.clone();
    tokio::time::timeout(
        Duration::from_secs(3600),
        snapshot.wait_for(|s| s.phase == PhaseKind::Reverted),
    )
    .await
    .expect("the failed activation was not rolled back")
    .unwrap();

    let server = crate::workers::control::testserver::TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = crate::workers::control::Client::new(
        &server.config(dir.path()),
        running.handles.metrics.clone(),
    )
    .unwrap();
    let events = fleetnode_wire::EventBatch {
        stream: 1,
        events: Vec::new(),
    };
    // Whatever the answer, the request is counted.
    let _ = client.post_events(&events).await;
}

#[tokio::test(start_paused = true)]
async fn metrics_show_every_documented_family() {
    let running = start(true).await;
    exercise(&running).await;
    let (status, text) = running.scrape("GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    for (name, kind) in FAMILIES {
        let line = format!("# TYPE fleetnode_agent_{name} {kind}");
        assert!(text.contains(&line), "no {line:?} in\n{text}");
    }
    let version = format!(
        "fleetnode_agent_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "{text}");
    let phase = running.handles.status.borrow().phase;
    assert!(
        text.contains(&format!("fleetnode_agent_phase{{phase=\"{phase}\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains("fleetnode_agent_probe_status{probe=\"control-plane\"} -1"),
        "{text}"
    );
    assert!(
        text.contains("fleetnode_agent_worker_status{worker=\"activation\",status=\"running\"} 1")
            || text
                .contains("fleetnode_agent_worker_status{worker=\"activation\",status=\"idle\"} 1"),
        "{text}"
    );
    for sample in [
        "fleetnode_agent_refused_inputs_total{kind=\"stale-probe-result\"} 1",
        "fleetnode_agent_switches_total{purpose=\"activate\",outcome=\"failed\"} 1",
        "fleetnode_agent_switches_total{purpose=\"rollback\",outcome=\"succeeded\"} 1",
        "fleetnode_agent_worker_restarts_total{worker=\"activation\"} 0",
    ] {
        assert!(text.contains(sample), "no {sample:?} in\n{text}");
    }
    assert!(
        text.contains("fleetnode_agent_rollbacks_total{reason="),
        "{text}"
    );
    assert!(
        text.contains("fleetnode_agent_requests_total{endpoint=\"events\",status="),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_are_absent_when_turned_off() {
    let running = start(false).await;
    // No metrics worker, so nothing listens on TCP; the socket still answers.
    let workers = running.workers();
    assert!(workers.contains(&"admin".to_owned()), "{workers:?}");
    assert!(!workers.contains(&"metrics".to_owned()), "{workers:?}");
    let (status, _) = running.json("GET", "/status").await;
    assert_eq!(status, 200);
    // The socket does not serve metrics either.
    let (status, _) = running.json("GET", "/metrics").await;
    assert_eq!(status, 404);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn tcp_serves_metrics_and_nothing_a_local_user_should_not_see() {
    let running = start(true).await;
    for (method, path) in [("GET", "/status"), ("POST", "/pause"), ("POST", "/resume")] {
        let (status, body) = running.scrape(method, path).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body.contains("admin socket"), "{body}");
        assert!(!body.contains(CURRENT), "{body}");
    }
    let (status, _) = running.scrape("POST", "/metrics").await;
    assert_eq!(status, 405);
    assert!(!running.handles.status.borrow().paused);
    running.stop().await;
}

#[test]
fn routes_depend_on_the_listener() {
    use hyper::Method;
    let cases = [
        (Listener::Socket, Method::GET, "/status", Route::Status),
        (Listener::Socket, Method::POST, "/pause", Route::Pause),
        (Listener::Socket, Method::POST, "/resume", Route::Resume),
        (
            Listener::Socket,
            Method::GET,
            "/pause",
            Route::WrongMethod("POST"),
        ),
        (
            Listener::Socket,
            Method::POST,
            "/status",
            Route::WrongMethod("GET"),
        ),
        (Listener::Socket, Method::GET, "/metrics", Route::NotFound),
        (Listener::Metrics, Method::GET, "/metrics", Route::Metrics),
        (
            Listener::Metrics,
            Method::DELETE,
            "/metrics",
            Route::WrongMethod("GET"),
        ),
        (Listener::Metrics, Method::GET, "/status", Route::SocketOnly),
        (Listener::Metrics, Method::POST, "/pause", Route::SocketOnly),
        (
            Listener::Metrics,
            Method::POST,
            "/resume",
            Route::SocketOnly,
        ),
        (Listener::Metrics, Method::GET, "/", Route::NotFound),
    ];
    for (listener, method, path, expected) in cases {
        assert_eq!(
            route(listener, &method, path),
            expected,
            "{listener:?} {method} {path}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_go_through_the_event_loop() {
    let running = start(true).await;
    let (status, value) = running.json("POST", "/pause").await;
    assert_eq!(
        (status, &value),
        (200, &serde_json::json!({ "paused": true }))
    );
    assert!(running.handles.status.borrow().paused);
    let (_, value) = running.json("GET", "/status").await;
    assert_eq!(value["paused"], true);
    let (_, metrics) = running.scrape("GET", "/metrics").await;
    assert!(metrics.contains("fleetnode_agent_paused 1"), "{metrics}");
    assert!(
        metrics.contains("fleetnode_agent_transitions_total{report=\"paused\"} 1"),
        "{metrics}"
    );

    let (status, value) = running.json("POST", "/resume").await;
    assert_eq!(
        (status, &value),
        (200, &serde_json::json!({ "paused": false }))
    );
    assert!(!running.handles.status.borrow().paused);
    // A GET is not a pause.
    let (status, _) = running.request("GET", "/pause").await;
    assert_eq!(status, 405);

    let reports = running.stop().await;
    let holds: Vec<&Report> = reports
        .iter()
        .filter(|r| matches!(r, Report::Paused | Report::Resumed))
        .collect();
    assert_eq!(holds, vec![&Report::Paused, &Report::Resumed]);
}

/// An admin socket in front of a channel the test reads, to see the exact inputs.
async fn listener_with_inputs(
    paused: bool,
) -> (
    Socket,
    mpsc::Receiver<Input>,
    watch::Sender<Arc<AgentStatus>>,
) {
    let mut state = State::default();
    state.host.paused = paused;
    let snapshot = status_of(&state);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(snapshot));
    let (inputs_tx, inputs) = mpsc::channel(4);
    let ctx = AdminContext {
        inputs: inputs_tx,
        status: snapshot_rx,
        metrics: Arc::new(Metrics::new()),
        clock: Clock::anchored(fleetnode_state_machine::Timestamp(0)),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = bind_socket(&path, None).unwrap();
    tokio::spawn(serve_socket(listener, ctx, CancellationToken::new()));
    (Socket { path, _dir: dir }, inputs, snapshot_tx)
}

/// A socket path and the directory that holds it.
struct Socket {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

#[tokio::test(start_paused = true)]
async fn pause_and_resume_are_sent_as_their_events() {
    for (path, expected, paused_before) in [
        ("/pause", Event::PauseRequested, false),
        ("/resume", Event::ResumeRequested, true),
    ] {
        let (socket, mut inputs, snapshot) = listener_with_inputs(paused_before).await;
        let event_loop = tokio::spawn(async move {
            let input = inputs.recv().await.unwrap();
            snapshot.send_modify(|s| {
                let mut next = (**s).clone();
                next.paused = !paused_before;
                *s = Arc::new(next);
            });
            (input, inputs)
        });
        let (status, body) = admin_request(&socket.path, "POST", path).await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let (input, mut inputs) = event_loop.await.unwrap();
        match input {
            Input::Event(event) => assert_eq!(event, expected),
            other => panic!("{path} sent {other:?}"),
        }
        assert!(
            inputs.try_recv().is_err(),
            "{path} sent more than one input"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_hold_the_event_loop_has_not_shown_yet_is_accepted_not_confirmed() {
    let (socket, mut inputs, _snapshot) = listener_with_inputs(false).await;
    let (status, body) = admin_request(&socket.path, "POST", "/pause").await.unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 202, "{value}");
    assert_eq!(
        value,
        serde_json::json!({ "paused": false, "requested": true })
    );
    assert!(matches!(
        inputs.recv().await,
        Some(Input::Event(Event::PauseRequested))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_event_loop_shows_as_503() {
    let (socket, inputs, _snapshot) = listener_with_inputs(false).await;
    // The loop takes the status request but never answers it.
    let (status, body) = admin_request(&socket.path, "GET", "/status").await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // A loop that is gone takes nothing.
    drop(inputs);
    for (method, path) in [("GET", "/status"), ("POST", "/pause"), ("POST", "/resume")] {
        let (status, body) = admin_request(&socket.path, method, path).await.unwrap();
        assert_eq!(status, 503, "{path}: {}", String::from_utf8_lossy(&body));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            value["error"].as_str().unwrap().contains("event loop"),
            "{value}"
        );
    }
}

#[tokio::test]
async fn non_loopback_addresses_are_refused() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.10:9731", "10.0.0.1:0"] {
        let addr = addr.parse().unwrap();
        let error = bind_metrics(addr).await.unwrap_err();
        assert!(
            error.to_string().contains("not a loopback address"),
            "{addr}: {error}"
        );
        assert!(
            error.to_string().contains("admin.listen"),
            "{addr}: {error}"
        );
    }
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        // [::1] may be missing where IPv6 is off; only the loopback check matters here.
        match bind_metrics(addr.parse().unwrap()).await {
            Ok(listener) => assert!(listener.local_addr().unwrap().ip().is_loopback()),
            Err(e) => assert!(
                !e.to_string().contains("not a loopback address"),
                "{addr}: {e}"
            ),
        }
    }
}

fn status_of(state: &State) -> AgentStatus {
    status::build(
        state,
        1,
        Default::default(),
        &Default::default(),
        Vec::new(),
        fleetnode_state_machine::Timestamp(0),
    )
}
