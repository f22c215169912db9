//! The baseline of durable ingestion, measured in the same run as the server: the bytes the
//! acknowledged batches carried, appended to a file with `write` + `fdatasync` by a writer
//! that commits in groups exactly as the store's group writer does (it takes every batch
//! waiting, up to [`MAX_GROUP`], writes them with one `write`, syncs once, then answers each),
//! fed by as many concurrent senders as the ingestion phase had, each sending its next batch
//! only after the previous one was answered. Group sizes therefore come from the same
//! concurrency as the server's. What it measures is what the disk allows a perfect
//! group-committing log with no parsing, no mirror, no index and no network: the server's
//! figure divided by it says how much of the disk's durable rate the server turns into
//! acknowledged events.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::{HarnessError, Result};

/// Most batches one group holds: the store's group writer's limit.
pub const MAX_GROUP: usize = 512;
/// Batches waiting for the writer: one per sender at most, since each waits for its answer
/// (a few bytes each: the batch's length and its answer's sender).
const QUEUE_CAPACITY: usize = 1024;

/// What the baseline did.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Batches appended durably.
    pub batches: u64,
    /// How long it took.
    pub took: Duration,
    /// `fdatasync` calls made (one per group).
    pub syncs: u64,
}

type Job = (usize, oneshot::Sender<()>);

/// Appends `batches` batches of `batch_bytes` bytes each to a new file in `dir`, from
/// `senders` concurrent senders, in groups; removes the file afterwards.
pub async fn group_append(
    dir: &Path,
    senders: usize,
    batches: u64,
    batch_bytes: usize,
) -> Result<Baseline> {
    let path = dir.join("ingestion-baseline.log");
    let file = std::fs::File::create(&path)
        .map_err(HarnessError::io(format!("create {}", path.display())))?;
    let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE_CAPACITY);
    let syncs = Arc::new(AtomicU64::new(0));
    let writer = {
        let syncs = syncs.clone();
        std::thread::spawn(move || write_groups(file, &mut jobs, &syncs))
    };
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(batches));
    let mut tasks = JoinSet::new();
    for _ in 0..senders.max(1) {
        let (queue, left) = (queue.clone(), left.clone());
        tasks.spawn(async move {
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let (done, answer) = oneshot::channel();
                queue.send((batch_bytes, done)).await.ok()?;
                answer.await.ok()?;
            }
            Some(())
        });
    }
    drop(queue);
    while tasks.join_next().await.is_some() {}
    let took = started.elapsed();
    let written = writer.join().map_err(|_| HarnessError::Setup {
        what: "the ingestion baseline".into(),
        message: "its writer thread panicked".into(),
    })?;
    let _ = std::fs::remove_file(&path);
    written.map_err(HarnessError::io(format!("append to {}", path.display())))?;
    Ok(Baseline {
        batches: batches - left.load(Ordering::SeqCst),
        took,
        syncs: syncs.load(Ordering::SeqCst),
    })
}

/// The writer: every waiting batch in one group, one write and one `fdatasync` per group.
fn write_groups(
    mut file: std::fs::File,
    jobs: &mut mpsc::Receiver<Job>,
    syncs: &AtomicU64,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        buffer.clear();
        for (bytes, _) in &group {
            // Not all zeros, so no file system can store it as a hole.
            buffer.extend(std::iter::repeat_n(b'e', *bytes));
        }
        file.write_all(&buffer)?;
        file.sync_data()?;
        syncs.fetch_add(1, Ordering::Relaxed);
        for (_, done) in group {
            let _ = done.send(());
        }
    }
    Ok(())
}
