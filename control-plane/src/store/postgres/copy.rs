//! Bulk writes for copying a whole store into an empty database (`fleetnode-cp store copy`).
//!
//! A copy is one transaction on a connection of its own (taken out of the pool, so a copy that
//! fails and is dropped closes the connection and the database rolls everything back): the
//! tables a server writes are locked first, so no replica writes while the copy runs, the
//! target is checked empty, each kind of record is written in multi-row statements of one
//! page each, and what was written is read back for checking before it commits. Either the
//! whole store arrives, or nothing does.

use deadpool_postgres::ClientWrapper;
use fleetnode_wire::{AuditEntry, HostId, Rollout};

use super::hosts::heartbeat_of;
use super::store::{from_json, stream_key, to_i64, to_json, to_u64};
use super::{PgError, PgStore};
use crate::store::{DesiredRecord, OperatorRecord, StoreCounts, StoredEvent, StoredHost};

/// A copy under way: one open transaction holding the server's tables locked.
pub struct CopyInto {
    client: ClientWrapper,
    store: PgStore,
}

impl PgStore {
    /// Begins a copy: a transaction of its own that locks the tables a server writes against
    /// every other writer until it commits or is dropped.
    pub async fn begin_copy(&self) -> Result<CopyInto, PgError> {
        let client = deadpool_postgres::Object::take(self.client().await?);
        client
            .batch_execute(
                "BEGIN;
                 LOCK TABLE hosts, desired_history, events, operators, rollouts, audit, audit_seq
                 IN SHARE ROW EXCLUSIVE MODE",
            )
            .await
            .map_err(|e| self.fail("beginning the copy", &e))?;
        Ok(CopyInto {
            client,
            store: self.clone(),
        })
    }
}

impl CopyInto {
    /// How many records of each kind the database holds (as this transaction sees it).
    pub async fn counts(&self) -> Result<StoreCounts, PgError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM hosts),
                        (SELECT count(*) FROM desired_history),
                        (SELECT count(*) FROM events),
                        (SELECT count(*) FROM hosts WHERE heartbeat IS NOT NULL),
                        (SELECT count(*) FROM operators),
                        (SELECT count(*) FROM rollouts),
                        (SELECT count(*) FROM audit)",
                &[],
            )
            .await
            .map_err(|e| self.fail("counting the records", &e))?;
        let n = |i: usize| to_u64(row.get::<_, i64>(i));
        Ok(StoreCounts {
            hosts: n(0),
            desired_history: n(1),
            events: n(2),
            heartbeats: n(3),
            operators: n(4),
            rollouts: n(5),
            audit: n(6),
        })
    }

    /// Writes hosts with their registration, desired state, mirror and heartbeat.
    pub async fn hosts(&self, hosts: &[StoredHost]) -> Result<(), PgError> {
        let mut ids = Vec::with_capacity(hosts.len());
        let mut records = Vec::with_capacity(hosts.len());
        let mut tokens = Vec::with_capacity(hosts.len());
        let mut revoked = Vec::with_capacity(hosts.len());
        let mut desired = Vec::with_capacity(hosts.len());
        let mut revisions = Vec::with_capacity(hosts.len());
        let mut mirrors = Vec::with_capacity(hosts.len());
        let mut heartbeats = Vec::with_capacity(hosts.len());
        for host in hosts {
            ids.push(host.record.id.as_str());
            records.push(to_json("host record", &host.record)?);
            tokens.push(host.record.token_sha256.as_str());
            revoked.push(host.record.revoked);
            desired.push(to_json("desired state", &host.desired)?);
            revisions.push(to_i64("revision", host.desired.revision.0)?);
            mirrors.push(to_json("mirror", &host.mirror)?);
            heartbeats.push(
                host.heartbeat
                    .as_ref()
                    .map(|h| to_json("heartbeat", h))
                    .transpose()?,
            );
        }
        self.execute(
            "copying hosts",
            "INSERT INTO hosts (id, record, token_sha256, revoked, desired, revision, mirror, heartbeat)
             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bool[], $5::jsonb[],
                                  $6::int8[], $7::jsonb[], $8::jsonb[])",
            &[
                &ids,
                &records,
                &tokens,
                &revoked,
                &desired,
                &revisions,
                &mirrors,
                &heartbeats,
            ],
        )
        .await
    }

    /// Writes desired-state history entries (their hosts written before).
    pub async fn desired_history(
        &self,
        entries: &[(HostId, DesiredRecord)],
    ) -> Result<(), PgError> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut revisions = Vec::with_capacity(entries.len());
        let mut records = Vec::with_capacity(entries.len());
        for (host, record) in entries {
            ids.push(host.as_str());
            revisions.push(to_i64("revision", record.desired.revision.0)?);
            records.push(to_json("desired record", record)?);
        }
        self.execute(
            "copying desired-state history",
            "INSERT INTO desired_history (host, revision, record)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::jsonb[])",
            &[&ids, &revisions, &records],
        )
        .await
    }

    /// Writes events.
    pub async fn events(&self, events: &[StoredEvent]) -> Result<(), PgError> {
        let mut ids = Vec::with_capacity(events.len());
        let mut streams = Vec::with_capacity(events.len());
        let mut seqs = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for (host, stream, event) in events {
            ids.push(host.as_str());
            streams.push(stream_key(*stream));
            seqs.push(to_i64("seq", event.seq)?);
            bodies.push(to_json("event", event)?);
        }
        self.execute(
            "copying events",
            "INSERT INTO events (host, stream, seq, event)
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::jsonb[])",
            &[&ids, &streams, &seqs, &bodies],
        )
        .await
    }

    /// Writes operators.
    pub async fn operators(&self, operators: &[OperatorRecord]) -> Result<(), PgError> {
        let names: Vec<&str> = operators.iter().map(|o| o.name.as_str()).collect();
        let records = operators
            .iter()
            .map(|o| to_json("operator", o))
            .collect::<Result<Vec<_>, _>>()?;
        self.execute(
            "copying operators",
            "INSERT INTO operators (name, record) SELECT * FROM unnest($1::text[], $2::jsonb[])",
            &[&names, &records],
        )
        .await
    }

    /// Writes rollouts and moves the rollout numbering above them.
    pub async fn rollouts(&self, rollouts: &[Rollout]) -> Result<(), PgError> {
        let ids = rollouts
            .iter()
            .map(|r| to_i64("rollout id", r.id.0))
            .collect::<Result<Vec<_>, _>>()?;
        let bodies = rollouts
            .iter()
            .map(|r| to_json("rollout", r))
            .collect::<Result<Vec<_>, _>>()?;
        self.execute(
            "copying rollouts",
            "INSERT INTO rollouts (id, rollout) SELECT * FROM unnest($1::int8[], $2::jsonb[])",
            &[&ids, &bodies],
        )
        .await?;
        let highest = ids.iter().max().copied().unwrap_or(0);
        if highest > 0 {
            // The next rollout gets the number after the highest copied.
            self.execute(
                "moving the rollout numbering",
                "SELECT setval('rollout_ids', $1)",
                &[&highest],
            )
            .await?;
        }
        Ok(())
    }

    /// Writes audit entries with their seqs and moves the numbering above them.
    pub async fn audit(&self, entries: &[AuditEntry]) -> Result<(), PgError> {
        let mut seqs = Vec::with_capacity(entries.len());
        let mut times = Vec::with_capacity(entries.len());
        let mut bodies = Vec::with_capacity(entries.len());
        for entry in entries {
            seqs.push(to_i64("audit seq", entry.seq)?);
            times.push(to_i64("audit time", entry.at.0)?);
            bodies.push(to_json("audit entry", entry)?);
        }
        // The hosts column is the entry's own list (arrays of arrays must be rectangular, so
        // they cannot be passed as one parameter).
        self.execute(
            "copying the audit log",
            "INSERT INTO audit (seq, at, hosts, entry)
             SELECT seq, at,
                    ARRAY(SELECT jsonb_array_elements_text(coalesce(entry -> 'hosts', '[]'))),
                    entry
             FROM unnest($1::int8[], $2::int8[], $3::jsonb[]) AS v (seq, at, entry)",
            &[&seqs, &times, &bodies],
        )
        .await?;
        let highest = seqs.iter().max().copied().unwrap_or(0);
        self.execute(
            "moving the audit numbering",
            "UPDATE audit_seq SET last = greatest(last, $1)",
            &[&highest],
        )
        .await
    }

    /// Every host as written, by id (for checking the copy before it commits).
    pub async fn written_hosts(&self) -> Result<Vec<StoredHost>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT id, record, desired, mirror, heartbeat FROM hosts ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| self.fail("reading the copied hosts", &e))?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.get(0);
                Ok(StoredHost {
                    record: from_json(|| format!("host record {id}"), row.get(1))?,
                    desired: from_json(|| format!("desired state of {id}"), row.get(2))?,
                    mirror: from_json(|| format!("mirror of {id}"), row.get(3))?,
                    heartbeat: heartbeat_of(&id, row.get(4))?,
                })
            })
            .collect()
    }

    /// Makes the copy durable.
    pub async fn commit(self) -> Result<(), PgError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| self.fail("committing the copy", &e))
    }

    async fn execute(
        &self,
        what: &str,
        statement: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), PgError> {
        self.client
            .execute(statement, params)
            .await
            .map(drop)
            .map_err(|e| self.fail(what, &e))
    }

    fn fail(&self, what: &str, error: &tokio_postgres::Error) -> PgError {
        self.store.fail(what, error)
    }
}
