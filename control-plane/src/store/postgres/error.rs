//! What can go wrong with the PostgreSQL store, each with what failed, on what, and what to do.
//! No variant ever holds a password: URLs are shown with theirs replaced by `***`, and the
//! database's own messages never contain it.

use std::path::PathBuf;

use fleetnode_wire::{HostId, OperatorName};

/// Why the PostgreSQL store failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The store URL cannot be used.
    #[error("the store URL {url} is not usable: {detail}")]
    InvalidUrl {
        /// The URL, its password hidden.
        url: String,
        /// What is wrong with it and what to do.
        detail: String,
    },
    /// A password file cannot be used.
    #[error("the password file {path} cannot be used: {detail}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A TLS setting cannot be used (a root certificate file, the provider).
    #[error("TLS to the database cannot be set up: {detail}")]
    TlsSetup {
        /// Why.
        detail: String,
    },
    /// No connection could be made to the server.
    #[error(
        "cannot reach the database at {target}: {detail}; check the host, port or socket directory in the store URL and that PostgreSQL is running"
    )]
    Unreachable {
        /// Where it was looked for.
        target: String,
        /// The underlying error.
        detail: String,
    },
    /// The TLS handshake with the server failed (its certificate was not trusted, did not
    /// name it, or it does not serve TLS).
    #[error(
        "TLS with the database at {target} failed: {detail}; check sslmode and sslrootcert in the store URL against the server's certificate"
    )]
    TlsHandshake {
        /// Where.
        target: String,
        /// rustls's or the server's explanation.
        detail: String,
    },
    /// The server refused the credentials.
    #[error(
        "the database at {target} refused user {user}: {detail}; check the password (--store-password-file, the URL or PGPASSFILE) and pg_hba.conf"
    )]
    Authentication {
        /// Where.
        target: String,
        /// The user.
        user: String,
        /// The server's message.
        detail: String,
    },
    /// The database was written by a newer fleetnode-cp.
    #[error(
        "the database at {target} has schema version {found}, newer than this fleetnode-cp knows (up to {known}); run a fleetnode-cp at least as new as the one that upgraded it"
    )]
    NewerSchema {
        /// Where.
        target: String,
        /// The version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A host to add is registered already (nothing was written).
    #[error("host {host} is registered already")]
    DuplicateHost {
        /// The host.
        host: HostId,
    },
    /// An operator to add exists already (nothing was written).
    #[error("operator {name} exists already")]
    DuplicateOperator {
        /// The name.
        name: OperatorName,
    },
    /// A host named by an operation is not registered.
    #[error("host {host} is not registered")]
    UnknownHost {
        /// The host.
        host: HostId,
    },
    /// A desired-state change named a revoked host (nothing was written).
    #[error("host {host} is revoked; its desired state can no longer change")]
    Revoked {
        /// The host.
        host: HostId,
    },
    /// A lease's fencing token is no longer current: another holder took the lease, and
    /// nothing was written.
    #[error(
        "the lease {lease} is no longer held with fencing token {token} (now {current:?}); another replica took it over, nothing was written"
    )]
    Fenced {
        /// The lease.
        lease: String,
        /// The token presented.
        token: i64,
        /// The token in force (`None`: the lease row is gone).
        current: Option<i64>,
    },
    /// A rollout decision was based on a host's desired state that has changed since: decide
    /// again (nothing was written).
    #[error(
        "host {host}'s desired state changed since the decision (its next revision is {next}, the decision carries {decided}); decide again"
    )]
    StaleDecision {
        /// The host.
        host: HostId,
        /// The revision the host's next change must carry now.
        next: u64,
        /// The revision the decision carried.
        decided: u64,
    },
    /// The group writer stopped (the server is shutting down).
    #[error(
        "the store's group writer stopped (the server is shutting down); retry against the restarted server"
    )]
    Stopped,
    /// A number does not fit the database's signed 64-bit integers.
    #[error("{what} {value} is too large to store (the database holds signed 64-bit integers)")]
    OutOfRange {
        /// What number.
        what: String,
        /// Its value.
        value: u64,
    },
    /// A stored value could not be read back.
    #[error("the database holds an unreadable {what}: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The parser's explanation.
        detail: String,
    },
    /// A statement failed.
    #[error("{what} failed on the database at {target}: {detail}")]
    Query {
        /// What was being done.
        what: String,
        /// Where.
        target: String,
        /// The database's error.
        detail: String,
    },
}

impl PgError {
    /// True when retrying later may succeed (the database is away), as opposed to a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// The full text of a database error: tokio-postgres's own `Display` leaves out the server's
/// message and the I/O cause, which are what a reader needs.
pub(super) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}
