//! Leases for work exactly one replica may do at a time (driving the rollouts, running a
//! retention task): a row per lease with its holder, an expiry on the database's clock (so
//! replicas' clocks need not agree) and a fencing token that grows by one with every new
//! holder.
//!
//! A holder renews well before the expiry; when it stops (killed, cut off), another replica
//! acquires the lease once it expired and gets a higher token. Expiry alone cannot stop a
//! paused former holder from writing, so every write a lease guards presents its [`Fence`] and
//! the store checks the token in the same transaction as the write ([`PgStore::check_fence`]):
//! a stale token is refused with [`PgError::Fenced`] and nothing is written.

use std::time::Duration;

use tokio_postgres::Transaction;

use super::{PgError, PgStore};

/// Proof of holding a lease: what a guarded write presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease.
    pub lease: String,
    /// Who holds it (unique per process, e.g. host name, pid and a random part).
    pub holder: String,
    /// The fencing token this holder got.
    pub token: i64,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The holder, `None` once released.
    pub holder: Option<String>,
    /// The latest fencing token.
    pub token: i64,
    /// True when the expiry passed (on the database's clock).
    pub expired: bool,
}

impl PgStore {
    /// Takes the lease for `holder` for `ttl` if nobody holds it (never held, released, or
    /// expired), or `holder` itself does; returns its fence, with a token above every earlier
    /// one. `None`: another holder has it.
    pub async fn acquire_lease(
        &self,
        lease: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Fence>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO leases (name, holder, expires_at, token)
                 VALUES ($1, $2, now() + make_interval(secs => $3), 1)
                 ON CONFLICT (name) DO UPDATE
                     SET holder = excluded.holder, expires_at = excluded.expires_at,
                         token = leases.token + 1
                     WHERE leases.holder IS NULL OR leases.holder = excluded.holder
                        OR leases.expires_at <= now()
                 RETURNING token",
                &[&lease, &holder, &ttl.as_secs_f64()],
            )
            .await
            .map_err(|e| self.fail(&format!("acquiring lease {lease}"), &e))?;
        Ok(row.map(|row| Fence {
            lease: lease.to_owned(),
            holder: holder.to_owned(),
            token: row.get(0),
        }))
    }

    /// Extends the lease by `ttl` from now. Refused with [`PgError::Fenced`] when another
    /// holder took it since (the caller must stop the guarded work).
    pub async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<(), PgError> {
        let client = self.client().await?;
        let renewed = client
            .execute(
                "UPDATE leases SET expires_at = now() + make_interval(secs => $4)
                 WHERE name = $1 AND holder = $2 AND token = $3",
                &[
                    &fence.lease,
                    &fence.holder,
                    &fence.token,
                    &ttl.as_secs_f64(),
                ],
            )
            .await
            .map_err(|e| self.fail(&format!("renewing lease {}", fence.lease), &e))?;
        if renewed == 0 {
            return Err(self.fenced(fence).await);
        }
        Ok(())
    }

    /// Gives the lease up so another replica may take it at once (its token stays, so a
    /// fence of this holder stays refused once another took it).
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE leases SET holder = NULL, expires_at = now()
                 WHERE name = $1 AND holder = $2 AND token = $3",
                &[&fence.lease, &fence.holder, &fence.token],
            )
            .await
            .map_err(|e| self.fail(&format!("releasing lease {}", fence.lease), &e))
            .map(drop)
    }

    /// The lease as stored, if it was ever taken.
    pub async fn lease(&self, lease: &str) -> Result<Option<LeaseState>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT holder, token, expires_at <= now() FROM leases WHERE name = $1",
                &[&lease],
            )
            .await
            .map_err(|e| self.fail(&format!("reading lease {lease}"), &e))?;
        Ok(row.map(|row| LeaseState {
            holder: row.get(0),
            token: row.get(1),
            expired: row.get(2),
        }))
    }

    /// Checks in `txn` that `fence` is still the lease's current one, and keeps the lease row
    /// from changing hands until `txn` ends: a new holder's acquisition waits for this
    /// transaction, so every write made under the old token is committed before the new
    /// token exists.
    pub(super) async fn check_fence(
        &self,
        txn: &Transaction<'_>,
        fence: &Fence,
    ) -> Result<(), PgError> {
        let row = txn
            .query_opt(
                "SELECT holder, token FROM leases WHERE name = $1 FOR SHARE",
                &[&fence.lease],
            )
            .await
            .map_err(|e| self.fail(&format!("checking lease {}", fence.lease), &e))?;
        let current = row.map(|row| (row.get::<_, Option<String>>(0), row.get::<_, i64>(1)));
        match current {
            Some((Some(holder), token)) if holder == fence.holder && token == fence.token => Ok(()),
            other => Err(PgError::Fenced {
                lease: fence.lease.clone(),
                token: fence.token,
                current: other.map(|(_, token)| token),
            }),
        }
    }

    async fn fenced(&self, fence: &Fence) -> PgError {
        let current = self.lease(&fence.lease).await.ok().flatten();
        PgError::Fenced {
            lease: fence.lease.clone(),
            token: fence.token,
            current: current.map(|state| state.token),
        }
    }
}
