//! Hosts: loading every host, adding one (a duplicate id refused atomically), replacing a
//! registration (revoking), and the reads of a host's events and desired-state history.

use fleetnode_wire::{DesiredState, HostId, OutboundEvent};

use super::notify::{self, Kind};
use super::store::{from_json, stream_key, to_i64, to_json};
use super::{PgError, PgStore};
use crate::mirror::Mirror;
use crate::store::{DesiredRecord, HeartbeatRecord, HostRecord, StoredHost};

impl PgStore {
    /// Every host with its desired state, mirror and latest heartbeat, by id.
    pub async fn load(&self) -> Result<Vec<StoredHost>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, record, desired, mirror, heartbeat FROM hosts ORDER BY id",
                &[],
            )
            .await
            .map_err(|e| self.fail("loading the hosts", &e))?;
        rows.into_iter()
            .map(|row| stored(&row.get::<_, String>(0), &row, 1))
            .collect()
    }

    /// The registrations and desired states of these hosts (those registered), by id: what a
    /// replica re-reads when another one changed them, without their mirrors.
    pub async fn registrations(
        &self,
        ids: &[HostId],
    ) -> Result<Vec<(HostRecord, DesiredState)>, PgError> {
        let ids: Vec<&str> = ids.iter().map(HostId::as_str).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, record, desired FROM hosts WHERE id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(|e| self.fail("loading host registrations", &e))?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.get(0);
                Ok((
                    from_json(|| format!("host record {id}"), row.get(1))?,
                    from_json(|| format!("desired state of {id}"), row.get(2))?,
                ))
            })
            .collect()
    }

    /// One host, if registered.
    pub async fn host(&self, id: &HostId) -> Result<Option<StoredHost>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record, desired, mirror, heartbeat FROM hosts WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(|e| self.fail(&format!("loading host {id}"), &e))?;
        row.map(|row| stored(id.as_str(), &row, 0)).transpose()
    }

    /// The registered hosts among `ids`, by id: what a replica re-reads for the hosts a
    /// wake-up names.
    pub async fn hosts(&self, ids: &[HostId]) -> Result<Vec<StoredHost>, PgError> {
        let ids: Vec<&str> = ids.iter().map(HostId::as_str).collect();
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, record, desired, mirror, heartbeat FROM hosts
                 WHERE id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(|e| self.fail("loading hosts", &e))?;
        rows.into_iter()
            .map(|row| stored(&row.get::<_, String>(0), &row, 1))
            .collect()
    }

    /// Registers a new host with its initial desired state; a host already registered under
    /// this id is refused with [`PgError::DuplicateHost`] and nothing is written.
    pub async fn add_host(
        &self,
        record: &HostRecord,
        desired: &DesiredState,
    ) -> Result<(), PgError> {
        let id = &record.id;
        let what = format!("adding host {id}");
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(&what, &e))?;
        let inserted = txn
            .execute(
                "INSERT INTO hosts (id, record, token_sha256, revoked, desired, revision, mirror)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id.as_str(),
                    &to_json("host record", record)?,
                    &record.token_sha256,
                    &record.revoked,
                    &to_json("desired state", desired)?,
                    &to_i64("revision", desired.revision.0)?,
                    &to_json("mirror", &Mirror::default())?,
                ],
            )
            .await
            .map_err(|e| self.fail(&what, &e))?;
        if inserted == 0 {
            return Err(PgError::DuplicateHost { host: id.clone() });
        }
        notify::send(&txn, Kind::Hosts, &[id.as_str()])
            .await
            .map_err(|e| notify::failed(self, &e))?;
        txn.commit().await.map_err(|e| self.fail(&what, &e))
    }

    /// Replaces a host's registration (used to revoke it); [`PgError::UnknownHost`] when it is
    /// not registered.
    pub async fn put_host(&self, record: &HostRecord) -> Result<(), PgError> {
        let id = &record.id;
        let what = format!("updating host {id}");
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(&what, &e))?;
        let updated = txn
            .execute(
                "UPDATE hosts SET record = $2, token_sha256 = $3, revoked = $4 WHERE id = $1",
                &[
                    &id.as_str(),
                    &to_json("host record", record)?,
                    &record.token_sha256,
                    &record.revoked,
                ],
            )
            .await
            .map_err(|e| self.fail(&what, &e))?;
        if updated == 0 {
            return Err(PgError::UnknownHost { host: id.clone() });
        }
        notify::send(&txn, Kind::Hosts, &[id.as_str()])
            .await
            .map_err(|e| notify::failed(self, &e))?;
        txn.commit().await.map_err(|e| self.fail(&what, &e))
    }

    /// The newest `limit` events of a host's stream, oldest first.
    pub async fn recent_events(
        &self,
        host: &HostId,
        stream: u64,
        limit: usize,
    ) -> Result<Vec<OutboundEvent>, PgError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, event FROM (
                     SELECT seq, event FROM events WHERE host = $1 AND stream = $2
                     ORDER BY seq DESC LIMIT $3
                 ) AS newest ORDER BY seq",
                &[&host.as_str(), &stream_key(stream), &limit],
            )
            .await
            .map_err(|e| self.fail(&format!("reading the events of {host}"), &e))?;
        rows.into_iter()
            .map(|row| {
                let seq: i64 = row.get(0);
                from_json(|| format!("event {seq} of {host}"), row.get(1))
            })
            .collect()
    }

    /// The desired-state history of a host, oldest first.
    pub async fn desired_history(&self, host: &HostId) -> Result<Vec<DesiredRecord>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT revision, record FROM desired_history WHERE host = $1 ORDER BY revision",
                &[&host.as_str()],
            )
            .await
            .map_err(|e| self.fail(&format!("reading the desired history of {host}"), &e))?;
        rows.into_iter()
            .map(|row| {
                let revision: i64 = row.get(0);
                from_json(
                    || format!("desired revision {revision} of {host}"),
                    row.get(1),
                )
            })
            .collect()
    }
}

/// A host read back from its record, desired state, mirror and heartbeat columns, the first
/// at `first`.
fn stored(id: &str, row: &tokio_postgres::Row, first: usize) -> Result<StoredHost, PgError> {
    Ok(StoredHost {
        record: from_json(|| format!("host record {id}"), row.get(first))?,
        desired: from_json(|| format!("desired state of {id}"), row.get(first + 1))?,
        mirror: from_json(|| format!("mirror of {id}"), row.get(first + 2))?,
        heartbeat: heartbeat_of(id, row.get(first + 3))?,
    })
}

/// A heartbeat column read back.
pub(super) fn heartbeat_of(
    id: &str,
    value: Option<serde_json::Value>,
) -> Result<Option<HeartbeatRecord>, PgError> {
    value
        .map(|h| from_json(|| format!("heartbeat of {id}"), h))
        .transpose()
}
