//! The shared state of the server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fleetnode_wire::{HostRow, Millis, Timestamp};
use tokio_util::sync::CancellationToken;

use super::ServerOptions;
use super::http::ApiError;
use super::metrics::Metrics;
use super::rollouts::Rollouts;
use crate::auth::{TokenHash, hash_token};
use crate::clock::Clock;
use crate::registry::{HostEntry, Registry};
use crate::store::{GroupWriter, Store};

/// Missed heartbeat intervals after which a host counts as offline.
pub const OFFLINE_AFTER_INTERVALS: u64 = 3;
/// Seconds a client is asked to wait while the store is not open yet.
pub const STARTING_RETRY_SECS: u64 = 1;

/// What every handler shares.
pub struct App {
    ready: OnceLock<Ready>,
    /// Digest of the admin token.
    pub admin_hash: TokenHash,
    /// The named operators (empty until the store is open).
    pub operators: super::audit::Operators,
    /// mTLS is on: agent requests need a client certificate naming their host.
    pub client_certs: bool,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// Cap of waiting long-polls per host.
    pub waiters_per_host: usize,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    store_path: String,
}

/// The parts that exist once the store is open.
pub struct Ready {
    /// The store.
    pub store: Arc<Store>,
    /// The group committer of the agent API's writes (events and heartbeats).
    pub writer: GroupWriter,
    /// Every host.
    pub hosts: Registry,
    /// The rollout driver.
    pub rollouts: Rollouts,
}

impl App {
    /// The state for a server with these options.
    pub fn new(options: &ServerOptions, shutdown: CancellationToken) -> Self {
        Self {
            ready: OnceLock::new(),
            admin_hash: hash_token(options.admin_token.expose()),
            operators: super::audit::Operators::default(),
            client_certs: matches!(
                options.transport,
                super::Transport::Tls {
                    client_ca: Some(_),
                    ..
                }
            ),
            metrics_public: options.metrics_public,
            waiters_per_host: options.waiters_per_host,
            heartbeat_interval: options.heartbeat_interval,
            clock: options.clock.clone(),
            metrics: Metrics::new(),
            shutdown,
            store_path: options.store.display().to_string(),
        }
    }

    /// Marks the store open.
    pub fn set_ready(
        &self,
        store: Arc<Store>,
        writer: GroupWriter,
        hosts: Registry,
        rollouts: Rollouts,
    ) {
        // Only the opener sets it, once.
        let _ = self.ready.set(Ready {
            store,
            writer,
            hosts,
            rollouts,
        });
    }

    /// The store and hosts, or 503 while the store is not open.
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(|| self.starting())
    }

    /// True once the store is open.
    pub fn is_ready(&self) -> bool {
        self.ready.get().is_some()
    }

    /// The 503 answered while the store is not open.
    pub fn starting(&self) -> ApiError {
        ApiError::unavailable(
            format!(
                "the control plane is starting: its store {} is not open yet; retry in a moment",
                self.store_path
            ),
            STARTING_RETRY_SECS,
        )
    }

    /// True when a host last seen at `last_seen` counts as offline now.
    pub fn is_offline(&self, last_seen: Option<Timestamp>) -> bool {
        let window = Millis(
            u64::try_from(self.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(OFFLINE_AFTER_INTERVALS),
        );
        match last_seen {
            Some(seen) => self.clock.now().since(seen) > window,
            None => true,
        }
    }

    /// The summary line of a host (copies only what the line shows).
    pub fn row(&self, entry: &HostEntry) -> HostRow {
        let desired = entry.desired();
        let (id, tags, phase, current, last_seen, diverged, revoked) = entry.with_view(|view| {
            let host = &view.mirror.state.host;
            let heartbeat_divergence = view
                .heartbeat
                .as_ref()
                .is_some_and(|h| h.divergence.is_some());
            (
                view.record.id.clone(),
                view.record.tags.clone(),
                host.phase.kind(),
                host.system.current.clone(),
                view.heartbeat.as_ref().map(|h| h.received_at),
                view.mirror.divergence.is_some() || heartbeat_divergence,
                view.record.revoked,
            )
        });
        HostRow {
            id,
            tags,
            phase,
            current,
            target: desired.directive.as_ref().and_then(super::admin::target_of),
            desired_revision: desired.revision,
            last_seen,
            offline: self.is_offline(last_seen),
            diverged,
            paused: desired.paused,
            revoked,
        }
    }
}
