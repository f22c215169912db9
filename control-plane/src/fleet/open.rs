//! Opening the fleet on its store: a redb file, or a PostgreSQL database shared with other
//! replicas.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};

use super::backend::{Backend, PgBackend, RedbBackend};
use super::operators::Operators;
use super::registry::Registry;
use super::rollouts::{self, Rollouts, Snapshot};
use super::{DriverStart, Fleet, Settings};
use crate::store::postgres::{PgError, PgOptions, PgStore, redact};
use crate::store::{GroupWriter, Store, StoreError};

/// Where the store is.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// A redb file (created when missing), for this process alone.
    Redb(PathBuf),
    /// A PostgreSQL database, which any number of replicas may share.
    Postgres(PgOptions),
}

impl StoreLocation {
    /// A redb path or a `postgres://`/`postgresql://` URL (the password, if any, from
    /// `password_file`, the URL, or `PGPASSFILE`).
    pub fn parse(text: &str, password_file: Option<PathBuf>) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(PgOptions::from_env(text, password_file))
        } else {
            Self::Redb(PathBuf::from(text))
        }
    }

    /// The store for messages and logs: the path, or the URL with its password hidden.
    pub fn describe(&self) -> String {
        match self {
            Self::Redb(path) => path.display().to_string(),
            Self::Postgres(options) => redact(&options.url),
        }
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        Self::Redb(path)
    }
}

/// Why the fleet could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The redb file.
    #[error(transparent)]
    Redb(#[from] StoreError),
    /// The database.
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl OpenError {
    /// True when another process holds the redb file: it is tried again until that process
    /// lets go. Everything else stops the server with the error: a database that cannot be
    /// reached at start is a configuration to check (a wrong host, port or socket), and the
    /// service manager restarts the server if it was only down for a moment.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Redb(StoreError::Locked { .. }))
    }
}

impl Fleet {
    /// Opens the store and loads the fleet from it. The rollout driver (and, on a shared
    /// store, the follower of other replicas' changes) is started separately with what is
    /// returned beside the fleet.
    pub async fn open(
        location: &StoreLocation,
        settings: Settings,
    ) -> Result<(Arc<Self>, DriverStart), OpenError> {
        match location {
            StoreLocation::Redb(path) => {
                let path = path.clone();
                let opened = tokio::task::spawn_blocking(move || open_redb(&path)).await;
                let (backend, hosts, loaded, operators) =
                    opened.map_err(|join| StoreError::Corrupt {
                        path: PathBuf::new(),
                        what: "file (opening it panicked)".to_owned(),
                        detail: join.to_string(),
                    })??;
                Ok(assemble(
                    Backend::Redb(backend),
                    hosts,
                    loaded,
                    operators,
                    settings,
                    None,
                ))
            }
            StoreLocation::Postgres(options) => {
                let store = PgStore::connect(options).await?;
                tracing::info!(
                    database = store.target(),
                    migrations_applied = store.migrations_applied(),
                    schema_version = crate::store::postgres::migrate::latest(),
                    "database schema up to date"
                );
                // Subscribed before loading: every change committed after the load began is
                // heard.
                let subscription = store.subscribe().await?;
                let hosts = store.load().await?;
                let loaded = store.load_rollouts().await?;
                let operators = store.load_operators().await?;
                let backend = Backend::Postgres(PgBackend::new(store));
                Ok(assemble(
                    backend,
                    hosts,
                    loaded,
                    operators,
                    settings,
                    Some(subscription),
                ))
            }
        }
    }
}

type Loaded = (
    RedbBackend,
    Vec<crate::store::StoredHost>,
    Vec<fleetnode_wire::Rollout>,
    Vec<crate::store::OperatorRecord>,
);

fn open_redb(path: &std::path::Path) -> Result<Loaded, StoreError> {
    let store = Arc::new(Store::open(path)?);
    let hosts = store.load()?;
    let loaded = store.load_rollouts()?;
    let operators = store.load_operators()?;
    let writer = GroupWriter::start(store.clone()).map_err(|e| StoreError::Corrupt {
        path: PathBuf::from(path),
        what: "writer thread".to_owned(),
        detail: format!("cannot start it: {e}"),
    })?;
    Ok((RedbBackend { store, writer }, hosts, loaded, operators))
}

fn assemble(
    backend: Backend,
    hosts: Vec<crate::store::StoredHost>,
    loaded: Vec<fleetnode_wire::Rollout>,
    operators: Vec<crate::store::OperatorRecord>,
    settings: Settings,
    subscription: Option<crate::store::postgres::Subscription>,
) -> (Arc<Fleet>, DriverStart) {
    let (requests, receiver) = mpsc::channel(rollouts::REQUEST_QUEUE);
    let nudge = Arc::new(Notify::new());
    let snapshot = Snapshot {
        rollouts: loaded
            .iter()
            .map(|rollout| (rollout.id, Arc::new(rollout.clone())))
            .collect(),
    };
    let (view, reader) = watch::channel(Arc::new(snapshot));
    let fleet = Arc::new(Fleet {
        backend,
        gate: tokio::sync::RwLock::new(()),
        hosts: Registry::load(hosts),
        operators: Operators::load(operators),
        rollouts: Rollouts::new(requests, nudge.clone(), reader),
        settings,
        changes: super::changes::Changes::default(),
    });
    let start = DriverStart {
        loaded,
        requests: receiver,
        nudge,
        view,
        subscription,
    };
    (fleet, start)
}
