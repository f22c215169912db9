//! The open store: a pool of connections to one database, checked and migrated at start.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::error::SqlState;

use super::config::{PgConfig, PgOptions};
use super::error::{PgError, describe};
use super::migrate::migrate;
use super::tls::{MakeRustls, RustlsStream};

/// A connection outside the pool, to be driven by its owner.
pub(super) type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

/// Longest a caller waits for a free connection of the pool.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: Arc<PgConfig>,
    tls: MakeRustls,
    migrations_applied: usize,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.config.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Parses the options, connects, and brings the schema up to date (or refuses a newer one).
    pub async fn connect(options: &PgOptions) -> Result<Self, PgError> {
        let config = PgConfig::parse(options)?;
        let tls = MakeRustls::new(&config.tls)?;
        let manager = Manager::from_config(
            config.pg.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgError::Unreachable {
                target: config.target.clone(),
                detail: e.to_string(),
            })?;
        let mut store = Self {
            pool,
            config: Arc::new(config),
            tls,
            migrations_applied: 0,
        };
        let mut client = store.client().await?;
        store.migrations_applied = migrate(&mut client, &store.config.target).await?;
        drop(client);
        Ok(store)
    }

    /// Where the database is (`user@host:port/dbname`), for messages.
    pub fn target(&self) -> &str {
        &self.config.target
    }

    /// How many schema migrations this store applied when it opened (0 when another replica
    /// had applied them, or none were missing).
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    /// A connection of the pool.
    pub(super) async fn client(&self) -> Result<Object, PgError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.fail("connecting", &e),
            other => PgError::Unreachable {
                target: self.config.target.clone(),
                detail: other.to_string(),
            },
        })
    }

    /// A connection of its own, outside the pool (for LISTEN), named `application_name` in
    /// the server's activity view; the caller drives the returned connection.
    pub(super) async fn dedicated(
        &self,
        application_name: &str,
    ) -> Result<(tokio_postgres::Client, Connection), PgError> {
        let mut config = self.config.pg.clone();
        config.application_name(application_name);
        config
            .connect(self.tls.clone())
            .await
            .map_err(|e| self.fail("connecting", &e))
    }

    /// The error for a failed statement.
    pub(super) fn fail(&self, what: &str, error: &tokio_postgres::Error) -> PgError {
        fail_as(
            &self.config.target,
            self.config.pg.get_user().unwrap_or_default(),
            what,
            error,
        )
    }
}

/// The error for a failed statement on `target`.
pub(super) fn fail(target: &str, what: &str, error: &tokio_postgres::Error) -> PgError {
    fail_as(target, "", what, error)
}

fn fail_as(target: &str, user: &str, what: &str, error: &tokio_postgres::Error) -> PgError {
    let detail = describe(error);
    match error.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            PgError::Authentication {
                target: target.to_owned(),
                user: user.to_owned(),
                detail,
            }
        }
        Some(code) if is_unavailable(code) => PgError::Unreachable {
            target: target.to_owned(),
            detail,
        },
        Some(_) => PgError::Query {
            what: what.to_owned(),
            target: target.to_owned(),
            detail,
        },
        // tokio-postgres's own words when the server asks for a password it was not given.
        None if detail.contains("password missing") => PgError::Authentication {
            target: target.to_owned(),
            user: user.to_owned(),
            detail: "the server asks for a password and none was given".to_owned(),
        },
        None if detail.contains("TLS") => PgError::TlsHandshake {
            target: target.to_owned(),
            detail,
        },
        // Settings tokio-postgres checks only when it connects.
        None if detail.starts_with("invalid configuration") => PgError::InvalidUrl {
            url: target.to_owned(),
            detail,
        },
        // No answer from the server: the connection failed or broke.
        None => PgError::Unreachable {
            target: target.to_owned(),
            detail,
        },
    }
}

/// Server states that mean "not now" rather than "no": shutting down, starting, too many
/// connections.
fn is_unavailable(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
    ]
    .contains(code)
}

/// A value as JSON for a `jsonb` parameter.
pub(super) fn to_json<T: Serialize>(what: &str, value: &T) -> Result<serde_json::Value, PgError> {
    serde_json::to_value(value).map_err(|e| PgError::Corrupt {
        what: format!("{what} to store"),
        detail: e.to_string(),
    })
}

/// A `jsonb` column read back as `T`.
pub(super) fn from_json<T: DeserializeOwned>(
    what: impl FnOnce() -> String,
    value: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(value).map_err(|e| PgError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

/// A `jsonb` column read straight into `T` (no intermediate JSON value); a null column reads
/// as `None` when `T` is an `Option`.
pub(super) fn json_column<T: DeserializeOwned>(
    row: &tokio_postgres::Row,
    index: usize,
    what: impl FnOnce() -> String,
) -> Result<T, PgError> {
    let read = match row.try_get::<_, Option<tokio_postgres::types::Json<T>>>(index) {
        Ok(Some(tokio_postgres::types::Json(value))) => return Ok(value),
        // A null column: fine for an `Option`, corrupt for anything else.
        Ok(None) => serde_json::from_value(serde_json::Value::Null).map_err(|e| e.to_string()),
        Err(e) => Err(super::error::describe(&e)),
    };
    read.map_err(|detail| PgError::Corrupt {
        what: what(),
        detail,
    })
}

/// A number as the database's `bigint`.
pub(super) fn to_i64(what: &str, value: u64) -> Result<i64, PgError> {
    i64::try_from(value).map_err(|_| PgError::OutOfRange {
        what: what.to_owned(),
        value,
    })
}

/// An event stream id as the database's `bigint`: stream ids are random 64-bit numbers, so
/// they are stored bit for bit (half of them read as negative there); only equality and a
/// stable order matter to the database.
pub(super) fn stream_key(stream: u64) -> i64 {
    i64::from_ne_bytes(stream.to_ne_bytes())
}

/// A stored stream id read back (see [`stream_key`]).
pub(super) fn stream_of(key: i64) -> u64 {
    u64::from_ne_bytes(key.to_ne_bytes())
}

/// A `bigint` read back as a count or id (never negative as written).
pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
