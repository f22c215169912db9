//! Group commit for the PostgreSQL store: requests hand their write to a queue and wait; a
//! task takes everything waiting (up to [`MAX_GROUP`]) and commits it as one group, one
//! transaction ([`PgStore::commit_group`]), then answers each request with its outcome. A
//! write is committed before its request is answered, exactly as with one transaction each;
//! what changes is that while one group commits, the next forms, so acknowledged writes grow
//! with the number of hosts sending instead of being one round trip's worth.
//!
//! Up to [`GROUPS_IN_FLIGHT`] groups commit at once, each on its own pooled connection. They
//! cannot deadlock (every group locks its rows in host-id order), and two writes of one host in
//! two groups serialise on its row.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::ingest::{GroupOutcome, GroupWrite};
use super::{PgError, PgStore};

/// Writes waiting to join a group. Each holds one request's decoded batch (at most the
/// protocol's batch limit, under 1 MiB), so a full queue is at most a few hundred MiB in the
/// worst case and a few MiB in practice; when it is full, requests wait for room.
const QUEUE_CAPACITY: usize = 512;
/// Most writes in one transaction, so no request waits behind an unbounded group.
pub const MAX_GROUP: usize = 512;
/// Groups committing at once: while some wait for the database, the next forms.
pub const GROUPS_IN_FLIGHT: usize = 4;

/// The error of a failed group: every write in it failed with it, and none was committed.
pub type GroupError = Arc<PgError>;

struct Job {
    write: GroupWrite,
    done: oneshot::Sender<Result<GroupOutcome, GroupError>>,
}

/// The queue and the task forming groups.
pub struct PgGroupWriter {
    queue: Option<mpsc::Sender<Job>>,
    task: Option<JoinHandle<()>>,
}

impl PgGroupWriter {
    /// Starts forming groups on `store` (inside a Tokio runtime).
    pub fn start(store: PgStore) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(store, jobs));
        Self {
            queue: Some(queue),
            task: Some(task),
        }
    }

    /// Commits `write` in the next group; returns its outcome once the group is committed.
    pub async fn write(&self, write: GroupWrite) -> Result<GroupOutcome, GroupError> {
        let stopped = || Arc::new(PgError::Stopped);
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (done, answer) = oneshot::channel();
        queue
            .send(Job { write, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stops taking writes and waits until every group formed is committed and answered.
    pub async fn close(mut self) {
        drop(self.queue.take());
        if let Some(task) = self.task.take() {
            // The task ends once the queue is closed and its groups are answered; a panic in it
            // has already failed every request waiting on it.
            let _ = task.await;
        }
    }
}

async fn run(store: PgStore, mut jobs: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    let mut committing = JoinSet::new();
    while let Some(first) = jobs.recv().await {
        // While every connection is busy, more writes queue up and join this group.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let store = store.clone();
        committing.spawn(async move {
            commit(&store, group).await;
            drop(permit);
        });
        while committing.try_join_next().is_some() {}
    }
    while committing.join_next().await.is_some() {}
}

async fn commit(store: &PgStore, group: Vec<Job>) {
    let (writes, answers): (Vec<GroupWrite>, Vec<_>) =
        group.into_iter().map(|job| (job.write, job.done)).unzip();
    match store.commit_group(&writes).await {
        Ok(outcomes) => {
            for (done, outcome) in answers.into_iter().zip(outcomes) {
                // A request that gave up waiting has nobody to tell.
                let _ = done.send(Ok(outcome));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for done in answers {
                let _ = done.send(Err(error.clone()));
            }
        }
    }
}
