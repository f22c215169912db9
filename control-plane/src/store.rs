//! The durable store: one redb file holding hosts, desired states with their history, each
//! host's event log and mirror, the latest heartbeats, the rollouts, the operators and the
//! audit log.
//!
//! Every method is blocking (redb commits with fsync); the server calls them from
//! `spawn_blocking`. Values are JSON of the shared wire and state-machine types, so a store can
//! be read with the same types the API returns. redb serialises write transactions itself; a
//! batch of events and the mirror it produces are one transaction, durable before the ack.

use std::path::{Path, PathBuf};

use fleetnode_wire::{
    AgentStatus, DesiredState, Directive, DirectiveKind, HostId, OutboundEvent, RolloutId, Tag,
    Timestamp,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mirror::Mirror;

mod audit;
pub mod copy;
mod export;
mod group;
pub mod postgres;
mod retention;
mod rollouts;

pub use audit::{AuditFilter, OperatorRecord};
pub use export::{StoreCounts, StoredEvent};
pub use group::{GroupError, GroupWriter, HEARTBEAT_SYNC_EVERY, MAX_GROUP, Write};
pub use retention::{EXAMINE_PER_BATCH, EventCursor, EventKeep, Pruned};

/// The layout version this build writes; a store with another version is refused.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
const DESIRED: TableDefinition<&str, &[u8]> = TableDefinition::new("desired");
const DESIRED_HISTORY: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("desired_history");
const EVENTS: TableDefinition<(&str, u64, u64), &[u8]> = TableDefinition::new("events");
const MIRRORS: TableDefinition<&str, &[u8]> = TableDefinition::new("mirrors");
const HEARTBEATS: TableDefinition<&str, &[u8]> = TableDefinition::new("heartbeats");

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its id.
    pub id: HostId,
    /// Its tags.
    pub tags: Vec<Tag>,
    /// SHA-256 of its bearer token, hex. The token itself is never stored.
    pub token_sha256: String,
    /// Revoked hosts keep their history but can no longer authenticate.
    pub revoked: bool,
    /// When it was added (server clock).
    pub added_at: Timestamp,
    /// When it was revoked.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

/// One entry of a host's desired-state history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRecord {
    /// The desired state from this revision on.
    pub desired: DesiredState,
    /// When it was set (server clock).
    pub set_at: Timestamp,
    /// The operator command that set it (`set-target`, `rollback`, `pause`, `resume`).
    pub cause: String,
}

impl DesiredRecord {
    /// The record of rollout `rollout`'s `directive` for a host whose desired state is
    /// `current`: the directive takes effect, the host's hold stays, and the cause names the
    /// rollout (and whether it sends the host back). Both stores write what this returns.
    pub fn of_rollout(
        rollout: RolloutId,
        directive: &Directive,
        current: &DesiredState,
        now: Timestamp,
    ) -> Self {
        let cause = match directive.kind {
            DirectiveKind::Activate { .. } => format!("rollout {rollout}"),
            DirectiveKind::Rollback { .. } => format!("rollout {rollout} rollback"),
        };
        Self {
            desired: DesiredState {
                revision: directive.revision,
                directive: Some(directive.clone()),
                paused: current.paused,
            },
            set_at: now,
            cause,
        }
    }
}

/// The latest heartbeat of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRecord {
    /// The status the agent sent.
    pub heartbeat: AgentStatus,
    /// When it arrived (server clock): the host's last-seen time.
    pub received_at: Timestamp,
    /// Why the heartbeat contradicts the mirror, if it does.
    #[serde(default)]
    pub divergence: Option<String>,
}

/// Everything stored about one host, as loaded at start-up.
#[derive(Debug, Clone)]
pub struct StoredHost {
    /// The registration.
    pub record: HostRecord,
    /// The desired state in force.
    pub desired: DesiredState,
    /// The mirror.
    pub mirror: Mirror,
    /// The latest heartbeat.
    pub heartbeat: Option<HeartbeatRecord>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another server in this one) has the file open.
    #[error(
        "the store {path} is in use by another process (is another fleetnode-cp running on it?)"
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be opened as a redb database.
    #[error(
        "cannot open the store {path}: {source}; restore it from a backup or move it aside to start with an empty store"
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::DatabaseError,
    },
    /// The store was written by a build with another layout.
    #[error(
        "the store {path} has schema version {found}, this build reads version {SCHEMA_VERSION}; run the fleetnode-cp version that wrote it"
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// A stored value could not be read back.
    #[error("the store {path} holds an unreadable {what}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// The parser's explanation.
        detail: String,
    },
    /// The writer thread is gone: the server is shutting down.
    #[error(
        "the store writer stopped (the server is shutting down); retry against the restarted server"
    )]
    Stopped,
    /// A read or write failed.
    #[error("store {path}: {source}")]
    Database {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
}

/// The open store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// Changes to one host's desired state, written together with others in one transaction.
#[derive(Debug, Clone)]
pub struct DesiredChange {
    /// The host.
    pub host: HostId,
    /// Its new desired state and why.
    pub record: DesiredRecord,
}

impl Store {
    /// Opens (or creates) the store, checking every page's integrity and the schema version.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.to_owned(),
                },
                source => StoreError::Open {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every host with its desired state, mirror and latest heartbeat.
    pub fn load(&self) -> Result<Vec<StoredHost>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let hosts = txn.open_table(HOSTS).map_err(|e| self.fail(e))?;
        let desired = txn.open_table(DESIRED).map_err(|e| self.fail(e))?;
        let mirrors = txn.open_table(MIRRORS).map_err(|e| self.fail(e))?;
        let heartbeats = txn.open_table(HEARTBEATS).map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(usize::try_from(hosts.len().unwrap_or(0)).unwrap_or(0));
        for entry in hosts.iter().map_err(|e| self.fail(e))? {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let id = key.value();
            let record: HostRecord = self.parse(&format!("host record {id}"), value.value())?;
            let desired = match desired.get(id).map_err(|e| self.fail(e))? {
                Some(v) => self.parse(&format!("desired state of {id}"), v.value())?,
                None => DesiredState {
                    revision: Default::default(),
                    directive: None,
                    paused: false,
                },
            };
            let mirror = match mirrors.get(id).map_err(|e| self.fail(e))? {
                Some(v) => self.parse(&format!("mirror of {id}"), v.value())?,
                None => Mirror::default(),
            };
            let heartbeat = match heartbeats.get(id).map_err(|e| self.fail(e))? {
                Some(v) => Some(self.parse(&format!("heartbeat of {id}"), v.value())?),
                None => None,
            };
            out.push(StoredHost {
                record,
                desired,
                mirror,
                heartbeat,
            });
        }
        Ok(out)
    }

    /// Registers a new host with its initial desired state.
    pub fn add_host(&self, record: &HostRecord, desired: &DesiredState) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut hosts = txn.open_table(HOSTS).map_err(|e| self.fail(e))?;
            hosts
                .insert(record.id.as_str(), json(record).as_slice())
                .map_err(|e| self.fail(e))?;
            let mut table = txn.open_table(DESIRED).map_err(|e| self.fail(e))?;
            table
                .insert(record.id.as_str(), json(desired).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// Replaces a host's registration (used to revoke it).
    pub fn put_host(&self, record: &HostRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut hosts = txn.open_table(HOSTS).map_err(|e| self.fail(e))?;
            hosts
                .insert(record.id.as_str(), json(record).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    /// Sets new desired states, keeping each in the history, all in one transaction.
    pub fn set_desired(&self, changes: &[DesiredChange]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        self.write_desired(&txn, changes)?;
        self.commit(txn)
    }

    /// Writes desired states and their history entries into an open transaction.
    fn write_desired(
        &self,
        txn: &redb::WriteTransaction,
        changes: &[DesiredChange],
    ) -> Result<(), StoreError> {
        let mut desired = txn.open_table(DESIRED).map_err(|e| self.fail(e))?;
        let mut history = txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
        for change in changes {
            let id = change.host.as_str();
            desired
                .insert(id, json(&change.record.desired).as_slice())
                .map_err(|e| self.fail(e))?;
            let revision = change.record.desired.revision.0;
            history
                .insert((id, revision), json(&change.record).as_slice())
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// The newest `limit` events of a host's stream, oldest first.
    pub fn recent_events(
        &self,
        host: &HostId,
        stream: u64,
        limit: usize,
    ) -> Result<Vec<OutboundEvent>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let log = txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
        let range = log
            .range((host.as_str(), stream, 0)..=(host.as_str(), stream, u64::MAX))
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(limit);
        for entry in range.rev().take(limit) {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let (_, _, seq) = key.value();
            out.push(self.parse(&format!("event {seq} of {host}"), value.value())?);
        }
        out.reverse();
        Ok(out)
    }

    /// The desired-state history of a host, oldest first.
    pub fn desired_history(&self, host: &HostId) -> Result<Vec<DesiredRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let history = txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
        let range = history
            .range((host.as_str(), 0)..=(host.as_str(), u64::MAX))
            .map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(|e| self.fail(e))?;
            let (_, revision) = key.value();
            out.push(self.parse(
                &format!("desired revision {revision} of {host}"),
                value.value(),
            )?);
        }
        Ok(out)
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.fail(e))?;
            let found = meta
                .get("schema_version")
                .map_err(|e| self.fail(e))?
                .map(|v| v.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StoreError::Schema {
                        path: self.path.clone(),
                        found,
                    });
                }
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(|e| self.fail(e))?;
                }
            }
            // Create every table, so readers never meet a missing one.
            txn.open_table(HOSTS).map_err(|e| self.fail(e))?;
            txn.open_table(DESIRED).map_err(|e| self.fail(e))?;
            txn.open_table(DESIRED_HISTORY).map_err(|e| self.fail(e))?;
            txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
            txn.open_table(MIRRORS).map_err(|e| self.fail(e))?;
            txn.open_table(HEARTBEATS).map_err(|e| self.fail(e))?;
            txn.open_table(rollouts::ROLLOUTS)
                .map_err(|e| self.fail(e))?;
            txn.open_table(audit::OPERATORS).map_err(|e| self.fail(e))?;
            txn.open_table(audit::AUDIT).map_err(|e| self.fail(e))?;
        }
        self.commit(txn)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|e| self.fail(e))
    }

    fn fail(&self, error: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: error.into(),
        }
    }

    fn parse<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    fleetnode_wire::encode(value)
}
