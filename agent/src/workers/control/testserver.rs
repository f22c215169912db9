//! A small control plane for the client's tests: real HTTP, or real HTTPS (rustls through
//! axum-server), on a loopback port, with the agent endpoints, scripted failures and a record of
//! what it received.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetnode_state_machine::{OutboundEvent, Revision};
use fleetnode_wire::{
    AgentStatus, DesiredAnswer, DesiredState, ErrorBody, ErrorCode, EventAck, EventBatch,
    HeartbeatAck, PROTOCOL_HEADER, decode, encode,
};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::config::Config;

/// A scripted answer to the next request of an endpoint.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub code: ErrorCode,
    pub retry_after: Option<u64>,
}

#[derive(Debug)]
pub struct Recorded {
    pub desired: DesiredState,
    /// `known` of each long-poll received.
    pub polls: Vec<Option<u64>>,
    /// When each long-poll arrived (tokio's clock, paused in tests).
    pub poll_times: Vec<tokio::time::Instant>,
    /// Answer every long-poll at once instead of holding it (a misbehaving server).
    pub answer_at_once: bool,
    /// The version header long-poll answers carry (none when `None`).
    pub answer_version: Option<&'static str>,
    /// Say `changed: true` in every answer, also when the revision is the one the agent knows.
    pub claim_changed: bool,
    /// The control plane's log ends at this seq: a batch that does not begin with a snapshot
    /// (or with the next seq) is answered `resync_required`.
    pub resync_at: Option<u64>,
    /// Answer `resync_required` to batches that begin with a snapshot too (a broken server).
    pub resync_snapshots_too: bool,
    /// Scripted acknowledgements, answered instead of the real one: one below the batch's
    /// first seq stores nothing (a server that misses earlier events), any other stores the
    /// batch first.
    pub acks: VecDeque<u64>,
    /// Every event applied, in order (duplicates ignored).
    pub events: Vec<OutboundEvent>,
    /// Sizes of every batch received (accepted or not).
    pub batches: Vec<Vec<u64>>,
    pub heartbeats: Vec<AgentStatus>,
    pub acked_through: u64,
    /// Seqs refused with 422 whenever they are in a batch.
    pub poison: BTreeSet<u64>,
    pub fail_events: VecDeque<Failure>,
    pub fail_desired: VecDeque<Failure>,
    pub fail_heartbeat: VecDeque<Failure>,
    /// Authorization headers seen.
    pub tokens: BTreeSet<String>,
    pub missing_protocol_header: bool,
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            desired: DesiredState {
                revision: Revision(1),
                directive: None,
                paused: false,
            },
            polls: Vec::new(),
            poll_times: Vec::new(),
            answer_version: None,
            answer_at_once: false,
            claim_changed: false,
            acks: VecDeque::new(),
            resync_at: None,
            resync_snapshots_too: false,
            events: Vec::new(),
            batches: Vec::new(),
            heartbeats: Vec::new(),
            acked_through: 0,
            poison: BTreeSet::new(),
            fail_events: VecDeque::new(),
            fail_desired: VecDeque::new(),
            fail_heartbeat: VecDeque::new(),
            tokens: BTreeSet::new(),
            missing_protocol_header: false,
        }
    }
}

#[derive(Clone)]
pub struct TestServer {
    pub addr: SocketAddr,
    /// `https` when started with [`TestServer::start_tls`].
    pub scheme: &'static str,
    pub recorded: Arc<Mutex<Recorded>>,
    pub changed: Arc<Notify>,
}

impl TestServer {
    /// Plain HTTP.
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Self::new(listener.local_addr().unwrap(), "http");
        let app = server.app();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }

    /// HTTPS with the given rustls server configuration (which decides about client
    /// certificates and protocol versions).
    pub async fn start_tls(tls: rustls::ServerConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Self::new(listener.local_addr().unwrap(), "https");
        let app = server.app();
        listener.set_nonblocking(true).unwrap();
        let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
        let serving = axum_server::tls_rustls::from_tcp_rustls(listener, config).unwrap();
        tokio::spawn(async move { serving.serve(app.into_make_service()).await.unwrap() });
        server
    }

    fn new(addr: SocketAddr, scheme: &'static str) -> Self {
        Self {
            addr,
            scheme,
            recorded: Arc::new(Mutex::new(Recorded::default())),
            changed: Arc::new(Notify::new()),
        }
    }

    fn app(&self) -> Router {
        Router::new()
            .route("/v1/agent/hosts/{host}/desired", get(desired))
            .route("/v1/agent/hosts/{host}/events", post(events))
            .route("/v1/agent/hosts/{host}/heartbeat", post(heartbeat))
            .with_state(self.clone())
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap()
    }

    /// Changes the desired state and wakes waiting long-polls.
    pub fn set_desired(&self, f: impl FnOnce(&mut DesiredState)) {
        let mut r = self.lock();
        f(&mut r.desired);
        r.desired.revision = Revision(r.desired.revision.0 + 1);
        drop(r);
        self.changed.notify_waiters();
    }

    /// An agent configuration pointing at this server, with a token file in `dir` (and, for
    /// plain HTTP, a CA file the client never needs).
    pub fn config(&self, dir: &std::path::Path) -> Config {
        let tls = format!("ca_file = \"{}\"\n", write_dummy_ca(dir).display());
        self.config_with_tls(dir, &tls)
    }

    /// An agent configuration pointing at this server, with `tls` as its `[tls]` section.
    pub fn config_with_tls(&self, dir: &std::path::Path, tls: &str) -> Config {
        let token = dir.join("token");
        std::fs::write(&token, "s3cret-token\n").unwrap();
        let text = format!(
            "control_plane_url = \"{}://{}\"\nhost_id = \"web-01\"\ntoken_file = \"{}\"\nallow_insecure_http = {}\nstate_dir = \"{}\"\n[tls]\n{tls}",
            self.scheme,
            self.addr,
            token.display(),
            self.scheme == "http",
            dir.join("state").display(),
        );
        Config::parse(&text).unwrap()
    }
}

/// A CA file, needed to build the TLS configuration even for plain-http tests.
fn write_dummy_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["ca.test".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

fn failure(f: Failure) -> Response {
    let mut body = ErrorBody::new(f.code, "scripted failure");
    body.retry_after_secs = f.retry_after;
    let mut response = (StatusCode::from_u16(f.status).unwrap(), encode(&body)).into_response();
    if let Some(secs) = f.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
    }
    response
}

fn check(server: &TestServer, headers: &HeaderMap) {
    let mut r = server.lock();
    if let Some(auth) = headers.get("authorization") {
        r.tokens.insert(auth.to_str().unwrap().to_owned());
    }
    if headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok())
        != Some(fleetnode_wire::protocol_version().as_str())
    {
        r.missing_protocol_header = true;
    }
}

#[derive(Deserialize)]
struct Poll {
    known: Option<u64>,
    wait: Option<u64>,
}

async fn desired(
    State(server): State<TestServer>,
    headers: HeaderMap,
    Query(poll): Query<Poll>,
) -> Response {
    let version = server.lock().answer_version;
    let mut response = desired_answer(server, headers, poll).await;
    if let Some(version) = version {
        response
            .headers_mut()
            .insert(PROTOCOL_HEADER, version.parse().unwrap());
    }
    response
}

async fn desired_answer(server: TestServer, headers: HeaderMap, poll: Poll) -> Response {
    check(&server, &headers);
    let notified = server.changed.notified();
    {
        let mut r = server.lock();
        r.polls.push(poll.known);
        r.poll_times.push(tokio::time::Instant::now());
        if let Some(f) = r.fail_desired.pop_front() {
            return failure(f);
        }
        if poll.known != Some(r.desired.revision.0) || r.answer_at_once {
            let answer = DesiredAnswer {
                changed: r.claim_changed || poll.known != Some(r.desired.revision.0),
                desired: r.desired.clone(),
            };
            return encode(&answer).into_response();
        }
    }
    let wait = Duration::from_secs(poll.wait.unwrap_or(30));
    let _ = tokio::time::timeout(wait, notified).await;
    let r = server.lock();
    let answer = DesiredAnswer {
        changed: poll.known != Some(r.desired.revision.0),
        desired: r.desired.clone(),
    };
    encode(&answer).into_response()
}

async fn events(State(server): State<TestServer>, headers: HeaderMap, body: Bytes) -> Response {
    check(&server, &headers);
    let batch: EventBatch = match decode(&body) {
        Ok(batch) => batch,
        Err(e) => {
            return failure_with(StatusCode::BAD_REQUEST, ErrorCode::Malformed, e.to_string());
        }
    };
    let mut r = server.lock();
    r.batches.push(batch.events.iter().map(|e| e.seq).collect());
    if let Some(f) = r.fail_events.pop_front() {
        return failure(f);
    }
    let poisoned = |e: &&OutboundEvent| {
        r.poison.contains(&e.seq)
            && !matches!(e.report, fleetnode_state_machine::Report::Gap { .. })
    };
    if let Some(seq) = batch.events.iter().find(poisoned) {
        let mut body = ErrorBody::new(ErrorCode::Invalid, "poisoned event");
        body.seq = Some(seq.seq);
        return (StatusCode::UNPROCESSABLE_ENTITY, encode(&body)).into_response();
    }
    if let Some(log_end) = r.resync_at {
        let first = &batch.events[0];
        let snapshot = matches!(
            first.report,
            fleetnode_state_machine::Report::Snapshot { .. }
        );
        if (!snapshot || r.resync_snapshots_too) && first.seq > log_end + 1 {
            let mut body = ErrorBody::new(ErrorCode::ResyncRequired, "scripted resync");
            body.seq = Some(log_end);
            return (StatusCode::CONFLICT, encode(&body)).into_response();
        }
        if snapshot {
            r.resync_at = None;
        }
    }
    let scripted = r.acks.pop_front();
    let first = batch.events.first().map_or(0, |e| e.seq);
    if let Some(ack) = scripted.filter(|ack| *ack < first) {
        return encode(&EventAck { acked_through: ack }).into_response();
    }
    for event in batch.events {
        if event.seq > r.acked_through {
            r.acked_through = event.seq;
            r.events.push(event);
        }
    }
    let acked_through = scripted.unwrap_or(r.acked_through);
    encode(&EventAck { acked_through }).into_response()
}

fn failure_with(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, encode(&ErrorBody::new(code, message))).into_response()
}

async fn heartbeat(State(server): State<TestServer>, headers: HeaderMap, body: Bytes) -> Response {
    check(&server, &headers);
    let mut r = server.lock();
    if let Some(f) = r.fail_heartbeat.pop_front() {
        return failure(f);
    }
    match decode::<AgentStatus>(&body) {
        Ok(hb) => r.heartbeats.push(hb),
        Err(e) => {
            return failure_with(StatusCode::BAD_REQUEST, ErrorCode::Malformed, e.to_string());
        }
    }
    encode(&HeartbeatAck {
        desired_revision: r.desired.revision,
    })
    .into_response()
}
