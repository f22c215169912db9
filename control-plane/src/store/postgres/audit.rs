//! Operators and the audit log. An operator's token is kept only as its SHA-256 digest; audit
//! entries are appended, never changed, numbered without gaps by one counter row that
//! serialises appends across replicas, so the log is one log.

use fleetnode_wire::AuditEntry;

use super::notify::{self, Kind};
use super::store::{from_json, to_i64, to_json, to_u64};
use super::{PgError, PgStore};
use crate::store::{AuditFilter, OperatorRecord};

impl PgStore {
    /// Every operator, by name.
    pub async fn load_operators(&self) -> Result<Vec<OperatorRecord>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT name, record FROM operators ORDER BY name", &[])
            .await
            .map_err(|e| self.fail("loading the operators", &e))?;
        rows.into_iter()
            .map(|row| {
                let name: String = row.get(0);
                from_json(|| format!("operator {name}"), row.get(1))
            })
            .collect()
    }

    /// Adds an operator; one of that name already stored is refused with
    /// [`PgError::DuplicateOperator`] and nothing is written.
    pub async fn add_operator(&self, record: &OperatorRecord) -> Result<(), PgError> {
        self.write_operator(
            record,
            "INSERT INTO operators (name, record) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .await
    }

    /// Writes an operator's record, new or changed (revoked).
    pub async fn put_operator(&self, record: &OperatorRecord) -> Result<(), PgError> {
        self.write_operator(
            record,
            "INSERT INTO operators (name, record) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record",
        )
        .await
    }

    async fn write_operator(
        &self,
        record: &OperatorRecord,
        statement: &str,
    ) -> Result<(), PgError> {
        let name = &record.name;
        let what = format!("storing operator {name}");
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(&what, &e))?;
        let written = txn
            .execute(statement, &[&name.as_str(), &to_json("operator", record)?])
            .await
            .map_err(|e| self.fail(&what, &e))?;
        if written == 0 {
            return Err(PgError::DuplicateOperator { name: name.clone() });
        }
        notify::send(&txn, Kind::Operators, &[name.as_str()])
            .await
            .map_err(|e| notify::failed(self, &e))?;
        txn.commit().await.map_err(|e| self.fail(&what, &e))
    }

    /// Appends an entry, giving it the next seq; returns the entry as stored.
    pub async fn append_audit(&self, mut entry: AuditEntry) -> Result<AuditEntry, PgError> {
        let what = "appending to the audit log";
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(what, &e))?;
        let seq: i64 = txn
            .query_one("UPDATE audit_seq SET last = last + 1 RETURNING last", &[])
            .await
            .map_err(|e| self.fail(what, &e))?
            .get(0);
        entry.seq = to_u64(seq);
        let hosts: Vec<&str> = entry.hosts.iter().map(|h| h.as_str()).collect();
        txn.execute(
            "INSERT INTO audit (seq, at, hosts, entry) VALUES ($1, $2, $3, $4)",
            &[
                &seq,
                &to_i64("audit time", entry.at.0)?,
                &hosts,
                &to_json("audit entry", &entry)?,
            ],
        )
        .await
        .map_err(|e| self.fail(what, &e))?;
        txn.commit().await.map_err(|e| self.fail(what, &e))?;
        Ok(entry)
    }

    /// The newest `limit` entries matching `filter`, oldest first, and whether older matching
    /// ones were left out.
    pub async fn audit(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<(Vec<AuditEntry>, bool), PgError> {
        let client = self.client().await?;
        let since = filter
            .since
            .map(|t| to_i64("audit time", t.0))
            .transpose()?;
        let host = filter.host.as_ref().map(|h| h.as_str());
        // One more than asked for tells whether older matching entries exist.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = client
            .query(
                "SELECT seq, entry FROM audit
                 WHERE ($1::int8 IS NULL OR at >= $1) AND ($2::text IS NULL OR hosts @> ARRAY[$2::text])
                   AND ($4::text IS NULL OR entry->>'who' = $4)
                 ORDER BY seq DESC LIMIT $3",
                &[&since, &host, &fetch, &filter.who.as_deref()],
            )
            .await
            .map_err(|e| self.fail("reading the audit log", &e))?;
        let truncated = rows.len() > limit;
        let mut entries = rows
            .into_iter()
            .take(limit)
            .map(|row| {
                let seq: i64 = row.get(0);
                from_json(|| format!("audit entry {seq}"), row.get(1))
            })
            .collect::<Result<Vec<AuditEntry>, PgError>>()?;
        entries.reverse();
        Ok((entries, truncated))
    }
}
