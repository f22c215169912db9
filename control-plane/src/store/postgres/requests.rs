//! Rollout commands forwarded to the replica that drives the rollouts: a replica that does not
//! hold the rollout lease queues the command here and waits for its answer; the driving replica
//! takes queued commands, carries them out and answers. A command is carried out at most once:
//! it is marked taken before it runs, a taken command is never taken again, and a requester
//! that gives up withdraws it only while it is not taken.

use super::notify::{self, Kind};
use super::{PgError, PgStore};

/// Most commands taken at once.
const TAKE_AT_ONCE: i64 = 16;
/// Answered commands whose requester went away are removed after this many seconds.
const FORGET_AFTER_SECS: f64 = 600.0;

/// Where a forwarded command stands, as its requester sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Forwarded {
    /// Not taken yet.
    Waiting,
    /// Taken by the driving replica, not answered yet.
    Taken,
    /// Answered.
    Answered(serde_json::Value),
}

impl PgStore {
    /// Queues a command for the driving replica and wakes it; returns the command's number.
    pub async fn forward_request(&self, request: &serde_json::Value) -> Result<i64, PgError> {
        let what = "forwarding a rollout command";
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail(what, &e))?;
        let id: i64 = txn
            .query_one(
                "INSERT INTO rollout_requests (request) VALUES ($1) RETURNING id",
                &[request],
            )
            .await
            .map_err(|e| self.fail(what, &e))?
            .get(0);
        notify::send(&txn, Kind::Requests, &["rollouts"])
            .await
            .map_err(|e| notify::failed(self, &e))?;
        txn.commit().await.map_err(|e| self.fail(what, &e))?;
        Ok(id)
    }

    /// Where command `id` stands; an answered one is removed as it is read.
    pub async fn forwarded(&self, id: i64) -> Result<Forwarded, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT taken_at IS NOT NULL, answer FROM rollout_requests WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(|e| self.fail("reading a forwarded rollout command", &e))?;
        let Some(row) = row else {
            return Ok(Forwarded::Waiting);
        };
        let answer: Option<serde_json::Value> = row.get(1);
        match answer {
            Some(answer) => {
                client
                    .execute("DELETE FROM rollout_requests WHERE id = $1", &[&id])
                    .await
                    .map_err(|e| self.fail("removing an answered rollout command", &e))?;
                Ok(Forwarded::Answered(answer))
            }
            None if row.get::<_, bool>(0) => Ok(Forwarded::Taken),
            None => Ok(Forwarded::Waiting),
        }
    }

    /// Withdraws command `id` if it was not taken; true when withdrawn (it will never run).
    pub async fn withdraw_request(&self, id: i64) -> Result<bool, PgError> {
        let client = self.client().await?;
        let removed = client
            .execute(
                "DELETE FROM rollout_requests WHERE id = $1 AND taken_at IS NULL",
                &[&id],
            )
            .await
            .map_err(|e| self.fail("withdrawing a rollout command", &e))?;
        Ok(removed == 1)
    }

    /// Takes the oldest waiting commands (marking them taken, so no other replica runs them),
    /// and removes long-answered ones whose requester went away.
    pub async fn take_requests(&self) -> Result<Vec<(i64, serde_json::Value)>, PgError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM rollout_requests
                 WHERE answered_at < now() - make_interval(secs => $1)",
                &[&FORGET_AFTER_SECS],
            )
            .await
            .map_err(|e| self.fail("removing old rollout commands", &e))?;
        let rows = client
            .query(
                "UPDATE rollout_requests SET taken_at = now()
                 WHERE id IN (SELECT id FROM rollout_requests WHERE taken_at IS NULL
                              ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, request",
                &[&TAKE_AT_ONCE],
            )
            .await
            .map_err(|e| self.fail("taking rollout commands", &e))?;
        let mut taken: Vec<(i64, serde_json::Value)> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        taken.sort_by_key(|(id, _)| *id);
        Ok(taken)
    }

    /// Answers command `id`.
    pub async fn answer_request(&self, id: i64, answer: &serde_json::Value) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE rollout_requests SET answer = $2, answered_at = now() WHERE id = $1",
                &[&id, answer],
            )
            .await
            .map_err(|e| self.fail("answering a rollout command", &e))?;
        Ok(())
    }
}
