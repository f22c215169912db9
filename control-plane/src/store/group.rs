//! Group commit of the agent API's writes: event batches (with the mirrors they produce) and
//! heartbeats from many hosts go into one transaction and one fsync.
//!
//! One thread owns the writing: it takes every write waiting in its queue (up to
//! [`MAX_GROUP`]), commits them together, and only then answers each request. A batch is
//! therefore durable before its ack, exactly as with one transaction per batch; what changes
//! is that while one fsync runs, the next group forms, so the rate of acknowledged batches
//! grows with the number of hosts sending instead of being one fsync's worth. A group of
//! heartbeats alone is committed without fsync (see [`HEARTBEAT_SYNC_EVERY`]).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use fleetnode_wire::{HostId, OutboundEvent};
use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use super::{EVENTS, HEARTBEATS, HeartbeatRecord, MIRRORS, Store, StoreError, json};
use crate::mirror::Mirror;

/// Writes waiting for the writer thread. Each holds one request's decoded batch (at most
/// `MAX_BATCH_EVENTS` events, under 1 MiB), so the queue holds at most a few hundred MiB in the
/// worst case and a few MiB in practice; when it is full, requests wait for room.
const QUEUE_CAPACITY: usize = 512;
/// Most writes in one transaction: a group of this many batches commits in a few
/// milliseconds, so no request waits behind an unbounded one.
pub const MAX_GROUP: usize = 512;
/// How long heartbeats may be committed without fsync before one is made durable (they are
/// replaced every interval, so losing the last few on power loss costs nothing).
pub const HEARTBEAT_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One write of the agent API.
#[derive(Debug)]
pub enum Write {
    /// New events of a host's stream and the mirror they produced.
    Ingest {
        /// The host.
        host: HostId,
        /// Its event stream.
        stream: u64,
        /// The events to append.
        events: Vec<OutboundEvent>,
        /// The mirror afterwards (boxed: it is most of the write's size).
        mirror: Box<Mirror>,
    },
    /// A host's latest heartbeat.
    Heartbeat {
        /// The host.
        host: HostId,
        /// What it sent (boxed, as the mirror is).
        record: Box<HeartbeatRecord>,
    },
}

impl Write {
    fn needs_fsync(&self) -> bool {
        match self {
            Self::Ingest { .. } => true,
            Self::Heartbeat { .. } => false,
        }
    }
}

/// A failed group: every write in it failed with this error.
pub type GroupError = Arc<StoreError>;

struct Job {
    write: Write,
    done: oneshot::Sender<Result<(), GroupError>>,
}

/// The writer thread and its queue; dropping it lets the thread finish its group and waits.
pub struct GroupWriter {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupWriter {
    /// Starts the writer thread on `store`.
    pub fn start(store: Arc<Store>) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&store, jobs))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Writes `write` in the next group; returns once the group is committed (durably, for
    /// events).
    pub async fn write(&self, write: Write) -> Result<(), GroupError> {
        let stopped = || Arc::new(StoreError::Stopped);
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        let (done, answer) = oneshot::channel();
        queue
            .send(Job { write, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // The thread ends once the queue is closed and its last group is answered; joining
            // means the store is closed when the server is gone.
            let _ = thread.join();
        }
    }
}

fn run(store: &Store, mut jobs: mpsc::Receiver<Job>) {
    let mut last_sync = Instant::now();
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|job| job.write.needs_fsync())
            || last_sync.elapsed() >= HEARTBEAT_SYNC_EVERY;
        let result = store
            .write_group(group.iter().map(|job| &job.write), durable)
            .map_err(Arc::new);
        if durable && result.is_ok() {
            last_sync = Instant::now();
        }
        for job in group {
            // A request that gave up waiting has nobody to tell.
            let _ = job.done.send(result.clone());
        }
    }
}

impl Store {
    /// Commits `writes` in one transaction, with fsync when `durable`.
    pub fn write_group<'a>(
        &self,
        writes: impl Iterator<Item = &'a Write>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| self.fail(redb::Error::from(e)))?;
        }
        {
            let mut log = txn.open_table(EVENTS).map_err(|e| self.fail(e))?;
            let mut mirrors = txn.open_table(MIRRORS).map_err(|e| self.fail(e))?;
            let mut heartbeats = txn.open_table(HEARTBEATS).map_err(|e| self.fail(e))?;
            for write in writes {
                match write {
                    Write::Ingest {
                        host,
                        stream,
                        events,
                        mirror,
                    } => {
                        for event in events {
                            log.insert((host.as_str(), *stream, event.seq), json(event).as_slice())
                                .map_err(|e| self.fail(e))?;
                        }
                        mirrors
                            .insert(host.as_str(), json(mirror).as_slice())
                            .map_err(|e| self.fail(e))?;
                    }
                    Write::Heartbeat { host, record } => {
                        heartbeats
                            .insert(host.as_str(), json(record).as_slice())
                            .map_err(|e| self.fail(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }
}
