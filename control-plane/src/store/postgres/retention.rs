//! Pruning on PostgreSQL, by the same rules as the redb store (`store/retention.rs`): each call
//! examines a bounded number of rows after a cursor in one statement (one short transaction),
//! deletes what the rule gives up unless it is a dry run, and says where the next call goes on.

use fleetnode_wire::Timestamp;

use super::store::{stream_key, stream_of, to_i64, to_u64};
use super::{PgError, PgStore};
use crate::store::{EXAMINE_PER_BATCH, EventCursor, EventKeep, Pruned};

/// Hosts whose desired-state history one call examines.
const HOSTS_PER_BATCH: i64 = 200;

impl PgStore {
    /// Removes events older than `keep.cutoff`, except the newest `keep.newest` of each host's
    /// current stream (read from its mirror in the same statement) and those of rollouts still
    /// kept, examining at most [`EXAMINE_PER_BATCH`] events after `after`.
    pub async fn prune_events(
        &self,
        keep: &EventKeep,
        after: Option<&EventCursor>,
        dry_run: bool,
    ) -> Result<Pruned<EventCursor>, PgError> {
        let (host, stream, seq) = match after {
            Some((host, stream, seq)) => (
                host.clone(),
                stream_key(*stream),
                to_i64("event seq", *seq)?,
            ),
            // Every host id sorts after the empty one.
            None => (String::new(), i64::MIN, i64::MIN),
        };
        let (kept_hosts, kept_since): (Vec<&str>, Vec<i64>) = keep
            .since
            .iter()
            .map(|(host, since)| Ok((host.as_str(), to_i64("rollout start", since.0)?)))
            .collect::<Result<Vec<_>, PgError>>()?
            .into_iter()
            .unzip();
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH examined AS (
                     SELECT host, stream, seq, (event->>'at')::bigint AS at FROM events
                     WHERE (host, stream, seq) > ($1, $2, $3)
                     ORDER BY host, stream, seq LIMIT $4
                 ), doomed AS (
                     SELECT x.host, x.stream, x.seq FROM examined x
                     LEFT JOIN hosts h ON h.id = x.host
                     LEFT JOIN unnest($6::text[], $7::int8[]) AS k (host, since)
                         ON k.host = x.host
                     WHERE x.at < $5
                       AND NOT coalesce((h.mirror->>'stream')::numeric
                               = x.stream::numeric + CASE WHEN x.stream < 0
                                   THEN 18446744073709551616 ELSE 0 END
                           AND x.seq > (h.mirror #>> '{state,host,seq}')::bigint - $8, false)
                       AND NOT coalesce(x.at >= k.since, false)
                 ), deleted AS (
                     DELETE FROM events e USING doomed d
                     WHERE NOT $9 AND e.host = d.host AND e.stream = d.stream AND e.seq = d.seq
                     RETURNING 1
                 ), last AS (
                     SELECT host, stream, seq FROM examined ORDER BY host DESC, stream DESC, seq DESC
                     LIMIT 1
                 )
                 SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM examined),
                        (SELECT host FROM last), (SELECT stream FROM last), (SELECT seq FROM last)",
                &[
                    &host,
                    &stream,
                    &seq,
                    &batch_size(),
                    &to_i64("cutoff", keep.cutoff.0)?,
                    &kept_hosts,
                    &kept_since,
                    &to_i64("kept events", keep.newest)?,
                    &dry_run,
                ],
            )
            .await
            .map_err(|e| self.fail("pruning events", &e))?;
        let examined: i64 = row.get(1);
        let next = if examined == batch_size() {
            let host: Option<String> = row.get(2);
            let stream: Option<i64> = row.get(3);
            let seq: Option<i64> = row.get(4);
            match (host, stream, seq) {
                (Some(host), Some(stream), Some(seq)) => {
                    Some((host, stream_of(stream), to_u64(seq)))
                }
                _ => None,
            }
        } else {
            None
        };
        Ok(Pruned {
            removed: to_u64(row.get(0)),
            next,
        })
    }

    /// Keeps the newest `depth` entries of each host's desired-state history, examining the
    /// hosts after `after`, a batch of them per call.
    pub async fn prune_desired_history(
        &self,
        depth: u64,
        after: Option<&str>,
        dry_run: bool,
    ) -> Result<Pruned<String>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH batch AS (
                     SELECT DISTINCT host FROM desired_history WHERE host > $1
                     ORDER BY host LIMIT $2
                 ), ranked AS (
                     SELECT d.host, d.revision,
                            row_number() OVER (PARTITION BY d.host ORDER BY d.revision DESC) AS rank
                     FROM desired_history d JOIN batch b ON b.host = d.host
                 ), doomed AS (
                     SELECT host, revision FROM ranked WHERE rank > $3
                 ), deleted AS (
                     DELETE FROM desired_history d USING doomed x
                     WHERE NOT $4 AND d.host = x.host AND d.revision = x.revision
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM batch),
                        (SELECT max(host) FROM batch)",
                &[
                    &after.unwrap_or(""),
                    &HOSTS_PER_BATCH,
                    &to_i64("history depth", depth)?,
                    &dry_run,
                ],
            )
            .await
            .map_err(|e| self.fail("pruning the desired-state history", &e))?;
        let hosts: i64 = row.get(1);
        let next = (hosts == HOSTS_PER_BATCH)
            .then(|| row.get::<_, Option<String>>(2))
            .flatten();
        Ok(Pruned {
            removed: to_u64(row.get(0)),
            next,
        })
    }

    /// Removes audit entries older than `cutoff`, oldest first, examining at most
    /// [`EXAMINE_PER_BATCH`] after the entry numbered `after`.
    pub async fn prune_audit(
        &self,
        cutoff: Timestamp,
        after: Option<u64>,
        dry_run: bool,
    ) -> Result<Pruned<u64>, PgError> {
        let after = after.map_or(Ok(0), |seq| to_i64("audit seq", seq))?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH examined AS (
                     SELECT seq, at FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2
                 ), doomed AS (
                     SELECT seq FROM examined WHERE at < $3
                 ), deleted AS (
                     DELETE FROM audit a USING doomed d WHERE NOT $4 AND a.seq = d.seq
                     RETURNING 1
                 )
                 SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM examined),
                        (SELECT max(seq) FROM doomed)",
                &[
                    &after,
                    &batch_size(),
                    &to_i64("cutoff", cutoff.0)?,
                    &dry_run,
                ],
            )
            .await
            .map_err(|e| self.fail("pruning the audit log", &e))?;
        let (doomed, examined): (i64, i64) = (row.get(0), row.get(1));
        // Entries are appended in time order: a batch that was old to its end may be followed
        // by more old ones.
        let next = (doomed == examined && examined == batch_size())
            .then(|| row.get::<_, Option<i64>>(2).map(to_u64))
            .flatten();
        Ok(Pruned {
            removed: to_u64(doomed),
            next,
        })
    }
}

fn batch_size() -> i64 {
    i64::try_from(EXAMINE_PER_BATCH).unwrap_or(i64::MAX)
}
