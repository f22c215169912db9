//! Moving a fleet from its redb file to PostgreSQL (`fleetnode-cp store copy`).
//!
//! The whole store is copied: hosts with their token digests, desired states and their
//! history, every event of every stream, mirrors, heartbeats, operators, rollouts and the audit
//! log with its numbering, so that servers started on the database go on exactly where the
//! redb server stopped (agents continue their event logs, no resync; new audit entries and
//! rollouts are numbered after the copied ones).
//!
//! The copy is one transaction on the database, written page by page ([`COPY_PAGE`] records
//! per statement): the target must be empty (no host, operator, rollout or audit entry), and
//! before it commits, what was written is checked against the file (every count, and every
//! host's registration, desired state, mirror and heartbeat). Any refusal or difference leaves
//! the database as it was. The redb file is only read, with the server stopped: redb lets one
//! process open a file at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::postgres::{CopyInto, PgError, PgOptions, PgStore};
use super::{Store, StoreCounts, StoreError, StoredHost};

/// Records written per statement: large enough that a million events take a thousand round
/// trips, small enough that one statement's parameters stay a few MiB.
pub const COPY_PAGE: usize = 1_000;
/// Differences listed in an error at most (the rest are counted).
const MAX_LISTED: usize = 10;

/// What a copy did.
#[derive(Debug, Clone)]
pub struct CopySummary {
    /// The database (`user@host:port/dbname`).
    pub target: String,
    /// Schema migrations applied to the database first.
    pub migrations_applied: usize,
    /// What was copied, equal on both sides.
    pub counts: StoreCounts,
}

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The file to copy from does not exist.
    #[error("there is no store at {path}; give the redb file the server ran on (its --store path)")]
    MissingSource {
        /// The path given.
        path: PathBuf,
    },
    /// The file is open in another process.
    #[error(
        "the store {path} is open in another process; stop the fleetnode-cp server running on it, then copy (a redb file has one opener at a time)"
    )]
    SourceInUse {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("{0}")]
    Source(#[from] StoreError),
    /// The database failed; nothing was written.
    #[error("{0}; nothing was copied")]
    Target(#[from] PgError),
    /// The database holds a fleet already.
    #[error(
        "the database at {target} is not empty: it holds {found}; copy into a new, empty database (nothing was written)"
    )]
    NotEmpty {
        /// The database.
        target: String,
        /// What it holds, e.g. `2 hosts, 1 operator`.
        found: String,
    },
    /// What was written does not read back as the file holds it.
    #[error(
        "the copy in {target} differs from {path}: {differences}; nothing was written, the database is as it was"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The database.
        target: String,
        /// What differs.
        differences: String,
    },
    /// A read of the file stopped unexpectedly.
    #[error("reading the store {path} stopped: {detail}")]
    Interrupted {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Copies the redb store at `from` into the empty database `to` (migrating its schema first),
/// checks the copy, and commits it.
pub async fn copy_to_postgres(from: &Path, to: &PgOptions) -> Result<CopySummary, CopyError> {
    if !from.exists() {
        return Err(CopyError::MissingSource {
            path: from.to_owned(),
        });
    }
    let path = from.to_owned();
    let source = Arc::new(blocking(from, move || Store::open(&path)).await.map_err(
        |e| match e {
            CopyError::Source(StoreError::Locked { path }) => CopyError::SourceInUse { path },
            other => other,
        },
    )?);
    let target = PgStore::connect(to).await?;
    let copy = target.begin_copy().await?;
    refuse_unless_empty(&copy, target.target()).await?;
    let expected = read(&source, |s| s.counts()).await?;
    let hosts = read(&source, |s| s.load()).await?;
    copy_records(&source, &copy, &hosts).await?;

    let mut differences = count_differences(&expected, &copy.counts().await?);
    differences.extend(host_differences(&hosts, &copy.written_hosts().await?));
    if !differences.is_empty() {
        let listed = differences.len().min(MAX_LISTED);
        let mut text = differences[..listed].join("; ");
        if differences.len() > listed {
            text.push_str(&format!("; and {} more", differences.len() - listed));
        }
        return Err(CopyError::Mismatch {
            path: from.to_owned(),
            target: target.target().to_owned(),
            differences: text,
        });
    }
    copy.commit().await?;
    Ok(CopySummary {
        target: target.target().to_owned(),
        migrations_applied: target.migrations_applied(),
        counts: expected,
    })
}

/// Refuses a database holding a fleet's records, naming what it holds.
async fn refuse_unless_empty(copy: &CopyInto, target: &str) -> Result<(), CopyError> {
    let found = copy.counts().await?;
    let held: Vec<String> = [
        (found.hosts, "host"),
        (found.operators, "operator"),
        (found.rollouts, "rollout"),
        (found.audit, "audit entry"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| match (n, what) {
        (1, what) => format!("1 {what}"),
        (n, "audit entry") => format!("{n} audit entries"),
        (n, what) => format!("{n} {what}s"),
    })
    .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(CopyError::NotEmpty {
        target: target.to_owned(),
        found: held.join(", "),
    })
}

/// Writes every kind of record, hosts first (the history refers to them).
async fn copy_records(
    source: &Arc<Store>,
    copy: &CopyInto,
    hosts: &[StoredHost],
) -> Result<(), CopyError> {
    for page in hosts.chunks(COPY_PAGE) {
        copy.hosts(page).await?;
    }
    let mut after: Option<(String, u64)> = None;
    loop {
        let cursor = after.clone();
        let page = read(source, move |s| {
            s.desired_history_page(cursor.as_ref(), COPY_PAGE)
        })
        .await?;
        let Some((host, record)) = page.last() else {
            break;
        };
        after = Some((host.to_string(), record.desired.revision.0));
        copy.desired_history(&page).await?;
    }
    let mut after = None;
    loop {
        let cursor = after.clone();
        let page = read(source, move |s| s.events_page(cursor.as_ref(), COPY_PAGE)).await?;
        let Some((host, stream, event)) = page.last() else {
            break;
        };
        after = Some((host.to_string(), *stream, event.seq));
        copy.events(&page).await?;
    }
    for page in read(source, |s| s.load_operators())
        .await?
        .chunks(COPY_PAGE)
    {
        copy.operators(page).await?;
    }
    for page in read(source, |s| s.load_rollouts()).await?.chunks(COPY_PAGE) {
        copy.rollouts(page).await?;
    }
    let mut after = 0;
    loop {
        let page = read(source, move |s| s.audit_page(after, COPY_PAGE)).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.seq;
        copy.audit(&page).await?;
    }
    Ok(())
}

/// The kinds whose counts differ.
fn count_differences(expected: &StoreCounts, copied: &StoreCounts) -> Vec<String> {
    [
        ("hosts", expected.hosts, copied.hosts),
        (
            "desired-state history entries",
            expected.desired_history,
            copied.desired_history,
        ),
        ("events", expected.events, copied.events),
        ("heartbeats", expected.heartbeats, copied.heartbeats),
        ("operators", expected.operators, copied.operators),
        ("rollouts", expected.rollouts, copied.rollouts),
        ("audit entries", expected.audit, copied.audit),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what}: {a} in the file, {b} in the database"))
    .collect()
}

/// The hosts whose registration, desired state, mirror or heartbeat differ, or that are
/// missing on one side.
fn host_differences(expected: &[StoredHost], copied: &[StoredHost]) -> Vec<String> {
    let copied: BTreeMap<&str, &StoredHost> =
        copied.iter().map(|h| (h.record.id.as_str(), h)).collect();
    let mut out = Vec::new();
    for host in expected {
        let id = host.record.id.as_str();
        let Some(other) = copied.get(id) else {
            out.push(format!("host {id} is missing from the database"));
            continue;
        };
        for (what, same) in [
            ("registration", host.record == other.record),
            ("desired state", host.desired == other.desired),
            ("mirror", host.mirror == other.mirror),
            ("heartbeat", host.heartbeat == other.heartbeat),
        ] {
            if !same {
                out.push(format!("host {id}: its {what} differs"));
            }
        }
    }
    out
}

/// Runs a read of the file off the async threads.
async fn read<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CopyError> {
    let store = store.clone();
    let path = store.path().to_owned();
    blocking(&path, move || f(&store)).await
}

async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CopyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CopyError::Interrupted {
            path: path.to_owned(),
            detail: e.to_string(),
        })?
        .map_err(CopyError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kinds_that_differ_are_named() {
        let a = StoreCounts {
            hosts: 2,
            events: 10,
            ..StoreCounts::default()
        };
        let b = StoreCounts {
            hosts: 2,
            events: 9,
            ..StoreCounts::default()
        };
        assert!(count_differences(&a, &a).is_empty());
        assert_eq!(
            count_differences(&a, &b),
            vec!["events: 10 in the file, 9 in the database".to_owned()]
        );
    }
}
