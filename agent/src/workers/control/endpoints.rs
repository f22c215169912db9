//! Which control-plane address the agent talks to.
//!
//! The configuration may list several URLs (replicas, or balancers in front of them). Every
//! worker (long-poll, event drainer, heartbeat) shares one [`Endpoints`], so they all use the
//! same current address. The agent sticks to the address that answers; a request that fails
//! for want of an answer there (a connection or TLS failure, a timeout, a 5xx status) moves the
//! current address to the next in the list, wrapping around. A 4xx is the control plane's
//! verdict on the request, not a sign the address is down, and never moves it. The retry itself
//! keeps the worker's back-off ([`super::retry_plan`]): a move changes where the next attempt
//! goes, not when.
//!
//! Several workers may fail on the same address at once; only the first failure reported for
//! the address in use moves on, so one outage is one move, logged once and counted once
//! (`fleetnode_agent_control_plane_moves_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::warn;

use super::RequestError;
use crate::config::ControlPlaneUrls;
use crate::metrics::Metrics;

/// The configured addresses and the one in use.
#[derive(Debug)]
pub struct Endpoints {
    urls: Vec<String>,
    current: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// The address a request was sent to, handed back with its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InUse(usize);

impl Endpoints {
    /// Starts with the first URL.
    pub fn new(urls: &ControlPlaneUrls, metrics: Arc<Metrics>) -> Self {
        let endpoints = Self {
            urls: urls.as_slice().to_vec(),
            current: AtomicUsize::new(0),
            metrics,
        };
        endpoints.publish(0);
        endpoints
    }

    /// The address to send the next request to, and its base URL.
    pub fn current(&self) -> (InUse, &str) {
        let index = self.current.load(Ordering::Acquire) % self.urls.len().max(1);
        (InUse(index), self.url(index))
    }

    /// Takes note of a request to `used` that failed with `error`: moves to the next address
    /// when the failure says the address did not answer, unless another request moved already.
    /// Returns whether this call moved.
    pub fn failed(&self, used: InUse, error: &RequestError) -> bool {
        let count = self.urls.len();
        if count < 2 || !moves_on(error) {
            return false;
        }
        let next = (used.0 + 1) % count;
        if self
            .current
            .compare_exchange(used.0, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        warn!(
            from = %self.url(used.0),
            to = %self.url(next),
            %error,
            "the control plane at this address did not answer; moving to the next address"
        );
        self.metrics.control_plane_moves.inc();
        self.publish(next);
        true
    }

    fn url(&self, index: usize) -> &str {
        self.urls.get(index).map_or("", String::as_str)
    }

    /// Sets the `control_plane_current` gauge: 1 for the address in use, 0 for the others.
    fn publish(&self, current: usize) {
        for (index, url) in self.urls.iter().enumerate() {
            self.metrics
                .control_plane_current
                .get_or_create(&[("url", url.clone())])
                .set(i64::from(index == current));
        }
    }
}

/// Whether `error` means the address gave no usable answer (as opposed to a verdict).
fn moves_on(error: &RequestError) -> bool {
    match error {
        RequestError::Network(_) | RequestError::Tls(_) => true,
        RequestError::Status { status, .. } => (500..600).contains(status),
        RequestError::BadAnswer(_) | RequestError::OtherVersion(_) => false,
    }
}

#[cfg(test)]
mod tests;
