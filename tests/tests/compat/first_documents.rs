//! A control plane written from the first 1.0 documents (`docs/protocol.md` and the `Heartbeat`
//! type as first published) against the heartbeat the current agent sends.
//!
//! Those documents named the heartbeat's time `sent_at` and the queue's age `oldest_age_ms`;
//! protocol 1.0 as released renamed the first to `at` and replaced the second by
//! `queue.oldest_at`, so such a control plane refused every heartbeat of a 1.0 agent ("missing
//! sent_at"). Since 1.1 the agent writes both names. [`FirstDocumentsHeartbeat`] is frozen: it
//! is that control plane's reader, field for field, and is never edited.

use fleetnode_wire::{AgentStatus, Timestamp, decode, encode};
use serde::Deserialize;

use crate::frozen::of;

/// The heartbeat as the first 1.0 documents define it: what is required there is required
/// here, what was optional has a default. Unknown fields are ignored, as they said.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Fields are read by the parse, some only by it.
struct FirstDocumentsHeartbeat {
    agent_version: String,
    sent_at: u64,
    phase: String,
    paused: bool,
    #[serde(default)]
    handled_revision: Option<u64>,
    #[serde(default)]
    desired_revision: Option<u64>,
    #[serde(default)]
    target: Option<String>,
    system: FirstDocumentsSystem,
    stream: u64,
    last_seq: u64,
    queue: FirstDocumentsQueue,
    #[serde(default)]
    probes: Vec<FirstDocumentsProbe>,
    #[serde(default)]
    workers: Vec<FirstDocumentsWorker>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct FirstDocumentsSystem {
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    booted: Option<String>,
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct FirstDocumentsQueue {
    depth: u64,
    bytes: u64,
    #[serde(default)]
    oldest_age_ms: Option<u64>,
    dead_letters: u64,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct FirstDocumentsProbe {
    probe: String,
    mode: String,
    #[serde(default)]
    passing: Option<bool>,
    #[serde(default)]
    detail: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct FirstDocumentsWorker {
    name: String,
    status: String,
    #[serde(default)]
    restarts: u64,
    #[serde(default)]
    last_error: Option<String>,
}

/// Every heartbeat the current agent would send for the frozen statuses: the frozen status read
/// by the current type and written as the agent writes it.
fn current_heartbeats() -> Vec<(String, AgentStatus, Vec<u8>)> {
    of("agent")
        .into_iter()
        .filter(|e| e.stem.starts_with("agent-status"))
        .map(|e| {
            let status: AgentStatus = decode(&e.bytes).unwrap();
            let sent = encode(&status);
            (e.name(), status, sent)
        })
        .collect()
}

#[test]
fn a_control_plane_written_from_the_first_documents_reads_the_current_agents_heartbeat() {
    let heartbeats = current_heartbeats();
    assert!(!heartbeats.is_empty());
    for (name, status, sent) in heartbeats {
        let read: FirstDocumentsHeartbeat = serde_json::from_slice(&sent)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}\n{}", String::from_utf8_lossy(&sent)));
        assert_eq!(Timestamp(read.sent_at), status.at, "{name}");
        assert_eq!(read.stream, status.stream, "{name}");
        assert_eq!(read.last_seq, status.last_seq, "{name}");
        assert_eq!(read.phase, status.phase.name(), "{name}");
        let age = status
            .queue
            .oldest_at
            .map(|oldest| status.at.since(oldest).0);
        assert_eq!(read.queue.oldest_age_ms, age, "{name}");
    }
}

#[test]
fn the_released_1_0_heartbeat_is_what_that_control_plane_refused() {
    // The defect, kept as evidence: a 1.0 agent's heartbeat has no `sent_at`.
    for example in of("agent")
        .iter()
        .filter(|e| e.version == "protocol-1.0" && e.stem.starts_with("agent-status"))
    {
        let error = serde_json::from_slice::<FirstDocumentsHeartbeat>(&example.bytes)
            .expect_err("a 1.0 heartbeat without sent_at");
        assert!(error.to_string().contains("sent_at"), "{error}");
    }
}

#[test]
fn the_current_control_plane_reads_a_heartbeat_of_the_first_documents() {
    let example = of("agent")
        .into_iter()
        .find(|e| e.stem == "heartbeat-as-first-documented")
        .expect("the frozen heartbeat of the first documents");
    let status: AgentStatus = decode(&example.bytes).unwrap();
    assert_eq!(status.at, Timestamp(1_700_000_030_000));
    assert_eq!(status.queue.oldest_at, Some(Timestamp(1_700_000_028_500)));
    // Neither name: refused, saying which names it looked for.
    let mut value = example.json();
    value.as_object_mut().unwrap().remove("sent_at");
    let error = decode::<AgentStatus>(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("sent_at") && message.contains("`at`"),
        "{message}"
    );
}
