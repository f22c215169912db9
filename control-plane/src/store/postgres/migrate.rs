//! The schema, as numbered migrations compiled into the binary, applied at start inside one
//! transaction under a database advisory lock: replicas starting together wait for each other,
//! the first applies what is missing, the others find it done. A database whose schema is newer
//! than this build knows is refused.
//!
//! Every record is the JSON (`jsonb`) of the same serde types the redb store keeps, beside the
//! columns that are indexed, compared or locked. Ids and names compare byte by byte (`COLLATE
//! "C"`), whatever the database's locale: rows are locked in that order, the order Rust sorts
//! them in.

use tokio_postgres::Client;

use super::PgError;
use super::store::fail;

/// The advisory lock every replica's migration takes ("fleetnod" in ASCII).
const MIGRATION_LOCK: i64 = 0x666c_6565_746e_6f64;

/// One schema change.
pub struct Migration {
    /// Its number: applied in order, each once.
    pub version: i64,
    /// What it does, recorded with it.
    pub description: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every migration, oldest first. Append only: a released migration never changes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "hosts with desired state, mirror and heartbeat; desired history; events; operators; audit; rollouts; leases",
        sql: r#"
CREATE TABLE hosts (
    id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL,
    token_sha256 text NOT NULL,
    revoked boolean NOT NULL,
    desired jsonb NOT NULL,
    revision bigint NOT NULL,
    mirror jsonb NOT NULL,
    heartbeat jsonb
);
CREATE INDEX hosts_token ON hosts (token_sha256);
CREATE TABLE desired_history (
    host text COLLATE "C" NOT NULL REFERENCES hosts (id),
    revision bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (host, revision)
);
CREATE TABLE events (
    host text COLLATE "C" NOT NULL,
    stream bigint NOT NULL,
    seq bigint NOT NULL,
    event jsonb NOT NULL,
    PRIMARY KEY (host, stream, seq)
);
CREATE TABLE operators (
    name text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);
CREATE TABLE audit (
    seq bigint PRIMARY KEY,
    at bigint NOT NULL,
    hosts text[] NOT NULL,
    entry jsonb NOT NULL
);
CREATE INDEX audit_hosts ON audit USING gin (hosts);
CREATE TABLE audit_seq (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last bigint NOT NULL
);
INSERT INTO audit_seq (last) VALUES (0);
CREATE TABLE rollouts (
    id bigint PRIMARY KEY,
    rollout jsonb NOT NULL
);
CREATE SEQUENCE rollout_ids;
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text,
    expires_at timestamptz NOT NULL,
    token bigint NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        description: "rollout commands forwarded to the replica that drives the rollouts",
        sql: r#"
CREATE TABLE rollout_requests (
    id bigserial PRIMARY KEY,
    request jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    taken_at timestamptz,
    answer jsonb,
    answered_at timestamptz
);
"#,
    },
];

/// The newest schema version this build knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Applies the missing migrations; returns how many this call applied.
pub async fn migrate(client: &mut Client, target: &str) -> Result<usize, PgError> {
    let fail = |what: &str| {
        let what = what.to_owned();
        move |e: tokio_postgres::Error| fail(target, &what, &e)
    };
    let txn = client
        .transaction()
        .await
        .map_err(fail("starting the migration"))?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(fail("taking the migration lock"))?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS fleetnode_schema (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(fail("creating the schema version table"))?;
    let found: i64 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM fleetnode_schema",
            &[],
        )
        .await
        .map_err(fail("reading the schema version"))?
        .get(0);
    if found > latest() {
        return Err(PgError::NewerSchema {
            target: target.to_owned(),
            found,
            known: latest(),
        });
    }
    let mut applied = 0;
    for migration in MIGRATIONS.iter().filter(|m| m.version > found) {
        let what = format!("schema migration {}", migration.version);
        txn.batch_execute(migration.sql)
            .await
            .map_err(fail(&what))?;
        txn.execute(
            "INSERT INTO fleetnode_schema (version, description) VALUES ($1, $2)",
            &[&migration.version, &migration.description],
        )
        .await
        .map_err(fail(&what))?;
        applied += 1;
    }
    txn.commit()
        .await
        .map_err(fail("committing the migration"))?;
    Ok(applied)
}
