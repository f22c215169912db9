//! The fleet: every operation the control plane carries out on hosts, desired states, events,
//! heartbeats, rollouts and operators, and the one owner of the locks, store writes, in-memory
//! views and notifications those operations need.
//!
//! The HTTP handlers in `server/` parse a request, call one operation here and encode what it
//! returns; a refusal is a [`FleetError`], which `server/http.rs` maps to its answer. Nothing
//! outside this module takes a host's write lock, writes the store or publishes a desired state.
//!
//! The promises every operation keeps:
//! - a host's writes apply in order: each takes the host's write lock (several hosts in id
//!   order, so two operations cannot deadlock) before it reads what it writes from;
//! - durable before visible: the store commits before the view changes, and before anything is
//!   published to waiting long-polls or answered;
//! - a desired state changes by one path ([`Fleet::change_desired`]), whoever asks: an operator's
//!   command or the rollout driver's step.

mod backend;
mod changes;
mod desired;
mod error;
mod hosts;
mod ingest;
mod open;
mod operators;
mod registry;
mod replicas;
pub mod retention;
pub mod rollouts;
mod views;

use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::{Millis, Timestamp};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::rollout::window::TagWindows;
use crate::store::postgres::Subscription;
use backend::Backend;

pub use changes::{ChangeCount, ChangeKind};
pub use desired::{DesiredChangeRequest, LARGE_CHANGE};
pub use error::FleetError;
pub use hosts::{HostPage, target_of};
pub use ingest::Credentials;
pub use open::{OpenError, StoreLocation};
pub use operators::{Operators, Principal};
pub use registry::HostEntry;
use registry::Registry;
pub use retention::Retention;
pub use rollouts::{Action, RequestError, Rollouts, Snapshot};
pub use views::{FleetSummary, HostFilter};

/// Missed heartbeat intervals after which a host counts as offline.
pub const OFFLINE_AFTER_INTERVALS: u64 = 3;

/// What the fleet needs from the server that runs it.
#[derive(Clone)]
pub struct Settings {
    /// Heartbeat interval agents keep; three missed make a host offline.
    pub heartbeat_interval: Duration,
    /// Long-polls one host may have waiting at once.
    pub waiters_per_host: usize,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server stops: waiting long-polls answer, the driver ends.
    pub shutdown: CancellationToken,
    /// On a shared store, how long the rollout driver's lease lasts unless renewed: how soon
    /// another replica takes the rollouts over when the driving one dies.
    pub lease_ttl: Duration,
    /// The maintenance windows of tags, which the rollout driver observes with each host.
    pub windows: Arc<TagWindows>,
}

/// Default of [`Settings::lease_ttl`].
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// The fleet as committed in its store.
pub struct Fleet {
    backend: Backend,
    /// Taken shared by every agent write (a batch, a heartbeat) before its host's write lock,
    /// and exclusively by a desired-state change of many hosts ([`desired::LARGE_CHANGE`]):
    /// such a change waits once for the writes in flight, and new ones wait behind it,
    /// instead of its host locks, taken one by one in id order, meeting one in-flight write
    /// after another (each holding its host across a group commit) for the whole scan.
    gate: tokio::sync::RwLock<()>,
    hosts: Registry,
    operators: Operators,
    rollouts: Rollouts,
    settings: Settings,
    changes: changes::Changes,
}

/// What the rollout driver starts from once the fleet is open (see [`rollouts::run`]).
pub struct DriverStart {
    loaded: Vec<fleetnode_wire::Rollout>,
    requests: mpsc::Receiver<rollouts::Request>,
    nudge: Arc<Notify>,
    view: watch::Sender<Arc<Snapshot>>,
    /// Other replicas' changes, on a shared store.
    subscription: Option<Subscription>,
}

impl Fleet {
    /// How many hosts and rollouts were loaded (for the start-up log line).
    pub fn loaded(&self) -> (usize, usize) {
        (self.hosts.len(), self.rollouts.snapshot().rollouts.len())
    }

    /// The rollouts, as the driver last decided them.
    pub fn rollouts(&self) -> &Rollouts {
        &self.rollouts
    }

    /// The wall clock.
    pub fn now(&self) -> Timestamp {
        self.settings.clock.now()
    }

    /// True when a host last seen at `last_seen` counts as offline now.
    pub fn is_offline(&self, last_seen: Option<Timestamp>) -> bool {
        let window = Millis(
            u64::try_from(self.settings.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(OFFLINE_AFTER_INTERVALS),
        );
        match last_seen {
            Some(seen) => self.now().since(seen) > window,
            None => true,
        }
    }
}
