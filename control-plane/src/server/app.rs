//! What every handler shares: the fleet once its store is open, and the server's own settings.

use std::sync::{Arc, OnceLock};

use super::http::{ApiError, bearer};
use crate::auth::{TokenHash, digests_equal, hash_token};
use crate::fleet::{Fleet, FleetError, Principal, Settings};
use crate::metrics::Metrics;
use axum::http::HeaderMap;

/// What every handler shares.
pub struct App {
    fleet: OnceLock<Arc<Fleet>>,
    /// Digest of the admin token.
    admin_hash: TokenHash,
    /// mTLS is on: agent requests need a client certificate naming their host.
    pub client_certs: bool,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// What the fleet is opened with.
    pub settings: Settings,
    /// The operator's console: its sessions and live streams.
    pub console: crate::console::Console,
    store_path: String,
}

impl App {
    /// The state of a server: the admin token's digest, whether agents present client
    /// certificates, whether `/metrics` is public, what the fleet is opened with, the
    /// store's name for the 503 answered until it is open, and the console.
    pub fn new(
        admin_hash: TokenHash,
        client_certs: bool,
        metrics_public: bool,
        settings: Settings,
        store_path: String,
        console: crate::console::Console,
    ) -> Self {
        Self {
            console,
            fleet: OnceLock::new(),
            admin_hash,
            client_certs,
            metrics_public,
            metrics: settings.metrics.clone(),
            settings,
            store_path,
        }
    }

    /// Marks the store open: from now on requests reach the fleet.
    pub fn set_ready(&self, fleet: Arc<Fleet>) {
        // Only the opener sets it, once.
        let _ = self.fleet.set(fleet);
    }

    /// The fleet, or 503 while its store is not open.
    pub fn fleet(&self) -> Result<&Arc<Fleet>, ApiError> {
        self.fleet.get().ok_or_else(|| self.starting())
    }

    /// True once the store is open.
    pub fn is_ready(&self) -> bool {
        self.fleet.get().is_some()
    }

    /// The 503 answered while the store is not open.
    pub fn starting(&self) -> ApiError {
        FleetError::Starting(self.store_path.clone()).into()
    }

    /// The principal of an operator request's token, or 401: the admin token, or (once the
    /// store is open) a named operator's that is not revoked.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(token) = bearer(headers) else {
            return Err(ApiError::unauthorized(
                "missing admin token: send Authorization: Bearer <the token in the server's --admin-token-file, or an operator token from fleetnode-cp add-operator>",
            ));
        };
        self.principal_of(token).ok_or_else(|| {
            ApiError::unauthorized(
                "the admin token was refused: use the token in the server's --admin-token-file, or an operator token (from fleetnode-cp add-operator) that is not revoked",
            )
        })
    }

    /// The principal of a token: the admin token, or (once the store is open) a named
    /// operator's that is not revoked.
    pub fn principal_of(&self, token: &str) -> Option<Principal> {
        let digest = hash_token(token);
        if digests_equal(&digest, &self.admin_hash) {
            return Some(Principal::Admin);
        }
        self.fleet
            .get()
            .and_then(|fleet| fleet.operator(&digest))
            .map(Principal::Operator)
    }
}
