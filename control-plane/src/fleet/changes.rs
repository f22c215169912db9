//! What changed in the fleet, for readers that follow it live (the operator's console).
//!
//! The fleet publishes one small value, a counter per kind of change, in a `watch` channel:
//! every commit that changes what operators read bumps its kind's counter after it is durable
//! and in the view. A follower compares the counters it last saw with the current ones and
//! learns what to read again, however many changes it missed; a `watch` holds one value, so a
//! slow or idle follower costs nothing and nothing queues up, whatever the rate of changes.

use tokio::sync::watch;

use super::Fleet;

/// How many changes of each kind were published since the fleet was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCount {
    /// A host's registration, desired state or mirror changed (here, or through another
    /// replica as its notification arrived).
    pub hosts: u64,
    /// A rollout was started or decided.
    pub rollouts: u64,
    /// An entry was added to the audit log by this process.
    pub audit: u64,
}

/// A kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// See [`ChangeCount::hosts`].
    Hosts,
    /// See [`ChangeCount::rollouts`].
    Rollouts,
    /// See [`ChangeCount::audit`].
    Audit,
}

impl ChangeCount {
    /// The kinds that changed from `seen` to `self`.
    pub fn since(&self, seen: &ChangeCount) -> Vec<ChangeKind> {
        let mut kinds = Vec::new();
        if self.hosts != seen.hosts {
            kinds.push(ChangeKind::Hosts);
        }
        if self.rollouts != seen.rollouts {
            kinds.push(ChangeKind::Rollouts);
        }
        if self.audit != seen.audit {
            kinds.push(ChangeKind::Audit);
        }
        kinds
    }
}

impl ChangeKind {
    /// The name a follower is told.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hosts => "hosts",
            Self::Rollouts => "rollouts",
            Self::Audit => "audit",
        }
    }
}

/// The fleet's side of the publication.
pub struct Changes {
    sender: watch::Sender<ChangeCount>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            sender: watch::Sender::new(ChangeCount::default()),
        }
    }
}

impl Changes {
    /// Counts one change of `kind`; followers wake.
    pub(super) fn bump(&self, kind: ChangeKind) {
        self.sender.send_modify(|count| {
            let counter = match kind {
                ChangeKind::Hosts => &mut count.hosts,
                ChangeKind::Rollouts => &mut count.rollouts,
                ChangeKind::Audit => &mut count.audit,
            };
            *counter = counter.wrapping_add(1);
        });
    }
}

impl Fleet {
    /// A receiver of the change counters: `changed()` wakes after any change.
    pub fn changes(&self) -> watch::Receiver<ChangeCount> {
        self.changes.sender.subscribe()
    }

    /// Counts one change of `kind`.
    pub(super) fn changed(&self, kind: ChangeKind) {
        self.changes.bump(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_learns_every_kind_that_moved_however_often() {
        let changes = Changes::default();
        let receiver = changes.sender.subscribe();
        let seen = *receiver.borrow();
        changes.bump(ChangeKind::Hosts);
        changes.bump(ChangeKind::Hosts);
        changes.bump(ChangeKind::Audit);
        let now = *receiver.borrow();
        assert_eq!(now.since(&seen), vec![ChangeKind::Hosts, ChangeKind::Audit]);
        assert!(now.since(&now).is_empty());
    }
}
