//! What the PostgreSQL store's tests share: a store on a fresh database of the throw-away
//! cluster, and records and events to write.

#![allow(dead_code)]

use fleetnode_control_plane::store::HostRecord;
use fleetnode_control_plane::store::postgres::{PgOptions, PgStore};
use fleetnode_fixtures::postgres::{Database, shared};
use fleetnode_state_machine::{Report, SystemView};
use fleetnode_wire::{
    AgentStatus, DesiredState, EventBatch, HostId, OutboundEvent, Revision, Tag, Timestamp,
};

/// A fresh database of the shared cluster.
pub fn database() -> Database {
    shared()
        .expect("the test PostgreSQL cluster")
        .database()
        .expect("a fresh database")
}

/// Options for a URL, no password sources from the environment.
pub fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_owned(),
        pool_size: 4,
        ..PgOptions::default()
    }
}

/// A store on `db` (a replica: its own pool).
pub async fn store(db: &Database) -> PgStore {
    PgStore::connect(&options(&db.url()))
        .await
        .expect("the store opens")
}

/// A host id.
pub fn host(id: &str) -> HostId {
    HostId::parse(id).unwrap()
}

/// A registration.
pub fn record(id: &str) -> HostRecord {
    HostRecord {
        id: host(id),
        tags: vec![Tag::parse("web").unwrap()],
        token_sha256: format!("{:064x}", id.len()),
        revoked: false,
        added_at: Timestamp(1_000),
        revoked_at: None,
    }
}

/// The initial desired state.
pub fn initial() -> DesiredState {
    DesiredState {
        revision: Revision(0),
        directive: None,
        paused: false,
    }
}

/// An event every mirror accepts.
pub fn event(seq: u64) -> OutboundEvent {
    OutboundEvent {
        seq,
        at: Timestamp(seq),
        report: Report::Recovered {
            system: SystemView::default(),
            boot_id: Some(format!("boot-{seq}")),
            store_reset: None,
        },
    }
}

/// A batch of `seqs` of `stream`.
pub fn batch(stream: u64, seqs: impl IntoIterator<Item = u64>) -> EventBatch {
    EventBatch {
        stream,
        events: seqs.into_iter().map(event).collect(),
    }
}

/// A heartbeat of an idle agent.
pub fn heartbeat(stream: u64, last_seq: u64, queued: u64) -> AgentStatus {
    serde_json::from_value(serde_json::json!({
        "agent_version": "0.1.0", "at": 100_000, "phase": "idle", "paused": false,
        "system": {}, "stream": stream, "last_seq": last_seq,
        "queue": {"depth": queued, "bytes": 0, "dead_letters": 0}
    }))
    .unwrap()
}
