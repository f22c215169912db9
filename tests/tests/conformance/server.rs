//! A small control plane written from `docs/protocol.md` alone (it shares only the wire types
//! with the agent, never `fleetnode-cp`): the three agent endpoints over real TLS on a loopback
//! port, with answers a test can script and a record of everything the agent sent.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetnode_wire::{
    AgentStatus, ErrorBody, ErrorCode, EventAck, EventBatch, GapCause, HeartbeatAck, OutboundEvent,
    PROTOCOL_HEADER, Report, Revision, decode, encode,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// An answer the test wrote for the next request of an endpoint.
#[derive(Debug, Clone)]
pub struct Scripted {
    /// The HTTP status.
    pub status: u16,
    /// An error body with this code, when set.
    pub code: Option<ErrorCode>,
    /// The body's `retry_after_secs`.
    pub body_retry: Option<u64>,
    /// The `Retry-After` header, as sent.
    pub header_retry: Option<&'static str>,
}

impl Scripted {
    /// An error answer with a fleetnode body.
    pub fn error(status: u16, code: ErrorCode) -> Self {
        Self {
            status,
            code: Some(code),
            body_retry: None,
            header_retry: None,
        }
    }
}

/// What the next event batch gets.
#[derive(Debug, Clone)]
pub enum EventsAnswer {
    /// An error.
    Fail(Scripted),
    /// This `acked_through`; below the batch's first seq nothing is stored.
    Ack(u64),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `desired`, `events` or `heartbeat`.
    pub endpoint: &'static str,
    /// When it arrived.
    pub at: Instant,
    /// Its `fleetnode-protocol` header.
    pub version: Option<String>,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
}

/// The script and the record.
#[derive(Debug)]
pub struct Script {
    /// The desired state served, as raw JSON (so a test can leave `directive` out).
    pub desired: Value,
    /// Answer polls at once instead of holding them.
    pub answer_at_once: bool,
    /// Say `changed: true` even when the revision is the one the agent knows.
    pub claim_changed: bool,
    /// The version header of every answer (`None`: no header).
    pub version: Option<&'static str>,
    /// The version header of long-poll answers only, instead of `version`.
    pub desired_version: Option<&'static str>,
    /// Scripted answers, per endpoint.
    pub desired_answers: VecDeque<Scripted>,
    pub events_answers: VecDeque<EventsAnswer>,
    pub heartbeat_answers: VecDeque<Scripted>,
    /// Seqs refused with 422 `invalid` whenever a batch holds them (unless as a gap).
    pub poison: BTreeSet<u64>,
    /// Every request.
    pub seen: Vec<Seen>,
    /// Every batch received, with its seqs.
    pub batches: Vec<Vec<u64>>,
    /// Every heartbeat received.
    pub heartbeats: Vec<(Instant, AgentStatus)>,
    /// The stream's events stored, gap-free from seq 1.
    pub log: Vec<OutboundEvent>,
}

impl Script {
    /// Every request to `endpoint`.
    pub fn seen(&self, endpoint: &str) -> Vec<Seen> {
        self.seen
            .iter()
            .filter(|s| s.endpoint == endpoint)
            .cloned()
            .collect()
    }

    fn revision(&self) -> u64 {
        self.desired["revision"].as_u64().unwrap_or(0)
    }

    /// The highest seq stored.
    pub fn acked(&self) -> u64 {
        self.log.last().map_or(0, |e| e.seq)
    }
}

/// The running server.
#[derive(Clone)]
pub struct ScriptedServer {
    /// Where it listens.
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    changed: Arc<Notify>,
}

impl ScriptedServer {
    /// Serves HTTPS with `cert` and `key` on a free loopback port, from the current runtime.
    pub async fn start(cert: &Path, key: &Path) -> Self {
        let certs = fleetnode_tls::read_certs(cert).unwrap();
        let key = fleetnode_tls::read_private_key(key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = Self {
            addr: listener.local_addr().unwrap(),
            script: Arc::new(Mutex::new(Script {
                desired: json!({"revision": 1, "paused": false}),
                answer_at_once: false,
                claim_changed: false,
                version: Some("1.0"),
                desired_version: None,
                desired_answers: VecDeque::new(),
                events_answers: VecDeque::new(),
                heartbeat_answers: VecDeque::new(),
                poison: BTreeSet::new(),
                seen: Vec::new(),
                batches: Vec::new(),
                heartbeats: Vec::new(),
                log: Vec::new(),
            })),
            changed: Arc::new(Notify::new()),
        };
        let app = Router::new()
            .route("/v1/agent/hosts/{host}/desired", get(desired))
            .route("/v1/agent/hosts/{host}/events", post(events))
            .route("/v1/agent/hosts/{host}/heartbeat", post(heartbeat))
            .with_state(server.clone());
        fleetnode_tests::tls_server::spawn(listener, Arc::new(tls), app).unwrap();
        server
    }

    /// The script, to read or change.
    pub fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    /// Replaces the desired state (its revision must be new) and wakes waiting polls.
    pub fn set_desired(&self, desired: Value) {
        self.lock().desired = desired;
        self.changed.notify_waiters();
    }

    fn record(&self, endpoint: &'static str, headers: &HeaderMap) {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let seen = Seen {
            endpoint,
            at: Instant::now(),
            version: text(PROTOCOL_HEADER),
            authorization: text("authorization"),
        };
        self.lock().seen.push(seen);
    }

    fn answer(&self, status: StatusCode, body: Vec<u8>) -> Response {
        let version = self.lock().version;
        self.answer_as(status, body, version)
    }

    fn answer_as(
        &self,
        status: StatusCode,
        body: Vec<u8>,
        version: Option<&'static str>,
    ) -> Response {
        let mut response = (status, body).into_response();
        if let Some(version) = version {
            response
                .headers_mut()
                .insert(PROTOCOL_HEADER, HeaderValue::from_static(version));
        }
        response
    }

    fn scripted(&self, scripted: Scripted) -> Response {
        let body = scripted.code.map(|code| {
            let mut body = ErrorBody::new(code, "scripted by the conformance test");
            body.retry_after_secs = scripted.body_retry;
            encode(&body)
        });
        let status = StatusCode::from_u16(scripted.status).unwrap();
        let mut response = self.answer(status, body.unwrap_or_default());
        if let Some(value) = scripted.header_retry {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static(value));
        }
        response
    }
}

#[derive(Deserialize)]
struct Poll {
    known: Option<u64>,
    wait: Option<u64>,
}

async fn desired(
    State(server): State<ScriptedServer>,
    headers: HeaderMap,
    Query(poll): Query<Poll>,
) -> Response {
    server.record("desired", &headers);
    let notified = server.changed.notified();
    let (hold, scripted) = {
        let mut s = server.lock();
        let scripted = s.desired_answers.pop_front();
        (
            poll.known == Some(s.revision()) && !s.answer_at_once,
            scripted,
        )
    };
    if let Some(scripted) = scripted {
        return server.scripted(scripted);
    }
    if hold {
        // The documented clamp: never more than 300 s.
        let wait = Duration::from_secs(poll.wait.unwrap_or(30).min(300));
        let _ = tokio::time::timeout(wait, notified).await;
    }
    let (answer, version) = {
        let s = server.lock();
        let changed = poll.known != Some(s.revision()) || s.claim_changed;
        let answer = json!({"changed": changed, "desired": s.desired});
        (answer, s.desired_version.or(s.version))
    };
    server.answer_as(
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap(),
        version,
    )
}

async fn events(State(server): State<ScriptedServer>, headers: HeaderMap, body: Bytes) -> Response {
    server.record("events", &headers);
    let Ok(batch) = decode::<EventBatch>(&body) else {
        return server.scripted(Scripted::error(400, ErrorCode::Malformed));
    };
    let answer = {
        let mut s = server.lock();
        s.batches.push(batch.events.iter().map(|e| e.seq).collect());
        s.events_answers.pop_front()
    };
    let first = batch.events.first().map_or(0, |e| e.seq);
    let ack = match answer {
        Some(EventsAnswer::Fail(scripted)) => return server.scripted(scripted),
        Some(EventsAnswer::Ack(ack)) if ack < first => ack,
        Some(EventsAnswer::Ack(ack)) => {
            store(&mut server.lock(), &batch);
            ack
        }
        None => {
            let poisoned = {
                let s = server.lock();
                batch
                    .events
                    .iter()
                    .any(|e| s.poison.contains(&e.seq) && !matches!(e.report, Report::Gap { .. }))
            };
            if poisoned {
                return server.scripted(Scripted::error(422, ErrorCode::Invalid));
            }
            let mut s = server.lock();
            store(&mut s, &batch);
            s.acked()
        }
    };
    let body = encode(&EventAck { acked_through: ack });
    server.answer(StatusCode::OK, body)
}

/// Stores the events that continue the log: seq `acked + 1`, a gap whose range starts at or
/// before it (both ends inclusive), or a snapshot (it covers every seq before its own).
fn store(script: &mut Script, batch: &EventBatch) {
    for event in &batch.events {
        let next = script.acked() + 1;
        let first = match &event.report {
            Report::Gap { from_seq, .. } => *from_seq,
            Report::Snapshot { .. } => 1,
            _ => event.seq,
        };
        if event.seq >= next && first <= next {
            script.log.push(event.clone());
        }
    }
}

async fn heartbeat(
    State(server): State<ScriptedServer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    server.record("heartbeat", &headers);
    let Ok(status) = decode::<AgentStatus>(&body) else {
        return server.scripted(Scripted::error(400, ErrorCode::Malformed));
    };
    let scripted = {
        let mut s = server.lock();
        s.heartbeats.push((Instant::now(), status));
        s.heartbeat_answers.pop_front()
    };
    if let Some(scripted) = scripted {
        return server.scripted(scripted);
    }
    let revision = Revision(server.lock().revision());
    server.answer(
        StatusCode::OK,
        encode(&HeartbeatAck {
            desired_revision: revision,
        }),
    )
}

/// Whether a stored event is the gap that stands for a dead letter with `code`.
pub fn is_dead_letter_gap(event: &OutboundEvent, code: &str) -> bool {
    matches!(&event.report, Report::Gap { cause: GapCause::DeadLettered { code: c }, from_seq }
        if c == code && *from_seq == event.seq)
}
