//! The agent's durable store: one redb file, `<state_dir>/agent.redb`.
//!
//! It holds the state machine's [`State`], the outbound queue of [`OutboundEvent`]s keyed by seq,
//! the dead letters (events the control plane refused for good), and metadata: the schema
//! version and the event stream id (a random `u64` chosen when the store is created).
//!
//! The event loop is the only writer ([`Store`]); the drainer reads through a [`StoreReader`]
//! (redb serves readers concurrently with the writer). Every write is one transaction committed
//! with redb's default immediate durability (fsync before `commit` returns).
//!
//! A store that cannot be read (garbage, a truncated file, a newer schema, undecodable contents)
//! is renamed `agent.redb.corrupt-<unix-ms>` (never deleted) and a fresh one is created; the
//! reason comes back in [`Opened::reset`] so the agent reports it. A store held open by another
//! process is an error: that is another agent, and its store must not be touched.

mod queue;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetnode_state_machine::State;
use fleetnode_wire::QueueSummary;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

pub use queue::{CommitReport, DeadLetterOutcome, StoreReader};

/// File name of the store inside the state directory.
pub const STORE_FILE: &str = "agent.redb";
/// Schema of the store this build reads and writes. A store with another schema is moved aside.
pub const SCHEMA_VERSION: u64 = 1;
/// Most events the outbound queue holds before probe observations are compacted. At the
/// largest (a switch result with a 4 KiB output tail) that is about 40 MiB; typical events are a
/// few hundred bytes, so the byte cap below usually binds first.
pub const QUEUE_MAX_EVENTS: u64 = 10_000;
/// Most bytes of encoded events the outbound queue holds before compaction (16 MiB).
pub const QUEUE_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Most dead letters kept; the oldest are forgotten first (each is logged when it is made).
pub const DEAD_LETTER_CAP: u64 = 1_000;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const OUTBOUND: TableDefinition<u64, &[u8]> = TableDefinition::new("outbound");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const STATE_KEY: &str = "current";
const META_SCHEMA: &str = "schema_version";
const META_STREAM: &str = "stream";

/// A store problem the agent cannot work around by starting afresh.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store open.
    #[error(
        "the store {path} is open in another process; is another fleetnode-agent running with the same state_dir?"
    )]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// An I/O error that moving the file aside would not cure (permissions, a missing directory).
    #[error(
        "cannot use the store {path}: {message}; check the state directory and its permissions"
    )]
    Io {
        /// The store file.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
    /// Writing or reading an open store failed.
    #[error("store operation failed: {0}")]
    Operation(String),
}

/// A store opened at start-up.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The persisted state (the default state for a fresh store).
    pub state: State,
    /// Set when an unreadable store was moved aside: why, and where it went.
    pub reset: Option<String>,
}

/// Counters of the outbound queue and the dead letters: the wire's summary, kept current by
/// every write.
pub type QueueStats = QueueSummary;

/// The writer side of the store, owned by the event loop.
#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    stream: u64,
    stats: QueueStats,
    /// Queue depth at which the last compaction freed nothing; compaction is not tried again
    /// until the queue has grown well past it, so a queue of lifecycle events alone does not
    /// cost a full scan on every commit.
    futile_at: Option<u64>,
}

impl Store {
    /// Opens the store in `dir` (created if missing), moving an unreadable one aside.
    pub fn open(dir: &Path) -> Result<Opened, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_owned(),
            message: e.to_string(),
        })?;
        let path = dir.join(STORE_FILE);
        let mut reset = None;
        if path.exists() {
            match catch_unwind(AssertUnwindSafe(|| load(&path))) {
                Ok(Ok(loaded)) => return Ok(loaded),
                Ok(Err(LoadError::Locked)) => return Err(StoreError::Locked { path }),
                Ok(Err(LoadError::Hard(message))) => return Err(StoreError::Io { path, message }),
                Ok(Err(LoadError::Corrupt(why))) => reset = Some(move_aside(&path, &why)?),
                Err(_) => reset = Some(move_aside(&path, "the store failed to load")?),
            }
        }
        let store = create(&path)?;
        Ok(Opened {
            store,
            state: State::default(),
            reset,
        })
    }

    /// The event stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// The queue counters as of the last write.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only handle for the drainer.
    pub fn reader(&self) -> StoreReader {
        StoreReader::new(self.db.clone())
    }
}

/// What opening the store reads of a queued event.
#[derive(serde::Deserialize)]
struct QueuedHead {
    seq: u64,
    at: fleetnode_state_machine::Timestamp,
}

/// Why loading failed.
enum LoadError {
    /// Another process has it open.
    Locked,
    /// An error not cured by starting afresh.
    Hard(String),
    /// Unreadable: move it aside.
    Corrupt(String),
}

fn classify(error: redb::Error) -> LoadError {
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => LoadError::Locked,
        redb::Error::Io(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            LoadError::Hard(e.to_string())
        }
        other => LoadError::Corrupt(other.to_string()),
    }
}

fn corrupt(why: impl Into<String>) -> LoadError {
    LoadError::Corrupt(why.into())
}

fn load(path: &Path) -> Result<Opened, LoadError> {
    let db = Database::open(path).map_err(|e| classify(e.into()))?;
    let read = db.begin_read().map_err(|e| classify(e.into()))?;
    let meta = read
        .open_table(META)
        .map_err(|e| corrupt(format!("no metadata table ({e})")))?;
    let get = |key: &str| -> Result<Option<u64>, LoadError> {
        Ok(meta
            .get(key)
            .map_err(|e| classify(e.into()))?
            .map(|v| v.value()))
    };
    let schema = get(META_SCHEMA)?.ok_or_else(|| corrupt("no schema version recorded"))?;
    if schema != SCHEMA_VERSION {
        return Err(corrupt(format!(
            "schema version {schema}, but this agent reads version {SCHEMA_VERSION}"
        )));
    }
    let stream = get(META_STREAM)?.ok_or_else(|| corrupt("no event stream id recorded"))?;
    let state = match read.open_table(STATE) {
        Ok(table) => match table.get(STATE_KEY).map_err(|e| classify(e.into()))? {
            Some(bytes) => serde_json::from_slice::<State>(bytes.value())
                .map_err(|e| corrupt(format!("the saved state cannot be decoded: {e}")))?,
            None => State::default(),
        },
        Err(redb::TableError::TableDoesNotExist(_)) => State::default(),
        Err(e) => return Err(classify(e.into())),
    };
    let mut stats = QueueSummary::default();
    match read.open_table(OUTBOUND) {
        Ok(table) => {
            for row in table.iter().map_err(|e| classify(e.into()))? {
                let (seq, bytes) = row.map_err(|e| classify(e.into()))?;
                // Only the seq and time are read here: decoding every report in full made
                // opening a full queue after a crash take most of its time. redb's checksums
                // guard the bytes; the drainer decodes each event whole when it sends it.
                let event: QueuedHead = serde_json::from_slice(bytes.value()).map_err(|e| {
                    corrupt(format!(
                        "queued event {} cannot be decoded: {e}",
                        seq.value()
                    ))
                })?;
                if event.seq != seq.value() || event.seq > state.host.seq {
                    return Err(corrupt(format!(
                        "queued event {} does not fit the saved state (last seq {})",
                        seq.value(),
                        state.host.seq
                    )));
                }
                stats.depth += 1;
                stats.bytes += bytes.value().len() as u64;
                stats.oldest_at = stats.oldest_at.or(Some(event.at));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(classify(e.into())),
    }
    match read.open_table(DEAD_LETTERS) {
        Ok(table) => stats.dead_letters = table.len().map_err(|e| classify(e.into()))?,
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(classify(e.into())),
    }
    drop(meta);
    drop(read);
    Ok(Opened {
        store: Store {
            db: Arc::new(db),
            path: path.to_owned(),
            stream,
            stats,
            futile_at: None,
        },
        state,
        reset: None,
    })
}

/// Renames an unreadable store out of the way and says what happened.
fn move_aside(path: &Path, why: &str) -> Result<String, StoreError> {
    let ms = crate::clock::wall_ms();
    let mut aside = path.with_file_name(format!("{STORE_FILE}.corrupt-{ms}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{STORE_FILE}.corrupt-{ms}-{n}"));
        n += 1;
    }
    fs::rename(path, &aside).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        message: format!("the store is unreadable ({why}) and cannot be moved aside: {e}"),
    })?;
    sync_dir(path);
    let reason = format!(
        "the store was unreadable ({why}); it was moved to {} and the agent started afresh",
        aside.display()
    );
    tracing::error!(store = %path.display(), moved_to = %aside.display(), why, "store reset");
    Ok(fleetnode_state_machine::cap_head(
        &reason,
        fleetnode_state_machine::MESSAGE_CAP,
    ))
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(handle) = fs::File::open(dir)
        && let Err(e) = handle.sync_all()
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot sync the state directory");
    }
}

/// Creates a fresh store with a new stream id.
fn create(path: &Path) -> Result<Store, StoreError> {
    let io = |e: &dyn std::fmt::Display| StoreError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let stream = getrandom::u64().map_err(|e| io(&e))?;
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        other => io(&other),
    })?;
    let write = db.begin_write().map_err(|e| io(&e))?;
    {
        let mut meta = write.open_table(META).map_err(|e| io(&e))?;
        meta.insert(META_SCHEMA, SCHEMA_VERSION)
            .map_err(|e| io(&e))?;
        meta.insert(META_STREAM, stream).map_err(|e| io(&e))?;
        write.open_table(STATE).map_err(|e| io(&e))?;
        write.open_table(OUTBOUND).map_err(|e| io(&e))?;
        write.open_table(DEAD_LETTERS).map_err(|e| io(&e))?;
    }
    write.commit().map_err(|e| io(&e))?;
    sync_dir(path);
    Ok(Store {
        db: Arc::new(db),
        path: path.to_owned(),
        stream,
        stats: QueueSummary::default(),
        futile_at: None,
    })
}

#[cfg(test)]
mod tests;
