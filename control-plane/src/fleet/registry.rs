//! The in-memory view of every host: what reads are answered from, and the per-host
//! notification that wakes long-polls. Only the fleet's operations change it.
//!
//! The map lock is held only to look an entry up or insert one, never across I/O. Each host has
//! its own write lock (held across its store commit, so a host's writes apply in order) and its
//! own view lock (held only to copy or swap data).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fleetnode_wire::{DesiredState, HostId, Revision};
use tokio::sync::watch;

use crate::auth::{TokenHash, parse_hash};
use crate::mirror::Mirror;
use crate::store::postgres::next_revision;
use crate::store::{HeartbeatRecord, HostRecord, StoredHost};

/// Every host, by id.
#[derive(Default)]
pub struct Registry {
    hosts: Mutex<HashMap<HostId, Arc<HostEntry>>>,
    tokens: Mutex<HashMap<TokenHash, HostId>>,
}

/// One host.
pub struct HostEntry {
    /// Its id.
    pub id: HostId,
    /// Serialises this host's writes: taken before reading what a write is based on and held
    /// until the store committed and the view is updated. Only the fleet's operations take it.
    pub(super) write: tokio::sync::Mutex<()>,
    view: Mutex<HostView>,
    desired: watch::Sender<DesiredState>,
    waiters: AtomicUsize,
}

/// What is known about a host, as last committed.
#[derive(Debug, Clone)]
pub struct HostView {
    /// Its registration.
    pub record: HostRecord,
    /// Its token digest.
    pub token_hash: TokenHash,
    /// Its mirror.
    pub mirror: Mirror,
    /// Its latest heartbeat.
    pub heartbeat: Option<HeartbeatRecord>,
}

impl Registry {
    /// The registry of stored hosts. A host whose token digest is unreadable is loaded but
    /// can never authenticate (an all-zero digest matches no token).
    pub fn load(stored: Vec<StoredHost>) -> Self {
        let registry = Self::default();
        for host in stored {
            registry.insert(host.record, host.desired, host.mirror, host.heartbeat);
        }
        registry
    }

    /// Adds a host to the view (after it was stored).
    pub fn insert(
        &self,
        record: HostRecord,
        desired: DesiredState,
        mirror: Mirror,
        heartbeat: Option<HeartbeatRecord>,
    ) -> Arc<HostEntry> {
        let token_hash = parse_hash(&record.token_sha256).unwrap_or([0; 32]);
        let id = record.id.clone();
        let entry = Arc::new(HostEntry {
            id: id.clone(),
            write: tokio::sync::Mutex::new(()),
            view: Mutex::new(HostView {
                record,
                token_hash,
                mirror,
                heartbeat,
            }),
            desired: watch::Sender::new(desired),
            waiters: AtomicUsize::new(0),
        });
        lock(&self.tokens).insert(token_hash, id.clone());
        lock(&self.hosts).insert(id, entry.clone());
        entry
    }

    /// Makes the view of a host what the store holds (another replica changed it): a new host
    /// is added; a known one takes the stored registration, mirror and heartbeat, and a
    /// changed desired state is published (waking its long-polls). Call with the host's write
    /// lock held, and the store read after it was taken, so nothing older replaces what this
    /// process committed.
    pub fn refresh(&self, stored: StoredHost) {
        self.refresh_parts(
            stored.record,
            stored.desired,
            Some((stored.mirror, stored.heartbeat)),
        );
    }

    /// As [`Registry::refresh`], with the registration and desired state only (what a
    /// notification of another replica's change needs: agents authenticate against the one
    /// and long-polls wait on the other); the mirror and heartbeat stay as they were.
    pub fn refresh_registration(&self, record: HostRecord, desired: DesiredState) {
        self.refresh_parts(record, desired, None);
    }

    fn refresh_parts(
        &self,
        record: HostRecord,
        desired: DesiredState,
        reported: Option<(Mirror, Option<HeartbeatRecord>)>,
    ) {
        let Some(entry) = self.get(&record.id) else {
            let (mirror, heartbeat) = reported.unwrap_or_default();
            self.insert(record, desired, mirror, heartbeat);
            return;
        };
        let token_hash = parse_hash(&record.token_sha256).unwrap_or([0; 32]);
        let (old_hash, was_revoked) = entry.with_view(|v| (v.token_hash, v.record.revoked));
        if old_hash != token_hash {
            let mut tokens = lock(&self.tokens);
            tokens.remove(&old_hash);
            tokens.insert(token_hash, entry.id.clone());
        }
        let revoked = record.revoked;
        entry.update(|v| {
            v.record = record;
            v.token_hash = token_hash;
            if let Some((mirror, heartbeat)) = reported {
                v.mirror = mirror;
                v.heartbeat = heartbeat;
            }
        });
        if entry.desired() != desired {
            entry.publish(desired);
        } else if revoked && !was_revoked {
            entry.wake();
        }
    }

    /// The host, if registered (revoked hosts included).
    pub fn get(&self, id: &HostId) -> Option<Arc<HostEntry>> {
        lock(&self.hosts).get(id).cloned()
    }

    /// True when the id is registered.
    pub fn contains(&self, id: &HostId) -> bool {
        lock(&self.hosts).contains_key(id)
    }

    /// How many hosts are registered (revoked hosts included).
    pub fn len(&self) -> usize {
        lock(&self.hosts).len()
    }

    /// The host whose token has this digest.
    pub fn owner_of(&self, hash: &TokenHash) -> Option<HostId> {
        lock(&self.tokens).get(hash).cloned()
    }

    /// Every host, sorted by id.
    pub fn all(&self) -> Vec<Arc<HostEntry>> {
        let mut entries: Vec<Arc<HostEntry>> = lock(&self.hosts).values().cloned().collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        entries
    }
}

impl HostEntry {
    /// True once the host is revoked.
    pub fn is_revoked(&self) -> bool {
        self.with_view(|v| v.record.revoked)
    }

    /// A copy of the view.
    pub fn view(&self) -> HostView {
        lock(&self.view).clone()
    }

    /// Reads part of the view without copying all of it.
    pub fn with_view<T>(&self, read: impl FnOnce(&HostView) -> T) -> T {
        read(&lock(&self.view))
    }

    /// Changes the view (call with the write lock held, after the store committed).
    pub(super) fn update(&self, change: impl FnOnce(&mut HostView)) {
        change(&mut lock(&self.view));
    }

    /// The revision of the desired state in force.
    pub fn revision(&self) -> Revision {
        self.desired.borrow().revision
    }

    /// The desired state in force.
    pub fn desired(&self) -> DesiredState {
        self.desired.borrow().clone()
    }

    /// The revision of the host's next desired state: above the current one and above every
    /// revision the host reported knowing. The two differ only when the store was restored from
    /// a backup older than what the agent received; an agent ignores a directive older than
    /// the one it recorded, so the next change must outnumber that one.
    pub fn next_revision(&self) -> Revision {
        let current = self.desired().revision;
        self.with_view(|v| {
            let heartbeat = v
                .heartbeat
                .as_ref()
                .and_then(|h| h.heartbeat.desired_revision);
            let mirrored = v.mirror.state.host.desired.as_ref().map(|d| d.revision);
            next_revision(current, mirrored, heartbeat)
        })
    }

    /// Publishes a new desired state: every waiting long-poll wakes.
    pub(super) fn publish(&self, desired: DesiredState) {
        self.desired.send_replace(desired);
    }

    /// Wakes every waiting long-poll without a change (e.g. the host was revoked).
    pub(super) fn wake(&self) {
        self.desired.send_modify(|_| {});
    }

    /// A receiver of desired-state changes.
    pub fn subscribe(&self) -> watch::Receiver<DesiredState> {
        self.desired.subscribe()
    }

    /// Registers a waiting long-poll, unless `cap` are already waiting.
    pub fn try_wait(self: &Arc<Self>, cap: usize) -> Option<WaiterGuard> {
        let before = self.waiters.fetch_add(1, Ordering::SeqCst);
        let guard = WaiterGuard {
            entry: self.clone(),
        };
        if before >= cap {
            drop(guard);
            return None;
        }
        Some(guard)
    }
}

/// A waiting long-poll; dropping it frees the slot.
pub struct WaiterGuard {
    entry: Arc<HostEntry>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.entry.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here only copies or assigns whole values, so the data is never half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
